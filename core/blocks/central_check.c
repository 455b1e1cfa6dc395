/* central_check.c: the identities of a central list (span.h, central.h),
 * checked under the list's lock in the EBB_INVARIANTS build.
 *
 *   the caller holds c's lock (lock_held_by_self)
 *   made <= transfer_cap; each stack's count <= made
 *   (walked, and only when the head did not move during the walk: the
 *   stacks are lock-free, so a walk that raced a push or pop proves nothing)
 *   each stack's head count == the nodes on it, every index < made, no node
 *     on both stacks or twice; every address in a full node is a block of
 *     c's class (block_lookup; its mark is not checked: a double free the
 *     program made is reported when the block is handed out, not here)
 *   used_blocks <= (spans - nstash) * blocks (blocks in transfer batches count in
 *     their home's used_blocks, and may sit in any CPU's list: no identity
 *     ties one list's batches to its own counters)
 *   every span on the partial list: CENTRAL, homed here, of c's class,
 *     in_partial set, CENTRAL_USED_FULL clear, links consistent
 *     (next->prev == s), free blocks on its list or withheld,
 *     withheld == 0 iff given_back == 0, given_back
 *     only pages of the span, every page of it without class (a lazy
 *     carve's) in given_back, used + withheld + lost <= blocks, lost == 0
 *     but after a reported corruption (which drops the rest of a span's
 *     free list: those blocks are leaked), and the free list, walked (at
 *     most CHECK_LINKS links a call, block starts of the span), as long as
 *     blocks - used - withheld - lost: the count the code derives
 *     (span_free_count) rather than stores
 *   every span in the stash: CENTRAL, homed here, of c's class, off the
 *     partial list, no block out, every page given back and without class,
 *     all its blocks withheld; as many as nstash
 *   used_blocks == sum of used over the partial spans + blocks for each
 *     homed span on neither it nor the stash (a span off both is full), with
 *     no report made (a dropped free list makes a span "full" with fewer
 *     out).
 */
#include "core/blocks/central.h"

#include "core/blocks/block.h"
#include "core/blocks/freelist.h"
#include "core/blocks/size_class.h"
#include "core/pages/superblock.h"
#include "core/runtime/report.h"

#if EBB_INVARIANTS

#define CENTRAL_CHECK_EVERY 64
/* Most free-list links one check follows, over all its spans: the spans
 * past that get the counts' checks only. */
#define CHECK_LINKS 4096

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

/* Walks one transfer stack: its node count, or -1 if the walk found a fault
 * (*what says which; a is the value found). seen[0 .. *nseen) lists the
 * nodes met (slot indices + 1; a list has at most `made` <= 255), slot_made
 * is how many nodes the list's slot has handed out. */
static int check_stack(const central_t *c, uint64_t head, uint32_t made, uint32_t slot_made, bool full,
		       uint32_t *seen, unsigned *nseen, const char **what, uint64_t *a)
{
	const size_class_t *k = &size_classes[c->cls];
	unsigned n = 0;
	for (unsigned top = TRANSFER_TOP(head); top != 0; n++) {
		bool twice = false;
		for (unsigned j = 0; j < *nseen && !twice; j++)
			twice = seen[j] == top;
		if (top > slot_made || twice || *nseen >= made) {
			*what = top > slot_made ? "transfer stack holds a node not made"
				: twice	 ? "transfer node on a stack twice"
					 : "transfer stacks hold more nodes than the list made";
			*a = top;
			return -1;
		}
		seen[(*nseen)++] = top;
		const transfer_node_t *node = central_node_at(c, top - 1);
		for (unsigned i = 0; full && i < k->batch; i++) {
			void *b = node->blocks[i];
			span_t *s;
			const char *why;
			if (block_lookup(b, &s, &why) != c->cls) {
				*what = "transfer node holds an address that is not a block of the class";
				*a = (uintptr_t)b;
				return -1;
			}
		}
		top = __atomic_load_n(&node->next, __ATOMIC_RELAXED);
	}
	return (int)n;
}

/* The transfer stacks, checked against a snapshot of their heads: a fault
 * counts only if neither head moved during the walk. The count of nodes
 * made is read after the heads: a flush makes a node (node_get, without
 * the list's lock) before it pushes it, so every node a snapshot can hold
 * is counted by then; read before the heads, a node made and pushed in
 * between looked "not made". */
static void central_check_transfer(const central_t *c)
{
	if (c->cls == 0)
		return;
	for (int attempt = 0; attempt < 4; attempt++) {
		uint32_t seen[256];
		unsigned nseen = 0;
		const char *what = NULL;
		uint64_t a = 0;
		uint64_t full = atomic_load_u64_acquire(&c->full), spare = atomic_load_u64_acquire(&c->spare);
		uint32_t made = atomic_load_u32(&c->made);
		uint32_t slot_made = __atomic_load_n((const uint32_t *)(c->node_base - EBB_CACHELINE), __ATOMIC_RELAXED);
		int nf = check_stack(c, full, made, slot_made, true, seen, &nseen, &what, &a);
		int ns = nf < 0 ? 0 : check_stack(c, spare, made, slot_made, false, seen, &nseen, &what, &a);
		if (full != atomic_load_u64_acquire(&c->full) || spare != atomic_load_u64_acquire(&c->spare))
			continue; /* raced a push or pop: look again */
		if (what != NULL)
			central_check_fail(c, NULL, what, a, made);
		if ((unsigned)nf != TRANSFER_COUNT(full))
			central_check_fail(c, NULL, "full stack's count != its nodes", TRANSFER_COUNT(full), (uint64_t)nf);
		if ((unsigned)ns != TRANSFER_COUNT(spare))
			central_check_fail(c, NULL, "spare stack's count != its nodes", TRANSFER_COUNT(spare), (uint64_t)ns);
		return;
	}
}

void central_check(const central_t *c, bool walk)
{
	const size_class_t *k = &size_classes[c->cls];
	if (!lock_held_by_self(&c->lock))
		central_check_fail(c, NULL, "checked without its lock", 0, 0);
	uint32_t made = atomic_load_u32(&c->made);
	if (made > k->transfer_cap)
		central_check_fail(c, NULL, "transfer nodes made > transfer_cap", made, k->transfer_cap);
	if (c->used_blocks > (c->spans - c->nstash) * k->blocks)
		central_check_fail(c, NULL, "used_blocks > carved spans * blocks", c->used_blocks,
				   (c->spans - c->nstash) * k->blocks);
	if (!walk && ++central_check_calls % CENTRAL_CHECK_EVERY != 0)
		return;
	central_check_transfer(c);
	uint64_t used = 0, listed = 0, links = 0;
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
		if (s->used & CENTRAL_USED_FULL)
			central_check_fail(c, s, "span on the partial list is marked full", s->used, 0);
		if (s->prev != prev)
			central_check_fail(c, s, "partial list links: prev is not the span before", 0, 0);
		if (span_free_count(s) == 0 && s->u.central.withheld == 0)
			central_check_fail(c, s, "span without free blocks on the partial list", 0, 0);
		uint64_t gone = s->u.central.given_back;
		if ((s->u.central.withheld == 0) != (gone == 0) ||
		    (s->npages < 64 && (gone >> s->npages) != 0))
			central_check_fail(c, s, "withheld blocks and given-back pages disagree",
					   s->u.central.withheld, gone);
		/* A page without class (a lazy carve's) is given back: its
		 * blocks are withheld, not on the list and not out. */
		const superblock_t *sb = span_superblock(s);
		for (unsigned i = 0; i < s->npages && i < 64; i++)
			if (pmap_class(pmap_load(sb, s->page + i)) == 0 && !((gone >> i) & 1))
				central_check_fail(c, s, "a page without class is not given back", i, gone);
		uint64_t sum = (uint64_t)s->used + s->u.central.withheld + s->u.central.lost;
		if (sum > k->blocks)
			central_check_fail(c, s, "used + withheld + lost > blocks per span", sum, k->blocks);
		if (s->u.central.lost != 0 && report_count() == 0)
			central_check_fail(c, s, "blocks lost from a free list with no report", s->u.central.lost, 0);
		/* The list's length against the count the code derives. A link
		 * that is not a block start of s (a write into a freed block,
		 * which a refill reports) ends the walk with no verdict. */
		if (links + k->blocks <= CHECK_LINKS) {
			const char *base = span_start(sb, s);
			const void *b = s->u.central.free_head;
			uint64_t n = 0;
			while (b != EBB_LIST_END && n <= k->blocks && (const char *)b >= base &&
			       block_offset_ok((uint64_t)((const char *)b - base), k->block_mul, k->block_limit)) {
				n++;
				b = freelist_span_next(b);
			}
			links += n;
			if (b == EBB_LIST_END && n != span_free_count(s) && report_count() == 0)
				central_check_fail(c, s, "free list's length != blocks - used - withheld - lost per span",
						   n, span_free_count(s));
		}
		used += s->used;
	}
	/* The stash: untouched spans, as central_carve_withhold(s, 0) leaves
	 * one, on no list. */
	uint64_t stashed = 0;
	for (const span_t *s = c->stash; s != NULL; s = s->next) {
		if (++stashed > c->nstash || listed + stashed > c->spans)
			central_check_fail(c, s, "more spans in the stash than it counts", stashed, c->nstash);
		if (s->state != SPAN_CENTRAL || s->u.central.home != c || s->cls != c->cls || s->in_partial ||
		    s->used != 0)
			central_check_fail(c, s, "stashed span is not a CENTRAL span of this list with no block out",
					   s->state, s->used);
		if (s->u.central.withheld != k->blocks || s->u.central.given_back != (((uint64_t)1 << s->npages) - 1))
			central_check_fail(c, s, "stashed span has a page not given back", s->u.central.withheld,
					   s->u.central.given_back);
		const superblock_t *sb = span_superblock(s);
		for (unsigned i = 0; i < s->npages; i++)
			if (pmap_class(pmap_load(sb, s->page + i)) != 0)
				central_check_fail(c, s, "stashed span has a page with class", i, 0);
	}
	if (stashed != c->nstash)
		central_check_fail(c, NULL, "stash count != spans in the stash", c->nstash, stashed);
	uint64_t full = c->spans - listed - stashed;
	if (report_count() == 0 && c->used_blocks != used + full * k->blocks)
		central_check_fail(c, NULL, "used_blocks != sum of the spans' used", c->used_blocks,
				   used + full * k->blocks);
}

#endif /* EBB_INVARIANTS */
