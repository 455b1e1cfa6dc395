/* huge.c: huge blocks, those of more pages than a superblock has. Each is a
 * mapping of its own (a huge superblock, superblock.c) with one span, of
 * whole 2 MiB units; a freed one stays mapped in the huge cache of heap 0
 * (large.c sends every huge request there), as a dirty run that decay purges
 * and release unmaps like any other (page_heap_purge.c). The next huge
 * request takes a cached block that fits closely as it is; otherwise the
 * kernel moves the pages of cached dirty blocks into a new mapping for it,
 * or into the largest of them where it can grow in place (huge_assemble),
 * so that resident pages serve a request of any size and none is faulted
 * in again while the program reuses them.
 *
 * Locking: h->lock of the block's heap guards the cache list and the page
 * counts; it is dropped around huge_create, huge_resize and huge_give_tail
 * (mmap, mremap), the blocks involved being out of every list meanwhile
 * (LARGE, or BUSY for the cached blocks that give pages). The rules of the
 * page heap as a whole are in page_heap.h. */
#include "core/pages/page_heap.h"
#include "core/pages/span_check.h"

#include "os/os.h"


/* A live huge block shrunk by realloc stays as it is while it is at most
 * twice as large as asked plus 1 MiB: its resident pages are worth more than
 * the few the program does not use, which would have to be faulted in again
 * when it grows back. */
#define HUGE_SLACK(pages) ((pages) + 256)

/* A cached huge block serves a request as it is while it is at most an
 * eighth larger than asked plus 1 MiB. A larger one gives the request only
 * what it needs (huge_assemble): the rest stays cached, resident, for the
 * next request, instead of sitting unused inside a live block. */
#define HUGE_FIT_SLACK(pages) ((pages) / 8 + 256)

/* Most cached blocks one request takes pages from. */
#define HUGE_DONORS 8

/* Huge mappings hold whole 2 MiB units (pages beyond what was asked are the
 * block's slack). So every piece huge_assemble moves starts and ends on a
 * 2 MiB boundary at both ends, and the kernel moves it by page-middle-
 * directory entries, one per 2 MiB, leaving the page-table entries below
 * them as they were. A piece at any other offset is moved entry by entry,
 * and under a hypervisor that shadows page tables its first touch then
 * costs about a third of a fresh page fault (measured: 28 ms per 16 MiB,
 * against 1 ms aligned and 61-81 ms fresh). */
#define HUGE_UNIT_PAGES ((size_t)(2u << 20) >> EBB_PAGE_SHIFT)

static size_t huge_round(size_t pages)
{
	return (size_t)util_align_up(pages, HUGE_UNIT_PAGES);
}

/* A new huge mapping of npages (whole 2 MiB units). The kernel places a new
 * mapping top-down, right below the lowest one or at the top of a freed gap,
 * and those places are 4 MiB aligned while every mapping (superblocks, huge
 * blocks with their header slot) is a multiple of 4 MiB. A huge block of an
 * odd number of 2 MiB units breaks that: its mapping lands 2 MiB off, and
 * huge_create pays a second mmap and three more munmaps to align it, and
 * leaves the next one 2 MiB off too. So it is mapped with a whole 4 MiB and
 * trimmed by one mremap, which leaves a 2 MiB gap above it for small
 * mappings and the next place aligned (bench/large: about 200 fewer mapping
 * calls per 1000 operations). If the trim fails the block keeps the unit as
 * slack. */
static superblock_t *huge_map_new(page_heap_t *h, size_t npages, size_t align)
{
	/* A spare header slot grows into the block exactly: one call, and no
	 * 2 MiB unit to trim (its place is given). */
	superblock_t *spare = huge_create_spare(h, npages, align);
	if (spare != NULL)
		return spare;
	size_t whole = (size_t)util_align_up(npages, (size_t)EBB_SB_SIZE >> EBB_PAGE_SHIFT);
	if (whole == npages)
		return huge_create(h, npages, align);
	superblock_t *sb = huge_create(h, whole, align);
	/* Only where the unit more is what cannot be mapped (past
	 * EBB_MAX_REQUEST) is the block's own size tried: any other refused
	 * mapping is the request's ENOMEM, as the caller's fault tests expect
	 * (api.faults: the n-th mapping refused fails exactly one malloc). */
	if (sb == NULL && ((size_t)whole << EBB_PAGE_SHIFT) > EBB_MAX_REQUEST)
		return huge_create(h, npages, align);
	if (sb == NULL)
		return NULL;
	(void)huge_resize(sb, npages); /* a shrink never moves the block */
	return sb;
}

/* Marks cached huge block s (unlisted) as handed out for `asked` pages.
 * Caller holds the lock. */
static void huge_take(page_heap_t *h, span_t *s, size_t asked)
{
	SPAN_SET_STATE(s, SPAN_LARGE, &h->lock);
	s->used = (uint32_t)asked;
	span_superblock(s)->empty_since_ns = 0;
	h->huge_pages += s->npages;
	h->huge_slack_pages += s->npages - asked;
	/* Atomic: large_alloc reads it without the lock (one writer: the
	 * lock holder). */
	__atomic_store_n(&h->huge_live, h->huge_live + 1, __ATOMIC_RELAXED);
	h->large_allocs++;
	page_heap_inuse_add(s->npages);
}

typedef struct huge_donor {
	span_t *s;
	size_t take; /* pages from its end */
} huge_donor_t;

/* Picks the dirty cached blocks whose pages will make up a block of npages:
 * while one holds what is still missing, the smallest such gives its tail
 * (the least left over); until then the largest gives all it has. They are
 * taken out of the cache, BUSY. Returns how many; caller holds the lock. */
static unsigned huge_pick_donors(page_heap_t *h, size_t npages, huge_donor_t *d)
{
	unsigned n = 0;
	size_t missing = npages;
	while (missing > 0 && n < HUGE_DONORS) {
		span_t *fit = NULL, *big = NULL;
		for (superblock_t *sb = h->huge_cache; sb; sb = sb->next) {
			page_heap_check_listed(h, sb, true);
			span_t *c = &sb->spans[0];
			if (c->state != SPAN_FREE_DIRTY)
				continue;
			if (c->npages >= missing) {
				if (fit == NULL || c->npages < fit->npages)
					fit = c;
			} else if (big == NULL || c->npages > big->npages) {
				big = c;
			}
		}
		span_t *c = fit ? fit : big;
		if (c == NULL)
			break;
		page_heap_run_unlist(h, c);
		SPAN_SET_STATE(c, SPAN_BUSY, &h->lock);
		d[n].s = c;
		d[n].take = c->npages < missing ? c->npages : missing;
		missing -= d[n].take;
		n++;
	}
	return n;
}

/* Moves the pages of the cached blocks in d[0..n) (BUSY, out of the cache)
 * to `to`, one after the other, and lists again those that keep pages (with
 * their age). Returns the pages moved; what a donor could not give stays
 * as it was at `to` (fresh). The lock is not held. */
static size_t huge_fill(page_heap_t *h, char *to, huge_donor_t *d, unsigned n)
{
	size_t moved = 0, gone = 0;
	for (unsigned i = 0; i < n && to != NULL; i++) {
		superblock_t *dsb = span_superblock(d[i].s);
		bool whole = d[i].take == d[i].s->npages;
		if (!huge_give_tail(dsb, d[i].take, to + (moved << EBB_PAGE_SHIFT)))
			continue; /* refused: what it would have given faults in */
		moved += d[i].take;
		if (whole) {
			d[i].s = NULL;
			gone++;
		}
	}
	lock_acquire(&h->lock);
	for (unsigned i = 0; i < n; i++) {
		span_t *c = d[i].s;
		if (c == NULL)
			continue;
		SPAN_SET_STATE(c, SPAN_FREE_DIRTY, &h->lock);
		page_heap_run_list(h, c, NULL);
	}
	decay_note_removed(&h->decay, moved);
	page_heap_reuse_add(moved);
	h->huge_count -= gone;
	h->meta_pages -= gone * EBB_SB_FIXED_PAGES;
	lock_release(&h->lock);
	return moved;
}

/* A superblock gives its pages to a huge block only if at least this many
 * of those are dirty: a move and the page heap's loss of a superblock cost
 * about what 100-200 fresh page faults do. */
#define HUGE_SB_MIN_DIRTY 256

/* Superblocks of a heap looked at for one (huge_sb_take), under its lock:
 * a heap of gigabytes of small blocks has thousands, and a huge request
 * that finds none would hold the lock for all of them. New superblocks and
 * those a release pass kept go to the head of the list. */
#define HUGE_SB_LOOK 64

/* Dirty pages of sb (entirely free, h's lock held) from page `from` on, or
 * 0 if one of its runs is not a listed free run (a purge pass has it out,
 * BUSY) or sb is being trimmed or holds cold runs. */
static size_t huge_sb_dirty(const superblock_t *sb, unsigned from)
{
	if (sb->free_pages != sb->usable_pages || sb->empty_since_ns == 0 || sb->cold_n != 0 ||
	    sb->hdr_purging || sb->trim_queued)
		return 0;
	size_t dirty = 0;
	unsigned end = (unsigned)sb->first_page + sb->usable_pages;
	for (unsigned page = sb->first_page; page < end;) {
		const span_t *r = &sb->spans[page - EBB_SB_HEADER_PAGES];
		if ((r->state != SPAN_FREE_DIRTY && r->state != SPAN_FREE_PURGED) || r->npages == 0 ||
		    r->page != page || page + r->npages > end)
			return 0;
		if (r->state == SPAN_FREE_DIRTY && page + r->npages > from)
			dirty += page + r->npages - (page > from ? page : from);
		page += r->npages;
	}
	return dirty;
}

/* Takes out of heap x the entirely free superblock with the most dirty
 * pages from page `from` on (at least HUGE_SB_MIN_DIRTY) among the first
 * HUGE_SB_LOOK of its list, as the release pass takes one it unmaps: out
 * of the list, its runs out of theirs. Returns it, with its dirty pages in
 * *dirty, or NULL. */
static superblock_t *huge_sb_take(page_heap_t *x, unsigned from, size_t *dirty)
{
	superblock_t *best = NULL;
	size_t most = HUGE_SB_MIN_DIRTY - 1;
	lock_acquire(&x->lock);
	for (int round = 0; round < 2; round++) {
		best = NULL;
		unsigned look = HUGE_SB_LOOK;
		for (superblock_t *sb = x->superblocks; sb && look > 0; sb = sb->next, look--) {
			page_heap_check_listed(x, sb, false);
			size_t d = huge_sb_dirty(sb, from);
			if (d > most) {
				most = d;
				best = sb;
			}
		}
		/* A pending span (a CENTRAL span freed whole) is in no list
		 * yet: merged first, and sb looked for again. */
		if (best == NULL || x->pending_pages == 0)
			break;
		page_heap_pending_drain(x, 0);
		most = HUGE_SB_MIN_DIRTY - 1;
	}
	if (best == NULL || x->pending_pages != 0) {
		lock_release(&x->lock);
		return NULL;
	}
	page_heap_sb_unlink(&x->superblocks, best);
	x->superblocks_count--;
	*dirty = page_heap_sb_unlist_runs(x, best);
	lock_release(&x->lock);
	return best;
}

/* Fills [to, to + pages) of a huge block being made (its pages fresh) with
 * those of entirely free superblocks of any page heap, moved by the kernel
 * whole (4 MiB, 2 MiB-aligned in the block: by page-middle-directory
 * entries) or, for the last 2 MiB, by their second half. While a program's
 * demand climbs, the runs its medium blocks freed leave such superblocks
 * dirty, and a huge request faulted in fresh pages beside them (bench
 * large: 28 000 of 32 800 fresh pages could have come from them). The
 * superblock is gone from its heap; a page heap that needs one again maps
 * it, or takes it from a cached huge block (page_heap_huge_carve). Returns
 * the pages filled with moved ones. Only for blocks of more than a
 * superblock holds (not the small aligned ones of large.c). No lock held. */
static size_t huge_fill_sb(char *to, size_t pages, size_t *moved_dirty)
{
	size_t done = 0;
	*moved_dirty = 0;
	/* The CPUs' heaps: the profiler's (page_heap_prof) keeps its own. */
	unsigned heaps = page_heap_count();
	for (unsigned i = 0; i < heaps && pages - done >= HUGE_UNIT_PAGES; i++) {
		page_heap_t *x = page_heap_peek(i);
		if (x == NULL)
			continue;
		while (pages - done >= HUGE_UNIT_PAGES) {
			bool half = pages - done < EBB_SB_PAGES;
			size_t dirty = 0;
			superblock_t *sb = huge_sb_take(x, half ? EBB_SB_PAGES / 2 : 0, &dirty);
			if (sb == NULL)
				break;
			size_t meta = (size_t)__builtin_popcount(sb->desc_touched);
			unsigned first = sb->first_page, usable = sb->usable_pages;
			bool gave = superblock_give(sb, to + (done << EBB_PAGE_SHIFT), half);
			uint64_t now = os_now_ns();
			lock_acquire(&x->lock);
			if (gave) {
				x->meta_pages -= meta;
			} else { /* kept: one free run again, as the release pass keeps one */
				page_heap_sb_push(&x->superblocks, sb);
				x->superblocks_count++;
				page_heap_run_free_coalesced(x, sb, first, usable, SPAN_FREE_DIRTY, 0, now);
			}
			lock_release(&x->lock);
			if (!gave)
				break;
			page_heap_reuse_add(dirty);
			*moved_dirty += dirty;
			done += half ? EBB_SB_PAGES / 2 : EBB_SB_PAGES;
		}
	}
	return done;
}

/* Of the donors in d[0..n) that give all their pages, the largest whose
 * data is aligned to `align` and that grows where it is to npages
 * (huge_grow_after: the address space after it is free); its index, or -1.
 * Each one tried costs no call where the registry knows the space after it
 * is ours. The lock is not held. */
static int huge_grow_donor(const huge_donor_t *d, unsigned n, size_t npages, size_t align)
{
	unsigned tried = 0;
	for (;;) {
		int best = -1;
		for (unsigned i = 0; i < n; i++) {
			span_t *c = d[i].s;
			if ((tried & (1u << i)) || d[i].take != c->npages ||
			    (((uintptr_t)span_superblock(c) + EBB_SB_SIZE) & (align - 1)) != 0)
				continue;
			if (best < 0 || c->npages > d[best].s->npages)
				best = (int)i;
		}
		if (best < 0 || huge_grow_after(span_superblock(d[best].s), npages))
			return best;
		tried |= 1u << best;
	}
}

/* A block of npages made of the pages of the cached blocks in d[0..n) (BUSY,
 * out of the cache), moved by the kernel into a new mapping: the pages the
 * program freed a moment ago serve a request of another size without being
 * faulted in again, where growing one cached block would fault in the
 * difference and shrinking one would give back pages the next request
 * wants. The lock is not held. NULL (donors back in the cache) if nothing
 * could be mapped. */
static span_t *huge_assemble(page_heap_t *h, size_t npages, size_t align, size_t asked,
			     huge_donor_t *d, unsigned n)
{
	/* Where the space after one of the donors is free, that donor grows
	 * there into the block and the others' pages move in after its own:
	 * its pages stay where they are (no move, whose cost grows with the
	 * bytes moved: a TLB flush per 2 MiB), and no new mapping is made, no
	 * 2 MiB unit trimmed off it, no header slot retired. */
	int b = huge_grow_donor(d, n, npages, align);
	if (b >= 0) {
		span_t *s = d[b].s;
		size_t own = d[b].take;
		d[b] = d[--n];
		char *data = (char *)span_superblock(s) + EBB_SB_SIZE;
		size_t have = own + huge_fill(h, data + (own << EBB_PAGE_SHIFT), d, n), sb_dirty;
		if (npages > have && asked > EBB_SB_USABLE_PAGES)
			huge_fill_sb(data + (have << EBB_PAGE_SHIFT), npages - have, &sb_dirty);
		lock_acquire(&h->lock);
		/* BUSY goes back to a cached block's state, which a request
		 * takes (span.h's table): no list holds it meanwhile. */
		SPAN_SET_STATE(s, SPAN_FREE_DIRTY, &h->lock);
		s->zeroed = 0;
		decay_note_removed(&h->decay, own);
		page_heap_reuse_add(own);
		huge_take(h, s, asked);
		lock_release(&h->lock);
		return s;
	}
	superblock_t *nsb = huge_map_new(h, npages, align);
	size_t moved = huge_fill(h, nsb ? (char *)nsb + EBB_SB_SIZE : NULL, d, n);
	if (nsb == NULL)
		return NULL;
	if (npages > moved && asked > EBB_SB_USABLE_PAGES)
		moved += huge_fill_sb((char *)nsb + EBB_SB_SIZE + (moved << EBB_PAGE_SHIFT), npages - moved,
				      &(size_t){ 0 });
	span_t *s = &nsb->spans[0];
	lock_acquire(&h->lock);
	s->zeroed = moved == 0;
	h->huge_count++;
	h->meta_pages += EBB_SB_FIXED_PAGES;
	huge_take(h, s, asked);
	lock_release(&h->lock);
	return s;
}

/* s, the span of a huge superblock, goes into the cache as a dirty block
 * freed at `now`. Caller holds h's lock. */
static void huge_cache_dirty(page_heap_t *h, span_t *s, uint64_t now)
{
	SPAN_SET_STATE(s, SPAN_FREE_DIRTY, &h->lock);
	s->zeroed = 0;
	s->u.free.freed_ns = now;
	span_superblock(s)->empty_since_ns = now;
	page_heap_run_list(h, s, NULL);
}

/* The span s of a huge mapping made just now goes into the cache, counted
 * with the heap's huge blocks: dirty (pages were moved into it) or, when
 * nothing was, as a purged block, which the release pass unmaps (munmap
 * may fail too, and must not lose it). Caller holds h's lock. */
static void huge_cache_new(page_heap_t *h, span_t *s, bool dirty, uint64_t now)
{
	h->huge_count++;
	h->meta_pages += EBB_SB_FIXED_PAGES;
	if (dirty) {
		huge_cache_dirty(h, s, now);
		return;
	}
	SPAN_SET_STATE(s, SPAN_FREE_PURGED, &h->lock);
	span_superblock(s)->empty_since_ns = now;
	page_heap_run_list(h, s, NULL);
}

/* Serves a request of npages with the dirty cached block c (out of the
 * cache, LARGE, not counted yet, freed at `freed`), larger than the request
 * by more than its fit slack but by no more than the request itself: the
 * block keeps its first npages where they are, and only its tail moves,
 * into a new mapping that goes back into the cache (dirty, with c's age).
 * huge_assemble would move the npages instead: more pages, and those the
 * program is about to write, which a guest with shadow page tables pays for
 * again at their first touch after a move (about 30-60 us per 2 MiB here,
 * against 7-15 in place). If the tail cannot be moved it stays, as the
 * block's slack. The lock is not held. */
static span_t *huge_split(page_heap_t *h, span_t *c, size_t npages, size_t asked, uint64_t freed)
{
	size_t cut = c->npages - npages;
	superblock_t *tsb = huge_map_new(h, cut, EBB_SB_SIZE);
	bool moved = tsb != NULL && huge_give_tail(span_superblock(c), cut, (char *)tsb + EBB_SB_SIZE);
	lock_acquire(&h->lock);
	if (tsb != NULL)
		huge_cache_new(h, &tsb->spans[0], moved, freed);
	size_t reused = moved ? npages : c->npages;
	decay_note_removed(&h->decay, reused);
	page_heap_reuse_add(reused);
	huge_take(h, c, asked);
	lock_release(&h->lock);
	return c;
}

/* A request for a huge block reuses a cached one that fits closely as it
 * is. Otherwise it is made of the pages of dirty cached blocks, moved
 * (huge_assemble). With none, it takes the best of the purged ones: one
 * larger, shrunk in place; else the largest smaller one, grown (mremap
 * moves its page tables if it cannot grow in place). So a program whose big
 * buffers change size from one use to the next keeps its resident pages
 * and pays for growth only. */
span_t *page_heap_huge_alloc(page_heap_t *h, size_t npages, size_t align, size_t asked_pages)
{
	npages = huge_round(npages);
	page_heap_asked_add(npages);
	span_t *fit = NULL, *below = NULL;
	bool any_dirty = false;
	lock_acquire(&h->lock);
	for (superblock_t *sb = h->huge_cache; sb; sb = sb->next) {
		page_heap_check_listed(h, sb, true);
		span_t *c = &sb->spans[0];
		any_dirty |= c->state == SPAN_FREE_DIRTY;
		if ((((uintptr_t)sb + EBB_SB_SIZE) & (align - 1)) != 0)
			continue;
		if (c->npages >= npages) {
			/* the smallest that fits; of two that fit closely, a dirty one */
			if (fit == NULL || c->npages < fit->npages ||
			    (c->state == SPAN_FREE_DIRTY && fit->state != SPAN_FREE_DIRTY &&
			     c->npages <= npages + HUGE_FIT_SLACK(npages)))
				fit = c;
			/* A dirty block of the very size is the best there is: the
			 * cache may hold hundreds of small aligned blocks
			 * (large.c), each checked as it is passed. */
			if (fit == c && c->npages == npages && c->state == SPAN_FREE_DIRTY)
				break;
		} else if ((below == NULL || c->npages > below->npages) && align <= EBB_SB_SIZE) {
			below = c; /* growing may move it, keeping only 4 MiB alignment */
		}
	}
	if (any_dirty && (fit == NULL || fit->npages > npages + HUGE_FIT_SLACK(npages))) {
		if (fit != NULL && fit->state == SPAN_FREE_DIRTY && fit->npages - npages <= npages) {
			uint64_t freed = fit->u.free.freed_ns;
			page_heap_run_unlist(h, fit);
			fit->zeroed = 0;
			SPAN_SET_STATE(fit, SPAN_LARGE, &h->lock); /* ours alone now: out of every list */
			lock_release(&h->lock);
			return huge_split(h, fit, npages, asked_pages, freed);
		}
		huge_donor_t d[HUGE_DONORS];
		unsigned n = huge_pick_donors(h, npages, d);
		lock_release(&h->lock);
		return huge_assemble(h, npages, align, asked_pages, d, n);
	}
	span_t *s = fit ? fit : below;
	if (s != NULL) {
		bool was_dirty = s->state == SPAN_FREE_DIRTY;
		page_heap_run_unlist(h, s);
		if (was_dirty) {
			decay_note_removed(&h->decay, s->npages);
			page_heap_reuse_add(s->npages);
		}
		s->zeroed = was_dirty ? 0 : s->zeroed;
		bool resize = s->npages < npages || s->npages - npages > HUGE_SLACK(npages);
		SPAN_SET_STATE(s, SPAN_LARGE, &h->lock); /* ours alone now: out of every list */
		if (!resize) {
			huge_take(h, s, asked_pages);
			lock_release(&h->lock);
			return s;
		}
		/* Counted as cached-and-in-use while the lock is dropped; the
		 * resize updates the mapping totals itself. */
		lock_release(&h->lock);
		superblock_t *nsb = huge_resize(span_superblock(s), npages);
		lock_acquire(&h->lock);
		if (nsb != NULL) {
			s = &nsb->spans[0];
			huge_take(h, s, asked_pages);
			lock_release(&h->lock);
			return s;
		}
		if (s->npages >= npages) { /* could not shrink: use it as it is */
			huge_take(h, s, asked_pages);
			lock_release(&h->lock);
			return s;
		}
		/* Could not grow: back into the cache, and map a new one. */
		SPAN_SET_STATE(s, was_dirty ? SPAN_FREE_DIRTY : SPAN_FREE_PURGED, &h->lock);
		s->u.free.freed_ns = os_now_ns();
		span_superblock(s)->empty_since_ns = s->u.free.freed_ns;
		page_heap_run_list(h, s, NULL);
	}
	lock_release(&h->lock);

	superblock_t *sb = huge_map_new(h, npages, align);
	if (sb == NULL)
		return NULL;
	s = &sb->spans[0];
	size_t sb_dirty;
	if (asked_pages > EBB_SB_USABLE_PAGES && huge_fill_sb((char *)sb + EBB_SB_SIZE, npages, &sb_dirty) > 0)
		s->zeroed = 0;
	lock_acquire(&h->lock);
	h->huge_count++;
	h->meta_pages += EBB_SB_FIXED_PAGES;
	huge_take(h, s, asked_pages);
	lock_release(&h->lock);
	return s;
}

superblock_t *page_heap_huge_carve(page_heap_t *h, page_heap_t *cache, bool *dirty, uint64_t *freed_ns)
{
	span_t *donor = NULL;
	*dirty = false;
	lock_acquire(&cache->lock);
	for (superblock_t *sb = cache->huge_cache; sb; sb = sb->next) {
		page_heap_check_listed(cache, sb, true);
		span_t *c = &sb->spans[0];
		if (c->state == SPAN_FREE_DIRTY && c->npages >= EBB_SB_PAGES &&
		    (donor == NULL || c->npages < donor->npages))
			donor = c; /* the smallest: large ones are kept for huge requests */
	}
	if (donor != NULL) {
		page_heap_run_unlist(cache, donor);
		SPAN_SET_STATE(donor, SPAN_BUSY, &cache->lock);
		*freed_ns = donor->u.free.freed_ns;
	}
	lock_release(&cache->lock);
	if (donor == NULL)
		return superblock_create(h);
	bool whole = donor->npages == EBB_SB_PAGES;
	superblock_t *sb = superblock_create_from(h, span_superblock(donor), dirty);
	lock_acquire(&cache->lock);
	if (*dirty && whole) {
		cache->huge_count--;
		cache->meta_pages -= EBB_SB_FIXED_PAGES;
	} else {
		SPAN_SET_STATE(donor, SPAN_FREE_DIRTY, &cache->lock);
		page_heap_run_list(cache, donor, NULL);
	}
	if (*dirty)
		decay_note_removed(&cache->decay, EBB_SB_PAGES);
	lock_release(&cache->lock);
	return sb;
}

void page_heap_huge_free(span_t *s)
{
	superblock_t *sb = span_superblock(s);
	page_heap_t *h = page_heap_owner(sb, true);
	uint64_t now = os_now_ns();
	lock_acquire(&h->lock);
	h->huge_pages -= s->npages;
	h->huge_slack_pages -= s->npages - s->used;
	__atomic_store_n(&h->huge_live, h->huge_live - 1, __ATOMIC_RELAXED);
	page_heap_inuse_sub(s->npages);
	huge_cache_dirty(h, s, now);
	lock_release(&h->lock);
	page_heap_maybe_decay(h, now);
}

/* realloc shrinking a huge block by more than its slack: the pages cut
 * off go into the cache as a block of their own, resident (moved by the
 * kernel), instead of back to the kernel: a program that shrinks a buffer
 * and grows another, or the same one again, finds them there. false if
 * they could not be moved (the caller shrinks the mapping). */
static bool huge_shrink_to_cache(page_heap_t *h, span_t *s, size_t npages, size_t asked)
{
	size_t old = s->npages, old_asked = s->used, cut = old - npages;
	superblock_t *tsb = huge_map_new(h, cut, EBB_SB_SIZE);
	if (tsb == NULL)
		return false;
	uint64_t now = os_now_ns();
	span_t *t = &tsb->spans[0];
	if (!huge_give_tail(span_superblock(s), cut, (char *)tsb + EBB_SB_SIZE)) {
		lock_acquire(&h->lock);
		huge_cache_new(h, t, false, now);
		lock_release(&h->lock);
		return false;
	}
	lock_acquire(&h->lock);
	s->used = (uint32_t)asked;
	h->huge_pages -= cut;
	h->huge_slack_pages -= old - old_asked;
	h->huge_slack_pages += npages - asked;
	page_heap_inuse_sub(cut);
	huge_cache_new(h, t, true, now);
	lock_release(&h->lock);
	page_heap_maybe_decay(h, now);
	return true;
}

/* Grows live huge block sb to npages by moving its pages, as they are, to
 * the front of a new mapping of that size; NULL (sb untouched) if it could
 * not. For a block that huge_resize cannot grow: one made of the pages of
 * several cached blocks (huge_assemble, huge_fill) is as many mappings of
 * the kernel, side by side, which mremap does not resize (EFAULT), in place
 * or moving, but moves at their size (Linux 6.17 and later). Without this,
 * realloc copied such a block into a new one (bench realloc vector: 32 of
 * 137 growths). The lock is not held. */
static superblock_t *huge_move_grow(page_heap_t *h, superblock_t *sb, size_t npages)
{
	span_t *s = &sb->spans[0];
	size_t old = s->npages;
	uint8_t zeroed = s->zeroed;
	superblock_t *nsb = huge_map_new(h, npages, EBB_SB_SIZE);
	if (nsb == NULL)
		return NULL;
	span_t *ns = &nsb->spans[0];
	/* sb's header goes with its last page: s is not read after this. */
	if (!huge_give_tail(sb, old, (char *)nsb + EBB_SB_SIZE)) {
		uint64_t now = os_now_ns();
		lock_acquire(&h->lock);
		huge_cache_new(h, ns, false, now);
		lock_release(&h->lock);
		return NULL;
	}
	ns->zeroed = zeroed;
	return nsb;
}

span_t *page_heap_huge_resize(span_t *s, size_t asked)
{
	superblock_t *sb = span_superblock(s);
	page_heap_t *h = page_heap_owner(sb, true);
	size_t old = s->npages, old_asked = s->used;
	if (asked <= old && old - asked <= HUGE_SLACK(asked)) {
		/* In place: a shrunk tail stays mapped, as slack; a block grows
		 * into its own slack. (Counts modulo 2^64: the slack may shrink.) */
		lock_acquire(&h->lock);
		s->used = (uint32_t)asked;
		h->huge_slack_pages += old_asked - asked;
		lock_release(&h->lock);
		return s;
	}
	size_t npages = huge_round(asked);
	if (npages > old)
		page_heap_asked_add(npages - old);
	if (npages < old && huge_shrink_to_cache(h, s, npages, asked))
		return s;
	superblock_t *nsb = huge_resize(sb, npages);
	if (nsb == NULL && npages > old)
		nsb = huge_move_grow(h, sb, npages);
	if (nsb == NULL)
		return NULL;
	span_t *ns = &nsb->spans[0];
	ns->used = (uint32_t)asked;
	lock_acquire(&h->lock);
	h->huge_pages += npages;
	h->huge_pages -= old;
	h->huge_slack_pages -= old - old_asked;
	h->huge_slack_pages += npages - asked;
	if (npages > old)
		page_heap_inuse_add(npages - old);
	else
		page_heap_inuse_sub(old - npages);
	/* Grown: the new pages are fresh; cached dirty ones take their place. */
	huge_donor_t d[HUGE_DONORS];
	unsigned n = npages > old ? huge_pick_donors(h, npages - old, d) : 0;
	lock_release(&h->lock);
	size_t have = old;
	if (n > 0)
		have += huge_fill(h, (char *)nsb + EBB_SB_SIZE + (old << EBB_PAGE_SHIFT), d, n);
	size_t sb_dirty;
	if (npages > have)
		huge_fill_sb((char *)nsb + EBB_SB_SIZE + (have << EBB_PAGE_SHIFT), npages - have, &sb_dirty);
	return ns;
}
