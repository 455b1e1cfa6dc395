/* page_heap.h: page runs inside superblocks: hand them out, take them back
 * and coalesce them, give idle ones back to the kernel.
 *
 * There is one page heap per CPU (up to EBB_MAX_HEAPS; CPUs beyond share),
 * set up when a thread on that CPU first needs pages.
 * A superblock belongs to one heap for its whole life, so a freed span always
 * goes back to the heap it came from; spans for small blocks and large blocks
 * are taken from the heap of the CPU the thread runs on, so on 64 cores the
 * page heap locks are as spread out as the central lists above them.
 *
 * Free runs are of two kinds that never merge with each other:
 *   dirty   freed, still resident; kept in a size list and in the LRU
 *           (newest first) that decay purges from the oldest end;
 *   purged  given back with madvise (or fresh from mmap): no RAM.
 * Allocation takes the smallest run that fits, dirty before purged, the most
 * recently freed first (LIFO per size), from the end of the run so that the
 * rest keeps its descriptor and its place in the LRU.
 *
 * Coalescing is O(1): a free run's first and last pmap entries name its
 * first page (boundary tags), so a freed span looks at the descriptor just
 * left and just right of it.
 *
 * Locking: `lock` protects every field below and the descriptors of free
 * runs. No system call is ever made while it is held: new superblocks are
 * mapped, runs purged and superblocks unmapped with the lock dropped, the
 * runs involved marked BUSY (or unlisted) meanwhile. Only one purge or release
 * pass per heap runs at a time (`purging`).
 *
 * Identity per heap, in pages, at any moment the lock is free:
 *   superblocks * usable pages == central + large + dirty + purged
 * (huge blocks: huge + their cached dirty/purged pages). */
#ifndef EBB_CORE_PAGE_HEAP_H
#define EBB_CORE_PAGE_HEAP_H

#include "core/runtime/atomic.h"
#include "core/base/config.h"
#include "core/pages/decay.h"
#include "core/pages/span.h"
#include "core/pages/superblock.h"

EBB_BEGIN_DECLS

enum { RUN_DIRTY = 0, RUN_PURGED = 1 };

#define EBB_RUN_LISTS (EBB_SB_PAGES + 1)
#define EBB_RUN_WORDS ((EBB_RUN_LISTS + 63) / 64)

/* The ~16 KiB of list heads come last, in the order page_heap_run_slot
 * gives: the heap's first page holds, after its other fields, the heads of
 * the longest runs' lists (a fresh superblock's run as it is split) and of
 * the shortest (the spans of small blocks, freed and merged): the two that a
 * small process uses, so that its heap stays on one page (issue 14: the
 * short runs' heads were 16 KiB further on, a second page per heap in
 * use). Mid-sized runs' heads are a page or more further on. */
typedef struct page_heap {
	ebb_lock_t lock;
	unsigned index;
	bool purging;                              /* a purge/release pass has runs out */
	uint64_t nonempty[2][EBB_RUN_WORDS];       /* bit i: runs[k][i] is not empty */
	uint64_t nonempty_words[2];                /* bit w: nonempty[k][w] != 0 */
	span_t *lru_head, *lru_tail;               /* dirty runs, newest at the head */
	span_t *pending;                           /* CENTRAL spans freed, not yet merged (page_heap.c) */
	size_t pending_pages;                      /* their pages (of dirty_pages) */
	superblock_t *superblocks;                 /* normal superblocks of this heap */
	superblock_t *huge_cache;                  /* freed huge blocks kept for reuse */
	decay_t decay;
	uint64_t last_decay_ns;
	/* page counts (identity above) */
	size_t central_pages, large_pages, huge_pages, dirty_pages, purged_pages;
	size_t huge_slack_pages;  /* pages of live huge blocks beyond what was asked */
	size_t meta_pages;        /* header pages touched (resident metadata) */
	size_t cold_runs;         /* cold runs in its superblocks (superblock.h) */
	size_t superblocks_count, huge_count, huge_cached;
	size_t huge_live;         /* huge blocks the program holds (mallinfo's hblks) */
	/* counters */
	uint64_t purges, madvise_calls, bytes_purged, large_allocs;
	span_t *runs[EBB_SB_PAGES][2];             /* free runs, [page_heap_run_slot(page count)][kind] */
} EBB_ALIGNED(EBB_CACHELINE) page_heap_t;

/* The list heads that fit the heap's first page after its other fields
 * (210 with the fields as they are): those of runs of 1 .. EBB_RUN_FIRST_SHORT
 * pages (freed spans of small blocks, merged, and large blocks up to
 * 256 KiB), the rest for the longest (146: a fresh superblock's purged run
 * relisted as its tail is cut, alloc_grow_tail, until the process has grown
 * by some 580 KiB). Measured with 105 of each: request t=1's tail reached
 * 919 pages, a second page. */
#define EBB_RUN_FIRST_SLOTS ((EBB_PAGE_SIZE - offsetof(page_heap_t, runs)) / sizeof(((page_heap_t *)0)->runs[0]))
#define EBB_RUN_FIRST_SHORT 64u

/* The slot in runs of list index i (1 .. EBB_SB_PAGES; no run has 0 pages):
 * i = EBB_RUN_FIRST_SHORT .. 1 at slots 0 .. EBB_RUN_FIRST_SHORT - 1, then
 * i = EBB_SB_PAGES downwards, so that both ends of the page counts share
 * the first page (the order above). One bijection onto 0 .. EBB_SB_PAGES - 1
 * with one instruction more than the reversed index it replaces. */
EBB_INLINE unsigned page_heap_run_slot(unsigned i)
{
	return (EBB_RUN_FIRST_SHORT - i) & (EBB_SB_PAGES - 1);
}

typedef struct page_heap_stats {
	uint64_t central_pages, large_pages, huge_pages, huge_slack_pages, dirty_pages,
		purged_pages, meta_pages;
	uint64_t huge_blocks; /* huge blocks the program holds */
	uint64_t purges, madvise_calls, bytes_purged, large_allocs;
} page_heap_stats_t;

/* ---- set-up ------------------------------------------------------------
 * The table's heaps are set up at their first use: page_heap_get (and so
 * page_heap_for_cpu) sets heap `index` up if it is not yet, an acquire load
 * and a branch otherwise; page_heap_peek is for passes over every heap,
 * which skip (NULL) those never used: they hold nothing. Any thread. */
/* Sizes the table (once, at start-up); sets up no heap. */
void page_heap_init_all(void);
/* Sets up one heap outside the table (tests make their own). */
void page_heap_init(page_heap_t *h, unsigned index, uint64_t now);
/* The CPUs' heaps (page_heap_for_cpu's); page_heap_count_all counts the
 * profiler's too, last (index page_heap_count()): passes over every heap
 * (decay, purge, release) go up to that. */
unsigned page_heap_count(void);
unsigned page_heap_count_all(void);
/* The heap profiler's own heap (set up at its first use): its sample runs
 * of small blocks come from there, so that the CPUs' heaps hold what they
 * would with prof=0 (docs/profiler-overhead.md). Superblocks of its own,
 * never taken from or lent to another heap. */
page_heap_t *page_heap_prof(void);
page_heap_t *page_heap_get(unsigned index);
page_heap_t *page_heap_peek(unsigned index);
/* Waits for a set-up under way: each set-up then either happened before
 * (its heap is seen ready by the caller's next peeks) or happens after
 * whatever the caller did before this call. */
void page_heap_setup_fence(void);
EBB_INLINE page_heap_t *page_heap_for_cpu(unsigned cpu)
{
	return page_heap_get(cpu % page_heap_count());
}

/* ---- spans (any thread; each takes the heap's lock) -------------------- */

/* A span of npages pages whose first byte is aligned to align_pages pages (a
 * power of two), in state CENTRAL or LARGE. Its descriptor fields state,
 * npages, page and zeroed are set (zeroed: its pages read as zero; for a
 * CENTRAL span 1 + the first page from which on they do, 0 if none), and
 * its pmap tags (first and last page, class 0);
 * the caller fills every pmap entry (superblock_map_span) before publishing it.
 * NULL with errno ENOMEM if no superblock could be mapped. */
span_t *page_heap_alloc(page_heap_t *h, size_t npages, size_t align_pages, uint8_t state);
/* page_heap_alloc of a CENTRAL span of npages (alignment 1), but while the
 * program grows (the request would be cut from the tail of a purged run) up
 * to n such spans cut at once, under one hold of the lock: the one returned
 * is the highest, the others linked from its `next` (NULL if none) from the
 * highest down, each as page_heap_alloc hands one out, all counted in use,
 * none of their pages touched. NULL with errno ENOMEM if no span could be
 * had. */
span_t *page_heap_alloc_n(page_heap_t *h, size_t npages, unsigned n);
/* Takes back a CENTRAL span (its pmap classes already cleared by the caller) or a
 * LARGE span: it becomes a dirty run, merged with dirty neighbours. */
void page_heap_free(span_t *s);
/* page_heap_free of a CENTRAL span (at most 64 pages) some of whose pages
 * the central layer gave back (bit i of `gone`: page i of s): those go back
 * as purged runs, the others as dirty ones, so that the resident count
 * stays true and decay does not give them back a second time. The purged
 * runs read as zero where every page of theirs is in `zero` (a subset of
 * gone), else not (a later carve or calloc writes them whole). The caller
 * vouches for both: no page of `gone` was written since it was given back
 * (madvise) or mapped, and no page of `zero` was written, or handed to the
 * program, since it last read as zero. */
void page_heap_free_given_back(span_t *s, uint64_t gone, uint64_t zero);
/* page_heap_free of each CENTRAL span of `list` (linked through `next`; no
 * page given back, pmap classes cleared), in list order, as one call: the
 * spans a flush emptied. */
void page_heap_free_spans(span_t *list);
/* Resizes a LARGE span in place: shrinking always works; growing works when
 * the run right of it is free and large enough. */
bool page_heap_resize(span_t *s, size_t new_npages);

/* Huge blocks (more pages than a superblock has): a cached one of a fitting
 * size, or a new mapping. NULL with ENOMEM. */
span_t *page_heap_huge_alloc(page_heap_t *h, size_t npages, size_t align, size_t asked_pages);
void page_heap_huge_free(span_t *s);
/* realloc of a huge block: in place or moved by the kernel (no copy). */
span_t *page_heap_huge_resize(span_t *s, size_t npages);

/* ---- giving memory back ------------------------------------------------ */

/* Purges what decay and the dirty budget ask for now (all: every dirty run).
 * Returns the pages purged. */
size_t page_heap_decay(page_heap_t *h, uint64_t now, bool all);
/* The background thread's pass while a burst of frees goes on (decay.h,
 * "The burst hold"): page_heap_decay(h, now, false) that purges only what
 * the dirty pages of all heaps hold above hold_pages. Never for ebb_trim,
 * nor for the decay a free runs in line. */
size_t page_heap_decay_held(page_heap_t *h, uint64_t now, size_t hold_pages);
/* Pages handed out as spans, of every heap (relaxed). */
size_t page_heap_inuse_total(void);
/* Unmaps superblocks and cached huge blocks that have been entirely free for
 * unmap_delay_ms (all: every such one now). Returns how many. */
size_t page_heap_release(page_heap_t *h, uint64_t now, bool all);
/* Unmaps now, whatever unmap_delay_ms says, the entirely free superblocks
 * whose pages are all purged (one purged run: only the two fixed header
 * pages stay resident). For the end of a burst of frees (background.c):
 * the delay keeps a superblock whose dirty pages a program may come back
 * for, and these have none; mapping one again costs an mmap and its two
 * header pages' faults, against the 1007 faults its purged pages cost
 * anyway. Cached huge blocks keep their own rule. Returns how many. */
size_t page_heap_release_purged(page_heap_t *h, uint64_t now);
/* ns from now until this heap has decay or release work, UINT64_MAX if none. */
uint64_t page_heap_next_due(page_heap_t *h, uint64_t now);
/* Re-reads decay_ms for every heap. */
void page_heap_decay_interval_changed(uint64_t now);

/* Who decays dirty pages after a free. The process layer above registers its
 * background thread's hook at start-up; it gets the caller's clock reading
 * (os_now_ns, taken for the free), so that it need not read the clock
 * again. The hook returns true when a
 * background thread runs and will decay (it wakes it early if the dirty
 * budget is overrun), false when the freeing thread must decay in line. No
 * hook (before start-up ends): in line. Any thread; set once. */
typedef bool (*page_heap_dirty_hook_t)(uint64_t now);
void page_heap_set_dirty_hook(page_heap_dirty_hook_t hook);
/* Holds (hold true) or lets go the calling thread's frees' call of the hook,
 * nested. While held, a free into a page heap on this thread calls no hook
 * and decays nothing in line: the caller is inside work that an allocation
 * on this thread would find half done (central_refill with the caller's bin
 * half filled), and the hook may start the background thread, whose
 * pthread_create allocates on the calling thread (glibc: the new thread's
 * DTV). The next free without the hold, or a slow path's start, does what
 * was skipped. */
void page_heap_hold_hook(bool hold);

/* Dirty pages of all heaps together, and pages in use by spans (the base of
 * a percentage dirty budget); relaxed atomics. */
size_t page_heap_dirty_total(void);
size_t page_heap_dirty_excess_pages(void);
/* Pages of large blocks the program has in use now fewer than at its peak
 * of the last half to whole decay_ms, when that is at most as many as it
 * still uses (a larger drop ends a burst) or it loops (page_heap_looping):
 * what a loop that swings comes back for. Neither the dirty budget (excess above) nor the decay
 * curve purges dirty pages below it (page_heap_purge.c). */
size_t page_heap_swing_pages(void);
/* Dirty pages that large and huge blocks were made of over the current or
 * the last half decay_ms, whichever is more: part of the dirty budget. */
size_t page_heap_reuse_pages(void);
/* Whether large and huge blocks asked, over the current or the last half
 * decay_ms, for at least an eighth of the dirty pages there are now (each
 * request counted up to the dirty pages there were when it came): a loop
 * going through its pool, none of which the decay curve purges then (the
 * dirty budget still applies), and whose swing counts whatever its size.
 * Relaxed atomics; any thread. */
bool page_heap_looping(void);
/* Dirty pages owed to a purge because a large block's fresh pages would have
 * lifted the pages held resident above their peak while they waited
 * (page_heap.c, resident_climb); the allocating thread purges them before
 * it touches the fresh pages, and any purge pays them off. Relaxed atomics;
 * any thread. */
size_t page_heap_owed_pages(void);
/* Whether no heap has dirty pages in runs (pending spans included) that
 * could serve a span of npages: the program grows, and a span comes from
 * purged pages whatever asks for it. A hint: relaxed atomics, no lock; any
 * thread. */
bool page_heap_growing(size_t npages);
/* Whether the pages in use (spans and large blocks) are now at most an
 * eighth of the most the heaps ever held resident at once (that mark: in use
 * plus dirty), with dirty runs to give back: the program has let go of
 * nearly everything it used. Relaxed atomics; any thread. */
bool page_heap_wound_down(void);
/* Forgets the mark those climbs are measured from and what is owed, as in a
 * new process (unit tests, which run many heaps in one process). */
void page_heap_climb_reset(void);
/* Starts a new half-decay_ms window of that peak and of the counts behind
 * the two above once the last one is over. Decay passes call it; any
 * thread. */
void page_heap_inuse_window(uint64_t now);

/* ---- stats and fork ---------------------------------------------------- */
void page_heap_stats_add(page_heap_stats_t *acc);
void page_heap_prefork(void);
void page_heap_postfork_parent(void);
void page_heap_postfork_child(void);

/* The invariant checker of the EBB_INVARIANTS build (page_heap_check.c). */
#if EBB_INVARIANTS
/* Caller holds h's lock. Checks superblock sb (if not NULL) every time, and
 * the whole heap every PAGE_HEAP_CHECK_EVERY calls (per thread). Aborts with
 * a report on the first identity that fails. */
void page_heap_check(page_heap_t *h, superblock_t *sb);
#define PAGE_HEAP_CHECK(h, sb) page_heap_check((h), (sb))
#else
#define PAGE_HEAP_CHECK(h, sb) ((void)0)
#endif

/* ---- inside the page heap ----------------------------------------------
 * For page_heap.c, page_heap_purge.c and huge.c only, which are one module
 * in three files; nothing else calls these. Unless a line says otherwise,
 * the caller holds h->lock. */

/* Puts sb first on the doubly linked list whose first element is *head (the
 * heap's superblocks, or its cache of huge blocks). */
EBB_INLINE void page_heap_sb_push(superblock_t **head, superblock_t *sb)
{
	sb->prev = NULL;
	sb->next = *head;
	if (sb->next)
		sb->next->prev = sb;
	*head = sb;
}

/* Takes sb off the list whose first element is *head. */
EBB_INLINE void page_heap_sb_unlink(superblock_t **head, superblock_t *sb)
{
	if (sb->prev)
		sb->prev->next = sb->next;
	else
		*head = sb->next;
	if (sb->next)
		sb->next->prev = sb->prev;
}

/* Makes sb's cold runs (superblock.h) runs again: descriptors written
 * fresh, merged with free neighbours, listed. sb's hdr_purging is clear. */
void page_heap_warm(page_heap_t *h, superblock_t *sb);

/* The owner of sb once its header is checked (superblock_check, then the
 * owner pointer against the heaps we know); aborts on a forged one. No lock. */
page_heap_t *page_heap_owner(superblock_t *sb, bool huge);
/* sb reached from h's own structures: also owned by h, fields in range. */
void page_heap_check_locked(page_heap_t *h, superblock_t *sb, bool huge);
/* sb is on one of h's superblock lists: its links too name our superblocks. */
void page_heap_check_listed(page_heap_t *h, superblock_t *sb, bool huge);
/* A free run out of its list (and the LRU) / into them (dirty runs after
 * lru_pos, NULL: as the newest), the page counts of its kind kept in step. */
void page_heap_run_unlist(page_heap_t *h, span_t *s);
void page_heap_run_list(page_heap_t *h, span_t *s, span_t *lru_pos);
/* Takes every run of sb, entirely free, out of h's lists (h->lock held;
 * its runs become NONE). Returns how many of its pages were dirty. */
size_t page_heap_sb_unlist_runs(page_heap_t *h, superblock_t *sb);
/* Makes [page, page+n) of sb a free run of `state`, merged with free
 * neighbours of the same state, and lists it. */
void page_heap_run_free_coalesced(page_heap_t *h, superblock_t *sb, unsigned page, size_t n,
				  uint8_t state, uint8_t zeroed, uint64_t now);
/* Dirty pages of h and of all heaps together. */
void page_heap_dirty_add(page_heap_t *h, size_t pages);
void page_heap_dirty_sub(page_heap_t *h, size_t pages);
/* Dirty pages a large or huge block was made of (page_heap_reuse_pages).
 * Relaxed atomic; no lock needed. */
void page_heap_reuse_add(size_t pages);
/* A request for a large or huge block of `pages` (or for that many more by
 * a resize), before it is served (page_heap_looping). */
void page_heap_asked_add(size_t pages);
/* Pages handed out, all heaps (relaxed atomic; no lock needed). */
void page_heap_inuse_add(size_t pages);
void page_heap_inuse_sub(size_t pages);
/* page_heap_inuse_add without the peak: a sample run of the profiler's
 * heap is left out of the pages in use (large_alloc_aside takes its pages
 * back out as it is made, prof.c puts them back just before it is freed
 * or stops being a sample), as the small block it stands for is in a span
 * counted already; counted, the CPUs' heaps owed purges at other moments
 * than with prof=0, and their later blocks went elsewhere. */
void page_heap_inuse_recount(size_t pages);
/* A new superblock for h (lock not held). Its usable pages are, when a
 * dirty block of at least 4 MiB waits in cache's huge cache, that block's
 * last 4 MiB moved in by the kernel (*dirty set, *freed_ns when they were
 * freed): resident pages the program just gave back serve the small blocks
 * it asks for now. Otherwise fresh (superblock_create). huge.c. */
superblock_t *page_heap_huge_carve(page_heap_t *h, page_heap_t *cache, bool *dirty, uint64_t *freed_ns);
/* A dirty run is pending (on h->pending, in no list, merged with nothing)
 * while its LRU links point at itself. */
EBB_INLINE bool page_heap_run_pending(const span_t *s)
{
	return s->state == SPAN_FREE_DIRTY && s->u.free.lru_prev == s;
}
/* Merges and lists pending spans of h, oldest first, until at most `keep`
 * pages are pending: with 0, before anything looks at h's runs. */
void page_heap_pending_drain(page_heap_t *h, size_t keep);
/* Takes h->lock (not held before) once no purge or release pass has runs out. */
void page_heap_lock_idle(page_heap_t *h);
/* After a free, lock not held: decays here unless the dirty hook says a
 * background thread will (page_heap_purge.c). */
void page_heap_maybe_decay(page_heap_t *h, uint64_t now);
/* The youngest a dirty run may be for a climb's purge to take it
 * (page_heap_purge_owed, page_heap_purge.c): a run freed this recently is what a program that
 * cycles through its blocks asks for next, and purging it only trades it
 * for a page fault at its reuse, which then takes fresh pages and owes the
 * next purge. Measured: bench/realloc string (strings crossing into page
 * runs, 64 at once) purged 1 200 pages a run for its climbs, all from runs
 * 0.1-7 ms old (median 0.6), and faulted them back: 2 500 faults, 1 250
 * without these purges, at the same peak RSS. initdb's owed runs were
 * 0.1-52 ms old (median 6); at 1 and 5 ms its peak stayed within its run
 * to run spread (53.6-53.8 MiB medians of 3, 53.8 with every run owed). */
#define PAGE_HEAP_OWED_MIN_AGE_NS (5ull * 1000000ull)

/* Frees LARGE span s (not huge) like page_heap_free, except that a block of
 * at least PAGE_HEAP_PROMPT_PAGES pages goes back to the kernel in its free,
 * as a purged run, while the heaps are small (their mark below the dirty
 * budget of an empty heap) and the program is not cycling through such
 * blocks (its requests of that size over the current or last half decay_ms
 * at most the pages in use). Why (initdb's peak), and what a loop costs, at
 * page_heap.c's prompt_purge. */
#define PAGE_HEAP_PROMPT_PAGES 128
void page_heap_free_large(span_t *s);

/* Lock not held: purges the owed pages (page_heap_owed_pages), the oldest
 * dirty runs of h first, then of the other heaps of the table; a heap whose
 * pass is running is skipped (its pass, or the next, pays), and so is a run
 * freed a few ms ago (PAGE_HEAP_OWED_MIN_AGE_NS): its pages stay
 * owed until a later climb's purge finds it old, or its reuse makes them
 * no longer dirty. */
void page_heap_purge_owed(page_heap_t *h, uint64_t now);
/* Purged pages paid off what was owed. */
void page_heap_owed_sub(size_t pages);

EBB_END_DECLS

#endif /* EBB_CORE_PAGE_HEAP_H */
