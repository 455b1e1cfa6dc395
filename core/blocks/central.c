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

/* Most blocks a transfer stack holds: transfer_cap (<= 16) batches of at
 * most 32 (size_class.c); central_drain copies a stack out on its stack. */
#define TRANSFER_SLOTS_MAX 512

static size_t transfer_slots(unsigned cls)
{
	return (size_t)size_classes[cls].transfer_cap * size_classes[cls].batch;
}

bool central_init_all(void)
{
	unsigned n = os_cpu_count();
	central_slots = n < EBB_MAX_CPUS ? n : EBB_MAX_CPUS;
	central_lists = meta_alloc((size_t)central_slots * EBB_NUM_CLASSES * sizeof(central_t),
				   EBB_CACHELINE);
	if (central_lists == NULL)
		return false;
	/* The transfer arrays of all lists in one mapping: a list's slots stay
	 * untouched (not resident) until it keeps a batch. */
	size_t per_cpu = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		EBB_CHECK(transfer_slots(c) <= TRANSFER_SLOTS_MAX);
		per_cpu += transfer_slots(c);
	}
	void **slots = meta_alloc((size_t)central_slots * per_cpu * sizeof(void *), EBB_CACHELINE);
	if (slots == NULL)
		return false;
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++) {
		central_t *c = &central_lists[i];
		lock_init_rank(&c->lock, LOCK_RANK_CENTRAL);
		c->cls = (uint16_t)(i % EBB_NUM_CLASSES);
		if (c->cls != 0) {
			c->transfer = slots;
			slots += transfer_slots(c->cls);
		}
	}
	return true;
}

static central_t *central_get(unsigned cpu, unsigned cls)
{
	return &central_lists[(size_t)(cpu % central_slots) * EBB_NUM_CLASSES + cls];
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

/* ntransfer is written under c's lock and read without it by central_flush
 * (as a hint): relaxed atomic stores, so that both are atomic accesses. */
static inline void transfer_count_set(central_t *c, unsigned n)
{
	__atomic_store_n(&c->ntransfer, (uint16_t)n, __ATOMIC_RELAXED);
}

/* Carves a new span for c from the page heap of `cpu`. No lock held. */
static span_t *span_carve(central_t *c, unsigned cpu)
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
	s->used = 0;
	/* Every block goes on the span's free list now, in address order (the
	 * first refill hands out the first blocks), before the pages get their
	 * class: free() then never meets a block start that is not a block
	 * (core/blocks/block.h), and the fast path needs no per-span carve limit. A
	 * recycled span's pages may hold anything from their last use: each
	 * block's first 16 bytes are the allocator's from here on. */
	uint64_t key = freelist_mark;
	char *base = span_start(span_superblock(s), s);
	void *head = EBB_LIST_END;
	for (unsigned i = k->blocks; i-- > 0;) {
		void *b = base + (size_t)i * k->size;
		TRACK_CARVED(b);
		freelist_span_link(b, head, key);
		head = b;
	}
	s->u.central.free_head = head;
	s->u.central.free_count = k->blocks;
	/* Before any block of the span can be freed, free() must find its class. */
	superblock_map_span(span_superblock(s), s->page, s->npages, c->cls);
	return s;
}

/* Whether `next`, read from a block on s's free list, may be followed: the
 * end, or a block start of s (its mark is checked when it is taken). */
static bool span_link_ok(const span_t *s, const char *base, const void *next)
{
	if (next == EBB_LIST_END)
		return true;
	const size_class_t *k = &size_classes[s->cls];
	uint64_t off = (uint64_t)((const char *)next - base);
	return (const char *)next >= base && block_offset_ok(off, k->block_mul, k->block_limit);
}

/* Drops the rest of s's free list after a report (leaked: none of it can be
 * trusted). Caller holds s's home lock. */
static void span_list_drop(span_t *s)
{
	s->u.central.free_count = 0;
	s->u.central.free_head = EBB_LIST_END;
}

/* Moves up to `want` free blocks of s to out[], each with its bin mark.
 * Caller holds s's home lock. */
static unsigned span_take(span_t *s, unsigned want, void **out)
{
	uint64_t key = freelist_mark;
	char *base = span_start(span_superblock(s), s);
	unsigned got = 0;
	while (got < want && s->u.central.free_count > 0) {
		void *b = s->u.central.free_head;
		/* b passed span_link_ok (or span_carve or release_to_spans put it
		 * here): it is a block of s. It must still carry its span mark: a copy of a
		 * block freed twice may have been handed out (clearing it), or the
		 * program wrote into it after freeing it. */
		if (EBB_UNLIKELY(!freelist_mark_kept(b, freelist_span_mark_of(b, key)))) {
			freelist_lost_mark("malloc", b);
			span_list_drop(s);
			break;
		}
		void *next = freelist_span_next(b);
		if (EBB_UNLIKELY(!span_link_ok(s, base, next) ||
				 (next == EBB_LIST_END) != (s->u.central.free_count == 1))) {
			/* A write into a freed block: report it, hand b out (it is a
			 * block of s, and free), never follow its link. */
			freelist_corrupt("malloc", b);
			span_list_drop(s);
		} else {
			s->u.central.free_head = next;
			s->u.central.free_count--;
		}
		*(void **)b = NULL; /* the link is the allocator's, not the program's */
		freelist_set_mark(b, key);
		out[got++] = b;
	}
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
enum refill_mode {
	FROM_TRANSFER = 1, /* a whole batch from the transfer stack */
	FROM_SPANS = 2,    /* blocks of the partial spans */
	CARVE = 4,         /* new spans from the page heap */
};

/* Refill from list c, from the stores `mode` allows. */
static unsigned refill_from(central_t *c, unsigned cpu, unsigned cls, unsigned want, unsigned mode, void **out)
{
	const size_class_t *k = &size_classes[cls];
	unsigned got = 0;

	lock_acquire(&c->lock);
	c->uses++;
	if ((mode & FROM_TRANSFER) && want >= k->batch && c->ntransfer > 0) {
		unsigned n = c->ntransfer - 1u;
		memcpy(out, c->transfer + (size_t)n * k->batch, k->batch * sizeof(void *));
		transfer_count_set(c, n);
		CENTRAL_CHECK(c);
		lock_release(&c->lock);
		return k->batch;
	}
	while (got < want && (mode & (FROM_SPANS | CARVE))) {
		span_t *s = c->partial;
		/* An empty free list on the partial list: withheld blocks, which
		 * central_purge.c relinks unless their pages are going back now. */
		if (s != NULL && s->u.central.free_count == 0 && !central_purge_relink(s))
			s = NULL;
		if (s == NULL && !(mode & CARVE))
			break;
		if (s == NULL) {
			/* Grow without the lock: the page heap may map memory. A batch
			 * may span several spans (a one-page span of 256-byte blocks
			 * holds 16, a batch 32). */
			CENTRAL_CHECK(c);
			lock_release(&c->lock);
			s = span_carve(c, cpu);
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
	central_t *c = central_get(cpu, cls);
	unsigned mode = use_transfer ? FROM_TRANSFER : 0;
	unsigned got = refill_from(c, cpu, cls, want, mode | FROM_SPANS, out);
	if (EBB_LIKELY(got != 0))
		return got;
	/* Nothing here. Whole batches that another CPU's threads flushed (the
	 * consumer side of a producer/consumer pair) are cheaper to take than a
	 * new span and keep memory bounded: look at the next few CPUs' counts
	 * (racy reads, a hint) and lock only a list that seems to have one. */
	if (use_transfer) {
		unsigned probes = central_slots - 1 < STEAL_PROBES ? central_slots - 1 : STEAL_PROBES;
		for (unsigned i = 1; i <= probes; i++) {
			unsigned other = (cpu + i) % central_slots;
			central_t *o = central_get(other, cls);
			if (__atomic_load_n(&o->ntransfer, __ATOMIC_RELAXED) == 0)
				continue;
			got = refill_from(o, other, cls, want, FROM_TRANSFER, out);
			if (got != 0)
				return got;
		}
	}
	got = refill_from(c, cpu, cls, want, mode | FROM_SPANS | CARVE, out);
	if (EBB_LIKELY(got != 0))
		return got;
	/* The kernel refused new memory: free blocks of this class that wait in
	 * another CPU's list serve as well (their spans keep their home). */
	for (unsigned i = 1; i < central_slots; i++) {
		unsigned other = (cpu + i) % central_slots;
		got = refill_from(central_get(other, cls), other, cls, want, mode | FROM_SPANS, out);
		if (got != 0)
			return got;
	}
	errno = ENOMEM;
	return 0;
}

/* ---------------------------------------------------------------------------
 * Flush
 * ------------------------------------------------------------------------- */

/* Gives each block back to its span, under its home's lock; empty spans go
 * back to the page heap. Every block is checked again (block.h, and its
 * class), and must carry its bin mark: this is what keeps the span free
 * lists, which are linked through the blocks, clean. A bad block is
 * reported and dropped (leaked). */
static void release_to_spans(unsigned cls, void *const *blocks, unsigned count)
{
	uint64_t key = freelist_mark;
	central_t *locked = NULL;
	span_t *empties = NULL;
	const size_class_t *k = &size_classes[cls];
	span_t *s = NULL;
	const char *lo = NULL, *hi = NULL; /* the blocks of s */
	for (unsigned i = 0; i < count; i++) {
		void *b = blocks[i];
		/* Blocks flushed together often share a span: inside the last
		 * one's blocks, only the block-start test is left. */
		if ((const char *)b >= lo && (const char *)b < hi) {
			if (EBB_UNLIKELY((uint64_t)((const char *)b - lo) * k->div_magic >= k->div_magic)) {
				report_bad_pointer("free", b, "not the start of a block");
				continue;
			}
		} else {
			const char *why;
			if (EBB_UNLIKELY(block_lookup(b, &s, &why) != cls)) {
				report_bad_pointer("free", b, why ? why : "not a block of this allocator");
				lo = hi = NULL;
				continue;
			}
			lo = span_start(span_superblock(s), s);
			hi = lo + (size_t)k->blocks * k->size;
		}
		/* A block that lost its mark was freed twice (the other copy is
		 * out, or already back in its span with the span mark). */
		if (EBB_UNLIKELY(!freelist_mark_kept(b, freelist_mark_of(b, key)))) {
			freelist_lost_mark("free", b);
			continue;
		}
		/* The home is stable while we hold one of the span's blocks: the
		 * span cannot empty, so it stays on its list. */
		central_t *home = s->u.central.home;
		if (home != locked) {
			if (locked) {
				CENTRAL_CHECK(locked);
				lock_release(&locked->lock);
			}
			lock_acquire(&home->lock);
			locked = home;
		}
		/* One more block than the span has out: a double free. s->used
		 * is read under the home's lock, which guards it. */
		if (EBB_UNLIKELY(s->used == 0)) {
			freelist_lost_mark("free", b);
			continue;
		}
		freelist_span_link(b, s->u.central.free_head, key);
		s->u.central.free_head = b;
		s->u.central.free_count++;
		s->used--;
		home->used_blocks--;
		if (s->used == 0 && !s->u.central.purging) { /* else the purge pass retires it */
			if (s->in_partial)
				partial_remove(home, s);
			home->spans--;
			home->spans_returned++;
			s->next = empties;
			empties = s;
		} else if (!s->in_partial) {
			/* Just got its first block back: nearly full spans are handed
			 * out first, so that emptier ones (drifting to the end of the
			 * list) can drain completely and go back to the page heap. */
			partial_push_head(home, s);
		}
	}
	if (locked) {
		CENTRAL_CHECK(locked);
		lock_release(&locked->lock);
	}
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

	/* Whole batches onto the transfer stack while it has room (a racy
	 * look first: when it is full, as in a mass free, the lock is not
	 * taken); the rest goes to the blocks' spans. */
	if (count >= k->batch && __atomic_load_n(&c->ntransfer, __ATOMIC_RELAXED) < k->transfer_cap) {
		lock_acquire(&c->lock);
		c->uses++;
		while (count - pushed >= k->batch && c->ntransfer < k->transfer_cap) {
			memcpy(c->transfer + (size_t)c->ntransfer * k->batch, blocks + pushed,
			       k->batch * sizeof(void *));
			transfer_count_set(c, c->ntransfer + 1u);
			pushed += k->batch;
		}
		CENTRAL_CHECK(c);
		lock_release(&c->lock);
	}
	if (pushed < count)
		release_to_spans(cls, blocks + pushed, count - pushed);
}

size_t central_drain(bool only_idle, bool *kept)
{
	size_t moved = 0;
	bool any_kept = false;
	void *out[TRANSFER_SLOTS_MAX];
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++) {
		central_t *c = &central_lists[i];
		unsigned n = 0;
		lock_acquire(&c->lock);
		if ((!only_idle || c->uses == 0) && c->ntransfer != 0) {
			n = c->ntransfer * (unsigned)size_classes[c->cls].batch;
			memcpy(out, c->transfer, n * sizeof(void *));
			transfer_count_set(c, 0);
		}
		any_kept |= c->ntransfer != 0;
		c->uses = 0;
		CENTRAL_CHECK(c);
		lock_release(&c->lock);
		if (n) {
			moved += n;
			release_to_spans(c->cls, out, n);
		}
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
		lock_acquire(&c->lock);
		central_class_stats_t *o = &out[c->cls];
		o->spans += c->spans;
		o->used_blocks += c->used_blocks;
		o->transfer_blocks += (uint64_t)c->ntransfer * size_classes[c->cls].batch;
		*carved += c->spans_carved;
		*returned += c->spans_returned;
		CENTRAL_CHECK(c);
		lock_release(&c->lock);
	}
}

unsigned central_list_count(void)
{
	return central_slots * EBB_NUM_CLASSES;
}

central_t *central_list_at(unsigned i)
{
	return &central_lists[i];
}

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
