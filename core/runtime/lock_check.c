/* lock_check.c: the lock-order checker of the EBB_INVARIANTS build.
 *
 * The rule (atomic.h): a thread that holds a lock of rank r waits only for
 * locks of rank > r, and never holds two locks of one rank except in a fork
 * handler's loop over every lock of that rank (lock_bulk). Every thread
 * following it cannot deadlock on allocator locks; a thread breaking it can,
 * with a partner that takes the same two locks the other way round, which a
 * test run may never happen to schedule. So the order is checked at every
 * acquire, against what this thread holds, and a violation aborts at once
 * with both ranks named. Release builds compile none of this. */
#include "core/runtime/atomic.h"

#include "core/runtime/report.h"

#if EBB_INVARIANTS

__thread uint16_t lock_ranks_held[LOCK_RANK_COUNT] __attribute__((tls_model("initial-exec")));
__thread unsigned lock_bulk __attribute__((tls_model("initial-exec")));

static const char *const lock_rank_names[LOCK_RANK_COUNT] = {
	[LOCK_RANK_NONE] = "unranked",
	[LOCK_RANK_TIMELINE] = "timeline",
	[LOCK_RANK_TCACHE_LIST] = "thread-cache list",
	[LOCK_RANK_EXT] = "shared arena/pool",
	[LOCK_RANK_POOL_HANDLES] = "pool handles",
	[LOCK_RANK_CENTRAL] = "central list",
	[LOCK_RANK_PAGE_HEAP] = "page heap",
	[LOCK_RANK_META] = "metadata",
	[LOCK_RANK_OPTIONS] = "options strings",
};

static const char *lock_rank_name(unsigned rank)
{
	return rank < LOCK_RANK_COUNT ? lock_rank_names[rank] : "bad rank";
}

EBB_NORETURN void lock_check_fail(const ebb_lock_t *l, unsigned held)
{
	char msg[256];
	if (l->rank == LOCK_RANK_NONE || l->rank >= LOCK_RANK_COUNT)
		report_format(msg, sizeof msg, "lock order: lock %p has no rank (%u): give it one at init",
			      (const void *)l, l->rank);
	else if (l->holder == lock_thread_self())
		report_format(msg, sizeof msg,
			      "lock order: %s lock (rank %u) %p acquired again by the thread that holds it",
			      lock_rank_name(l->rank), l->rank, (const void *)l);
	else
		report_format(msg, sizeof msg,
			      "lock order: %s lock (rank %u) %p acquired while holding a %s lock (rank %u)",
			      lock_rank_name(l->rank), l->rank, (const void *)l, lock_rank_name(held), held);
	report_fatal(msg);
}

void lock_check_order(const ebb_lock_t *l)
{
	if (EBB_UNLIKELY(l->holder == lock_thread_self()))
		lock_check_fail(l, l->rank);
	unsigned rank = l->rank;
	if (EBB_UNLIKELY(rank == LOCK_RANK_NONE || rank >= LOCK_RANK_COUNT))
		lock_check_fail(l, rank); /* every lock of the allocator has a rank */
	for (unsigned r = LOCK_RANK_COUNT - 1; r >= rank; r--) {
		if (lock_ranks_held[r] == 0)
			continue;
		if (r == rank && lock_bulk)
			continue; /* a fork handler taking every lock of the rank */
		lock_check_fail(l, r);
	}
}

#endif /* EBB_INVARIANTS */
