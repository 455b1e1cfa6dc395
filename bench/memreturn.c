/*
 * memreturn: does freed memory go back to the kernel once the program is
 * idle, and how soon?
 *
 * A sampler thread reads the resident set from /proc/self/statm every
 * --interval-ms before, during and after a burst of allocations:
 *
 *   a  one thread allocates --objects blocks of --size bytes (50 million of
 *      120 B by default), frees them all, and the process goes idle;
 *   b  --threads threads (2) allocate --bytes in total (512 MiB) in sizes
 *      from 16 B to 1 MiB, each frees its own, and they stay alive but idle
 *      (a pool of workers waiting for the next request);
 *   c  like b, but every --keep-every'th block (100th) stays allocated
 *      through the idle window: fragmentation decides how much can return;
 *   d  scattered survivors (issue 14): --threads threads (2) allocate
 *      --bytes in total (1 GiB) of sizes 16 B to 16 KiB spread evenly over
 *      powers of two, with one block in 500 of 64 KiB to 1 MiB instead,
 *      writing every byte; each keeps every --keep-every'th block (100th)
 *      and frees the rest in random order, then the threads park (blocked,
 *      as a pool of idle workers): the few survivors are spread over almost
 *      every span, so only pages inside partly used spans can return;
 *   e  like d, but the threads exit after their frees (their kept blocks
 *      are freed by the main thread after the idle window).
 *
 * Sizes in b and c are drawn so that every power-of-two size range gets the
 * same number of bytes: millions of small blocks and a few hundred large
 * ones, so both the small-block and the large-block paths hold memory.
 *
 * Reports RSS at the start, the peak, right after the frees, 1, 2, 5 and 10 s
 * into the idle window (those that fit in it) and at its end, and the time from the end of the frees
 * until RSS is back within --slack of the start (plus the bytes still live in
 * c), or -1 if that never happens within the window. The whole timeline goes
 * to --csv (t_ms, rss_kib, phase) with t = 0 at the start of the burst.
 * Beside the wall time of each phase (`seconds` is the burst: allocation
 * and frees), the process's CPU time in it (every thread, an allocator's
 * own included), which time lost to other processes does not move; for a,
 * also the allocating thread's own user and system time and minor faults in
 * the allocation phase, and the rest of the process's CPU in it.
 *
 * The blocks are chained through their first word, so the program needs no
 * pointer table whose own memory would blur the measurement (d and e free in
 * random order, so they keep a table, mapped outside the allocator and
 * unmapped before the idle window).
 */
#include "bench_util.h"
#include <sys/resource.h>
#include <dlfcn.h>

/* ebbmalloc's own view of its memory, when it is the preloaded allocator:
 * looked up at run time, so the program links no allocator and runs the same
 * with any of them. */
#if defined(__has_include)
#if __has_include("../include/ebbmalloc.h")
#include "../include/ebbmalloc.h"
#define HAVE_EBB_STATS 1
#endif
#endif

static const char *opt_scenario = "a";
static uint64_t opt_objects = 50000000;
static uint64_t opt_size = 120;
static uint64_t opt_bytes = 512u << 20;
static uint64_t opt_threads = 2;
static uint64_t opt_keep = 100;
static uint64_t opt_idle = 4000;
static uint64_t opt_before = 300;
static uint64_t opt_interval = 25;
static uint64_t opt_slack = 16u << 20;
static const char *opt_csv = NULL;
static uint64_t opt_seed = 42;

static const bu_opt options[] = {
	{ "scenario", BU_STRING, &opt_scenario, "a (one thread, equal small blocks), b (threads, mixed sizes), c (b keeping some), "
	  "d (scattered survivors, threads park) or e (d, threads exit)" },
	{ "objects", BU_COUNT, &opt_objects, "a: blocks to allocate" },
	{ "size", BU_SIZE, &opt_size, "a: block size" },
	{ "bytes", BU_SIZE, &opt_bytes, "b-e: bytes to allocate in total (b, c: 512 MiB of 16 B to 1 MiB; d, e: 1 GiB)" },
	{ "threads", BU_COUNT, &opt_threads, "b-e: threads" },
	{ "keep-every", BU_COUNT, &opt_keep, "c-e: every n-th block stays allocated" },
	{ "idle-ms", BU_COUNT, &opt_idle, "idle window after the frees" },
	{ "before-ms", BU_COUNT, &opt_before, "sampling before the burst starts" },
	{ "interval-ms", BU_COUNT, &opt_interval, "RSS sampling interval" },
	{ "slack", BU_SIZE, &opt_slack, "RSS counts as returned within this of the start" },
	{ "csv", BU_STRING, &opt_csv, "write the RSS timeline here" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ NULL, 0, NULL, NULL },
};

enum phase { BEFORE, ALLOC, FREE, IDLE, DONE };
static const char *const phase_name[] = { "before", "alloc", "free", "idle", "done" };

typedef struct {
	uint64_t t_ns;
	uint64_t rss_kib;
	uint32_t phase;
} sample;

static atomic_int cur_phase;
static atomic_int stop_sampling;
static sample *samples;
static size_t sample_cap;
static atomic_size_t sample_count;

/* Samples on an absolute schedule, so a slow read does not shift the rest;
 * touches no allocator. */
static void *sampler(void *arg)
{
	(void)arg;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!atomic_load(&stop_sampling)) {
		size_t i = atomic_load(&sample_count);
		if (i < sample_cap) {
			samples[i].t_ns = bu_now_ns();
			samples[i].rss_kib = bu_rss_kib();
			samples[i].phase = (uint32_t)atomic_load(&cur_phase);
			atomic_store(&sample_count, i + 1);
		}
		next.tv_nsec += (long)(opt_interval * 1000000u);
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
		}
	}
	return NULL;
}

/* Sizes with the same number of bytes in every power-of-two range between lo
 * and hi: density proportional to 1/size^2, drawn by inverting its CDF. */
static size_t mixed_size(bu_rng *r, double lo, double hi)
{
	double u = bu_rng_unit(r);
	double s = 1.0 / (1.0 / lo - u * (1.0 / lo - 1.0 / hi));
	return s < lo ? (size_t)lo : s > hi ? (size_t)hi : (size_t)s;
}

static uint64_t kept_bytes;
#ifdef HAVE_EBB_STATS
static struct ebb_stats ebb_stats_at_end;
#endif

/* CPU time of the whole process (every thread, the allocator's own
 * included): what a phase cost, apart from time lost to other processes. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Scenario a's allocation phase as the allocating thread alone saw it:
 * its user and system time and its minor faults (the first touches), so the
 * rest of the process's CPU in the phase (the sampler, an allocator's own
 * threads) shows apart. */
static struct rusage a_ru0, a_ru1;

static double tv_s(struct timeval a, struct timeval b)
{
	return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_usec - a.tv_usec) / 1e6;
}

/* ---- scenario a ---- */

static void burst_a(uint64_t *t_alloc_end, uint64_t *cpu_alloc_end)
{
	getrusage(RUSAGE_THREAD, &a_ru0);
	size_t size = (size_t)opt_size;
	void *head = NULL;
	for (uint64_t i = 0; i < opt_objects; i++) {
		void **p = malloc(size);
		BU_CHECK(p, "malloc(%zu) failed after %" PRIu64 " blocks", size, i);
		*p = head;
		head = p;
	}
	*t_alloc_end = bu_now_ns();
	*cpu_alloc_end = cpu_ns();
	getrusage(RUSAGE_THREAD, &a_ru1);
	atomic_store(&cur_phase, FREE);
	/* Free in allocation order, the way a program tears down a structure
	 * built front to back: reverse the chain first (it was pushed onto the
	 * head, so it runs newest first). */
	void *prev = NULL;
	while (head) {
		void *next = *(void **)head;
		*(void **)head = prev;
		prev = head;
		head = next;
	}
	while (prev) {
		void *next = *(void **)prev;
		free(prev);
		prev = next;
	}
}

/* ---- scenarios b and c ---- */

typedef struct {
	uint64_t bytes;
	uint64_t index;
	void *kept;
	uint64_t kept_bytes;
	uint64_t blocks;
	char pad[BU_CACHE_LINE];
} work;

static pthread_barrier_t bar;
static int bytes_given; /* --bytes was on the command line */

/* A block of b or c: chained through its first word, its size in the second
 * (every size is at least 16 bytes). */
typedef struct block {
	struct block *next;
	size_t size;
} block;

/* Scenarios d and e: the survivors are every keep'th block in allocation
 * order, the rest is freed in random order. Returns with the survivors on
 * w->kept and the table unmapped. */
static void scatter_burst(work *w, bu_rng *rng)
{
	/* A block is at least 16 bytes: the table has room for every block. */
	size_t cap = (size_t)(w->bytes / 16) + 1;
	void **table = bu_map(cap * sizeof(void *));
	size_t n = 0;
	uint64_t got = 0;
	while (got < w->bytes) {
		size_t sz = bu_rng_below(rng, 500) == 0 ? bu_rng_size_log(rng, 64u << 10, 1u << 20)
							 : bu_rng_size_log(rng, 16, 16u << 10);
		block *p = malloc(sz);
		BU_CHECK(p, "malloc(%zu) failed", sz);
		memset(p, (int)(n & 0xff) | 1, sz);
		p->size = sz;
		table[n++] = p;
		got += sz;
	}
	w->blocks = n;
	pthread_barrier_wait(&bar); /* all allocated */
	pthread_barrier_wait(&bar); /* phase switched to FREE */
	/* Survivors out of the table, then the rest in a random order. */
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		block *p = table[i];
		if (i % opt_keep == opt_keep - 1) {
			p->next = w->kept;
			w->kept = p;
			w->kept_bytes += p->size;
		} else {
			table[m++] = p;
		}
	}
	for (size_t i = m; i > 1; i--) {
		size_t j = (size_t)bu_rng_below(rng, i);
		void *t = table[i - 1];
		table[i - 1] = table[j];
		table[j] = t;
	}
	for (size_t i = 0; i < m; i++)
		free(table[i]);
	bu_unmap(table, cap * sizeof(void *));
}

/* The survivors a worker kept, freed at the end of the idle window. */
static void free_kept(work *w)
{
	for (block *k = w->kept; k;) {
		block *next = k->next;
		free(k);
		k = next;
	}
}

static void *worker(void *arg)
{
	work *w = arg;
	bu_rng rng = bu_rng_make(opt_seed, w->index);
	int keep_some = opt_scenario[0] == 'c';
	pthread_barrier_wait(&bar); /* start */
	if (opt_scenario[0] == 'd' || opt_scenario[0] == 'e') {
		scatter_burst(w, &rng);
		pthread_barrier_wait(&bar); /* all freed */
		if (opt_scenario[0] == 'e')
			return NULL; /* main frees the survivors */
		pthread_barrier_wait(&bar); /* idle window over */
		free_kept(w);
		return NULL;
	}
	block *head = NULL;
	uint64_t got = 0;
	while (got < w->bytes) {
		size_t sz = mixed_size(&rng, 16, 1 << 20);
		block *p = malloc(sz);
		BU_CHECK(p, "malloc(%zu) failed", sz);
		bu_touch(p, sz, 1);
		p->next = head;
		p->size = sz;
		head = p;
		got += sz;
		w->blocks++;
	}
	pthread_barrier_wait(&bar); /* all allocated */
	pthread_barrier_wait(&bar); /* phase switched to FREE */
	uint64_t n = 0;
	while (head) {
		block *next = head->next;
		if (keep_some && n % opt_keep == opt_keep - 1) {
			head->next = w->kept;
			w->kept = head;
			w->kept_bytes += head->size;
		} else {
			free(head);
		}
		head = next;
		n++;
	}
	pthread_barrier_wait(&bar); /* all freed */
	pthread_barrier_wait(&bar); /* idle window over */
	free_kept(w);
	return NULL;
}

/* ---- driver ---- */

static uint64_t rss_at(uint64_t deadline_ns)
{
	uint64_t now = bu_now_ns();
	if (deadline_ns > now)
		bu_sleep_ms((deadline_ns - now + 999999) / 1000000);
	return bu_rss_kib();
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Memory return after a burst: allocate, free, go idle, and watch RSS\n"
		      "(sampled from /proc/self/statm). Reports RSS at the peak, 1 s and 2 s\n"
		      "into the idle window, and how long until it is back near the start.",
		      options);
	char sc = opt_scenario[0];
	BU_CHECK(sc >= 'a' && sc <= 'e' && opt_scenario[1] == '\0', "--scenario must be a, b, c, d or e");
	for (int i = 1; i < argc; i++)
		bytes_given |= strncmp(argv[i], "--bytes", 7) == 0;
	if ((sc == 'd' || sc == 'e') && !bytes_given)
		opt_bytes = 1u << 30;
	BU_CHECK(opt_size >= sizeof(void *), "--size must hold a pointer");
	BU_CHECK(opt_threads >= 1 && opt_threads <= 1024, "--threads must be 1..1024");
	BU_CHECK(opt_interval >= 1 && opt_keep >= 1, "--interval-ms and --keep-every must be >= 1");

	/* Room for an hour of samples; only the pages written count in RSS,
	 * a few KiB for a normal run. */
	sample_cap = (size_t)(3600000 / opt_interval) + 1024;
	samples = bu_map(sample_cap * sizeof(sample));

	size_t t = sc == 'a' ? 0 : (size_t)opt_threads;
	work *w = NULL;
	pthread_t *tids = NULL;
	if (t) {
		w = bu_map(t * sizeof(work));
		tids = bu_map(t * sizeof(pthread_t));
		pthread_barrier_init(&bar, NULL, (unsigned)t + 1);
		for (size_t i = 0; i < t; i++) {
			w[i].bytes = opt_bytes / t;
			w[i].index = i;
			int e = pthread_create(&tids[i], NULL, worker, &w[i]);
			BU_CHECK(e == 0, "pthread_create: %s", strerror(e));
		}
	}
	pthread_t samp;
	int e = pthread_create(&samp, NULL, sampler, NULL);
	BU_CHECK(e == 0, "pthread_create: %s", strerror(e));

	bu_sleep_ms(opt_before);
	uint64_t start_rss = bu_rss_kib();
	uint64_t t0 = bu_now_ns(), t_alloc_end, cpu0 = cpu_ns(), cpu_alloc_end;
	atomic_store(&cur_phase, ALLOC);
	uint64_t blocks = 0;
	if (!t) {
		burst_a(&t_alloc_end, &cpu_alloc_end);
		blocks = opt_objects;
	} else {
		pthread_barrier_wait(&bar); /* start */
		pthread_barrier_wait(&bar); /* all allocated */
		t_alloc_end = bu_now_ns();
		cpu_alloc_end = cpu_ns();
		atomic_store(&cur_phase, FREE);
		pthread_barrier_wait(&bar);
		pthread_barrier_wait(&bar); /* all freed */
		for (size_t i = 0; i < t; i++) {
			kept_bytes += w[i].kept_bytes;
			blocks += w[i].blocks;
		}
	}
	uint64_t t_free_end = bu_now_ns(), cpu_free_end = cpu_ns();
	atomic_store(&cur_phase, IDLE);
	uint64_t rss_freed = bu_rss_kib();
	uint64_t rss_1s = rss_at(t_free_end + 1000000000ull);
	uint64_t rss_2s = opt_idle >= 2000 ? rss_at(t_free_end + 2000000000ull) : 0;
	uint64_t rss_5s = opt_idle >= 5000 ? rss_at(t_free_end + 5000000000ull) : 0;
	uint64_t rss_10s = opt_idle >= 10000 ? rss_at(t_free_end + 10000000000ull) : 0;
	uint64_t rss_end = rss_at(t_free_end + opt_idle * 1000000ull);
#ifdef HAVE_EBB_STATS
	void (*stats_get)(struct ebb_stats *) = (void (*)(struct ebb_stats *))dlsym(RTLD_DEFAULT, "ebb_stats_get");
	if (stats_get)
		stats_get(&ebb_stats_at_end);
	/* MEMRETURN_STATS=1: ebbmalloc's whole account (per class too) at the
	 * same moment, on stderr. */
	void (*stats_print)(FILE *) = (void (*)(FILE *))dlsym(RTLD_DEFAULT, "ebb_stats_print");
	if (stats_print && getenv("MEMRETURN_STATS"))
		stats_print(stderr);
#endif
	atomic_store(&cur_phase, DONE);
	atomic_store(&stop_sampling, 1);
	pthread_join(samp, NULL);
	if (t) {
		if (sc != 'e')
			pthread_barrier_wait(&bar); /* let the workers free what they kept */
		for (size_t i = 0; i < t; i++)
			pthread_join(tids[i], NULL);
		for (size_t i = 0; sc == 'e' && i < t; i++) {
			for (block *k = w[i].kept; k;) {
				block *next = k->next;
				free(k);
				k = next;
			}
		}
	}

	/* What the timeline says: the peak, and the first idle sample back
	 * within the slack (plus what c still holds) of the start. */
	size_t ns = atomic_load(&sample_count);
	uint64_t peak = rss_freed;
	int64_t return_ms = -1;
	uint64_t target = start_rss + opt_slack / 1024 + kept_bytes / 1024;
	for (size_t i = 0; i < ns; i++) {
		if (samples[i].rss_kib > peak)
			peak = samples[i].rss_kib;
		if (return_ms < 0 && samples[i].phase == IDLE && samples[i].rss_kib <= target)
			return_ms = (int64_t)((samples[i].t_ns > t_free_end ? samples[i].t_ns - t_free_end : 0) / 1000000);
	}
	if (rss_freed <= target)
		return_ms = 0;
	uint64_t hwm = bu_peak_rss_kib();
	if (hwm > peak)
		peak = hwm;

	if (opt_csv) {
		FILE *f = fopen(opt_csv, "w");
		BU_CHECK(f, "cannot write %s: %s", opt_csv, strerror(errno));
		fprintf(f, "t_ms,rss_kib,phase\n");
		for (size_t i = 0; i < ns; i++)
			fprintf(f, "%.1f,%" PRIu64 ",%s\n", ((double)samples[i].t_ns - (double)t0) / 1e6,
				samples[i].rss_kib, phase_name[samples[i].phase]);
		fclose(f);
	}

	/* Of the memory the burst added beyond what stays live, the share that
	 * was given back by the end of the idle window. */
	double returnable = (double)peak - (double)start_rss - (double)kept_bytes / 1024.0;
	double returned = (double)peak - (double)rss_end;
	double pct = returnable > 0 ? 100.0 * returned / returnable : 100.0;
	if (pct < 0)
		pct = 0;

	double burst_s = (double)(t_free_end - t0) / 1e9;
	printf("# memreturn %c: %" PRIu64 " blocks, alloc %.2f s, free %.2f s\n", sc, blocks,
	       (double)(t_alloc_end - t0) / 1e9, (double)(t_free_end - t_alloc_end) / 1e9);
	printf("# RSS MiB: start %.1f  peak %.1f  after free %.1f  +1s %.1f  +2s %.1f", start_rss / 1024.0,
	       peak / 1024.0, rss_freed / 1024.0, rss_1s / 1024.0, rss_2s / 1024.0);
	if (rss_5s)
		printf("  +5s %.1f", rss_5s / 1024.0);
	if (rss_10s)
		printf("  +10s %.1f", rss_10s / 1024.0);
	printf("  end %.1f  kept %.1f\n", rss_end / 1024.0, kept_bytes / 1048576.0);
	if (return_ms >= 0)
		printf("# back within %.0f MiB of the start after %" PRId64 " ms\n", opt_slack / 1048576.0, return_ms);
	else
		printf("# never back within %.0f MiB of the start in %" PRIu64 " ms of idle\n", opt_slack / 1048576.0, opt_idle);
	bu_result("scenario", "%c", sc);
	bu_result("blocks", "%" PRIu64, blocks);
	bu_result("ops", "%" PRIu64, blocks);
	bu_result("seconds", "%.6f", burst_s);
	bu_result("alloc_seconds", "%.6f", (double)(t_alloc_end - t0) / 1e9);
	bu_result("free_seconds", "%.6f", (double)(t_free_end - t_alloc_end) / 1e9);
	bu_result("alloc_cpu_seconds", "%.6f", (double)(cpu_alloc_end - cpu0) / 1e9);
	bu_result("free_cpu_seconds", "%.6f", (double)(cpu_free_end - cpu_alloc_end) / 1e9);
	if (!t) {
		double au = tv_s(a_ru0.ru_utime, a_ru1.ru_utime), as = tv_s(a_ru0.ru_stime, a_ru1.ru_stime);
		bu_result("alloc_thread_user_seconds", "%.6f", au);
		bu_result("alloc_thread_sys_seconds", "%.6f", as);
		bu_result("alloc_other_cpu_seconds", "%.6f", (double)(cpu_alloc_end - cpu0) / 1e9 - au - as);
		bu_result("alloc_minflt", "%ld", a_ru1.ru_minflt - a_ru0.ru_minflt);
	}
	bu_result("start_rss_kib", "%" PRIu64, start_rss);
	bu_result("burst_peak_kib", "%" PRIu64, peak);
	bu_result("freed_rss_kib", "%" PRIu64, rss_freed);
	bu_result("rss_1s_kib", "%" PRIu64, rss_1s);
	bu_result("rss_2s_kib", "%" PRIu64, rss_2s);
	if (rss_5s)
		bu_result("rss_5s_kib", "%" PRIu64, rss_5s);
	if (rss_10s)
		bu_result("rss_10s_kib", "%" PRIu64, rss_10s);
	bu_result("end_rss_kib", "%" PRIu64, rss_end);
	bu_result("kept_kib", "%" PRIu64, kept_bytes / 1024);
	bu_result("return_ms", "%" PRId64, return_ms);
	bu_result("returned_pct", "%.1f", pct);
	bu_result("idle_ms", "%" PRIu64, opt_idle);
	bu_result("samples", "%zu", ns);
#ifdef HAVE_EBB_STATS
	/* Read after the idle window, before the kept blocks of c are freed:
	 * the allocator's account of what the RSS above is made of. */
	if (ebb_stats_at_end.mapped) {
		printf("# ebbmalloc stats at the end of the idle window, MiB: mapped %.1f resident %.1f "
		       "allocated %.1f dirty %.1f purged %.1f\n",
		       ebb_stats_at_end.mapped / 1048576.0, ebb_stats_at_end.resident / 1048576.0,
		       ebb_stats_at_end.allocated / 1048576.0, ebb_stats_at_end.dirty / 1048576.0,
		       ebb_stats_at_end.purged / 1048576.0);
		bu_result("ebb_resident_kib", "%" PRIu64, ebb_stats_at_end.resident / 1024);
		bu_result("ebb_dirty_kib", "%" PRIu64, ebb_stats_at_end.dirty / 1024);
		bu_result("ebb_purged_kib", "%" PRIu64, ebb_stats_at_end.purged / 1024);
	}
#endif
	bu_result_print("memreturn");
	return 0;
}
