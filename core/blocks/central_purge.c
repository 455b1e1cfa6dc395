/* central_purge.c: gives back the free pages inside CENTRAL spans that still
 * hold a live block (central.h, "Pages given back inside spans").
 *
 * A program that frees most of its blocks but keeps a few scattered ones
 * (a cache that keeps every hundredth entry) leaves almost every span with a
 * live block, so no span goes back to the page heap and decay never sees
 * those pages. In a span of several pages, though, most pages then hold
 * only free blocks. This pass gives those pages back:
 *
 *   under the home's lock, for each partial span of a class with spans of
 *   two pages or more: the pages that only free blocks touch (the blocks on
 *   its free list, checked as span_take checks them, and those withheld
 *   already) and that were not given back yet. The free blocks that touch
 *   them leave the free list and count as withheld (span.h: used +
 *   |free list| + withheld + lost == blocks); their first 16 bytes are zeroed
 *   (and carry the span mark where the block starts on a page that stays);
 *   the pages join given_back, lose their class (free() rejects a block
 *   start on them: a second free of a withheld block is reported, as the
 *   lazy carve's pages below are) and the span is marked purging;
 *   without the lock: madvise of those pages (os_purge);
 *   under the lock again: purging clears; a span whose blocks all came back
 *   in the meantime (release_to_spans leaves a purging span to us) goes back
 *   to the page heap, as release_to_spans would have sent it.
 *
 * A one-page span is never looked at: its page holds a live block, or the
 * span is empty and back in the page heap already. But a one-page class's
 * stash (central_t) is: spans cut while the program grew and never carved,
 * their pages untouched. The pass gives a list's stash back whole, with no
 * madvise (central_stash_release), once the list has sat unchanged for
 * decay_ms, as it purges a list's spans; ebb_trim at once.
 *
 * The lazy carve uses the same state: a span of several pages that reads
 * as zero (fresh, or purged in the page heap) is carved up to a block that
 * starts a page (central_carve_cut); the pages from there on count as given
 * back from the start and lose their page class, so free() rejects a
 * block start on them (a forged free there cannot put a never-carved block
 * in a bin, from where it would be handed out and then relinked as well).
 * The sole span of its list is cut at any page boundary instead: the block
 * across the cut starts on a page with class, and carries the span mark
 * with a zero link until a refill carves it (central_carve_withhold), so
 * free() reports it as free already. Measured (max RSS, setarch -R,
 * background_thread=0, interleaved with the cut at block starts only):
 * python3 -c pass 8 800 -> 8 548 KiB (glibc 8 016), bench/py_alloc.py
 * --threads=1 --rounds=4 31 636 -> 31 500 (4 pairs; glibc 30 544).
 *
 * While purging, the span cannot leave CENTRAL (nobody else returns it) and
 * its withheld blocks are not handed out; its free list stays usable. A
 * refill that meets a span whose free list is empty relinks the withheld
 * blocks of its lowest given-back pages, as many pages as the batch it
 * wants needs (central_purge_relink), giving pages without class theirs
 * and writing each link and mark afresh. A withheld block must still read
 * zero in its first 16 bytes
 * (madvise zeroed the page, or the zeroing above did, and MADV_FREE keeps
 * either): anything else was written after the block was freed (a use
 * after free, or a double free whose copy went through a thread cache and
 * out), so it is reported and dropped, never handed out.
 *
 * When: once per drain interval (250 ms, later while the thread is busy
 * purging the page heaps) the background thread looks at every list; one
 * whose spans the program has not changed (no block taken from or given
 * back to them, no span carved or returned) since a look at least decay_ms
 * ago is purged, and then not again until its spans change and settle
 * again: a list in use never pays page faults for this. The thread looks
 * twice per tick, before and after its drain sends idle lists' transfer
 * batches home (central_purge_observe, central_purge_tick): the change the
 * drain makes in between is no use by the program and does not restart the
 * list's wait, so the batches a burst's frees left are purged with their
 * spans decay_ms after the burst, not decay_ms after the drain (which
 * comes one to two intervals later, and later still while a long purge of
 * the page heaps holds the thread: bench memreturn d's pages inside spans
 * went back 1.5-2.1 s after its frees on the loaded machine, since
 * 1.2-1.5 s).
 * ebb_trim purges every list at once. One pass at a time (the background
 * thread, ebb_trim). */
#include "core/blocks/central.h"

#include <string.h>

#include "core/blocks/block.h"
#include "core/blocks/freelist.h"
#include "core/blocks/size_class.h"
#include "core/base/track.h"
#include "core/pages/page_heap.h"
#include "core/pages/superblock.h"
#include "core/runtime/meta.h"
#include "core/runtime/options.h"
#include "core/runtime/report.h"
#include "os/os.h"

/* Spans prepared in one hold of a list's lock, then given back in one go. */
#define PURGE_BATCH 32

typedef struct purge_item {
	span_t *s;
	uint64_t pages; /* pages of s this pass gives back (bit i: page i) */
} purge_item_t;

/* The pass in flight: one at a time (purge_busy). The items are written
 * under their home's lock, so that a fork (which holds every central lock)
 * sees them whole and the child can clear their purging flags. */
static uint32_t purge_busy;
static purge_item_t purge_inflight[PURGE_BATCH];
static unsigned purge_inflight_n;
/* Per list: its fingerprint (list_fingerprint) at the last look and at
 * its last purge, and when a look first saw the program change it.
 * `observed`: central_purge_observe looked at it this tick, so that a
 * change the pass finds after it is the drain's, not the program's. */
typedef struct purge_list {
	uint64_t seen, purged;
	uint64_t since_ns;
	uint32_t observed;
} purge_list_t;
static purge_list_t *purge_lists;
/* Some list has changed since its last purge and holds at least
 * PURGE_PENDING_BYTES of free blocks: the background thread keeps ticking
 * once per drain interval, so that it sees the list settle. */
static uint32_t purge_pending;
#define PURGE_PENDING_BYTES ((uint64_t)64 << 10)

/* Gauges and counters (relaxed atomics): pages given back from inside
 * CENTRAL spans and still theirs; madvise calls and bytes since start. */
static uint64_t purge_pages_out;
static uint64_t purge_calls;
static uint64_t purge_bytes;

static uint64_t low_bits(unsigned n)
{
	return n >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1;
}

/* The page (of its span) block i of class k starts on. */
static unsigned block_start_page(const size_class_t *k, unsigned i)
{
	return (unsigned)(((size_t)i * k->size) >> EBB_PAGE_SHIFT);
}

/* The pages block i of class k touches, as a mask. */
static uint64_t block_pages(const size_class_t *k, unsigned i)
{
	size_t start = (size_t)i * k->size;
	unsigned first = block_start_page(k, i);
	unsigned last = (unsigned)((start + k->size - 1) >> EBB_PAGE_SHIFT);
	return low_bits(last + 1) & ~low_bits(first);
}

/* The blocks of a span of class k that touch one of `pages`. */
static uint64_t blocks_touching(const size_class_t *k, uint64_t pages)
{
	uint64_t m = 0;
	for (unsigned i = 0; i < k->blocks && pages; i++)
		if (block_pages(k, i) & pages)
			m |= (uint64_t)1 << i;
	return m;
}

/* Whether the pass can work on spans of class k: several pages, at most 64
 * blocks and pages (one bit each; every class of two pages or more fits). */
static bool class_purgeable(const size_class_t *k)
{
	return k->pages >= 2 && k->pages <= 64 && k->blocks <= 64;
}

/* The free list of s as a mask of block indices, every link and mark
 * checked before it is followed; false if anything is off (span_take will
 * meet it and report it: the pass leaves such a span alone). */
static bool free_mask(const span_t *s, const size_class_t *k, const char *base, uint64_t key,
		      uint64_t *out)
{
	uint64_t m = 0;
	const void *b = s->u.central.free_head;
	for (uint32_t n = 0, count = span_free_count(s); n < count; n++) {
		if ((const char *)b < base)
			return false;
		uint64_t off = (uint64_t)((const char *)b - base);
		if (!block_offset_ok(off, k->block_mul, k->block_limit) ||
		    !freelist_mark_kept(b, freelist_span_mark_of(b, key)))
			return false;
		uint64_t bit = (uint64_t)1 << size_class_div(s->cls, off);
		if (m & bit)
			return false; /* a loop */
		m |= bit;
		b = freelist_span_next(b);
	}
	if (b != EBB_LIST_END)
		return false;
	*out = m;
	return true;
}

/* Prepares s: withholds the free blocks on pages that only free blocks
 * touch and that are not given back yet, and marks s purging. Caller holds
 * s's home lock. Returns the pages to give back, 0 to leave s alone. */
static uint64_t span_prepare(span_t *s, uint64_t key)
{
	const size_class_t *k = &size_classes[s->cls];
	if (s->u.central.lost != 0)
		return 0; /* after a report dropped part of a list: leave it */
	if (s->u.central.purging || (uint64_t)span_free_count(s) * k->size < EBB_PAGE_SIZE)
		return 0;
	char *base = span_start(span_superblock(s), s);
	uint64_t freed;
	if (!free_mask(s, k, base, key, &freed))
		return 0;
	uint64_t gone = s->u.central.given_back;
	uint64_t held = blocks_touching(k, gone);
	if ((unsigned)__builtin_popcountll(held) != s->u.central.withheld || (held & freed))
		return 0;
	uint64_t busy = 0, touched = 0;
	for (unsigned i = 0; i < k->blocks; i++) {
		uint64_t p = block_pages(k, i);
		touched |= p;
		if (!(((freed | held) >> i) & 1))
			busy |= p;
	}
	uint64_t fresh = touched & ~busy & ~gone;
	if (fresh == 0)
		return 0;
	uint64_t take = blocks_touching(k, fresh) & freed;
	/* A withheld block has no link and is in no list, so nothing would
	 * catch a second free of it: free() reads its mark word and finds
	 * zero (its page is given back), and the block would go into a bin,
	 * out to the program, and then be relinked and handed out again. So
	 * the pages given back lose their class first, as a lazy carve's do
	 * (free() and realloc() then reject a block start on them), and a
	 * withheld block that starts on a page that stays (its tail is on a
	 * page given back) keeps the span mark over a zero link, as
	 * central_carve_withhold writes it: free() reports it as free. The
	 * relink takes both forms as untouched. */
	superblock_t *sb = span_superblock(s);
	for (uint64_t m = fresh; m; m &= m - 1)
		pmap_set_class(sb, s->page + (unsigned)__builtin_ctzll(m), 0);
	/* A block withheld before, whose start page goes now, carries the
	 * span mark (it started on a page that stayed); the relink wants
	 * zero there now. One without the mark was written after it was
	 * freed (a second free sent it out): left as it is, the relink
	 * reports it. */
	for (uint64_t m = held; m; m &= m - 1) {
		unsigned i = (unsigned)__builtin_ctzll(m);
		if (!((fresh >> block_start_page(k, i)) & 1))
			continue;
		uint64_t *w = (uint64_t *)(void *)(base + (size_t)i * k->size);
		if (w[0] == 0 && w[1] == freelist_span_mark_of(w, key))
			w[1] = 0;
	}
	/* The rest of the free list, relinked in address order (its count
	 * follows: the `take` blocks move to withheld). */
	void *head = EBB_LIST_END;
	for (unsigned i = k->blocks; i-- > 0;) {
		if (!((freed >> i) & 1))
			continue;
		char *b = base + (size_t)i * k->size;
		if ((take >> i) & 1) {
			memset(b, 0, 16); /* relink checks that it still reads zero */
			if (!((fresh >> block_start_page(k, i)) & 1))
				freelist_put_mark(b, freelist_span_mark_of(b, key));
			continue;
		}
		freelist_span_link(b, head, key);
		head = b;
	}
	s->u.central.free_head = head;
	s->u.central.withheld = (uint16_t)(s->u.central.withheld + __builtin_popcountll(take));
	s->u.central.given_back = gone | fresh;
	s->u.central.purging = 1;
	atomic_add_u64(&purge_pages_out, (uint64_t)__builtin_popcountll(fresh));
	return fresh;
}

/* The ranges of a pass waiting for their os_purge_vec call. */
typedef struct purge_vec {
	os_range_t r[OS_PURGE_VEC];
	unsigned n;
	bool lazy;
} purge_vec_t;

/* Gives back the ranges collected in v. A range the kernel refuses is only
 * not counted (its pages stay resident, the blocks on them are withheld
 * either way); the ranges after it are still tried. */
static void vec_flush(purge_vec_t *v)
{
	size_t at = 0;
	while (at < v->n) {
		size_t ok = os_purge_vec(v->r + at, v->n - at, v->lazy);
		for (size_t i = at; i < at + ok; i++) {
			atomic_add_u64(&purge_calls, 1);
			atomic_add_u64(&purge_bytes, v->r[i].size);
		}
		at += ok + 1; /* past the refused one, if any */
	}
	v->n = 0;
}

/* Adds the pages of one prepared span to v, flushing it when full. No lock
 * held. */
static void span_give_back(const purge_item_t *it, purge_vec_t *v)
{
	char *base = span_start(span_superblock(it->s), it->s);
	uint64_t m = it->pages;
	while (m) {
		unsigned first = (unsigned)__builtin_ctzll(m);
		unsigned n = (unsigned)__builtin_ctzll(~(m >> first));
		if (first + n > 64)
			n = 64 - first;
		if (v->n == OS_PURGE_VEC)
			vec_flush(v);
		v->r[v->n].p = base + ((size_t)first << EBB_PAGE_SHIFT);
		v->r[v->n].size = (size_t)n << EBB_PAGE_SHIFT;
		v->n++;
		m &= ~(low_bits(first + n) & ~low_bits(first));
	}
}

/* What changes whenever a block leaves or reaches one of c's spans, or a
 * span comes or goes (a refill from spans, a flush or drain into them, a
 * carve): unchanged between two passes, the list's free blocks sat idle for
 * the interval. Caller holds c's lock. */
static uint64_t list_fingerprint(const central_t *c)
{
	return c->used_blocks ^ c->spans_carved << 24 ^ c->spans_returned << 44;
}

/* Purges list c: batches of spans prepared under its lock, given back
 * without it. Returns the pages given back; *seen: c's fingerprint after. */
static size_t list_purge(central_t *c, bool lazy, uint64_t *seen)
{
	uint64_t key = freelist_mark;
	size_t pages = 0;
	span_t *empties = NULL;
	lock_acquire(&c->lock);
	/* Bounded: a span that emptied and was carved again meanwhile may be
	 * met twice. */
	uint64_t budget = 2 * c->spans + PURGE_BATCH;
	span_t *at = c->partial;
	for (;;) {
		unsigned n = 0;
		while (at != NULL && n < PURGE_BATCH && budget > 0) {
			budget--;
			uint64_t m = span_prepare(at, key);
			if (m) {
				purge_inflight[n].s = at;
				purge_inflight[n].pages = m;
				n++;
			}
			at = at->next;
		}
		purge_inflight_n = n;
		CENTRAL_CHECK(c);
		if (n == 0)
			break;
		lock_release(&c->lock);
		purge_vec_t v;
		v.n = 0;
		v.lazy = lazy;
		for (unsigned i = 0; i < n; i++) {
			span_give_back(&purge_inflight[i], &v);
			pages += (size_t)__builtin_popcountll(purge_inflight[i].pages);
		}
		vec_flush(&v);
		lock_acquire(&c->lock);
		/* A purging span stays on the partial list (it has withheld
		 * blocks, and nobody else retires it): the walk goes on after the
		 * last one, which is on the list under this hold of the lock. */
		at = purge_inflight[n - 1].s->next;
		for (unsigned i = 0; i < n; i++) {
			span_t *s = purge_inflight[i].s;
			s->u.central.purging = 0;
			if (s->used != 0)
				continue;
			if (at == s)
				at = s->next;
			central_span_retire(c, s);
			s->next = empties;
			empties = s;
		}
		purge_inflight_n = 0;
	}
	*seen = list_fingerprint(c);
	CENTRAL_CHECK(c);
	lock_release(&c->lock);
	/* No central lock held: every block of these spans is back, nobody
	 * else can reach them. */
	for (span_t *e = empties, *next; e; e = next) {
		next = e->next;
		central_purge_free_span(e);
	}
	return pages;
}

/* ---------------------------------------------------------------------------
 * central.h
 * ------------------------------------------------------------------------- */
void central_purge_observe(void)
{
	uint32_t idle = 0;
	if (!__atomic_compare_exchange_n(&purge_busy, &idle, 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		return; /* during a pass (ebb_trim's): the pass looks alone */
	/* Read with purge_busy held: the first pass sets it up under the same
	 * flag (before it, there is nothing to look at). */
	uint64_t now_ns = os_now_ns();
	for (unsigned i = 0, count = purge_lists != NULL ? central_list_count() : 0; i < count; i++) {
		central_t *c = central_list_at(i);
		if (c == NULL || c->cls == 0 ||
		    (!class_purgeable(&size_classes[c->cls]) && atomic_load_u32(&c->nstash) == 0))
			continue;
		purge_list_t *l = &purge_lists[i];
		lock_acquire(&c->lock);
		uint64_t f = list_fingerprint(c);
		lock_release(&c->lock);
		if (f != l->seen) {
			l->seen = f;
			l->since_ns = now_ns;
		}
		l->observed = 1;
	}
	__atomic_store_n(&purge_busy, 0, __ATOMIC_RELEASE);
}

size_t central_purge_tick(bool all)
{
	/* One pass at a time. The background thread leaves it to a pass in
	 * progress; ebb_trim waits for it (it holds no lock: nothing the pass
	 * needs), so that what it returns has been given back. */
	for (uint32_t idle = 0;; idle = 0) {
		if (__atomic_compare_exchange_n(&purge_busy, &idle, 1, false, __ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			break;
		if (!all)
			return 0;
		os_yield();
	}
	unsigned count = central_list_count();
	if (purge_lists == NULL)
		purge_lists = meta_alloc((size_t)count * sizeof *purge_lists, EBB_CACHELINE);
	long long decay = options_get(OPT_DECAY_MS);
	uint64_t now_ns = os_now_ns();
	bool lazy = options_get(OPT_PURGE) == 1;
	size_t pages = 0;
	bool pending = false;
	for (unsigned i = 0; i < count && purge_lists != NULL; i++) {
		central_t *c = central_list_at(i);
		if (c == NULL) /* its slot never set up: nothing to purge */
			continue;
		const size_class_t *k = &size_classes[c->cls];
		bool purgeable = class_purgeable(k);
		if (c->cls == 0 || (!purgeable && atomic_load_u32(&c->nstash) == 0))
			continue;
		purge_list_t *l = &purge_lists[i];
		lock_acquire(&c->lock);
		uint64_t f = list_fingerprint(c);
		uint64_t free_bytes = (c->spans * k->blocks - c->used_blocks) * k->size;
		bool stashed = c->nstash != 0;
		lock_release(&c->lock);
		bool observed = l->observed != 0;
		l->observed = 0;
		if (!all) {
			/* A stash is given back whatever its size: its spans
			 * serve no other list while they wait there. */
			bool worth = f != l->purged && (free_bytes >= PURGE_PENDING_BYTES || stashed);
			pending |= worth;
			if (f != l->seen) {
				l->seen = f;
				/* Changed since the look of this tick: by the drain,
				 * which only moves batches of a list the program left
				 * alone for an interval (or by the program in the moment
				 * between, which then meets a list purged as it comes
				 * back, as it does when it comes back just after a
				 * pass). */
				if (!observed) {
					l->since_ns = now_ns;
					continue;
				}
			}
			/* Unchanged by the program since since_ns (one look ago at
			 * least). */
			if (decay < 0 || !worth || util_elapsed(now_ns, l->since_ns) < (uint64_t)decay * 1000000u)
				continue;
		}
		if (stashed)
			pages += central_stash_release(c);
		if (purgeable) {
			pages += list_purge(c, lazy, &l->purged);
		} else {
			lock_acquire(&c->lock);
			l->purged = list_fingerprint(c);
			lock_release(&c->lock);
		}
		l->seen = l->purged;
	}
	if (!all)
		atomic_store_u32(&purge_pending, pending && decay >= 0);
	__atomic_store_n(&purge_busy, 0, __ATOMIC_RELEASE);
	return pages;
}

bool central_purge_pending(void)
{
	return atomic_load_u32(&purge_pending) != 0;
}

/* Whether byte `at` of a span of class k is a block start or at or past
 * the end of its blocks: where an uncarved run of pages may end, so that
 * no block starting on a page without class reaches a page with one. */
static bool carve_cut_at(const size_class_t *k, size_t at)
{
	return at >= (size_t)k->blocks * k->size || at % k->size == 0;
}

unsigned central_carve_cut(unsigned cls, unsigned n, bool sole)
{
	const size_class_t *k = &size_classes[cls];
	if (!class_purgeable(k))
		return k->blocks;
	if (!sole) {
		for (unsigned m = n ? n : 1; m < k->blocks; m++)
			if ((((size_t)m * k->size) & (EBB_PAGE_SIZE - 1)) == 0)
				return m;
		return k->blocks;
	}
	/* The blocks that end on or before the page boundary after block n - 1's
	 * end: the pages those n blocks touch are resident now anyway. */
	size_t first = ((size_t)(n ? n : 1) * k->size + EBB_PAGE_SIZE - 1) & ~(size_t)(EBB_PAGE_SIZE - 1);
	size_t m = first / k->size;
	return m < k->blocks ? (unsigned)m : k->blocks;
}

unsigned central_carve_withhold(span_t *s, unsigned m)
{
	const size_class_t *k = &size_classes[s->cls];
	size_t at = (size_t)m * k->size;
	unsigned first = (unsigned)((at + EBB_PAGE_SIZE - 1) >> EBB_PAGE_SHIFT);
	unsigned end = (unsigned)(((size_t)k->blocks * k->size + EBB_PAGE_SIZE - 1) >> EBB_PAGE_SHIFT);
	/* No block below m touches page `first` or a later one (central_carve_cut);
	 * every block from m on touches one. Block m may start on the page
	 * before, which gets the class: it carries the span mark with a zero
	 * link, which no list ever writes (a listed block links to a block or
	 * to EBB_LIST_END), so that free() reports it as free already (a
	 * forged free there would put a never-carved block in a bin), and the
	 * relink takes it as untouched (central_purge_relink). Those pages read
	 * zero (the carve is lazy only then): the link is zero already. */
	if (at & (EBB_PAGE_SIZE - 1)) {
		char *b = (char *)span_start(span_superblock(s), s) + at;
		TRACK_CARVED(b);
		freelist_put_mark(b, freelist_span_mark_of(b, freelist_mark));
	}
	uint64_t pages = low_bits(end) & ~low_bits(first);
	s->u.central.given_back = pages;
	s->u.central.withheld = (uint16_t)(k->blocks - m);
	atomic_add_u64(&purge_pages_out, (uint64_t)__builtin_popcountll(pages));
	return first;
}

bool central_purge_relink(span_t *s, unsigned want)
{
	if (s->u.central.purging)
		return false;
	const size_class_t *k = &size_classes[s->cls];
	uint64_t key = freelist_mark;
	superblock_t *sb = span_superblock(s);
	char *base = span_start(sb, s);
	uint64_t gone = s->u.central.given_back;
	uint64_t held = blocks_touching(k, gone);
	/* The lowest given-back pages whose blocks touch no other given-back
	 * page, until they hold `want` blocks: a span refilled a batch at a
	 * time faults its pages in as they are needed. */
	uint64_t back = 0, left = gone, take = 0;
	while (left) {
		unsigned p = (unsigned)__builtin_ctzll(left);
		back |= (uint64_t)1 << p;
		left &= left - 1;
		take = held & ~blocks_touching(k, left);
		if ((unsigned)__builtin_popcountll(take) >= want)
			break;
	}
	/* The pages a lazy carve left that no one has written since (from
	 * zeroed - 1 on, span.h) begin above the highest page relinked now. */
	if (s->zeroed != 0 && s->zeroed - 1u < 64 && (back >> (s->zeroed - 1u)) != 0)
		s->zeroed = (uint8_t)(64 - __builtin_clzll(back) + 1);
	/* A run of pages without class (a lazy carve's, or given back by the
	 * pass) that stays withheld and does not start at a block start: the
	 * block across its start, if it begins on a page that gets its class
	 * now, carries the mark central_carve_withhold gives such a block,
	 * written first (free() may look at the page once it has its class).
	 * One that begins on a page that never lost its class carries that
	 * mark already (span_prepare, central_carve_withhold), and must not
	 * get it again: a second free may have sent it out to the program,
	 * and the mark written over what the program holds would let the
	 * relink that takes it hand it out once more. */
	if (left) {
		size_t at = (size_t)__builtin_ctzll(left) << EBB_PAGE_SHIFT;
		size_t start = size_class_div(s->cls, at) * k->size;
		if (pmap_class(pmap_load(sb, s->page + (unsigned)(at >> EBB_PAGE_SHIFT))) == 0 &&
		    !carve_cut_at(k, at) && ((back >> (start >> EBB_PAGE_SHIFT)) & 1)) {
			char *b = base + start;
			TRACK_CARVED(b);
			freelist_put_mark(b, freelist_span_mark_of(b, key));
		}
	}
	/* Before a block of these pages can be freed, free() must find its
	 * class (the blocks are handed out after this, under the lock). The
	 * pages given back have none (span_prepare, central_carve_withhold). */
	for (uint64_t m = back; m; m &= m - 1) {
		unsigned page = s->page + (unsigned)__builtin_ctzll(m);
		if (pmap_class(pmap_load(sb, page)) == 0)
			pmap_set_class(sb, page, s->cls);
	}
	void *head = s->u.central.free_head;
	uint32_t n = 0;
	uintptr_t touched = 0;
	for (unsigned i = k->blocks; i-- > 0;) {
		if (!((take >> i) & 1))
			continue;
		char *b = base + (size_t)i * k->size;
		TRACK_CARVED(b);
		uint64_t *w = (uint64_t *)(void *)b;
		/* The first touch of a page given back is a write that changes
		 * nothing: a read first would map the shared zero page, and the
		 * link written next would fault again to copy it (and flush the
		 * other CPUs' TLBs). Measured on bench/memreturn d: 15 000 of
		 * 292 000 page faults. */
		uintptr_t page = (uintptr_t)b >> EBB_PAGE_SHIFT;
		if (page != touched) {
			touched = page;
			__atomic_fetch_add(&w[0], 0, __ATOMIC_RELAXED);
		}
		/* A block that starts on a page given back reads zero (its
		 * page had no class: free() could not take it). One that starts
		 * on a page that stayed carries the span mark over a zero link
		 * (span_prepare, central_carve_withhold): free() could take it
		 * into a bin without a look at its mark, and the program, given
		 * it from there, may have left anything in it but that mark. */
		uint64_t mark = ((gone >> block_start_page(k, i)) & 1) ? 0 : freelist_span_mark_of(b, key);
		if (EBB_UNLIKELY(w[0] != 0 || (EBB_CHECKS && w[1] != mark))) {
			/* Written after it was freed: never hand it out. */
			freelist_corrupt("malloc", b);
			continue;
		}
		freelist_span_link(b, head, key);
		head = b;
		n++;
	}
	s->u.central.free_head = head;
	s->u.central.given_back = left;
	/* The blocks that leave withheld are on the list (n) or, written
	 * after they were freed, lost: the list's count follows (span.h). */
	uint16_t withheld = (uint16_t)__builtin_popcountll(blocks_touching(k, left));
	s->u.central.lost += (uint32_t)(s->u.central.withheld - withheld) - n;
	s->u.central.withheld = withheld;
	atomic_sub_u64(&purge_pages_out, (uint64_t)__builtin_popcountll(back));
	return true;
}

/* Whether s, a span with pages given back or blocks lost that its counts
 * call empty, really has every block back: nothing lost (a lost block was
 * reported, written after it was freed: a double free's other copy may be
 * the program's now), and its free list, walked as the pass walks it,
 * holds exactly the blocks that are not withheld, and none of them is
 * withheld. A withheld block that starts on a page that stayed can
 * be freed a second time (the free fast path reads no mark) and flushed
 * back into its span: it is then on the list and withheld at once, and the
 * span's `used` one short, so the span empties while a block of it is
 * still out (tests/api/test_realloc_fast.cpp, "a second free of a block
 * whose page the purge gave back": a held block was handed out again). Under
 * the home's lock: a block of s may still come back meanwhile, when the
 * counts are off. */
static bool span_all_back(span_t *s, uint64_t gone)
{
	const size_class_t *k = &size_classes[s->cls];
	central_t *home = s->u.central.home;
	uint64_t freed;
	lock_acquire(&home->lock);
	bool ok = s->used == 0 && s->u.central.lost == 0 &&
		  free_mask(s, k, span_start(span_superblock(s), s), freelist_mark, &freed) &&
		  (freed & blocks_touching(k, gone)) == 0;
	lock_release(&home->lock);
	return ok;
}

void central_purge_free_span(span_t *s)
{
	superblock_t *sb = span_superblock(s);
	uint64_t gone = s->u.central.given_back;
	if (EBB_UNLIKELY(!span_all_back(s, gone))) {
		/* Its pages stay out of the page heap for good (leaked), and
		 * lose their class: a later free of a block of s is reported,
		 * never taken back into it. A lost block was reported when it
		 * was lost. */
		superblock_map_span(sb, s->page, s->npages, 0);
		if (s->u.central.lost == 0)
			report_bad_pointer("free", span_start(sb, s),
					   "double free in this span after its pages were given back (its counts "
					   "and free list disagree: the span is left unused)");
		return;
	}
	/* A given-back page from zeroed - 1 on is a lazy carve's that no
	 * refill carved: nothing of ours wrote it and no block on it was ever
	 * handed out (a carved block never reaches it: central_carve_withhold,
	 * carve_cut_at), so it reads as zero as when the span was carved from
	 * zeroed pages. One below was given back by the pass: not resident
	 * (MADV_FREE's pages as the page heap's own lazy purges), but it held
	 * blocks before and may not read zero. Both kinds have no class. */
	uint64_t zero = s->zeroed != 0 ? gone & ~low_bits(s->zeroed - 1u) : 0;
	if (gone)
		atomic_sub_u64(&purge_pages_out, (uint64_t)__builtin_popcountll(gone));
	superblock_map_span(sb, s->page, s->npages, 0);
	page_heap_free_given_back(s, gone, zero);
}

size_t central_stash_release(central_t *c)
{
	const size_class_t *k = &size_classes[c->cls];
	lock_acquire(&c->lock);
	span_t *s = c->stash;
	uint32_t n = c->nstash;
	c->stash = NULL;
	atomic_store_u32(&c->nstash, 0);
	c->spans -= n;
	CENTRAL_CHECK(c);
	lock_release(&c->lock);
	/* Nobody else can reach them now: no page of theirs has a class and
	 * no list holds them. */
	for (span_t *next; s != NULL; s = next) {
		next = s->next;
		uint64_t gone = low_bits(s->npages);
		/* Untouched since the page heap cut them: they read zero where
		 * it said they did (span.h, zeroed at the cut). */
		uint64_t zero = s->zeroed != 0 ? gone & ~low_bits(s->zeroed - 1u) : 0;
		atomic_sub_u64(&purge_pages_out, (uint64_t)k->pages);
		page_heap_free_given_back(s, gone, zero);
	}
	return (size_t)n * k->pages;
}

size_t central_stash_release_all(void)
{
	size_t pages = 0;
	for (unsigned i = 0, count = central_list_count(); i < count; i++) {
		central_t *c = central_list_at(i);
		if (c != NULL && c->cls != 0 && atomic_load_u32(&c->nstash) != 0)
			pages += central_stash_release(c);
	}
	return pages;
}

void central_purge_pages_out_add(uint64_t pages)
{
	atomic_add_u64(&purge_pages_out, pages);
}

void central_purge_pages_out_sub(uint64_t pages)
{
	atomic_sub_u64(&purge_pages_out, pages);
}

void central_purge_stats(uint64_t *pages_out, uint64_t *madvise_calls, uint64_t *bytes)
{
	*pages_out = atomic_load_u64(&purge_pages_out);
	*madvise_calls = atomic_load_u64(&purge_calls);
	*bytes = atomic_load_u64(&purge_bytes);
}

void central_purge_postfork_child(void)
{
	/* The pass does not exist in the child: its spans are not purging any
	 * more (their pages may or may not have been given back; withheld
	 * blocks read zero either way). */
	for (unsigned i = 0; i < purge_inflight_n; i++)
		purge_inflight[i].s->u.central.purging = 0;
	purge_inflight_n = 0;
	purge_busy = 0;
	purge_pending = 0;
}
