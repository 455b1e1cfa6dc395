/* page_heap_purge.c: giving memory back. Dirty runs age in each heap's LRU;
 * decay passes purge the oldest (madvise) as the decay curve and the dirty
 * budget ask; purged superblocks give back header pages whose descriptors
 * describe nothing any more; superblocks and cached huge blocks that stay
 * entirely free for unmap_delay_ms are unmapped. Also when a heap next has
 * such work (for the background thread), who decays after a free, and the
 * purge a small heap's climb owes (page_heap.c, resident_climb), made by
 * the allocating thread itself.
 *
 * Locking: a pass (decay or release) takes h->lock, takes the runs it works
 * on out of the lists (BUSY, or unlisted), sets h->purging so that no second
 * pass starts, and makes its system calls with the lock dropped; it puts back
 * what the kernel refused before it clears h->purging. Whoever must see every
 * run waits for that with page_heap_lock_idle. The run lists are page_heap.c's
 * and are used through page_heap.h's "inside the page heap" section. */
#include "core/pages/page_heap.h"
#include "core/pages/span_check.h"

#include <stddef.h>

#include "core/runtime/options.h"
#include "os/os.h"


/* A purge pass takes at most this many pages out at once, so the lock is
 * retaken (and allocating threads get their turn) every 64 MiB. */
#define PURGE_BATCH_PAGES ((size_t)16384)


/* Set once by the process layer at start-up (page_heap_set_dirty_hook); the
 * page heap never calls up into the background thread by name. */
static page_heap_dirty_hook_t page_heap_dirty_hook;

void page_heap_set_dirty_hook(page_heap_dirty_hook_t hook)
{
	__atomic_store_n(&page_heap_dirty_hook, hook, __ATOMIC_RELEASE);
}

/* Per thread: how many holds of page_heap_hold_hook are open. */
static __thread unsigned page_heap_hook_held __attribute__((tls_model("initial-exec")));

void page_heap_hold_hook(bool hold)
{
	if (hold)
		page_heap_hook_held++;
	else
		page_heap_hook_held--;
}

/* Called after a free: with no background thread, decay runs here, at most
 * once per epoch; with one, only a dirty budget overrun wakes it early. */
void page_heap_maybe_decay(page_heap_t *h, uint64_t now)
{
	if (page_heap_hook_held != 0)
		return;
	page_heap_dirty_hook_t hook = __atomic_load_n(&page_heap_dirty_hook, __ATOMIC_ACQUIRE);
	if (hook != NULL && hook(now))
		return;
	long long ms = options_get(OPT_DECAY_MS);
	uint64_t epoch = ms < 0 ? UINT64_MAX : (uint64_t)ms * (1000000ull / EBB_DECAY_EPOCHS);
	uint64_t last = __atomic_load_n(&h->last_decay_ns, __ATOMIC_RELAXED);
	if (util_elapsed(now, last) >= epoch || page_heap_dirty_excess_pages() > 0)
		page_heap_decay(h, now, false);
}

/* Takes up to `want` pages of the oldest dirty runs out as BUSY, linked
 * through `next`; runs_only: a climb's purge (page_heap_purge_owed): no
 * cached huge block, and none freed after `young` (it stops at the first,
 * the LRU being oldest first). Caller holds the lock. */
static span_t *take_oldest(page_heap_t *h, size_t want, size_t *taken, bool runs_only, uint64_t young)
{
	span_t *list = NULL;
	span_t *next = h->lru_tail;
	*taken = 0;
	while (*taken < want && next != NULL) {
		span_t *s = next;
		next = s->u.free.lru_prev;
		if (runs_only && s->huge)
			continue;
		if (runs_only && s->u.free.freed_ns > young)
			break;
		page_heap_run_unlist(h, s);
		page_heap_dirty_add(h, s->npages); /* still resident until madvise returns */
		SPAN_SET_STATE(s, SPAN_BUSY, &h->lock);
		s->next = list;
		list = s;
		*taken += s->npages;
	}
	return list;
}

static void *run_addr(span_t *s)
{
	return span_start(span_superblock(s), s);
}

/* Header pages of sb past the fixed ones (EBB_SB_FIXED_PAGES) that hold
 * descriptors (desc_touched) but none of a span or of a dirty run: only
 * SPAN_NONE ones, and the first descriptors of purged runs as long as sb's
 * table of cold runs (superblock.h) has room for them. What the pages they
 * describe need of them is in the map, in other run heads or in that
 * table. Caller holds the lock; sb has no cold run yet. */
static uint32_t idle_desc_pages(const superblock_t *sb)
{
	const size_t base = offsetof(superblock_t, spans); /* a multiple of 64 */
	uint32_t idle = 0;
	unsigned room = EBB_SB_COLD;
	for (unsigned b = EBB_SB_FIXED_PAGES; b < EBB_SB_HEADER_PAGES; b++) {
		if (!(sb->desc_touched & (1u << b)))
			continue;
		size_t i = (b * EBB_PAGE_SIZE - base) / sizeof(span_t);
		size_t end = ((b + 1) * EBB_PAGE_SIZE - base) / sizeof(span_t);
		if (end > EBB_SB_USABLE_PAGES)
			end = EBB_SB_USABLE_PAGES;
		unsigned heads = 0;
		for (; i < end; i++) {
			uint8_t st = sb->spans[i].state;
			if (st == SPAN_FREE_PURGED && heads < room)
				heads++;
			else if (st != SPAN_NONE)
				break;
		}
		if (i == end) {
			idle |= 1u << b;
			room -= heads;
		}
	}
	return idle;
}

/* The header page of sb that holds the descriptor of page `page`. */
static unsigned desc_page_of(const superblock_t *sb, unsigned page)
{
	(void)sb;
	return (unsigned)((offsetof(superblock_t, spans) + (page - EBB_SB_HEADER_PAGES) * sizeof(span_t)) >>
			  EBB_PAGE_SHIFT);
}

/* trim_descriptors' end when the kernel refused some header pages (idle
 * without them): the cold runs whose descriptor page stayed are runs again,
 * with the descriptor they had (BUSY); the others stay cold, their pages
 * counted purged, in no list. */
static EBB_COLD void trim_refused(page_heap_t *h, superblock_t *sb, uint32_t idle)
{
	unsigned kept = 0;
	uint8_t zeroed = 0;
	for (unsigned i = 0; i < sb->cold_n; i++) {
		unsigned page = sb->cold_page[i];
		if (idle & (1u << desc_page_of(sb, page))) {
			sb->cold_page[kept] = (uint16_t)page;
			sb->cold_npages[kept] = sb->cold_npages[i];
			zeroed |= (uint8_t)(((sb->cold_zeroed >> i) & 1u) << kept);
			h->purged_pages += sb->cold_npages[i];
			kept++;
			continue;
		}
		span_t *s = superblock_span_at(sb, page);
		SPAN_SET_STATE(s, SPAN_FREE_PURGED, &h->lock);
		page_heap_run_list(h, s, NULL);
	}
	sb->cold_n = (uint8_t)kept;
	sb->cold_zeroed = zeroed;
	h->cold_runs += kept;
}

/* Gives back the header pages of sb that describe nothing any more (a burst's
 * spans come and go, and each left its descriptor page resident: 17 pages of
 * a superblock's header, 1.6% of what a burst mapped), and those whose only
 * use left is the first descriptor of a purged run or two (scattered
 * survivors keep a span here and there, and the purged runs between them
 * kept one page of 64 descriptors each: 92 of the 2 900 header pages
 * memreturn d held at idle). Zeroed pages read back as SPAN_NONE
 * descriptors, so a page needed again later simply faults in; a purged run
 * whose descriptor went with its page becomes a cold run (superblock.h),
 * and page_heap_warm writes its descriptor afresh before any use of it.
 *
 * Nobody may write a descriptor on those pages while madvise runs with the
 * lock dropped. The writers are the page heap's own operations on sb:
 * allocation finds no run of sb (all its free runs are taken out, BUSY),
 * free and resize of sb's spans wait for hdr_purging to clear, and decay and
 * release are this pass (h->purging). Span owners write only non-NONE
 * descriptors, which are not on these pages. Only superblocks whose free runs
 * are all purged qualify: dirty runs are purged first, by decay.
 *
 * Nothing reads a cold run's descriptor for what it held: the page heap
 * finds its runs through the lists (a cold run is in none), the boundary
 * tags (a neighbour's free or resize warms sb's cold runs first,
 * lock_acquire_sb) and walks of sb (which warm it, or read the table); a
 * lock-free lookup (free, the block test, of a pointer into a cold run,
 * forged or stale) reads SPAN_NONE there and reports the pointer as not
 * ours, as before its page went.
 * Caller holds the lock and the purging flag. */
static void trim_descriptors(page_heap_t *h, superblock_t *sb)
{
	if (sb->cold_n != 0)
		page_heap_warm(h, sb); /* its runs as runs: the walks below read them */
	uint32_t idle = idle_desc_pages(sb);
	if (idle == 0)
		return;
	unsigned end = (unsigned)sb->first_page + sb->usable_pages;
	for (unsigned page = sb->first_page; page < end;) {
		span_t *s = superblock_span_at(sb, page);
		if (s->state == SPAN_FREE_DIRTY || s->state == SPAN_BUSY)
			return;
		page += s->npages;
	}
	/* The purged runs out as BUSY: those whose descriptor stays on a
	 * resident page linked through `next`, the rest (whose descriptor goes)
	 * in the table of cold runs, which outlives their descriptors. */
	span_t *busy = NULL;
	size_t cold_pages = 0;
	for (unsigned page = sb->first_page; page < end;) {
		span_t *s = superblock_span_at(sb, page);
		page += s->npages;
		if (s->state != SPAN_FREE_PURGED)
			continue;
		page_heap_run_unlist(h, s);
		SPAN_SET_STATE(s, SPAN_BUSY, &h->lock);
		if (idle & (1u << desc_page_of(sb, s->page))) {
			unsigned i = sb->cold_n++;
			sb->cold_page[i] = s->page;
			sb->cold_npages[i] = (uint16_t)s->npages;
			sb->cold_zeroed |= (uint8_t)((s->zeroed & 1u) << i);
			cold_pages += s->npages;
		} else {
			s->next = busy;
			busy = s;
		}
	}
	sb->hdr_purging = 1;
	lock_release(&h->lock);
	bool ok = true;
	size_t calls = 0;
	/* One call a stretch of adjacent idle pages (a bit loop: the page loop
	 * the compiler unrolls over the 17 header pages was 650 bytes of code
	 * in the first text window, layout.ld). */
	for (uint32_t left = idle; left != 0;) {
		unsigned b = (unsigned)__builtin_ctz(left);
		unsigned n = (unsigned)__builtin_ctz(~(left >> b)); /* < 32: bit 31 is no header page */
		uint32_t stretch = ((1u << n) - 1) << b;
		left &= ~stretch;
		calls++;
		if (!os_purge((char *)sb + b * EBB_PAGE_SIZE, n * EBB_PAGE_SIZE, false)) {
			/* Nothing lost: a page madvise refused is still resident and
			 * still counted. */
			idle &= ~stretch;
			ok = false;
		}
	}
	lock_acquire(&h->lock);
	for (span_t *s = busy, *next; s; s = next) {
		next = s->next;
		SPAN_SET_STATE(s, SPAN_FREE_PURGED, &h->lock);
		page_heap_run_list(h, s, NULL);
	}
	/* Every page out: every cold run stays cold, its pages counted purged
	 * (in no list). */
	if (EBB_LIKELY(ok)) {
		h->purged_pages += cold_pages;
		h->cold_runs += sb->cold_n;
	} else {
		trim_refused(h, sb, idle);
	}
	sb->hdr_purging = 0;
	h->madvise_calls += calls;
	sb->desc_touched &= ~idle;
	h->meta_pages -= (size_t)__builtin_popcount(idle);
}

/* Gives back the runs of `list` (BUSY, no lock held) and sets each one's
 * purge_ok. Every run is tried, also after one the kernel refused, as with
 * one call each. Returns the runs asked for (madvise_calls counts runs, as it
 * did with one call each). */
static size_t purge_list(span_t *list, bool lazy)
{
	os_range_t r[OS_PURGE_VEC];
	span_t *in[OS_PURGE_VEC];
	size_t asked = 0;
	span_t *s = list;
	while (s != NULL) {
		size_t n = 0;
		for (; s != NULL && n < OS_PURGE_VEC; s = s->next) {
			s->purge_ok = false;
			in[n] = s;
			r[n].p = run_addr(s);
			r[n].size = (size_t)s->npages << EBB_PAGE_SHIFT;
			n++;
		}
		asked += n;
		for (size_t at = 0; at < n;) {
			size_t ok = os_purge_vec(r + at, n - at, lazy);
			for (size_t i = at; i < at + ok; i++)
				in[i]->purge_ok = true;
			at += ok + 1; /* past the refused one, if any */
		}
	}
	return asked;
}

static size_t purge_oldest(page_heap_t *h, size_t want, uint64_t now, bool runs_only);

/* hold_pages: 0, or the burst hold's cap (page_heap_decay_held). Inlined
 * into both: page_heap_decay keeps its place in the first text window
 * (layout.ld). */
EBB_INLINE size_t decay_pass(page_heap_t *h, uint64_t now, bool all, size_t hold_pages)
{
	if (all)
		page_heap_lock_idle(h);
	else
		lock_acquire(&h->lock);
	__atomic_store_n(&h->last_decay_ns, now, __ATOMIC_RELAXED);
	/* The swing's and the loop's windows are idle time too (decay.h). */
	page_heap_inuse_window(decay_clock_now(now));
	if (h->purging) {
		lock_release(&h->lock);
		return 0;
	}
	size_t want = all ? h->dirty_pages : decay_pages_to_purge(&h->decay, now, h->dirty_pages);
	/* Idle means idle: while the program swings below a peak it reached
	 * within decay_ms, the dirty pages that make up the swing are what its
	 * next turn asks for, however long ago each was freed. A program that
	 * stops has no swing after at most one decay_ms, and the curve (whose
	 * backlog has aged meanwhile) then purges them. And while it loops over
	 * its pool (page_heap_looping), none of the pool is idle: the curve
	 * waits until the loop stops, the dirty budget still holds. */
	if (!all && want > 0 && page_heap_looping())
		want = 0;
	if (!all && want > 0) {
		size_t swing = page_heap_swing_pages(), dirty = page_heap_dirty_total();
		size_t above = dirty > swing ? dirty - swing : 0;
		if (want > above)
			want = above;
	}
	size_t excess = page_heap_dirty_excess_pages();
	if (excess > want)
		want = excess < h->dirty_pages ? excess : h->dirty_pages;
	/* A burst of frees goes on (decay.h, "The burst hold"): only what lies
	 * above the hold's cap, the oldest first as always. */
	if (hold_pages != 0 && want > 0) {
		size_t dirty = page_heap_dirty_total();
		size_t over = dirty > hold_pages ? dirty - hold_pages : 0;
		if (want > over)
			want = over;
	}
	if (want == 0) {
		lock_release(&h->lock);
		return 0;
	}
	/* Pending spans count in dirty_pages but are the newest: only a purge
	 * that reaches past the listed runs needs them listed. */
	if (want > h->dirty_pages - h->pending_pages)
		page_heap_pending_drain(h, h->dirty_pages - want);
	return purge_oldest(h, want, now, false);
}

size_t page_heap_decay(page_heap_t *h, uint64_t now, bool all)
{
	return decay_pass(h, now, all, 0);
}

size_t page_heap_decay_held(page_heap_t *h, uint64_t now, size_t hold_pages)
{
	return decay_pass(h, now, false, hold_pages != 0 ? hold_pages : 1);
}

/* The kernel refused to purge run s (BUSY, h->lock held): its pages stay
 * resident and it is listed dirty again, with its age. */
static EBB_COLD void purge_refused(page_heap_t *h, superblock_t *sb, span_t *s)
{
	SPAN_SET_STATE(s, SPAN_FREE_DIRTY, &h->lock);
	if (s->huge)
		page_heap_run_list(h, s, h->lru_tail);
	else
		page_heap_run_free_coalesced(h, sb, s->page, s->npages, SPAN_FREE_DIRTY, 0, s->u.free.freed_ns);
}

/* Purges up to `want` pages of h's oldest dirty runs. Caller holds the lock,
 * and no pass of h runs; the lock is released on return. Returns the pages
 * purged. */
static size_t purge_oldest(page_heap_t *h, size_t want, uint64_t now, bool runs_only)
{
	h->purging = true;
	lock_depth_enter(); /* the pass is a lock this thread holds (core/api/fork.c) */
	bool lazy = options_get(OPT_PURGE) == 1;
	size_t done = 0;
	bool failed = false;
	/* Where purged runs landed, for trim_descriptors: every such superblock,
	 * however many (a burst's purge reaches thousands of them). */
	superblock_t *touched = NULL;
	while (done < want && !failed) {
		size_t batch = want - done < PURGE_BATCH_PAGES ? want - done : PURGE_BATCH_PAGES;
		size_t taken;
		span_t *list = take_oldest(h, batch, &taken, runs_only, now > PAGE_HEAP_OWED_MIN_AGE_NS ? now - PAGE_HEAP_OWED_MIN_AGE_NS : 0);
		if (list == NULL)
			break;
		lock_release(&h->lock);
		/* No lock held: allocating threads never wait for the kernel. */
		size_t calls = purge_list(list, lazy);
		lock_acquire(&h->lock);
		h->madvise_calls += calls;
		size_t purged = 0;
		for (span_t *s = list, *next; s; s = next) {
			next = s->next;
			superblock_t *sb = span_superblock(s);
			page_heap_check_locked(h, sb, s->huge);
			page_heap_dirty_sub(h, s->npages);
			if (s->purge_ok) {
				purged += s->npages;
				if (s->huge) {
					SPAN_SET_STATE(s, SPAN_FREE_PURGED, &h->lock);
					s->zeroed = !lazy;
					page_heap_run_list(h, s, NULL);
				} else {
					page_heap_run_free_coalesced(h, sb, s->page, s->npages, SPAN_FREE_PURGED, !lazy, now);
					if (!sb->trim_queued && sb->desc_touched != EBB_SB_FIXED_MASK) {
						sb->trim_queued = 1;
						sb->trim_next = touched;
						touched = sb;
					}
				}
			} else {
				purge_refused(h, sb, s);
				failed = true; /* this pass stops */
			}
		}
		decay_note_removed(&h->decay, purged);
		h->bytes_purged += (uint64_t)purged << EBB_PAGE_SHIFT;
		if (purged)
			h->purges++;
		done += purged;
	}
	/* No superblock of the list can be unmapped meanwhile: unmapping is a
	 * pass of its own, excluded by h->purging. */
	for (superblock_t *sb = touched, *next; sb; sb = next) {
		next = sb->trim_next;
		sb->trim_queued = 0;
		trim_descriptors(h, sb);
	}
	h->purging = false;
	lock_depth_leave();
	lock_release(&h->lock);
	page_heap_owed_sub(done);
	return done;
}

void page_heap_purge_owed(page_heap_t *h, uint64_t now)
{
	unsigned n = page_heap_count(), tried = 0;
	bool table = false;
	for (unsigned i = 0; i < n; i++)
		table |= page_heap_peek(i) == h;
	for (;;) {
		size_t owed = page_heap_owed_pages();
		if (owed == 0)
			return;
		lock_acquire(&h->lock);
		page_heap_pending_drain(h, 0); /* the oldest dirty runs are the LRU's */
		size_t want = owed < h->dirty_pages ? owed : h->dirty_pages;
		if (h->purging || want == 0)
			lock_release(&h->lock);
		else
			purge_oldest(h, want, now, true);
		unsigned i = h->index;
		do {
			if (!table || ++tried >= n)
				return;
			i = (i + 1) % n;
			h = page_heap_peek(i); /* NULL: never used, nothing dirty */
		} while (h == NULL);
	}
}

size_t page_heap_sb_unlist_runs(page_heap_t *h, superblock_t *sb)
{
	size_t dirty = 0;
	unsigned end = (unsigned)sb->first_page + sb->usable_pages;
	for (unsigned page = sb->first_page; page < end;) {
		span_t *s = superblock_span_at(sb, page);
		if (s->state == SPAN_FREE_DIRTY) {
			decay_note_removed(&h->decay, s->npages);
			dirty += s->npages;
		}
		page_heap_run_unlist(h, s);
		SPAN_SET_STATE(s, SPAN_NONE, &h->lock);
		page += s->npages;
	}
	return dirty;
}

/* Takes sb, an entirely free superblock of h's list whose time is up, out
 * of the list onto *victims, its runs out of the lists (h->lock held). Out
 * of page_heap_release's loop, as the victims' loop below: a pass that
 * unmaps is rare, and a pass that does not stays in the first text window
 * (layout.ld). */
static EBB_COLD void release_take(page_heap_t *h, superblock_t *sb, superblock_t **victims)
{
	/* Its free runs are unlisted below: a pending one must be listed, a
	 * cold one too (none is: the free that emptied sb warmed them). */
	page_heap_pending_drain(h, 0);
	if (sb->cold_n != 0)
		page_heap_warm(h, sb);
	page_heap_sb_unlink(&h->superblocks, sb);
	/* A free run is dirty or purged: none dirty, nothing resident. */
	sb->all_purged = page_heap_sb_unlist_runs(h, sb) == 0;
	h->superblocks_count--;
	sb->next = *victims;
	*victims = sb;
}

/* As release_take, for sb of h's cache of huge blocks. */
static EBB_COLD void release_take_huge(page_heap_t *h, superblock_t *sb, superblock_t **victims)
{
	if (sb->spans[0].state == SPAN_FREE_DIRTY)
		decay_note_removed(&h->decay, sb->spans[0].npages);
	sb->all_purged = sb->spans[0].state == SPAN_FREE_PURGED;
	page_heap_run_unlist(h, &sb->spans[0]);
	h->huge_count--;
	sb->next = *victims;
	*victims = sb;
}

/* Unmaps the superblocks of `victims` (no lock held); one that munmap
 * refuses is kept, as one free run. Returns how many went, and in
 * *huge_released how many of them were huge blocks. */
static EBB_COLD size_t release_victims(page_heap_t *h, superblock_t *victims, uint64_t now,
				       size_t *huge_released)
{
	size_t released = 0;
	for (superblock_t *sb = victims, *next; sb; sb = next) {
		next = sb->next;
		size_t meta = (size_t)__builtin_popcount(sb->desc_touched);
		bool huge = sb->huge, purged = sb->all_purged;
		if (superblock_destroy(sb)) {
			released++;
			*huge_released += huge;
			lock_acquire(&h->lock);
			h->meta_pages -= meta;
			lock_release(&h->lock);
			continue;
		}
		/* munmap failed: keep the superblock, as one free run. */
		lock_acquire(&h->lock);
		if (huge) {
			span_t *s = &sb->spans[0];
			SPAN_SET_STATE(s, purged ? SPAN_FREE_PURGED : SPAN_FREE_DIRTY, &h->lock);
			s->u.free.freed_ns = now;
			page_heap_run_list(h, s, NULL);
			h->huge_count++;
		} else {
			page_heap_sb_push(&h->superblocks, sb);
			h->superblocks_count++;
			page_heap_run_free_coalesced(h, sb, sb->first_page, sb->usable_pages,
						     purged ? SPAN_FREE_PURGED : SPAN_FREE_DIRTY, 0, now);
		}
		lock_release(&h->lock);
	}
	return released;
}

/* sb, entirely free, holds no page but its fixed header pages: its one run
 * is purged. (A purged run that covers sb has its descriptor on a fixed
 * page, so it is never cold; cold_n is looked at all the same.) */
static bool sb_purged_whole(superblock_t *sb)
{
	const span_t *s = superblock_span_at(sb, sb->first_page);
	return sb->cold_n == 0 && s->state == SPAN_FREE_PURGED && s->npages == sb->usable_pages;
}

/* purged: page_heap_release_purged. Inlined into both: page_heap_release
 * keeps its code and its place in the first text window (layout.ld). */
EBB_INLINE size_t release_pass(page_heap_t *h, uint64_t now, bool all, bool purged)
{
	uint64_t delay = (uint64_t)options_get(OPT_UNMAP_DELAY_MS) * 1000000ull;
	superblock_t *victims = NULL;
	if (all)
		page_heap_lock_idle(h);
	else
		lock_acquire(&h->lock);
	if (h->purging) {
		lock_release(&h->lock);
		return 0;
	}
	h->purging = true;
	lock_depth_enter(); /* the pass is a lock this thread holds (core/api/fork.c) */
	for (superblock_t *sb = h->superblocks, *next; sb; sb = next) {
		page_heap_check_listed(h, sb, false);
		next = sb->next;
		if (sb->free_pages == sb->usable_pages && sb->empty_since_ns != 0 &&
		    (all || util_elapsed(now, sb->empty_since_ns) >= delay || (purged && sb_purged_whole(sb))))
			release_take(h, sb, &victims);
	}
	for (superblock_t *sb = purged ? NULL : h->huge_cache, *next; sb; sb = next) {
		page_heap_check_listed(h, sb, true);
		next = sb->next;
		if (all || util_elapsed(now, sb->empty_since_ns) >= delay)
			release_take_huge(h, sb, &victims);
	}
	lock_release(&h->lock);

	size_t released = 0, huge_released = 0;
	if (victims != NULL)
		released = release_victims(h, victims, now, &huge_released);
	lock_acquire(&h->lock);
	h->purging = false;
	bool huge_idle = h->huge_count == 0;
	lock_depth_leave();
	lock_release(&h->lock);
	/* The spare header slots of huge blocks (superblock.c) serve huge
	 * blocks mapped soon after others went; once this heap has released
	 * its cached huge blocks by age (or a trim asked for all), no huge
	 * block is coming soon, and the spares' address space and header
	 * pages go too. */
	if (all || (huge_idle && huge_released > 0))
		huge_spare_drain();
	return released;
}

size_t page_heap_release(page_heap_t *h, uint64_t now, bool all)
{
	return release_pass(h, now, all, false);
}

size_t page_heap_release_purged(page_heap_t *h, uint64_t now)
{
	return release_pass(h, now, false, true);
}

uint64_t page_heap_next_due(page_heap_t *h, uint64_t now)
{
	uint64_t due = UINT64_MAX;
	uint64_t delay = (uint64_t)options_get(OPT_UNMAP_DELAY_MS) * 1000000ull;
	lock_acquire(&h->lock);
	due = decay_next_due(&h->decay, now, h->dirty_pages);
	for (superblock_t *sb = h->superblocks; sb; sb = sb->next) {
		page_heap_check_listed(h, sb, false);
		if (sb->free_pages == sb->usable_pages && sb->empty_since_ns) {
			uint64_t at = sb->empty_since_ns + delay;
			uint64_t d = at > now ? at - now : 0;
			if (d < due)
				due = d;
		}
	}
	for (superblock_t *sb = h->huge_cache; sb; sb = sb->next) {
		page_heap_check_listed(h, sb, true);
		uint64_t at = sb->empty_since_ns + delay;
		uint64_t d = at > now ? at - now : 0;
		if (d < due)
			due = d;
	}
	lock_release(&h->lock);
	return due;
}
