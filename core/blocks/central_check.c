/* central_check.c: the identities of a central list (span.h, central.h),
 * checked under the list's lock in the EBB_INVARIANTS build.
 *
 *   the caller holds c's lock (lock_held_by_self)
 *   ntransfer <= transfer_cap; every slot of the kept batches is a block
 *     address (non-NULL, 16-byte aligned)
 *   used_blocks <= spans * blocks (blocks in transfer batches count in
 *     their home's used_blocks, and may sit in any CPU's list: no identity
 *     ties one list's batches to its own counters)
 *   every span on the partial list: CENTRAL, homed here, of c's class,
 *     in_partial set, links consistent (next->prev == s), free_count > 0
 *     or withheld > 0, withheld == 0 iff given_back == 0, given_back only
 *     pages of the span, used + free_count + withheld == blocks (<= after a
 *     reported corruption, which drops the rest of a span's free list:
 *     those blocks are leaked)
 *   used_blocks == sum of used over the partial spans + blocks for each
 *     homed span not on it (a span off the list is full), with no report
 *     made (a dropped free list makes a span "full" with fewer out).
 */
#include "core/blocks/central.h"

#include "core/blocks/size_class.h"
#include "core/runtime/report.h"

#if EBB_INVARIANTS

#define CENTRAL_CHECK_EVERY 64

static __thread unsigned central_check_calls;

static EBB_NORETURN void central_check_fail(const central_t *c, const void *span, const char *what,
					    uint64_t a, uint64_t b)
{
	char msg[256];
	report_format(msg, sizeof msg, "central list %p (class %u), span %p: %s (%llu vs %llu)",
		      (const void *)c, (unsigned)c->cls, span, what, (unsigned long long)a,
		      (unsigned long long)b);
	report_fatal(msg);
}

void central_check(const central_t *c, bool walk)
{
	const size_class_t *k = &size_classes[c->cls];
	if (!lock_held_by_self(&c->lock))
		central_check_fail(c, NULL, "checked without its lock", 0, 0);
	if (c->ntransfer > k->transfer_cap)
		central_check_fail(c, NULL, "ntransfer > transfer_cap", c->ntransfer, k->transfer_cap);
	uint64_t in_transfer = (uint64_t)c->ntransfer * k->batch;
	if (c->used_blocks > c->spans * k->blocks)
		central_check_fail(c, NULL, "used_blocks > spans * blocks", c->used_blocks,
				   c->spans * k->blocks);
	for (uint64_t i = 0; i < in_transfer; i++) {
		uintptr_t b = (uintptr_t)c->transfer[i];
		if (b == 0 || (b & (EBB_MIN_ALIGN - 1)) != 0)
			central_check_fail(c, NULL, "transfer slot holds no block address", i, b);
	}
	if (!walk && ++central_check_calls % CENTRAL_CHECK_EVERY != 0)
		return;
	uint64_t used = 0, listed = 0;
	const span_t *prev = NULL;
	for (const span_t *s = c->partial; s != NULL; prev = s, s = s->next) {
		if (++listed > c->spans)
			central_check_fail(c, s, "more spans on the partial list than homed here", listed,
					   c->spans);
		if (s->state != SPAN_CENTRAL)
			central_check_fail(c, s, "span on the partial list is not CENTRAL", s->state,
					   SPAN_CENTRAL);
		if (s->u.central.home != c || s->cls != c->cls)
			central_check_fail(c, s, "span on the partial list has another home or class",
					   s->cls, c->cls);
		if (!s->in_partial)
			central_check_fail(c, s, "span on the partial list has in_partial clear", 0, 1);
		if (s->prev != prev)
			central_check_fail(c, s, "partial list links: prev is not the span before", 0, 0);
		if (s->u.central.free_count == 0 && s->u.central.withheld == 0)
			central_check_fail(c, s, "span without free blocks on the partial list", 0, 0);
		uint64_t gone = s->u.central.given_back;
		if ((s->u.central.withheld == 0) != (gone == 0) ||
		    (s->npages < 64 && (gone >> s->npages) != 0))
			central_check_fail(c, s, "withheld blocks and given-back pages disagree",
					   s->u.central.withheld, gone);
		uint64_t sum = (uint64_t)s->used + s->u.central.free_count + s->u.central.withheld;
		if (sum > k->blocks || (sum != k->blocks && report_count() == 0))
			central_check_fail(c, s, "used + free_count + withheld != blocks per span", sum,
					   k->blocks);
		used += s->used;
	}
	uint64_t full = c->spans - listed;
	if (report_count() == 0 && c->used_blocks != used + full * k->blocks)
		central_check_fail(c, NULL, "used_blocks != sum of the spans' used", c->used_blocks,
				   used + full * k->blocks);
}

#endif /* EBB_INVARIANTS */
