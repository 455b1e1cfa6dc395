/* page_heap.c: the page heaps themselves: the table of heaps, the header
 * check of superblocks, free-run lists with their boundary tags, best-fit
 * allocation with split, free with coalescing, in-place resize of large
 * spans, the superblock list, stats and fork.
 *
 * Its neighbours in core/pages: page_heap_purge.c (decay, purge, descriptor
 * trimming, unmapping idle superblocks) and huge.c (huge blocks and their
 * cache). They reach the run lists through the functions of page_heap.h's
 * "inside the page heap" section, defined here.
 *
 * Locking: the run-list helpers (static, or in page_heap.h's section) run
 * with h->lock held; the public functions take it themselves, free and
 * resize waiting while trim_descriptors has header pages of the superblock
 * out. No system call is made with it held: grow() maps with the lock
 * dropped. The rest of the rules (run kinds, identities) are in page_heap.h. */
#include "core/pages/page_heap.h"
#include "core/pages/span_check.h"

#include <errno.h>
#include <string.h>

#include "core/runtime/options.h"
#include "os/os.h"

/* Each heap on pages of its own, from the first byte of one: its first page
 * is all that its set-up, its passes and a fresh superblock's run touch
 * (page_heap.h), never two for a heap whose fields cross a page boundary.
 * In .lbss: over 1 MiB among the small globals would spread them over more
 * pages; a process touches only the heaps it uses. */
/* A slot is a power of two of bytes: heap_in_table and heap_known, which
 * every page-heap operation runs (the header check), then take a mask and a
 * shift, not a remainder and a quotient by 5 pages (memreturn a, callgrind:
 * ~27 instructions a call to page_heap_alloc). Its pages past the heap's
 * are never touched: address space only. */
#define HEAP_SLOT_SIZE 32768u
_Static_assert(sizeof(page_heap_t) <= HEAP_SLOT_SIZE && (HEAP_SLOT_SIZE & (HEAP_SLOT_SIZE - 1)) == 0,
	       "a heap fits its slot, a power of two");
typedef union heap_slot {
	page_heap_t heap;
	char pages[HEAP_SLOT_SIZE];
} EBB_ALIGNED(EBB_PAGE_SIZE) heap_slot_t;
/* Slots 0 .. page_heaps_n - 1 are the CPUs' heaps; slot page_heaps_n is
 * the heap profiler's (page_heap_prof), which no CPU's heap takes from and
 * which takes from none. */
static heap_slot_t page_heaps[EBB_MAX_HEAPS + 1] EBB_BIG_ZERO;
static unsigned page_heaps_n = 1;
/* Heap i of the table is set up (written) once page_heaps_ready[i] is 1, by
 * the first page_heap_get(i): a process on few of many possible CPUs pays
 * for the heaps it uses, not one or two pages of each of EBB_MAX_HEAPS.
 * The flag is set under page_heaps_setup_lock, so that the fork handlers,
 * holding it, see a fixed set of heaps; passes over every heap (decay,
 * release, stats) look only at ready ones (page_heap_peek), without a lock:
 * a heap not ready holds nothing. */
static uint8_t page_heaps_ready[EBB_MAX_HEAPS + 1];
static ebb_lock_t page_heaps_setup_lock = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_PAGE_HEAP);

/* Heaps set up outside the table (unit tests make their own on the stack),
 * so that the header check below accepts their superblocks: the last few
 * page_heap_init saw, never dereferenced by the check. */
#define OTHER_HEAPS 8
static page_heap_t *other_heaps[OTHER_HEAPS];
static unsigned other_heaps_next;

/* Pages of dirty runs in all heaps, and pages handed out as spans. */
static uint64_t dirty_total_pages;
static uint64_t inuse_total_pages;
/* Of those, the pages of large and huge blocks: what the swing is measured on. */
static uint64_t inuse_large_pages;

/* Most runs an aligned allocation looks at before it maps a superblock. */
#define ALIGNED_SEARCH_RUNS 256u

/* ---------------------------------------------------------------------------
 * Set-up
 * ------------------------------------------------------------------------- */
static uint64_t decay_interval_ns(void)
{
	long long ms = options_get(OPT_DECAY_MS);
	return ms < 0 ? UINT64_MAX : (uint64_t)ms * 1000000ull;
}

static bool heap_in_table(const page_heap_t *h)
{
	uintptr_t off = (uintptr_t)h - (uintptr_t)page_heaps;
	return off < sizeof page_heaps && off % sizeof(heap_slot_t) == 0;
}

static inline bool heap_ready(unsigned index)
{
	return atomic_load_u8_acquire(&page_heaps_ready[index]) != 0;
}

/* Whether h is one of the heaps outside the table (a test's own). Out of
 * the many inlined copies of heap_known, and not cold: a call to a cold
 * function moves the block that makes it to its caller's cold part
 * (.text.unlikely.NAME), and layout.ld keeps some of those in the first
 * text window (they warm cold runs, which python3 meets). */
static EBB_NOINLINE bool heap_known_other(const page_heap_t *h)
{
	for (unsigned i = 0; i < OTHER_HEAPS; i++)
		if (__atomic_load_n(&other_heaps[i], __ATOMIC_RELAXED) == h && h != NULL)
			return true;
	return false;
}

/* Whether h is one of our page heaps: the owner pointer of a superblock
 * header is checked against this before anything locks through it. A heap
 * of the table not set up owns no superblock. */
static bool heap_known(const page_heap_t *h)
{
	if (EBB_LIKELY(heap_in_table(h)))
		return heap_ready((unsigned)(((uintptr_t)h - (uintptr_t)page_heaps) / sizeof(heap_slot_t)));
	return heap_known_other(h);
}

/* zeroed: h is known to be all zero (a heap of the static table, never
 * written before its set-up), so the run lists need no clearing: a heap
 * then costs its first page, not its ~16 KiB of list heads. */
static void heap_setup(page_heap_t *h, unsigned index, uint64_t now, bool zeroed)
{
	if (!heap_in_table(h) && !heap_known(h)) {
		unsigned i = __atomic_fetch_add(&other_heaps_next, 1, __ATOMIC_RELAXED) % OTHER_HEAPS;
		__atomic_store_n(&other_heaps[i], h, __ATOMIC_RELAXED);
	}
	if (!zeroed)
		memset(h, 0, sizeof *h);
	lock_init_rank(&h->lock, LOCK_RANK_PAGE_HEAP);
	h->index = index;
	decay_init(&h->decay, decay_interval_ns(), now);
	h->last_decay_ns = now;
}

void page_heap_init(page_heap_t *h, unsigned index, uint64_t now)
{
	heap_setup(h, index, now, false);
}

void page_heap_init_all(void)
{
	/* Once per process; the heaps are set up at their first use (a fork
	 * child keeps the parent's). */
	unsigned n = os_cpu_count();
	page_heaps_n = n < EBB_MAX_HEAPS ? n : EBB_MAX_HEAPS;
}

unsigned page_heap_count(void)
{
	return page_heaps_n;
}

unsigned page_heap_count_all(void)
{
	return page_heaps_n + 1;
}

page_heap_t *page_heap_prof(void)
{
	return page_heap_get(page_heaps_n);
}

static EBB_COLD EBB_NOINLINE void heap_setup_first(unsigned index)
{
	lock_acquire(&page_heaps_setup_lock);
	if (atomic_load_u8(&page_heaps_ready[index]) == 0) {
		heap_setup(&page_heaps[index].heap, index, os_now_ns(), true);
		atomic_store_u8_release(&page_heaps_ready[index], 1);
	}
	lock_release(&page_heaps_setup_lock);
}

page_heap_t *page_heap_get(unsigned index)
{
	if (EBB_UNLIKELY(!heap_ready(index)))
		heap_setup_first(index);
	return &page_heaps[index].heap;
}

page_heap_t *page_heap_peek(unsigned index)
{
	return heap_ready(index) ? &page_heaps[index].heap : NULL;
}

void page_heap_setup_fence(void)
{
	lock_acquire(&page_heaps_setup_lock);
	lock_release(&page_heaps_setup_lock);
}

void page_heap_decay_interval_changed(uint64_t now)
{
	uint64_t interval = decay_interval_ns();
	/* A set-up under way when the option changed may have read the old
	 * interval: it ends (its heap ready) before this, and one after it
	 * reads the new one. */
	page_heap_setup_fence();
	for (unsigned i = 0; i <= page_heaps_n; i++) {
		page_heap_t *h = page_heap_peek(i);
		if (h == NULL)
			continue;
		lock_acquire(&h->lock);
		decay_set_interval(&h->decay, interval, now);
		lock_release(&h->lock);
	}
}

size_t page_heap_dirty_total(void)
{
	return (size_t)atomic_load_u64(&dirty_total_pages);
}

size_t page_heap_inuse_total(void)
{
	return (size_t)atomic_load_u64(&inuse_total_pages);
}

/* The most pages of large blocks in use at once since the current half of
 * decay_ms began ([0]) and over the half before it ([1]);
 * page_heap_inuse_window moves them on. */
static uint64_t inuse_peak_pages[2];
static uint64_t inuse_window_start;

/* The swing of the program's own use of large blocks: how far below its
 * peak of the last half to whole decay_ms it is now. Small blocks have no
 * swing here: a loop of small blocks is served by the thread caches and
 * central lists, and their spans reach the page heap after a burst, as the
 * central lists drain, which is no turn of a loop either. A loop whose buffers change size comes
 * back for that many pages at every turn (mimalloc-bench's malloc-large
 * swings by up to 175 MiB around 300 MiB). A drop larger than what is still
 * in use is the end of a burst, not a turn of a loop, and has no swing: the
 * memory-return promise (a burst back within 2 x decay_ms) must not wait a
 * decay_ms more for the pages of the spans the burst left partly used
 * (measured: 17 MiB more resident at 1 s in tests/test_memory_return.cpp's
 * two-thread burst when the swing was capped at the use instead). */
size_t page_heap_swing_pages(void)
{
	uint64_t inuse = atomic_load_u64(&inuse_large_pages);
	uint64_t peak = atomic_load_u64(&inuse_peak_pages[0]);
	uint64_t before = atomic_load_u64(&inuse_peak_pages[1]);
	if (before > peak)
		peak = before;
	uint64_t swing = peak > inuse ? peak - inuse : 0;
	/* A loop over its pool (page_heap_looping) swings by all of it:
	 * the bench/large row falls from 140 MiB to a few MiB and rises again,
	 * taking pages freed a moment before all along. */
	return (size_t)(swing <= inuse || page_heap_looping() ? swing : 0);
}

/* The dirty budget is dirty_max, or the swing or the pages large blocks took
 * from the dirty runs over the last half to whole decay_ms if either is
 * larger: the loop above exceeded the 128 MiB of dirty_max on every swing,
 * and had its pool purged and faulted in again each time; malloc-large's
 * pool also exceeds its swing of the last decay_ms by 2-14 MiB when its
 * peak lies further back, and a loop that went through the pool within
 * half a decay_ms will go through it again. A burst freed as a whole
 * (no reuse, no swing) still meets dirty_max at once. */
size_t page_heap_dirty_excess_pages(void)
{
	uint64_t inuse_pages = atomic_load_u64(&inuse_total_pages);
	size_t budget = options_dirty_max_bytes(inuse_pages << EBB_PAGE_SHIFT) >> EBB_PAGE_SHIFT;
	size_t dirty = page_heap_dirty_total();
	/* The budget is at least dirty_max: within it there is no excess,
	 * whatever the swing and reuse, which every free of a span asks
	 * (background_on_dirty) and which cost more than the rest together. */
	if (dirty <= budget)
		return 0;
	size_t swing = page_heap_swing_pages(), reuse = page_heap_reuse_pages();
	if (swing > budget)
		budget = swing;
	if (reuse > budget)
		budget = reuse;
	return dirty > budget ? dirty - budget : 0;
}

/* Two counts of the program's use of large and huge blocks, since start-up:
 * the dirty pages they were made of (it came back for pages it freed), and
 * the pages it asked for, each request counted up to the dirty pages there
 * were when it came (what the dirty runs could have served, had they the
 * right shape). For each, the count when the current half-decay_ms window
 * began, and how much the last whole window added. */
/* WIN_BIG: pages of requests of PAGE_HEAP_PROMPT_PAGES or more (prompt_purge). */
enum { WIN_REUSED, WIN_ASKED, WIN_BIG, WIN_COUNTS };
static uint64_t win_total[WIN_COUNTS];
static uint64_t win_mark[WIN_COUNTS];
static uint64_t win_last[WIN_COUNTS];

/* What counter c added over the current or the last half decay_ms,
 * whichever is more. */
static size_t win_recent(unsigned c)
{
	uint64_t now = atomic_load_u64(&win_total[c]) - atomic_load_u64(&win_mark[c]);
	uint64_t last = atomic_load_u64(&win_last[c]);
	return (size_t)(now > last ? now : last);
}

void page_heap_reuse_add(size_t pages)
{
	atomic_add_u64(&win_total[WIN_REUSED], pages);
}

void page_heap_asked_add(size_t pages)
{
	if (pages >= PAGE_HEAP_PROMPT_PAGES)
		atomic_add_u64(&win_total[WIN_BIG], pages);
	uint64_t dirty = atomic_load_u64(&dirty_total_pages);
	atomic_add_u64(&win_total[WIN_ASKED], pages < dirty ? pages : dirty);
}

size_t page_heap_reuse_pages(void)
{
	return win_recent(WIN_REUSED);
}

/* A program in a loop over the pages it frees asks, over half a decay_ms,
 * for at least an eighth of the dirty pages there are (so it would go
 * through all of them within about four decay_ms), and none of them is
 * idle, however long ago the pages at the deep end of the pool were freed.
 * The bench/large row rises to 140 MiB, falls to a few MiB for half a
 * second, and rises again: the decay curve purged 20-40 MiB of the pool in
 * each trough, and in each climb the 6-23 MiB of medium blocks' runs that
 * the huge blocks it asks for then cannot use (faulted in again on the way
 * down: 6 000-10 000 page faults more than tcmalloc, which keeps all); in
 * malloc-large it purged 60-160 MiB of a 430 MiB loop. A burst asks while
 * there is nothing dirty and its frees ask for nothing, so it is no loop;
 * a loop that stops is none a decay_ms later. Small blocks' spans are not
 * counted, as for the swing. */
bool page_heap_looping(void)
{
	uint64_t dirty = atomic_load_u64(&dirty_total_pages);
	uint64_t asked = win_recent(WIN_ASKED);
	/* asked > 0: with fewer than 8 dirty pages, dirty / 8 is 0, and a heap
	 * nobody asks anything of would read as a loop forever. */
	return dirty > 0 && asked > 0 && asked >= dirty / 8;
}

void page_heap_inuse_window(uint64_t now)
{
	long long ms = options_get(OPT_DECAY_MS);
	uint64_t start = atomic_load_u64(&inuse_window_start);
	if (ms <= 0 || util_elapsed(now, start) < (uint64_t)ms * (1000000ull / 2))
		return;
	if (!atomic_cas_u64_value(&inuse_window_start, &start, now))
		return; /* another pass moved it on */
	atomic_store_u64(&inuse_peak_pages[1], atomic_load_u64(&inuse_peak_pages[0]));
	atomic_store_u64(&inuse_peak_pages[0], atomic_load_u64(&inuse_large_pages));
	for (unsigned c = 0; c < WIN_COUNTS; c++) {
		uint64_t total = atomic_load_u64(&win_total[c]);
		atomic_store_u64(&win_last[c], total - atomic_load_u64(&win_mark[c]));
		atomic_store_u64(&win_mark[c], total);
	}
}

/* Pages of large and huge blocks handed out (huge.c counts its blocks in
 * too) and taken back: in the base of a percentage dirty budget, and in the
 * swing with their peak. CENTRAL spans count in the base only (alloc and
 * free below). Relaxed atomics; no lock needed. */
void page_heap_inuse_add(size_t pages)
{
	atomic_add_u64(&inuse_total_pages, pages);
	uint64_t v = atomic_add_u64(&inuse_large_pages, pages) + pages;
	uint64_t peak = atomic_load_u64(&inuse_peak_pages[0]);
	while (v > peak && !atomic_cas_u64_value(&inuse_peak_pages[0], &peak, v))
		;
}

void page_heap_inuse_sub(size_t pages)
{
	atomic_sub_u64(&inuse_total_pages, pages);
	atomic_sub_u64(&inuse_large_pages, pages);
}

void page_heap_inuse_recount(size_t pages)
{
	atomic_add_u64(&inuse_total_pages, pages);
	atomic_add_u64(&inuse_large_pages, pages);
}

/* Waste at the peak. The kernel's peak RSS (VmHWM, ru_maxrss) of a small
 * process is set by what the heaps hold at their highest: the pages in use
 * plus the dirty pages waiting for decay. A large block that takes fresh
 * pages (a purged run: no dirty run of its heap fitted) while dirty pages
 * wait lifts that peak by dirty pages the program is not using. So when it
 * takes the pages held (in use + dirty - owed) above their highest mark so
 * far, as many of the oldest dirty runs as the climb are owed to a purge,
 * which the allocating thread makes before it touches the fresh pages
 * (page_heap_purge_owed): the kernel records its peak at each madvise, so a
 * purge after the faults would lower nothing. That purge leaves the runs
 * freed in the last few ms (PAGE_HEAP_OWED_MIN_AGE_NS, page_heap.h): a program
 * that cycles through its blocks takes them again at once, and purging
 * them made every later reuse a fault and a climb of its own (bench/realloc
 * string: half its page faults). Below the mark nothing is
 * owed: the peak is already that high, and the dirty pages are what a
 * program that comes back asks for.
 *
 * Only while the heap is small and mostly small blocks' spans (the mark
 * below the dirty budget of an empty heap, 128 MiB by default, and at most
 * half of the pages in use in large and huge blocks), and only for large
 * blocks' requests. Measured: bench/large's 64K-32M row, a heap of large
 * blocks, took 43 500 page faults instead of 35 200 and peaked 4.6 MiB
 * higher when its climbs below 128 MiB were owed (a loop comes back for
 * those runs); churn 16B-32K ws=1K, whose climbs are small blocks' spans
 * at a plateau, took 3 900-4 800 page faults instead of 2 700 and about
 * 15% more CPU when those were owed too. Cached huge blocks are never owed
 * (their reuse is huge.c's). What it gains (medians of 3, peak RSS):
 * initdb 56.0 -> 54.6 MiB, python3 with pymalloc in one thread 32.4 ->
 * 32.0 MiB. */
static uint64_t resident_high_pages;
static uint64_t dirty_huge_pages; /* of dirty_total_pages: cached huge blocks listed */
static uint64_t owed_pages;

/* Dirty pages of runs in superblocks: what can be owed. */
static uint64_t dirty_run_pages(void)
{
	uint64_t dirty = atomic_load_u64(&dirty_total_pages), huge = atomic_load_u64(&dirty_huge_pages);
	return dirty > huge ? dirty - huge : 0;
}

bool page_heap_growing(size_t npages)
{
	return dirty_run_pages() < npages;
}

size_t page_heap_owed_pages(void)
{
	uint64_t owed = atomic_load_u64(&owed_pages), dirty = dirty_run_pages();
	return (size_t)(owed < dirty ? owed : dirty);
}

bool page_heap_wound_down(void)
{
	uint64_t inuse = atomic_load_u64(&inuse_total_pages);
	return inuse <= atomic_load_u64(&resident_high_pages) / 8 && dirty_run_pages() > 0;
}

void page_heap_climb_reset(void)
{
	atomic_store_u64(&resident_high_pages, 0);
	atomic_store_u64(&owed_pages, 0);
}

void page_heap_owed_sub(size_t pages)
{
	uint64_t owed = atomic_load_u64(&owed_pages);
	while (owed > 0 && !atomic_cas_u64_value(&owed_pages, &owed, owed > pages ? owed - pages : 0))
		;
}

/* After fresh pages were handed out (counted in use already): moves the
 * mark up, and owes what of the climb the dirty runs not owed yet can pay
 * for while the heap is small. Returns true if more is owed now. Relaxed
 * atomics: concurrent climbs may each owe a little more or less than their
 * share, never more than is dirty (page_heap_owed_pages). */
static bool resident_climb(bool large)
{
	uint64_t dirty = dirty_run_pages();
	uint64_t owed = atomic_load_u64(&owed_pages);
	if (owed > dirty) {
		/* Owed pages that were reused meanwhile are no longer dirty. */
		atomic_store_u64(&owed_pages, dirty);
		owed = dirty;
	}
	uint64_t inuse = atomic_load_u64(&inuse_total_pages);
	uint64_t res = inuse + dirty - owed;
	uint64_t high = atomic_load_u64(&resident_high_pages);
	if (res <= high)
		return false;
	bool small = large && high < (options_dirty_max_bytes(0) >> EBB_PAGE_SHIFT) &&
		     2 * atomic_load_u64(&inuse_large_pages) <= inuse;
	uint64_t more = small ? dirty - owed : 0;
	if (more > res - high)
		more = res - high;
	uint64_t mark = res - more;
	while (mark > high && !atomic_cas_u64_value(&resident_high_pages, &high, mark))
		;
	if (more == 0)
		return false;
	atomic_add_u64(&owed_pages, more);
	return true;
}

/* ---------------------------------------------------------------------------
 * Header validation (superblock.h: the guard). Every operation that reaches a
 * superblock through a span the caller passes in, a run of the lists or a
 * link of a superblock list checks the header before it reads a field of it:
 * superblock_check for what superblock.c knows, then the owner pointer
 * against the table of heaps. Some 20 instructions and the header's first
 * cache line, on paths that take a lock anyway.
 * ------------------------------------------------------------------------- */

/* The owner of sb, once its header has been checked. No lock needed. */
page_heap_t *page_heap_owner(superblock_t *sb, bool huge)
{
	superblock_check(sb, huge);
	page_heap_t *h = sb->heap;
	if (EBB_UNLIKELY(!heap_known(h)))
		superblock_report_overwritten(sb, "its page heap pointer is not one of ours");
	return h;
}

/* sb reached from h's own structures, h->lock held: also owned by h, and its
 * lock-protected fields in range. */
void page_heap_check_locked(page_heap_t *h, superblock_t *sb, bool huge)
{
	if (EBB_UNLIKELY(page_heap_owner(sb, huge) != h))
		superblock_report_overwritten(sb, "it names another page heap than the one that lists it");
	if (EBB_UNLIKELY(sb->free_pages > sb->usable_pages || (sb->all_purged | sb->hdr_purging | sb->trim_queued) > 1 ||
			 sb->cold_n > EBB_SB_COLD))
		superblock_report_overwritten(sb, "its page counts or flags are out of range");
}

static bool link_ok(const superblock_t *l)
{
	return l == NULL || (((uintptr_t)l & (EBB_SB_SIZE - 1)) == 0 && registry_get(l) == REG_HEADER);
}

/* sb is on one of h's lists (superblocks, huge cache), h->lock held: its
 * links are live, so they too must name superblocks of ours before a walk
 * follows them or an unlink writes through them. (Off the lists they are
 * stale and may name headers unmapped since: not checked there.) */
void page_heap_check_listed(page_heap_t *h, superblock_t *sb, bool huge)
{
	page_heap_check_locked(h, sb, huge);
	if (EBB_UNLIKELY(!link_ok(sb->next) || !link_ok(sb->prev)))
		superblock_report_overwritten(sb, "a list link in it points outside our superblocks");
}

/* ---------------------------------------------------------------------------
 * Run lists (caller holds h->lock)
 * ------------------------------------------------------------------------- */
static unsigned run_kind(const span_t *s)
{
	return s->state == SPAN_FREE_DIRTY ? RUN_DIRTY : RUN_PURGED;
}

static unsigned list_index(size_t npages)
{
	return npages >= EBB_SB_PAGES ? EBB_SB_PAGES : (unsigned)npages;
}

/* The head of the list of kind k for list index i: the shortest and the
 * longest runs' heads share the heap's first page with its other fields
 * (page_heap.h). */
_Static_assert((EBB_SB_PAGES & (EBB_SB_PAGES - 1)) == 0 && EBB_RUN_FIRST_SLOTS >= EBB_RUN_FIRST_SHORT + 128,
	       "run slots wrap with a mask; the first page holds both ends' heads");

static span_t **run_head(page_heap_t *h, unsigned k, unsigned i)
{
	return &h->runs[page_heap_run_slot(i)][k];
}

static void list_insert(page_heap_t *h, span_t *s)
{
	unsigned k = run_kind(s), i = list_index(s->npages);
	s->prev = NULL;
	s->next = *run_head(h, k, i);
	if (s->next)
		s->next->prev = s;
	*run_head(h, k, i) = s;
	h->nonempty[k][i >> 6] |= 1ull << (i & 63);
	h->nonempty_words[k] |= 1ull << (i >> 6);
}

static void list_remove(page_heap_t *h, span_t *s)
{
	unsigned k = run_kind(s), i = list_index(s->npages);
	if (s->prev)
		s->prev->next = s->next;
	else
		*run_head(h, k, i) = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (*run_head(h, k, i) == NULL) {
		h->nonempty[k][i >> 6] &= ~(1ull << (i & 63));
		if (h->nonempty[k][i >> 6] == 0)
			h->nonempty_words[k] &= ~(1ull << (i >> 6));
	}
}

/* Whether free run s holds npages pages starting at a page index that is a
 * multiple of align_pages (the placement page_heap_alloc takes). */
static bool run_fits_aligned(const span_t *s, size_t npages, size_t align_pages)
{
	if (s->npages < npages)
		return false;
	unsigned last = s->page + (unsigned)(s->npages - npages);
	return last - last % (unsigned)align_pages >= s->page;
}

/* A run of kind k that holds npages pages at an aligned start, among the
 * runs of at least npages pages (smallest first), looking at no more than
 * `budget` runs. For big alignments a run that fits is often much shorter
 * than npages + align_pages - 1: a superblock has only one 2 MiB-aligned
 * page, and without this search every such request mapped a superblock. */
static EBB_NOINLINE span_t *list_find_aligned(page_heap_t *h, unsigned k, size_t npages, size_t align_pages,
					      unsigned budget)
{
	for (unsigned i = (unsigned)npages; i <= EBB_SB_PAGES && budget > 0; i++) {
		uint64_t bits = h->nonempty[k][i >> 6] >> (i & 63);
		if (bits == 0) {
			i |= 63; /* on to the next word of the bitmap */
			continue;
		}
		i += (unsigned)__builtin_ctzll(bits);
		for (span_t *s = *run_head(h, k, i); s != NULL && budget > 0; s = s->next, budget--)
			if (run_fits_aligned(s, npages, align_pages))
				return s;
	}
	return NULL;
}

_Static_assert(EBB_RUN_WORDS <= 64, "nonempty_words has one bit per word of nonempty");

/* Smallest non-empty list of kind k holding runs of at least `need` pages.
 * Two bitmap look-ups at most: a heap whose runs of kind k are all short
 * or none (dirty runs while a program only grows) used to cost a scan of
 * all 17 words, ~290 instructions per page_heap_alloc on memreturn b. */
static span_t *list_find(page_heap_t *h, unsigned k, size_t need)
{
	if (need > EBB_SB_PAGES)
		return NULL;
	unsigned i = (unsigned)need;
	unsigned w = i >> 6;
	uint64_t bits = h->nonempty[k][w] & (~0ull << (i & 63));
	if (bits == 0) {
		uint64_t words = h->nonempty_words[k] & (~0ull << w << 1);
		if (words == 0)
			return NULL;
		w = (unsigned)__builtin_ctzll(words);
		bits = h->nonempty[k][w];
	}
	/* The last list mixes sizes >= EBB_SB_PAGES; none is that big in a
	 * normal superblock, so every run there fits. */
	return *run_head(h, k, (w << 6) + (unsigned)__builtin_ctzll(bits));
}

static void lru_insert_after(page_heap_t *h, span_t *pos, span_t *s)
{
	s->u.free.lru_prev = pos;
	s->u.free.lru_next = pos ? pos->u.free.lru_next : h->lru_head;
	if (s->u.free.lru_next)
		s->u.free.lru_next->u.free.lru_prev = s;
	else
		h->lru_tail = s;
	if (pos)
		pos->u.free.lru_next = s;
	else
		h->lru_head = s;
}

static void lru_remove(page_heap_t *h, span_t *s)
{
	if (s->u.free.lru_prev)
		s->u.free.lru_prev->u.free.lru_next = s->u.free.lru_next;
	else
		h->lru_head = s->u.free.lru_next;
	if (s->u.free.lru_next)
		s->u.free.lru_next->u.free.lru_prev = s->u.free.lru_prev;
	else
		h->lru_tail = s->u.free.lru_prev;
}

/* The profiler's heap owes no purge for its fresh pages (alloc_count):
 * they stand for small blocks in spans the CPUs' heaps hold already, and
 * a purge there would change where their later blocks go. */
EBB_INLINE bool heap_counted(const page_heap_t *h)
{
	return EBB_LIKELY(h->index < page_heaps_n);
}

void page_heap_dirty_add(page_heap_t *h, size_t pages)
{
	h->dirty_pages += pages;
	atomic_add_u64(&dirty_total_pages, pages);
}

void page_heap_dirty_sub(page_heap_t *h, size_t pages)
{
	h->dirty_pages -= pages;
	atomic_sub_u64(&dirty_total_pages, pages);
}

static span_t *run_desc(page_heap_t *h, superblock_t *sb, unsigned page)
{
	uint32_t before = sb->desc_touched;
	span_t *s = superblock_desc(sb, page);
	if (sb->desc_touched != before)
		h->meta_pages++;
	return s;
}

/* Takes a free run out of its list (and the LRU), keeping the page counts of
 * its kind in step. */
void page_heap_run_unlist(page_heap_t *h, span_t *s)
{
	if (s->huge) {
		superblock_t *sb = span_superblock(s);
		page_heap_check_listed(h, sb, true);
		page_heap_sb_unlink(&h->huge_cache, sb);
		h->huge_cached--;
	} else {
		list_remove(h, s);
	}
	if (s->state == SPAN_FREE_DIRTY) {
		lru_remove(h, s);
		page_heap_dirty_sub(h, s->npages);
		if (s->huge)
			atomic_sub_u64(&dirty_huge_pages, s->npages);
	} else {
		h->purged_pages -= s->npages;
	}
}

/* Lists a free run (state FREE_DIRTY or FREE_PURGED, fields set). Dirty runs
 * enter the LRU after `lru_pos` (NULL: as the newest). Inlined into
 * page_heap_run_free_coalesced, every free's: gcc's own choice came and
 * went with unrelated changes (bench aligned, callgrind: ~215K
 * instructions of 15.4M when it went). */
EBB_INLINE void run_list(page_heap_t *h, span_t *s, span_t *lru_pos)
{
	if (s->huge) {
		page_heap_sb_push(&h->huge_cache, span_superblock(s));
		h->huge_cached++;
	} else {
		list_insert(h, s);
	}
	if (s->state == SPAN_FREE_DIRTY) {
		lru_insert_after(h, lru_pos, s);
		page_heap_dirty_add(h, s->npages);
		if (s->huge)
			atomic_add_u64(&dirty_huge_pages, s->npages);
	} else {
		h->purged_pages += s->npages;
	}
}

void page_heap_run_list(page_heap_t *h, span_t *s, span_t *lru_pos)
{
	run_list(h, s, lru_pos);
}

/* Class 0: the heap writes tags only on pages it owns, or hands out before
 * the owner maps them, and none of those has a class (pmap_set). */
static void run_tags(superblock_t *sb, const span_t *s)
{
	pmap_set(sb, s->page, s->page, 0);
	pmap_set(sb, s->page + s->npages - 1, s->page, 0);
}

/* Describes [page, page+n) of sb, the part of a free run left over when
 * the front of it was taken (h->lock held): a run of its own, of the same
 * kind, zeroed and age, its tags written. The caller lists it. */
static span_t *run_rest(page_heap_t *h, superblock_t *sb, unsigned page, size_t n, uint8_t state, uint8_t zeroed,
			uint64_t freed_ns)
{
	span_t *b = run_desc(h, sb, page);
	SPAN_SET_STATE(b, state, &h->lock);
	span_set_page(b, page);
	span_set_npages(b, n);
	b->zeroed = zeroed;
	span_set_huge(b, 0);
	b->u.free.freed_ns = freed_ns;
	run_tags(sb, b);
	return b;
}

/* Makes [page, page+n) of sb a free run of `state`, merged with free
 * neighbours of the same state, and lists it. */
void page_heap_run_free_coalesced(page_heap_t *h, superblock_t *sb, unsigned page, size_t n,
				  uint8_t state, uint8_t zeroed, uint64_t now)
{
	unsigned first = sb->first_page, end = (unsigned)sb->first_page + sb->usable_pages;
	span_t *self = run_desc(h, sb, page);
	unsigned left = page > first ? pmap_first(pmap_load(sb, page - 1)) : 0;
	/* Pages the merged run had in the LRU and dirty count before (its left
	 * part) when that part stays there: the newest dirty run merged with
	 * a span freed right of it, which is how spans come back when a class
	 * empties them in reverse order (issue 13). It keeps its place at the
	 * LRU head, newest still, and only the pages added are counted. */
	size_t kept = 0;
	if (left >= first) {
		span_t *l = superblock_span_at(sb, left);
		if (l->state == state && l->page + l->npages == page && !page_heap_run_pending(l)) {
			if (state == SPAN_FREE_DIRTY && l == h->lru_head && !l->huge) {
				list_remove(h, l);
				kept = l->npages;
			} else {
				page_heap_run_unlist(h, l);
			}
			SPAN_SET_STATE(self, SPAN_NONE, &h->lock);
			n += l->npages;
			page = l->page;
			zeroed &= l->zeroed;
			self = l;
		}
	}
	unsigned right = page + (unsigned)n;
	if (right < end) {
		span_t *r = superblock_span_at(sb, right);
		if (r->state == state && r->page == right && !page_heap_run_pending(r)) {
			page_heap_run_unlist(h, r);
			SPAN_SET_STATE(r, SPAN_NONE, &h->lock);
			n += r->npages;
			zeroed &= r->zeroed;
		}
	}
	SPAN_SET_STATE(self, state, &h->lock);
	span_set_page(self, page);
	span_set_npages(self, n);
	self->zeroed = zeroed;
	span_set_huge(self, 0);
	if (state == SPAN_FREE_DIRTY)
		self->u.free.freed_ns = now;
	run_tags(sb, self);
	if (kept != 0) {
		list_insert(h, self);
		page_heap_dirty_add(h, n - kept);
	} else {
		run_list(h, self, NULL);
	}
}

/* Cold (off the free path's code, and not inlined into lock_acquire_sb,
 * which must stay small enough to inline: api.text_rss). */
EBB_COLD void page_heap_warm(page_heap_t *h, superblock_t *sb)
{
	unsigned n = sb->cold_n;
	sb->cold_n = 0;
	h->cold_runs -= n;
	/* Each merges with no cold neighbour: two purged runs side by side were
	 * one when they went cold, and nothing of sb was freed since. The
	 * descriptor it gets reads as zero (its page faults in on the write). */
	for (unsigned i = 0; i < n; i++) {
		h->purged_pages -= sb->cold_npages[i]; /* listed again below */
		page_heap_run_free_coalesced(h, sb, sb->cold_page[i], sb->cold_npages[i], SPAN_FREE_PURGED,
					     (sb->cold_zeroed >> i) & 1, 0);
	}
	sb->cold_zeroed = 0;
}

/* Warms the cold runs of every superblock of h whose header no trim has out:
 * before h maps a new superblock, the address space it already has comes
 * first. Returns whether it warmed any. */
static EBB_COLD bool warm_all(page_heap_t *h)
{
	bool any = false;
	for (superblock_t *sb = h->superblocks; sb != NULL && h->cold_runs != 0; sb = sb->next) {
		page_heap_check_listed(h, sb, false);
		if (sb->cold_n != 0 && !sb->hdr_purging) {
			page_heap_warm(h, sb);
			any = true;
		}
	}
	return any;
}

/* ---------------------------------------------------------------------------
 * Allocation and free
 * ------------------------------------------------------------------------- */

/* lock_acquire_sb's wait (h->lock held, and again on return) while
 * trim_descriptors has some of sb's header pages out. Not cold, as
 * heap_known_other. */
static EBB_NOINLINE void wait_header(page_heap_t *h, superblock_t *sb)
{
	while (sb->hdr_purging) {
		lock_release(&h->lock);
		os_yield();
		lock_acquire(&h->lock);
	}
}

/* Takes the lock of sb's heap, for an operation that may write descriptors
 * of sb: waits while trim_descriptors has some of its header pages out, and
 * makes its cold runs runs again (the operation may free a neighbour of
 * one, or walk the runs). */
EBB_INLINE void lock_acquire_sb(page_heap_t *h, superblock_t *sb)
{
	lock_acquire(&h->lock);
	if (EBB_UNLIKELY(sb->hdr_purging))
		wait_header(h, sb);
	if (EBB_UNLIKELY(sb->cold_n != 0))
		page_heap_warm(h, sb);
}

static bool grow(page_heap_t *h)
{
	/* Huge blocks live in heap 0 (large.c); a test's own heap has its own,
	 * and so has the profiler's (its superblocks are mapped fresh: a huge
	 * block freed to heap 0's cache goes where it would with prof=0).
	 * Heap 0 not set up has none cached: h's own (empty) cache then. */
	bool dirty;
	uint64_t now = os_now_ns(), freed = now;
	page_heap_t *cache = heap_in_table(h) && h->index < page_heaps_n ? page_heap_peek(0) : h;
	superblock_t *sb = page_heap_huge_carve(h, cache != NULL ? cache : h, &dirty, &freed);
	if (sb == NULL)
		return false;
	lock_acquire(&h->lock);
	page_heap_sb_push(&h->superblocks, sb);
	h->superblocks_count++;
	h->meta_pages += EBB_SB_FIXED_PAGES;
	sb->free_pages = sb->usable_pages;
	sb->empty_since_ns = now;
	page_heap_run_free_coalesced(h, sb, sb->first_page, sb->usable_pages,
				     dirty ? SPAN_FREE_DIRTY : SPAN_FREE_PURGED, !dirty, dirty ? freed : now);
	lock_release(&h->lock);
	return true;
}

/* The dirty run of h that page_heap_alloc takes for npages at align_pages
 * (need = npages + align_pages - 1), or NULL. Caller holds h->lock. */
static span_t *dirty_fit(page_heap_t *h, size_t need, size_t npages, size_t align_pages)
{
	span_t *s = list_find(h, RUN_DIRTY, need);
	if (s == NULL && align_pages > 1)
		s = list_find_aligned(h, RUN_DIRTY, npages, align_pages, ALIGNED_SEARCH_RUNS);
	return s;
}

/* A large block whose heap has no dirty run that fits takes one of another
 * CPU's heap before purged pages or a new superblock of its own: a thread
 * that the scheduler moves to another CPU finds its heap there empty, while
 * the pages it freed a moment ago wait in the heap it left (bench/large's
 * 64K-32M row, one thread: a run that migrated took 39-40K page faults
 * and peaked at 157-162 MiB, one that stayed 35.3K and 142 MiB). The span
 * goes back to its own superblock's heap when freed, as always. A span of
 * small blocks looks there too (issue 14): the pages a large block or an
 * emptied span left on the last CPU then serve any class on this one, not
 * fresh pages faulted in while they wait for decay (peak RSS, medians of
 * 5 on a loaded machine: initdb 54.8 -> 54.0 MiB, glibc 52.4; python3 with
 * pymalloc in one thread unchanged within its noise). Its blocks go on this
 * CPU's central lists; only its pages are the other heap's.
 * Lock not held; returns the heap whose dirty run *s is, locked, or NULL. */
static page_heap_t *dirty_elsewhere(page_heap_t *h, size_t need, size_t npages, size_t align_pages,
				    span_t **s)
{
	/* Fewer dirty pages in runs, all heaps together, than asked: none can
	 * fit, and a program that only grows pays no lock of another heap. */
	if (dirty_run_pages() < npages)
		return NULL;
	for (unsigned i = 1; i < page_heaps_n; i++) {
		page_heap_t *o = page_heap_peek((h->index + i) % page_heaps_n);
		if (o == NULL)
			continue;
		lock_acquire(&o->lock);
		page_heap_pending_drain(o, 0);
		*s = dirty_fit(o, need, npages, align_pages);
		if (*s != NULL)
			return o;
		lock_release(&o->lock);
	}
	return NULL;
}

/* The descriptor of the span [a, a+npages) of sb, its page, page count,
 * huge flag and tags set (h->lock held). */
EBB_INLINE span_t *alloc_place(page_heap_t *h, superblock_t *sb, unsigned a, size_t npages)
{
	span_t *t = run_desc(h, sb, a);
	span_set_huge(t, 0);
	atomic_store_u8(&t->state, SPAN_NONE); /* the checker's from-state: t may be a run's or no span's */
	span_set_page(t, a);
	span_set_npages(t, npages);
	run_tags(sb, t);
	return t;
}

/* t's other fields as page_heap_alloc promises them (h->lock held): zeroed
 * but for the fields a lookup reads (span_check.h), which get relaxed
 * stores. */
EBB_INLINE void alloc_hand_out(page_heap_t *h, span_t *t, uint8_t state, uint8_t zeroed)
{
	memset(t, 0, offsetof(span_t, npages));
	t->used = 0;
	t->cls = 0;
	t->in_partial = 0;
	t->purge_ok = 0;
	(void)h; /* SPAN_SET_STATE's only, which a release build leaves out */
	SPAN_SET_STATE(t, state, &h->lock);
	t->zeroed = zeroed;
}

/* The end of alloc_finish for a descriptor t whose page, page count, huge
 * flag and tags are set already (h->lock held): its other fields set up as
 * page_heap_alloc promises, the pages counted in use, the lock released. */
EBB_INLINE span_t *alloc_count(page_heap_t *h, superblock_t *sb, span_t *t, size_t npages, uint8_t state,
			       uint8_t zeroed, bool from_purged)
{
	alloc_hand_out(h, t, state, zeroed);
	if (state == SPAN_CENTRAL) {
		h->central_pages += npages;
		atomic_add_u64(&inuse_total_pages, npages);
	} else {
		h->large_pages += npages;
		h->large_allocs++;
		page_heap_inuse_add(npages);
	}
	/* The profiler's heap owes nothing (heap_counted). */
	bool owe = from_purged && heap_counted(h) && resident_climb(state == SPAN_LARGE);
	(void)sb; /* PAGE_HEAP_CHECK's only, which a release build leaves out */
	PAGE_HEAP_CHECK(h, sb);
	lock_release(&h->lock);
	/* Before the caller touches the fresh pages (see resident_climb). */
	if (EBB_UNLIKELY(owe))
		page_heap_purge_owed(h, os_now_ns());
	return t;
}

/* The span [a, a+npages) of sb, just taken off the free runs (h->lock held,
 * sb->free_pages and the run counts done): its descriptor set up as
 * page_heap_alloc promises, the pages counted in use. The lock is released
 * here; from_purged: some of its pages were purged (resident_climb). */
static span_t *alloc_finish(page_heap_t *h, superblock_t *sb, unsigned a, size_t npages, uint8_t state,
			    uint8_t zeroed, bool from_purged)
{
	span_t *t = alloc_place(h, sb, a, npages);
	return alloc_count(h, sb, t, npages, state, zeroed, from_purged);
}

/* ---------------------------------------------------------------------------
 * Pending spans
 *
 * A class that empties spans and then carves as many (a batch freed in the
 * order it was allocated, or in reverse: bench/fastpath's reverse batch
 * empties ~780 spans of 32-byte blocks in a row, then carves ~780) made
 * every span merge into the newest dirty run at its free and split off it
 * again at its carve: two moves between size lists each way, ~460
 * instructions a span on free and as many on alloc. A CENTRAL span freed
 * whole waits instead on h->pending (a stack, newest on top, through
 * `next`), a dirty run in every count (FREE_DIRTY, sb->free_pages,
 * dirty_pages, its tags) but in no size list and not in the LRU, and no
 * neighbour merges with it (page_heap_run_pending). A CENTRAL request of the
 * top's page count takes the top as it is; which is the span a split of the
 * merged run would have handed out (the newest freed, at the run's end), so
 * spans land where they did; failing the top, the newest of its page count a
 * little further down (pending_find). A CENTRAL request of another page
 * count that a listed dirty run fits leaves up to PENDING_KEEP_PAGES pending
 * (the newest); anything else that looks at the runs merges and lists them
 * all first (page_heap_pending_drain): any other request, a CENTRAL one that
 * no listed run fits, a look at another heap's runs, decay (and so ebb_trim
 * and the dirty budget), release, resize: no request finds less than it
 * did, and pending pages are
 * purged and unmapped as any dirty run: a decay pass merges as many as its
 * purge needs beyond the listed dirty runs, and a release pass that finds a
 * superblock to unmap merges them all first (not every pass merges them
 * all: a tick between a class's frees and its carves would merge every
 * span, as the frees used to).
 * Owner: the heap, under its lock, as any free run.
 * ------------------------------------------------------------------------- */

/* Takes h's newest pending span, which fits the request (h->lock held;
 * released). */
static span_t *pending_take(page_heap_t *h)
{
	span_t *s = h->pending;
	superblock_t *sb = span_superblock(s);
	size_t n = s->npages;
	h->pending = s->next;
	h->pending_pages -= n;
	page_heap_dirty_sub(h, n);
	decay_note_removed(&h->decay, n);
	sb->free_pages -= (uint32_t)n;
	sb->empty_since_ns = 0;
	/* s is its own run's descriptor, with its page, page count, huge flag
	 * (0: a CENTRAL span is never the huge one) and tags as a span of n
	 * pages needs them (pending_push): alloc_finish's lookup of the
	 * descriptor and its rewrites of those are not needed (some 35
	 * instructions a span of the reverse batch). */
	return alloc_count(h, sb, s, n, SPAN_CENTRAL, 0, false);
}

/* Puts s, a CENTRAL span freed whole (its pages counted free already), on
 * h->pending. */
static void pending_push(page_heap_t *h, superblock_t *sb, span_t *s, uint64_t now)
{
	SPAN_SET_STATE(s, SPAN_FREE_DIRTY, &h->lock);
	s->zeroed = 0;
	s->u.free.freed_ns = now;
	s->u.free.lru_prev = s->u.free.lru_next = s;
	run_tags(sb, s);
	page_heap_dirty_add(h, s->npages);
	s->next = h->pending;
	h->pending = s;
	h->pending_pages += s->npages;
}

/* Pending spans a CENTRAL request of another page count leaves pending
 * while a listed dirty run fits it, and how far down the stack a CENTRAL
 * request looks for a span of its own page count. A span that empties goes
 * back, mostly, to the class it left (the page count picks the class among
 * the larger ones), whose blocks sit where they sat: the pages its blocks
 * were touched on are the pages touched again. Merged into a run and split
 * for another page count, the same pages hold other blocks, and a block
 * touched only at its ends (a buffer sized for the worst case) makes more
 * of them resident: bench/run's churn 16 B-32 KiB ws=1K row (the bench
 * writes a block's first and last byte) grew 8.6 -> 10.9 -> 14.1 MiB at 1,
 * 10 and 100 million replacements, glibc flat at 7.5, as ever more span
 * pages became resident (bench/peak_probe/README.md). Kept this way, 10.4-
 * 11.0 -> 10.0-10.3 MiB at 10 million (10 interleaved pairs, CPU per
 * operation alike; callgrind: that row, memreturn a and xmalloc t=2 within
 * 0.4% of the instructions); left pending whatever fits elsewhere, 9.1-9.5,
 * but then a request of another page count takes fresh pages while these
 * wait. A request that no listed run fits still merges them all
 * (alloc_search), so none finds fewer free pages than before. */
#define PENDING_KEEP_PAGES 1024u
#define PENDING_LOOK 32u

/* Moves the first pending span of npages among the top PENDING_LOOK to the
 * top; false if there is none (h->lock held). */
static bool pending_find(page_heap_t *h, size_t npages)
{
	span_t **pp = &h->pending;
	for (unsigned k = 0; *pp != NULL && k < PENDING_LOOK; k++, pp = &(*pp)->next) {
		span_t *s = *pp;
		if (s->npages != npages)
			continue;
		*pp = s->next;
		s->next = h->pending;
		h->pending = s;
		return true;
	}
	return false;
}

void page_heap_pending_drain(page_heap_t *h, size_t keep)
{
	if (EBB_LIKELY(h->pending_pages <= keep))
		return;
	/* Oldest first: each merged run goes to the LRU's head, so that the
	 * newest ends there and decay still takes the oldest first. */
	span_t *s = NULL;
	for (span_t *p = h->pending, *next; p != NULL; p = next) {
		next = p->next;
		p->next = s;
		s = p;
	}
	h->pending = NULL;
	while (s != NULL && h->pending_pages > keep) {
		span_t *next = s->next;
		h->pending_pages -= s->npages;
		s->u.free.lru_prev = s->u.free.lru_next = NULL; /* no longer pending */
		/* run_free_coalesced counts it dirty again. */
		page_heap_dirty_sub(h, s->npages);
		page_heap_run_free_coalesced(h, span_superblock(s), s->page, s->npages, SPAN_FREE_DIRTY, 0,
					     s->u.free.freed_ns);
		s = next;
	}
	for (span_t *next; s != NULL; s = next) { /* the newer rest, newest on top again */
		next = s->next;
		s->next = h->pending;
		h->pending = s;
	}
}

/* How many of the newest dirty runs a span of central blocks looks at for
 * a straddle (straddle_find) before it takes a purged run. */
#define STRADDLE_LOOK 4

/* A dirty run of h too short for npages whose right neighbour is a purged
 * run long enough for the rest, among the newest few: what a span leaves
 * when it empties with only its first pages carved (page_heap_free_given_back:
 * a dirty prefix, then its never-carved pages purged). A span of central
 * blocks taken across the two reuses the resident pages, which alone fit
 * no such span (they would wait for decay while fresh pages are faulted
 * in), and its purged pages still read as zero for a lazy carve. NULL if
 * none. */
static span_t *straddle_find(page_heap_t *h, size_t npages)
{
	span_t *l = h->lru_head;
	for (unsigned i = 0; l != NULL && i < STRADDLE_LOOK; i++, l = l->u.free.lru_next) {
		if (l->huge)
			continue;
		superblock_t *sb = span_superblock(l);
		unsigned right = l->page + l->npages;
		if (right >= (unsigned)sb->first_page + sb->usable_pages)
			continue;
		span_t *r = superblock_span_at(sb, right);
		if (r->state == SPAN_FREE_PURGED && r->page == right && l->npages + (size_t)r->npages >= npages)
			return l;
	}
	return NULL;
}

/* Takes a CENTRAL span of npages from all of dirty run l and the front of
 * the purged run right of it (straddle_find). Its zeroed is 1 + the first
 * page that reads as zero when the purged run did, else 0. Releases the
 * lock. */
static span_t *alloc_straddle(page_heap_t *h, span_t *l, size_t npages)
{
	superblock_t *sb = span_superblock(l);
	page_heap_check_locked(h, sb, false);
	unsigned page = l->page, d = l->npages;
	span_t *r = superblock_span_at(sb, page + d);
	uint8_t rzeroed = r->zeroed;
	uint64_t rfreed = r->u.free.freed_ns;
	size_t rest = r->npages - (npages - d);
	page_heap_run_unlist(h, l);
	page_heap_run_unlist(h, r);
	SPAN_SET_STATE(r, SPAN_NONE, &h->lock);
	if (rest)
		page_heap_run_list(h, run_rest(h, sb, page + (unsigned)npages, rest, SPAN_FREE_PURGED, rzeroed, rfreed),
				   NULL);
	decay_note_removed(&h->decay, d);
	sb->free_pages -= (uint32_t)npages;
	sb->empty_since_ns = 0;
	return alloc_finish(h, sb, page, npages, SPAN_CENTRAL, rzeroed ? (uint8_t)(d + 1) : 0, true);
}

/* alloc_search's refusal of a request no superblock holds. */
static EBB_COLD span_t *alloc_too_big(page_heap_t *h, bool locked)
{
	if (locked)
		lock_release(&h->lock);
	errno = ENOMEM;
	return NULL;
}

/* Out of memory for heap h (the kernel would not map a superblock for it):
 * the next heap after h, in index order, that another CPU set up, which may
 * have free pages that fit (a span remembers its superblock's heap, so it
 * goes back there); NULL once *visited reaches every heap. */
static EBB_COLD page_heap_t *next_heap_for_oom(const page_heap_t *h, unsigned *visited)
{
	page_heap_t *o = NULL;
	for (unsigned i = h->index; o == NULL;) {
		if ((*visited)++ >= page_heaps_n)
			return NULL;
		i = (i + 1) % page_heaps_n;
		o = page_heap_peek(i); /* one not set up has no pages */
	}
	return o;
}

/* Takes [a, a+npages) out of free run s of sb (h->lock held; released):
 * what is left of s either side stays a free run of its kind, the part
 * before a with s's descriptor and place in the LRU. */
EBB_INLINE span_t *alloc_take(page_heap_t *h, superblock_t *sb, span_t *s, unsigned a, size_t npages,
			      uint8_t state)
{
	unsigned start = s->page;
	size_t total = s->npages;
	uint8_t kind_state = s->state, zeroed = s->zeroed;
	uint64_t freed = s->u.free.freed_ns;
	unsigned front = a - start;
	unsigned back = start + (unsigned)total - (a + (unsigned)npages);

	list_remove(h, s);
	span_t *lru_pos = NULL;
	if (front) {
		span_set_npages(s, front);
		run_tags(sb, s);
		list_insert(h, s);
		lru_pos = s;
	} else if (kind_state == SPAN_FREE_DIRTY) {
		lru_pos = s->u.free.lru_prev;
		lru_remove(h, s);
	}
	if (back) {
		span_t *b = run_rest(h, sb, a + (unsigned)npages, back, kind_state, zeroed, freed);
		list_insert(h, b);
		if (kind_state == SPAN_FREE_DIRTY)
			lru_insert_after(h, lru_pos, b);
	}
	if (kind_state == SPAN_FREE_DIRTY) {
		page_heap_dirty_sub(h, npages);
		decay_note_removed(&h->decay, npages);
		if (state != SPAN_CENTRAL)
			page_heap_reuse_add(npages);
	} else {
		h->purged_pages -= npages;
	}
	sb->free_pages -= (uint32_t)npages;
	sb->empty_since_ns = 0;

	return alloc_finish(h, sb, a, npages, state, kind_state == SPAN_FREE_PURGED ? zeroed : 0,
			    kind_state == SPAN_FREE_PURGED);
}

/* page_heap_alloc but for the pending top: `locked` says whether h->lock is
 * held already (a CENTRAL request the top did not fit). Its rare branches
 * (too big, aligned, cold runs, out of memory) call out, so that what a
 * common search runs is all of its code in the first text window
 * (layout.ld). */
static EBB_NOINLINE span_t *alloc_search(page_heap_t *h, size_t npages, size_t align_pages, uint8_t state,
					 bool locked)
{
	size_t need = npages + align_pages - 1;
	if (need > (size_t)EBB_SB_PAGES - EBB_SB_HEADER_PAGES)
		return alloc_too_big(h, locked);
	span_t *s;
	bool refused = false; /* the kernel would not map a new superblock */
	bool looked_elsewhere = (state != SPAN_LARGE && state != SPAN_CENTRAL) || !heap_in_table(h) ||
			       page_heaps_n == 1 || h->index >= page_heaps_n;
	unsigned visited = 1;
	if (!locked) {
		if (state != SPAN_CENTRAL)
			page_heap_asked_add(npages);
		lock_acquire(&h->lock);
	}
	for (;;) {
		/* Only page_heap_alloc_n asks for CENTRAL spans here (alignment 1). */
		page_heap_pending_drain(h, state == SPAN_CENTRAL ? PENDING_KEEP_PAGES : 0);
		s = dirty_fit(h, need, npages, align_pages);
		if (s == NULL && h->pending_pages != 0) {
			page_heap_pending_drain(h, 0);
			s = dirty_fit(h, need, npages, align_pages);
		}
		if (s == NULL && !looked_elsewhere) {
			looked_elsewhere = true;
			lock_release(&h->lock);
			page_heap_t *o = dirty_elsewhere(h, need, npages, align_pages, &s);
			if (o != NULL) {
				h = o; /* locked, s one of its dirty runs */
				break;
			}
			lock_acquire(&h->lock);
			continue; /* its dirty runs may have changed meanwhile */
		}
		if (s == NULL && state == SPAN_CENTRAL && align_pages == 1) {
			span_t *l = straddle_find(h, npages);
			if (l != NULL)
				return alloc_straddle(h, l, npages);
		}
		if (s == NULL)
			s = list_find(h, RUN_PURGED, need);
		if (s == NULL && align_pages > 1)
			s = list_find_aligned(h, RUN_PURGED, npages, align_pages, ALIGNED_SEARCH_RUNS);
		if (s != NULL)
			break;
		if (EBB_UNLIKELY(h->cold_runs != 0) && warm_all(h))
			continue;
		lock_release(&h->lock);
		if (!refused && grow(h)) {
			lock_acquire(&h->lock);
			continue;
		}
		/* errno stays ENOMEM from grow. */
		refused = true;
		h = next_heap_for_oom(h, &visited);
		if (h == NULL)
			return NULL;
		lock_acquire(&h->lock);
	}

	superblock_t *sb = span_superblock(s);
	page_heap_check_locked(h, sb, false);
	/* Take the end of the run so the front keeps its descriptor and its
	 * place in the LRU; with alignment, the aligned start nearest the end. */
	uintptr_t tail = (uintptr_t)superblock_page_addr(sb, s->page + (unsigned)(s->npages - npages));
	unsigned a = (unsigned)((util_align_down(tail, align_pages << EBB_PAGE_SHIFT) -
				 (uintptr_t)sb) >> EBB_PAGE_SHIFT);
	return alloc_take(h, sb, s, a, npages, state);
}

/* A CENTRAL request (alignment 1, h->lock held) while no heap has a dirty
 * run that could fit it: the growth of a program, where every span of small
 * blocks is cut from the tail of h's smallest purged run that fits (issue
 * 13: memreturn a takes one page at a time, and alloc_search's loop, with
 * its pending, dirty, other-heap and straddle looks that all come up empty,
 * cost ~265 instructions a span of 32 blocks). It takes what alloc_search
 * would take then: with h->dirty_pages 0, h has no dirty run, pending span
 * or LRU entry (so no straddle), and with fewer dirty run pages in all heaps
 * than asked no other heap's run fits (dirty_elsewhere's own test).
 * n spans of npages each, cut together from the tail of the smallest purged
 * run that holds them all (what n requests would cut one after another,
 * but for the run they come from): returns the last, the others linked
 * from its `next` down, the order in which single cuts would have handed
 * them out. NULL (lock still held) if h has no purged run that fits. */
static EBB_NOINLINE span_t *alloc_grow_tail(page_heap_t *h, size_t npages, unsigned n)
{
	size_t all = npages * n;
	span_t *s = list_find(h, RUN_PURGED, all);
	if (s == NULL)
		return NULL;
	superblock_t *sb = span_superblock(s);
	page_heap_check_locked(h, sb, false);
	/* alloc_take for a purged run's tail: no back part, no LRU, and the
	 * front keeps its first page, so only its last tag changes. */
	size_t front = s->npages - all;
	unsigned a = s->page + (unsigned)front;
	uint8_t zeroed = s->zeroed;
	list_remove(h, s);
	if (front) {
		span_set_npages(s, front);
		pmap_set(sb, a - 1, s->page, 0);
		list_insert(h, s);
	}
	h->purged_pages -= all;
	sb->free_pages -= (uint32_t)all;
	sb->empty_since_ns = 0;
	/* All but the last counted here, the last by alloc_finish, which checks
	 * the heap with every descriptor set up and releases the lock. */
	span_t *below = NULL;
	for (unsigned i = 0; i + 1 < n; i++) {
		span_t *t = alloc_place(h, sb, a + (unsigned)(i * npages), npages);
		alloc_hand_out(h, t, SPAN_CENTRAL, zeroed);
		t->next = below;
		below = t;
	}
	if (n > 1) {
		h->central_pages += all - npages;
		atomic_add_u64(&inuse_total_pages, all - npages);
	}
	span_t *top = alloc_finish(h, sb, a + (unsigned)(all - npages), npages, SPAN_CENTRAL, zeroed, true);
	top->next = below; /* the caller's alone now */
	return top;
}

span_t *page_heap_alloc_n(page_heap_t *h, size_t npages, unsigned n)
{
	/* The pending top first, with no more than the lock (bench/fastpath's
	 * reverse batch takes nearly every span so): alloc_search's set-up and
	 * its frame cost some 30 instructions a span. */
	lock_acquire(&h->lock);
	if (h->pending != NULL && (h->pending->npages == npages || pending_find(h, npages)))
		return pending_take(h);
	if (h->dirty_pages == 0 && dirty_run_pages() < npages) {
		span_t *s = alloc_grow_tail(h, npages, n);
		if (s != NULL)
			return s;
	}
	return alloc_search(h, npages, 1, SPAN_CENTRAL, true);
}

span_t *page_heap_alloc(page_heap_t *h, size_t npages, size_t align_pages, uint8_t state)
{
	if (state != SPAN_CENTRAL || align_pages != 1)
		return alloc_search(h, npages, align_pages, state, false);
	return page_heap_alloc_n(h, npages, 1);
}

void page_heap_free(span_t *s)
{
	page_heap_free_given_back(s, 0, 0);
}

/* The pages of s as runs of one kind each, left to right: each run merges
 * with the free neighbour of its kind (the one left of it is the run just
 * made, of the other kind, or a run outside s), so no two runs of one kind
 * end up side by side. The first run's descriptor is s's; the others'
 * are NONE (pages inside a span) until their run is made. */
static void free_pieces(page_heap_t *h, superblock_t *sb, span_t *s, uint64_t gone, uint64_t zero,
			uint64_t now)
{
	unsigned n = s->npages;
	for (unsigned i = 0, j; i < n; i = j) {
		uint64_t out = (gone >> i) & 1;
		for (j = i + 1; j < n && ((gone >> j) & 1) == out; j++)
			;
		uint64_t piece = (j >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << j) - 1) & ~(((uint64_t)1 << i) - 1);
		page_heap_run_free_coalesced(h, sb, s->page + i, j - i, out ? SPAN_FREE_PURGED : SPAN_FREE_DIRTY,
					     out && (zero & piece) == piece, now);
	}
}

/* page_heap_free_given_back's work, with h (sb's heap) locked by
 * lock_acquire_sb and the lock kept. Inlined: page_heap_free_spans, whose
 * spans have no page given back, keeps only the tests of a whole span
 * (its call and frame were some 25 instructions a span of the reverse
 * batch). purged (a constant false but in page_heap_free_large): every
 * page of s was given back already, and zeroed if zero is non-zero. */
EBB_INLINE void free_locked(page_heap_t *h, superblock_t *sb, span_t *s, uint64_t gone, uint64_t zero, uint64_t now,
			    bool purged)
{
	size_t n = s->npages;
	/* Only a CENTRAL span of at most 64 pages has given-back pages (bit i:
	 * page i); a bit past its pages would free a page not its own. */
	if (s->state != SPAN_CENTRAL || n > 64 || (n < 64 && (gone >> n) != 0))
		gone = 0;
	if (!purged)
		zero &= gone;
	if (s->state == SPAN_CENTRAL) {
		h->central_pages -= n;
		atomic_sub_u64(&inuse_total_pages, n);
	} else {
		h->large_pages -= n;
		page_heap_inuse_sub(n);
	}
	bool whole = gone == 0 && s->state == SPAN_CENTRAL && !purged;
	sb->free_pages += (uint32_t)n;
	if (whole)
		pending_push(h, sb, s, now);
	else if (purged)
		page_heap_run_free_coalesced(h, sb, s->page, n, SPAN_FREE_PURGED, zero != 0, now);
	else if (gone == 0)
		page_heap_run_free_coalesced(h, sb, s->page, n, SPAN_FREE_DIRTY, 0, now);
	else
		free_pieces(h, sb, s, gone, zero, now);
	if (sb->free_pages == sb->usable_pages)
		sb->empty_since_ns = now;
	PAGE_HEAP_CHECK(h, sb);
}

void page_heap_free_given_back(span_t *s, uint64_t gone, uint64_t zero)
{
	superblock_t *sb = span_superblock(s);
	page_heap_t *h = page_heap_owner(sb, false);
	uint64_t now = os_now_ns();
	lock_acquire_sb(h, sb);
	free_locked(h, sb, s, gone, zero, now, false);
	lock_release(&h->lock);
	page_heap_maybe_decay(h, now);
}

/* Waste at the peak, freed large blocks. A small program's peak RSS can come
 * while its heap holds still (PostgreSQL's backend: its shared memory and
 * file pages grow after its memory contexts freed blocks of 0.5-2 MiB), and
 * then whatever dirty pages the heap keeps are in the peak. Decay does not
 * purge those pages in time: the program keeps asking for large blocks, so
 * it reads as a loop (page_heap_looping) or a swing, whose pools the curve
 * leaves alone, and no climb of the heap's own mark owes them either. glibc
 * unmaps such a block at its free (an mmapped chunk above its threshold).
 * So a block of PAGE_HEAP_PROMPT_PAGES or more goes back to the kernel in
 * its free while the heap is small, unless the program asked for blocks of
 * that size, over the current or the last half decay_ms, for more pages
 * than it has in use: then it is cycling through them and would fault each
 * one in again (bench/realloc vector: 13 400 page faults became 62 000, and
 * bench/large's 35 400 became 89 000, when every such free purged; with
 * this test 14 600 and 35 700). Measured on initdb (`postgres --single`,
 * peak RSS, medians of 4 interleaved runs): 53 718 -> 53 226 KiB (glibc
 * 52 506: +2.3% -> +1.4%), 270 more page faults (22 533 -> 22 800). From
 * 64 pages (256 KiB) on: the same peak, and 570 more faults (initdb cycles
 * through 256 KiB blocks). The requests are counted in page_heap_asked_add
 * (WIN_BIG), any heap. */
static bool prompt_purge(size_t npages)
{
	if (npages < PAGE_HEAP_PROMPT_PAGES || options_get(OPT_DECAY_MS) < 0)
		return false;
	if (atomic_load_u64(&resident_high_pages) >= (options_dirty_max_bytes(0) >> EBB_PAGE_SHIFT))
		return false;
	return win_recent(WIN_BIG) <= atomic_load_u64(&inuse_total_pages);
}

void page_heap_free_large(span_t *s)
{
	size_t n = s->npages;
	if (!prompt_purge(n)) {
		page_heap_free(s);
		return;
	}
	superblock_t *sb = span_superblock(s);
	page_heap_t *h = page_heap_owner(sb, false);
	bool lazy = options_get(OPT_PURGE) == 1;
	/* The block is still the caller's: no lock while the kernel works. */
	if (!os_purge(span_start(sb, s), n << EBB_PAGE_SHIFT, lazy)) {
		page_heap_free(s);
		return;
	}
	uint64_t now = os_now_ns();
	lock_acquire_sb(h, sb);
	free_locked(h, sb, s, 0, !lazy, now, true);
	h->madvise_calls++;
	h->bytes_purged += (uint64_t)n << EBB_PAGE_SHIFT;
	h->purges++;
	lock_release(&h->lock);
	page_heap_maybe_decay(h, now);
}

/* One clock read, one lock hold per heap met in a row, one superblock check
 * per superblock met in a row and one decay hook per heap for the whole
 * list: a flush that empties spans empties about two at a time (reverse
 * batch of bench/fastpath: 2142 spans in 1078 flushes), and each paid them
 * all (with its call, 150-200 instructions of the ~460 its free cost). */
void page_heap_free_spans(span_t *list)
{
	uint64_t now = os_now_ns();
	page_heap_t *h = NULL;
	superblock_t *seen = NULL;
	for (span_t *s = list, *next; s != NULL; s = next) {
		next = s->next; /* a free run is linked through it */
		superblock_t *sb = span_superblock(s);
		if (sb != seen) {
			page_heap_t *o = page_heap_owner(sb, false);
			if (o != h) {
				if (h != NULL) {
					lock_release(&h->lock);
					page_heap_maybe_decay(h, now);
				}
				h = o;
				lock_acquire_sb(h, sb);
			} else if (EBB_UNLIKELY(sb->hdr_purging | sb->cold_n)) {
				lock_release(&h->lock);
				lock_acquire_sb(h, sb);
			}
			seen = sb;
		}
		free_locked(h, sb, s, 0, 0, now, false);
	}
	if (h != NULL) {
		lock_release(&h->lock);
		page_heap_maybe_decay(h, now);
	}
}

bool page_heap_resize(span_t *s, size_t new_npages)
{
	superblock_t *sb = span_superblock(s);
	page_heap_t *h = page_heap_owner(sb, false);
	size_t old = s->npages;
	if (new_npages == old)
		return true;
	uint64_t now = os_now_ns();
	bool ok = false;
	lock_acquire_sb(h, sb);
	page_heap_pending_drain(h, 0); /* the run right of s may be pending */
	if (new_npages < old) {
		size_t cut = old - new_npages;
		span_set_npages(s, new_npages);
		run_tags(sb, s);
		sb->free_pages += (uint32_t)cut;
		h->large_pages -= cut;
		page_heap_inuse_sub(cut);
		page_heap_run_free_coalesced(h, sb, s->page + (unsigned)new_npages, cut, SPAN_FREE_DIRTY, 0, now);
		ok = true;
	} else {
		unsigned right = s->page + (unsigned)old;
		size_t extra = new_npages - old;
		page_heap_asked_add(extra);
		span_t *r = right < (unsigned)sb->first_page + sb->usable_pages ? superblock_span_at(sb, right) : NULL;
		if (r && r->page == right && (r->state == SPAN_FREE_DIRTY || r->state == SPAN_FREE_PURGED) &&
		    r->npages >= extra) {
			uint8_t rstate = r->state, rzeroed = r->zeroed;
			uint64_t freed = r->u.free.freed_ns;
			size_t rest = r->npages - extra;
			page_heap_run_unlist(h, r);
			SPAN_SET_STATE(r, SPAN_NONE, &h->lock);
			if (rest) {
				/* The remainder gets a new descriptor; it counts as fresh in
				 * the LRU (a slight under-estimate of its age). */
				span_t *b = run_rest(h, sb, right + (unsigned)extra, rest, rstate, rzeroed, freed);
				page_heap_run_list(h, b, NULL);
			}
			if (rstate == SPAN_FREE_DIRTY) {
				decay_note_removed(&h->decay, extra);
				page_heap_reuse_add(extra);
			}
			span_set_npages(s, new_npages);
			s->zeroed = 0;
			sb->free_pages -= (uint32_t)extra;
			sb->empty_since_ns = 0;
			h->large_pages += extra;
			page_heap_inuse_add(extra);
			/* The caller fills pagemap for the new pages; tags here. */
			run_tags(sb, s);
			ok = true;
		}
	}
	lock_release(&h->lock);
	return ok;
}

/* ---------------------------------------------------------------------------
 * Stats and fork
 * ------------------------------------------------------------------------- */

/* Takes h->lock with no purge or release pass in flight. A pass has runs out
 * of the lists with the lock dropped; whoever must see every run (fork, trim)
 * waits for it to put them back. */
void page_heap_lock_idle(page_heap_t *h)
{
	for (;;) {
		lock_acquire(&h->lock);
		if (!h->purging)
			return;
		lock_release(&h->lock);
		os_yield();
	}
}

void page_heap_stats_add(page_heap_stats_t *acc)
{
	for (unsigned i = 0; i <= page_heaps_n; i++) {
		page_heap_t *h = page_heap_peek(i);
		if (h == NULL)
			continue;
		lock_acquire(&h->lock);
		acc->central_pages += h->central_pages;
		acc->large_pages += h->large_pages;
		acc->huge_pages += h->huge_pages;
		acc->huge_slack_pages += h->huge_slack_pages;
		acc->huge_blocks += h->huge_live;
		acc->dirty_pages += h->dirty_pages;
		acc->purged_pages += h->purged_pages;
		acc->meta_pages += h->meta_pages;
		acc->purges += h->purges;
		acc->madvise_calls += h->madvise_calls;
		acc->bytes_purged += h->bytes_purged;
		acc->large_allocs += h->large_allocs;
		lock_release(&h->lock);
	}
}

void page_heap_prefork(void)
{
	lock_bulk_enter();
	/* Held until the fork is done: no heap becomes ready meanwhile, so the
	 * postfork handlers see the set of heaps this one locked. */
	lock_acquire(&page_heaps_setup_lock);
	for (unsigned i = 0; i <= page_heaps_n; i++) {
		/* The child would never get back runs a pass has out. */
		if (page_heap_peek(i) != NULL)
			page_heap_lock_idle(&page_heaps[i].heap);
	}
	lock_bulk_leave();
}

void page_heap_postfork_parent(void)
{
	for (unsigned i = page_heaps_n + 1; i-- > 0;)
		if (page_heap_peek(i) != NULL)
			lock_release(&page_heaps[i].heap.lock);
	lock_release(&page_heaps_setup_lock);
}

void page_heap_postfork_child(void)
{
	for (unsigned i = 0; i <= page_heaps_n; i++)
		if (page_heap_peek(i) != NULL)
			lock_init(&page_heaps[i].heap.lock);
	lock_init(&page_heaps_setup_lock);
}
