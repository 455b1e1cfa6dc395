/* prof.c: the sampled heap profiler: sampling decisions, the sample and site
 * tables, the profile file and the leak report (see prof.h). */
#include "core/process/prof.h"

#include <errno.h>
#include <string.h>

#include "core/blocks/size_class.h"
#include "core/process/init.h"
#include "core/pages/large.h"
#include "core/pages/page_heap.h"
#include "core/runtime/atomic.h"
#include "core/runtime/meta.h"
#include "core/runtime/options.h"
#include "core/runtime/report.h"
#include "core/pages/superblock.h"
#include "os/os.h"
#include "os/os_prof.h"

/* A count's pairs of counters (live_n and live_bytes, alloc_n and
 * alloc_bytes) change side by side, and gcc 12's SLP vectorizer made each
 * pair's update a vector load, add and store, with the vector of (1, size)
 * built at the function's entry and spilled: bench aligned 64B-2M, about
 * 11 instructions a sample more than adds to memory (prof_alloc, prof_insert,
 * the free hook). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-slp-vectorize")
#endif

/* Frames kept per stack (pprof shows the innermost ones first). */
#define PROF_DEPTH 64
/* The hash tables' heads and the replay slots (prof_replays):
 * PROF_HEADS_BYTES at the start of the first carving chunk
 * (prof_tables_make), made at the first sample, so that a process that
 * takes none pays no page for them (bench cache-thrash t=2: most runs take
 * none), and the first sample's site, count, entry and replay record (about
 * 750 bytes for a short stack) are carved from the rest of the heads' page:
 * one page where the heads (written at start-up) and the chunk were two.
 * A sample's insert and free and a new count land on a head at random, so
 * every page of a table is faulted in after a few samples: at 4 096 heads
 * (8 pages) each, the profiler's own code took about 48 minor faults in
 * bench realloc string (64 MB, about 300 samples); at 512 heads a table (3
 * pages), each first read of a page (the zero page) and its first write
 * faulted apart. The replay entries (36 KiB) and the kept filter (4 KiB)
 * had pages of their own too. Chains stay short where it matters: live
 * samples are 1 per prof_sample bytes held (a 1 GiB heap: about 16 per
 * sample head; a sample's free walks half a chain), and a sample looks a
 * site up only when its stack is neither the thread's last site nor
 * replayed, a count only for a site's first sample of a size key
 * (prof_count_get). */
#define PROF_SAMPLE_BUCKETS (1u << 7)
#define PROF_SITE_BUCKETS (1u << 6)
#define PROF_COUNT_BUCKETS (1u << 6)
#define PROF_REPLAYS 64
#define PROF_HEADS_BYTES                                                                                   \
	((PROF_SAMPLE_BUCKETS + PROF_SITE_BUCKETS + PROF_COUNT_BUCKETS + PROF_REPLAYS) * sizeof(void *))
_Static_assert(PROF_HEADS_BYTES + 1024 <= EBB_PAGE_SIZE, "the heads leave a KiB of their page to carve");
_Static_assert(PROF_HEADS_BYTES % 16 == 0, "carving after the heads stays aligned");
#define PROF_CHUNK ((size_t)64 << 10)

/* An allocation site: one distinct stack. Written under prof_lock; never
 * freed. */
typedef struct prof_site {
	struct prof_site *next;       /* in its hash chain */
	struct prof_site *all;        /* every site, newest first */
	struct prof_count *counts;    /* its counts, one per size key */
	struct prof_count *count0;    /* the one of key 0 (most samples), or NULL */
	uint64_t hash;
	uint32_t depth;
	void *frames[PROF_DEPTH];
} prof_site_t;

/* The samples of one site and one size key (prof_key): a line of the
 * profile each. pprof scales a line by its average size s (each sample
 * stands for 1 / (1 - exp(-s/rate)) objects); a line that mixes sizes is
 * then off by at most x^2/12 of its bytes, x = s/rate of its largest size
 * (s / (1 - exp(-x)) = rate (1 + x/2 + x^2/12 ...), and the first two terms
 * add up the same mixed or not). So sizes up to rate/16 share one line per
 * site (off by 0.03% at most); larger sizes share a line per key
 * (prof_key). (A line per size made bench churn 16B-32K's profile hold
 * thousands of lines, and fault 400 pages more to count them.) */
typedef struct prof_count {
	struct prof_count *next;      /* in its hash chain */
	struct prof_count *site_next; /* the site's counts */
	prof_site_t *site;
	size_t key;
	uint64_t live_n, live_bytes;   /* sampled blocks not freed yet */
	uint64_t alloc_n, alloc_bytes; /* sampled since start */
} prof_count_t;

/* A live sampled block. */
typedef struct prof_sample {
	struct prof_sample *next; /* in its hash chain, or the free list */
	void *addr;
	prof_count_t *count; /* NULL: a kept block (prof_free_hook) */
	size_t size;
	/* The bytes asked for of an allocation that would have been a small
	 * block unsampled (of an aligned one, its class's size; of a
	 * realloc's move, with its headroom), 0 if none (above
	 * EBB_SMALL_MAX, or aligned with no class that fits): its class's
	 * usable size is what realloc treats the block as, looked up by
	 * prof_realloc_usable or, of an inner sample, prof_inner_usable (a
	 * realloc of a sample is rarer than a sample: about 12 instructions
	 * a sample less). */
	uint32_t class_bytes;
	/* The small block the sample stands for (class_bytes != 0), taken
	 * from its class when the sample is made and freed with it, so that
	 * the spans of small blocks see what prof=0 does; NULL if none. Of
	 * an inner sample, the small block it lies in. */
	void *shadow;
	/* An inner sample (prof_alloc_inner), nonzero: addr is PROF_INNER
	 * bytes into the small block shadow, and no span carries a mark for
	 * it; PROF_INNER_CACHED once prof_inner_cache may name it, so that
	 * only those look at their slot when unlisted (a look at every inner
	 * sample's free was about 12 instructions a free in bench churn
	 * 16B-32K, whose samples are never realloc'ed). */
	uint8_t inner;
} prof_sample_t;
#define PROF_INNER_CACHED 2

/* tcache/'s malloc and free of small blocks, for the shadows above (set
 * by core/api, which prof.c may not call up into); NULL before. */
static void *(*prof_small_alloc)(size_t size);
static bool (*prof_small_free)(void *p);

/* Whether a small allocation's sample may be an inner one (prof.h):
 * every free of the process reaches api_prof_free's slow path. */
static bool prof_inner_ok;

void prof_set_inner(bool on)
{
	__atomic_store_n(&prof_inner_ok, on, __ATOMIC_RELAXED);
}

void prof_set_small(void *(*alloc)(size_t size), bool (*free_fn)(void *p))
{
	__atomic_store_n(&prof_small_free, free_fn, __ATOMIC_RELAXED);
	__atomic_store_n(&prof_small_alloc, alloc, __ATOMIC_RELEASE);
}

__thread int64_t prof_left __attribute__((tls_model("initial-exec")));
/* This thread's sampling state, one TLS block so that one load of its
 * offset serves both (prof_should_sample tests both at every sample).
 * rng: the PRNG's state, 0 until seeded; busy: inside the profiler, whose
 * own allocations are not sampled. */
static __thread struct prof_thread {
	uint64_t rng;
	bool busy;
} prof_thread __attribute__((tls_model("initial-exec")));
/* The site of this thread's last sample (sites are never freed). */
static __thread struct prof_site *prof_last_site __attribute__((tls_model("initial-exec")));

bool prof_on;
static uint32_t prof_state; /* 0 options not read yet, 1 off, 2 on */
static int64_t prof_rate;
static size_t prof_key_min; /* prof_rate / 16 (prof_key), set with it */

/* One lock over everything below. Not an ebb_lock_t: it ranks before every
 * allocator lock (fork takes it first), a rank enum lock_rank does not
 * have; it is a leaf otherwise. */
static uint32_t prof_lock_word;
static prof_sample_t **prof_samples; /* PROF_SAMPLE_BUCKETS heads */
static prof_site_t **prof_sites;     /* PROF_SITE_BUCKETS heads */
static prof_count_t **prof_counts;   /* PROF_COUNT_BUCKETS heads */
static struct prof_replay **prof_replays; /* PROF_REPLAYS slots, NULL until filled */
static prof_site_t *prof_all;
static prof_sample_t *prof_free_samples;
static char *prof_chunk, *prof_chunk_end; /* carving space for samples and sites */

/* Every sample of up to PROF_KEEP_PAGES pages (32 KiB: every small size,
 * aligned to a page at most) is a run of exactly PROF_KEEP_PAGES pages, and
 * up to PROF_KEEP freed ones are kept for the next samples (512 KiB at
 * most): a sample then takes no page heap lock and, above all, no page from
 * the page heap, whatever its size. Runs of their own size each (1 to 8
 * pages, 4 kept of each) left samples of a size not kept to take the end
 * of a dirty run that large blocks then no longer fitted in: they took
 * fresh pages and owed purges for them (page_heap.c, resident_climb), so
 * bench realloc string (64 MB, strings of every size up to 64 KiB, about
 * 280 samples) faulted about 550 pages more than without prof, against
 * about 350 more with one size (medians of 9, minor faults). Only the
 * pages a program touches are resident, so a live sample of 16 bytes
 * costs one page as before; a kept run stays as resident as its last use
 * left it. A kept block stays in the sample table with no count, so that a
 * second free of it is found and reported, and its page run stays
 * allocated: nothing else can hand it out. */
#define PROF_KEEP_PAGES 8
#define PROF_KEEP 16
/* realloc's page-run fast path (core/api/api.c, realloc_run_stays: sizes
 * above EBB_SMALL_MAX that the block holds) never answers a kept block, so
 * that only realloc_slow, where the profiler looks, can meet one. */
_Static_assert(PROF_KEEP_PAGES * EBB_PAGE_SIZE <= EBB_SMALL_MAX, "a kept block could be resized in place");
/* And a kept-size run holds every small class (prof_alloc_at's
 * class_bytes, untested for those). */
_Static_assert(PROF_KEEP_PAGES * EBB_PAGE_SIZE >= EBB_SMALL_MAX, "a kept run holds every small class");
static prof_sample_t *prof_kept[PROF_KEEP]; /* their entries */
/* page_heap_prof(), once a run of it was made (large_alloc_aside), else
 * NULL, which no span's heap is: the free hook's test of a kept-size run's
 * heap loads it where a call looked it up. Written before the run's
 * sample is listed (under prof_lock), read under prof_lock after finding
 * it: a run of that heap is never met with NULL here. */
static page_heap_t *prof_heap;
static unsigned prof_kept_n;
/* A kept block keeps its span's sampled mark (prof_mark: set while listed),
 * so realloc finds it by the mark as it finds a live sample
 * (prof_realloc_usable). A filter of counters by a hash of the page (512
 * in the heads' page), raised when a block was kept and lowered when it
 * was taken again, answered realloc before: about 20 instructions a kept
 * sample (bench churn 16B-32K, where nearly every sample is served by a
 * kept block), to spare a realloc of a page-aligned block the mark's
 * load, which realloc_run_span has at hand. */

/* The wait, out of line: in line, its loop kept registers of its own
 * that the free hook then saved and restored at every sample's free. */
static EBB_NOINLINE void prof_lock_wait(void)
{
	do
		os_yield();
	while (!atomic_cas_u32(&prof_lock_word, 0, 1));
}

EBB_INLINE void prof_lock(void)
{
	if (EBB_UNLIKELY(!atomic_cas_u32(&prof_lock_word, 0, 1)))
		prof_lock_wait();
}

static void prof_unlock(void)
{
	atomic_store_u32_release(&prof_lock_word, 0);
}

/* ---------------------------------------------------------------------------
 * The numbers: a PRNG, and the logarithm and exponential the draws and the
 * estimates need (libm is not linked into the library).
 * ------------------------------------------------------------------------- */
#define PROF_LN2 0.69314718055994530942

static uint64_t rng_next(void)
{
	uint64_t x = prof_thread.rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	prof_thread.rng = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* exp(-x) for x >= 0. */
static double prof_exp_neg(double x)
{
	if (x > 700)
		return 0;
	int k = (int)(x / PROF_LN2);
	double r = x - k * PROF_LN2, term = 1, sum = 1;
	for (int i = 1; i < 20; i++) {
		term *= -r / i;
		sum += term;
	}
	uint64_t bits = (uint64_t)(1023 - k) << 52;
	double scale;
	memcpy(&scale, &bits, sizeof scale);
	return sum * scale;
}

/* log2(1 + (i + 1/2) / 2^PROF_LOG2_BITS) in 32.32 fixed point: the
 * logarithm of a number by its leading bit and the PROF_LOG2_BITS bits
 * after it (prof_draw); a constant (each value is Python's
 * int(math.log2(1 + (i + 0.5) / 128) * 2**32)): filled at start-up by a
 * series it cost every prof=1 process about 6 000 instructions.
 * Each value is the one at the middle of the numbers that share those
 * bits, so that its error (a draw's distance off by at most 0.4% of
 * prof_sample) averages out: the mean distance is prof_sample to about
 * 4e-6 (20 million draws: 0.99992, as with the exact logarithm). The
 * series for the logarithm, with a division, cost about 68 instructions a sample; a
 * float table with the conversions and clamps in double 45; integers
 * alone (one 128-bit multiply) about 27. */
#define PROF_LOG2_BITS 7
static const uint32_t prof_log2_tab[1u << PROF_LOG2_BITS] = {
	0x01709c46, 0x044d8c45, 0x0724d8ee, 0x09f6984a, 0x0cc2dfe1, 0x0f89c4c1,
	0x124b5b7e, 0x1507b836, 0x17beee96, 0x1a7111df, 0x1d1e34e3, 0x1fc66a0f,
	0x2269c369, 0x25085296, 0x27a228db, 0x2a375720, 0x2cc7edf5, 0x2f53fd8f,
	0x31db95d0, 0x345ec646, 0x36dd9e2e, 0x39582c78, 0x3bce7fc7, 0x3e40a672,
	0x40aeae89, 0x4318a5d5, 0x457e99da, 0x47e097db, 0x4a3eacd6, 0x4c98e58d,
	0x4eef4e82, 0x5141f3fb, 0x5390e203, 0x55dc246c, 0x5823c6d0, 0x5a67d492,
	0x5ca858df, 0x5ee55eb1, 0x611ef0cf, 0x635519ce, 0x6587e414, 0x67b759d6,
	0x69e3851b, 0x6c0c6fbf, 0x6e32236f, 0x7054a9b0, 0x72740bdb, 0x74905320,
	0x76a98888, 0x78bfb4f4, 0x7ad2e11f, 0x7ce3159e, 0x7ef05ae4, 0x80fab93b,
	0x830238cf, 0x8506e1a7, 0x8708bbaa, 0x8907ce9c, 0x8b042224, 0x8cfdbdc7,
	0x8ef4a8ec, 0x90e8eadd, 0x92da8ac5, 0x94c98fb3, 0x96b6009a, 0x989fe450,
	0x9a874192, 0x9c6c1f01, 0x9e4e8324, 0xa02e7469, 0xa20bf926, 0xa3e71796,
	0xa5bfd5df, 0xa7963a0d, 0xa96a4a17, 0xab3c0bdc, 0xad0b8525, 0xaed8bba8,
	0xb0a3b501, 0xb26c76bb, 0xb433064b, 0xb5f76912, 0xb7b9a45e, 0xb979bd68,
	0xbb37b959, 0xbcf39d44, 0xbead6e2d, 0xc0653103, 0xc21aeaa6, 0xc3ce9fe3,
	0xc5805578, 0xc7301011, 0xc8ddd448, 0xca89a6ac, 0xcc338bb6, 0xcddb87d5,
	0xcf819f66, 0xd125d6b7, 0xd2c83208, 0xd468b58b, 0xd6076564, 0xd7a445a8,
	0xd93f5a5f, 0xdad8a784, 0xdc703104, 0xde05fabf, 0xdf9a088a, 0xe12c5e2b,
	0xe2bcff5d, 0xe44befd0, 0xe5d93326, 0xe764ccf6, 0xe8eec0cd, 0xea77122b,
	0xebfdc484, 0xed82db45, 0xef0659cb, 0xf088436d, 0xf2089b75, 0xf3876523,
	0xf504a3af, 0xf6805a44, 0xf7fa8c05, 0xf9733c0b, 0xfaea6d67, 0xfc60231e,
	0xfdd4602e, 0xff47278a
};
/* prof_rate * ln 2 * 2^24 (below 2^64 for every prof_sample up to its
 * maximum, 2^40): a draw's distance is -log2(u) (32.32) times this, over
 * 2^56. Set before prof_on. */
static uint64_t prof_draw_scale;
#define PROF_DRAW_SCALE_BITS 24

static void prof_draw_scale_set(void)
{
	prof_draw_scale = (uint64_t)((double)prof_rate * PROF_LN2 * (double)(1u << PROF_DRAW_SCALE_BITS));
}

/* Bytes to the next sample: exponential with mean prof_rate, -ln(u) *
 * prof_rate for u uniform in (0, 1], here u = r / 2^53. With r = 2^(63-z)
 * (1 + f), -log2(u) = z - 10 - log2(1 + f). At least 1. */
EBB_INLINE int64_t prof_draw(void)
{
	uint64_t r = (rng_next() >> 11) + 1; /* 1 .. 2^53 */
	unsigned z = (unsigned)__builtin_clzll(r);
	unsigned f = (unsigned)((r << z) >> (63 - PROF_LOG2_BITS)) & ((1u << PROF_LOG2_BITS) - 1);
	if (EBB_UNLIKELY(z == 10))
		return 1; /* r = 2^53 alone: u = 1 */
	/* z > 10: l > 0 (a table value is below 2^32). */
	uint64_t l = ((uint64_t)(z - 10) << 32) - prof_log2_tab[f];
	uint64_t d = (uint64_t)(((unsigned __int128)l * prof_draw_scale) >> (32 + PROF_DRAW_SCALE_BITS));
	return d > 0 ? (int64_t)d : 1;
}

/* pprof's unsampling (heap_v2): a sampled object of `size` bytes stands
 * for 1 / (1 - exp(-size / rate)) objects. */
static double prof_scale(size_t size)
{
	double p = 1 - prof_exp_neg((double)size / (double)prof_rate);
	return p > 0 ? 1 / p : 1;
}

/* ---------------------------------------------------------------------------
 * Start-up
 * ------------------------------------------------------------------------- */
/* Memory for samples and sites, carved from metadata chunks. Caller holds
 * prof_lock; drops it around meta_alloc. NULL if none. Out of line: its
 * callers are the rare cases (a new site, count, entry or replay), and
 * inlined its lock round made each of them save six registers (prof_insert:
 * about 15 instructions a sample). */
static EBB_NOINLINE void *prof_carve(size_t size)
{
	size = util_align_up(size, 16);
	while (prof_chunk == NULL || prof_chunk + size > prof_chunk_end) {
		prof_unlock();
		char *c = meta_alloc(PROF_CHUNK, 64);
		prof_lock();
		if (c == NULL)
			return NULL;
		if (prof_chunk == NULL || prof_chunk + size > prof_chunk_end) {
			prof_chunk = c;
			prof_chunk_end = c + PROF_CHUNK;
		} /* else another thread refilled meanwhile: c is left unused */
	}
	void *p = prof_chunk;
	prof_chunk += size;
	return p;
}

static bool prof_free_hook(void *p, span_t *span);

/* The tables, made by the first sample of the process (prof_samples is
 * NULL until then; set last, with release, so that a thread that reads it
 * set finds the others set). Their heads start the first carving chunk,
 * which then carves from the rest of their page (PROF_HEADS_BYTES). Takes
 * no lock while it maps (meta_alloc), prof_lock to publish. false if out
 * of memory: the sample is then served unrecorded. */
static EBB_NOINLINE bool prof_tables_make(void)
{
	char *c = meta_alloc(PROF_CHUNK, EBB_PAGE_SIZE);
	if (c == NULL)
		return false;
	prof_lock();
	if (prof_samples == NULL) {
		/* Fresh metadata reads as zero: every head is empty. Written
		 * now (the carving that follows writes the same page). */
		void **heads = (void **)c;
		__atomic_store_n(&heads[0], NULL, __ATOMIC_RELAXED);
		prof_sites = (prof_site_t **)(heads + PROF_SAMPLE_BUCKETS);
		prof_counts = (prof_count_t **)(heads + PROF_SAMPLE_BUCKETS + PROF_SITE_BUCKETS);
		prof_replays = (struct prof_replay **)(heads + PROF_SAMPLE_BUCKETS + PROF_SITE_BUCKETS +
							PROF_COUNT_BUCKETS);
		/* No carving before the tables: the chunk is the first. */
		prof_chunk = c + PROF_HEADS_BYTES;
		prof_chunk_end = c + PROF_CHUNK;
		__atomic_store_n(&prof_samples, (prof_sample_t **)heads, __ATOMIC_RELEASE);
	} /* else another thread made them meanwhile: c is left unused */
	prof_unlock();
	return true;
}

/* Reads the options once; true if sampling is on. */
static bool prof_setup(void)
{
	uint32_t s = atomic_load_u32_acquire(&prof_state);
	if (EBB_LIKELY(s != 0))
		return s == 2;
	if (!init_ensure())
		return false;
	bool on = options_get(OPT_PROF) != 0;
	if (on) {
		/* Before prof_on: before any sample can be made (and freed).
		 * Nothing here touches a page of the profiler's own: the
		 * tables are made at the first sample (prof_tables_make). */
		large_set_free_hook(prof_free_hook);
	}
	long long rate = options_get(OPT_PROF_SAMPLE);
	__atomic_store_n(&prof_rate, rate > 0 ? rate : 1, __ATOMIC_RELAXED);
	__atomic_store_n(&prof_key_min, (size_t)(rate > 0 ? rate : 1) / 16, __ATOMIC_RELAXED);
	if (on)
		prof_draw_scale_set(); /* before prof_on: before any draw */
	__atomic_store_n(&prof_on, on, __ATOMIC_RELAXED);
	atomic_store_u32_release(&prof_state, on ? 2 : 1);
	return on;
}

static void prof_prefork(void)
{
	prof_lock();
}

static void prof_postfork_parent(void)
{
	prof_unlock();
}

static void prof_postfork_child(void)
{
	/* Only this thread exists: the tables are as the lock left them whole.
	 * The child draws its own sample distances, not its parent's. */
	__atomic_store_n(&prof_lock_word, 0, __ATOMIC_RELEASE);
	prof_thread.rng = 0;
}

bool prof_start(void)
{
	if (!prof_setup())
		return false;
	/* auto under a sanitizer still takes the own walker (os_unwind_load
	 * leaves libunwind out there), so that the TSan runs exercise it. */
	unsigned which = (unsigned)options_get(OPT_PROF_UNWIND);
	prof_thread.busy = true; /* dlopen allocates */
	if (os_unwind_load(which) == NULL)
		report_warn("prof: no unwinder (neither libunwind.so.8 nor libgcc_s.so.1 loads): "
			    "stacks will be empty");
	prof_thread.busy = false;
	/* Registered after core/api/fork.c's: runs before its prefork, so this
	 * lock is taken before every allocator lock. */
	os_atfork(prof_prefork, prof_postfork_parent, prof_postfork_child);
	return true;
}

/* ---------------------------------------------------------------------------
 * Sampling
 * ------------------------------------------------------------------------- */
/* A thread's first sampling seed (never 0: 0 means not seeded). With
 * prof_seed=N the k-th thread to allocate gets a seed that depends on N and
 * k alone, so that a run's sample points, and with them which blocks become
 * page runs of their own and where the page heap puts them, repeat from run
 * to run (a single-threaded program exactly; threads that race to their
 * first allocation may swap seeds). Without it (0) each run draws new sample
 * points, and the instruction totals of two prof=1 runs of the same build
 * moved by up to 1 M in bench aligned 64B-2M: the page heap's work follows
 * where the 8-page sample runs fell. Setuid programs ignore EBB_OPTIONS
 * (options.h), so a fixed seed is only ever the program's own choice. */
static uint64_t prof_seed_next(void)
{
	static uint64_t prof_seed_threads;
	uint64_t seed = (uint64_t)options_get(OPT_PROF_SEED);
	if (seed == 0)
		return os_random() | 1;
	/* splitmix64 of (seed, k): neighbouring seeds and threads get unrelated
	 * streams. */
	uint64_t z = seed * 0x9E3779B97F4A7C15ull +
		     __atomic_fetch_add(&prof_seed_threads, 1, __ATOMIC_RELAXED) * 0xD1B54A32D192ED03ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return (z ^ (z >> 31)) | 1;
}

/* prof_should_sample's rare cases: inside the profiler, a thread's first
 * count, prof off. Out of line, so that the common case saves no register
 * (about 5 instructions a sample). */
static EBB_NOINLINE bool prof_should_sample_rare(size_t size)
{
	/* A request no block holds (which the caller then fails with ENOMEM)
	 * is not counted: prof_alloc would round it past SIZE_MAX. */
	if (prof_thread.busy || size > EBB_MAX_REQUEST) {
		/* Not counted (the tick undone, modulo 2^64 as it was made,
		 * prof_tick). */
		prof_left = (int64_t)((uint64_t)prof_left + size);
		return false;
	}
	if (!prof_setup()) {
		prof_left = INT64_MAX;
		return false;
	}
	if (EBB_UNLIKELY(prof_thread.rng == 0)) {
		/* The thread's first allocation: seed, and count it against a
		 * fresh distance like any other. */
		prof_thread.rng = prof_seed_next();
		uint64_t left;
		/* The borrow, as prof_tick's: a first request of 2^63 bytes or
		 * more must not leave a huge distance. */
		if (!__builtin_sub_overflow((uint64_t)prof_draw(), (uint64_t)size, &left)) {
			prof_left = (int64_t)left;
			return false;
		}
	}
	prof_left = prof_draw();
	return true;
}

bool prof_should_sample(size_t size)
{
	/* A seeded thread that is not inside the profiler: prof_setup said
	 * on before the seed (prof_thread.rng is 0 until then, and again in a
	 * forked child), so this is every sample but a thread's first. */
	/* Two branches: gcc made the tests one, with flags and ands (about 4
	 * instructions a sample more). A size above EBB_MAX_REQUEST is not
	 * turned down here (3 instructions a sample): prof_alloc fails it with
	 * ENOMEM, as the caller's own path would, and the fresh distance drawn
	 * for it is as good as the one it would have kept (the exponential
	 * has no memory). */
	if (EBB_UNLIKELY(prof_thread.rng == 0))
		return prof_should_sample_rare(size);
	if (EBB_UNLIKELY(prof_thread.busy))
		return prof_should_sample_rare(size);
	prof_left = prof_draw();
	return true;
}

static uint64_t stack_hash(void *const *frames, unsigned n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (unsigned i = 0; i < n; i++) {
		h ^= (uintptr_t)frames[i];
		h *= 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h ^ n;
}

static unsigned sample_bucket(const void *p)
{
	return (unsigned)(((uintptr_t)p >> EBB_PAGE_SHIFT) * 0x9E3779B97F4A7C15ull >> 50) &
	       (PROF_SAMPLE_BUCKETS - 1);
}

/* A count's size key (prof_count_t): 0 up to prof_rate / 16, else the
 * size with all but its PROF_KEY_BITS bits after the leading one cleared,
 * so that a line holds sizes at most 1 + 2^-PROF_KEY_BITS apart. Scaled by
 * its mean size, such a line is off by at most 3.3e-5 of its bytes (the
 * worst, near 2.5 prof_sample; numerically, sizes spread evenly over the
 * key). A key per size made a count, and a line, of nearly every sample
 * of bench aligned 64B-2M (random sizes up to 64 KiB, most samples above
 * prof_sample / 16): about 1 000 counts on PROF_COUNT_BUCKETS heads, each
 * sample's lookup a miss that walked a chain of 16 and carved a count. */
#define PROF_KEY_BITS 4
static size_t prof_key(size_t size)
{
	if (size <= prof_key_min)
		return 0;
	unsigned top = 63u - (unsigned)__builtin_clzll((unsigned long long)size);
	if (top <= PROF_KEY_BITS)
		return size;
	return size & ~(((size_t)1 << (top - PROF_KEY_BITS)) - 1);
}

/* The count of (site, size), made if new. Caller holds prof_lock (which
 * prof_carve may drop for a while). NULL if out of memory. */
static prof_count_t *prof_count_get(prof_site_t *site, size_t size)
{
	size_t key = prof_key(size);
	if (key == 0 && site->count0 != NULL)
		return site->count0;
	unsigned cb = (unsigned)(((uintptr_t)site ^ key * 0x9E3779B97F4A7C15ull) * 0xff51afd7ed558ccdull >> 40) &
		      (PROF_COUNT_BUCKETS - 1);
	prof_count_t *c = prof_counts[cb];
	while (c && (c->site != site || c->key != key))
		c = c->next;
	if (c == NULL) {
		c = prof_carve(sizeof *c);
		if (c == NULL)
			return NULL;
		c->site = site;
		c->key = key;
		c->live_n = c->live_bytes = c->alloc_n = c->alloc_bytes = 0;
		c->next = prof_counts[cb];
		prof_counts[cb] = c;
		c->site_next = site->counts;
		site->counts = c;
		if (key == 0)
			site->count0 = c;
	}
	return c;
}


/* Sets or clears the sampled mark (span.h) of the page run or huge block
 * p starts; span: its descriptor, or NULL to look it up. The mark is set
 * exactly while p is listed (a live or a kept sample): free calls the hook
 * only then. Caller holds prof_lock and owns p (nobody frees it
 * meanwhile). */
static void prof_mark(const void *p, span_t *span, uint8_t on)
{
	/* p is a block start the profiler trusts (from large_alloc, or its
	 * table), not a pointer from the program: its descriptor is found
	 * without superblock_span_lookup's checks (a huge block's header check
	 * was most of the lookup: about 60 instructions a sample in bench
	 * aligned 64B-2M, where most samples are huge blocks). A huge block
	 * is told by its start alone, the only kind of block that starts a
	 * 4 MiB slot (superblock.h: a superblock's first pages are its
	 * header), where the registry's byte was 4 instructions more a
	 * sample. */
	_Static_assert(EBB_SB_HEADER_PAGES > 0, "no page run starts a superblock");
	if (span == NULL) {
		superblock_t *sb = superblock_of(p);
		span = ((uintptr_t)p & (EBB_SB_SIZE - 1)) == 0
			       ? &((superblock_t *)((uintptr_t)sb - EBB_SB_SIZE))->spans[0]
			       : superblock_span_at(sb, superblock_page_index(p));
	}
	__atomic_store_n(&span->u.large.sampled, on, __ATOMIC_RELAXED);
}

/* The class of each of the last live page-run samples listed (class 0 for
 * one that stands in for no small block), by a hash of their address, for
 * prof_realloc_usable to read without prof_lock: a sampled string that
 * grows a few bytes at a time asks at every realloc, and the lock and the
 * table's look were 1-2% of bench realloc string's CPU time with prof=1
 * (perf, 64M: prof_realloc_usable's lock round, ~28 000 calls a run). A
 * slot is the run's address (page-aligned) or'ed with its class + 1, 0 if
 * none. Written under prof_lock: set when such a sample is listed,
 * cleared when it is unlisted or kept (a kept block's realloc goes on to
 * the table, which reports it). A reader owns p (it is reallocating it):
 * no other thread unlists p meanwhile, and the slot holding p's word was
 * written when p was listed, before p was returned to the program; a
 * collision only overwrites a slot (the look then takes the lock). */
#define PROF_RUN_CACHE 64
_Static_assert(EBB_NUM_CLASSES + 1 < EBB_PAGE_SIZE, "a class fits below a page-aligned address");
static uint64_t prof_run_cache[PROF_RUN_CACHE];

EBB_INLINE uint64_t *prof_run_slot(const void *p)
{
	return &prof_run_cache[(((uintptr_t)p >> EBB_PAGE_SHIFT) * 0x9e3779b97f4a7c15ull) >> 58];
}
_Static_assert(PROF_RUN_CACHE == 64, "prof_run_slot takes the hash's top 6 bits");

/* Under prof_lock: p is no longer a live sample of a class. */
EBB_INLINE void prof_run_forget(const void *p)
{
	uint64_t *slot = prof_run_slot(p);
	if ((*slot & ~(uint64_t)(EBB_PAGE_SIZE - 1)) == (uintptr_t)p)
		__atomic_store_n(slot, 0, __ATOMIC_RELAXED);
}

/* Under prof_lock: p, a page run, is a live sample standing in for a
 * block of class_bytes (0: none; size_classes[0].size is 0, what
 * prof_realloc_usable answers then). */
EBB_INLINE void prof_run_remember(const void *p, uint32_t class_bytes)
{
	unsigned cls = class_bytes != 0 ? size_class_of(class_bytes) : 0;
	__atomic_store_n(prof_run_slot(p), (uintptr_t)p | (cls + 1), __ATOMIC_RELAXED);
}

/* The same for the live inner samples (prof.h), for prof_inner_usable:
 * a string grown a few bytes at a time whose move was sampled is an inner
 * sample, and each of its reallocs asks (realloc_slow_at). A slot is the
 * sample's address (below 2^48) with the class of the block it stands for
 * in bits 48-55 and that of its own block in bits 56-63, 0 if none.
 * Written under prof_lock, read without it by the owner of p, as
 * prof_run_cache. */
#define PROF_INNER_CACHE 64
#define PROF_INNER_ADDR (((uint64_t)1 << 48) - 1)
_Static_assert(EBB_NUM_CLASSES <= 256, "a class fits in a byte of the slot");
static uint64_t prof_inner_cache[PROF_INNER_CACHE];

EBB_INLINE uint64_t *prof_inner_slot(const void *p)
{
	return &prof_inner_cache[(((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull) >> 58];
}

/* Under prof_lock: p is a live inner sample whose block stands for one of
 * class cls and is itself of class own. */
EBB_INLINE void prof_inner_remember(const void *p, unsigned cls, unsigned own)
{
	if (((uintptr_t)p & ~PROF_INNER_ADDR) == 0)
		__atomic_store_n(prof_inner_slot(p), (uintptr_t)p | (uint64_t)cls << 48 | (uint64_t)own << 56,
				 __ATOMIC_RELAXED);
}

/* Under prof_lock: p is no longer a live inner sample. */
EBB_INLINE void prof_inner_forget(const void *p)
{
	uint64_t *slot = prof_inner_slot(p);
	if ((*slot & PROF_INNER_ADDR) == (uintptr_t)p)
		__atomic_store_n(slot, 0, __ATOMIC_RELAXED);
}

/* Lists the entry s (out of every list) as p's. Caller holds prof_lock. */
EBB_INLINE void prof_relist(prof_sample_t *s, void *p, prof_count_t *c, size_t size, uint32_t class_bytes,
			     bool inner)
{
	s->addr = p;
	s->count = c;
	s->size = size;
	s->class_bytes = class_bytes;
	s->inner = inner;
	unsigned b = sample_bucket(p);
	s->next = prof_samples[b];
	prof_samples[b] = s;
	c->live_n++;
	c->live_bytes += size;
	if (!inner) {
		prof_mark(p, NULL, 1);
		prof_run_remember(p, class_bytes);
	}
}

/* Lists p as a live sample of c, of `size` bytes (class_bytes: its
 * entry's). Caller holds prof_lock. */
static EBB_NOINLINE prof_sample_t *prof_insert_new(void *p, prof_count_t *c, size_t size, uint32_t class_bytes,
						    bool inner)
{
	prof_sample_t *s = prof_carve(sizeof *s);
	if (s != NULL)
		prof_relist(s, p, c, size, class_bytes, inner);
	return s;
}

/* The entry from the free list, else (prof_insert_new, out of line: it
 * made every insert save registers) a new one. Inlined into prof_alloc_at
 * (gcc called it: about 7 instructions a sample of call, return and
 * argument moves). */
EBB_INLINE prof_sample_t *prof_insert(void *p, prof_count_t *c, size_t size, uint32_t class_bytes, bool inner)
{
	prof_sample_t *s = prof_free_samples;
	if (EBB_UNLIKELY(s == NULL))
		return prof_insert_new(p, c, size, class_bytes, inner);
	prof_free_samples = s->next;
	prof_relist(s, p, c, size, class_bytes, inner);
	return s;
}


static prof_sample_t **prof_find(const void *p);
EBB_INLINE void prof_unlist(prof_sample_t **at, span_t *span);

/* Stacks known again without a walk (os_unwind_replay): a slot per
 * (entry point's caller's return address, its CFA) hash, holding what the
 * last walk from there read and the site it found. A sample that starts
 * where an earlier one did, on a stack that reads the same, is that site's
 * (churn 16B-32K: about 150 instructions of walking and 50 of site lookup
 * a sample become about 30). Under prof_lock. An entry (688 bytes) is
 * carved at its slot's first fill, beside the sites and samples (never
 * freed, at most PROF_REPLAYS of them): a table of all 64 was 9 pages of
 * its own, 2 of them faulted in bench cache-thrash t=2. */
#define PROF_REPLAY_COUNTS 16
typedef struct prof_replay {
	void *ret;
	void *pc; /* where the walk started: ret, or the entry point's return address into it */
	uintptr_t cfa;
	prof_site_t *site;
	/* Counts of site met by the replays of this slot, by a hash of their
	 * size key (prof_replay_count): most keep to a few sizes, and each
	 * sample of a size above prof_sample / 16 looked its count up in the
	 * shared table (bench aligned 64B-2M: about 45 instructions a sample).
	 * Checked before use (the count's site and key), cleared when the
	 * slot takes another site. */
	prof_count_t *counts[PROF_REPLAY_COUNTS];
	os_unwind_rec_t rec;
} prof_replay_t;

/* Two slots a (ret, cfa) may use, both from one hash: its first, else its
 * second when the first holds another stack's record. With one slot, two
 * call sites that shared it took turns overwriting it, and each sample of
 * either walked its stack again: bench aligned 64B-2M's aligned_alloc and
 * memalign calls (one function, 0xd9 bytes apart) did, 147 walks of about
 * 700 instructions in its 1 219 samples (callgrind, prof_seed=1). */
static uint64_t prof_replay_hash(const void *ret, uintptr_t cfa)
{
	return ((uintptr_t)ret ^ cfa >> 4) * 0x9E3779B97F4A7C15ull;
}

static unsigned prof_replay_first(uint64_t h)
{
	return (unsigned)(h >> 58) & (PROF_REPLAYS - 1);
}

static unsigned prof_replay_second(uint64_t h)
{
	return (unsigned)(h >> 52) & (PROF_REPLAYS - 1);
}

/* Whether rp is the record of a walk from this entry point's frame fp
 * (prof_alloc_at's) with caller ret. */
EBB_INLINE bool prof_replay_is(const prof_replay_t *rp, const void *ret, const uintptr_t *fp)
{
	return rp->ret == ret && rp->pc == (void *)fp[1] && rp->cfa == (uintptr_t)(fp + 2);
}

/* The stack of a sample, from the entry point's caller outwards. */
typedef struct prof_stack {
	void *frames[PROF_DEPTH + 8];
	void *const *at; /* the kept part of frames */
	unsigned depth;
} prof_stack_t;

/* Takes the stack. Inlined into its callers (prof_alloc, prof_alloc_moved),
 * whose frame pointer fp is (__builtin_frame_address: fp[0] the caller's
 * rbp, fp[1] the return address, fp + 2 the caller's stack pointer once it
 * is returned to). The walk starts at that return address: the allocator's
 * own frames below it (the unwinder's, this one) are not walked (churn
 * 16B-32K: 3 frames walked where there were 6, about 100 instructions less
 * a sample). When it is ret, the entry point reached here by tail calls
 * alone; else (posix_memalign, which stores the block after the call) the
 * entry points' frames up to ret, at most PROF_FROM_SKIP of them, are
 * walked and cut off, so that this stack can be replayed too
 * (prof_replays: bench aligned 64B-2M walked about 230 stacks of its 1 200
 * samples, the whole stack each). When the own walker gives up, or ret is
 * not among the first frames, os_unwind takes the whole stack and the
 * frames inside the allocator are cut off at ret: each frame costs the
 * unwinder a lookup (libunwind about 80 instructions, libgcc about 1 400).
 * No lock is held. */
#define PROF_FROM_SKIP 4
EBB_INLINE bool prof_stack_take(prof_stack_t *st, void *ret, const uintptr_t *fp, os_unwind_rec_t *rec)
{
	unsigned n = 0, start = 0;
	void *pc = (void *)fp[1];
	if (ret != NULL) {
		n = os_unwind_from(st->frames, pc == ret ? PROF_DEPTH : PROF_DEPTH + PROF_FROM_SKIP, pc,
				   (uintptr_t)(fp + 2), fp[0], rec);
		while (start < n && start < PROF_FROM_SKIP && st->frames[start] != ret)
			start++;
		if (start == n || start == PROF_FROM_SKIP)
			n = start = 0;
	}
	bool from = n != 0;
	if (n == 0) {
		n = os_unwind(st->frames, PROF_DEPTH + 8);
		/* Keep the stack from the entry point's caller outwards: the
		 * frames inside the allocator are the same in every sample.
		 * Without a match (an entry point that is not the caller's
		 * call), drop the frames of the unwinder (os_unwind or
		 * libunwind's) and of the caller here. */
		while (start < n && st->frames[start] != ret)
			start++;
		if (start == n)
			start = n < 2 ? n : 2;
	}
	st->depth = n - start < PROF_DEPTH ? n - start : PROF_DEPTH;
	st->at = st->frames + start;
	return from;
}

static bool prof_frames_equal(void *const *a, void *const *b, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

/* The count of stack st and `size` (its site made if new). Caller holds
 * prof_lock, which prof_carve may drop for a while. NULL if out of
 * memory: the sample is then not recorded. */
static prof_count_t *prof_stack_count(const prof_stack_t *st, size_t size)
{
	unsigned depth = st->depth;
	/* Most samples of a thread come from the site of its last one (a
	 * loop): compared frame by frame, no hash (churn 16B-32K: about 60
	 * instructions a sample less). */
	prof_site_t *site = prof_last_site;
	if (site != NULL && site->depth == depth && prof_frames_equal(site->frames, st->at, depth))
		return prof_count_get(site, size);
	uint64_t h = stack_hash(st->at, depth);
	site = prof_sites[h & (PROF_SITE_BUCKETS - 1)];
	while (site && (site->hash != h || site->depth != depth || !prof_frames_equal(site->frames, st->at, depth)))
		site = site->next;
	if (site == NULL) {
		site = prof_carve(offsetof(prof_site_t, frames) + depth * sizeof(void *));
		if (site == NULL)
			return NULL;
		site->counts = NULL;
		site->count0 = NULL;
		site->hash = h;
		site->depth = depth;
		memcpy(site->frames, st->at, depth * sizeof(void *));
		/* The lock may have been dropped to map memory: another thread may
		 * have added the same stack meanwhile; two sites for one stack
		 * are harmless (pprof adds them up). */
		site->next = prof_sites[h & (PROF_SITE_BUCKETS - 1)];
		prof_sites[h & (PROF_SITE_BUCKETS - 1)] = site;
		site->all = prof_all;
		prof_all = site;
	}
	prof_last_site = site;
	return prof_count_get(site, size);
}

/* Whether p starts a page run or huge block with the sampled mark (only
 * those can be live samples). Reads the span without a lock, as free
 * does. */
static bool prof_is_marked(const void *p)
{
	superblock_t *sb;
	span_t *s = superblock_span_lookup(p, &sb);
	return s != NULL && s->state == SPAN_LARGE && p == span_start(sb, s) &&
	       __atomic_load_n(&s->u.large.sampled, __ATOMIC_RELAXED) != 0;
}

/* The sample's entry of p, or NULL. Caller holds prof_lock. */
static prof_sample_t **prof_find(const void *p)
{
	if (EBB_UNLIKELY(prof_samples == NULL))
		return NULL; /* no sample yet (a stray sampled mark, span.h, brought the caller) */
	prof_sample_t **at = &prof_samples[sample_bucket(p)];
	while (*at && (*at)->addr != p)
		at = &(*at)->next;
	return *at ? at : NULL;
}

/* Takes the entry *at out of the table, and returns it; the caller
 * relists it or puts it on the free list. span: the block's descriptor, or
 * NULL (prof_mark). Caller holds prof_lock. */
EBB_INLINE prof_sample_t *prof_unlink(prof_sample_t **at, span_t *span)
{
	prof_sample_t *s = *at;
	/* Read before the stores below: a caller that tested it already
	 * (the free hook) then has its test reused. */
	prof_count_t *c = s->count;
	*at = s->next;
	if (!s->inner) {
		prof_mark(s->addr, span, 0);
		prof_run_forget(s->addr);
	} else if (s->inner == PROF_INNER_CACHED) {
		prof_inner_forget(s->addr);
	}
	if (c != NULL) {
		c->live_n--;
		c->live_bytes -= s->size;
	}
	return s;
}

/* Takes the entry *at out of the table for good. */
EBB_INLINE void prof_unlist(prof_sample_t **at, span_t *span)
{
	prof_sample_t *s = prof_unlink(at, span);
	s->next = prof_free_samples;
	prof_free_samples = s;
}

/* Takes p off the kept stack (it is there). Caller holds prof_lock. */
static void prof_unkeep(void *p)
{
	for (unsigned i = 0; i < prof_kept_n; i++) {
		if (prof_kept[i]->addr == p) {
			prof_kept[i] = prof_kept[--prof_kept_n];
			return;
		}
	}
}

/* p, sampled and freed already, is freed or reallocated again: reported;
 * if on_error=warn returns, the profiler lets go of p (keeps it no more),
 * so that whatever the caller does next, p is not handed out twice.
 * Returns true (the free hook's answer: p is left alone), for a tail
 * call. */
static EBB_NOINLINE bool prof_kept_again(prof_sample_t **at, span_t *span, const char *func)
{
	void *p = (*at)->addr;
	prof_unkeep(p);
	prof_unlist(at, span);
	prof_unlock();
	report_bad_pointer(func, p, "double free (a heap profiler sample block, freed already)");
	return true;
}

/* prof_alloc_at's count of a stack not known again (prof_replays): the
 * stack walked, with prof_lock dropped meanwhile, and rp filled when it
 * can be replayed. Out of line: the frames and the record are 1 KiB of
 * stack that the replayed samples do not need. Called and returns with
 * prof_lock held. */
static EBB_NOINLINE prof_count_t *prof_stack_walk(size_t size, void *ret, const uintptr_t *fp, unsigned slot)
{
	prof_unlock();
	prof_stack_t st;
	os_unwind_rec_t rec;
	/* The unwinder may allocate (libunwind, once a thread): not sampled.
	 * Nothing else here does (the blocks are page runs, the tables
	 * metadata). */
	prof_thread.busy = true;
	bool from = prof_stack_take(&st, ret, fp, &rec);
	prof_thread.busy = false;
	prof_lock();
	prof_count_t *c = prof_stack_count(&st, size);
	prof_replay_t *rp = NULL;
	if (from && c != NULL && rec.n != OS_UNWIND_REC_NONE && (rp = prof_replays[slot]) == NULL) {
		/* prof_carve may drop the lock: another walk may fill the
		 * slot meanwhile, and its entry is then the one reused (this
		 * one is left unused). Listed below, once written. */
		rp = prof_carve(sizeof *rp);
		if (prof_replays[slot] != NULL)
			rp = prof_replays[slot];
	}
	if (rp != NULL) {
		rp->ret = ret;
		rp->pc = (void *)fp[1];
		rp->cfa = (uintptr_t)(fp + 2);
		if (rp->site != c->site)
			memset(rp->counts, 0, sizeof rp->counts);
		rp->site = c->site;
		rp->rec.top = rec.top;
		rp->rec.rbp = rec.rbp;
		rp->rec.rbp_used = rec.rbp_used;
		rp->rec.n = rec.n;
		memcpy(rp->rec.at, rec.at, rec.n * sizeof rec.at[0]);
		memcpy(rp->rec.val, rec.val, rec.n * sizeof rec.val[0]);
		prof_replays[slot] = rp;
	}
	return c;
}

/* The count of rp's site and `size`, through rp's counts. Caller holds
 * prof_lock (prof_count_get may drop it: rp may take another site
 * meanwhile, and the count is then not kept in rp). NULL if out of
 * memory. */
EBB_INLINE prof_count_t *prof_replay_count(prof_replay_t *rp, size_t size)
{
	prof_site_t *site = rp->site;
	size_t key = prof_key(size);
	if (key == 0 && site->count0 != NULL)
		return site->count0;
	_Static_assert(PROF_REPLAY_COUNTS == 1u << 4, "the hash below takes 4 bits");
	prof_count_t **at = &rp->counts[(key * 0x9E3779B97F4A7C15ull) >> 60];
	prof_count_t *c = *at;
	if (c != NULL && c->site == site && c->key == key)
		return c;
	c = prof_count_get(site, size);
	if (c != NULL && rp->site == site)
		*at = c;
	return c;
}

/* The count of this sample's stack (ret, fp: prof_alloc_at's), with
 * prof_lock taken: it returns with the lock held. NULL when none can be
 * made (out of memory): the sample is then not recorded. */
EBB_INLINE prof_count_t *prof_count_locked(size_t size, void *ret, const uintptr_t *fp)
{
	prof_count_t *c = NULL;
	uintptr_t cfa = (uintptr_t)(fp + 2);
	uint64_t h = prof_replay_hash(ret, cfa);
	unsigned slot = prof_replay_first(h);
	/* Without the tables (out of memory) the block is served unrecorded,
	 * as when a count cannot be made; nothing is kept without them. */
	bool tables = EBB_LIKELY(__atomic_load_n(&prof_samples, __ATOMIC_ACQUIRE) != NULL) || prof_tables_make();
	prof_lock();
	prof_replay_t *rp = tables ? prof_replays[slot] : NULL;
	/* Each slot's record is compared once (gcc compared the first's
	 * twice when the test was written as one condition after the
	 * other). */
	bool known = rp != NULL && prof_replay_is(rp, ret, fp);
	if (rp != NULL && !known) {
		/* The first slot is another stack's: this one's record is in
		 * the second, or a walk fills it there if it is free (else
		 * the first is overwritten). */
		prof_replay_t *rq = prof_replays[prof_replay_second(h)];
		if (rq == NULL || prof_replay_is(rq, ret, fp)) {
			slot = prof_replay_second(h);
			rp = rq;
			known = rq != NULL;
		}
	}
	if (known && os_unwind_replay(&rp->rec, cfa, fp[0])) {
		c = prof_replay_count(rp, size);
	} else if (tables) {
		c = prof_stack_walk(size, ret, fp, slot);
	}
	return c;
}

/* Frees a sample's shadow (NULL: none), with prof_lock not held: the free
 * may flush the thread's cache to the central lists. */
static void prof_shadow_free(void *shadow)
{
	if (shadow != NULL)
		prof_small_free(shadow);
}

/* prof_alloc, with a block of `bytes` >= size (a realloc's headroom), a
 * mapping of its own if `mapped` (prof_alloc_moved). big (a constant):
 * the caller found that it stands for no small block (aligned to more
 * than a page, more than PROF_KEEP_PAGES pages, or aligned with no class
 * that fits), so that no kept block serves it (class_bytes 0, no shadow):
 * it is the page run large_alloc gives it unsampled. aligned_bytes:
 * for an alignment above EBB_MIN_ALIGN, the size of the class an
 * unsampled block would have (size_class_aligned), 0 if none. */
EBB_INLINE void *prof_alloc_at(size_t size, size_t bytes, size_t align, bool zero, bool mapped, bool big,
				uint32_t aligned_bytes, void *ret, const uintptr_t *fp)
{
	void *p = NULL;
	size_t pages = (bytes + EBB_PAGE_SIZE - 1) >> EBB_PAGE_SHIFT;
	bool keepable = !big && !mapped && align <= EBB_PAGE_SIZE && pages <= PROF_KEEP_PAGES;
	if (keepable)
		pages = PROF_KEEP_PAGES; /* one run size for them all (PROF_KEEP) */
	/* What an unsampled allocation of `bytes` would hold: realloc goes on
	 * from there (prof_realloc_usable), in place up to all of it, so the
	 * pages must hold it. A kept-size run does (PROF_KEEP_PAGES pages,
	 * EBB_SMALL_MAX bytes); a mapping of its own is tested. */
	uint32_t class_bytes = big ? 0 : align > EBB_MIN_ALIGN ? aligned_bytes : bytes <= EBB_SMALL_MAX ? (uint32_t)bytes : 0;
	if (class_bytes != 0 && !keepable && size_classes[size_class_of(bytes)].size > pages << EBB_PAGE_SHIFT)
		class_bytes = 0;
	void *shadow = NULL;
	void *(*small_alloc)(size_t) = class_bytes != 0 ? __atomic_load_n(&prof_small_alloc, __ATOMIC_ACQUIRE) : NULL;
	if (small_alloc != NULL) {
		prof_thread.busy = true;
		shadow = small_alloc(class_bytes); /* bytes, or the aligned class's size */
		prof_thread.busy = false;
	}
	/* One lock round when the stack is known again: a block that no kept
	 * one can serve is made first, then counted and listed in the round;
	 * a kept-size one is counted first (the lock may be dropped there),
	 * then a kept block serves it, listed already, or a fresh one is made
	 * and listed in a second round. */
	if (!keepable) {
		/* A big calloc's pages are zeroed by large_alloc, which knows
		 * which read as zero already (a memset would fault them all
		 * in). No busy mark (prof_thread) around it: the page heap calls no entry
		 * point (nothing there can be sampled), and its two stores
		 * and the TLS offset's load were 3 instructions a sample. */
		/* size itself, not pages: a request above EBB_MAX_REQUEST
		 * (prof_should_sample lets it through) would wrap pages, and
		 * large_alloc fails it with ENOMEM; it takes the same pages. */
		p = mapped ? large_alloc_mapped(pages << EBB_PAGE_SHIFT) : large_alloc(bytes, align, zero);
		if (p == NULL) {
			prof_shadow_free(shadow);
			return NULL;
		}
	}
	prof_count_t *c = prof_count_locked(size, ret, fp);
	if (!keepable) {
		if (c != NULL) {
			c->alloc_n++;
			c->alloc_bytes += size;
			prof_sample_t *e = prof_insert(p, c, size, class_bytes, false);
			if (e != NULL) {
				e->shadow = shadow;
				shadow = NULL;
			}
		}
		prof_unlock();
		prof_shadow_free(shadow);
		return p;
	}
	if (prof_kept_n > 0) {
		prof_sample_t *e = prof_kept[--prof_kept_n];
		p = e->addr;
		if (c != NULL) {
			e->count = c;
			e->size = size;
			e->class_bytes = class_bytes;
			prof_run_remember(p, class_bytes);
			e->shadow = shadow;
			shadow = NULL;
			c->live_n++;
			c->live_bytes += size;
			c->alloc_n++;
			c->alloc_bytes += size;
		} else {
			prof_unlist(prof_find(p), NULL); /* a plain page run now, unsampled */
			superblock_t *sb;
			large_aside_recount(superblock_span_in(p, &sb));
		}
	}
	prof_unlock();
	if (p != NULL) {
		if (zero)
			memset(p, 0, size);
	} else {
		/* A kept-size run only needs the bytes asked for zeroed. */
		prof_thread.busy = true; /* nothing below is sampled, should it allocate */
		p = large_alloc_aside(pages << EBB_PAGE_SHIFT);
		/* No huge page for these runs (9cc85eb's MADV_HUGEPAGE on the 2 MiB
		 * around the first, dropped): since small samples are inner
		 * ones, only samples above the largest class less 16 bytes
		 * and aligned ones take runs here, few and reused (prof_kept),
		 * so the page saved at most about 70 faults (bench aligned)
		 * and none in churn 16B-32K, and cost 1.5-2.2 MiB resident
		 * (docs/profiler-overhead.md, 2026-12-07). */
		if (p != NULL && __atomic_load_n(&prof_heap, __ATOMIC_RELAXED) == NULL)
			__atomic_store_n(&prof_heap, page_heap_prof(), __ATOMIC_RELAXED);
		/* A fresh kept-size run's first page is written here: a
		 * program that reads its new block before it writes it (bench
		 * cache-thrash) faulted in the shared zero page and then the
		 * page itself, two faults where the small block it stands for
		 * would have been on a resident page. */
		if (p != NULL && zero)
			memset(p, 0, size);
		else if (p != NULL)
			*(volatile char *)p = 0;
		if (p != NULL && c != NULL) {
			prof_lock();
			c->alloc_n++;
			c->alloc_bytes += size;
			prof_sample_t *e = prof_insert(p, c, size, class_bytes, false);
			if (e != NULL) {
				e->shadow = shadow;
				shadow = NULL;
			}
			prof_unlock();
		}
		prof_thread.busy = false;
	}
	prof_shadow_free(shadow); /* no sample holds it */
	return p;
}

/* What an inner sample of `size` bytes asks its cache for, standing for
 * an unsampled block of `bytes` (size, but for a realloc's move, whose
 * headroom it includes: prof_alloc_moved): a block of the class the
 * unsampled one would have, when its last PROF_INNER bytes are not
 * needed, else of PROF_INNER bytes more than that class (realloc then
 * resizes it in place up to all of the class). Most samples are
 * large (a block is sampled in proportion to its size), where classes are
 * KiBs apart: nearly all then take the unsampled block's class, so that
 * the spans see what they see with prof=0 (PROF_INNER bytes more than the
 * size, always, took a class of its own for most: bench churn 16B-32K
 * faulted about 140 pages more than prof=0 for the spans of those). */
static size_t prof_inner_bytes(size_t size, size_t bytes)
{
	size_t cu = size_classes[size_class_of(bytes)].size;
	return size + PROF_INNER <= cu ? cu : cu + PROF_INNER;
}

/* A small sample as an inner one (prof.h), standing for a block of
 * `bytes` (prof_inner_bytes; kept as the entry's class_bytes, which
 * prof_inner_usable answers from): the block is a small block of
 * prof_inner_bytes from the thread's cache, and the program's pointer is
 * PROF_INNER bytes into it. Only the stack and the table cost
 * anything: no run, no page heap, and its lines are the cache's (a
 * kept-size run per sample was about 60 ns a sample more than this in
 * bench churn 16B-32K: its lines and TLB entries were cold where the
 * cache's block is warm). A sample that cannot be recorded is served as
 * the plain block. */
EBB_INLINE void *prof_alloc_inner(size_t size, size_t bytes, bool zero, void *ret, const uintptr_t *fp)
{
	void *(*small_alloc)(size_t) = __atomic_load_n(&prof_small_alloc, __ATOMIC_ACQUIRE);
	prof_thread.busy = true;
	char *block = small_alloc(prof_inner_bytes(size, bytes));
	prof_thread.busy = false;
	if (block == NULL)
		return NULL;
	prof_count_t *c = prof_count_locked(size, ret, fp);
	prof_sample_t *e = NULL;
	if (c != NULL) {
		c->alloc_n++;
		c->alloc_bytes += size;
		e = prof_insert(block + PROF_INNER, c, size, (uint32_t)bytes, true);
		if (e != NULL)
			e->shadow = block;
	}
	prof_unlock();
	void *p = e != NULL ? block + PROF_INNER : block;
	if (zero)
		memset(p, 0, size);
	return p;
}

void *prof_alloc(size_t size, size_t align, bool zero, void *ret)
{
	/* Two copies: the big samples' (most of bench aligned 64B-2M's, and
	 * every one above 32 KiB) keeps nothing of a kept-size sample's
	 * state in registers or on the stack (its flag, pages, shadow and
	 * class bytes: about 10 instructions a sample). The test is
	 * keepable's, made first. */
	const uintptr_t *fp = __builtin_frame_address(0);
	if (align <= EBB_MIN_ALIGN && size <= EBB_SMALL_MAX - PROF_INNER &&
	    prof_inner_bytes(size, size) <= EBB_SMALL_MAX &&
	    __atomic_load_n(&prof_inner_ok, __ATOMIC_RELAXED))
		return prof_alloc_inner(size, size, zero, ret, fp);
	if (align > EBB_PAGE_SIZE || size > PROF_KEEP_PAGES * EBB_PAGE_SIZE)
		return prof_alloc_at(size, size, align, zero, false, true, 0, ret, fp);
	/* An aligned request that unsampled is a small block of the class
	 * size_class_aligned gives (core/api/api.c, alloc_aligned_impl)
	 * takes that block as its shadow and is resized as it; one that
	 * unsampled is a page run (no class fits) is that page run, from the
	 * same heap: no kept-size run from the profiler's heap where prof=0
	 * has none. Before, an aligned sample took no shadow and every
	 * aligned one a kept-size run: the page heaps and spans then saw
	 * other requests than with prof=0, and their searches followed
	 * (bench aligned 64B-2M, seed 3: list_find_aligned +29 K). */
	if (align > EBB_MIN_ALIGN) {
		unsigned cls = size_class_aligned(size, align);
		if (cls == 0)
			return prof_alloc_at(size, size, align, zero, false, true, 0, ret, fp);
		return prof_alloc_at(size, size, align, zero, false, false, size_classes[cls].size, ret, fp);
	}
	return prof_alloc_at(size, size, align, zero, false, false, 0, ret, fp);
}

void *prof_alloc_moved(size_t size, size_t bytes, bool mapped, bool run, void *ret)
{
	const uintptr_t *fp = __builtin_frame_address(0);
	/* A move the unsampled realloc gives a page run of its own (a buffer
	 * built a piece at a time, core/api/api.c's REALLOC_RUN_MIN): the
	 * same page run, standing for no small block, so that it grows in
	 * place as the unsampled one does. */
	if (run)
		return prof_alloc_at(size, bytes, EBB_MIN_ALIGN, false, false, true, 0, ret, fp);
	/* A move to a small block: an inner sample in the class the
	 * unsampled move takes (prof.h). A kept-size run per sample, its
	 * pages and lines cold or never touched, cost bench realloc string
	 * (64 MB, about 300 samples) about 40 minor faults more than prof=0,
	 * where the class's blocks lie on the pages the other strings use. */
	if (!mapped && bytes <= EBB_SMALL_MAX && prof_inner_bytes(size, bytes) <= EBB_SMALL_MAX &&
	    __atomic_load_n(&prof_inner_ok, __ATOMIC_RELAXED))
		return prof_alloc_inner(size, bytes, false, ret, fp);
	return prof_alloc_at(size, bytes, EBB_MIN_ALIGN, false, mapped, false, 0, ret, fp);
}

/* prof_realloc_usable's look in the table, when prof_run_cache does not
 * say (out of line: the cache's answer then saves no register). */
static EBB_NOINLINE size_t prof_realloc_usable_locked(void *p)
{
	prof_lock();
	prof_sample_t **at = prof_find(p);
	if (at != NULL && (*at)->count == NULL) {
		prof_kept_again(at, NULL, "realloc");
		return SIZE_MAX;
	}
	size_t bytes = at != NULL ? (*at)->class_bytes : 0;
	prof_unlock();
	return bytes != 0 ? size_classes[size_class_of(bytes)].size : 0;
}

/* The class a slot names for p (size_classes[0]: a sample of no class),
 * NULL if no slot names p. */
EBB_INLINE const size_class_t *prof_run_cached(const void *p)
{
	uint64_t w = __atomic_load_n(prof_run_slot(p), __ATOMIC_RELAXED);
	if ((w & ~(uint64_t)(EBB_PAGE_SIZE - 1)) == (uintptr_t)p && w != (uintptr_t)p)
		return &size_classes[(w & (EBB_PAGE_SIZE - 1)) - 1];
	return NULL;
}

size_t prof_realloc_cached(const void *p)
{
	const size_class_t *k = prof_run_cached(p);
	return k != NULL ? k->size : 0;
}

size_t prof_realloc_usable(void *p)
{
	/* A sample of no class is answered here too (0), without the lock. */
	const size_class_t *k = prof_run_cached(p);
	return k != NULL ? k->size : prof_realloc_usable_locked(p);
}

/* large_free_checked's hook (core/pages/large.h): the frees of page runs
 * and huge blocks whose span has the sampled mark, and nothing else (a sample block is a page run: the small-block fast
 * path never sees one). */
/* prof_free_kept_size's sample *at that is not kept: unlisted, its shadow
 * freed; false: the caller frees the run. Out of line: the kept path
 * saves no register then. Called with prof_lock held; returns with it
 * dropped. */
static EBB_NOINLINE bool prof_free_let_go(prof_sample_t **at, span_t *span, void *shadow)
{
	prof_unlist(at, span);
	prof_unlock();
	prof_shadow_free(shadow);
	large_aside_recount(span); /* the caller frees it */
	return false;
}

/* prof_free_hook's sample *at of a kept-size run (PROF_KEEP_PAGES pages,
 * not huge: the only samples with a shadow, prof_alloc_at): kept for the
 * next samples if there is room and it is the profiler's heap's
 * (large_alloc_aside; true: the caller leaves it alone), else let go. A
 * run of that size from a CPU's heap (a big sample's: aligned to more
 * than a page, or with no class that fits) goes back there as it would
 * unsampled: kept, it was taken out of the CPU's heap for good (bench
 * aligned 64B-2M: list_find_aligned's searches differed from prof=0's). Out of line: the hook of the other samples saved registers for
 * it and tested the shadow (bench aligned 64B-2M, most of whose samples
 * are larger). Called with prof_lock held; returns with it dropped. */
static EBB_NOINLINE bool prof_free_kept_size(prof_sample_t **at, span_t *span)
{
	prof_count_t *c = (*at)->count;
	void *shadow = (*at)->shadow;
	(*at)->shadow = NULL;
	/* The kept path calls nothing but its tail, the shadow's free (which
	 * returns true, the hook's "kept", for that): gcc then saves no
	 * register for it (the let-go path's six pushes and pops, and
	 * page_heap_prof's call, were about 25 instructions a kept sample's
	 * free: bench churn 16B-32K; a call of the free and a return of
	 * true, 6 more). */
	if (prof_kept_n < PROF_KEEP &&
	    span_superblock(span)->heap == __atomic_load_n(&prof_heap, __ATOMIC_RELAXED)) {
		c->live_n--;
		c->live_bytes -= (*at)->size;
		(*at)->count = NULL;
		prof_run_forget((*at)->addr);
		prof_kept[prof_kept_n++] = *at;
		prof_unlock();
		return shadow != NULL ? prof_small_free(shadow) : true;
	}
	return prof_free_let_go(at, span, shadow);
}

/* prof_free_hook with prof_lock taken. */
EBB_INLINE bool prof_free_locked(void *p, span_t *span)
{
	prof_sample_t **at = prof_find(p);
	if (at == NULL) {
		prof_unlock();
		return false;
	}
	if ((*at)->count == NULL)
		return prof_kept_again(at, span, "free"); /* on_error=warn: p is left alone */
	if (!span->huge && span->npages == PROF_KEEP_PAGES)
		return prof_free_kept_size(at, span);
	prof_unlist(at, span);
	prof_unlock();
	return false;
}

/* prof_free_hook's wait for the lock, out of line: with the wait's call in
 * the hook, gcc saved p and span in registers of its own at every
 * sample's free (7 instructions); the hook's other calls are tail calls. */
static EBB_NOINLINE bool prof_free_hook_wait(void *p, span_t *span)
{
	prof_lock_wait();
	return prof_free_locked(p, span);
}

static bool prof_free_hook(void *p, span_t *span)
{
	if (EBB_UNLIKELY(!atomic_cas_u32(&prof_lock_word, 0, 1)))
		return prof_free_hook_wait(p, span);
	return prof_free_locked(p, span);
}


void *prof_resize_begin(void *p, span_t *span)
{
	if (__atomic_load_n(&span->u.large.sampled, __ATOMIC_RELAXED) == 0)
		return NULL;
	prof_lock();
	prof_sample_t **at = prof_find(p);
	prof_sample_t *s = at != NULL && (*at)->count != NULL ? prof_unlink(at, NULL) : NULL;
	prof_unlock();
	return s;
}

void prof_resize_end(void *entry, void *q)
{
	prof_sample_t *s = entry;
	prof_lock();
	prof_relist(s, q, s->count, s->size, s->class_bytes, false);
	prof_unlock();
}

bool prof_free_inner(void *p)
{
	prof_lock();
	prof_sample_t **at = prof_find(p);
	if (at == NULL || !(*at)->inner) {
		prof_unlock();
		return false;
	}
	void *block = (*at)->shadow;
	prof_unlist(at, NULL);
	prof_unlock();
	return prof_small_free(block);
}

/* prof_inner_usable's look in the table, when prof_inner_cache does not
 * say (out of line: the cache's answer then saves no register); it fills
 * p's slot. */
static EBB_NOINLINE size_t prof_inner_usable_locked(const void *p, size_t *class_usable)
{
	prof_lock();
	prof_sample_t **at = prof_find(p);
	bool inner = at != NULL && (*at)->inner;
	unsigned cls = 0, own = 0;
	if (inner) {
		cls = size_class_of((*at)->class_bytes);
		own = size_class_of(prof_inner_bytes((*at)->size, (*at)->class_bytes));
		prof_inner_remember(p, cls, own);
		(*at)->inner = PROF_INNER_CACHED;
	}
	prof_unlock();
	if (!inner)
		return 0;
	if (class_usable != NULL)
		*class_usable = size_classes[cls].size;
	return size_classes[own].size - PROF_INNER;
}

size_t prof_inner_usable(const void *p, size_t *class_usable)
{
	uint64_t w = __atomic_load_n(prof_inner_slot(p), __ATOMIC_RELAXED);
	if (EBB_UNLIKELY((w & PROF_INNER_ADDR) != (uintptr_t)p || p == NULL))
		return prof_inner_usable_locked(p, class_usable);
	if (class_usable != NULL)
		*class_usable = size_classes[(w >> 48) & 0xff].size;
	return size_classes[w >> 56].size - PROF_INNER;
}

bool prof_holds(const void *p)
{
	if (p == NULL)
		return false;
	if (((uintptr_t)p & (EBB_PAGE_SIZE - 1)) != 0)
		return prof_inner_usable(p, NULL) != 0;
	if (!prof_is_marked(p))
		return false;
	prof_lock();
	prof_sample_t **at = prof_find(p);
	bool live = at != NULL && (*at)->count != NULL;
	prof_unlock();
	return live;
}

/* ---------------------------------------------------------------------------
 * The profile: gperftools' heap profile text format, which google-pprof and
 * go tool pprof both read:
 *   heap profile: <live n>: <live bytes> [<alloc n>: <alloc bytes>] @ heap_v2/<rate>
 *   <live n>: <live bytes> [<alloc n>: <alloc bytes>] @ 0x<pc> 0x<pc> ...   (one line per site)
 *   (blank line)
 *   MAPPED_LIBRARIES:
 *   <the text of /proc/self/maps>
 * The counts are the raw samples; pprof scales them by 1 / (1 - exp(-s/rate))
 * with s each line's average size (heap_v2).
 * ------------------------------------------------------------------------- */
typedef struct prof_out {
	int fd;
	bool ok;
	size_t n;
	char buf[4096];
} prof_out_t;

static void out_flush(prof_out_t *o)
{
	if (o->n > 0 && o->ok)
		o->ok = os_file_write(o->fd, o->buf, o->n);
	o->n = 0;
}

static void out_str(prof_out_t *o, const char *s)
{
	while (*s) {
		if (o->n == sizeof o->buf)
			out_flush(o);
		o->buf[o->n++] = *s++;
	}
}

static void out_fmt(prof_out_t *o, const char *fmt, ...)
{
	char line[160];
	va_list ap;
	va_start(ap, fmt);
	report_vformat(line, sizeof line, fmt, ap);
	va_end(ap);
	out_str(o, line);
}

static void out_hex(prof_out_t *o, uintptr_t v)
{
	char tmp[20];
	int n = 0;
	do
		tmp[n++] = "0123456789abcdef"[v & 15];
	while ((v >>= 4) != 0);
	char s[24] = " 0x";
	int at = 3;
	while (n > 0)
		s[at++] = tmp[--n];
	s[at] = '\0';
	out_str(o, s);
}

int prof_dump(const char *path)
{
	if (!prof_setup()) {
		errno = ENOTSUP;
		return -1;
	}
	if (path == NULL) {
		errno = EINVAL;
		return -1;
	}
	int fd = os_prof_file_open(path);
	if (fd < 0)
		return -1;
	static prof_out_t out EBB_BIG_ZERO; /* 4 KiB: not on a thread's stack; the lock orders its users */
	uint64_t live_n = 0, live_bytes = 0, alloc_n = 0, alloc_bytes = 0;
	prof_lock();
	for (prof_site_t *s = prof_all; s; s = s->all) {
		for (prof_count_t *c = s->counts; c; c = c->site_next) {
			live_n += c->live_n;
			live_bytes += c->live_bytes;
			alloc_n += c->alloc_n;
			alloc_bytes += c->alloc_bytes;
		}
	}
	prof_out_t *o = &out;
	o->fd = fd;
	o->ok = true;
	o->n = 0;
	out_fmt(o, "heap profile: %llu: %llu [%llu: %llu] @ heap_v2/%llu\n", (unsigned long long)live_n,
		(unsigned long long)live_bytes, (unsigned long long)alloc_n, (unsigned long long)alloc_bytes,
		(unsigned long long)prof_rate);
	/* The lock is held for the whole dump, so that the lines add up to the
	 * header; nothing under it waits for anything but the file. */
	for (prof_site_t *s = prof_all; s; s = s->all) {
		for (prof_count_t *c = s->counts; c; c = c->site_next) {
			out_fmt(o, "%llu: %llu [%llu: %llu] @", (unsigned long long)c->live_n,
				(unsigned long long)c->live_bytes, (unsigned long long)c->alloc_n,
				(unsigned long long)c->alloc_bytes);
			for (uint32_t i = 0; i < s->depth; i++)
				out_hex(o, (uintptr_t)s->frames[i]);
			out_str(o, "\n");
		}
	}
	out_str(o, "\nMAPPED_LIBRARIES:\n");
	out_flush(o);
	bool ok = o->ok;
	prof_unlock();
	ok = ok && os_prof_file_copy(fd, "/proc/self/maps");
	int err = errno;
	os_file_close(fd);
	if (!ok) {
		errno = err ? err : EIO;
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------------------
 * At exit
 * ------------------------------------------------------------------------- */
/* "12.3 MiB" / "456 KiB" / "789 B" */
static void fmt_bytes(char *buf, size_t cap, double v)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	unsigned u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	unsigned long long tenths = (unsigned long long)(v * 10 + 0.5);
	if (u == 0)
		report_format(buf, cap, "%llu B", (unsigned long long)(v + 0.5));
	else
		report_format(buf, cap, "%llu.%llu %s", tenths / 10, tenths % 10, units[u]);
}

#define PROF_LEAK_SITES 10
#define PROF_LEAK_FRAMES 12

static EBB_COLD void prof_leak_report(void)
{
	char line[512], sym[320], sz[32];
	prof_site_t *top[PROF_LEAK_SITES];
	double est[PROF_LEAK_SITES], est_n[PROF_LEAK_SITES];
	uint64_t sampled[PROF_LEAK_SITES];
	unsigned ntop = 0, nsites = 0;
	double all_bytes = 0, all_n = 0;
	prof_lock();
	/* The largest sites by estimated live bytes, by insertion. */
	for (prof_site_t *s = prof_all; s; s = s->all) {
		double b = 0, n = 0;
		for (prof_count_t *c = s->counts; c; c = c->site_next) {
			if (c->live_n == 0)
				continue;
			double sc = prof_scale(c->live_bytes / c->live_n);
			n += (double)c->live_n * sc;
			b += (double)c->live_bytes * sc;
		}
		if (n == 0)
			continue;
		nsites++;
		all_bytes += b;
		all_n += n;
		unsigned i = ntop < PROF_LEAK_SITES ? ntop++ : PROF_LEAK_SITES;
		if (i == PROF_LEAK_SITES) {
			if (b <= est[PROF_LEAK_SITES - 1])
				continue;
			i = PROF_LEAK_SITES - 1;
		}
		while (i > 0 && est[i - 1] < b) {
			top[i] = top[i - 1];
			est[i] = est[i - 1];
			est_n[i] = est_n[i - 1];
			i--;
		}
		top[i] = s;
		est[i] = b;
		est_n[i] = n;
	}
	/* Sites and their frames are never freed or changed: only the counts
	 * need the lock. */
	for (unsigned i = 0; i < ntop; i++) {
		sampled[i] = 0;
		for (prof_count_t *c = top[i]->counts; c; c = c->site_next)
			sampled[i] += c->live_n;
	}
	prof_unlock();
	if (nsites == 0) {
		report_warn("prof_leaks: no sampled block is live at exit");
		return;
	}
	fmt_bytes(sz, sizeof sz, all_bytes);
	size_t n = report_format(line, sizeof line,
				 "ebbmalloc: prof_leaks: %u allocation sites hold sampled blocks at exit: "
				 "about %s in %llu objects (largest first%s)\n",
				 nsites, sz, (unsigned long long)(all_n + 0.5),
				 nsites > PROF_LEAK_SITES ? ", the first 10" : "");
	os_write_err(line, n);
	for (unsigned i = 0; i < ntop; i++) {
		prof_site_t *s = top[i];
		fmt_bytes(sz, sizeof sz, est[i]);
		n = report_format(line, sizeof line,
				  "ebbmalloc:   #%u: about %s in %llu objects (%llu sampled), allocated at:\n",
				  i + 1, sz, (unsigned long long)(est_n[i] + 0.5), (unsigned long long)sampled[i]);
		os_write_err(line, n);
		for (uint32_t f = 0; f < s->depth && f < PROF_LEAK_FRAMES; f++) {
			os_prof_symbol(s->frames[f], sym, sizeof sym);
			n = report_format(line, sizeof line, "ebbmalloc:       %p %s\n", s->frames[f], sym);
			os_write_err(line, n);
		}
	}
}

/* prof_file's path with %p replaced by the process id, %% by %. */
static EBB_COLD void prof_file_path(char *buf, size_t cap)
{
	char pattern[OPTIONS_STRING_MAX];
	options_get_string(OPT_PROF_FILE, pattern, sizeof pattern);
	size_t at = 0;
	for (const char *c = pattern; *c && at + 1 < cap; c++) {
		if (c[0] == '%' && c[1] == 'p') {
			at += report_format(buf + at, cap - at, "%u", os_pid());
			c++;
		} else if (c[0] == '%' && c[1] == '%') {
			buf[at++] = '%';
			c++;
		} else {
			buf[at++] = *c;
		}
	}
	buf[at] = '\0';
}

void prof_at_exit(void)
{
	if (atomic_load_u32_acquire(&prof_state) != 2)
		return;
	prof_thread.busy = true;
	if (options_get(OPT_PROF_LEAKS))
		prof_leak_report();
	if (options_get(OPT_PROF_FILE) > 0) {
		char path[OPTIONS_STRING_MAX + 16];
		prof_file_path(path, sizeof path);
		if (prof_dump(path) != 0)
			report_warn("prof_file: cannot write the profile to %s (errno %d)", path, errno);
	}
	prof_thread.busy = false;
}
