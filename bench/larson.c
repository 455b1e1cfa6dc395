/*
 * larson: a server simulation in the spirit of Larson and Krishnan's
 * benchmark.
 *
 * Each of T worker "chains" owns an array of slots holding blocks. A worker
 * replaces random slots with blocks of random size (free the old block,
 * allocate a new one), and when its share of a round is done it starts a
 * fresh thread, hands it the array and exits. The successor frees blocks
 * that a thread which no longer exists allocated, so the allocator sees
 * thread churn and remote frees at once, as in a server that serves each
 * connection from a short-lived thread. The first generation starts with
 * arrays filled by the main thread.
 *
 * The work is fixed (--ops replacements in total, split over chains and
 * rounds), so throughput is comparable across thread counts.
 *
 * Only the replacements are timed. The chains run in step: a generation's
 * clock starts when the last of its T threads is ready (its predecessor
 * joined, so that thread's exit and the allocator's clean-up of its cache are
 * over) and stops when the last of them has done its share; the result is
 * the sum over generations. Thread creation and exit are not allocator work
 * and there are T x rounds of them, so timing them made 32 threads look
 * slower than 2 for a reason that is not contention. What stays timed is
 * each new thread's first allocations from a cold cache, and its frees of
 * blocks that a thread now gone allocated: larson's point. --time-setup=1
 * times everything from the first generation's start to the last one's end
 * (the chains then run unsynchronized, the program's behaviour before
 * 2026-12-04).
 */
#include "bench_util.h"

static uint64_t opt_threads = 2;
static uint64_t opt_slots = 1000;
static uint64_t opt_min = 16;
static uint64_t opt_max = 512;
static uint64_t opt_rounds = 20;
static uint64_t opt_ops = 4000000;
static uint64_t opt_seed = 42;
static uint64_t opt_time_setup = 0;

static const bu_opt options[] = {
	{ "threads", BU_COUNT, &opt_threads, "concurrent worker threads (chains)" },
	{ "slots", BU_COUNT, &opt_slots, "blocks each worker holds" },
	{ "min-size", BU_SIZE, &opt_min, "smallest block" },
	{ "max-size", BU_SIZE, &opt_max, "largest block (sizes spread evenly over powers of two)" },
	{ "rounds", BU_COUNT, &opt_rounds, "thread generations per chain" },
	{ "ops", BU_COUNT, &opt_ops, "slot replacements in total" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ "time-setup", BU_COUNT, &opt_time_setup,
	  "1: time thread starts and exits too, chains unsynchronized (0: replacements only)" },
	{ NULL, 0, NULL, NULL },
};

typedef struct {
	void **slots;
	uint64_t ops_per_round;
	uint64_t rounds_left;
	bu_rng rng;
	uint64_t generation;
	pthread_t prev; /* the thread that ran this chain's previous generation */
	char pad[BU_CACHE_LINE];
} chain;

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static size_t chains_running;
static bu_gate gate;

/*
 * Steady-state timing: before and after its replacements every thread of a
 * generation meets the others at the barrier. Early arrivals sleep in it (a
 * futex), so a thread that is done takes no CPU from those still working;
 * the last to arrive reads the clock. Arrivals are counted over the whole
 * run, so every T-th one is the last of its phase; the phases alternate
 * (ready, done) and never overlap, because a generation's threads are only
 * created after the previous one has passed its "done".
 */
static pthread_barrier_t step;
static atomic_size_t ready_arrivals, done_arrivals;
static uint64_t phase_start_ns;
static uint64_t timed_ns;
static atomic_uint_fast64_t loop_cpu_ns; /* CPU time of all threads' replacements */

static void step_ready(void)
{
	if ((atomic_fetch_add(&ready_arrivals, 1) + 1) % opt_threads == 0)
		phase_start_ns = bu_now_ns();
	pthread_barrier_wait(&step);
}

static void step_done(void)
{
	if ((atomic_fetch_add(&done_arrivals, 1) + 1) % opt_threads == 0)
		timed_ns += bu_now_ns() - phase_start_ns;
	pthread_barrier_wait(&step);
}

static void *worker(void *arg)
{
	chain *c = arg;
	if (opt_time_setup) {
		if (c->generation == 0)
			bu_gate_wait(&gate);
	} else {
		if (c->generation > 0) {
			int e = pthread_join(c->prev, NULL);
			BU_CHECK(e == 0, "pthread_join: %s", strerror(e));
		}
		step_ready();
	}
	size_t n = (size_t)opt_slots;
	uint64_t cpu0 = bu_thread_cpu_ns();
	for (uint64_t i = 0; i < c->ops_per_round; i++) {
		size_t k = (size_t)bu_rng_below(&c->rng, n);
		free(c->slots[k]);
		size_t sz = bu_rng_size_log(&c->rng, opt_min, opt_max);
		char *p = malloc(sz);
		BU_CHECK(p, "malloc(%zu) failed", sz);
		p[0] = (char)i;
		p[sz - 1] = (char)k;
		c->slots[k] = p;
	}
	atomic_fetch_add(&loop_cpu_ns, bu_thread_cpu_ns() - cpu0);
	if (!opt_time_setup)
		step_done();
	if (--c->rounds_left) {
		/* Hand the array to a new thread and leave: the successor's frees
		 * hit blocks whose allocating thread has exited. Steady-state
		 * timing joins threads (the successor joins this one), the old
		 * timing detaches them. */
		c->generation++;
		c->prev = pthread_self();
		pthread_t t;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		if (opt_time_setup)
			pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		int e = pthread_create(&t, &attr, worker, c);
		BU_CHECK(e == 0, "pthread_create: %s", strerror(e));
		pthread_attr_destroy(&attr);
	} else {
		c->prev = pthread_self();
		pthread_mutex_lock(&done_lock);
		if (--chains_running == 0)
			pthread_cond_signal(&done_cond);
		pthread_mutex_unlock(&done_lock);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Server simulation: each thread replaces random slots of its array with\n"
		      "random-size blocks, then passes the array to a new thread and exits\n"
		      "(thread churn plus frees of blocks from dead threads). Reports slot\n"
		      "replacements (one free + one malloc) per second for a fixed total,\n"
		      "timing only the replacements unless --time-setup=1.",
		      options);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 2048, "--threads must be 1..2048");
	BU_CHECK(opt_min >= 2 && opt_min <= opt_max, "need 2 <= --min-size <= --max-size");
	BU_CHECK(opt_slots >= 1 && opt_rounds >= 1, "--slots and --rounds must be >= 1");

	size_t t = (size_t)opt_threads;
	uint64_t per_round = opt_ops / (t * opt_rounds);
	BU_CHECK(per_round >= 1, "--ops too small for threads x rounds");
	chain *chains = bu_map(t * sizeof(chain));
	bu_rng init = bu_rng_make(opt_seed, 0);
	for (size_t i = 0; i < t; i++) {
		chain *c = &chains[i];
		c->slots = bu_map((size_t)opt_slots * sizeof(void *));
		for (size_t k = 0; k < opt_slots; k++) {
			size_t sz = bu_rng_size_log(&init, opt_min, opt_max);
			c->slots[k] = malloc(sz);
			BU_CHECK(c->slots[k], "malloc(%zu) failed", sz);
			memset(c->slots[k], 0, sz);
		}
		c->ops_per_round = per_round;
		c->rounds_left = opt_rounds;
		c->rng = bu_rng_make(opt_seed, i + 1);
	}
	chains_running = t;
	gate.expected = t;
	pthread_barrier_init(&step, NULL, (unsigned)t);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	if (opt_time_setup)
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (size_t i = 0; i < t; i++) {
		pthread_t tid;
		int e = pthread_create(&tid, &attr, worker, &chains[i]);
		BU_CHECK(e == 0, "pthread_create: %s", strerror(e));
	}
	pthread_attr_destroy(&attr);
	pthread_mutex_lock(&done_lock);
	while (chains_running)
		pthread_cond_wait(&done_cond, &done_lock);
	pthread_mutex_unlock(&done_lock);
	uint64_t t1 = bu_now_ns();
	if (!opt_time_setup) {
		for (size_t i = 0; i < t; i++)
			pthread_join(chains[i].prev, NULL);
	}

	for (size_t i = 0; i < t; i++)
		for (size_t k = 0; k < opt_slots; k++)
			free(chains[i].slots[k]);

	uint64_t ops = per_round * opt_rounds * t;
	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result("rounds", "%" PRIu64, opt_rounds);
	bu_result("timed", "%s", opt_time_setup ? "all" : "steady");
	/* Unlike the rate, not affected by time the threads stood waiting or
	 * that other processes took from them. */
	bu_result("cpu_ns_per_op", "%.1f", (double)atomic_load(&loop_cpu_ns) / (double)ops);
	bu_result_rate("larson", ops, opt_time_setup ? t1 - gate.start_ns : timed_ns);
	bu_result_print("larson");
	return 0;
}
