/* central.c: refill and flush of the per-CPU central lists (see central.h). */
#include "core/central.h"

#include <errno.h>

#include "core/freelist.h"
#include "core/meta.h"
#include "core/page_heap.h"
#include "core/report.h"
#include "core/size_class.h"
#include "core/superblock.h"
#include "core/track.h"

static central_t *central_lists; /* [cpu slot][class] */
static unsigned central_slots;

#define BATCHES_MAX (512 / 2) /* a flush carries at most bin_cap blocks, batch >= 2 */

bool central_init_all(void)
{
	unsigned n = os_cpu_count();
	central_slots = n < EBB_MAX_CPUS ? n : EBB_MAX_CPUS;
	central_lists = meta_alloc((size_t)central_slots * EBB_NUM_CLASSES * sizeof(central_t),
				   EBB_CACHELINE);
	if (central_lists == NULL)
		return false;
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++) {
		lock_init(&central_lists[i].lock);
		central_lists[i].cls = (uint16_t)(i % EBB_NUM_CLASSES);
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
	s->u.central.free_head = EBB_LIST_END;
	s->u.central.bump = 0;
	s->u.central.free_count = 0;
	s->used = 0;
	/* Before any block of the span can be freed, free() must find its class. */
	superblock_map_span(span_superblock(s), s->page, s->npages, c->cls);
	return s;
}

/* Moves up to `want` free blocks of s onto *head. Caller holds s's home lock. */
static unsigned span_take(span_t *s, unsigned want, void **head)
{
	const size_class_t *k = &size_classes[s->cls];
	uint64_t secret = freelist_secret;
	char *base = span_start(span_superblock(s), s);
	char *end = base + (size_t)k->blocks * k->size;
	void *list = *head;
	unsigned got = 0;
	while (got < want && s->u.central.free_count > 0) {
		void *b = s->u.central.free_head;
		/* Every block on the list must still be free: a copy of one that
		 * was freed twice may have been handed out (clearing its mark). */
		if (EBB_UNLIKELY(!freelist_mark_kept(b, freelist_mark_of(b, freelist_mark)))) {
			freelist_lost_mark("malloc", b);
			s->u.central.free_count = 0; /* leak the rest of this list */
			s->u.central.free_head = EBB_LIST_END;
			break;
		}
		void *next = freelist_decode(b, secret);
		/* A link out of the span is a write into a freed block: stop
		 * before following it. */
		if (EBB_UNLIKELY(next != EBB_LIST_END &&
				 ((char *)next < base || (char *)next >= end || !freelist_link_ok(next)))) {
			freelist_corrupt("malloc", b);
			s->u.central.free_count = 0; /* leak the rest of this list */
			s->u.central.free_head = EBB_LIST_END;
			break;
		}
		s->u.central.free_head = next;
		s->u.central.free_count--;
		freelist_set_next(b, list, secret);
		list = b;
		got++;
	}
	while (got < want && s->u.central.bump < k->blocks) {
		void *b = base + (size_t)s->u.central.bump++ * k->size;
		TRACK_CARVED(b);
		freelist_set_next(b, list, secret);
		freelist_set_mark(b, freelist_mark); /* free blocks carry the mark */
		list = b;
		got++;
	}
	s->used += got;
	*head = list;
	return got;
}

static bool span_full(const span_t *s)
{
	return s->u.central.free_count == 0 && s->u.central.bump == size_classes[s->cls].blocks;
}

/* ---------------------------------------------------------------------------
 * Refill
 * ------------------------------------------------------------------------- */
/* Refill from list c; without `carve`, only from what c already holds. */
static unsigned refill_from(central_t *c, unsigned cpu, unsigned cls, unsigned want, bool use_transfer,
			    bool carve, void **head)
{
	const size_class_t *k = &size_classes[cls];
	void *list = EBB_LIST_END;
	unsigned got = 0;

	lock_acquire(&c->lock);
	c->uses++;
	if (use_transfer && c->transfer != NULL) {
		void *b = c->transfer;
		void *next = freelist_decode((char *)b + sizeof(void *), freelist_secret);
		/* The link sits in the second word of a free block: a write after
		 * free there must not send the next refill to an arbitrary address. */
		bool bad = next != NULL && (!freelist_link_ok(next) || next == EBB_LIST_END);
		c->transfer = EBB_UNLIKELY(bad) ? NULL : next; /* leak the batches below */
		transfer_count_set(c, EBB_UNLIKELY(bad) ? 0 : c->ntransfer - 1);
		lock_release(&c->lock);
		if (EBB_UNLIKELY(bad))
			freelist_corrupt("malloc", b);
		*head = b;
		return k->batch;
	}
	while (got < want) {
		span_t *s = c->partial;
		if (s == NULL && !carve)
			break;
		if (s == NULL) {
			/* Grow without the lock: the page heap may map memory. A batch
			 * may span several spans (a one-page span of 256-byte blocks
			 * holds 16, a batch 32). */
			lock_release(&c->lock);
			s = span_carve(c, cpu);
			lock_acquire(&c->lock);
			if (s == NULL) {
				lock_release(&c->lock);
				if (got) { /* a short batch beats none */
					*head = list;
					return got;
				}
				errno = ENOMEM;
				return 0;
			}
			c->spans++;
			c->spans_carved++;
			partial_push_head(c, s);
			continue;
		}
		unsigned n = span_take(s, want - got, &list);
		got += n;
		c->used_blocks += n;
		if (span_full(s))
			partial_remove(c, s);
	}
	lock_release(&c->lock);
	*head = list;
	return got;
}

/* How many other CPUs' transfer stacks a refill looks at before it carves a
 * new span: enough to pair each producer CPU with its consumers on a small
 * machine; bounded so that on 64+ cores a refill that finds nothing costs a
 * few cache-line reads, not one per CPU. */
#define STEAL_PROBES 8

unsigned central_refill(unsigned cpu, unsigned cls, unsigned want, bool use_transfer, void **head)
{
	central_t *c = central_get(cpu, cls);
	unsigned got = refill_from(c, cpu, cls, want, use_transfer, false, head);
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
			got = refill_from(o, other, cls, 0, true, false, head);
			if (got != 0)
				return got;
		}
	}
	got = refill_from(c, cpu, cls, want, use_transfer, true, head);
	if (EBB_LIKELY(got != 0))
		return got;
	/* The kernel refused new memory: free blocks of this class that wait in
	 * another CPU's list serve as well (their spans keep their home). */
	for (unsigned i = 1; i < central_slots; i++) {
		unsigned other = (cpu + i) % central_slots;
		got = refill_from(central_get(other, cls), other, cls, want, use_transfer, false, head);
		if (got != 0)
			return got;
	}
	errno = ENOMEM;
	return 0;
}

/* ---------------------------------------------------------------------------
 * Flush
 * ------------------------------------------------------------------------- */

/* Reports a block that cannot be a free block of class cls; returns true if
 * the block is good. Caller holds nothing. */
static bool block_check(const void *b, unsigned cls, span_t **span_out)
{
	/* The free fast path's tests (registry byte, page class), then the
	 * span from the pagemap: a page of class cls is a page of a CENTRAL
	 * span of cls, whose every pagemap entry names its first page. */
	if (EBB_LIKELY(registry_get(b) == REG_HEADER)) {
		superblock_t *sb = superblock_of(b);
		unsigned page = superblock_page_index(b);
		if (EBB_LIKELY(sb->page_class[page] == cls)) {
			span_t *s = superblock_span_at(sb, sb->pagemap[page]);
			size_t off = (size_t)((const char *)b - (const char *)span_start(sb, s));
			if (EBB_UNLIKELY(off * size_classes[cls].div_magic >= size_classes[cls].div_magic)) {
				report_bad_pointer("free", b, "not the start of a block");
				return false;
			}
			*span_out = s;
			return true;
		}
	}
	report_bad_pointer("free", b, "not a block of this allocator");
	return false;
}

/* Gives each block of the list back to its span, under its home's lock;
 * empty spans go back to the page heap. */
static void release_to_spans(unsigned cls, void *head)
{
	uint64_t secret = freelist_secret;
	central_t *locked = NULL;
	span_t *empties = NULL;
	const size_class_t *k = &size_classes[cls];
	span_t *s = NULL;
	const char *lo = NULL, *hi = NULL; /* the blocks of s */
	for (void *b = head, *next; b != EBB_LIST_END; b = next) {
		next = freelist_decode(b, secret);
		if (EBB_UNLIKELY(!freelist_link_ok(next))) {
			freelist_corrupt("free", b);
			next = EBB_LIST_END; /* leak the rest */
		}
		/* Blocks flushed together often share a span: look it up only
		 * when the block is outside the last one. */
		if ((const char *)b >= lo && (const char *)b < hi) {
			size_t off = (size_t)((const char *)b - lo);
			if (EBB_UNLIKELY(off * k->div_magic >= k->div_magic)) {
				report_bad_pointer("free", b, "not the start of a block");
				continue;
			}
		} else {
			if (!block_check(b, cls, &s))
				continue;
			lo = span_start(span_superblock(s), s);
			hi = lo + (size_t)k->blocks * k->size;
		}
		/* A block that lost its mark was freed twice. */
		if (EBB_UNLIKELY(!freelist_mark_kept(b, freelist_mark_of(b, freelist_mark)))) {
			freelist_lost_mark("free", b);
			break; /* leak the rest */
		}
		/* The home is stable while we hold one of the span's blocks: the
		 * span cannot empty, so it stays on its list. */
		central_t *home = s->u.central.home;
		if (home != locked) {
			if (locked)
				lock_release(&locked->lock);
			lock_acquire(&home->lock);
			locked = home;
		}
		/* One more block than the span has out: a double free. s->used
		 * is read under the home's lock, which guards it. */
		if (EBB_UNLIKELY(s->used == 0)) {
			freelist_lost_mark("free", b);
			break; /* leak the rest */
		}
		freelist_set_next(b, s->u.central.free_head, secret);
		s->u.central.free_head = b;
		s->u.central.free_count++;
		s->used--;
		home->used_blocks--;
		if (s->used == 0) {
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
	if (locked)
		lock_release(&locked->lock);
	/* No central lock held: hand the empty spans to the page heap. Nobody
	 * else can reach them: all their blocks are back. */
	for (span_t *e = empties, *next; e; e = next) {
		next = e->next;
		superblock_map_span(span_superblock(e), e->page, e->npages, 0);
		page_heap_free(e);
	}
}

void central_flush(unsigned cpu, unsigned cls, void *head, unsigned count)
{
	const size_class_t *k = &size_classes[cls];
	uint64_t secret = freelist_secret;
	void *batches[BATCHES_MAX];
	unsigned nb = 0;

	/* Cut whole batches off the front before taking the lock, as many as
	 * the transfer stack seems to have room for (read without the lock: a
	 * hint; a batch that finds no room after all goes to its spans). When it
	 * is full, as in a mass free, the list goes to its spans uncut. */
	central_t *c = central_get(cpu, cls);
	unsigned room = k->transfer_cap - __atomic_load_n(&c->ntransfer, __ATOMIC_RELAXED);
	if (room > k->transfer_cap)
		room = 0; /* the racy read saw a value from a concurrent update */
	while (count >= k->batch && nb < BATCHES_MAX && nb < room) {
		void *last = head;
		for (unsigned i = 1; i < k->batch; i++)
			last = freelist_decode(last, secret);
		void *rest = freelist_decode(last, secret);
		freelist_set_next(last, EBB_LIST_END, secret);
		batches[nb++] = head;
		head = rest;
		count -= k->batch;
	}

	unsigned pushed = 0;
	lock_acquire(&c->lock);
	c->uses++;
	while (pushed < nb && c->ntransfer < k->transfer_cap) {
		void *b = batches[pushed++];
		freelist_set_next((char *)b + sizeof(void *), c->transfer, secret);
		c->transfer = b;
		transfer_count_set(c, c->ntransfer + 1);
	}
	lock_release(&c->lock);

	for (unsigned i = pushed; i < nb; i++)
		release_to_spans(cls, batches[i]);
	if (count)
		release_to_spans(cls, head);
}

size_t central_drain(bool only_idle, bool *kept)
{
	size_t moved = 0;
	bool any_kept = false;
	uint64_t secret = freelist_secret;
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++) {
		central_t *c = &central_lists[i];
		lock_acquire(&c->lock);
		void *batches = NULL;
		if (!only_idle || c->uses == 0) {
			batches = c->transfer;
			moved += (size_t)c->ntransfer * size_classes[c->cls].batch;
			c->transfer = NULL;
			transfer_count_set(c, 0);
		}
		any_kept |= c->ntransfer != 0;
		c->uses = 0;
		lock_release(&c->lock);
		while (batches != NULL) {
			void *next = freelist_decode((char *)batches + sizeof(void *), secret);
			/* The batch link took the place of the head's mark. */
			freelist_set_mark(batches, freelist_mark);
			release_to_spans(c->cls, batches);
			batches = next;
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
	uint64_t secret = freelist_secret;
	bool found = false;
	lock_acquire(&home->lock);
	void *b = s->u.central.free_head;
	for (uint32_t i = 0; i < s->u.central.free_count && b != EBB_LIST_END; i++) {
		if (b == p) {
			found = true;
			break;
		}
		b = freelist_decode(b, secret);
		if (!freelist_link_ok(b))
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
		lock_release(&c->lock);
	}
}

void central_prefork(void)
{
	for (unsigned i = 0; i < central_slots * EBB_NUM_CLASSES; i++)
		lock_acquire(&central_lists[i].lock);
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
}
