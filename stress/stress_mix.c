/*
 * stress_mix: many threads doing a random mix of every allocation call, with
 * blocks handed between threads through a shared array of slots.
 *
 * Each worker holds --local descriptors; a step picks one: an empty one is
 * filled by malloc, calloc, realloc(NULL), reallocarray(NULL),
 * posix_memalign, aligned_alloc, memalign (16 B to --max-align, sometimes a
 * non-power-of-two rounded up), valloc or pvalloc; a full one is freed
 * (free, free_sized, free_aligned_sized or realloc(p, 0)), realloc'ed or
 * reallocarray'ed to a related or a random size, checked, or swapped with a
 * random shared slot (so blocks are freed, realloc'ed and checked by threads
 * other than the one that made them). Every block carries a pattern derived
 * from its address, size and serial; it is checked whenever the block changes
 * hands, before realloc, after realloc (min(old, new) bytes) and before free.
 * Every fresh pointer is checked for alignment and usable size >= size, every
 * calloc block for zeros. A monitor thread calls ebb_trim() and
 * ebb_stats_get() every --trim-ms while the workers run.
 *
 * Fault mode (--ebb-option fault_map=NNNppm and friends, see stress_util.h
 * st_faults): the kernel calls fail at random while all of this runs; every
 * refused allocation must be NULL with ENOMEM and every check still pass.
 */
#include "stress_util.h"

static uint64_t opt_threads = 8;
static double opt_seconds = 20;
static uint64_t opt_ops = 0;
static uint64_t opt_local = 64;
static uint64_t opt_slots = 1024;
static size_t opt_max_size = 6 * ST_MIB;
static size_t opt_max_align = ST_MIB;
static double opt_trim_ms = 50;
static bool opt_tail = true;

static st_xchg X;
static atomic_int stop_flag;
static double t_start;

typedef struct wstats {
	uint64_t ops, allocs[ST_K_COUNT], frees, remote_frees, reallocs, remote_reallocs, received, checks;
	uint64_t bytes_allocated;
} wstats;

static wstats *W;

static const char *key_owner(uint64_t key, char *buf, size_t len)
{
	for (size_t i = 0; i < X.ndesc; i++) {
		const st_block *b = &X.desc[i];
		if (b->p && b->key == key) {
			snprintf(buf, len, "which is live block %p (size %zu, %s by thread %d)", (void *)b->p, b->size,
			         st_kind_names[b->kind < ST_K_COUNT ? b->kind : 0], st_block_thread(b));
			return buf;
		}
	}
	return NULL;
}

/* The error paths, once per thread, while the others allocate. */
static void check_error_paths(void)
{
	void *p;
	errno = 0;
	p = ebb_calloc(SIZE_MAX / 2 + 2, 2);
	ST_CHECK(p == NULL && errno == ENOMEM, "calloc with an overflowing count*size returned %p (errno %d), "
	         "expected NULL/ENOMEM", p, errno);
	errno = 0;
	p = ebb_reallocarray(NULL, SIZE_MAX / 4 + 1, 8);
	ST_CHECK(p == NULL && errno == ENOMEM, "reallocarray with an overflowing product returned %p (errno %d), "
	         "expected NULL/ENOMEM", p, errno);
	errno = 0;
	p = ebb_malloc(SIZE_MAX - 4096);
	ST_CHECK(p == NULL && errno == ENOMEM, "malloc(SIZE_MAX - 4096) returned %p (errno %d), expected NULL/ENOMEM",
	         p, errno);
	p = (void *)1;
	int rc = ebb_posix_memalign(&p, 24, 64);
	ST_CHECK(rc == EINVAL, "posix_memalign(alignment 24) returned %d, expected EINVAL", rc);
	rc = ebb_posix_memalign(&p, 4, 64);
	ST_CHECK(rc == EINVAL, "posix_memalign(alignment 4 < sizeof(void *)) returned %d, expected EINVAL", rc);
	errno = 0;
	p = ebb_aligned_alloc(48, 64);
	ST_CHECK(p == NULL && errno == EINVAL, "aligned_alloc(alignment 48) returned %p (errno %d), expected "
	         "NULL/EINVAL", p, errno);
	ST_CHECK(ebb_malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) is not 0");
	ebb_free(NULL);
}

static enum st_kind pick_kind(st_rng *r)
{
	static const struct {
		enum st_kind k;
		unsigned w;
	} table[] = {
		{ST_K_MALLOC, 35},        {ST_K_CALLOC, 15},         {ST_K_REALLOC_NULL, 5},
		{ST_K_REALLOCARRAY_NULL, 5}, {ST_K_POSIX_MEMALIGN, 10}, {ST_K_ALIGNED_ALLOC, 10},
		{ST_K_MEMALIGN, 12},      {ST_K_VALLOC, 3},          {ST_K_PVALLOC, 5},
	};
	unsigned v = (unsigned)st_below(r, 100);
	for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
		if (v < table[i].w)
			return table[i].k;
		v -= table[i].w;
	}
	return ST_K_MALLOC;
}

static void do_alloc(st_block *b, st_rng *r, wstats *ws, int tid)
{
	enum st_kind k = pick_kind(r);
	size_t size = st_pick_size(r, opt_max_size);
	size_t align = 0;
	if (k == ST_K_POSIX_MEMALIGN || k == ST_K_ALIGNED_ALLOC || k == ST_K_MEMALIGN) {
		align = st_pick_align(r, opt_max_align);
		/* big alignments with big sizes: keep the footprint sane */
		if (align > 64 * ST_KIB && size > 256 * ST_KIB)
			size = st_logrange(r, 1, 256 * ST_KIB);
	}
	if (k == ST_K_VALLOC || k == ST_K_PVALLOC) {
		if (size > ST_MIB)
			size = st_logrange(r, 1, ST_MIB);
		if (k == ST_K_PVALLOC && st_chance(r, 20))
			size = 0; /* pvalloc(0) is one page */
	}
	uint64_t serial = ((uint64_t)(tid + 1) << 40) | ws->ops;
	st_block_alloc(b, r, k, size, align, serial, opt_tail && st_chance(r, 100));
	if (b->p == NULL)
		return; /* refused in fault mode (st_refused) */
	ws->allocs[k]++;
	ws->bytes_allocated += size;
}

static size_t pick_realloc_size(st_rng *r, size_t old)
{
	switch (st_below(r, 4)) {
	case 0: /* small step up or down */
		if (st_chance(r, 500))
			return old + st_range(r, 1, 64);
		return old > 65 ? old - st_range(r, 1, 64) : st_range(r, 1, 128);
	case 1: /* grow by up to 2x */
		return old + st_range(r, 1, old < opt_max_size / 2 ? old + 1 : 1);
	case 2: /* shrink to a fraction */
		return old > 2 ? st_range(r, 1, old / 2) : 1;
	default:
		return st_pick_size(r, opt_max_size);
	}
}

static void *worker(void *arg)
{
	int tid = (int)(intptr_t)arg;
	st_tid = tid;
	st_rng r;
	st_rng_init(&r, st_seed, (uint64_t)tid + 1);
	wstats *ws = &W[tid];
	uint32_t *local = (uint32_t *)calloc(opt_local, sizeof *local);
	ST_CHECK(local != NULL, "out of memory");
	for (uint64_t i = 0; i < opt_local; i++)
		local[i] = (uint32_t)(opt_slots + (uint64_t)tid * opt_local + i);
	check_error_paths();

	double deadline = t_start + opt_seconds;
	for (;;) {
		if ((ws->ops & 63) == 0) {
			if (atomic_load_explicit(&stop_flag, memory_order_relaxed))
				break;
			if (opt_seconds > 0 && st_now() >= deadline)
				break;
		}
		if (opt_ops && ws->ops >= opt_ops)
			break;
		st_op = ++ws->ops;
		st_tick();
		size_t i = (size_t)st_below(&r, opt_local);
		st_block *b = &X.desc[local[i]];
		if (!b->p) {
			do_alloc(b, &r, ws, tid);
			continue;
		}
		unsigned v = (unsigned)st_below(&r, 100);
		if (v < 35) {
			if (st_block_thread(b) != tid)
				ws->remote_frees++;
			st_block_free(b, &r, "before free");
			ws->frees++;
		} else if (v < 50) {
			st_block_check(b, "before realloc");
			if (st_block_thread(b) != tid)
				ws->remote_reallocs++;
			size_t ns = pick_realloc_size(&r, b->size);
			st_block_realloc(b, ns < opt_max_size ? ns : opt_max_size, st_chance(&r, 250), "realloc in stress_mix");
			ws->reallocs++;
		} else if (v < 88 && opt_slots) {
			size_t s = (size_t)st_below(&r, opt_slots);
			local[i] = st_xchg_swap(&X, s, local[i]);
			st_block *nb = &X.desc[local[i]];
			if (nb->p) {
				st_block_check(nb, "block received from another thread");
				ws->received++;
			}
		} else {
			st_block_check(b, "recheck of a held block");
			ws->checks++;
		}
	}
	/* free what this thread holds; the slots are drained by main */
	for (uint64_t i = 0; i < opt_local; i++) {
		st_block *b = &X.desc[local[i]];
		if (b->p) {
			if (st_block_thread(b) != tid)
				ws->remote_frees++;
			st_block_free(b, &r, "final free by a worker");
			ws->frees++;
		}
	}
	free(local);
	return NULL;
}

static void *monitor(void *arg)
{
	(void)arg;
	uint64_t n = 0;
	while (!atomic_load_explicit(&stop_flag, memory_order_acquire)) {
		st_sleep_ms(opt_trim_ms);
		struct ebb_stats s;
		ebb_stats_get(&s);
		if (n++ % 4 == 0)
			(void)ebb_trim();
		st_tick();
	}
	return NULL;
}

int main(int argc, char **argv)
{
	static const st_opt opts[] = {
		{"threads", ST_OPT_COUNT, &opt_threads, "worker threads"},
		{"seconds", ST_OPT_DOUBLE, &opt_seconds, "run time (0: until --ops)"},
		{"ops", ST_OPT_COUNT, &opt_ops, "operations per thread (0: until --seconds)"},
		{"local", ST_OPT_COUNT, &opt_local, "blocks each thread holds"},
		{"slots", ST_OPT_COUNT, &opt_slots, "shared slots for handing blocks between threads"},
		{"max-size", ST_OPT_SIZE, &opt_max_size, "largest request"},
		{"max-align", ST_OPT_SIZE, &opt_max_align, "largest alignment (power of two)"},
		{"trim-ms", ST_OPT_DOUBLE, &opt_trim_ms, "monitor period: stats every period, trim every 4 (0: off)"},
		{"tail", ST_OPT_BOOL, &opt_tail, "write the usable tail of 10% of blocks"},
	};
	st_parse_args(argc, argv, "stress_mix",
	              "Random mix of every allocation call in many threads, blocks handed between threads.", opts,
	              sizeof opts / sizeof opts[0]);
	if (opt_threads < 1 || opt_threads > ST_MAX_THREADS || opt_local < 1 ||
	    (opt_seconds <= 0 && opt_ops == 0) || opt_max_size < 16 || (opt_max_align & (opt_max_align - 1)) ||
	    opt_slots + opt_threads * opt_local > UINT32_MAX) {
		fprintf(stderr, "stress_mix: bad arguments (try --help)\n");
		return 2;
	}
	st_print_config(argc, argv);
	st_key_owner_hook = key_owner;

	st_xchg_init(&X, opt_slots, opt_threads * opt_local);
	W = (wstats *)calloc(opt_threads, sizeof *W);
	pthread_t *th = (pthread_t *)calloc(opt_threads, sizeof *th);
	ST_CHECK(W && th, "out of memory");

	st_watchdog_start();
	t_start = st_now();
	pthread_t mon;
	bool have_mon = opt_trim_ms > 0;
	if (have_mon)
		st_thread_create(&mon, monitor, NULL);
	for (uint64_t t = 0; t < opt_threads; t++)
		st_thread_create(&th[t], worker, (void *)(intptr_t)t);
	for (uint64_t t = 0; t < opt_threads; t++)
		st_thread_join(th[t]);
	atomic_store_explicit(&stop_flag, 1, memory_order_release);
	if (have_mon)
		st_thread_join(mon);
	double elapsed = st_now() - t_start;

	/* drain the slots: blocks of threads that have exited, freed by main */
	st_rng r;
	st_rng_init(&r, st_seed, 0);
	uint64_t drained = 0;
	for (uint64_t s = 0; s < opt_slots; s++) {
		st_block *b = &X.desc[atomic_load(&X.slot[s])];
		if (b->p) {
			st_block_free(b, &r, "drain of the shared slots");
			drained++;
		}
	}
	st_watchdog_end();

	wstats tot;
	memset(&tot, 0, sizeof tot);
	for (uint64_t t = 0; t < opt_threads; t++) {
		tot.ops += W[t].ops;
		for (int k = 0; k < ST_K_COUNT; k++)
			tot.allocs[k] += W[t].allocs[k];
		tot.frees += W[t].frees;
		tot.remote_frees += W[t].remote_frees;
		tot.reallocs += W[t].reallocs;
		tot.remote_reallocs += W[t].remote_reallocs;
		tot.received += W[t].received;
		tot.checks += W[t].checks;
		tot.bytes_allocated += W[t].bytes_allocated;
	}
	uint64_t allocs = 0;
	for (int k = 0; k < ST_K_COUNT; k++)
		allocs += tot.allocs[k];
	st_log("%" PRIu64 " threads, %.1f s: %" PRIu64 " ops (%.2f M/s), %" PRIu64 " allocations (%.1f GiB), %" PRIu64
	       " reallocs (%" PRIu64 " of other threads' blocks), %" PRIu64 " frees (%" PRIu64
	       " of other threads' blocks) + %" PRIu64 " drained, %" PRIu64 " blocks received",
	       opt_threads, elapsed, tot.ops, (double)tot.ops / elapsed / 1e6, allocs,
	       (double)tot.bytes_allocated / (1024.0 * ST_MIB), tot.reallocs, tot.remote_reallocs, tot.frees,
	       tot.remote_frees, drained, tot.received);
	printf("%s: by call:", st_prog);
	for (int k = 1; k < ST_K_COUNT; k++)
		printf(" %s %" PRIu64, st_kind_names[k], tot.allocs[k]);
	printf("\n");

	/* every allocation was freed exactly once */
	ST_CHECK(tot.frees + drained == allocs, "bookkeeping: %" PRIu64 " allocations but %" PRIu64 " frees",
	         allocs, tot.frees + drained);
	if (opt_threads > 1 && opt_slots > 0 && tot.ops > 10000)
		ST_CHECK(tot.received > 0 && tot.remote_frees > 0,
		         "no block changed threads: the test did not test what it should");

	if (st_faults) {
		uint64_t refused = atomic_load(&st_enomem_count);
		st_log("fault mode: %" PRIu64 " allocations and reallocs refused with ENOMEM", refused);
		ST_CHECK(refused > 0, "fault mode, but the allocator never said ENOMEM: no fault was injected");
	}
	(void)ebb_trim();
	st_check_stats_identity("after all blocks were freed");
	struct ebb_stats s;
	ebb_stats_get(&s);
	st_stats_print_short(&s, "end");
	st_xchg_destroy(&X);
	free(W);
	free(th);
	st_log("PASS");
	return 0;
}
