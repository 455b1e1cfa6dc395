/*
 * arena: the per-request pattern of a server. Each "request" makes --allocs
 * allocations of mixed sizes (--min-size to --max-size, spread evenly over
 * powers of two), writes into each, and then drops them all. Measured ways
 * of dropping them, one after another in the same process:
 *
 *   malloc        malloc each block, free each one at the end of the request
 *   arena         ebb_arena_alloc from one arena per thread, ebb_arena_reset
 *                 at the end of the request
 *   arena-create  a new arena per request, ebb_arena_destroy at its end
 *   fixed-malloc  the same count of --object-size blocks, malloc + free
 *   pool          the same with ebb_pool_alloc + ebb_pool_free (one pool per
 *                 thread: the case a pool fits, objects of one size)
 *
 * Sizes come from a table filled before the clock starts, so every way pays
 * the same for them and none pays for the PRNG.
 *
 * How the arena API is reached: like every program here, this one is not
 * linked with ebbmalloc (the allocator under test comes in by LD_PRELOAD, or
 * is glibc's). It looks ebb_arena_* and ebb_pool_* up at run time with
 * dlsym(RTLD_DEFAULT, ...): under LD_PRELOAD=libebbmalloc.so they are found
 * and measured; under any other allocator the arena and pool ways are
 * reported as not available (arena=unavailable in the result line) and only
 * the malloc ways run. ebbmalloc.h is included for the functions' types only.
 *
 * The result line's ops_per_sec is the malloc way's allocations per second
 * (comparable between allocators); the others are extra keys:
 * <way>_ns (ns per allocation, its share of free/reset included),
 * <way>_ops_per_sec, and arena_speedup / pool_speedup (over malloc and
 * fixed-malloc of the same allocator).
 */
#include "bench_util.h"

#include <dlfcn.h>

#include "../include/ebbmalloc.h"

static uint64_t opt_threads = 1;
static uint64_t opt_requests = 200000;
static uint64_t opt_allocs = 100;
static uint64_t opt_min = 8;
static uint64_t opt_max = 512;
static uint64_t opt_object = 64;
static uint64_t opt_seed = 42;
static const char *opt_mode = "all";

static const bu_opt options[] = {
	{ "threads", BU_COUNT, &opt_threads, "threads, each serving its own requests" },
	{ "requests", BU_COUNT, &opt_requests, "requests per way, split among the threads" },
	{ "allocs", BU_COUNT, &opt_allocs, "allocations per request" },
	{ "min-size", BU_SIZE, &opt_min, "smallest block" },
	{ "max-size", BU_SIZE, &opt_max, "largest block" },
	{ "object-size", BU_SIZE, &opt_object, "block size of the fixed-malloc and pool ways" },
	{ "mode", BU_STRING, &opt_mode, "all, or one way: malloc, arena, arena-create, fixed-malloc, pool" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ NULL, 0, NULL, NULL },
};

/* ebbmalloc's arena and pool API, if the process has it. */
static struct {
	__typeof__(ebb_arena_create) *arena_create;
	__typeof__(ebb_arena_alloc) *arena_alloc;
	__typeof__(ebb_arena_reset) *arena_reset;
	__typeof__(ebb_arena_destroy) *arena_destroy;
	__typeof__(ebb_pool_create) *pool_create;
	__typeof__(ebb_pool_alloc) *pool_alloc;
	__typeof__(ebb_pool_free) *pool_free;
	__typeof__(ebb_pool_destroy) *pool_destroy;
} ebb;

static int ebb_lookup(void)
{
#define BENCH_SYM_(field, name) (*(void **)&ebb.field = dlsym(RTLD_DEFAULT, name)) != NULL
	return BENCH_SYM_(arena_create, "ebb_arena_create") && BENCH_SYM_(arena_alloc, "ebb_arena_alloc") &&
	       BENCH_SYM_(arena_reset, "ebb_arena_reset") && BENCH_SYM_(arena_destroy, "ebb_arena_destroy") &&
	       BENCH_SYM_(pool_create, "ebb_pool_create") && BENCH_SYM_(pool_alloc, "ebb_pool_alloc") &&
	       BENCH_SYM_(pool_free, "ebb_pool_free") && BENCH_SYM_(pool_destroy, "ebb_pool_destroy");
#undef BENCH_SYM_
}

enum way { W_MALLOC, W_ARENA, W_ARENA_CREATE, W_FIXED_MALLOC, W_POOL, W_COUNT };
static const char *const way_names[W_COUNT] = { "malloc", "arena", "arena-create", "fixed-malloc", "pool" };
static const char *const way_keys[W_COUNT] = { "malloc", "arena", "arena_create", "fixed_malloc", "pool" };

#define SIZE_TABLE 65536 /* a power of two */

typedef struct {
	uint64_t index;
	uint64_t requests;
	enum way way;
	uint32_t *sizes;   /* SIZE_TABLE entries */
	void **ptrs;       /* one request's blocks */
	uint64_t checksum; /* read back from the blocks, so the writes are not dead */
	char pad[BU_CACHE_LINE];
} work;

static bu_gate gate;

/* The request's work on a block: write its first and last byte. */
static inline void use(char *p, size_t n, uint64_t k)
{
	p[0] = (char)k;
	p[n - 1] = (char)(k >> 8);
}

static void *worker(void *arg)
{
	work *w = arg;
	const uint32_t *sizes = w->sizes;
	void **ptrs = w->ptrs;
	size_t allocs = (size_t)opt_allocs, obj = (size_t)opt_object;
	uint64_t sum = 0, at = w->index * 7919;
	ebb_arena_t *arena = NULL;
	ebb_pool_t *pool = NULL;
	if (w->way == W_ARENA) {
		arena = ebb.arena_create(0, 0);
		BU_CHECK(arena, "ebb_arena_create failed");
	} else if (w->way == W_POOL) {
		pool = ebb.pool_create(obj, 0, 0);
		BU_CHECK(pool, "ebb_pool_create failed");
	}
	bu_gate_wait(&gate);
	for (uint64_t r = 0; r < w->requests; r++) {
		switch (w->way) {
		case W_MALLOC:
			for (size_t k = 0; k < allocs; k++) {
				size_t n = sizes[(at + k) & (SIZE_TABLE - 1)];
				char *p = malloc(n);
				BU_CHECK(p, "malloc(%zu) failed", n);
				use(p, n, k);
				ptrs[k] = p;
			}
			for (size_t k = 0; k < allocs; k++) {
				sum += *(unsigned char *)ptrs[k];
				free(ptrs[k]);
			}
			break;
		case W_ARENA:
		case W_ARENA_CREATE:
			if (w->way == W_ARENA_CREATE) {
				arena = ebb.arena_create(0, 0);
				BU_CHECK(arena, "ebb_arena_create failed");
			}
			for (size_t k = 0; k < allocs; k++) {
				size_t n = sizes[(at + k) & (SIZE_TABLE - 1)];
				char *p = ebb.arena_alloc(arena, n);
				BU_CHECK(p, "ebb_arena_alloc(%zu) failed", n);
				use(p, n, k);
				ptrs[k] = p;
			}
			for (size_t k = 0; k < allocs; k++)
				sum += *(unsigned char *)ptrs[k];
			if (w->way == W_ARENA_CREATE)
				ebb.arena_destroy(arena);
			else
				ebb.arena_reset(arena);
			break;
		case W_FIXED_MALLOC:
		case W_POOL:
			for (size_t k = 0; k < allocs; k++) {
				char *p = w->way == W_POOL ? ebb.pool_alloc(pool) : malloc(obj);
				BU_CHECK(p, "allocating %zu bytes failed", obj);
				use(p, obj, k);
				ptrs[k] = p;
			}
			for (size_t k = 0; k < allocs; k++) {
				sum += *(unsigned char *)ptrs[k];
				if (w->way == W_POOL)
					ebb.pool_free(pool, ptrs[k]);
				else
					free(ptrs[k]);
			}
			break;
		default:
			break;
		}
		at += allocs;
	}
	if (w->way == W_ARENA)
		ebb.arena_destroy(arena);
	if (pool)
		ebb.pool_destroy(pool);
	w->checksum = sum;
	return NULL;
}

/* Runs one way with every thread; returns the nanoseconds it took. */
static uint64_t run_way(enum way way, work *w, size_t t, uint64_t requests)
{
	for (size_t i = 0; i < t; i++) {
		w[i].way = way;
		w[i].requests = requests / t + (i < requests % t ? 1 : 0);
	}
	atomic_store(&gate.arrived, 0);
	gate.expected = t;
	bu_run_threads(t, worker, w, sizeof(work));
	return bu_now_ns() - gate.start_ns;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "The per-request pattern: each request makes --allocs allocations of mixed\n"
		      "sizes and drops them all at its end, with malloc/free, with an ebb_arena\n"
		      "reset per request, with an arena created and destroyed per request, and\n"
		      "(one size) with malloc/free against an ebb_pool. The arena and pool ways\n"
		      "need ebbmalloc in the process (LD_PRELOAD=libebbmalloc.so); with another\n"
		      "allocator they are reported as not available.",
		      options);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 1024, "--threads must be 1..1024");
	BU_CHECK(opt_min >= 1 && opt_min <= opt_max && opt_max <= (1u << 30), "need 1 <= --min-size <= --max-size <= 1G");
	BU_CHECK(opt_allocs >= 1, "--allocs must be >= 1");
	BU_CHECK(opt_object >= 1 && opt_object <= (1u << 20), "--object-size must be 1..1M");
	BU_CHECK(opt_requests >= opt_threads, "--requests must be at least --threads");
	int run[W_COUNT] = { 0 };
	int all = strcmp(opt_mode, "all") == 0;
	for (int i = 0; i < W_COUNT; i++)
		run[i] = all || strcmp(opt_mode, way_names[i]) == 0;
	int any = 0;
	for (int i = 0; i < W_COUNT; i++)
		any |= run[i];
	BU_CHECK(any, "unknown --mode '%s' (try --help)", opt_mode);

	int have_ebb = ebb_lookup();
	if (!have_ebb) {
		if (!all && !run[W_MALLOC] && !run[W_FIXED_MALLOC])
			bu_die("--mode=%s needs ebbmalloc's arena API in the process (LD_PRELOAD=libebbmalloc.so)",
			       opt_mode);
		run[W_ARENA] = run[W_ARENA_CREATE] = run[W_POOL] = 0;
		printf("# ebb_arena_* / ebb_pool_* not available (the allocator is not ebbmalloc): "
		       "malloc ways only\n");
	}

	size_t t = (size_t)opt_threads;
	work *w = bu_map(t * sizeof(work));
	for (size_t i = 0; i < t; i++) {
		bu_rng rng = bu_rng_make(opt_seed, i);
		w[i].index = i;
		w[i].sizes = bu_map(SIZE_TABLE * sizeof(uint32_t));
		w[i].ptrs = bu_map((size_t)opt_allocs * sizeof(void *));
		for (size_t k = 0; k < SIZE_TABLE; k++)
			w[i].sizes[k] = (uint32_t)bu_rng_size_log(&rng, (size_t)opt_min, (size_t)opt_max);
	}

	/* A short warm-up of each way (thread caches, the arena's first chunk,
	 * page faults), then the measured runs. */
	double ns[W_COUNT] = { 0 };
	uint64_t ops = opt_requests * opt_allocs, checksum = 0;
	for (int i = 0; i < W_COUNT; i++) {
		if (!run[i])
			continue;
		run_way((enum way)i, w, t, opt_requests / 20 + t);
		uint64_t d = run_way((enum way)i, w, t, opt_requests);
		ns[i] = (double)d / (double)ops;
		for (size_t k = 0; k < t; k++)
			checksum += w[k].checksum;
		printf("# %-12s %8.2f ns per allocation (its free/reset included), %7.2f M allocations/s\n",
		       way_names[i], ns[i], 1e3 / ns[i]);
	}

	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result("allocs", "%" PRIu64, opt_allocs);
	bu_result("sizes", "%" PRIu64 "-%" PRIu64, opt_min, opt_max);
	bu_result("arena", "%s", have_ebb ? "available" : "unavailable");
	for (int i = 0; i < W_COUNT; i++) {
		if (!run[i])
			continue;
		char key[64];
		snprintf(key, sizeof key, "%s_ns", way_keys[i]);
		bu_result(key, "%.3f", ns[i]);
		snprintf(key, sizeof key, "%s_ops_per_sec", way_keys[i]);
		bu_result(key, "%.1f", 1e9 / ns[i]);
	}
	if (run[W_MALLOC] && run[W_ARENA])
		bu_result("arena_speedup", "%.3f", ns[W_MALLOC] / ns[W_ARENA]);
	if (run[W_MALLOC] && run[W_ARENA_CREATE])
		bu_result("arena_create_speedup", "%.3f", ns[W_MALLOC] / ns[W_ARENA_CREATE]);
	if (run[W_FIXED_MALLOC] && run[W_POOL])
		bu_result("pool_speedup", "%.3f", ns[W_FIXED_MALLOC] / ns[W_POOL]);
	/* The row's metric: the first way that ran (malloc in mode all). */
	int first = 0;
	while (!run[first])
		first++;
	bu_result("ops", "%" PRIu64, ops);
	bu_result("seconds", "%.6f", ns[first] * (double)ops / 1e9);
	bu_result("ops_per_sec", "%.1f", 1e9 / ns[first]);
	bu_result("checksum", "%" PRIu64, checksum);
	bu_result_print("arena");
	return 0;
}
