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

static central_t *central_lists; /* [cpu slot][class] */
static unsigned central_slots;

/* Most blocks a transfer node holds (size_class.c: batch <= 32), and most
 * nodes a list may have (the head word's 8-bit index and count). */
#define TRANSFER_BATCH_MAX 32
#define TRANSFER_NODES_MAX 255

static size_t node_size(unsigned cls)
{
	return sizeof(transfer_node_t) + (size_t)size_classes[cls].batch * sizeof(void *);
}

bool central_init_all(void)
{
	unsigned n = os_cpu_count();
	central_slots = n < EBB_MAX_CPUS ? n : EBB_MAX_CPUS;
	central_lists = meta_alloc((size_t)central_slots * EBB_NUM_CLASSES * sizeof(central_t),
				   EBB_CACHELINE);
	if (central_lists == NULL)
		return false;
	/* The nodes of all lists in one mapping: a list's nodes stay untouched
	 * (not resident) until it keeps a batch. */
	size_t per_cpu = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		EBB_CHECK(size_classes[c].batch <= TRANSFER_BATCH_MAX);
		EBB_CHECK(size_classes[c].transfer_cap <= TRANSFER_NODES_MAX);
		per_cpu += size_classes[c].transfer_cap * node_size(c);
	}
	char *nodes = meta_alloc((size_t)central_slots * per_cpu, EBB_CACHELINE);
	if (nodes == NULL)
		return false;
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++) {
		central_t *c = &central_lists[i];
		lock_init_rank(&c->lock, LOCK_RANK_CENTRAL);
		c->cls = (uint16_t)(i % EBB_NUM_CLASSES);
		if (c->cls != 0) {
			c->nodes = nodes;
			c->node_size = (uint32_t)node_size(c->cls);
			nodes += size_classes[c->cls].transfer_cap * node_size(c->cls);
		}
	}
	return true;
}

static central_t *central_get(unsigned cpu, unsigned cls)
{
	return &central_lists[(size_t)(cpu % central_slots) * EBB_NUM_CLASSES + cls];
}

unsigned central_list_count(void)
{
	return central_slots * EBB_NUM_CLASSES;
}

central_t *central_list_at(unsigned i)
{
	return &central_lists[i];
}

/* ---------------------------------------------------------------------------
 * Transfer stacks (no lock; central.h says what the head word holds)
 * ------------------------------------------------------------------------- */
static transfer_node_t *node_at(const central_t *c, unsigned i)
{
	return (transfer_node_t *)(c->nodes + (size_t)i * c->node_size);
}

/* Pushes node i (which the caller holds) on `head`. The release half of the
 * CAS publishes the node's blocks to whoever pops it. */
static void tstack_push(central_t *c, uint64_t *head, unsigned i)
{
	transfer_node_t *n = node_at(c, i);
	uint64_t h = atomic_load_u64(head);
	for (;;) {
		atomic_store_u32(&n->next, TRANSFER_TOP(h));
		uint64_t nh = ((h >> 16) + 1) << 16 | (uint64_t)(TRANSFER_COUNT(h) + 1) << 8 | (i + 1);
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
		uint64_t next = atomic_load_u32(&node_at(c, top - 1)->next);
		uint64_t nh = ((h >> 16) + 1) << 16 | (uint64_t)(TRANSFER_COUNT(h) - 1) << 8 | next;
		if (atomic_cas_u64_value(head, &h, nh))
			return (int)top - 1;
	}
}

/* A node to fill: a spare one, or one not made yet; -1 when all
 * transfer_cap nodes hold batches (or are held): the list is full. */
static int node_get(central_t *c)
{
	int i = tstack_pop(c, &c->spare);
	if (i >= 0)
		return i;
	unsigned cap = size_classes[c->cls].transfer_cap;
	for (uint32_t m = atomic_load_u32(&c->made); m < cap; m = atomic_load_u32(&c->made))
		if (atomic_cas_u32(&c->made, m, m + 1))
			return (int)m;
	return -1;
}

/* Marks c as in use for central_drain's idle test; written only when it
 * changes, so a busy list's line is not written for it. */
static inline void central_touch(central_t *c)
{
	if (EBB_UNLIKELY(atomic_load_u32(&c->busy) == 0))
		atomic_store_u32(&c->busy, 1);
}

/* Copies one full batch of c to out[]; false if c has none. */
static bool transfer_take(central_t *c, void **out)
{
	int i = tstack_pop(c, &c->full);
	if (i < 0)
		return false;
	memcpy(out, node_at(c, (unsigned)i)->blocks, size_classes[c->cls].batch * sizeof(void *));
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
	c->partial = s;
	s->in_partial = 1;
}

static void partial_remove(central_t *c, span_t *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		c->partial = s->next;
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

/* Carves a new span for c from the page heap of `cpu`, and hands its first
 * `want` blocks (at most all) straight to out[], with their bin marks, as a
 * span_take right after the carve would: they never go on the span's free
 * list. No lock held; the span is the caller's alone until it links it. */
static span_t *span_carve(central_t *c, unsigned cpu, unsigned want, void **out)
{
	const size_class_t *k = &size_classes[c->cls];
	span_t *s = page_heap_alloc(page_heap_for_cpu(cpu), k->pages, 1, SPAN_CENTRAL);
	if (s == NULL)
		return NULL;
	s->cls = (uint8_t)c->cls;
	s->u.central.home = c;
	s->u.central.withheld = 0;
	s->u.central.purging = 0;
	s->u.central.given_back = 0;
	s->in_partial = 0; /* a full span is linked nowhere */
	unsigned n = want < k->blocks ? want : k->blocks;
	/* Every other block goes on the span's free list now, in address order
	 * (the next refill hands out the next blocks), before the pages get
	 * their class: free() then never meets a block start that is not a
	 * block out or on the list (core/blocks/block.h), and the fast path
	 * needs no per-span carve limit. A recycled span's pages may hold
	 * anything from their last use: each block's first 16 bytes are the
	 * allocator's from here on. */
	uint64_t key = freelist_mark;
	char *base = span_start(span_superblock(s), s);
	void *head = EBB_LIST_END;
	for (unsigned i = k->blocks; i-- > n;) {
		void *b = base + (size_t)i * k->size;
		TRACK_CARVED(b);
		freelist_span_link(b, head, key);
		head = b;
	}
	for (unsigned i = 0; i < n; i++) {
		void *b = base + (size_t)i * k->size;
		TRACK_CARVED(b);
		*(void **)b = NULL;
		freelist_set_mark(b, key);
		out[i] = b;
	}
	s->used = n;
	s->u.central.free_head = head;
	s->u.central.free_count = k->blocks - n;
	/* Before any block of the span can be freed, free() must find its class. */
	superblock_map_span(span_superblock(s), s->page, s->npages, c->cls);
	return s;
}

/* Whether `next`, read from a block on s's free list, is a block start of s
 * (its mark is checked when it is taken). EBB_LIST_END is not. */
static inline bool span_link_in(const size_class_t *k, const char *base, const void *next)
{
	uint64_t off = (uint64_t)((const char *)next - base);
	return off < ((uint64_t)1 << 22) && block_offset_ok(off, k->block_mul, k->block_limit);
}

/* Whether `next` may be followed: the end, or a block start of s. */
static bool span_link_ok(const span_t *s, const char *base, const void *next)
{
	return next == EBB_LIST_END || span_link_in(&size_classes[s->cls], base, next);
}

/* Drops the rest of s's free list after a report (leaked: none of it can be
 * trusted). Caller holds s's home lock. */
static void span_list_drop(span_t *s)
{
	s->u.central.free_count = 0;
	s->u.central.free_head = EBB_LIST_END;
}

/* Moves up to `want` free blocks of s to out[], each with its bin mark, in
 * one pass: per block, the span mark is checked, the link read and checked
 * (a block start of s while more are counted, the end after the last), and
 * the block's two words rewritten (no link left for the program; the bin
 * mark, which is the span mark with bit 0 flipped). The span's fields are
 * written once. Caller holds s's home lock. */
static unsigned span_take(span_t *s, unsigned want, void **out)
{
	const size_class_t *k = &size_classes[s->cls];
	uint64_t key = freelist_mark;
	const char *base = span_start(span_superblock(s), s);
	uint32_t avail = s->u.central.free_count;
	unsigned n = want < avail ? want : avail;
	void *b = s->u.central.free_head;
	unsigned got = 0;
	while (got < n) {
		/* b passed span_link_in (or span_carve or release_to_spans put it
		 * here): it is a block of s. It must still carry its span mark: a
		 * copy of a block freed twice may have been handed out (clearing
		 * it), or the program wrote into it after freeing it. */
		uint64_t mark = freelist_span_mark_of(b, key);
		if (EBB_UNLIKELY(!freelist_mark_kept(b, mark))) {
			freelist_lost_mark("malloc", b);
			s->used += got;
			span_list_drop(s);
			return got;
		}
		void *next = freelist_span_next(b);
		*(void **)b = NULL; /* the link is the allocator's, not the program's */
		freelist_put_mark(b, mark ^ 1u);
		out[got++] = b;
		if (EBB_UNLIKELY(got < avail ? !span_link_in(k, base, next) : next != EBB_LIST_END)) {
			/* A write into a freed block: report it, hand b out (it is a
			 * block of s, and free), never follow its link. */
			freelist_corrupt("malloc", b);
			s->used += got;
			span_list_drop(s);
			return got;
		}
		b = next;
	}
	s->u.central.free_head = b;
	s->u.central.free_count = avail - got;
	s->used += got;
	return got;
}

static bool span_full(const span_t *s)
{
	return s->u.central.free_count == 0 && s->u.central.withheld == 0;
}

/* ---------------------------------------------------------------------------
 * Refill
 * ------------------------------------------------------------------------- */
/* Refill from c's spans, carving new ones if `carve`. */
static unsigned refill_from(central_t *c, unsigned cpu, unsigned want, bool carve, void **out)
{
	unsigned got = 0;

	lock_acquire(&c->lock);
	while (got < want) {
		span_t *s = c->partial;
		/* An empty free list on the partial list: withheld blocks, which
		 * central_purge.c relinks unless their pages are going back now. */
		if (s != NULL && s->u.central.free_count == 0 && !central_purge_relink(s))
			s = NULL;
		if (s == NULL && !carve)
			break;
		if (s == NULL) {
			/* Grow without the lock: the page heap may map memory. A batch
			 * may span several spans (a one-page span of 256-byte blocks
			 * holds 16, a batch 32). */
			CENTRAL_CHECK(c);
			lock_release(&c->lock);
			s = span_carve(c, cpu, want - got, out + got);
			lock_acquire(&c->lock);
			if (s == NULL) {
				CENTRAL_CHECK(c);
				lock_release(&c->lock);
				if (got) /* a short batch beats none */
					return got;
				errno = ENOMEM;
				return 0;
			}
			c->spans++;
			c->spans_carved++;
			got += s->used;
			c->used_blocks += s->used;
			if (!span_full(s))
				partial_push_head(c, s);
			continue;
		}
		unsigned n = span_take(s, want - got, out + got);
		got += n;
		c->used_blocks += n;
		if (span_full(s))
			partial_remove(c, s);
	}
	CENTRAL_CHECK(c);
	lock_release(&c->lock);
	return got;
}

/* How many other CPUs' transfer stacks a refill looks at before it carves a
 * new span: enough to pair each producer CPU with its consumers on a small
 * machine; bounded so that on 64+ cores a refill that finds nothing costs a
 * few cache-line reads, not one per CPU. */
#define STEAL_PROBES 8

unsigned central_refill(unsigned cpu, unsigned cls, unsigned want, bool use_transfer, void **out)
{
	const size_class_t *k = &size_classes[cls];
	central_t *c = central_get(cpu, cls);
	use_transfer = use_transfer && want >= k->batch;
	central_touch(c);
	if (use_transfer && transfer_take(c, out))
		return k->batch;
	unsigned got = refill_from(c, cpu, want, false, out);
	if (EBB_LIKELY(got != 0))
		return got;
	/* Nothing here. Whole batches that another CPU's threads flushed (the
	 * consumer side of a producer/consumer pair) are cheaper to take than a
	 * new span and keep memory bounded: look at the next few CPUs' counts
	 * (one read of each head) and pop only where there seems to be one. */
	if (use_transfer) {
		unsigned probes = central_slots - 1 < STEAL_PROBES ? central_slots - 1 : STEAL_PROBES;
		for (unsigned i = 1; i <= probes; i++) {
			central_t *o = central_get((cpu + i) % central_slots, cls);
			if (TRANSFER_TOP(atomic_load_u64(&o->full)) != 0 && transfer_take(o, out))
				return k->batch;
		}
	}
	got = refill_from(c, cpu, want, true, out);
	if (EBB_LIKELY(got != 0))
		return got;
	/* The kernel refused new memory: free blocks of this class that wait in
	 * another CPU's list serve as well (their spans keep their home). */
	for (unsigned i = 1; i < central_slots; i++) {
		unsigned other = (cpu + i) % central_slots;
		central_t *o = central_get(other, cls);
		if (use_transfer && transfer_take(o, out))
			return k->batch;
		got = refill_from(o, other, want, false, out);
		if (got != 0)
			return got;
	}
	errno = ENOMEM;
	return 0;
}

/* ---------------------------------------------------------------------------
 * Flush
 * ------------------------------------------------------------------------- */

/* Blocks of one span, consecutive in a flush, already linked into a chain
 * (head .. tail, n blocks, span marks written) outside any lock. */
typedef struct span_run {
	span_t *s;
	void *head, *tail;
	unsigned n;
} span_run_t;

/* Blocks release_to_spans validates before it splices them. */
#define RELEASE_CHUNK 64

/* Puts run r (linked, n blocks) on its span's free list: O(1). This is
 * release_to_spans' step under the lock, and where a span whose blocks are
 * all back (s->used == 0) leaves its list for the page heap. Caller holds
 * the home's lock; r->n <= s->used. */
static void run_splice(central_t *home, span_run_t *r, span_t **empties)
{
	span_t *s = r->s;
	*(void **)r->tail = s->u.central.free_head;
	s->u.central.free_head = r->head;
	s->u.central.free_count += r->n;
	s->used -= r->n;
	home->used_blocks -= r->n;
	if (s->used == 0 && !s->u.central.purging) { /* else the purge pass retires it */
		central_span_retire(home, s);
		s->next = *empties;
		*empties = s;
	} else if (!s->in_partial) {
		/* Just got its first blocks back: nearly full spans are handed
		 * out first, so that emptier ones (drifting to the end of the
		 * list) can drain completely and go back to the page heap. */
		partial_push_head(home, s);
	}
}

/* A run longer than its span has blocks out: a double free. Splices the
 * blocks in flush order (the chain's reverse) while the span has blocks out,
 * and reports the rest, as a block-by-block return would. Caller holds the
 * home's lock. */
static EBB_COLD void run_overflow(central_t *home, span_run_t *r, span_t **empties)
{
	void *chain[RELEASE_CHUNK];
	const char *base = span_start(span_superblock(r->s), r->s);
	const size_class_t *k = &size_classes[r->s->cls];
	unsigned n = 0;
	for (void *b = r->head; n < r->n; b = freelist_span_next(b)) {
		chain[n++] = b;
		if (b == r->tail || !span_link_in(k, base, freelist_span_next(b)))
			break;
	}
	while (n-- > 0) {
		void *b = chain[n];
		if (r->s->used == 0) {
			freelist_lost_mark("free", b);
			continue;
		}
		span_run_t one = {r->s, b, b, 1};
		run_splice(home, &one, empties);
	}
}

/* The span of block b, which must be a block of class cls (block.h's test,
 * made of its parts so that the superblock's registry check is skipped when
 * b shares the last block's superblock, *sb_slot); *lo is set to the span's
 * first block. NULL (after a report) if b is not such a block. */
static inline span_t *release_lookup(void *b, unsigned cls, const size_class_t *k, uintptr_t *sb_slot,
				     const char **lo)
{
	if ((uintptr_t)b >> EBB_SB_SHIFT != *sb_slot) {
		if (EBB_UNLIKELY(registry_get(b) != REG_HEADER))
			goto bad;
		*sb_slot = (uintptr_t)b >> EBB_SB_SHIFT;
	}
	superblock_t *sb = superblock_of(b);
	unsigned page = superblock_page_index(b);
	if (EBB_UNLIKELY(sb->page_class[page] != cls))
		goto bad;
	unsigned first = sb->pagemap[page];
	if (EBB_UNLIKELY(!block_offset_ok(block_offset(sb, page, b), k->block_mul, k->block_limit)))
		goto bad;
	*lo = superblock_page_addr(sb, first);
	return superblock_span_at(sb, first);
bad:;
	span_t *s;
	const char *why;
	if (block_lookup(b, &s, &why) != cls)
		report_bad_pointer("free", b, why ? why : "not a block of this allocator");
	return NULL;
}

/* Gives each block back to its span; empty spans go back to the page heap.
 * Every block is checked again (block.h, and its class), and must carry its
 * bin mark: this is what keeps the span free lists, which are linked through
 * the blocks, clean. A bad block is reported and dropped (leaked). The
 * checks and the linking happen outside any lock, per chunk of blocks: the
 * blocks of one span that are consecutive in the flush become one chain (a
 * run); then each run is spliced under its home's lock, which is kept across
 * runs of the same home. */
static void release_chunk(unsigned cls, void *const *blocks, unsigned count, span_t **empties)
{
	uint64_t key = freelist_mark;
	const size_class_t *k = &size_classes[cls];
	const uint64_t span_bytes = (uint64_t)k->blocks * k->size;
	span_run_t runs[RELEASE_CHUNK];
	unsigned nruns = 0;
	/* The current run, in registers: s's blocks start at lo. */
	span_t *s = NULL;
	const char *lo = NULL;
	void *head = EBB_LIST_END, *tail = NULL;
	unsigned n = 0;
	uintptr_t sb_slot = UINTPTR_MAX;
	for (unsigned i = 0; i < count; i++) {
		void *b = blocks[i];
		uint64_t off = (uint64_t)((const char *)b - lo);
		if (EBB_LIKELY(s != NULL && off < span_bytes)) {
			/* Inside the last block's span: only the block-start test. */
			if (EBB_UNLIKELY(!block_offset_ok(off, k->block_mul, k->block_limit))) {
				report_bad_pointer("free", b, "not the start of a block");
				continue;
			}
		} else {
			const char *nlo;
			span_t *ns = release_lookup(b, cls, k, &sb_slot, &nlo);
			if (EBB_UNLIKELY(ns == NULL))
				continue;
			if (n != 0)
				runs[nruns++] = (span_run_t){s, head, tail, n};
			s = ns;
			lo = nlo;
			head = EBB_LIST_END;
			tail = b;
			n = 0;
		}
		/* A block that lost its mark was freed twice (the other copy is
		 * out, or already back in its span with the span mark, or earlier
		 * in this flush). */
		uint64_t mark = freelist_mark_of(b, key);
		if (EBB_UNLIKELY(!freelist_mark_kept(b, mark))) {
			freelist_lost_mark("free", b);
			continue;
		}
		if (n == 0)
			tail = b;
		*(void **)b = head;
		freelist_put_mark(b, mark ^ 1u);
		head = b;
		n++;
	}
	if (n != 0)
		runs[nruns++] = (span_run_t){s, head, tail, n};
	central_t *locked = NULL;
	for (span_run_t *q = runs; q < runs + nruns; q++) {
		/* The home is stable while we hold one of the span's blocks: the
		 * span cannot empty, so it stays on its list. */
		central_t *home = q->s->u.central.home;
		if (home != locked) {
			if (locked) {
				CENTRAL_CHECK(locked);
				lock_release(&locked->lock);
			}
			lock_acquire(&home->lock);
			locked = home;
		}
		/* More blocks than the span has out: a double free. s->used is
		 * read under the home's lock, which guards it. */
		if (EBB_UNLIKELY(q->n > q->s->used))
			run_overflow(home, q, empties);
		else
			run_splice(home, q, empties);
	}
	if (locked) {
		CENTRAL_CHECK(locked);
		lock_release(&locked->lock);
	}
}

static void release_to_spans(unsigned cls, void *const *blocks, unsigned count)
{
	span_t *empties = NULL;
	for (unsigned i = 0; i < count; i += RELEASE_CHUNK)
		release_chunk(cls, blocks + i, count - i < RELEASE_CHUNK ? count - i : RELEASE_CHUNK,
			      &empties);
	/* No central lock held: hand the empty spans to the page heap. Nobody
	 * else can reach them: all their blocks are back. */
	for (span_t *e = empties, *next; e; e = next) {
		next = e->next;
		central_purge_forget(e);
		superblock_map_span(span_superblock(e), e->page, e->npages, 0);
		page_heap_free(e);
	}
}

void central_flush(unsigned cpu, unsigned cls, void *const *blocks, unsigned count)
{
	const size_class_t *k = &size_classes[cls];
	central_t *c = central_get(cpu, cls);
	unsigned pushed = 0;

	/* Whole batches onto the transfer stack while the list has a node for
	 * them (a look at the full count first: when it is full, as in a mass
	 * free, nothing is popped); the rest goes to the blocks' spans. */
	if (count >= k->batch) {
		central_touch(c);
		while (count - pushed >= k->batch && TRANSFER_COUNT(atomic_load_u64(&c->full)) < k->transfer_cap) {
			int i = node_get(c);
			if (i < 0)
				break;
			memcpy(node_at(c, (unsigned)i)->blocks, blocks + pushed, k->batch * sizeof(void *));
			tstack_push(c, &c->full, (unsigned)i);
			pushed += k->batch;
		}
	}
	if (pushed < count)
		release_to_spans(cls, blocks + pushed, count - pushed);
}

size_t central_drain(bool only_idle, bool *kept)
{
	size_t moved = 0;
	bool any_kept = false;
	void *out[TRANSFER_BATCH_MAX];
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++) {
		central_t *c = &central_lists[i];
		if (c->cls == 0)
			continue;
		if (!only_idle || atomic_load_u32(&c->busy) == 0) {
			unsigned batch = size_classes[c->cls].batch;
			/* Bounded: batches flushed meanwhile wait for the next call. */
			for (unsigned left = size_classes[c->cls].transfer_cap; left > 0 && transfer_take(c, out); left--) {
				moved += batch;
				release_to_spans(c->cls, out, batch);
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
	for (uint32_t i = 0; i < s->u.central.free_count && b != EBB_LIST_END; i++) {
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
		central_t *c = &central_lists[i];
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
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++)
		lock_acquire(&central_lists[i].lock);
	lock_bulk_leave();
}

void central_postfork_parent(void)
{
	for (unsigned i = central_slots * EBB_NUM_CLASSES; i-- > 0;)
		lock_release(&central_lists[i].lock);
}

void central_postfork_child(void)
{
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++)
		lock_init(&central_lists[i].lock);
	central_purge_postfork_child();
}
