/* span_check.c: the transitions of span.h's ownership table, checked at
 * every state write in the EBB_INVARIANTS build (SPAN_SET_STATE).
 *
 * From the table ("leaves by"), plus what the page heap's coalescing does:
 *   NONE        -> FREE_DIRTY, FREE_PURGED (a run starts at this page: a new
 *                  superblock, the rest of a split), CENTRAL, LARGE, ARENA,
 *                  POOL (alloc carves the span from the end of a run: its
 *                  first page had no descriptor of its own; a huge superblock)
 *   FREE_DIRTY  -> CENTRAL, LARGE, ARENA, POOL (alloc), BUSY (purge),
 *                  FREE_PURGED (merged with a purged run into one that
 *                  keeps its kind), NONE (merged into a neighbour)
 *   FREE_PURGED -> CENTRAL, LARGE, ARENA, POOL, FREE_DIRTY (merged with a
 *                  dirty neighbour), NONE, BUSY (held out while the header
 *                  of its entirely purged superblock is trimmed)
 *   BUSY        -> FREE_PURGED, FREE_DIRTY (madvise failed), NONE (given
 *                  back straight into a free neighbour)
 *   CENTRAL, POOL -> FREE_DIRTY (freed), NONE (freed into a free neighbour)
 *   CENTRAL     -> FREE_PURGED (freed with its first page given back,
 *                  page_heap_free_given_back)
 *   LARGE       -> FREE_DIRTY, NONE, ARENA (a huge arena block), LARGE (a
 *                  new huge superblock is LARGE, then handed out),
 *                  FREE_PURGED (a cached huge block taken out, put back
 *                  into the cache as it was when it could not be grown to fit)
 *   ARENA       -> FREE_DIRTY, NONE
 * Re-writing the same FREE_* state (a run re-listed) is allowed.
 */
#include "core/pages/span_check.h"

#include "core/runtime/report.h"

#if EBB_INVARIANTS

#define S(x) (1u << (x))

static const unsigned span_next_states[] = {
	[SPAN_NONE] = S(SPAN_FREE_DIRTY) | S(SPAN_FREE_PURGED) | S(SPAN_CENTRAL) | S(SPAN_LARGE) |
		      S(SPAN_ARENA) | S(SPAN_POOL),
	[SPAN_FREE_DIRTY] = S(SPAN_CENTRAL) | S(SPAN_LARGE) | S(SPAN_ARENA) | S(SPAN_POOL) | S(SPAN_BUSY) |
			    S(SPAN_FREE_DIRTY) | S(SPAN_FREE_PURGED) | S(SPAN_NONE),
	[SPAN_FREE_PURGED] = S(SPAN_CENTRAL) | S(SPAN_LARGE) | S(SPAN_ARENA) | S(SPAN_POOL) |
			     S(SPAN_FREE_PURGED) | S(SPAN_FREE_DIRTY) | S(SPAN_NONE) | S(SPAN_BUSY),
	[SPAN_BUSY] = S(SPAN_FREE_PURGED) | S(SPAN_FREE_DIRTY) | S(SPAN_NONE),
	[SPAN_CENTRAL] = S(SPAN_FREE_DIRTY) | S(SPAN_FREE_PURGED) | S(SPAN_NONE),
	[SPAN_LARGE] = S(SPAN_FREE_DIRTY) | S(SPAN_NONE) | S(SPAN_ARENA) | S(SPAN_LARGE) |
		       S(SPAN_FREE_PURGED),
	[SPAN_ARENA] = S(SPAN_FREE_DIRTY) | S(SPAN_NONE),
	[SPAN_POOL] = S(SPAN_FREE_DIRTY) | S(SPAN_NONE),
};

static const char *const span_state_names[] = {
	[SPAN_NONE] = "NONE",       [SPAN_FREE_DIRTY] = "FREE_DIRTY", [SPAN_FREE_PURGED] = "FREE_PURGED",
	[SPAN_BUSY] = "BUSY",       [SPAN_CENTRAL] = "CENTRAL",       [SPAN_LARGE] = "LARGE",
	[SPAN_ARENA] = "ARENA",     [SPAN_POOL] = "POOL",
};

#define SPAN_STATES (sizeof span_next_states / sizeof span_next_states[0])

static const char *state_name(unsigned st)
{
	return st < SPAN_STATES ? span_state_names[st] : "bad state";
}

void span_check_transition(const span_t *s, unsigned to, const ebb_lock_t *lock)
{
	unsigned from = s->state;
	char msg[256];
	if (from >= SPAN_STATES || to >= SPAN_STATES || !(span_next_states[from] & S(to))) {
		report_format(msg, sizeof msg, "span %p (page %u): state %s -> %s is not in span.h's table (written at %p)",
			      (const void *)s, (unsigned)s->page, state_name(from), state_name(to),
			      __builtin_return_address(0));
		report_fatal(msg);
	}
	if (lock != NULL && !lock_held_by_self(lock)) {
		report_format(msg, sizeof msg,
			      "span %p (page %u): state %s -> %s written without the page heap lock %p",
			      (const void *)s, (unsigned)s->page, state_name(from), state_name(to),
			      (const void *)lock);
		report_fatal(msg);
	}
}

#endif /* EBB_INVARIANTS */
