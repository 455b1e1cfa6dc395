/*
 * cache-thrash: active false sharing.
 *
 * Every thread repeatedly allocates a small object, writes to it many times
 * and frees it. If the allocator hands objects that share a cache line to
 * different threads at the same time (for example by carving small blocks
 * for all threads from one shared run), each write invalidates the line in
 * the other core's cache and the loop slows down by an order of magnitude. An
 * allocator that keeps each thread's small blocks apart runs at full speed.
 *
 * The work (objects x writes) is fixed and split among the threads. Writes go
 * through a volatile pointer so the compiler keeps every one of them.
 */
#include "bench_util.h"

static uint64_t opt_threads = 2;
static uint64_t opt_iterations = 200000;
static uint64_t opt_writes = 200;
static uint64_t opt_size = 8;

static const bu_opt options[] = {
	{ "threads", BU_COUNT, &opt_threads, "threads" },
	{ "iterations", BU_COUNT, &opt_iterations, "objects allocated in total, split among threads" },
	{ "writes", BU_COUNT, &opt_writes, "passes of writes over each object" },
	{ "size", BU_SIZE, &opt_size, "object size in bytes" },
	{ NULL, 0, NULL, NULL },
};

typedef struct {
	uint64_t iterations;
	char pad[BU_CACHE_LINE];
} work;

static bu_gate gate;

static void *worker(void *arg)
{
	work *w = arg;
	size_t size = (size_t)opt_size;
	bu_gate_wait(&gate);
	for (uint64_t i = 0; i < w->iterations; i++) {
		volatile char *p = malloc(size);
		BU_CHECK(p, "malloc(%zu) failed", size);
		for (uint64_t r = 0; r < opt_writes; r++)
			for (size_t b = 0; b < size; b++)
				p[b] = (char)(p[b] + 1);
		free((void *)p);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Active false sharing: each thread allocates a small object, writes it\n"
		      "many times, frees it. Slow when the allocator gives objects on one cache\n"
		      "line to different threads. Reports objects per second for a fixed total.",
		      options);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 2048, "--threads must be 1..2048");
	BU_CHECK(opt_size >= 1, "--size must be >= 1");
	size_t t = (size_t)opt_threads;
	work *w = bu_map(t * sizeof(work));
	for (size_t i = 0; i < t; i++)
		w[i].iterations = opt_iterations / t + (i < opt_iterations % t ? 1 : 0);
	gate.expected = t;
	bu_run_threads(t, worker, w, sizeof(work));
	uint64_t t1 = bu_now_ns();
	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result_rate("cache-thrash", opt_iterations, t1 - gate.start_ns);
	bu_result_print("cache-thrash");
	return 0;
}
