/* tcache_check.c: the identities of a thread cache (tcache.h), checked on
 * its own thread's slow paths in the EBB_INVARIANTS build.
 *
 * Per bin c (slots [empty - cap, empty), blocks [top, empty)):
 *   the region lies in the slot array after class 0's slot, below
 *     slot_next (regions are TCACHE_BIN_GAP slots apart: a sentinel and unused), and the slot at empty[c] holds the sentinel (bin_place).
 *     A cache built by hand without sentinels (slots[0] is not one: the
 *     unit tests' fixture) is not checked for where its regions are.
 *     Or, for a bin never given a region: top == empty == full ==
 *     &idle_slot, cap 0, and the idle slot holds the sentinel (its bound
 *     may be set already: the region comes at its first refill or full
 *     free, tcache.c's bin_fit).
 *   full[c] == empty[c] - min(max[c], cap[c]), max[c] <= bin_cap[c],
 *     cap[c] <= bin_cap[c] (a region grows with what the bin holds, its
 *     bound may be larger: tcache.c, bin_fit)
 *   full[c] <= top[c] <= empty[c]: count = empty - top <= min(max, cap),
 *     and the free fast path's room, avail = top - full, is
 *     min(max, cap) - count
 *   each slot in [top, empty) holds a 16-byte aligned address (the marks
 *     of the blocks are not checked here: the program may write into a
 *     freed block, which bin_pop reports by its own rule)
 * Per cache: budget == sum over bins of max * size.
 */
#include "tcache/tcache.h"

#include "core/blocks/size_class.h"
#include "core/runtime/report.h"

#if EBB_INVARIANTS

#define TCACHE_CHECK_EVERY 32

static __thread unsigned tcache_check_calls;

static EBB_NORETURN void tcache_check_fail(const tcache_t *tc, unsigned cls, const char *what,
					   uint64_t a, uint64_t b)
{
	char msg[256];
	report_format(msg, sizeof msg, "thread cache %p, bin %u: %s (%llu vs %llu)", (const void *)tc,
		      cls, what, (unsigned long long)a, (unsigned long long)b);
	report_fatal(msg);
}

/* Slots between two bins' regions: TCACHE_BIN_GAP (a sentinel and unused
 * slots) in a cache tcache_create laid out. */
static unsigned bin_gap(const tcache_t *tc)
{
	return tc->slots[0] == TCACHE_SENTINEL(*tc) ? TCACHE_BIN_GAP : 0u;
}

static void bin_check(const tcache_t *tc, unsigned cls)
{
	const size_class_t *k = &size_classes[cls];
	if (tc->empty[cls] == &tc->idle_slot) { /* no region yet: on the idle slot */
		if (tc->cap[cls] != 0 || tc->top[cls] != tc->empty[cls] || tc->full[cls] != tc->empty[cls])
			tcache_check_fail(tc, cls, "a bin on the idle slot has slots or blocks", tc->cap[cls],
					  (uint64_t)(tc->empty[cls] - tc->top[cls]));
		if (tc->idle_slot != TCACHE_SENTINEL(*tc))
			tcache_check_fail(tc, cls, "the idle slot is not the sentinel",
					  (uint64_t)(uintptr_t)tc->idle_slot, (uint64_t)(uintptr_t)TCACHE_SENTINEL(*tc));
		return;
	}
	void **empty = tc->empty[cls];
	if (bin_gap(tc)) {
		if (empty - tc->cap[cls] < tc->slots + 1 || empty >= tc->slots + tc->slot_next)
			tcache_check_fail(tc, cls, "the bin's region is outside the slots handed out",
					  (uint64_t)(empty - tc->slots), tc->slot_next);
		if (*empty != TCACHE_SENTINEL(*tc))
			tcache_check_fail(tc, cls, "the slot at empty is not the bin's sentinel",
					  (uint64_t)(uintptr_t)*empty, (uint64_t)(uintptr_t)TCACHE_SENTINEL(*tc));
	}
	if (tc->cap[cls] > k->bin_cap)
		tcache_check_fail(tc, cls, "cap > bin_cap", tc->cap[cls], k->bin_cap);
	if (tc->max[cls] > k->bin_cap)
		tcache_check_fail(tc, cls, "max > bin_cap", tc->max[cls], k->bin_cap);
	uint32_t room = tc->max[cls] < tc->cap[cls] ? tc->max[cls] : tc->cap[cls];
	if (tc->full[cls] != tc->empty[cls] - room)
		tcache_check_fail(tc, cls, "full != empty - min(max, cap)", (uint64_t)(tc->empty[cls] - tc->full[cls]),
				  room);
	if (tc->top[cls] < tc->full[cls] || tc->top[cls] > tc->empty[cls])
		tcache_check_fail(tc, cls, "top outside [full, empty]: count > max or < 0",
				  (uint64_t)(tc->empty[cls] - tc->top[cls]), tc->max[cls]);
}

void tcache_check(const tcache_t *tc, unsigned cls)
{
	if (cls != 0) {
		bin_check(tc, cls);
		for (void **b = tc->top[cls]; b < tc->empty[cls]; b++) {
			if (((uintptr_t)*b & (EBB_MIN_ALIGN - 1)) != 0 || *b == NULL)
				tcache_check_fail(tc, cls, "slot in the bin holds no block address",
						  (uint64_t)(b - tc->top[cls]), (uint64_t)(uintptr_t)*b);
		}
		if (++tcache_check_calls % TCACHE_CHECK_EVERY != 0)
			return;
	}
	uint64_t budget = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		bin_check(tc, c);
		budget += (uint64_t)tc->max[c] * size_classes[c].size;
	}
	if (tc->budget != budget)
		tcache_check_fail(tc, 0, "budget != sum of max * size", tc->budget, budget);
}

#endif /* EBB_INVARIANTS */
