/* tcache.c: thread cache slow paths: creation, refill, flush, trimming,
 * thread exit; and the part of free() that is not the fast path. */
#include "tcache/tcache.h"

#include <errno.h>
#include <string.h>

#include "core/runtime/atomic.h"
#include "core/process/background.h"
#include "core/blocks/central.h"
#include "core/process/init.h"
#include "core/pages/large.h"
#include "core/runtime/meta.h"
#include "core/runtime/options.h"
#include "core/runtime/report.h"
#include "os/os.h"

/* Never written: every bin empty (malloc misses) and full (free misses):
 * top == empty == full == the cache's one sentinel slot (tcache.h), and
 * every size of the direct table maps to class 0. */
#define TCACHE_STATIC(tc, slot)                                                                   \
	{                                                                                         \
		.top = { [0 ... EBB_NUM_CLASSES - 1] = &(slot) },                                 \
		.empty = { [0 ... EBB_NUM_CLASSES - 1] = &(slot) },                               \
		.full = { [0 ... EBB_NUM_CLASSES - 1] = &(slot) },                                \
		.sentinel_word = 1,                                                               \
	}
static void *tcache_empty_slot = TCACHE_SENTINEL(tcache_empty);
tcache_t tcache_empty = TCACHE_STATIC(tcache_empty, tcache_empty_slot);

__thread tcache_t *tcache_tls __attribute__((tls_model("initial-exec"))) = &tcache_empty;
/* Set by the thread-exit hook, which points TLS back at tcache_empty: the
 * thread's cache is gone, and the slow paths must not create another (they
 * work on the central lists). A flag rather than a second static cache:
 * each of its 3 * EBB_NUM_CLASSES bin pointers is a relocation the loader
 * writes, which made 2 pages of the library's data private in every process. */
static __thread bool tcache_exited __attribute__((tls_model("initial-exec")));

/* The list of live caches (for stats) and the pool of recycled ones: cold
 * (bins empty) and warm (bins as their thread left them; "The pool"). */
static ebb_lock_t tcache_list_lock = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_TCACHE_LIST);
static tcache_t *tcache_live, *tcache_pool, *tcache_pool_warm;
static uint64_t tcache_live_count;
static uint64_t tcache_warm_count, tcache_warm_bytes; /* the warm caches and their published bytes */
static uint64_t tcache_exited_refills, tcache_exited_flushes;

/* The shared CPU slot (os_cpu_slot_set): a new cache's thread takes CPU 0's
 * central lists and page heap wherever the scheduler moves it, and so does
 * every other cache's, until its slow paths have met another thread's in
 * the shared lists TCACHE_SHARED_CONFLICTS times (tcache_shared_busy counts
 * the slow paths inside): from then on it takes the lists of the CPU it
 * runs on, as every thread did before. A thread that moved between CPUs
 * carved a second set of spans (and took a second page heap, with a second
 * superblock's header) on the CPU it moved to, and kept both, and so did
 * threads that allocate one after the other (python's main thread, then its
 * worker): bench/py_alloc.py --threads=1 --rounds=4 peaked 300-700 KiB
 * higher in a third of its runs on 2 CPUs (31 504 KiB in each of 12 runs
 * pinned with taskset). Measured (max RSS, 2 x 8 runs interleaved with the
 * base): median 31 660 -> 31 454 KiB, highest 32 208 -> 31 520 (glibc
 * 30 440-30 684). The slow paths skip sched_getcpu: callgrind, bench_churn
 * 16 B-32 KiB 300K ops ws=1000 -1.8%, ws=100 000 -3.7% instructions,
 * larson t=1/t=2 -0.3%/-0.8%. Threads that allocate at the same time leave
 * after a few of their first slow paths, before their spans are many. */
#define TCACHE_SHARED_CONFLICTS 8u
/* Set in tcache_shared_busy (above any count of slow paths) by the first
 * cache that leaves the slot on conflicts: every other cache leaves at its
 * next slow path. Without it the last cache in the slot met no one there any
 * more and kept CPU 0's lists for good wherever it ran: bench_xmalloc t=2 (two
 * producer/consumer pairs, each pair on one of 2 CPUs) had one thread of the
 * pair on CPU 1 take CPU 0's lists while its partner took CPU 1's, so the
 * consumer's frees never reached the producer's refills (they went back to
 * spans and the producer carved): 67-73 instead of 36-39 CPU ns an operation
 * in the runs where that thread was the one on CPU 1. */
#define TCACHE_SHARED_OVER (1u << 31)
static uint32_t tcache_shared_busy EBB_ALIGNED(EBB_CACHELINE); /* its own line: every shared slow path writes it */

/* Before a slow path that reaches the central lists; true if the caller
 * must call tcache_shared_exit after it. */
static bool tcache_shared_enter(tcache_t *tc)
{
	if (!tc->shared || tc->in_shared) /* in_shared: a nested malloc (a hook's) */
		return false;
	tc->in_shared = true;
	uint32_t busy = __atomic_fetch_add(&tcache_shared_busy, 1, __ATOMIC_RELAXED);
	bool over = (busy & TCACHE_SHARED_OVER) != 0;
	if (over || (busy != 0 && ++tc->conflicts >= TCACHE_SHARED_CONFLICTS)) {
		tc->shared = false;
		os_cpu_slot_set(-1);
		if (!over) /* the first to leave on conflicts */
			__atomic_fetch_or(&tcache_shared_busy, TCACHE_SHARED_OVER, __ATOMIC_RELAXED);
	}
	return true;
}

static void tcache_shared_exit(tcache_t *tc, bool entered)
{
	if (entered) {
		__atomic_fetch_sub(&tcache_shared_busy, 1, __ATOMIC_RELAXED);
		tc->in_shared = false;
	}
}

/* Incremental trimming: every TRIM_EVENTS slow-path events, TRIM_BINS bins. */
#define TRIM_EVENTS 32u
#define TRIM_BINS 8u

/* ---------------------------------------------------------------------------
 * Bins
 * ------------------------------------------------------------------------- */
static uint32_t bin_count(const tcache_t *tc, unsigned cls)
{
	return (uint32_t)(tc->empty[cls] - tc->top[cls]);
}

static uint32_t bin_avail(const tcache_t *tc, unsigned cls)
{
	return (uint32_t)(tc->top[cls] - tc->full[cls]);
}

/* The slots of a bin's first region: two batches, the bound a class keeps
 * unless the budget lets it grow further (bin_grow). */
static uint32_t bin_first_cap(const size_class_t *k)
{
	return 2u * k->batch; /* <= bin_cap (size_class.c) */
}

/* Where the free fast path finds bin cls full: its bound, as far as its
 * region holds it. A bin's bound and its region are apart: the bound says
 * how many blocks the bin may hold, the region how many it has held so far
 * (bin_fit). */
EBB_INLINE void bin_set_full(tcache_t *tc, unsigned cls)
{
	uint32_t max = tc->max[cls], cap = tc->cap[cls];
	tc->full[cls] = tc->empty[cls] - (max < cap ? max : cap);
}

/* The slots of the region after one of `cap` slots (0: none yet), for a
 * bound of `max`: double until max fits, at most bin_cap. A bin whose bound
 * grew just past two batches (a producer's, with the budget to spare) moved
 * straight to bin_cap slots, of which it used the last hundred or so: one
 * page per class; now its regions stay about as large as its bound, packed
 * with the other bins'. Measured: bench/xmalloc t=1, /proc/self/smaps in
 * the run's steady state, the metadata chunks holding the caches 280 -> 164
 * KiB resident; peak RSS, medians of 5 interleaved runs, xmalloc t=1 3 800
 * -> 3 652 KiB, t=4 7 700 -> 7 432, churn 16 B-1 KiB ws=20K/t t=32 17 944 ->
 * 17 624, ws=10K t=1 5 848 -> 5 788, larson t=1, churn 16 B-32 KiB ws=1K and
 * realloc string within their noise; callgrind, xmalloc t=2/t=4, larson t=1
 * and both churns within 0.2% of the instructions. */
static uint32_t bin_next_cap(const size_class_t *k, uint32_t cap, uint32_t max)
{
	uint32_t next = cap == 0 ? bin_first_cap(k) : 2u * cap;
	while (next < max)
		next *= 2;
	return next < k->bin_cap ? next : k->bin_cap;
}

/* Gives bin cls a region of at least `want` slots (bin_next_cap's) at the
 * slot array's next free place, its sentinel right after them, and moves
 * the bin's blocks there (in order). Regions are handed out in the order bins need them, not by class: a bin
 * uses the end of its region (top grows down from `empty`), so with regions
 * of bin_cap slots (4 KiB up to 512 B) at fixed places each class in use
 * made a slot page of its own resident, 31-35 pages (124-140 KiB) per thread
 * with xmalloc's 64 classes. A bin starts with two batches' slots and moves
 * to a region twice as large (or more: bin_next_cap, up to bin_cap) each
 * time it must hold more blocks than its slots (bin_fit: a refill larger
 * than the region, nothing to copy; or a free that finds the region full
 * below the bound, which copies it); the region it leaves is never reused,
 * so a flush still reading from it (central_flush may re-enter malloc and
 * free) reads what it was given. Each class takes at most one region of each size of
 * that sequence: tcache_slot_count counts them. */
static EBB_NOINLINE void bin_place(tcache_t *tc, unsigned cls, uint32_t want)
{
	uint32_t cap = bin_next_cap(&size_classes[cls], tc->cap[cls], want);
	uint32_t n = bin_count(tc, cls);
	void **empty = tc->slots + tc->slot_next + cap;
	tc->slot_next += cap + TCACHE_BIN_GAP;
	*empty = TCACHE_SENTINEL(*tc);
	if (n != 0)
		memcpy(empty - n, tc->top[cls], n * sizeof(void *));
	tc->top[cls] = empty - n;
	tc->empty[cls] = empty;
	tc->cap[cls] = (uint16_t)cap;
	bin_set_full(tc, cls);
}

static unsigned big_first_class(void);

static EBB_NOINLINE void bin_set_max(tcache_t *tc, unsigned cls, uint32_t max)
{
	if (cls >= big_first_class()) {
		uint64_t bit = 1ull << (cls - big_first_class());
		tc->big_bins = max != 0 ? tc->big_bins | bit : tc->big_bins & ~bit;
	}
	tc->max[cls] = max;
	bin_set_full(tc, cls);
}

/* Gives bin cls a region of at least n slots (n <= bin_cap), if its own is
 * smaller: when a refill is to write n blocks into it, or a free finds it
 * holding as many blocks as its region has slots while its bound allows
 * more (n: the bound). A region grows with what the bin holds, not with its
 * bound: a producer's bin (a class it allocates and never frees) has a
 * bound that grows at every miss while the budget allows, but a refill
 * writes at most one batch into it for classes of 128 B and more
 * (tcache_refill), and no free fills it; moved to a region as large as its
 * bound, it left a trail of regions whose ends it had written, each on its
 * own part of the slot pages. */
EBB_INLINE void bin_fit(tcache_t *tc, unsigned cls, uint32_t n)
{
	if (n > tc->cap[cls])
		bin_place(tc, cls, n);
}

/* Takes the bin's next block, or NULL when it is empty. A block without
 * its mark is reported and dropped (leaked): it was freed twice and a copy
 * is out, or written after free. */
static void *bin_pop(tcache_t *tc, unsigned cls, const char *func)
{
	while (tc->top[cls] != tc->empty[cls]) {
		void *b = *tc->top[cls]++;
		if (EBB_LIKELY(freelist_mark_kept(b, freelist_mark_of(b, tc->mark)))) {
			freelist_clear_mark(b);
			return b;
		}
		freelist_lost_mark(func, b);
	}
	return NULL;
}

/* ---------------------------------------------------------------------------
 * Without a cache (before it exists, after the thread's exit hook ran, or
 * with tcache_max_bytes=0): straight to the central lists, one block at a time.
 * ------------------------------------------------------------------------- */
static void *alloc_uncached(unsigned cls)
{
	void *b;
	do {
		if (!central_refill(os_cpu_id(), cls, 1, false, &b))
			return NULL;
		if (EBB_LIKELY(freelist_mark_kept(b, freelist_mark_of(b, freelist_mark))))
			break;
		freelist_lost_mark("malloc", b);
	} while (1);
	freelist_clear_mark(b);
	return b;
}

static void free_uncached(void *p, unsigned cls)
{
	freelist_set_mark(p, freelist_mark);
	central_flush(os_cpu_id(), cls, &p, 1);
}

/* p carries the double-free mark: it is free already. Find where, for the
 * report (the thread's own bin, or its span's free list); a block that is in
 * another thread's cache or a transfer batch is reported all the same. */
static EBB_COLD void double_free(tcache_t *tc, void *p, unsigned cls)
{
	const char *why = "double free (the block is already free)";
	if (tc != NULL) {
		for (void **b = tc->top[cls]; b != tc->empty[cls]; b++) {
			if (*b == p) {
				why = "double free (the block is already in this thread's cache)";
				break;
			}
		}
	}
	if (central_span_holds_free(p))
		why = "double free (the block is already free in its span)";
	report_bad_pointer("free", p, why);
}

/* A bin's first refill, in bytes: a class with batches larger than this
 * starts with a bound of this many bytes' worth of blocks (at least one),
 * raised by as many at each later miss or full free until it is one batch,
 * and each refill below one batch takes this many bytes' worth (see
 * tcache_refill). A program
 * touches many large classes a few times each (python3: some 37 classes of
 * 2 KiB or more); a whole first batch would pin up to 64 KiB in each, about
 * 2.3 MiB per thread at the peak, while a class in real use reaches its
 * batch after a few misses (at most 4, for 32 blocks of 2 KiB). */
#define FIRST_REFILL_BYTES 4096u

/* The bound of a bin that has none yet: at most FIRST_REFILL_BYTES, at least
 * one block, at most one batch. */
static uint32_t bin_first_max(const size_class_t *k)
{
	uint32_t n = FIRST_REFILL_BYTES / k->size;
	if (n == 0)
		n = 1;
	return n < k->batch ? n : k->batch;
}

/* A class of CACHE_LATE_SIZE bytes or more gets a bin only at its
 * CACHE_LATE_USES-th slow-path use since the bin's last trim (a malloc that
 * found the bin empty counts 2, as it also counts a miss; a free that found
 * it without a bound, 1); until then its blocks go to and come from the
 * central lists one at a time, each call under the list's lock. A small
 * program touches many big classes a few times each (python3's lists grow by
 * realloc through every class from 512 B to 32 KiB; initdb's contexts), and
 * one cached block each kept a span of each of those classes from emptying,
 * so its pages could not go back to the page heap for the next class or
 * page run (the segregated heap's high water, issue 14). A class in real use
 * passes the count within its first 6 to 16 calls. Measured (medians of 5,
 * peak RSS): python3 one thread 35 696 -> 35 284 KiB, initdb 55 120 ->
 * 54 740 KiB, with churn's and xmalloc's instruction counts unchanged; at 64
 * uses churn 16 B-32 KiB ws=100K took 1.8% more instructions, and from 1 KiB
 * up python3 gained no more. */
#define CACHE_LATE_SIZE 4096u
#define CACHE_LATE_USES 16u

/* The first class of CACHE_LATE_SIZE bytes or more: its bins and those
 * above are big_bins_release's (bits of tc->big_bins: 28 classes). */
static unsigned big_first_class(void)
{
	return size_class_of(CACHE_LATE_SIZE);
}

/* Once the byte budget is spent, a bin grows past FIRST_REFILL_BYTES only
 * from its GROW_OVER_BUDGET_MISSES-th miss since its last trim, or once a
 * free found it full (bin_grow): a class a program uses in a short burst
 * then holds at most 4 KiB, not up to a 64 KiB batch, while one in steady
 * use misses that often between two trims and still reaches its batch. A
 * bin that only receives frees (a consumer thread) never misses: held at
 * 4 KiB, its flushes would stay below the central lists' transfer unit (one
 * batch) and go to the spans one block at a time. Measured (max RSS,
 * medians of 5 interleaved pairs): PYTHONMALLOC=malloc bench/py_alloc.py
 * --threads=1 --rounds=4 35 356 -> 35 228 KiB (spreads 35 348-35 596 and
 * 35 212-35 320;
 * glibc about 38 200; with pymalloc no change seen); initdb unchanged
 * within its noise (14 pairs, 55.3-57.7 MiB either way); callgrind,
 * bench_churn 16 B-32 KiB 2M ops: ws=1000 +0.06%, ws=100 000 -1.9%
 * instructions, xmalloc t=2 unchanged. At 2
 * misses python3 gained nothing; a 16 KiB threshold gained nothing on
 * either; at 16 misses (4 KiB) churn took 14-18% more instructions. */
#define GROW_OVER_BUDGET_MISSES 4u

/* Raises the bin's bound: from 0 to its first bound (for a big class, at
 * its CACHE_LATE_USES-th use), by a first bound's worth from there up to
 * one batch (doubling, a class of 2 KiB reached its 64 KiB batch at its
 * fourth miss and kept a burst's worth in its bin; now at its sixteenth),
 * then to two batches, and beyond by one batch at a time if the cache's
 * byte budget allows. Bounds up to one batch are granted
 * whatever the budget says (past FIRST_REFILL_BYTES, only to a bin that
 * missed GROW_OVER_BUDGET_MISSES times since its last trim), and so is the
 * second batch of a bin that a free once found full (they still count
 * against the budget):
 * - without a batch, a class that comes into use after the budget is spent
 *   would go to the central lists one block at a time, for every malloc and
 *   free (measured on bench/churn with sizes to 32 KiB: 2x the
 *   instructions);
 * - with one batch only, a refill (one batch, into an empty bin) leaves the
 *   bin full and a flush (from a full bin) leaves it empty, so a class whose
 *   mallocs and frees interleave meets the other end after about 2 * batch
 *   calls. With two, both leave the bin half full, and a random walk needs
 *   about (batch + 1)^2 calls to reach either end. bench/churn 16 B - 32 KiB,
 *   1000 slots (77 classes in use, the budget spent by their first batches):
 *   refills + flushes 31.8K -> 8.6K per 300K replacements, 197 -> 166
 *   instructions per replacement, peak RSS no higher (the blocks a bin keeps
 *   are blocks the central lists no longer hold).
 * The second batch serves only a class that meets both ends, so outside the
 * budget it goes only to a bin that missed at one batch after a free found
 * it full: a thread that only allocates a class (a burst, a producer) or
 * only frees it (a consumer) keeps one batch once the budget is spent. A
 * thread that allocated a burst in many classes and freed it kept two
 * batches of each, 2.7-3.2 MiB with tests/test_memory_return.cpp's mix,
 * which the thread holds until it runs again (tcache.h); now 1.5-1.9 MiB.
 * bench/churn 16 B - 32 KiB, whose bins take both ends, is unchanged (by
 * callgrind, 300K replacements: ws=1000 51.27M -> 50.86M instructions,
 * ws=100 000 90.07M -> 90.70M), and so are larson and xmalloc. A byte cap
 * per class instead (docs/memory-return.md, "Idle threads") cost churn
 * ws=1000 15% more instructions at 64 KiB a class.
 * The cache is thus bounded by the budget plus one batch (at most 64 KiB)
 * per class in use, two for those whose mallocs and frees interleave; a
 * class that missed once holds at most FIRST_REFILL_BYTES (or one block).
 * The bound is per thread, so the sum over threads grows with their number
 * (bench/xmalloc: 0.7, 2.9, 11.4 MiB cached at 2, 8, 32 pairs: about half a
 * batch per class in use per thread, all of it cycling, not idle). A bound
 * over all caches together must hold bins below one batch, the central
 * lists' transfer unit, to bite, which sends their refills and flushes to
 * the spans. Measured (4 MiB over all caches, xmalloc t=32): cached 11.4 ->
 * 5.0 MiB, peak RSS 38.9 -> 34.7 MiB, but 30% more instructions, as many
 * simulated L2 misses per block (callgrind, 1 MiB 16-way: 3.22 -> 3.29) and
 * no less CPU per operation; churn ws=10K t=32 took 1.9x the CPU. */
static void bin_grow(tcache_t *tc, unsigned cls)
{
	const size_class_t *k = &size_classes[cls];
	uint32_t max = tc->max[cls], to;
	uint64_t limit;
	if (max >= 2u * k->batch) {
		/* Tested first, and before the option is read: a bin at its cap
		 * is the common case of a class in steady use (every refill of
		 * bench/fastpath's batches). */
		to = max + k->batch;
		if (to > k->bin_cap)
			return;
		limit = (uint64_t)options_get(OPT_TCACHE_MAX_BYTES);
		if (limit == 0 || tc->budget + (uint64_t)k->batch * k->size > limit)
			return;
	} else {
		limit = (uint64_t)options_get(OPT_TCACHE_MAX_BYTES);
		if (limit == 0)
			return;
		if (max == 0) {
			if (k->size >= CACHE_LATE_SIZE && ++tc->misses[cls] < CACHE_LATE_USES)
				return;
			to = bin_first_max(k);
		} else if (max < k->batch) {
			to = max + bin_first_max(k);
			if (to > k->batch)
				to = k->batch;
			if ((uint64_t)to * k->size > FIRST_REFILL_BYTES && tc->misses[cls] < GROW_OVER_BUDGET_MISSES &&
			    !tc->was_full[cls] && tc->budget + (uint64_t)(to - max) * k->size > limit)
				return;
		} else {
			to = 2u * k->batch; /* <= bin_cap (size_class.c) */
			if (!tc->was_full[cls] && tc->budget + (uint64_t)(to - max) * k->size > limit)
				return;
		}
	}
	bin_set_max(tc, cls, to);
	tc->budget += (uint64_t)(to - max) * k->size;
}

static void publish(tcache_t *tc)
{
	uint64_t bytes = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++)
		bytes += (uint64_t)bin_count(tc, c) * tc->size[c];
	atomic_store_u64(&tc->published, bytes);
}

/* Gives the bin's n most recently freed blocks to the central lists (which
 * check each again before it goes back to its span). */
static void bin_flush(tcache_t *tc, unsigned cls, uint32_t n)
{
	void **top = tc->top[cls];
	tc->top[cls] = top + n;
	atomic_store_u64(&tc->flushes, tc->flushes + 1); /* read by ebb_stats_get */
	/* top[n] is the bin's next block or its sentinel: a slot to lend. */
	bool entered = tcache_shared_enter(tc);
	central_flush_spare(os_cpu_id(), cls, top, n);
	tcache_shared_exit(tc, entered);
}

/* Trims one bin: under `all`, empties it; otherwise, if it has not missed
 * (or been flushed full, slow_event) since its last trim (its stock outlived
 * its use), gives back half of its blocks and lowers its bound by a quarter,
 * down to one batch. */
static void bin_trim(tcache_t *tc, unsigned cls, bool all)
{
	const size_class_t *k = &size_classes[cls];
	uint32_t count = bin_count(tc, cls);
	if (all) {
		if (count)
			bin_flush(tc, cls, count);
	} else if (tc->misses[cls] == 0 && tc->max[cls] > 0) {
		tc->idle_shift[cls] = 0; /* idle a whole trim interval: back to the short window */
		if (count)
			bin_flush(tc, cls, (count + 1) / 2);
		uint32_t new_max = tc->max[cls] - tc->max[cls] / 4;
		if (new_max < k->batch)
			new_max = tc->max[cls] < k->batch ? tc->max[cls] : k->batch;
		count = bin_count(tc, cls);
		if (new_max < count)
			new_max = count;
		tc->budget -= (uint64_t)(tc->max[cls] - new_max) * k->size;
		bin_set_max(tc, cls, new_max);
	}
	tc->misses[cls] = 0;
}

/* Trims every bin; under `all` empties every bin but `keep` (0: none), which
 * is only trimmed. */
static void trim_all(tcache_t *tc, bool all, unsigned keep)
{
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++)
		bin_trim(tc, c, all && c != keep);
	publish(tc);
	TCACHE_CHECK(tc, 0);
}

/* See big_bins_release. */
#define BIG_IDLE_LARGE 3u
#define BIG_IDLE_SHIFT_MAX 10u
#define BIG_SCAN_EVERY 4u

/* The first refill or flush of bin cls after big_bins_release emptied it:
 * if it came within the bin's idle window, the release was early (the class
 * is in use, at a slower pace than the program's large allocations), and
 * the window doubles, up to BIG_IDLE_LARGE << BIG_IDLE_SHIFT_MAX (3072). A
 * loop that takes a block of 64 KiB and one of 8 KiB and frees both served
 * the 8 KiB block from its bin without a slow event, so every fourth pass
 * emptied the bin, and the block's span with it, and carved the span again
 * at the next: 4.4x the instructions (callgrind, 4 classes of 8-11 KiB a
 * pass). */
static EBB_NOINLINE void big_bin_reused(tcache_t *tc, unsigned cls)
{
	tc->released[cls] = 0;
	if ((uint16_t)(tc->large_clock - tc->used_at[cls]) <= BIG_IDLE_LARGE << tc->idle_shift[cls] &&
	    tc->idle_shift[cls] < BIG_IDLE_SHIFT_MAX)
		tc->idle_shift[cls]++;
}

/* The trims of slow_event, out of line: inlined, their loops made it a call
 * that saves and restores six registers at every event, where they run at
 * one event in TRIM_EVENTS or at a new epoch; without them slow_event is
 * inlined into its two callers (bench/fastpath random batch, callgrind:
 * tcache_alloc_slow, tcache_free_slow, slow_event and the trims 2.12 ->
 * 1.89 instructions a pair). */
static EBB_NOINLINE void trim_epoch_moved(tcache_t *tc, uint64_t epoch, unsigned cls)
{
	bool idle = epoch - tc->trim_epoch >= 2;
	tc->trim_epoch = epoch;
	trim_all(tc, idle, cls);
}

/* refill: called on a malloc's slow path, where the background thread may
 * be created; a flush is a free's, which may run inside glibc holding a lock
 * that pthread_create takes (background.c, maybe_start_at). */
static EBB_NOINLINE void trim_some(tcache_t *tc, bool refill)
{
	for (unsigned i = 0; i < TRIM_BINS; i++) {
		tc->trim_cursor = tc->trim_cursor % (EBB_NUM_CLASSES - 1) + 1;
		bin_trim(tc, tc->trim_cursor, false);
	}
	publish(tc);
	if (refill)
		background_maybe_start();
	else
		background_poll();
}

/* Called at every refill and flush of bin cls: the cache's clock for
 * trimming. A new trim epoch trims every bin; if the epoch moved by two or
 * more since this cache's previous slow event, a whole trim interval passed
 * without one: the thread was idle (or lived on its bins alone), and what
 * its bins hold is what its last burst left, so all of it goes back but the
 * bin being served. A thread that goes from a burst to light use thus keeps
 * its burst's stock for one to two intervals, not until a bin that did not
 * miss is halved again and again. */
static void slow_event(tcache_t *tc, unsigned cls, bool refill)
{
	/* A flush of a full bin counts as a miss for the trim (a refill's miss
	 * is counted already): a bin that only frees (a consumer thread) never
	 * misses, so every sweep halved it although it overflowed between two
	 * sweeps, sending (count + 1) / 2 blocks, less than a batch, to their
	 * spans, from which producers then took them back through the spans.
	 * bench/xmalloc, 1M blocks, callgrind, instructions in malloc + free
	 * per block: t=2 78.7 -> 74.7, t=32 87.8 -> 81.9. An idle bin is still
	 * halved at the first sweep after the one that found it used. */
	if (tc->misses[cls] == 0)
		tc->misses[cls] = 1;
	if (EBB_UNLIKELY(tc->released[cls]))
		big_bin_reused(tc, cls);
	tc->used_at[cls] = tc->large_clock;
	uint64_t epoch = background_trim_epoch();
	if (EBB_UNLIKELY(epoch != tc->trim_epoch))
		trim_epoch_moved(tc, epoch, cls);
	else if (EBB_UNLIKELY(++tc->events % TRIM_EVENTS == 0))
		trim_some(tc, refill);
}

/* ---------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------- */
/* The pool. A thread that exits while at least two other threads have
 * caches leaves its cache in the pool warm, its bins as they are, and the
 * next thread to start takes it over (a server that serves each connection
 * from a short-lived thread: bench/larson). Flushing every bin at the exit
 * and filling them again from their first small bounds (bin_grow) in the
 * successor cost each thread's life about 70 000 instructions (refills,
 * flushes to spans and creation; the creation alone 9 400, most of it the
 * class_of table a warm cache keeps). Measured (callgrind, bench/larson
 * --ops=4m, 40 threads at t=2, 640 at t=32): the whole program at t=32
 * 645.7 M -> 617.8 M instructions (t=2 598.8 M -> 599.0 M), the library's
 * per replacement 55.5 -> 48.6 (t=2 45.2); simulated D1 misses 8.39 M ->
 * 7.32 M (measured before the exit started the background thread, 608.5 M
 * then: under callgrind's slowness its ticks flush warm caches). Its CPU
 * time per replacement did not move measurably (11 pairs on a loaded
 * machine, 0.98): the loop's misses in 32 arrays dominate it.
 * What warm caches hold is bounded: at most TCACHE_WARM_MAX caches and
 * TCACHE_WARM_BYTES bytes of blocks over all of them (a cache that would
 * pass either is flushed at its exit, as before), and none stays warm
 * longer than a trim interval or two: at each new trim epoch the background
 * tick flushes every warm cache whose thread's last slow path saw an epoch
 * two or more behind (tcache_pool_cool; ebb_trim flushes all of them), as
 * the thread itself would have at its next slow path (slow_event). The exit
 * that leaves at most one thread with a cache flushes its own and every warm
 * cache before background_thread_exited drains the central lists: a program
 * whose workers have all ended holds nothing in caches nobody runs. A warm
 * cache's blocks carry their free mark like any cached block: a double free
 * of one is reported, and only the thread that takes the cache from the
 * pool (under tcache_list_lock) hands them out. */
#define TCACHE_WARM_MAX 64u
#define TCACHE_WARM_BYTES ((uint64_t)8 << 20)

/* Flushes the warm caches of the pool, all of them or those whose thread's
 * last slow path saw a trim epoch two or more behind, and returns them to
 * the pool cold. They leave the pool while they are flushed (under the lock
 * they would hold it through central_flush), so no thread takes one half
 * flushed; a creation meanwhile takes another or makes one. */
static void tcache_pool_cool(bool all)
{
	uint64_t epoch = background_trim_epoch();
	tcache_t *take = NULL;
	lock_acquire(&tcache_list_lock);
	for (tcache_t **at = &tcache_pool_warm; *at != NULL;) {
		tcache_t *c = *at;
		if (all || epoch - c->trim_epoch >= 2) {
			*at = c->next;
			tcache_warm_count--;
			tcache_warm_bytes -= c->published;
			c->next = take;
			take = c;
		} else {
			at = &c->next;
		}
	}
	background_note_warm((uint32_t)tcache_warm_count);
	lock_release(&tcache_list_lock);
	while (take != NULL) {
		tcache_t *c = take;
		take = c->next;
		trim_all(c, true, 0); /* c->shared is false: no shared-slot count */
		c->warm = false;
		lock_acquire(&tcache_list_lock);
		c->next = tcache_pool;
		tcache_pool = c;
		lock_release(&tcache_list_lock);
	}
}

/* The background tick's hook, at each new trim epoch (background.c): about
 * once a second, one lock and a walk of at most TCACHE_WARM_MAX caches. */
static void tcache_epoch_hook(bool all)
{
	tcache_pool_cool(all);
}

/* The thread-exit hook (a pthread key destructor). Its argument is the key's
 * value, which a program bug (a stray write into libc's key table) can
 * change: it is not trusted. The thread's cache is what its own TLS pointer
 * says; if the argument differs, it was forged, and only our pointer is
 * used. */
static void tcache_thread_exit(void *arg)
{
	(void)arg;
	tcache_t *tc = tcache_self();
	if (tc == &tcache_empty)
		return;
	publish(tc);
	uint64_t bytes = tc->published;
	bool stale = background_trim_epoch() - tc->trim_epoch >= 2; /* its next slow path would flush all */
	lock_acquire(&tcache_list_lock);
	bool warm = !stale && bytes != 0 && tcache_live_count > 2 && tcache_warm_count < TCACHE_WARM_MAX &&
		    tcache_warm_bytes + bytes <= TCACHE_WARM_BYTES;
	if (warm) { /* room reserved: the cache's bins do not change from here */
		tcache_warm_count++;
		tcache_warm_bytes += bytes;
		background_note_warm((uint32_t)tcache_warm_count);
	}
	lock_release(&tcache_list_lock);
	if (!warm)
		trim_all(tc, true, 0);
	tcache_exited = true;
	tcache_tls = &tcache_empty;
	lock_acquire(&tcache_list_lock);
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		tcache_live = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	tcache_live_count--;
	if (tc->shared)
		os_cpu_slot_set(-1); /* its last frees go to the CPU it runs on */
	tc->shared = false;      /* a flush from the pool counts in no shared slot */
	tcache_exited_refills += tc->refills;
	tcache_exited_flushes += tc->flushes;
	uint64_t left = tcache_live_count;
	tc->warm = warm;
	if (warm) {
		tc->next = tcache_pool_warm;
		tcache_pool_warm = tc;
	} else {
		tc->next = tcache_pool;
		tcache_pool = tc;
	}
	lock_release(&tcache_list_lock);
	if (left <= 1)
		tcache_pool_cool(true);
	else if (warm)
		background_start_for_pool();
	background_thread_exited(os_now_ns(), left);
}

/* The thread-exit hook is registered by the first cache created (once per
 * process; pthread_key_create does not allocate). */
static uint32_t tcache_hook_state; /* 0 none, 1 registering, 2 ready, 3 failed */

static bool tcache_hook_ready(void)
{
	uint32_t s = atomic_load_u32_acquire(&tcache_hook_state);
	if (EBB_LIKELY(s == 2))
		return true;
	if (s == 0 && atomic_cas_u32(&tcache_hook_state, 0, 1)) {
		background_set_epoch_hook(tcache_epoch_hook);
		bool ok = os_thread_exit_hook(tcache_thread_exit);
		atomic_store_u32_release(&tcache_hook_state, ok ? 2 : 3);
		return ok;
	}
	while ((s = atomic_load_u32_acquire(&tcache_hook_state)) == 1)
		os_yield();
	return s == 2;
}

/* Slots of all bins of one cache: class 0's sentinel, then room for each
 * class's regions (bin_place, bin_next_cap: each size of the sequence at
 * most once), each followed by its sentinel (at `empty`, tcache.h) and
 * TCACHE_BIN_GAP - 1 unused slots. Both fast paths read the slot at `top`
 * when the bin is empty. */
static size_t tcache_slot_count(void)
{
	size_t n = 1;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		const size_class_t *k = &size_classes[c];
		uint32_t cap = 0;
		do {
			cap = bin_next_cap(k, cap, cap + 1);
			n += cap + TCACHE_BIN_GAP;
		} while (cap < k->bin_cap);
	}
	return n;
}

/* Puts tc on the list of live caches (tcache_list_lock held). */
static void tcache_live_link(tcache_t *tc)
{
	tc->prev = NULL;
	tc->next = tcache_live;
	if (tc->next)
		tc->next->prev = tc;
	tcache_live = tc;
	tcache_live_count++;
}

/* The calling thread takes tc, new or from the pool. */
static tcache_t *tcache_started(tcache_t *tc)
{
	tc->shared = true;
	os_cpu_slot_set(0);
	/* TLS first: arming the exit hook may allocate (pthread_setspecific for
	 * high key numbers), and that allocation must find this cache. */
	tcache_tls = tc;
	os_thread_exit_set(tc);
	return tc;
}

static tcache_t *tcache_create(void)
{
	/* Without the exit hook a cache's blocks would be stranded when its
	 * thread ends: work uncached instead. */
	if (options_get(OPT_TCACHE_MAX_BYTES) == 0 || !tcache_hook_ready())
		return NULL;
	lock_acquire(&tcache_list_lock);
	tcache_t *tc = tcache_pool_warm;
	if (tc != NULL) {
		/* Bins, bounds, tables and trim clock as its last thread left
		 * them (a stale one flushes at its first slow path, slow_event). */
		tcache_pool_warm = tc->next;
		tcache_warm_count--;
		tcache_warm_bytes -= tc->published;
		background_note_warm((uint32_t)tcache_warm_count);
		tc->warm = false;
		tc->refills = tc->flushes = 0; /* counted in tcache_exited_* */
		tc->in_shared = false;
		tc->conflicts = 0;
		tcache_live_link(tc);
		lock_release(&tcache_list_lock);
		return tcache_started(tc);
	}
	tc = tcache_pool;
	if (tc)
		tcache_pool = tc->next;
	lock_release(&tcache_list_lock);
	void **slots = tc ? tc->slots : NULL;
	if (tc == NULL) {
		/* One mapping, the cache first (page aligned: its 5.5 KiB on two
		 * pages, not three) and the slots right after it, so that class
		 * 0's slot, written here, and the first bins' slots share the
		 * cache's second page (a process that allocates once touches 3
		 * pages here, was 5). The slots are never cleared: a bin reads
		 * only what it wrote, so their pages stay untouched (not
		 * resident) until a bin reaches them. */
		_Static_assert(sizeof(tcache_t) % sizeof(void *) == 0, "slots aligned");
		tc = meta_alloc(sizeof(tcache_t) + tcache_slot_count() * sizeof(void *), EBB_PAGE_SIZE);
		if (tc == NULL)
			return NULL;
		slots = (void **)(tc + 1);
	}
	memset(tc, 0, sizeof *tc);
	tc->slots = slots;
	/* Class 0's one slot is the first; every other bin waits on the idle
	 * slot until bin_place gives it its own (only the slot pages of bins
	 * in use become resident). */
	*slots = TCACHE_SENTINEL(*tc);
	tc->slot_next = 1;
	tc->idle_slot = TCACHE_SENTINEL(*tc);
	for (unsigned c = 0; c < EBB_NUM_CLASSES; c++) {
		void **at = c == 0 ? slots : &tc->idle_slot;
		tc->top[c] = tc->empty[c] = tc->full[c] = at;
		tc->mul[c] = size_classes[c].block_mul;
		tc->limit[c] = size_classes[c].block_limit;
		tc->size[c] = size_classes[c].size;
	}
	for (size_t size = 0; size <= TCACHE_DIRECT_MAX; size++)
		tc->class_of[size] = (uint8_t)size_class_of(size);
	tc->mark = freelist_mark;
	tc->sentinel_word = tc->mark | 1; /* never 0 nor the sentinel's mark (tcache.h) */
	tc->trim_epoch = background_trim_epoch();
	lock_acquire(&tcache_list_lock);
	tcache_live_link(tc);
	lock_release(&tcache_list_lock);
	return tcache_started(tc);
}

/* The calling thread's cache, created on first use; NULL if it has none. */
static tcache_t *tcache_get(void)
{
	tcache_t *tc = tcache_self();
	if (EBB_LIKELY(tc != &tcache_empty))
		return tc;
	return tcache_exited ? NULL : tcache_create();
}

/* ---------------------------------------------------------------------------
 * malloc slow path
 * ------------------------------------------------------------------------- */
/* A refill into a bin whose bound grew to four batches or more (a class
 * that kept missing: a bulk allocation, a producer thread) takes half the
 * bound in whole batches, as a flush of a full bin gives back half, but at
 * most this many bytes' worth: with one batch per refill, a bin that can
 * hold 512 blocks of 32 B went to the central list every 32 mallocs of a
 * bulk allocation, and each trip costs the slow path's fixed work (the cpu
 * id, the list, the trim clock: some 200 instructions). Only classes below
 * 128 B gain (one batch of 128 B is 4 KiB already), so the blocks a bulk
 * allocation leaves in a bin when it ends are under 4 KiB more per class.
 * perf.fastpath random 134.1 -> 125.1, reverse 104.0 -> 94.3 a pair (8192
 * here saved about one more, and xmalloc's peak RSS looked higher, if
 * within its noise). */
#define REFILL_MAX_BYTES 4096u

/* A cache's first refills (over all classes) take new spans while the page
 * heaps hold dirty pages (central_refill_fresh). A larson t=2 thread makes
 * about 60; with the first 4, 20 or every one, CPU a replacement was 0.915,
 * 0.906 and 0.909 of none (chrt -f 1, 11 sets), so the bound matters little
 * there; it keeps a long-lived thread's later refills on the partial spans
 * and transfer batches, which the page heap's dirty pages would otherwise
 * replace. */
#define TCACHE_FRESH_REFILLS 16u

/* Fills the empty bin of cls with one batch, or more (REFILL_MAX_BYTES);
 * while the bound is under two batches, less: FIRST_REFILL_BYTES' worth
 * while it is under one (a bin's first refills, bin_grow), half a batch
 * while it is under two. Whatever a refill takes beyond what the program
 * then uses sits in the bin and keeps its spans from emptying; a class with
 * a bound of one batch holds a burst's or a trim's worth, not steady churn
 * (a bin whose mallocs and frees interleave reaches two batches, and its
 * refills stay whole batches). Measured (medians of 5 runs, max RSS, against
 * the whole-batch refills and doubling bounds): python3 -c pass 14 700 ->
 * 14 444 KiB, bench/py_alloc.py --threads=1 --rounds=4 34 704 -> 34 508 KiB
 * (glibc 33 460), initdb 55 752 -> 55 616 KiB (within its noise); callgrind,
 * bench_churn 16 B-32 KiB ws=1000 2M ops +0.04%, 16 B-1 KiB ws=100K -0.01%,
 * larson t=1 +0.02%, xmalloc t=1 +0.02% instructions. false if the kernel
 * refused memory. */
static bool tcache_refill(tcache_t *tc, unsigned cls)
{
	const size_class_t *k = &size_classes[cls];
	unsigned want = k->batch;
	if (tc->max[cls] < want) {
		want = bin_first_max(k) < tc->max[cls] ? bin_first_max(k) : tc->max[cls];
	} else if (tc->max[cls] < 2u * want && want > bin_first_max(k)) {
		want /= 2;
	} else if (tc->max[cls] >= 4u * want) {
		unsigned half = tc->max[cls] / 2, most = REFILL_MAX_BYTES / k->size;
		if (half > most)
			half = most;
		if (half > want)
			want = half / want * want;
	}
	bin_fit(tc, cls, want);
	void **at = tc->empty[cls] - want; /* want <= cap: inside the bin's slots */
	bool entered = tcache_shared_enter(tc);
	unsigned n = tc->refills < TCACHE_FRESH_REFILLS ? central_refill_fresh(os_cpu_id(), cls, want, at)
						       : central_refill(os_cpu_id(), cls, want, true, at);
	tcache_shared_exit(tc, entered);
	if (n == 0)
		return false;
	if (n < want)
		memmove(tc->empty[cls] - n, at, n * sizeof(void *));
	tc->top[cls] = tc->empty[cls] - n;
	atomic_store_u64(&tc->refills, tc->refills + 1); /* read by ebb_stats_get */
	slow_event(tc, cls, true);
	TCACHE_CHECK(tc, cls);
	return true;
}

/* At every BIG_SCAN_EVERY-th large allocation (above EBB_SMALL_MAX: pages
 * from the page heap), every bin of a class of CACHE_LATE_SIZE bytes or more
 * that had no refill or flush during the thread's last BIG_IDLE_LARGE << its
 * idle_shift large allocations goes back to its spans, fewer than a batch at
 * a time so that central_flush does not park it in a transfer batch: blocks
 * of such classes cached from an earlier burst keep their spans (one to four
 * blocks of the classes above 8 KiB) from emptying while the program asks
 * the page heap for pages those spans would give it. A byte bound cannot tell
 * this from steady use (churn 16 B-32 KiB keeps about a batch in each of its
 * 28 big classes, 1.8 MiB); a large allocation can: churn makes none,
 * initdb's memory contexts one for each block of 64 KiB and more. A bin
 * needed again within its window after a release (big_bin_reused) gets a
 * window twice as long, so a class in use at a slower pace than the large
 * allocations is not emptied and refilled again and again; a trim that
 * finds the bin idle sets it back.
 * Measured, initdb's largest process (max RSS, medians of 5 runs, KiB,
 * looking at every large allocation, without the doubling): none 54 400,
 * idle over 0 / 1 / 3 large allocations 53 756 / 53 908 / 53 684 (glibc
 * 52 500); the bins flushed whole (into transfer batches) 54 892 against
 * 53 544 in pieces. The walk (bins with a bound only, tc->big_bins) costs
 * about 20 instructions a bin; a loop of malloc(64 KiB), 4 blocks of 8-11
 * KiB malloc'ed and freed, free: callgrind 288.3 M instructions, 1 282 M
 * when every 4th pass emptied the 4 bins (their spans returned and carved
 * again), 313 M with the doubling and the walk over bins with a bound only,
 * 306.8 M looking every 4th. Only malloc's large blocks count: counting
 * calloc's and the aligned allocators' too raised python3's peak (py_alloc
 * --threads=1 --rounds=4, repeatable with PYTHONHASHSEED=0, setarch -R and
 * no background thread) 31 804 -> 32 072 KiB: a calloc served from the
 * pages a release has just freed must clear them, where fresh pages are
 * zero and stay untouched until used. */
static EBB_NOINLINE void big_bins_release(tcache_t *tc)
{
	uint16_t now = tc->large_clock;
	unsigned first = big_first_class();
	bool any = false;
	for (uint64_t left = tc->big_bins; left != 0; left &= left - 1) {
		unsigned c = first + (unsigned)__builtin_ctzll(left);
		/* used_at wraps with the clock: a bin idle for a multiple of
		 * 65 536 large allocations waits for the next one. */
		if (bin_count(tc, c) == 0 || (uint16_t)(now - tc->used_at[c]) <= BIG_IDLE_LARGE << tc->idle_shift[c])
			continue;
		/* The count is read again after each piece: a flush may call back
		 * into this thread's malloc and free (free_small_slow). */
		uint32_t piece = size_classes[c].batch - 1u, n; /* batch >= 2 */
		while ((n = bin_count(tc, c)) > 0)
			bin_flush(tc, c, n < piece ? n : piece);
		tc->used_at[c] = now;
		tc->released[c] = 1;
		any = true;
	}
	if (any)
		publish(tc);
}

EBB_HOT_TEXT void *tcache_alloc_mid(size_t size)
{
	return tcache_alloc_mid_from(tcache_self(), size);
}

/* A large allocation of this thread's: every BIG_SCAN_EVERY-th runs
 * big_bins_release (the windows are counted in all of them). */
EBB_INLINE void large_tick(void)
{
	tcache_t *own = tcache_self();
	if (own != &tcache_empty && ++own->large_clock % BIG_SCAN_EVERY == 0)
		big_bins_release(own);
}

/* A page run the heap profiler makes in malloc's or realloc's place (a
 * sample) counts as the large allocation it stands in for: skipped, with
 * prof=1 big_bins_release ran at other moments than without, and the
 * spans it keeps or gives back sat elsewhere (bench realloc vector copied
 * 2.2% more with prof=1 over 12 seeded runs, 0.5% with samples counted). */
void tcache_large_tick(void)
{
	large_tick();
}

EBB_HOT_TEXT void *tcache_alloc_slow(size_t size)
{
	if (EBB_UNLIKELY(!init_ensure())) {
		errno = ENOMEM;
		return NULL;
	}
	if (size > EBB_SMALL_MAX) {
		large_tick();
		return large_alloc(size, EBB_MIN_ALIGN, false);
	}
	unsigned cls = size_class_of(size);
	tcache_t *tc = tcache_get();
	if (tc == NULL)
		return alloc_uncached(cls);
	/* The bin may hold blocks: the cache may have been created just now (an
	 * allocation during creation refilled it), or the fast path found a
	 * block without its mark, which bin_pop reports and drops. */
	void *b = bin_pop(tc, cls, "malloc");
	if (b != NULL)
		return b;
	tc->misses[cls]++;
	bin_grow(tc, cls);
	if (tc->max[cls] == 0) /* tcache_max_bytes=0 */
		return alloc_uncached(cls);
	do {
		if (!tcache_refill(tc, cls))
			return NULL;
	} while ((b = bin_pop(tc, cls, "malloc")) == NULL);
	/* The fast path prefetches the block after the one it hands out
	 * (tcache_pop); this pop is the refill's, so the bin's next block is
	 * fetched here, else the first fast pop after every refill waits for
	 * its mark (a refill from a transfer batch brings addresses only, of
	 * blocks flushed long ago). The slot at top is readable: a block or
	 * the sentinel. bench/latency, the first malloc after a refill
	 * (classified with counters in a test build): t=1 median 120 -> 20
	 * ns, t=4 mean 68 -> 43 ns; its share of the calls at or above malloc's
	 * p99 6% -> 0.6% (t=1), 2.2% -> 0.9% (t=4). */
	if (EBB_CHECKS)
		__builtin_prefetch(*tc->top[cls], 1);
	return b;
}

/* ---------------------------------------------------------------------------
 * free slow path
 * ------------------------------------------------------------------------- */
static void free_small_slow(void *p, unsigned cls)
{
	bool first = tcache_self() == &tcache_empty;
	tcache_t *tc = tcache_get();
	if (EBB_UNLIKELY(freelist_marked(p, freelist_mark))) {
		double_free(tc, p, cls);
		return;
	}
	/* A thread's first free goes back to its span, not into the cache it
	 * creates: it is typically of an object handed to the thread by its
	 * creator, allocated next to the objects handed to its siblings, and
	 * reusing it here would have the siblings write to one cache line for
	 * their whole lives (passive false sharing, bench/cache_scratch). */
	if (tc == NULL || first) {
		free_uncached(p, cls);
		return;
	}
	if (bin_avail(tc, cls) == 0) {
		if (tc->max[cls] < size_classes[cls].batch)
			bin_grow(tc, cls);
		if (tc->max[cls] == 0) {
			free_uncached(p, cls);
			return;
		}
		if (bin_avail(tc, cls) == 0 && tc->max[cls] > tc->cap[cls])
			bin_fit(tc, cls, tc->max[cls]); /* full to its region, not its bound */
		if (bin_avail(tc, cls) == 0) {
			/* Full: give back half, in whole batches where possible. */
			uint32_t batch = size_classes[cls].batch, count = bin_count(tc, cls);
			uint32_t n = (count / 2 + batch - 1) / batch * batch;
			bin_flush(tc, cls, n < count ? n : count);
			tc->was_full[cls] = 1;
			slow_event(tc, cls, false);
			TCACHE_CHECK(tc, cls);
			/* The flush and the slow event may call back into this
			 * thread's malloc and free (a span that empties starts the
			 * background thread, and pthread_create allocates): frees of
			 * this class there may have filled the bin again. */
			if (EBB_UNLIKELY(bin_avail(tc, cls) == 0)) {
				free_uncached(p, cls);
				return;
			}
		}
	}
	freelist_set_mark(p, tc->mark);
	*--tc->top[cls] = p;
}

/* realloc's move of a block (core/api/api.c, REALLOC_UNCACHED_MIN): the
 * new block comes from the bin if it holds one (a block the program freed),
 * else it is one block from the central lists; the bin is neither refilled
 * nor grown, so it takes no batch that would wait there for the next block
 * to move into the class. */
void *tcache_alloc_moving(unsigned cls)
{
	void *b = bin_pop(tcache_self(), cls, "realloc");
	return b != NULL ? b : alloc_uncached(cls);
}

/* The block realloc moved out of: back to its span, not into the bin. */
void tcache_free_moved(void *p, unsigned cls)
{
	free_uncached(p, cls);
}

EBB_HOT_TEXT void tcache_free_slow(void *p)
{
	if (p == NULL)
		return;
	span_t *s;
	const char *why;
	unsigned cls = block_lookup(p, &s, &why);
	if (cls != 0) {
		free_small_slow(p, cls);
		return;
	}
	if (why != NULL) {
		report_bad_pointer("free", p, why);
		return;
	}
	large_free_checked(p, "free");
}

/* ---------------------------------------------------------------------------
 * Requests from other layers, stats, fork
 * ------------------------------------------------------------------------- */
void tcache_flush_self(void)
{
	tcache_t *tc = tcache_self();
	if (tc != &tcache_empty)
		trim_all(tc, true, 0);
}

void tcache_stats(uint64_t *bytes, uint64_t *threads, uint64_t *refills, uint64_t *flushes)
{
	tcache_t *self = tcache_self();
	if (self != &tcache_empty)
		publish(self);
	lock_acquire(&tcache_list_lock);
	*threads = tcache_live_count;
	*refills = tcache_exited_refills;
	*flushes = tcache_exited_flushes;
	*bytes = tcache_warm_bytes;
	for (tcache_t *tc = tcache_live; tc; tc = tc->next) {
		*bytes += atomic_load_u64(&tc->published);
		*refills += atomic_load_u64(&tc->refills);
		*flushes += atomic_load_u64(&tc->flushes);
	}
	lock_release(&tcache_list_lock);
}

void tcache_prefork(void)
{
	lock_acquire(&tcache_list_lock);
}

void tcache_postfork_parent(void)
{
	lock_release(&tcache_list_lock);
}

void tcache_postfork_child(void)
{
	/* Only the forking thread exists in the child: the other caches' blocks
	 * are lost to it (a bounded, one-time leak); drop them from the list so
	 * the stats speak of this process only. */
	lock_init(&tcache_list_lock);
	tcache_t *self = tcache_self();
	tcache_live = NULL;
	tcache_live_count = 0;
	if (self != &tcache_empty) {
		self->next = self->prev = NULL;
		tcache_live = self;
		tcache_live_count = 1;
	}
	/* No other thread is inside a slow path in the child, and none took the
	 * slot beside it: the child's new threads may share it again. */
	tcache_shared_busy = self != &tcache_empty && self->in_shared ? 1 : 0;
}
