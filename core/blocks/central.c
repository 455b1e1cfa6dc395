/* central.c: refill and flush of the per-CPU central lists (see central.h). */
#include "core/blocks/central.h"

#include <errno.h>
#include <string.h>

#include "core/blocks/block.h"
#include "core/blocks/freelist.h"
#include "core/runtime/meta.h"
#include "core/pages/page_heap.h"
#include "core/runtime/report.h"
#include "core/blocks/size_class.h"
#include "core/pages/superblock.h"
#include "core/base/track.h"
#include "os/os.h"

static central_t *central_lists; /* [cpu slot][class] */
static unsigned central_slots;
/* List i ([cpu slot][class]) is set up (written) once its ready bit is set,
 * by its first refill or flush: a process pays for the lists it uses, not
 * for every class of every possible CPU (78 lists of 128 bytes, 3 pages, per
 * slot; 624 KiB of lists on 64 CPUs). A program that makes one allocation
 * writes one list (1 page) where whole-slot set-up wrote three. Code that
 * visits every list skips those not set up: they hold nothing.
 * The bits of the first READY_LOW_SLOTS slots (1 KiB) are in .bss, on pages
 * that start-up writes anyway: read first on a page of their own, they would
 * cost two faults (the zero page mapped, then copied at the set-up). Those
 * of higher slots are in .lbss, untouched unless such a CPU runs. */
#define READY_WORDS ((EBB_NUM_CLASSES + 63) / 64)
#define READY_LOW_SLOTS 64u
static uint64_t central_ready_low[READY_LOW_SLOTS][READY_WORDS];
static uint64_t central_ready_high[EBB_MAX_CPUS > READY_LOW_SLOTS ? EBB_MAX_CPUS - READY_LOW_SLOTS : 1]
				 [READY_WORDS] EBB_BIG_ZERO;

static uint64_t *ready_word(size_t i)
{
	size_t slot = i / EBB_NUM_CLASSES, cls = i % EBB_NUM_CLASSES;
	uint64_t *w = slot < READY_LOW_SLOTS ? central_ready_low[slot] : central_ready_high[slot - READY_LOW_SLOTS];
	return &w[cls / 64];
}

static inline bool list_ready(size_t i)
{
	return (atomic_load_u64_acquire(ready_word(i)) >> (i % EBB_NUM_CLASSES % 64) & 1) != 0;
}

static ebb_lock_t central_setup_lock = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_CENTRAL);
/* A slot's nodes (central_node_at): a cache line holding the count of nodes
 * handed out of it (node_get), then room for every node its lists may make
 * (the sum of the classes' transfer_cap), TRANSFER_NODE_BYTES each. */
static char *central_nodes; /* [cpu slot] central_nodes_per_slot bytes */
static size_t central_nodes_per_slot;

/* The link test of span free lists (span_link_in), per class: with
 * size = d << shift (d odd) and inv = d^-1 mod 2^64, an offset off (any 64
 * bits, the wrapped difference of a link below the span too) is a block
 * start, q * size with q < blocks, exactly when
 * ror(off * inv, shift) < blocks: for off = q * size the product is
 * q << shift and the rotation gives q back; for any other off, the rotated
 * product r < blocks would give off = rol(r, shift) * d = r * size. One
 * multiply, one rotation and one compare, where block.h's test (exact for
 * off < 2^22 only) needs a range compare first.
 *
 * Where the size and the span's block bytes are both powers of two (16 to
 * 4096 bytes in one-page spans: the classes of most blocks), off is a
 * block start exactly when off & mask is 0, mask = ~(block bytes - 1) |
 * (size - 1): one test, no multiply or rotation; mask is 0 for the other
 * classes. */
static struct {
	uint64_t inv;
	uint64_t mask;
	uint64_t bytes_low; /* with a mask: block bytes - 1 (span_take_in, aligned) */
	uint32_t shift;
	uint32_t blocks;
} link_test[EBB_NUM_CLASSES];

static void link_test_init(unsigned cls)
{
	uint64_t size = size_classes[cls].size;
	unsigned shift = (unsigned)__builtin_ctzll(size);
	uint64_t d = size >> shift, x = d; /* d * d = 1 mod 8: 3 bits right */
	for (int i = 0; i < 5; i++)
		x *= 2 - d * x; /* Newton: twice the bits each time */
	link_test[cls].inv = x;
	link_test[cls].shift = shift;
	link_test[cls].blocks = size_classes[cls].blocks;
	uint64_t bytes = size * size_classes[cls].blocks;
	if (d == 1 && (bytes & (bytes - 1)) == 0) {
		link_test[cls].mask = ~(bytes - 1) | (size - 1);
		link_test[cls].bytes_low = bytes - 1;
	}
}

EBB_INLINE bool link_test_ok(uint64_t off, uint64_t inv, unsigned shift, uint64_t blocks)
{
	uint64_t p = off * inv;
	return ((p >> shift) | (p << ((64 - shift) & 63))) < blocks;
}

/* Most nodes a list may have (the head word's 8-bit count), and a slot (its
 * 16-bit index + 1). */
#define TRANSFER_NODES_MAX 255
#define TRANSFER_SLOT_NODES_MAX 65535

bool central_init_all(void)
{
	unsigned n = os_cpu_count();
	central_slots = n < EBB_MAX_CPUS ? n : EBB_MAX_CPUS;
	/* Both mappings stay untouched here: a list is written by list_setup
	 * when it is first used, its nodes when it first
	 * keeps a batch. */
	central_lists = meta_alloc((size_t)central_slots * EBB_NUM_CLASSES * sizeof(central_t),
				   EBB_CACHELINE);
	if (central_lists == NULL)
		return false;
	size_t nodes = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		link_test_init(c);
		EBB_CHECK(size_classes[c].batch <= TRANSFER_BATCH_MAX);
		EBB_CHECK(size_classes[c].transfer_cap <= TRANSFER_NODES_MAX);
		nodes += size_classes[c].transfer_cap;
	}
	EBB_CHECK(nodes <= TRANSFER_SLOT_NODES_MAX);
	central_nodes_per_slot = EBB_CACHELINE + nodes * TRANSFER_NODE_BYTES;
	central_nodes = meta_alloc((size_t)central_slots * central_nodes_per_slot, EBB_CACHELINE);
	return central_nodes != NULL;
}

/* Writes list i ([slot][class]), once (its ready bit says so; setting it
 * under central_setup_lock keeps the fork handlers' set of ready lists fixed
 * while they hold that lock). Its transfer nodes are its slot's. */
static EBB_COLD EBB_NOINLINE void list_setup(size_t i)
{
	lock_acquire(&central_setup_lock);
	if (!list_ready(i)) {
		unsigned slot = (unsigned)(i / EBB_NUM_CLASSES), cls = (unsigned)(i % EBB_NUM_CLASSES);
		central_t *c = &central_lists[i];
		lock_init_rank(&c->lock, LOCK_RANK_CENTRAL);
		c->cls = (uint16_t)cls;
		if (cls != 0)
			c->node_base = central_nodes + (size_t)slot * central_nodes_per_slot + EBB_CACHELINE;
		__atomic_fetch_or(ready_word(i), (uint64_t)1 << (cls % 64), __ATOMIC_RELEASE);
	}
	lock_release(&central_setup_lock);
}

/* The list of (cpu, cls) for a refill or flush on cpu: sets it up the first
 * time (one load and a branch taken once per list). */
static central_t *central_get(unsigned cpu, unsigned cls)
{
	size_t i = (size_t)(cpu % central_slots) * EBB_NUM_CLASSES + cls;
	if (EBB_UNLIKELY(!list_ready(i)))
		list_setup(i);
	return &central_lists[i];
}

/* The list of (slot, cls) if it is set up, else NULL: for looking at other
 * CPUs' lists, and a list not set up has nothing in it. */
static central_t *central_peek(unsigned slot, unsigned cls)
{
	size_t i = (size_t)slot * EBB_NUM_CLASSES + cls;
	if (!list_ready(i))
		return NULL;
	return &central_lists[i];
}

unsigned central_list_count(void)
{
	return central_slots * EBB_NUM_CLASSES;
}

central_t *central_list_at(unsigned i)
{
	return central_peek(i / EBB_NUM_CLASSES, i % EBB_NUM_CLASSES);
}

/* ---------------------------------------------------------------------------
 * Transfer stacks (no lock; central.h says what the head word holds)
 * ------------------------------------------------------------------------- */

/* Pushes node i (which the caller holds) on `head`. The release half of the
 * CAS publishes the node's blocks to whoever pops it. */
static void tstack_push(central_t *c, uint64_t *head, unsigned i)
{
	transfer_node_t *n = central_node_at(c, i);
	uint64_t h = atomic_load_u64(head);
	for (;;) {
		atomic_store_u32(&n->next, TRANSFER_TOP(h));
		uint64_t nh = ((h >> TRANSFER_GEN_SHIFT) + 1) << TRANSFER_GEN_SHIFT |
			      (uint64_t)(TRANSFER_COUNT(h) + 1) << 16 | (i + 1);
		if (atomic_cas_u64_value(head, &h, nh))
			return;
	}
}

/* Pops the top node of `head`: its index, or -1 if the stack is empty. The
 * node read may be popped and reused by another thread between the load and
 * the CAS (it is type-stable: `next` is a word of a node either way); then
 * the head's generation has moved and the CAS fails. */
static int tstack_pop(central_t *c, uint64_t *head)
{
	uint64_t h = atomic_load_u64_acquire(head);
	for (;;) {
		unsigned top = TRANSFER_TOP(h);
		if (top == 0)
			return -1;
		uint64_t next = atomic_load_u32(&central_node_at(c, top - 1)->next);
		uint64_t nh = ((h >> TRANSFER_GEN_SHIFT) + 1) << TRANSFER_GEN_SHIFT |
			      (uint64_t)(TRANSFER_COUNT(h) - 1) << 16 | next;
		if (atomic_cas_u64_value(head, &h, nh))
			return (int)top - 1;
	}
}

/* A node to fill: a spare one, or a new one, the slot's next (the list's
 * count of nodes made bounds it, so the slot's count never passes the sum
 * of its lists' caps); -1 when all transfer_cap nodes of the list hold
 * batches (or are held): the list is full. */
static int node_get(central_t *c)
{
	int i = tstack_pop(c, &c->spare);
	if (i >= 0)
		return i;
	unsigned cap = size_classes[c->cls].transfer_cap;
	for (uint32_t m = atomic_load_u32(&c->made); m < cap; m = atomic_load_u32(&c->made))
		if (atomic_cas_u32(&c->made, m, m + 1))
			return (int)__atomic_fetch_add((uint32_t *)(c->node_base - EBB_CACHELINE), 1u,
						       __ATOMIC_RELAXED);
	return -1;
}

/* Marks c as in use for central_drain's idle test; written only when it
 * changes, so a busy list's line is not written for it. */
static inline void central_touch(central_t *c)
{
	if (EBB_UNLIKELY(atomic_load_u32(&c->busy) == 0))
		atomic_store_u32(&c->busy, 1);
}

/* central_touch for a flush: also says that blocks came back to c
 * (CENTRAL_RETURNED, read by central_refill's carve). Written only when it
 * changes: once after each carve or drain that cleared it. */
static inline void central_touch_returned(central_t *c)
{
	if (EBB_UNLIKELY(atomic_load_u32(&c->busy) != CENTRAL_RETURNED))
		atomic_store_u32(&c->busy, CENTRAL_RETURNED);
}

/* Copies one full batch of c to out[]; false if c has none. */
static bool transfer_take(central_t *c, void **out)
{
	int i = tstack_pop(c, &c->full);
	if (i < 0)
		return false;
	memcpy(out, central_node_at(c, (unsigned)i)->blocks, size_classes[c->cls].batch * sizeof(void *));
	tstack_push(c, &c->spare, (unsigned)i);
	return true;
}

/* ---------------------------------------------------------------------------
 * Spans (caller holds the home's lock unless it owns the span alone)
 * ------------------------------------------------------------------------- */
static void partial_push_head(central_t *c, span_t *s)
{
	s->prev = NULL;
	s->next = c->partial;
	if (s->next)
		s->next->prev = s;
	/* atomic: central_refill reads the head without the lock */
	atomic_store_ptr_release((void **)&c->partial, s);
	s->in_partial = 1;
}

static void partial_remove(central_t *c, span_t *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		atomic_store_ptr_release((void **)&c->partial, s->next); /* as above */
	if (s->next)
		s->next->prev = s->prev;
	s->in_partial = 0;
}

void central_span_retire(central_t *c, span_t *s)
{
	if (s->in_partial)
		partial_remove(c, s);
	c->spans--;
	c->spans_returned++;
}

/* Most transfer nodes one refill fills from the spans it carves (a span
 * holds at most 64 KiB of blocks: 64 batches of 1 KiB at 32 bytes). */
#define CARVE_NODES_MAX 64

/* Hands out the n blocks of `size` bytes from b on as a carve does: no link,
 * the bin mark, the address in out[]; returns the address after them.
 *
 * With SSE2 (every x86-64) two blocks at a time: their addresses are one
 * vector, stored into out[] whole, and xored with the key into both marks,
 * stored low and high half into the two blocks: 11 instructions a pair of
 * blocks where the scalar form below spends 14 (an address, a copy and an
 * xor for each mark, an address store each). bench/fastpath's reverse
 * batch, whose refills carve every block (callgrind): refill_from 8.14 ->
 * 6.91 a pair, perf.fastpath's malloc side 29.7-30.6 -> 28.1-28.7 (3 and 5
 * runs; its free side wanders by 3 under load). The scalar form, unrolled
 * by hand with out[] indexed by a count up to 0 (7 instructions a block,
 * 7.5 with gcc's own unrolling: refill_from 9.2 -> 8.65 a pair; 10.7 ->
 * 9.3 from the first unrolling), serves the other targets, and TSan builds
 * (plain C stores there, as freelist.h keeps its marks under TSan). */
#if defined(__SSE2__) && !defined(__SANITIZE_THREAD__) && EBB_CHECKS
#define CARVE_VECTOR 1
#include <emmintrin.h>
#else
#define CARVE_VECTOR 0
#endif
EBB_INLINE char *carve_out(char *b, size_t size, uint64_t key, void **out, unsigned n)
{
	void **const end = out + n;
	intptr_t i = -(intptr_t)n;
	if (n & 1) {
		TRACK_CARVED(b);
		*(void **)b = NULL;
		freelist_set_mark(b, key);
		end[i++] = b;
		b += size;
	}
#if CARVE_VECTOR
	if (i == 0)
		return b;
	const __m128i k2 = _mm_set1_epi64x((long long)key);
	const __m128i step = _mm_set1_epi64x((long long)(2 * size));
	__m128i a = _mm_set_epi64x((long long)(uintptr_t)(b + size), (long long)(uintptr_t)b);
	/* The second block addressed as b + size in each store: out of gcc's
	 * sight, or it keeps a pointer of its own to it (a lea more a pair).
	 * Unrolled to four blocks, gcc walks out[] and each block with
	 * pointers of their own: 6 instructions a block. */
	size_t sz = size;
	do {
		__asm__("" : "+r"(sz));
		TRACK_CARVED(b);
		TRACK_CARVED(b + sz);
		__m128i m = _mm_xor_si128(a, k2); /* freelist_mark_of, both blocks */
		_mm_storeu_si128((__m128i *)(void *)&end[i], a);
		*(void **)b = NULL;
		*(void **)(b + sz) = NULL;
		_mm_storel_epi64((__m128i *)(void *)(b + 8), m);
		_mm_storeh_pd((double *)(void *)(b + sz + 8), _mm_castsi128_pd(m));
		a = _mm_add_epi64(a, step);
		b += 2 * size;
		i += 2;
	} while (i != 0);
#else
	for (; i != 0; i += 2) {
		char *b2 = b + size;
		TRACK_CARVED(b);
		TRACK_CARVED(b2);
		*(void **)b = NULL;
		freelist_set_mark(b, key);
		*(void **)b2 = NULL;
		freelist_set_mark(b2, key);
		end[i] = b;
		end[i + 1] = b2;
		b = b2 + size;
		/* else gcc walks out[] and both blocks with pointers of their
		 * own (an add and a compare more a pair) */
		__asm__("" : "+r"(b), "+r"(i));
	}
#endif
	return b;
}

static span_t *carve_oom(central_t *c);

/* The pages of a span (blocks of class k from base) that its carve of
 * blocks [0, end) is about to write for the first time, from page `first`
 * on (those below are dirty), faulted in by one call: the writes would
 * fault them in one by one, each fault 8-20 us on the virtual machine the
 * benchmarks run on, in the malloc that refills. The carve writes the
 * first 16 bytes of each block, and of block `end` where a lazy carve's cut
 * falls inside a page (central_carve_withhold): the pages those bytes lie
 * on, no other, so the same pages become resident as without the call.
 * Blocks of a page or more leave pages between their starts untouched:
 * one fault a block either way, so none is asked for. bench/latency
 * (whose p99.9 at t=4 is mostly such refills while the working set first
 * grows), interleaved with the library before, medians: t=4 malloc p99.9
 * 28.0 -> 20.8 us (lower in 30 pairs of 30; 32.0 -> 24.5 in 15 of 15 at
 * load 10), malloc mean 0.85x; t=1 p99.9 8.1 -> 0.41 us on a quiet
 * machine (jemalloc 0.59), no change at load 10. */
static EBB_NOINLINE void carve_populate(span_t *s, unsigned end)
{
	const size_class_t *k = &size_classes[s->cls];
	if (k->size >= EBB_PAGE_SIZE || end == 0)
		return;
	char *base = span_start(span_superblock(s), s);
	unsigned first = s->zeroed - 1u;
	size_t cut = (size_t)end * k->size;
	size_t last = end < k->blocks && (cut & (EBB_PAGE_SIZE - 1)) ? cut : cut - k->size;
	size_t hi = (last + EBB_PAGE_SIZE) & ~(size_t)(EBB_PAGE_SIZE - 1);
	size_t lo = (size_t)first << EBB_PAGE_SHIFT;
	if (hi > lo)
		os_populate(base + lo, hi - lo);
}

/* Carves s, a new span for c from the page heap or c's stash (NULL: none
 * could be had; then one after every stash went back, or NULL), and hands
 * its first `want` blocks (at most all) straight to out[] (*given of them),
 * with their bin marks, as a span_take right after the carve would: they
 * never go on the span's free list. Of the rest, whole batches go into transfer
 * nodes that c has spare (at most *nnodes, held[]; *nnodes is set to the
 * nodes filled), also with bin marks, for the caller to push on c's full
 * stack once the span is linked; the remainder goes on the span's free
 * list. Those blocks are out of the span (in `used`) from here on, as a
 * flushed batch's are.
 *
 * Why nodes: a block listed at the carve and taken by a later refill costs
 * about 20 instructions (its link and span mark written, then its mark and
 * link checked and both words rewritten); one put in a node costs its mark
 * and its address, and the refill that takes the batch copies 32 addresses.
 * A program that builds a large structure takes every block this way.
 *
 * No lock held; the span is the caller's alone until it links it, and the
 * nodes are the caller's until it pushes them. */
static span_t *span_carve(central_t *c, span_t *s, unsigned want, void **out, unsigned *given,
			  unsigned *held, unsigned *nnodes, bool sole)
{
	const size_class_t *k = &size_classes[c->cls];
	if (EBB_UNLIKELY(s == NULL) && (s = carve_oom(c)) == NULL)
		return NULL;
	s->cls = (uint8_t)c->cls;
	s->u.central.home = c;
	s->u.central.withheld = 0;
	s->u.central.purging = 0;
	s->u.central.given_back = 0;
	s->u.central.lost = 0;
	s->in_partial = 0; /* a full span is linked nowhere */
	unsigned n = want < k->blocks ? want : k->blocks;
	/* A span of several pages that reads as zero is carved lazily: blocks
	 * [0, end) now, the pages of the rest given back from the start
	 * (central_carve_withhold), so they stay untouched until a refill
	 * needs them. A dirty span's pages are resident anyway; one whose
	 * zeroed says its pages read zero from page zeroed - 1 on (a straddle,
	 * page_heap.c) is carved up to there at least. */
	unsigned end = k->blocks;
	if (k->pages >= 2 && s->zeroed) {
		size_t dirty = (size_t)(s->zeroed - 1u) << EBB_PAGE_SHIFT;
		unsigned m = (unsigned)((dirty + k->size - 1) / k->size); /* first block from there */
		end = central_carve_cut(c->cls, n > m ? n : m, sole);
	}
	/* Nodes for whole batches of the rest, while the list's full stack has
	 * room (as a flush would look). */
	unsigned nodes = 0;
	while (nodes < *nnodes && (nodes + 1) * k->batch <= end - n &&
	       TRANSFER_COUNT(atomic_load_u64(&c->full)) + nodes < k->transfer_cap) {
		int i = node_get(c);
		if (i < 0)
			break;
		held[nodes++] = (unsigned)i;
	}
	*nnodes = nodes;
	unsigned in_nodes = n + nodes * k->batch;
	/* Every other block below `end` goes on the span's free list now, in
	 * address order (the next refill hands out the next blocks), before
	 * the pages get their class: free() then never meets a block start
	 * that is not a block out or on the list (core/blocks/block.h), and
	 * the fast path needs no per-span carve limit. The blocks from `end`
	 * on start on pages that get no class until a refill carves them
	 * (central_purge_relink), so free() rejects them meanwhile. A recycled
	 * span's pages may hold anything from their last use: each block's
	 * first 16 bytes are the allocator's from here on. */
	uint64_t key = freelist_mark;
	/* In a local: the stores into blocks might alias size_classes for
	 * all gcc knows, and it would load the size again per block. */
	const size_t size = k->size;
	char *base = span_start(span_superblock(s), s);
	if (s->zeroed != 0)
		carve_populate(s, end);
	void *head = EBB_LIST_END;
	for (unsigned i = end; i-- > in_nodes;) {
		void *b = base + (size_t)i * size;
		TRACK_CARVED(b);
		freelist_span_link(b, head, key);
		head = b;
	}
	char *b = carve_out(base, size, key, out, n);
	for (unsigned j = 0; j < nodes; j++)
		b = carve_out(b, size, key, central_node_at(c, held[j])->blocks, k->batch);
	s->used = in_nodes; /* the list: end - in_nodes, the rest withheld below */
	s->u.central.free_head = head;
	*given = n;
	/* Before any block of the span can be freed, free() must find its
	 * class. A lazy carve's withheld pages never get it here, not even for
	 * a moment: a forged free racing the carve must not find a block start
	 * on them (central_carve_withhold). */
	superblock_t *sb = span_superblock(s);
	if (end == k->blocks) {
		superblock_map_span(sb, s->page, s->npages, c->cls);
		s->zeroed = 0;
	} else {
		unsigned classed = central_carve_withhold(s, end);
		superblock_map_span(sb, s->page, s->npages, 0);
		for (unsigned i = 0; i < classed; i++)
			pmap_set_class(sb, s->page + i, c->cls);
		s->zeroed = (uint8_t)(classed + 1); /* span.h */
	}
	return s;
}

/* Whether `next`, read from a block on s's free list, is a block start of s
 * (its mark is checked when it is taken). EBB_LIST_END is not. */
static inline bool span_link_in(unsigned cls, const char *base, const void *next)
{
	return link_test_ok((uint64_t)((const char *)next - base), link_test[cls].inv, link_test[cls].shift,
			    link_test[cls].blocks);
}

/* Whether `next` may be followed: the end, or a block start of s. */
static bool span_link_ok(const span_t *s, const char *base, const void *next)
{
	return next == EBB_LIST_END || span_link_in(s->cls, base, next);
}

/* Drops the rest of s's free list after a report (leaked: none of it can be
 * trusted; `used` already counts the blocks taken). Caller holds s's home
 * lock. */
static void span_list_drop(span_t *s)
{
	s->u.central.lost = size_classes[s->cls].blocks - s->used - s->u.central.withheld;
	s->u.central.free_head = EBB_LIST_END;
}

/* One block of span_take_in: tests that b is a block start of s (the mask
 * test when `aligned`, else the multiply: link_test) and carries its span
 * mark, then reads its link into `next` and rewrites b's two words (no link
 * left for the program; the bin mark, which is the span mark with bit 0
 * flipped). `at` names the position for the reports. */
#define TAKE_BLOCK(b, next, at)                                                           \
	do {                                                                              \
		uint64_t d_ = (uintptr_t)(b) + neg_base, m_;                              \
		if (aligned) {                                                            \
			if (EBB_UNLIKELY(d_ & mask))                                      \
				goto corrupt_##at;                                        \
			__asm__("" : "+r"(d_)); /* else gcc forms b ^ span_key anew */    \
			m_ = d_ ^ kb;                                                     \
		} else {                                                                  \
			if (EBB_UNLIKELY(!link_test_ok(d_, inv, shift, blocks)))          \
				goto corrupt_##at;                                        \
			m_ = (uintptr_t)(b) ^ kb;                                         \
		}                                                                         \
		if (EBB_UNLIKELY(!freelist_mark_kept((b), m_)))                           \
			goto lost_##at;                                                   \
		next = freelist_span_next(b);                                             \
		*(void **)(b) = NULL;                                                     \
		freelist_flip_mark(b);                                                    \
	} while (0)

/* Moves up to `want` free blocks of s to out[], each with its bin mark, in
 * one pass. Caller holds s's home lock.
 *
 * Each address is tested as a block start of s before its block is read or
 * written: the list's head too (span_carve, release_to_spans and a checked
 * link set it: tested again, once a span), then every link read; the last
 * link read, the new head, is tested as a block start while more are
 * counted, else as the end. Two forms of the test:
 * - `aligned`: a span whose block bytes are a power of two and whose start
 *   is aligned to them (every one-page span of such a class; a span of
 *   several pages when it starts so). Then x is a block start of s exactly
 *   when (x - base) & mask is 0 (outside the span, below or above, the
 *   difference has bits of mask set), and a difference that passes equals
 *   x ^ base (base has no bit below the span's bytes), so it gives x's span
 *   mark as d ^ (base ^ span_key): the link test and the mark test share
 *   one lea, 6 instructions (with x ^ base, a copy and an xor: random batch
 *   refill_from 12.1 -> 11.3 a pair).
 * - otherwise link_test's multiply and rotation (every class: for a power
 *   of two inv is 1).
 * The span's fields are read into locals and written once. Unrolled by
 * hand so that the block and its successor trade registers (no copy), and
 * out[] is indexed by a count up to 0 (one add and branch every four
 * blocks; a span's first n % 4 before the loop): 11.5 instructions a block
 * with the mask where a rolled loop spent 15 (bench/fastpath random batch,
 * callgrind: refill_from 15.6 -> 12.9 a pair, perf.fastpath 111.8 -> 109.7
 * by pairs; by fours 0.27 a pair less); 13.5 with the multiply where the
 * rolled loop this replaced spent about 17 (gcc unrolled it once, reloaded
 * the class's constants from the stack and copied the link a block):
 * bench_fastpath --size=48 random batch, callgrind, refill 19.1 -> 16.0
 * instructions a pair; 80 bytes 22.3 -> 19.5. */
EBB_INLINE unsigned span_take_in(span_t *s, unsigned want, void **out, bool aligned)
{
	const unsigned cls = s->cls;
	const uint64_t mask = link_test[cls].mask, inv = link_test[cls].inv, blocks = link_test[cls].blocks;
	const unsigned shift = link_test[cls].shift;
	const uintptr_t base = (uintptr_t)span_start(span_superblock(s), s);
	/* The span mark of x is x ^ span_key (freelist.h); with the mask, it
	 * is d ^ kb for d = x - base = x ^ base. Out of gcc's sight, or it
	 * xors x with the key and then with 1 per block. */
	uint64_t kb = freelist_span_mark_of(NULL, freelist_mark) ^ (aligned ? base : 0);
	__asm__("" : "+r"(kb));
	/* x - base, formed by one lea from x (x ^ base takes a copy of base
	 * first): out of gcc's sight, or it forms the xor again. */
	uint64_t neg_base = -(uint64_t)base;
	__asm__("" : "+r"(neg_base));
	uint32_t avail = (uint32_t)blocks - s->used - s->u.central.withheld - s->u.central.lost;
	unsigned n = want < avail ? want : avail;
	if (n == 0)
		return 0;
	char *b = s->u.central.free_head, *c;
	void **const end = out + n;
	intptr_t i = -(intptr_t)n; /* out[n + i] is the next to fill */
	unsigned taken;
	if (n & 1) {
		TAKE_BLOCK(b, c, 0);
		end[i++] = b;
		b = c;
	}
	if (n & 2) {
		TAKE_BLOCK(b, c, 0);
		end[i] = b;
		TAKE_BLOCK(c, b, 1);
		end[i + 1] = c;
		i += 2;
	}
	while (i != 0) {
		TAKE_BLOCK(b, c, 0);
		end[i] = b;
		TAKE_BLOCK(c, b, 1);
		end[i + 1] = c;
		TAKE_BLOCK(b, c, 2);
		end[i + 2] = b;
		TAKE_BLOCK(c, b, 3);
		end[i + 3] = c;
		i += 4;
	}
	/* b, the last link read, is the new head: a block start of s while
	 * more are counted, else the end. */
	if (EBB_UNLIKELY(n < avail ? (aligned ? (((uintptr_t)b ^ base) & mask) != 0
					      : !link_test_ok((uintptr_t)b + neg_base, inv, shift, blocks))
				   : b != EBB_LIST_END)) {
		taken = n;
		goto corrupt;
	}
	s->u.central.free_head = b;
	s->used += n;
	return n;
corrupt_3:
	/* c, the link of out[n + i + 2], is bad */
	taken = (unsigned)(n + i + 3);
	goto corrupt;
corrupt_2:
	/* b, the link of out[n + i + 1], is bad */
	taken = (unsigned)(n + i + 2);
	goto corrupt;
corrupt_1:
	/* c, the link of out[n + i], is bad */
	taken = (unsigned)(n + i + 1);
	goto corrupt;
corrupt_0:
	taken = (unsigned)(n + i);
	if (taken == 0) {
		/* The head itself: never read; reported as it is. */
		freelist_corrupt("malloc", b);
		goto drop;
	}
corrupt:
	/* A write into a freed block (out[taken - 1], handed out: it is a
	 * block of s, free, and in out[] already): reported, its link never
	 * followed. */
	freelist_corrupt("malloc", out[taken - 1]);
	goto drop;
lost_3:
	taken = (unsigned)(n + i + 3);
	freelist_lost_mark("malloc", c);
	goto drop;
lost_2:
	taken = (unsigned)(n + i + 2);
	freelist_lost_mark("malloc", b);
	goto drop;
lost_1:
	taken = (unsigned)(n + i + 1);
	freelist_lost_mark("malloc", c);
	goto drop;
lost_0:
	taken = (unsigned)(n + i);
	freelist_lost_mark("malloc", b);
drop:
	s->used += taken;
	span_list_drop(s);
	return taken;
}
#undef TAKE_BLOCK

/* span_take_in with the multiply, out of line: inlined beside the mask's
 * copy, its constants pushed the mask's loop to spill (bench/fastpath
 * random-32B 87.25 -> 87.37 a pair). */
static EBB_NOINLINE unsigned span_take_mul(span_t *s, unsigned want, void **out)
{
	return span_take_in(s, want, out, false);
}

/* The mask serves the power-of-two classes' spans that start on a multiple
 * of their block bytes; the multiply the rest. */
static unsigned span_take(span_t *s, unsigned want, void **out)
{
	if (link_test[s->cls].mask != 0 &&
	    ((uintptr_t)span_start(span_superblock(s), s) & link_test[s->cls].bytes_low) == 0)
		return span_take_in(s, want, out, true);
	return span_take_mul(s, want, out);
}

static bool span_full(const span_t *s)
{
	/* An empty list is one whose head is the end: span_take checks the
	 * last link it reads against the count, so that holds exactly, and
	 * costs one load where the count is three. */
	return s->u.central.free_head == EBB_LIST_END && s->u.central.withheld == 0;
}

/* ---------------------------------------------------------------------------
 * The stash (central_t)
 * ------------------------------------------------------------------------- */
/* Spans one page-heap call cuts for a one-page class while the program
 * grows (page_heap_alloc_n): the one carved now and STASH_CUT - 1 for the
 * stash. A cut of several spans costs the page heap little more than one
 * did (bench memreturn a, 128-byte blocks: about 100 instructions a span
 * against 395), and their pages stay untouched until carved. */
#define STASH_CUT 8

/* The rest of s's cut (page_heap_alloc_n), linked from s->next down, into
 * c's stash, set up as central_carve_withhold(t, 0) leaves a span: their
 * pages keep no class (the page heap's), so free() rejects a block start
 * there. Written out here rather than calling it for each span: for a whole
 * untouched span its result is two constants, and its general form with an
 * atomic add per span cost memreturn a's malloc 1.9 instructions a block
 * (callgrind, 42.9 -> 44.9). Caller holds c's lock; out of line, once a
 * cut. */
static EBB_NOINLINE void stash_push(central_t *c, span_t *s)
{
	const size_class_t *k = &size_classes[c->cls];
	span_t *rest = s->next, *last = rest;
	s->next = NULL;
	unsigned n = 0;
	for (span_t *t = rest; t != NULL; t = t->next) {
		t->cls = (uint8_t)c->cls;
		t->u.central.home = c;
		t->u.central.withheld = (uint16_t)k->blocks;
		t->u.central.given_back = ((uint64_t)1 << k->pages) - 1;
		last = t;
		n++;
	}
	central_purge_pages_out_add((uint64_t)n * k->pages);
	last->next = c->stash;
	c->stash = rest;
	atomic_store_u32(&c->nstash, c->nstash + n);
	c->spans += n;
}

/* No span for c: the pages every stash holds may serve (a program that
 * filled its memory with blocks of one class, then asks for another). With
 * the page heap's dirty hook held, as refill_split_batch holds it: the
 * caller's bin is half filled. A stash's pages go back to their own
 * superblock's heap as purged runs, which no other heap's search looks at
 * (only dirty runs are lent, dirty_elsewhere), so every heap is asked, the
 * caller's first. */
static EBB_COLD span_t *carve_oom(central_t *c)
{
	page_heap_hold_hook(true);
	size_t pages = central_stash_release_all();
	page_heap_hold_hook(false);
	if (pages == 0)
		return NULL;
	size_t npages = size_classes[c->cls].pages;
	unsigned n = page_heap_count(), first = os_cpu_id() % n;
	span_t *s = page_heap_alloc(page_heap_get(first), npages, 1, SPAN_CENTRAL);
	for (unsigned i = 1; s == NULL && i < n; i++) {
		page_heap_t *h = page_heap_peek((first + i) % n);
		if (h != NULL)
			s = page_heap_alloc(h, npages, 1, SPAN_CENTRAL);
	}
	if (s == NULL)
		errno = ENOMEM;
	return s;
}

/* The next span of the stash (caller holds c's lock), off it: counted as a
 * span just cut by the page heap, not yet in `spans`. */
static inline span_t *stash_pop(central_t *c, span_t *s)
{
	c->stash = s->next;
	s->next = NULL; /* no cut of its own (stash_push) */
	atomic_store_u32(&c->nstash, c->nstash - 1);
	c->spans--;
	central_purge_pages_out_sub(size_classes[c->cls].pages);
	return s;
}

/* ---------------------------------------------------------------------------
 * Refill
 * ------------------------------------------------------------------------- */
/* Where refill_from takes its blocks: c's partial spans only, those and
 * then new spans, or new spans only (central_refill_fresh). */
enum refill_from_mode { REFILL_PARTIAL, REFILL_PARTIAL_THEN_NEW, REFILL_NEW_ONLY };

/* Refill from c's spans, as `mode` says. One copy (noclone): with the cold
 * refill_elsewhere among its callers, gcc cloned it for REFILL_PARTIAL and
 * then kept span_carve and span_take out of line, in the third window of
 * core/api/layout.ld. */
static __attribute__((noclone)) unsigned refill_from(central_t *c, unsigned cpu, unsigned want, enum refill_from_mode mode, void **out)
{
	unsigned got = 0;
	unsigned held[CARVE_NODES_MAX]; /* nodes filled by span_carve, for c's full stack */
	unsigned nheld = 0;

	lock_acquire(&c->lock);
	while (got < want) {
		span_t *s = mode == REFILL_NEW_ONLY ? NULL : c->partial;
		/* An empty free list on the partial list: withheld blocks, which
		 * central_purge.c relinks unless their pages are going back now. */
		if (s != NULL && s->u.central.free_head == EBB_LIST_END && !central_purge_relink(s, want - got))
			s = NULL;
		if (s == NULL && mode == REFILL_PARTIAL)
			break;
		if (s == NULL) {
			/* Grow without the lock: the page heap may map memory. A batch
			 * may span several spans (a one-page span of 256-byte blocks
			 * holds 16, a batch 32). */
			CENTRAL_CHECK(c);
			bool sole = c->spans == 0; /* central_carve_cut */
			/* The stash serves a growing program only: where a heap
			 * holds dirty pages that fit, the page heap hands those
			 * out again and the stash's fresh pages would be faulted
			 * in beside them (bench request: peak RSS +7%). */
			s = c->stash;
			if (s != NULL && page_heap_growing(size_classes[c->cls].pages))
				stash_pop(c, s);
			else
				s = NULL;
			lock_release(&c->lock);
			if (s == NULL)
				s = page_heap_alloc_n(page_heap_for_cpu(cpu), size_classes[c->cls].pages,
						      size_classes[c->cls].pages == 1 ? STASH_CUT : 1);
			/* Whole batches of the new span go to transfer nodes only
			 * for a caller that takes batches (want >= batch): a
			 * refill of single blocks (a thread cache's bin of a big
			 * class before it grows, tcache.c) never pops them, so
			 * they would keep the span from emptying (at python3's
			 * peak, the spans of its 16, 20 and 30 KiB classes had no
			 * block out: a few of their blocks on the span's list,
			 * the rest in transfer batches, 0.36 MiB in all). */
			unsigned given, nodes = want - got >= size_classes[c->cls].batch ? CARVE_NODES_MAX - nheld : 0;
			s = span_carve(c, s, want - got, out + got, &given, held + nheld, &nodes, sole);
			lock_acquire(&c->lock);
			if (s == NULL) {
				if (got == 0) /* else a short batch beats none */
					errno = ENOMEM;
				break;
			}
			if (EBB_UNLIKELY(s->next != NULL))
				stash_push(c, s);
			nheld += nodes;
			c->spans++;
			c->spans_carved++;
			got += given;
			c->used_blocks += s->used;
			if (!span_full(s))
				partial_push_head(c, s);
			else
				s->used |= CENTRAL_USED_FULL;
			continue;
		}
		unsigned n = span_take(s, want - got, out + got);
		got += n;
		c->used_blocks += n;
		if (span_full(s)) {
			partial_remove(c, s);
			s->used |= CENTRAL_USED_FULL;
		}
	}
	CENTRAL_CHECK(c);
	lock_release(&c->lock);
	/* The carved batches become visible only now, with their spans linked
	 * and counted: a block taken from one and freed finds its span as a
	 * flushed batch's block would. */
	for (unsigned i = 0; i < nheld; i++)
		tstack_push(c, &c->full, held[i]);
	return got;
}

static void release_to_spans(unsigned cls, void **blocks, unsigned count, bool spare);

/* Up to want (< batch) blocks from one of c's transfer batches, the rest of
 * the batch back to its spans; 0 if c has none.
 *
 * The only refill path that can give a span back to the page heap (the rest
 * may complete a span), and it does so with the page heap's dirty hook held
 * (page_heap_hold_hook): the hook may start the background thread, and
 * pthread_create allocates on this thread (glibc: the new thread's DTV, a
 * calloc of about 288 bytes) while our caller's bin is half filled
 * (tcache_refill: blocks written into its slots, its top not yet moved).
 * That nested malloc found the bin empty, refilled it into the same slots
 * and handed one block out; the outer refill then published the slots with
 * that block in them, and it was handed out twice (larson t=32, preloaded:
 * a double-free report at malloc in 8 of 60 runs, always a 288-byte block;
 * never with background_thread=0 or decay_ms=-1, which start no thread). */
static EBB_NOINLINE unsigned refill_split_batch(central_t *c, unsigned want, void **out)
{
	const unsigned batch = size_classes[c->cls].batch;
	void *tmp[TRANSFER_BATCH_MAX];
	if (want >= batch || TRANSFER_TOP(atomic_load_u64(&c->full)) == 0 || !transfer_take(c, tmp))
		return 0;
	memcpy(out, tmp, want * sizeof(void *));
	page_heap_hold_hook(true);
	release_to_spans(c->cls, tmp + want, batch - want, false);
	page_heap_hold_hook(false);
	return want;
}

/* How many other CPUs' transfer stacks a refill looks at before it carves a
 * new span: enough to pair each producer CPU with its consumers on a small
 * machine; bounded so that on 64+ cores a refill that finds nothing costs a
 * few cache-line reads, not one per CPU. */
#define STEAL_PROBES 8

/* The kernel refused new memory: free blocks of this class that wait in
 * another CPU's list serve as well (their spans keep their home). Out of
 * central_refill, cold: its bytes there sat in the first 64 KiB window of
 * core/api/layout.ld, where every process faults what it holds. */
static EBB_COLD unsigned refill_elsewhere(unsigned cpu, unsigned cls, unsigned want, bool use_transfer, void **out)
{
	for (unsigned i = 1; i < central_slots; i++) {
		unsigned other = (cpu + i) % central_slots;
		central_t *o = central_peek(other, cls);
		if (o == NULL)
			continue;
		if (use_transfer && transfer_take(o, out))
			return size_classes[cls].batch;
		unsigned got = refill_from(o, other, want, REFILL_PARTIAL, out);
		if (got != 0)
			return got;
	}
	errno = ENOMEM;
	return 0;
}

unsigned central_refill(unsigned cpu, unsigned cls, unsigned want, bool use_transfer, void **out)
{
	const size_class_t *k = &size_classes[cls];
	central_t *c = central_get(cpu, cls);
	use_transfer = use_transfer && want >= k->batch;
	central_touch(c);
	if (use_transfer && transfer_take(c, out)) {
		/* A caller that asks for several batches (a bin grown to four or
		 * more, tcache_refill) gets as many as c has ready: each refill
		 * it is spared costs the slow path's fixed work (cpu id, list,
		 * trim clock), some 250 instructions (bench/fastpath, whose
		 * 32 B bins ask for four: random 100.3 -> 99.8 a pair, reverse
		 * 86.2 -> 85.9). */
		unsigned got = k->batch;
		while (want - got >= k->batch && TRANSFER_TOP(atomic_load_u64(&c->full)) != 0 &&
		       transfer_take(c, out + got))
			got += k->batch;
		return got;
	}
	/* A list with no partial span (a growing program: every refill ends
	 * in a carve) is told by one load, without the lock taken and given
	 * back for nothing (memreturn a, callgrind: 50 instructions a refill,
	 * malloc 52.9 -> 51.2 a block of 128 B). A span pushed after the load
	 * is not passed over for a new one: the carving refill below takes
	 * c's partial spans before it carves; at most a batch of another
	 * CPU's is popped first. */
	unsigned got = 0;
	if (atomic_load_ptr_acquire((void *const *)&c->partial) != NULL &&
	    (got = refill_from(c, cpu, want, REFILL_PARTIAL, out)) != 0)
		return got;
	/* Nothing here. Whole batches that another CPU's threads flushed (the
	 * consumer side of a producer/consumer pair) are cheaper to take than a
	 * new span and keep memory bounded: look at the next few CPUs' counts
	 * (one read of each head) and pop only where there seems to be one. */
	if (use_transfer) {
		unsigned probes = central_slots - 1 < STEAL_PROBES ? central_slots - 1 : STEAL_PROBES;
		for (unsigned i = 1; i <= probes; i++) {
			central_t *o = central_peek((cpu + i) % central_slots, cls);
			if (o != NULL && TRANSFER_TOP(atomic_load_u64(&o->full)) != 0 && transfer_take(o, out))
				return k->batch;
		}
	}
	/* A caller of fewer than a batch (a big class's bin before it grows)
	 * cannot take a batch whole: before a new span is carved, one of c's
	 * serves it, its other blocks back to their spans. Else the class
	 * would grow while its free blocks wait in batches. */
	if (!use_transfer && (got = refill_split_batch(c, want, out)) != 0)
		return got;
	/* Nothing free here or ready elsewhere: the refill carves. Where a
	 * flush brought blocks of the class back to this list since its last
	 * such carve (busy is CENTRAL_RETURNED), the class is in steady use,
	 * not growing, and the carve only covers a crest of what its threads
	 * hold: it takes a quarter of what was asked (for the classes from
	 * 144 B to 1 KiB a span or less, where a batch is two to four). What a
	 * class keeps resident is the most it had out at any of its carves
	 * (held by the program, in other threads' bins, and carved for the
	 * refill), so a whole batch carved at each crest kept most of a batch
	 * more per class. bench/xmalloc (32 classes, batches of 12 KiB), blocks
	 * carved in all, medians of 8 runs: t=1 1 186 -> 1 116 KiB, t=2 2 190
	 * -> 2 105; peak RSS 0.97 and 0.99-1.00 of before (41 interleaved
	 * pairs each), churn's rows unchanged (few carves). The carve clears
	 * the mark, so a class that grows while some of its blocks come back
	 * carves a whole batch next time; one that only grows (no flush:
	 * memreturn a's bulk allocation) never carves a quarter. Only this
	 * list's mark is read: the marks of the lists the steal loop probes
	 * read as well (a producer's own list is never marked), with a quarter
	 * or with one span carved, left xmalloc's peak RSS as it was (t=1 0.99
	 * and 1.00, t=2 1.00 and 1.00 of this, 31 interleaved pairs; t=4 and
	 * churn ws=10K t=2 the same in 25). A hint: a flush racing the store
	 * is seen at the next carve. */
	if (atomic_load_u32(&c->busy) == CENTRAL_RETURNED) {
		atomic_store_u32(&c->busy, 1);
		want = (want + 3) >> 2;
	}
	got = refill_from(c, cpu, want, REFILL_PARTIAL_THEN_NEW, out);
	if (EBB_LIKELY(got != 0))
		return got;
	return refill_elsewhere(cpu, cls, want, use_transfer, out);
}

/* Issue 13, larson t=2: a thread's blocks share 64-byte lines with another
 * thread's live blocks when its refills take single blocks from the spans
 * and batches other threads flushed into (each generation's caches are
 * flushed at their exit and the next starts empty). Once a line holds two
 * threads' live blocks it stays so, since each thread recycles its own
 * blocks through its bins, and both cores write it. bench/linemix: 7.0-7.3%
 * of mallocs on such a line before, 2.2-3.0% with new spans for a cache's
 * first refills (mimalloc, which hands a thread whole pages, 0.02%); CPU a
 * replacement under chrt -f 1 0.91-0.92 of before, peak RSS 1.02-1.05.
 * Only while the page heaps hold dirty pages that fit (page_heap_growing):
 * those are resident either way. New spans from any pages cut CPU to 0.74
 * but raised the peak 1.8x: fresh pages faulted in while the partial spans'
 * free blocks waited. A partial span with the fewest blocks out, instead
 * of new spans, left 6.1-6.4%; the exiting caches' blocks sent to their
 * spans instead of onto transfer batches, 6.8-7.2% (no change). */
unsigned central_refill_fresh(unsigned cpu, unsigned cls, unsigned want, void **out)
{
	if (!page_heap_growing(size_classes[cls].pages)) {
		central_t *c = central_get(cpu, cls);
		central_touch(c);
		unsigned got = refill_from(c, cpu, want, REFILL_NEW_ONLY, out);
		if (got != 0)
			return got;
	}
	return central_refill(cpu, cls, want, true, out);
}

/* ---------------------------------------------------------------------------
 * Flush
 * ------------------------------------------------------------------------- */

/* Most blocks release_to_spans gives back under one hold of a home's lock:
 * the lock is dropped and taken again after that many, so that a refill on
 * the home's CPU never waits for more than one chunk's work (about 33
 * instructions a block in random order, 13 in a run: some 4 300 at most).
 * Each chunk is a window of release_fast of its own, which costs about 95
 * instructions (its call, the relock, the run closed and opened again):
 * 128 rather than 64 halves that for a bin's flush of 256 blocks
 * (bench/fastpath random and reverse batches 0.67 and 0.78 a pair less). */
#define RELEASE_CHUNK 128

/* Ends each window of blocks release_fast walks: no block, and outside every
 * run and every superblock. 2^63, not NULL: with one_page a run is tested
 * against its head, which is EBB_LIST_END (1) in a run with no block yet,
 * and NULL ^ 1 would read as an offset in its page. 2^63 xor EBB_LIST_END,
 * a block's or a superblock's address (user space: below 2^47) is at least
 * 2^63, and minus a span's first byte it is above any span's block bytes
 * (the test of several pages). Not all ones: 2^63 overflows
 * registry_slot's multiply, so the stop costs that and its branch, not the
 * registry's load (all ones, -1, passes it: bench/fastpath random and
 * reverse batches 0.04 and 0.03 a pair less). */
#define RELEASE_SENTINEL ((void *)((uintptr_t)1 << 63))
/* release_state's sb_seen (and the superblock sb_other_neg names) before
 * any: no address that passes registry_slot (below 2^47) is within a
 * superblock of it. */
#define RELEASE_NO_SB ((uintptr_t)1 << 63)

/* b failed release_to_spans' test of a block of class cls: reports why
 * (block.h's full test words it). */
static EBB_COLD EBB_NOINLINE void release_bad(void *b, unsigned cls)
{
	span_t *s;
	const char *why;
	if (block_lookup(b, &s, &why) != cls)
		report_bad_pointer("free", b, why ? why : "not a block of this allocator");
	else
		report_bad_pointer("free", b, "not a block of this allocator");
}

/* Switches the lock release_to_spans holds from `locked` to `home`. */
static EBB_NOINLINE central_t *release_relock(central_t *locked, central_t *home)
{
	CENTRAL_CHECK(locked);
	lock_release(&locked->lock);
	lock_acquire(&home->lock);
	return home;
}

/* The run of n blocks that release_blocks_in chained on s (head: the last one
 * in flush order) holds more than s had out before it: a double free that
 * kept its bin mark. `over` = n - (the blocks s had out). The blocks past
 * s's count, in flush order, are the last `over` of the run: the first
 * `over` of the chain. Each is reported (by address, earliest first, as a
 * block-by-block return would) and dropped (leaked) with its bin mark put
 * back and no link; returns the chain past them. Caller holds the home's
 * lock. */
static EBB_COLD EBB_NOINLINE void *run_overfreed(void *head, uint32_t over)
{
	const uint64_t key = freelist_mark;
	void *dropped[RELEASE_CHUNK];
	for (uint32_t i = 0; i < over; i++) {
		void *b = head;
		head = freelist_span_next(b);
		*(void **)b = NULL;
		freelist_set_mark(b, key);
		dropped[i] = b;
	}
	for (uint32_t i = over; i-- > 0;)
		freelist_lost_mark("free", dropped[i]);
	return head;
}

/* *used -= n; whether *used was at most n before as a signed 32-bit count:
 * the span is now free, or more came back than were out (*used wrapped),
 * or it was full (CENTRAL_USED_FULL: negative). On x86-64 that is one
 * subtraction in memory and a branch on its flags (`le`: zero, or sign
 * unlike overflow, which compares the true signed values even when a full
 * span's count minus n overflows), as cheap as the plain decrement it
 * replaces; gcc makes a load, a subtraction, a store and a compare of the
 * C form. The C form under TSan, which sees no write inside asm. */
static inline bool used_sub_reaches(uint32_t *used, uint64_t n)
{
#if defined(__x86_64__) && defined(__GCC_ASM_FLAG_OUTPUTS__) && !defined(__SANITIZE_THREAD__)
	/* n (at most RELEASE_CHUNK) in a 64-bit register, its low half
	 * named (%k2): no copy to a 32-bit one; or an immediate where gcc
	 * knows it (release_fast_in's scatter form: 1, with no register
	 * loaded a block). */
	bool reaches;
	__asm__("subl %k2, %0" : "+m"(*used), "=@ccle"(reaches) : "ri"(n));
	return reaches;
#else
	uint32_t out = *used;
	*used = out - (uint32_t)n;
	return (int64_t)(int32_t)out <= (int64_t)n;
#endif
}

/* Puts the run of n blocks that release_blocks_in chained (head: the last one
 * of them, its chain ending in s's old free_head) on s. The home's
 * used_blocks is not touched here: release_fast takes every block it chained
 * off it at once when it returns (the blocks `at` passed), and
 * release_blocks_in each block it chains itself, so a flush in random order,
 * where nearly every block is a run of its own, pays one subtraction in
 * memory per call instead of one per run (bench/fastpath random batch: one
 * instruction a pair); nor is a count of s's list, which is derived
 * (span_free_count: bench/fastpath random batch 98.39 -> 97.52 a pair with
 * the take's tests of an empty list made on its head). Caller holds s's
 * home's lock. A run of more blocks than s has
 * out is a double free (each block in it kept its bin mark, so none is in
 * it twice): its blocks past the count are reported and dropped here, by
 * the signed result of the run's one subtraction from `used` (no load and
 * compare per block), which also catches a span that was full
 * (CENTRAL_USED_FULL) and must rejoin the partial list. */
static inline bool run_close_reaches(span_t *s, void *head, uint64_t n)
{
	s->u.central.free_head = head;
	return used_sub_reaches(&s->used, n);
}

/* The rest of run_close, given what run_close_reaches returned: what a
 * run rarely needs (release_fast leaves the overfreed case to this). */
static void run_close_rest(central_t *home, span_t *s, void *head, uint32_t n, bool reached, span_t **empties)
{
	/* Not reached: s had more than n out and no CENTRAL_USED_FULL, so it
	 * is on the partial list already. */
	if (EBB_LIKELY(!reached))
		return;
	/* Nothing came back (every block of the run lost its mark, reported
	 * and dropped under on_error=warn, or the run was closed once already
	 * and opened again after a bad block): a full span stays full and off
	 * the list, one already empty as it is (retired already, or being
	 * purged). */
	if (EBB_UNLIKELY(n == 0))
		return;
	uint32_t was = s->used + n;
	if (was & CENTRAL_USED_FULL) {
		/* Full until now: its count without the mark, less the run. */
		was &= ~CENTRAL_USED_FULL;
		s->used = was - n;
		if (was > n) {
			/* Just got its first blocks back: nearly full spans are
			 * handed out first, so that emptier ones (drifting to
			 * the end of the list) can drain completely and go back
			 * to the page heap. */
			partial_push_head(home, s);
			return;
		}
		/* Emptied by this run, or given more than it had out: below. */
	}
	if (EBB_UNLIKELY(s->used != 0)) { /* wrapped: n - over were out */
		uint32_t over = 0u - s->used;
		s->u.central.free_head = run_overfreed(head, over);
		home->used_blocks += over;
		s->used = 0;
		/* None was out before this run: the span emptied at an earlier
		 * close (a window's end, then a block of it freed twice) and
		 * was retired then, or is being purged: not again. */
		if (over == n)
			return;
	}
	if (!s->u.central.purging) { /* else the purge pass retires it */
		central_span_retire(home, s);
		s->next = *empties;
		*empties = s;
	}
}

static inline void run_close(central_t *home, span_t *s, void *head, uint32_t n, span_t **empties)
{
	run_close_rest(home, s, head, n, run_close_reaches(s, head, n), empties);
}

/* The span of b, a block of class cls flushed from a bin, after the tests of
 * a new run (release_blocks_in says which and why): NULL if b fails them.
 * *lo is set to where the run's bound is measured from (the span's first
 * byte; with one_page, b itself). The superblock whose registry slot was
 * read last is *sb_seen. No lock needed: the maps are read-only for a page
 * while one of its blocks is out. */
EBB_INLINE span_t *release_span_of(const void *b, unsigned cls, uintptr_t *sb_seen, const char **lo, bool one_page,
				   uint64_t mul, uint64_t limit)
{
	uintptr_t in_sb = (uintptr_t)b & (EBB_SB_SIZE - 1);
	superblock_t *sb = (superblock_t *)((uintptr_t)b - in_sb);
	if (EBB_UNLIKELY((uintptr_t)sb != *sb_seen)) {
		if (registry_get(b) != REG_HEADER)
			return NULL;
		*sb_seen = (uintptr_t)sb;
	}
	unsigned page = (unsigned)(in_sb >> EBB_PAGE_SHIFT);
	uint32_t e = pmap_peek(sb, page);
	if (EBB_UNLIKELY(pmap_class(e) != cls))
		return NULL;
	/* A page of a one-page class is its span's first page. */
	unsigned first = one_page ? page : pmap_first(e);
	*lo = one_page ? (const char *)b : (const char *)superblock_page_addr(sb, first);
	if (!one_page && EBB_UNLIKELY(!block_offset_ok((uint64_t)((const char *)b - *lo), mul, limit)))
		return NULL;
	return superblock_span_at(sb, first);
}

/* Where release_fast stopped: at the block st->at, which it left for
 * release_blocks_in (at the end of its window, the sentinel). */
enum release_stop {
	RELEASE_CLOSE,  /* the run is closed but for run_close_rest (st->reached) */
	RELEASE_LOOKUP, /* the run is closed: the block needs release_span_of */
	RELEASE_LOST,   /* the block lost its mark */
	RELEASE_BAD,    /* the block is not a block start (several pages) */
};

/* release_blocks_in's state between blocks. The run: blocks of span s
 * consecutive in the flush, n of them, chained from head onto s's free
 * list (s->used stays as it was until the run is closed, which checks n
 * against it). A block is in the run when its offset from lo is below the
 * class's `bound` (release_blocks_in). */
typedef struct release_state {
	void *const *at, *const *end; /* *end: RELEASE_SENTINEL */
	span_t *s;
	const char *lo;
	void *head;
	uint64_t n;
	bool reached;      /* RELEASE_CLOSE: what run_close_reaches returned */
	central_t *locked; /* the lock held: s's home */
	uintptr_t sb_seen; /* the superblock whose registry slot was read */
	uintptr_t sb_other_neg; /* minus the superblock sb_seen was before (scatter, one page) */
	span_t *empties;   /* spans all of whose blocks are back */
} release_state_t;

/* One block of release_fast_in, loaded into b, with h the run's head (the
 * last block chained, or s's old free_head while n is 0): it joins the run,
 * or closes it and opens one of its own, or stops the loop (`why`, the
 * head for st, then `stop`). Made twice in the loop with b and h trading
 * places: the block just chained is the next one's head without a copy,
 * and the loop's end is taken once every two blocks. */
#define RELEASE_STEP(b, h, i, stop, n_)                                                                         \
	do {                                                                                                  \
		b = at[i];                                                                                    \
		/* With one_page the run's page is also h's once the run has a                                \
		 * block (n != 0; before, h is s's old free_head, on s's page                                 \
		 * or EBB_LIST_END): b ^ h tests it with no copy of each new                                  \
		 * run's first block into lo (one instruction a run). */                                      \
		uint64_t off_ = one_page ? (uint64_t)((uintptr_t)b ^ (uintptr_t)h)                            \
					 : (uint64_t)((const char *)b - lo);                                  \
		if (scatter || EBB_UNLIKELY(off_ >= bound)) {                                                 \
			/* run_close, but for a run of more blocks than its span                              \
			 * had out, which needs run_overfreed's call. */                                      \
			if (EBB_UNLIKELY(run_close_reaches(s, h, n_))) {                                      \
				/* Else gcc tests n first, then the flags kept in a                           \
				 * register (4 instructions where this is 1). */                              \
				__asm__ volatile("");                                                         \
				if (n_ != 0) {                                                                \
					/* Full until now with at least n out: the mark off,                  \
					 * and back on the partial list unless empty. Else                    \
					 * empty, or given more than it had out (the                          \
					 * subtraction wrapped, from a full span's count or                   \
					 * another's: run_overfreed's call). */                               \
					uint32_t u_ = s->used, left_ = u_ - CENTRAL_USED_FULL;                \
					if (left_ < CENTRAL_USED_FULL / 2) {                                  \
						s->used = u_ = left_;                                         \
						if (left_ != 0)                                               \
							partial_push_head(locked, s);                         \
					} else if (EBB_UNLIKELY(u_ != 0)) {                                   \
						st->reached = true;                                           \
						why = RELEASE_CLOSE;                                          \
						head = h;                                                     \
						goto stop;                                                    \
					}                                                                     \
					if (u_ == 0 && !s->u.central.purging) {                               \
						central_span_retire(locked, s);                               \
						s->next = st->empties;                                        \
						st->empties = s;                                              \
					}                                                                     \
				}                                                                             \
			}                                                                                     \
			n = 0;                                                                                \
			why = RELEASE_LOOKUP;                                                                 \
			head = h;                                                                             \
			/* In the superblock whose registry slot was read, b's                                \
			 * offset in it is b - sb_seen (below EBB_SB_SIZE), and                               \
			 * in no other (an address below it wraps above): one add                             \
			 * of -sb_seen (an lea, where b ^ sb_seen needs a copy                                \
			 * first) tests it and gives the offset. Not with several                             \
			 * pages, whose loop has no register left for -sb_seen:                                \
			 * b ^ sb there. */                                                                    \
			uintptr_t in_sb_ = one_page ? (uintptr_t)b + sb_neg : (uintptr_t)b ^ (uintptr_t)sb;   \
			if (EBB_UNLIKELY(in_sb_ >= EBB_SB_SIZE)) {                                            \
				/* Another superblock: its registry slot is read                              \
				 * here (release_span_of's test), not after a stop:                           \
				 * a flush over a large working set meets a new one                           \
				 * at nearly every block (several pages, 1 KiB                                \
				 * random batch: 127 -> 62 a pair with the stop's                             \
				 * call and lookup gone). The sentinel, in no slot                            \
				 * of ours, stops. */                                                         \
				size_t slot_;                                                                 \
				if (EBB_UNLIKELY(!registry_slot(b, &slot_)))                                  \
					goto stop;                                                            \
				/* The superblock left at the last switch: a                                  \
				 * random flush over two or three of them switches                            \
				 * back and forth (48 and 80-byte random batches:                             \
				 * 0.25 and 0.50 a pair less). Its registry slot                              \
				 * was read in this flush, and it stays live to its                           \
				 * end: it held a block of ours then, whose span                              \
				 * leaves (st->empties) only after the flush.                                 \
				 * Only the scatter form: an ordered flush leaves a                           \
				 * superblock for good. */                                                    \
				uintptr_t oneg_ = one_page && scatter ? st->sb_other_neg : 0;                 \
				uintptr_t in_o_ = (uintptr_t)b + oneg_;                                       \
				if (one_page && scatter && in_o_ < EBB_SB_SIZE) {                             \
					st->sb_other_neg = sb_neg;                                            \
					sb_neg = oneg_;                                                       \
					sb = (superblock_t *)(0 - oneg_);                                     \
					in_sb_ = in_o_;                                                       \
				} else {                                                                      \
					if (registry_at(slot_) != REG_HEADER)                                 \
						goto stop;                                                    \
					sb = superblock_of(b);                                                \
					if (one_page) {                                                       \
						if (scatter)                                                  \
							st->sb_other_neg = sb_neg;                            \
						sb_neg = 0 - (uintptr_t)sb;                                   \
						__asm__("" : "+r"(sb_neg));                                   \
						in_sb_ = (uintptr_t)b + sb_neg;                               \
					} else {                                                              \
						in_sb_ = (uintptr_t)b ^ (uintptr_t)sb;                        \
					}                                                                     \
				}                                                                             \
			}                                                                                     \
			uintptr_t page_ = in_sb_ >> EBB_PAGE_SHIFT;                                           \
			uint32_t e_ = pmap_peek(sb, page_);                                                   \
			if (EBB_UNLIKELY((uint8_t)pmap_class(e_) != (uint8_t)cls))                            \
				goto stop;                                                                    \
			uintptr_t first_ = one_page ? page_ : pmap_first(e_);                                 \
			const char *nlo_ = one_page ? (const char *)b                                         \
						    : (const char *)superblock_page_addr(sb, (unsigned)first_); \
			if (!one_page && EBB_UNLIKELY(!block_offset_ok((uint64_t)((const char *)b - nlo_), mul, limit))) \
				goto stop;                                                                    \
			/* superblock_span_at(sb, first), as a shift and one lea                              \
			 * (gcc makes an add, a shift and an add of it); the                                  \
			 * empty asm keeps gcc from folding the offset back in. */                            \
			uintptr_t desc_ = first_ * sizeof(span_t);                                            \
			if (!scatter) /* costs a copy there */                                                  \
				__asm__("" : "+r"(desc_));                                                    \
			span_t *ns_ = (span_t *)((char *)sb + desc_ +                                         \
						 (offsetof(superblock_t, spans) - EBB_SB_HEADER_PAGES * sizeof(span_t))); \
			/* Else gcc forms the descriptor's address twice. */                                  \
			if (!scatter)                                                                           \
				__asm__("" : "+r"(ns_));                                                      \
			/* The home is stable while we hold one of the span's                                 \
			 * blocks: the span cannot empty, so it stays CENTRAL. (A                             \
			 * block freed twice may read a stale home; its mark or                               \
			 * `used` catches it, under whichever lock.) */                                       \
			if (EBB_UNLIKELY(ns_->u.central.home != locked))                                      \
				goto stop;                                                                    \
			s = ns_;                                                                              \
			if (!one_page)                                                                        \
				lo = nlo_;                                                                    \
			/* The run's first block, chained here with n = 1 rather                              \
			 * than through the n++ below after n = 0: one instruction                            \
			 * a run, and in a random flush nearly every block opens                              \
			 * one. */                                                                            \
			if (EBB_UNLIKELY(!freelist_mark_kept(b, freelist_mark_of(b, key)))) {                 \
				head = s->u.central.free_head;                                                \
				why = RELEASE_LOST;                                                           \
				goto stop;                                                                    \
			}                                                                                     \
			*(void **)b = s->u.central.free_head;                                                 \
			freelist_flip_mark(b);                                                                \
			n = 1;                                                                                \
		} else {                                                                                      \
			if (!one_page && EBB_UNLIKELY(!block_offset_ok(off_, mul, limit))) {                  \
				why = RELEASE_BAD;                                                            \
				head = h;                                                                     \
				goto stop;                                                                    \
			}                                                                                     \
			if (EBB_UNLIKELY(!freelist_mark_kept(b, freelist_mark_of(b, key)))) {                 \
				why = RELEASE_LOST;                                                           \
				head = h;                                                                     \
				goto stop;                                                                    \
			}                                                                                     \
			*(void **)b = h;                                                                      \
			freelist_flip_mark(b);                                                                \
			n++;                                                                                  \
		}                                                                                             \
	} while (0)

/* The blocks of the run, and new runs that need no registry read, no other
 * lock and no report; stops at anything else (enum release_stop). It calls
 * nothing, so gcc keeps all of it in registers: with the reports and the
 * relock in the same loop, it kept the class and the superblock on the
 * stack and moved the run's registers around at every new run (bench/fastpath's
 * random batch: 46 instructions a block that opens a run, 39 here).
 * Unrolled (RELEASE_STEP), the superblock offset formed by an lea:
 * bench/fastpath's random batch 34.0 -> 32.2 instructions a pair in
 * release_fast_page (a block that opens a run: 31 or 33 by the copy); a
 * block that extends a run 14 -> 12 or 14. Four steps a loop rather than
 * two: the loop's add and jump once every four blocks (random and reverse
 * batches 0.44 and 0.56 a pair less).
 *
 * `scatter` (release_window chooses it): every block is taken as one
 * that opens a run, with no test of its page (its span's bytes, with
 * several pages) against the run's. A block of the run's own span then
 * closes the run and opens it again on the same span (the list head it reads is the one the close just
 * wrote): the same blocks, counts and reports, some 10 instructions dearer
 * than an extension, but a block that opens a run is 6 cheaper (no test
 * against the run, no jump back into the unrolled loop, which had the
 * extension inline), and after the first step every run closed is of one
 * block, so the close subtracts a constant 1 (the first step, made before
 * the loop, closes the run st holds, of any length). The asm that keeps gcc
 * from folding the descriptor's address costs two copies here. random
 * batch (bench/fastpath, callgrind): release_fast_page 26.5 -> 20.1 a
 * pair; perf.fastpath 93.5 -> 87.3. With several pages (--size=1024):
 * release_fast_pages 61.5 -> release_scatter_pages 49.4 a pair. */
EBB_INLINE enum release_stop release_fast_in(release_state_t *st, unsigned cls, uint64_t key, bool one_page,
					    bool scatter, uint64_t mul, uint64_t limit, uint64_t bound)
{
	void *const *at = st->at;
	void *const *const from = at;
	span_t *s = st->s;
	const char *lo = st->lo;
	void *h0 = st->head, *h1, *head;
	uint64_t n = st->n; /* 64 bits: used_sub_reaches takes it with no widening */
	central_t *const locked = st->locked;
	superblock_t *sb = (superblock_t *)st->sb_seen;
	uintptr_t sb_neg = 0 - st->sb_seen;
	__asm__("" : "+r"(sb_neg)); /* else gcc folds b + sb_neg back into a copy and a subtraction */
	enum release_stop why;
	/* No test of the end: the window ends in RELEASE_SENTINEL, which
	 * leaves every run and every superblock (RELEASE_LOOKUP). The last
	 * argument of RELEASE_STEP is the length of the run it may close. */
	if (scatter) {
		RELEASE_STEP(h1, h0, 0, stop, n);
		for (;;) {
			RELEASE_STEP(h0, h1, 1, stop1, 1u);
			RELEASE_STEP(h1, h0, 2, stop2, 1u);
			RELEASE_STEP(h0, h1, 3, stop3, 1u);
			at += 4;
			RELEASE_STEP(h1, h0, 0, stop, 1u);
		}
	}
	for (;; at += 4) {
		RELEASE_STEP(h1, h0, 0, stop, n);
		RELEASE_STEP(h0, h1, 1, stop1, n);
		RELEASE_STEP(h1, h0, 2, stop2, n);
		RELEASE_STEP(h0, h1, 3, stop3, n);
	}
stop3:
	at++;
stop2:
	at++;
stop1:
	at++;
stop:
	/* Every block `at` passed is chained (on a span of `locked`). */
	locked->used_blocks -= (uint64_t)(at - from);
	st->at = at;
	st->s = s;
	st->lo = lo;
	st->head = head;
	st->n = n;
	st->sb_seen = (uintptr_t)sb;
	return why;
}
#undef RELEASE_STEP

static EBB_NOINLINE enum release_stop release_fast_page(release_state_t *st, unsigned cls, uint64_t key)
{
	return release_fast_in(st, cls, key, true, false, 0, 0, EBB_PAGE_SIZE);
}

static EBB_NOINLINE enum release_stop release_scatter_page(release_state_t *st, unsigned cls, uint64_t key)
{
	return release_fast_in(st, cls, key, true, true, 0, 0, EBB_PAGE_SIZE);
}

static EBB_NOINLINE enum release_stop release_fast_pages(release_state_t *st, unsigned cls, uint64_t key,
							 uint64_t mul, uint64_t limit, uint64_t bound)
{
	return release_fast_in(st, cls, key, false, false, mul, limit, bound);
}

static EBB_NOINLINE enum release_stop release_scatter_pages(release_state_t *st, unsigned cls, uint64_t key,
							    uint64_t mul, uint64_t limit, uint64_t bound)
{
	return release_fast_in(st, cls, key, false, true, mul, limit, bound);
}

/* Whether blocks at a and b are at least `bound` apart (either way): then
 * not of one span, whose block bytes are `bound`. */
EBB_INLINE bool release_apart(uintptr_t a, uintptr_t b, uint64_t bound)
{
	return (uint64_t)(a - b) + (bound - 1) >= 2 * bound - 1;
}

/* Whether the blocks from `at` may be a whole span of a one-page class, all
 * of its blocks in address order (a flush in reverse order of a batch
 * carved in address order): the first is a page's first byte and the
 * span's last block is where it should be. Reads nothing but the window;
 * release_whole_span tests the rest. */
EBB_INLINE bool release_whole_candidate(void *const *at, void *const *end, uint64_t blocks, uint64_t size)
{
	if ((uint64_t)(end - at) < blocks)
		return false;
	uintptr_t a0 = (uintptr_t)at[0];
	return (a0 & (EBB_PAGE_SIZE - 1)) == 0 && (uintptr_t)at[blocks - 1] - a0 == (blocks - 1) * size;
}

/* A window that opens with every block of a one-page span, in address
 * order, while the span has all of them out: each block's bin mark is tested
 * and turned into its span mark as a run would, but no link is written (the
 * span empties: its list is never read again before a carve rewrites every
 * block) and the span goes to st->empties at once. The run st holds must
 * have no block (st->n == 0), so leaving it needs no close.
 *
 * Every block of the window up to the span's count must be the next block
 * start (so none is in it twice, and none is another span's); a block that
 * is not, or lost its mark, ends the fast form: the blocks before it are
 * chained as the run's, as release_fast would have, and st left at that
 * block, which the window then takes as any other (a report, a run of its
 * own, or the run's next block). A span not all out (some blocks on its
 * list, withheld or lost), or being purged, is left to the window whole.
 * bench/fastpath's reverse batch (callgrind): see bench/fastpath.expected. */
static EBB_NOINLINE void release_whole_span(release_state_t *st, unsigned cls, uint64_t key)
{
	const size_class_t *k = &size_classes[cls];
	const uint64_t blocks = k->blocks;
	const size_t size = k->size;
next_span:;
	char *const base = (char *)*st->at;
	const char *lo;
	span_t *s = release_span_of(base, cls, &st->sb_seen, &lo, true, 0, 0);
	if (s == NULL)
		return; /* the window reports it */
	central_t *home = s->u.central.home;
	if (home != st->locked)
		st->locked = release_relock(st->locked, home);
	st->s = s;
	st->lo = lo;
	st->head = s->u.central.free_head;
	st->n = 0;
	if ((s->used & ~CENTRAL_USED_FULL) != blocks || s->u.central.purging)
		return;
	/* Four blocks a loop, the odd ones first (a 48-byte class has 85):
	 * 8.75 instructions a block. One running pointer b (the empty asm):
	 * else gcc keeps one per step of the four and adds to each (9.25). */
	void *const *at = st->at, *const *const at_end = at + blocks;
	char *b = base;
#define WHOLE_STEP(j, cut)                                                                           \
	do {                                                                                         \
		if (EBB_UNLIKELY(at[j] != b || !freelist_mark_kept(b, freelist_mark_of(b, key)))) \
			goto cut;                                                                    \
		freelist_flip_mark(b);                                                               \
		b += size;                                                                           \
		__asm__("" : "+r"(b));                                                               \
	} while (0)
	for (; (at_end - at) & 3; at++)
		WHOLE_STEP(0, cut);
	for (; at != at_end; at += 4) {
		WHOLE_STEP(0, cut);
		WHOLE_STEP(1, cut1);
		WHOLE_STEP(2, cut2);
		WHOLE_STEP(3, cut3);
	}
#undef WHOLE_STEP
	/* All out, all back: the list was empty (no block on it, withheld or
	 * lost) and stays so. */
	st->locked->used_blocks -= blocks;
	s->used = 0;
	central_span_retire(st->locked, s);
	s->next = st->empties;
	st->empties = s;
	st->at += blocks;
	/* Whole spans in a row (a window holds two of a 64-byte class), each
	 * while the one before it was retired. */
	if (release_whole_candidate(st->at, st->end, blocks, size))
		goto next_span;
	return;
cut3:
	at++;
cut2:
	at++;
cut1:
	at++;
cut:;
	/* *at failed; the blocks before it, marked as a run's, are chained as
	 * one (in the order release_fast would have), and the window goes on
	 * from its slot. */
	uint64_t i = (uint64_t)(at - st->at);
	void *head = st->head;
	for (uint64_t j = 0; j < i; j++) {
		void *c = base + j * size;
		*(void **)c = head;
		head = c;
	}
	st->head = head;
	st->n = i;
	st->at += i;
	st->locked->used_blocks -= i;
}

/* One window of release_blocks_in (st->at to the sentinel at st->end): the
 * blocks release_fast leaves, one at a time; returns with the run closed
 * at the sentinel. The lock held may change (another home).
 *
 * A window whose first four blocks lie in four spans in a row (a flush in
 * random order: a bin of blocks spread over more spans than it holds; for
 * one page, four pages, and for several, blocks at least a span's block
 * bytes apart, which no two of one span are) goes through release_fast_in's
 * scatter form, which is cheaper for blocks that each open a run and
 * dearer for runs; either form gives back the same blocks, so the test
 * need only be a fair guess. Reverse batch (whole pages in a row): the
 * sample costs 0.05 a pair. */
EBB_INLINE void release_window(release_state_t *st, unsigned cls, uint64_t key, bool one_page, uint64_t mul,
			       uint64_t limit, uint64_t bound)
{
	bool scatter = false;
	if (st->end - st->at >= 4) {
		uintptr_t a0 = (uintptr_t)st->at[0], a1 = (uintptr_t)st->at[1];
		uintptr_t a2 = (uintptr_t)st->at[2], a3 = (uintptr_t)st->at[3];
		if (!one_page)
			scatter = release_apart(a0, a1, bound) && release_apart(a1, a2, bound) &&
				  release_apart(a2, a3, bound);
		else
			scatter = (a0 ^ a1) >= EBB_PAGE_SIZE && (a1 ^ a2) >= EBB_PAGE_SIZE && (a2 ^ a3) >= EBB_PAGE_SIZE;
		if (one_page && !scatter && st->n == 0 &&
		    release_whole_candidate(st->at, st->end, size_classes[cls].blocks, size_classes[cls].size))
			release_whole_span(st, cls, key);
	}
	for (;;) {
		enum release_stop why = !one_page ? (scatter ? release_scatter_pages(st, cls, key, mul, limit, bound)
							     : release_fast_pages(st, cls, key, mul, limit, bound))
					: scatter ? release_scatter_page(st, cls, key)
						  : release_fast_page(st, cls, key);
		if (why == RELEASE_CLOSE) {
			run_close_rest(st->locked, st->s, st->head, (uint32_t)st->n, st->reached, &st->empties);
			/* Closed: the next window must not subtract the run from
			 * `used` again (a full span's close stops here, not only
			 * an overfreed one's). */
			st->head = st->s->u.central.free_head; /* run_overfreed may have moved it */
			st->n = 0;
			why = RELEASE_LOOKUP;
		}
		if (st->at == st->end) /* the sentinel: the run is closed */
			break;
		void *b = *st->at++;
		if (why == RELEASE_LOOKUP) {
			const char *nlo;
			span_t *ns = release_span_of(b, cls, &st->sb_seen, &nlo, one_page, mul, limit);
			if (EBB_UNLIKELY(ns == NULL)) {
				release_bad(b, cls);
				continue;
			}
			central_t *home = ns->u.central.home;
			if (EBB_UNLIKELY(home != st->locked))
				st->locked = release_relock(st->locked, home);
			st->s = ns;
			st->lo = nlo;
			st->head = ns->u.central.free_head;
			if (EBB_LIKELY(freelist_mark_kept(b, freelist_mark_of(b, key)))) {
				*(void **)b = st->head;
				freelist_flip_mark(b);
				st->head = b;
				st->n = 1;
				st->locked->used_blocks--;
				continue;
			}
			why = RELEASE_LOST;
		}
		if (why == RELEASE_LOST)
			freelist_lost_mark("free", b);
		else
			release_bad(b, cls);
	}
}

/* Gives each block back to its span; a span whose blocks are then all back
 * joins *empties (for the page heap, without the lock). Every block is
 * checked again (its page's class, and block.h's block-start test where it
 * can have changed) and must carry its bin mark: this is what keeps the
 * span free lists, which are linked through the blocks, clean. A bad block
 * is reported and dropped (leaked).
 *
 * One pass, under the home's lock, in flush order. A block inside the last
 * block's span (a reverse-order flush: a whole span's worth in a row) costs
 * the mark test and two stores into the block, which extend the run's
 * chain; the descriptor is written once per run. Any other block costs the
 * lookup (the registry read skipped while the superblock stays the same,
 * then page class, span, home) and closes the previous run. release_fast
 * does all that; what it leaves (the registry read, another home's lock, a
 * report, a run of more blocks than its span had out) is done here, one
 * block at a time, and so are the lock's drops. A block that fails the
 * lookup leaves the run open on its span, closed, with no block yet
 * (n = 0), so no run is ever without a span: the first good block opens
 * the first run, and closing a run needs no test that one is open.
 *
 * The lock is held for at most RELEASE_CHUNK blocks (one window, below;
 * the flush's last block joins the window before it): then the run is
 * closed, the lock dropped and taken again, and the run opened again on the
 * same span (its free list read again: a refill may have taken from it).
 *
 * Why the block-start test is made only for classes of several pages
 * (one_page false): every address in blocks[] sits in allocator metadata
 * (a bin slot, a transfer node), where the program cannot write, and was a
 * block start of a page of class cls when it got there (free's block test
 * with the page's class; a refill's span; a carve). The page may have
 * changed since only through a double free (a stale copy of an address
 * whose span was retired and its pages reused). The page class is tested
 * again for every run. A class whose span is one page lays that page out
 * the same way every time (blocks from its first byte), so an address that
 * was a block start of a page of class cls is one while the page has class
 * cls: the test would always pass. A span of several pages may be carved
 * again at another page (a stale address then falls inside a block), so
 * there it stays. In bench/fastpath's random batch (32 bytes, one page)
 * this and the span found without the pagemap are 9 instructions a block.
 *
 * Why under the lock: an earlier version tested and chained the blocks
 * outside it and spliced one chain per run under it, to hold it for less.
 * But a flush in random order puts almost every block on a span of its own,
 * so each block paid the lookup, a run record written and read back, and a
 * splice under the lock anyway: 92 instructions per block in bench/fastpath's
 * random batch, 65 then (reverse: 27, then 26). What moves under it reads
 * lines this thread has just written (the block, whose mark free wrote) and
 * the superblock's maps, which stay shared-clean.
 *
 * A double free shows as a block without its bin mark (the other copy is
 * out, or back on its span with the span mark, or earlier in this flush),
 * or as a run with more blocks than its span has out (tested once per run,
 * when it is closed, under the home's lock, which guards `used`): either is
 * reported and the block dropped, as a block-by-block return would (the
 * same blocks, named by address). */
EBB_INLINE void release_blocks_in(unsigned cls, void **blocks, unsigned count, bool spare, span_t **empties,
				  bool one_page)
{
	const uint64_t key = freelist_mark;
	const size_class_t *k = &size_classes[cls];
	const uint64_t mul = k->block_mul, limit = k->block_limit;
	/* A block is in the run when its offset from lo is below `bound`:
	 * the span's block bytes from its first byte, or with one_page the
	 * page, tested by one xor with the run's first block (no address in
	 * blocks[] is in a page's tail: see above, so lo needs no rounding to
	 * its page). */
	const uint64_t bound = one_page ? EBB_PAGE_SIZE : (uint64_t)k->blocks * k->size;
	void *const *const end = blocks + count;
	release_state_t st = {
		.at = blocks, .sb_seen = RELEASE_NO_SB, .sb_other_neg = 0 - RELEASE_NO_SB, .empties = *empties
	};
	for (;; st.at++) {
		if (st.at == end)
			return;
		st.s = release_span_of(*st.at, cls, &st.sb_seen, &st.lo, one_page, mul, limit);
		if (EBB_LIKELY(st.s != NULL))
			break;
		release_bad(*st.at, cls);
	}
	/* The first run opens at the first good block, which release_fast
	 * then takes as a block of it. With one_page it is chained here (but
	 * for the last block of all, which has its own window below, and one
	 * that lost its mark, left for release_fast to report): release_fast
	 * tests a block against the run's head, which in a full span's empty
	 * run is EBB_LIST_END, so the block would take a second lookup. */
	st.locked = st.s->u.central.home;
	lock_acquire(&st.locked->lock);
	st.head = st.s->u.central.free_head;
	st.n = 0;
	/* Not a page's first block, which may open a whole span in address
	 * order (release_whole_span takes it from the window, with n = 0). */
	if (one_page && st.at < end - 1 && ((uintptr_t)*st.at & (EBB_PAGE_SIZE - 1)) != 0) {
		void *b = (void *)*st.at;
		if (EBB_LIKELY(freelist_mark_kept(b, freelist_mark_of(b, key)))) {
			*(void **)b = st.head;
			freelist_flip_mark(b);
			st.head = b;
			st.n = 1;
			st.locked->used_blocks--;
			st.at++;
		}
	}
	/* The blocks go through release_fast a window of at most RELEASE_CHUNK
	 * at a time, with RELEASE_SENTINEL after each: its loop then needs no
	 * test of the end (2 instructions a block). The sentinel takes the
	 * place of the block after the window, put back after it; the last
	 * block of all, after which the caller's array may have no slot (unless
	 * it lends one: spare), goes through a window of its own here. Copying each window instead cost
	 * as much as it saved (a memcpy of 64 addresses: 77 instructions).
	 * The lock is dropped and taken again between windows (the last
	 * block's window joins the one before it: at most RELEASE_CHUNK + 1
	 * blocks under one hold). */
	void **const slots = blocks; /* the caller's: a bin's slots, a local batch; it lends them */
	void *last[2] = { end[-1], RELEASE_SENTINEL };
	/* With `spare` the caller lends blocks[count] too (a bin's next slot:
	 * its next block or its sentinel), so the last block ends a window like
	 * any other: no window of its own (its call and run reopened cost about
	 * 80 instructions a flush). */
	void **const lim = spare ? slots + count : slots + count - 1;
	for (void **next = slots + (st.at - blocks);;) {
		void **stop = lim;
		if (stop - next > RELEASE_CHUNK)
			stop = next + RELEASE_CHUNK;
		if (next == stop) { /* the last block (never with spare) */
			st.at = last;
			st.end = last + 1;
			release_window(&st, cls, key, one_page, mul, limit, bound);
			break;
		}
		void *kept = *stop;
		*stop = RELEASE_SENTINEL;
		st.at = next;
		st.end = stop;
		release_window(&st, cls, key, one_page, mul, limit, bound);
		*stop = kept;
		next = stop;
		if (next == lim) {
			if (spare)
				break; /* every block passed */
			continue; /* the last block, under the same hold */
		}
		/* release_fast closed the run at the sentinel: reopen it on the
		 * same span, whose list a refill may take from meanwhile. */
		CENTRAL_CHECK(st.locked);
		lock_release(&st.locked->lock);
		lock_acquire(&st.locked->lock);
		st.head = st.s->u.central.free_head;
		st.n = 0;
	}
	CENTRAL_CHECK(st.locked);
	lock_release(&st.locked->lock);
	*empties = st.empties;
}

static EBB_NOINLINE void release_blocks_page(unsigned cls, void **blocks, unsigned count, bool spare,
					     span_t **empties)
{
	release_blocks_in(cls, blocks, count, spare, empties, true);
}

static EBB_NOINLINE void release_blocks_pages(unsigned cls, void **blocks, unsigned count, bool spare,
					      span_t **empties)
{
	release_blocks_in(cls, blocks, count, spare, empties, false);
}

/* spare: blocks[count] is lent as well (central_flush_spare). */
static void release_to_spans(unsigned cls, void **blocks, unsigned count, bool spare)
{
	span_t *empties = NULL;
	if (size_classes[cls].pages == 1)
		release_blocks_page(cls, blocks, count, spare, &empties);
	else
		release_blocks_pages(cls, blocks, count, spare, &empties);
	/* No central lock held: hand the empty spans to the page heap. Nobody
	 * else can reach them: all their blocks are back. Those with no page
	 * given back and no block lost (nearly all) go in one call, in the
	 * order they emptied; the others through the purge pass's accounting,
	 * which first checks that every block is back. */
	span_t *whole = NULL, **tail = &whole;
	for (span_t *e = empties, *next; e; e = next) {
		next = e->next;
		if (EBB_UNLIKELY((e->u.central.given_back | e->u.central.lost) != 0)) {
			central_purge_free_span(e);
			continue;
		}
		superblock_map_span(span_superblock(e), e->page, e->npages, 0);
		*tail = e;
		tail = &e->next;
	}
	*tail = NULL;
	if (whole != NULL)
		page_heap_free_spans(whole);
}

static void flush_in(unsigned cpu, unsigned cls, void **blocks, unsigned count, bool spare)
{
	const size_class_t *k = &size_classes[cls];
	central_t *c = central_get(cpu, cls);
	unsigned pushed = 0;

	/* Whole batches onto the transfer stack while the list has a node for
	 * them (a look at the full count first: when it is full, as in a mass
	 * free, nothing is popped); the rest goes to the blocks' spans. */
	if (count >= k->batch) {
		central_touch_returned(c);
		while (count - pushed >= k->batch && TRANSFER_COUNT(atomic_load_u64(&c->full)) < k->transfer_cap) {
			int i = node_get(c);
			if (i < 0)
				break;
			memcpy(central_node_at(c, (unsigned)i)->blocks, blocks + pushed, k->batch * sizeof(void *));
			tstack_push(c, &c->full, (unsigned)i);
			pushed += k->batch;
		}
	}
	if (pushed < count)
		release_to_spans(cls, blocks + pushed, count - pushed, spare);
}

void central_flush(unsigned cpu, unsigned cls, void **blocks, unsigned count)
{
	flush_in(cpu, cls, blocks, count, false);
}

void central_flush_spare(unsigned cpu, unsigned cls, void **blocks, unsigned count)
{
	flush_in(cpu, cls, blocks, count, true);
}

size_t central_drain(bool only_idle, bool *kept)
{
	size_t moved = 0;
	bool any_kept = false;
	void *out[TRANSFER_BATCH_MAX];
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++) {
		central_t *c = central_list_at(i);
		if (c == NULL || c->cls == 0)
			continue;
		if (!only_idle || atomic_load_u32(&c->busy) == 0) {
			unsigned batch = size_classes[c->cls].batch;
			/* Bounded: batches flushed meanwhile wait for the next call. */
			for (unsigned left = size_classes[c->cls].transfer_cap; left > 0 && transfer_take(c, out); left--) {
				moved += batch;
				release_to_spans(c->cls, out, batch, false);
			}
		}
		any_kept |= TRANSFER_COUNT(atomic_load_u64(&c->full)) != 0;
		atomic_store_u32(&c->busy, 0);
	}
	if (kept)
		*kept = any_kept;
	return moved;
}

bool central_span_holds_free(void *p)
{
	superblock_t *sb;
	span_t *s = superblock_span_lookup(p, &sb);
	if (s == NULL || s->state != SPAN_CENTRAL)
		return false;
	central_t *home = s->u.central.home;
	const char *base = span_start(sb, s);
	bool found = false;
	lock_acquire(&home->lock);
	void *b = s->u.central.free_head;
	for (uint32_t i = 0, n = span_free_count(s); i < n && b != EBB_LIST_END; i++) {
		if (b == p) {
			found = true;
			break;
		}
		b = freelist_span_next(b);
		if (!span_link_ok(s, base, b))
			break;
	}
	lock_release(&home->lock);
	return found;
}

/* ---------------------------------------------------------------------------
 * Stats and fork
 * ------------------------------------------------------------------------- */
void central_stats(central_class_stats_t out[EBB_NUM_CLASSES], uint64_t *carved, uint64_t *returned)
{
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++) {
		central_t *c = central_list_at(i);
		if (c == NULL)
			continue;
		central_class_stats_t *o = &out[c->cls];
		o->transfer_blocks += (uint64_t)TRANSFER_COUNT(atomic_load_u64(&c->full)) * size_classes[c->cls].batch;
		lock_acquire(&c->lock);
		o->spans += c->spans;
		o->used_blocks += c->used_blocks;
		*carved += c->spans_carved;
		*returned += c->spans_returned;
		CENTRAL_CHECK(c);
		lock_release(&c->lock);
	}
}

/* The transfer stacks need nothing from fork: a head word is always whole
 * (one CAS). A node that another thread held at the fork (popped, not yet
 * pushed back) stays held in the child, which lacks that thread: the list
 * has one node fewer there, and the blocks in it are lost to the child, as
 * the other threads' caches are. */
void central_prefork(void)
{
	lock_bulk_enter();
	/* Held until the fork is done: no list becomes ready meanwhile, so the
	 * postfork handlers see the set of lists this one locked. */
	lock_acquire(&central_setup_lock);
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++)
		if (central_list_at(i) != NULL)
			lock_acquire(&central_lists[i].lock);
	lock_bulk_leave();
}

void central_postfork_parent(void)
{
	for (unsigned i = central_slots * EBB_NUM_CLASSES; i-- > 0;)
		if (central_list_at(i) != NULL)
			lock_release(&central_lists[i].lock);
	lock_release(&central_setup_lock);
}

void central_postfork_child(void)
{
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++)
		if (central_list_at(i) != NULL)
			lock_init(&central_lists[i].lock);
	lock_init(&central_setup_lock);
	central_purge_postfork_child();
}
