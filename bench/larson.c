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
 */
#include "bench_util.h"

static uint64_t opt_threads = 2;
static uint64_t opt_slots = 1000;
static uint64_t opt_min = 16;
static uint64_t opt_max = 512;
static uint64_t opt_rounds = 20;
static uint64_t opt_ops = 4000000;
static uint64_t opt_seed = 42;

static const bu_opt options[] = {
	{ "threads", BU_COUNT, &opt_threads, "concurrent worker threads (chains)" },
	{ "slots", BU_COUNT, &opt_slots, "blocks each worker holds" },
	{ "min-size", BU_SIZE, &opt_min, "smallest block" },
	{ "max-size", BU_SIZE, &opt_max, "largest block (sizes spread evenly over powers of two)" },
	{ "rounds", BU_COUNT, &opt_rounds, "thread generations per chain" },
	{ "ops", BU_COUNT, &opt_ops, "slot replacements in total" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ NULL, 0, NULL, NULL },
};

typedef struct {
	void **slots;
	uint64_t ops_per_round;
	uint64_t rounds_left;
	bu_rng rng;
	uint64_t generation;
	char pad[BU_CACHE_LINE];
} chain;

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static size_t chains_running;
static bu_gate gate;

static void *worker(void *arg)
{
	chain *c = arg;
	if (c->generation == 0)
		bu_gate_wait(&gate);
	size_t n = (size_t)opt_slots;
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
	if (--c->rounds_left) {
		/* Hand the array to a new thread and leave: the successor's frees
		 * hit blocks whose allocating thread has exited. */
		c->generation++;
		pthread_t t;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		int e = pthread_create(&t, &attr, worker, c);
		BU_CHECK(e == 0, "pthread_create: %s", strerror(e));
		pthread_attr_destroy(&attr);
	} else {
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
		      "replacements (one free + one malloc) per second for a fixed total.",
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

	pthread_attr_t attr;
	pthread_attr_init(&attr);
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

	for (size_t i = 0; i < t; i++)
		for (size_t k = 0; k < opt_slots; k++)
			free(chains[i].slots[k]);

	uint64_t ops = per_round * opt_rounds * t;
	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result("rounds", "%" PRIu64, opt_rounds);
	bu_result_rate("larson", ops, t1 - gate.start_ns);
	bu_result_print("larson");
	return 0;
}
