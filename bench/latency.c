/*
 * latency: the distribution of single malloc and free calls.
 *
 * Throughput hides the rare slow call (a refill from a contended central
 * list, a page fault, an mmap, a purge that holds a lock) that a latency-
 * sensitive program feels. Each thread runs a churn loop over a working set
 * and times every malloc and every free on its own, then the run reports
 * p50, p99, p99.9 and the maximum of each.
 *
 * The loop is built to give a background purger work while it runs: most
 * blocks are 16 B to 1 KiB, one in --large-every is 64 KiB to 1 MiB, and the
 * working set swings between --slots and an eighth of it every --cycle
 * operations, so freed pages keep piling up and draining. The allocator's
 * decay or background thread (if it has one) runs as configured by its own
 * options; nothing here turns it on or off.
 *
 * Timing: rdtsc fenced with lfence on x86-64 (converted to ns with a
 * calibration against CLOCK_MONOTONIC), CLOCK_MONOTONIC elsewhere. The
 * median cost of reading the timer twice is measured first and subtracted
 * from every sample, so p50 of a thread-cache hit is close to the call's own
 * cost rather than the timer's. Samples go to memory mapped outside the
 * allocator.
 */
#include "bench_util.h"
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

static uint64_t opt_threads = 1;
static uint64_t opt_ops = 2000000;
static uint64_t opt_slots = 20000;
static uint64_t opt_min = 16;
static uint64_t opt_max = 1024;
static uint64_t opt_large_every = 1000;
static uint64_t opt_large_max = 1u << 20;
static uint64_t opt_cycle = 200000;
static const char *opt_timer = "auto";
static uint64_t opt_seed = 42;

static const bu_opt options[] = {
	{ "threads", BU_COUNT, &opt_threads, "threads, each timing its own calls" },
	{ "ops", BU_COUNT, &opt_ops, "operations per thread (each one malloc or one free)" },
	{ "slots", BU_COUNT, &opt_slots, "working set at its high point, per thread" },
	{ "min-size", BU_SIZE, &opt_min, "smallest small block" },
	{ "max-size", BU_SIZE, &opt_max, "largest small block" },
	{ "large-every", BU_COUNT, &opt_large_every, "one block in this many is large (0: none)" },
	{ "large-max", BU_SIZE, &opt_large_max, "largest large block (from 64 KiB)" },
	{ "cycle", BU_COUNT, &opt_cycle, "operations between swings of the working set" },
	{ "timer", BU_STRING, &opt_timer, "tsc, clock or auto" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ NULL, 0, NULL, NULL },
};

static int use_tsc;
static double tsc_per_ns = 1.0;

static inline uint64_t ticks(void)
{
#if defined(__x86_64__)
	if (use_tsc) {
		_mm_lfence();
		uint64_t t = __rdtsc();
		_mm_lfence();
		return t;
	}
#endif
	return bu_now_ns();
}

static void calibrate(void)
{
#if defined(__x86_64__)
	if (!strcmp(opt_timer, "clock"))
		return;
	use_tsc = 1;
	uint64_t n0 = bu_now_ns(), t0 = ticks();
	bu_sleep_ms(100);
	uint64_t n1 = bu_now_ns(), t1 = ticks();
	tsc_per_ns = (double)(t1 - t0) / (double)(n1 - n0);
	if (tsc_per_ns <= 0.01)
		use_tsc = 0, tsc_per_ns = 1.0;
#else
	if (!strcmp(opt_timer, "tsc"))
		bu_die("--timer=tsc needs x86-64");
#endif
}

typedef struct {
	uint32_t *m, *f; /* samples in ticks */
	size_t nm, nf;
	uint64_t index;
	char pad[BU_CACHE_LINE];
} work;

static bu_gate gate;
static uint32_t timer_ticks;

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static uint32_t elapsed(uint64_t a, uint64_t b)
{
	uint64_t d = b - a;
	d = d > timer_ticks ? d - timer_ticks : 0;
	return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static void *worker(void *arg)
{
	work *w = arg;
	bu_rng rng = bu_rng_make(opt_seed, w->index);
	size_t n = (size_t)opt_slots;
	/* The live blocks, densely packed: allocation appends, a free takes a
	 * random one and moves the last into its place. */
	void **live = bu_map(n * sizeof(void *));
	size_t nlive = 0;
	size_t lo = n / 8 ? n / 8 : 1;
	bu_gate_wait(&gate);
	for (uint64_t i = 0; i < opt_ops; i++) {
		size_t target = ((i / opt_cycle) & 1) ? lo : n;
		/* Below the target: allocate; above it: free; at it: alternate, so
		 * the working set churns at its level. */
		int do_alloc;
		if (nlive == 0)
			do_alloc = 1;
		else if (nlive >= n)
			do_alloc = 0;
		else if (nlive + 1 < target)
			do_alloc = 1;
		else if (nlive > target)
			do_alloc = 0;
		else
			do_alloc = (int)(i & 1);
		if (do_alloc) {
			size_t sz = (opt_large_every && bu_rng_below(&rng, opt_large_every) == 0)
					    ? bu_rng_size_log(&rng, 64u << 10, (size_t)opt_large_max)
					    : bu_rng_size_log(&rng, (size_t)opt_min, (size_t)opt_max);
			uint64_t t0 = ticks();
			char *p = malloc(sz);
			uint64_t t1 = ticks();
			BU_CHECK(p, "malloc(%zu) failed", sz);
			p[0] = 1;
			w->m[w->nm++] = elapsed(t0, t1);
			live[nlive++] = p;
		} else {
			size_t j = (size_t)bu_rng_below(&rng, nlive);
			void *p = live[j];
			uint64_t t0 = ticks();
			free(p);
			uint64_t t1 = ticks();
			w->f[w->nf++] = elapsed(t0, t1);
			live[j] = live[--nlive];
		}
	}
	for (size_t j = 0; j < nlive; j++)
		free(live[j]);
	bu_unmap(live, n * sizeof(void *));
	return NULL;
}

static double pct(const uint32_t *v, size_t n, double p)
{
	if (!n)
		return 0;
	size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return (double)v[i] / tsc_per_ns;
}

static void report(const char *what, uint32_t *v, size_t n)
{
	qsort(v, n, sizeof *v, cmp_u32);
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	char key[64];
	double p50 = pct(v, n, 50), p99 = pct(v, n, 99), p999 = pct(v, n, 99.9), mx = pct(v, n, 100);
	printf("# %-6s %9zu calls  p50 %7.0f ns  p99 %7.0f ns  p99.9 %8.0f ns  max %10.0f ns  mean %7.1f ns\n", what, n,
	       p50, p99, p999, mx, n ? sum / (double)n / tsc_per_ns : 0.0);
	snprintf(key, sizeof key, "%s_p50_ns", what);
	bu_result(key, "%.0f", p50);
	snprintf(key, sizeof key, "%s_p99_ns", what);
	bu_result(key, "%.0f", p99);
	snprintf(key, sizeof key, "%s_p999_ns", what);
	bu_result(key, "%.0f", p999);
	snprintf(key, sizeof key, "%s_max_ns", what);
	bu_result(key, "%.0f", mx);
	snprintf(key, sizeof key, "%s_mean_ns", what);
	bu_result(key, "%.1f", n ? sum / (double)n / tsc_per_ns : 0.0);
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Latency of single malloc and free calls in a churn loop whose working\n"
		      "set swings up and down (so freed pages keep accumulating for a purger).\n"
		      "Reports p50, p99, p99.9 and max in ns, timer cost subtracted.",
		      options);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 1024, "--threads must be 1..1024");
	BU_CHECK(opt_slots >= 2 && opt_cycle >= 1, "need --slots >= 2 and --cycle >= 1");
	BU_CHECK(opt_min >= 1 && opt_min <= opt_max, "need 1 <= --min-size <= --max-size");
	BU_CHECK(opt_large_max >= (64u << 10), "--large-max must be at least 64K");
	calibrate();

	/* The timer's own cost: the median of many empty intervals. */
	enum { CAL = 20001 };
	uint32_t *cal = bu_map(CAL * sizeof(uint32_t));
	for (int i = 0; i < CAL; i++) {
		uint64_t a = ticks(), b = ticks();
		cal[i] = (uint32_t)(b - a);
	}
	qsort(cal, CAL, sizeof *cal, cmp_u32);
	timer_ticks = cal[CAL / 2];
	bu_unmap(cal, CAL * sizeof(uint32_t));

	size_t t = (size_t)opt_threads;
	work *w = bu_map(t * sizeof(work));
	for (size_t i = 0; i < t; i++) {
		w[i].m = bu_map((size_t)opt_ops * sizeof(uint32_t));
		w[i].f = bu_map((size_t)opt_ops * sizeof(uint32_t));
		w[i].index = i;
	}
	gate.expected = t;
	bu_run_threads(t, worker, w, sizeof(work));
	uint64_t t1 = bu_now_ns();

	/* Pool the threads' samples: percentiles of all calls. */
	size_t nm = 0, nf = 0;
	for (size_t i = 0; i < t; i++)
		nm += w[i].nm, nf += w[i].nf;
	uint32_t *m = bu_map((nm + 1) * sizeof(uint32_t)), *f = bu_map((nf + 1) * sizeof(uint32_t));
	for (size_t i = 0, a = 0, b = 0; i < t; i++) {
		memcpy(m + a, w[i].m, w[i].nm * sizeof(uint32_t));
		memcpy(f + b, w[i].f, w[i].nf * sizeof(uint32_t));
		a += w[i].nm;
		b += w[i].nf;
	}
	printf("# timer: %s, %.1f ns per reading pair (subtracted)\n", use_tsc ? "rdtsc" : "clock_gettime",
	       timer_ticks / tsc_per_ns);
	report("malloc", m, nm);
	report("free", f, nf);
	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result("timer_ns", "%.1f", timer_ticks / tsc_per_ns);
	bu_result("p99_sum_ns", "%.0f", pct(m, nm, 99) + pct(f, nf, 99));
	bu_result("ops", "%" PRIu64, opt_ops * opt_threads);
	bu_result("seconds", "%.6f", (double)(t1 - gate.start_ns) / 1e9);
	bu_result_print("latency");
	return 0;
}
