/* page_heap_check.c: the identities of a page heap (page_heap.h, span.h),
 * checked under its lock in the EBB_INVARIANTS build.
 *
 * Per normal superblock, walking its spans from first_page:
 *   each span's descriptor names its own first page and has npages >= 1,
 *     and the spans tile [first_page, first_page + usable_pages)
 *   each free run (FREE_DIRTY, FREE_PURGED, BUSY) has boundary tags:
 *     pmap[first] == pmap[last] == pmap_entry(first, class 0)
 *   no two adjacent free runs of one state (FREE_DIRTY or FREE_PURGED):
 *     coalescing is complete (runs of different states stay apart)
 *   the free runs' pages sum to free_pages
 *   cold runs (superblock.h) are walked by their size in sb's table, and
 *   have their boundary tags too
 * Per heap, when no purge pass has runs out (h->purging clear), over its
 * superblocks and its cache of huge blocks:
 *   dirty_pages == dirty runs + cached dirty huge blocks
 *   purged_pages == purged runs + cached purged huge blocks
 *   superblocks * usable pages == central + large + dirty runs + purged runs
 */
#include "core/pages/page_heap.h"

#include "core/runtime/report.h"

#if EBB_INVARIANTS

#define PAGE_HEAP_CHECK_EVERY 64

static __thread unsigned page_heap_check_calls;

static EBB_NORETURN void ph_fail(const page_heap_t *h, const void *where, const char *what, uint64_t a,
				 uint64_t b)
{
	char msg[256];
	report_format(msg, sizeof msg, "page heap %u, at %p: %s (%llu vs %llu)", h->index, where, what,
		      (unsigned long long)a, (unsigned long long)b);
	report_fatal(msg);
}

static bool is_free(unsigned st)
{
	return st == SPAN_FREE_DIRTY || st == SPAN_FREE_PURGED || st == SPAN_BUSY;
}

/* Walks sb; adds its dirty and purged run pages; returns false if a run is
 * BUSY (out with a pass). */
static bool check_superblock(const page_heap_t *h, superblock_t *sb, size_t *dirty, size_t *purged)
{
	unsigned first = sb->first_page, end = (unsigned)sb->first_page + sb->usable_pages;
	uint64_t free_pages = 0;
	unsigned prev_state = SPAN_NONE;
	const span_t *prev = NULL;
	bool busy = false;
	for (unsigned page = first; page < end;) {
		int cold = superblock_cold_find(sb, page);
		if (cold >= 0) {
			/* Its descriptor reads as zero: the table has its size. */
			unsigned n = sb->cold_npages[cold];
			if (n == 0 || page + n > end || pmap_load(sb, page) != pmap_entry(page, 0) ||
			    pmap_load(sb, page + n - 1) != pmap_entry(page, 0))
				ph_fail(h, sb, "cold run's size or boundary tags are wrong", page, n);
			if (prev_state == SPAN_FREE_PURGED)
				ph_fail(h, sb, "a cold run next to a purged run (coalescing incomplete)", page, n);
			free_pages += n;
			*purged += n;
			prev_state = SPAN_FREE_PURGED;
			prev = NULL;
			page += n;
			continue;
		}
		const span_t *s = superblock_span_at(sb, page);
		if (s->page != page || s->npages == 0 || page + s->npages > end)
			ph_fail(h, s, "span descriptor does not name its run", s->page, page);
		unsigned last = page + s->npages - 1;
		if (is_free(s->state)) {
			uint32_t tag = pmap_load(sb, page), end_tag = pmap_load(sb, last);
			if (tag != pmap_entry(page, 0) || end_tag != pmap_entry(page, 0))
				ph_fail(h, s, "free run's boundary tags do not name it (or carry a class)", end_tag,
					tag);
			/* A pending span merges with no neighbour (page_heap.c). */
			if (s->state == prev_state && s->state != SPAN_BUSY && !page_heap_run_pending(s) &&
			    !(prev != NULL && page_heap_run_pending(prev)))
				ph_fail(h, s, "two adjacent free runs of one state (coalescing incomplete)", page,
					s->state);
			free_pages += s->npages;
			if (s->state == SPAN_FREE_PURGED)
				*purged += s->npages;
			else
				*dirty += s->npages;
			busy |= s->state == SPAN_BUSY;
		} else if (s->state == SPAN_NONE) {
			ph_fail(h, s, "a run starts at a page whose descriptor is NONE", page, 0);
		}
		prev_state = s->state;
		prev = s;
		page += s->npages;
	}
	busy |= sb->hdr_purging; /* its cold runs are not counted in purged_pages yet */
	if (free_pages != sb->free_pages)
		ph_fail(h, sb, "free runs' pages != the superblock's free_pages", free_pages, sb->free_pages);
	return !busy;
}

/* The two levels of run-list bitmaps agree with the lists: bit i of
 * nonempty[k] set iff runs of kind k, index i, are listed; bit w of
 * nonempty_words[k] iff word w of nonempty[k] is not zero (list_find
 * skips a word whose summary bit is clear). */
static void check_bitmaps(const page_heap_t *h)
{
	for (unsigned k = 0; k < 2; k++) {
		uint64_t words = 0;
		for (unsigned w = 0; w < EBB_RUN_WORDS; w++)
			if (h->nonempty[k][w] != 0)
				words |= 1ull << w;
		if (words != h->nonempty_words[k])
			ph_fail(h, h, "nonempty_words != the non-zero words of nonempty", h->nonempty_words[k],
				words);
		if (h->nonempty[k][0] & 1)
			ph_fail(h, h, "run-list bit of 0 pages set", 1, 0);
		for (unsigned i = 1; i < EBB_RUN_LISTS; i++) {
			bool bit = (h->nonempty[k][i >> 6] >> (i & 63)) & 1;
			bool listed = h->runs[page_heap_run_slot(i)][k] != NULL;
			if (bit != listed)
				ph_fail(h, h, "run-list bit != list not empty", bit, i);
		}
	}
}

void page_heap_check(page_heap_t *h, superblock_t *sb)
{
	if (!lock_held_by_self(&h->lock))
		ph_fail(h, h, "checked without its lock", 0, 0);
	size_t dirty = 0, purged = 0;
	if (sb != NULL && !sb->huge)
		check_superblock(h, sb, &dirty, &purged);
	if (++page_heap_check_calls % PAGE_HEAP_CHECK_EVERY != 0)
		return;
	check_bitmaps(h);
	bool whole = !h->purging;
	size_t usable = 0;
	dirty = purged = 0;
	for (superblock_t *s = h->superblocks; s != NULL; s = s->next) {
		whole &= check_superblock(h, s, &dirty, &purged);
		usable += s->usable_pages;
	}
	if (!whole)
		return; /* runs are out with a pass: the counts are mid-move */
	if (usable != h->central_pages + h->large_pages + dirty + purged)
		ph_fail(h, h, "usable pages != central + large + free runs", usable,
			h->central_pages + h->large_pages + dirty + purged);
	for (superblock_t *c = h->huge_cache; c != NULL; c = c->next) {
		const span_t *s = &c->spans[0];
		if (s->state == SPAN_FREE_PURGED)
			purged += s->npages;
		else if (s->state == SPAN_FREE_DIRTY)
			dirty += s->npages;
		else
			ph_fail(h, c, "cached huge block is not free", s->state, SPAN_FREE_DIRTY);
	}
	if (dirty != h->dirty_pages)
		ph_fail(h, h, "dirty_pages != dirty runs + cached dirty huge blocks", h->dirty_pages, dirty);
	if (purged != h->purged_pages)
		ph_fail(h, h, "purged_pages != purged runs + cached purged huge blocks", h->purged_pages,
			purged);
}

#endif /* EBB_INVARIANTS */
