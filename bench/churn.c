/*
 * churn: thread-local allocation churn over a working set.
 *
 * Each thread fills an array of --slots blocks, then replaces random slots
 * (free the old block, allocate a new one of random size) and finally frees
 * everything. No block crosses threads, so this is the path most programs
 * spend their allocation time on: the thread cache and its refills. The
 * working-set size decides which part of the allocator is exercised: a few
 * hundred slots stay in the thread cache, hundreds of thousands cycle through
 * the central free lists and miss the CPU caches.
 *
 * The number of replacements is fixed and split among the threads; the
 * working set (--slots) is per thread.
 *
 * Only the steady state is timed: the clock starts when the last thread has
 * filled its working set and stops when the last one has done its share of
 * replacements. Each thread's fill (slots x threads fresh blocks and pages)
 * and the final frees grow with the thread count, so timing them would make
 * 32 threads look slower than 2 for reasons that are not contention.
 * --time-setup=1 times them too (the program's behaviour before 2026-12-04).
 */
#include "bench_util.h"

static uint64_t opt_threads = 1;
static uint64_t opt_slots = 10000;
static uint64_t opt_min = 16;
static uint64_t opt_max = 1024;
static uint64_t opt_ops = 10000000;
static uint64_t opt_seed = 42;
static uint64_t opt_time_setup = 0;

static const bu_opt options[] = {
	{ "threads", BU_COUNT, &opt_threads, "threads" },
	{ "slots", BU_COUNT, &opt_slots, "working set: blocks held by each thread" },
	{ "min-size", BU_SIZE, &opt_min, "smallest block" },
	{ "max-size", BU_SIZE, &opt_max, "largest block (sizes spread evenly over powers of two)" },
	{ "ops", BU_COUNT, &opt_ops, "replacements (free + malloc) in total, split among threads" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ "time-setup", BU_COUNT, &opt_time_setup,
	  "1: time the fill and final free of the working sets too (0: steady state only)" },
	{ NULL, 0, NULL, NULL },
};

typedef struct {
	uint64_t ops;
	uint64_t index;
	uint64_t cpu_ns; /* CPU time of this thread's replacements */
	char pad[BU_CACHE_LINE];
} work;

static bu_gate gate;

/*
 * The two ends of the timed phase. Threads that arrive early sleep in the
 * barrier (a futex), so a thread that is done takes no CPU from those still
 * working; the last to arrive reads the clock, so the phase spans from the
 * moment every thread is ready to the moment every thread is done.
 */
typedef struct {
	pthread_barrier_t barrier;
	atomic_size_t arrived;
	uint64_t last_ns; /* when the last thread arrived */
} phase_end;

static phase_end filled, replaced;

static void phase_wait(phase_end *e, size_t threads)
{
	if (atomic_fetch_add(&e->arrived, 1) + 1 == threads)
		e->last_ns = bu_now_ns();
	pthread_barrier_wait(&e->barrier);
}

static void *worker(void *arg)
{
	work *w = arg;
	size_t n = (size_t)opt_slots;
	bu_rng rng = bu_rng_make(opt_seed, w->index);
	/* Each thread's own table, from mmap: the pointer array must not be an
	 * allocation that differs between allocators. */
	void **slots = bu_map(n * sizeof(void *));
	bu_gate_wait(&gate);
	for (size_t k = 0; k < n; k++) {
		size_t sz = bu_rng_size_log(&rng, opt_min, opt_max);
		char *p = malloc(sz);
		BU_CHECK(p, "malloc(%zu) failed", sz);
		p[0] = p[sz - 1] = 1;
		slots[k] = p;
	}
	phase_wait(&filled, (size_t)opt_threads);
	uint64_t cpu0 = bu_thread_cpu_ns();
	for (uint64_t i = 0; i < w->ops; i++) {
		size_t k = (size_t)bu_rng_below(&rng, n);
		free(slots[k]);
		size_t sz = bu_rng_size_log(&rng, opt_min, opt_max);
		char *p = malloc(sz);
		BU_CHECK(p, "malloc(%zu) failed", sz);
		p[0] = p[sz - 1] = (char)i;
		slots[k] = p;
	}
	w->cpu_ns = bu_thread_cpu_ns() - cpu0;
	phase_wait(&replaced, (size_t)opt_threads);
	for (size_t k = 0; k < n; k++)
		free(slots[k]);
	bu_unmap(slots, n * sizeof(void *));
	return NULL;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Thread-local churn: each thread holds --slots blocks of random size and\n"
		      "replaces random ones (free + malloc). Reports replacements per second\n"
		      "(after every thread has filled its working set and before the final\n"
		      "frees, unless --time-setup=1).",
		      options);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 2048, "--threads must be 1..2048");
	BU_CHECK(opt_min >= 1 && opt_min <= opt_max, "need 1 <= --min-size <= --max-size");
	BU_CHECK(opt_slots >= 1, "--slots must be >= 1");
	size_t t = (size_t)opt_threads;
	work *w = bu_map(t * sizeof(work));
	for (size_t i = 0; i < t; i++) {
		w[i].ops = opt_ops / t + (i < opt_ops % t ? 1 : 0);
		w[i].index = i;
	}
	gate.expected = t;
	pthread_barrier_init(&filled.barrier, NULL, (unsigned)t);
	pthread_barrier_init(&replaced.barrier, NULL, (unsigned)t);
	bu_run_threads(t, worker, w, sizeof(work));
	uint64_t t1 = bu_now_ns();
	uint64_t t0 = gate.start_ns;
	if (!opt_time_setup) {
		t0 = filled.last_ns;
		t1 = replaced.last_ns;
	}
	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result("slots", "%" PRIu64, opt_slots);
	uint64_t cpu_ns = 0;
	for (size_t i = 0; i < t; i++)
		cpu_ns += w[i].cpu_ns;
	bu_result("timed", "%s", opt_time_setup ? "all" : "steady");
	/* CPU time per replacement: unlike the rate, it does not count time the
	 * threads stood waiting or that other processes took from them. */
	bu_result("cpu_ns_per_op", "%.1f", (double)cpu_ns / (double)opt_ops);
	bu_result_rate("churn", opt_ops, t1 - t0);
	bu_result_print("churn");
	return 0;
}
