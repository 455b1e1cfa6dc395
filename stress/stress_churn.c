/*
 * stress_churn: thousands of short-lived threads, created and joined in
 * waves. Each thread allocates a few dozen blocks, takes blocks that earlier
 * threads left in a shared pool (most of them made by threads that have
 * exited and been joined), checks and frees them, reallocs some of its own,
 * leaves some in the pool for later threads, and exits with its thread cache
 * holding freshly freed blocks. At the end main drains the pool, and
 * ebb_stats_get() must show the live thread caches ("threads") back down to
 * what they were before the first wave: a thread cache that outlives its
 * thread is a leak.
 */
#include "stress_util.h"

static uint64_t opt_total = 20000;   /* threads in all */
static uint64_t opt_wave = 32;      /* threads alive at once: at most this */
static uint64_t opt_blocks = 48;    /* blocks each thread allocates */
static uint64_t opt_pool = 2048;    /* capacity of the hand-over pool */
static double opt_seconds = 0;      /* soak: run waves until this many seconds */
static size_t opt_max_size = 2 * ST_MIB;
static uint64_t opt_slack = 1;      /* allowed extra live caches at the end (background thread) */

/* The hand-over pools: two mutex-protected arrays of blocks, each tagged
 * with the wave of the thread that made it. Threads of wave w put blocks into
 * pool[w % 2] and take mostly from pool[(w + 1) % 2], which holds only blocks
 * of waves w-1, w-3, ...: threads that have exited and been joined. Now and
 * then they take from their own wave's pool too (blocks of threads that are
 * running alongside, or of wave w-2). */
typedef struct pooled {
	st_block b;
	uint64_t wave;
} pooled;

static pthread_mutex_t pool_lock[2] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};
static pooled *pool[2];
static size_t pool_n[2];

static atomic_uint_fast64_t n_allocs, n_frees, n_frees_exited, n_frees_same_wave, n_reallocs, n_pooled;
static atomic_uint_fast64_t max_threads_seen;

typedef struct targ {
	uint64_t serial; /* thread number since start */
	uint64_t wave;
	pthread_barrier_t *start; /* the wave's threads start together */
} targ;

/* Takes a random entry (or the newest), so blocks of older waves get mixed in. */
static bool pool_take(int which, st_rng *r, pooled *out)
{
	bool got = false;
	pthread_mutex_lock(&pool_lock[which]);
	size_t n = pool_n[which];
	if (n > 0) {
		size_t i = r && st_chance(r, 700) ? (size_t)st_below(r, n) : n - 1;
		*out = pool[which][i];
		pool[which][i] = pool[which][n - 1];
		pool_n[which] = n - 1;
		got = true;
	}
	pthread_mutex_unlock(&pool_lock[which]);
	return got;
}

static bool pool_put(int which, const pooled *in)
{
	bool put = false;
	pthread_mutex_lock(&pool_lock[which]);
	if (pool_n[which] < opt_pool) {
		pool[which][pool_n[which]++] = *in;
		put = true;
	}
	pthread_mutex_unlock(&pool_lock[which]);
	return put;
}

static void free_taken(pooled *pb, st_rng *r, uint64_t my_wave)
{
	if (pb->wave < my_wave)
		atomic_fetch_add_explicit(&n_frees_exited, 1, memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&n_frees_same_wave, 1, memory_order_relaxed);
	st_block_free(&pb->b, r, pb->wave < my_wave ? "free of a block made by a thread that has exited"
	                                            : "free of a block made by a thread of the same wave");
	atomic_fetch_add_explicit(&n_frees, 1, memory_order_relaxed);
}

static void *churner(void *arg)
{
	targ *ta = (targ *)arg;
	st_tid = (int)(ta->serial % ST_MAX_THREADS);
	st_rng r;
	st_rng_init(&r, st_seed, ta->serial + 1);
	pthread_barrier_wait(ta->start);

	size_t n = (size_t)opt_blocks;
	pooled mine[256];
	if (n > 256)
		n = 256;
	/* 1. allocate */
	for (size_t i = 0; i < n; i++) {
		st_op++;
		enum st_kind k = st_chance(&r, 150) ? ST_K_CALLOC : st_chance(&r, 100) ? ST_K_MEMALIGN : ST_K_MALLOC;
		size_t align = k == ST_K_MEMALIGN ? st_pick_align(&r, 64 * ST_KIB) : 0;
		uint64_t serial = ((ta->serial + 1) << 40) | i;
		st_block_alloc(&mine[i].b, &r, k, st_pick_size(&r, opt_max_size), align, serial, false);
		mine[i].wave = ta->wave;
		st_tick();
	}
	atomic_fetch_add_explicit(&n_allocs, n, memory_order_relaxed);

	/* 2. take blocks left by earlier threads: check and free them */
	size_t take = (size_t)st_range(&r, n / 4, n);
	for (size_t i = 0; i < take; i++) {
		pooled pb;
		int which = (int)((ta->wave + (st_chance(&r, 850) ? 1 : 0)) % 2);
		if (!pool_take(which, &r, &pb))
			continue;
		st_op++;
		free_taken(&pb, &r, ta->wave);
		st_tick();
	}

	/* 3. realloc some of our own, free some, hand the rest over */
	for (size_t i = 0; i < n; i++) {
		st_op++;
		if (st_chance(&r, 200)) {
			st_block_check(&mine[i].b, "before realloc");
			size_t ns = st_pick_size(&r, opt_max_size);
			st_block_realloc(&mine[i].b, ns, st_chance(&r, 300), "realloc in a short-lived thread");
			atomic_fetch_add_explicit(&n_reallocs, 1, memory_order_relaxed);
		}
		if (st_chance(&r, 450) && pool_put((int)(ta->wave % 2), &mine[i])) {
			atomic_fetch_add_explicit(&n_pooled, 1, memory_order_relaxed);
			continue;
		}
		st_block_free(&mine[i].b, &r, "free by the thread that made the block");
		atomic_fetch_add_explicit(&n_frees, 1, memory_order_relaxed);
		st_tick();
	}

	/* 4. leave the thread cache full of freed blocks when we exit */
	size_t burst = (size_t)st_range(&r, 8, 64);
	void *tmp[64];
	for (size_t i = 0; i < burst; i++) {
		tmp[i] = ebb_malloc(st_logrange(&r, 16, 2048));
		ST_CHECK(tmp[i] != NULL, "malloc in a short-lived thread returned NULL");
		memset(tmp[i], 0xa5, 16);
	}
	for (size_t i = 0; i < burst; i++)
		ebb_free(tmp[i]);
	return NULL;
}

int main(int argc, char **argv)
{
	static const st_opt opts[] = {
		{"threads-total", ST_OPT_COUNT, &opt_total, "short-lived threads in all"},
		{"wave", ST_OPT_COUNT, &opt_wave, "largest wave: threads created (then joined) together, 1 to this many"},
		{"blocks", ST_OPT_COUNT, &opt_blocks, "blocks each thread allocates (at most 256)"},
		{"pool", ST_OPT_COUNT, &opt_pool, "capacity of the pool of blocks handed to later threads"},
		{"seconds", ST_OPT_DOUBLE, &opt_seconds, "soak: run waves for this long instead of --threads-total"},
		{"max-size", ST_OPT_SIZE, &opt_max_size, "largest request"},
		{"thread-slack", ST_OPT_COUNT, &opt_slack, "extra live thread caches tolerated at the end"},
	};
	st_parse_args(argc, argv, "stress_churn",
	              "Thread churn: short-lived threads in waves, freeing blocks of threads that have exited.",
	              opts, sizeof opts / sizeof opts[0]);
	if (opt_wave < 1 || opt_wave > 512 || opt_blocks < 1 || opt_blocks > 256 || opt_pool < 1 ||
	    (opt_total < 1 && opt_seconds <= 0) || opt_max_size < 16) {
		fprintf(stderr, "stress_churn: bad arguments (try --help)\n");
		return 2;
	}
	st_print_config(argc, argv);
	pool[0] = (pooled *)calloc(opt_pool, sizeof(pooled));
	pool[1] = (pooled *)calloc(opt_pool, sizeof(pooled));
	ST_CHECK(pool[0] && pool[1], "out of memory");

	/* the baseline: main's own cache exists once it has allocated */
	void *warm = ebb_malloc(64);
	ST_CHECK(warm != NULL, "malloc(64) returned NULL");
	ebb_free(warm);
	struct ebb_stats s0, s;
	ebb_stats_get(&s0);
	st_stats_print_short(&s0, "before the first wave");

	st_watchdog_start();
	st_rng wr;
	st_rng_init(&wr, st_seed, 0x3a7e);
	double t0 = st_now();
	pthread_t th[512];
	targ args[512];
	pthread_barrier_t start;
	uint64_t created = 0, waves = 0;
	for (;;) {
		if (opt_seconds > 0 ? st_now() - t0 >= opt_seconds : created >= opt_total)
			break;
		/* wave sizes vary from 1 to --wave threads */
		uint64_t w = st_range(&wr, 1, opt_wave);
		if (opt_seconds <= 0 && opt_total - created < w)
			w = opt_total - created;
		/* the wave's threads start together: main counts as one more */
		pthread_barrier_init(&start, NULL, (unsigned)w + 1);
		for (uint64_t i = 0; i < w; i++) {
			args[i].serial = created + i;
			args[i].wave = waves;
			args[i].start = &start;
			st_thread_create(&th[i], churner, &args[i]);
		}
		pthread_barrier_wait(&start);
		/* while the wave runs: sample the live thread caches */
		if (waves % 8 == 0) {
			ebb_stats_get(&s);
			uint64_t m = atomic_load(&max_threads_seen);
			if (s.threads > m)
				atomic_store(&max_threads_seen, s.threads);
		}
		for (uint64_t i = 0; i < w; i++)
			st_thread_join(th[i]);
		pthread_barrier_destroy(&start);
		created += w;
		waves++;
		st_tick();
		if (waves % 250 == 0) {
			ebb_stats_get(&s);
			printf("%s: %" PRIu64 " threads in %" PRIu64 " waves, %.1f s, live caches %" PRIu64 "\n", st_prog,
			       created, waves, st_now() - t0, s.threads);
		}
	}
	double elapsed = st_now() - t0;

	/* drain: every block left was made by a thread that has exited */
	st_rng r;
	st_rng_init(&r, st_seed, 0);
	pooled pb;
	uint64_t drained = 0;
	for (int which = 0; which < 2; which++)
		while (pool_take(which, NULL, &pb)) {
			free_taken(&pb, &r, UINT64_MAX);
			drained++;
		}
	st_watchdog_end();

	uint64_t allocs = atomic_load(&n_allocs), frees = atomic_load(&n_frees);
	st_log("%" PRIu64 " threads in %" PRIu64 " waves of 1-%" PRIu64 ", %.1f s (%.0f threads/s): %" PRIu64
	       " allocations, %" PRIu64 " reallocs, %" PRIu64 " frees (%" PRIu64 " of blocks made by exited threads, %"
	       PRIu64 " by threads of the same wave), %" PRIu64 " handed over, %" PRIu64 " drained by main",
	       created, waves, opt_wave, elapsed, (double)created / elapsed, allocs, (uint64_t)atomic_load(&n_reallocs),
	       frees, (uint64_t)atomic_load(&n_frees_exited), (uint64_t)atomic_load(&n_frees_same_wave),
	       (uint64_t)atomic_load(&n_pooled), drained);
	ST_CHECK(allocs == frees, "bookkeeping: %" PRIu64 " allocations, %" PRIu64 " frees", allocs, frees);
	if (waves > 1)
		ST_CHECK(atomic_load(&n_frees_exited) > 0, "no block of an exited thread was freed: the test did not "
		         "test what it should");

	/* the live thread caches must come back down; give a lazy cleanup a moment */
	ebb_stats_get(&s);
	double wait_start = st_now();
	while (s.threads > s0.threads + opt_slack && st_now() - wait_start < 5.0) {
		st_sleep_ms(50);
		ebb_stats_get(&s);
	}
	printf("%s: live thread caches: %" PRIu64 " before, at most %" PRIu64 " seen during waves (sampled), %" PRIu64
	       " after %" PRIu64 " threads exited\n",
	       st_prog, s0.threads, (uint64_t)atomic_load(&max_threads_seen), s.threads, created);
	if (s.threads > s0.threads + opt_slack) {
		ebb_stats_print(stderr);
		ST_FAIL("ebb_stats threads = %" PRIu64 " after all %" PRIu64 " short-lived threads were joined, was %" PRIu64
		        " before (slack %" PRIu64 "): thread caches are not released at thread exit",
		        s.threads, created, s0.threads, opt_slack);
	}
	(void)ebb_trim();
	st_check_stats_identity("after every thread was joined and every block freed");
	ebb_stats_get(&s);
	st_stats_print_short(&s, "end");
	free(pool[0]);
	free(pool[1]);
	st_log("PASS");
	return 0;
}
