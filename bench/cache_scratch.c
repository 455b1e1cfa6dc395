/*
 * cache-scratch: passive false sharing.
 *
 * The main thread allocates one small object per worker, back to back, so
 * they likely share cache lines, and gives one to each worker. Each worker
 * frees the object it was given and then repeatedly allocates an object of
 * the same size, writes to it many times and frees it. An allocator that puts
 * the freed object in the freeing thread's cache hands it straight back to
 * that worker, and the workers end up writing to neighbouring bytes of one
 * line: the false sharing was induced by the program's own frees. An
 * allocator that returns remote frees to their owner is not affected.
 *
 * The work (objects x writes) is fixed and split among the threads.
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
	void *given;
	uint64_t cpu_ns; /* CPU time of this thread's objects */
	char pad[BU_CACHE_LINE];
} work;

static bu_gate gate;

static void *worker(void *arg)
{
	work *w = arg;
	size_t size = (size_t)opt_size;
	bu_gate_wait(&gate);
	uint64_t cpu0 = bu_thread_cpu_ns();
	free(w->given);
	for (uint64_t i = 0; i < w->iterations; i++) {
		volatile char *p = malloc(size);
		BU_CHECK(p, "malloc(%zu) failed", size);
		for (uint64_t r = 0; r < opt_writes; r++)
			for (size_t b = 0; b < size; b++)
				p[b] = (char)(p[b] + 1);
		free((void *)p);
	}
	w->cpu_ns = bu_thread_cpu_ns() - cpu0;
	return NULL;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Passive false sharing: the main thread allocates one small object per\n"
		      "worker; each worker frees its object, then allocates, writes and frees\n"
		      "objects of that size. Slow when remote frees are recycled to the freeing\n"
		      "thread. Reports objects per second for a fixed total.",
		      options);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 2048, "--threads must be 1..2048");
	BU_CHECK(opt_size >= 1, "--size must be >= 1");
	size_t t = (size_t)opt_threads;
	work *w = bu_map(t * sizeof(work));
	for (size_t i = 0; i < t; i++) {
		w[i].iterations = opt_iterations / t + (i < opt_iterations % t ? 1 : 0);
		w[i].given = malloc((size_t)opt_size);
		BU_CHECK(w[i].given, "malloc failed");
		memset(w[i].given, 0, (size_t)opt_size);
	}
	gate.expected = t;
	bu_run_threads(t, worker, w, sizeof(work));
	uint64_t t1 = bu_now_ns();
	uint64_t cpu_ns = 0;
	for (size_t i = 0; i < t; i++)
		cpu_ns += w[i].cpu_ns;
	bu_result("threads", "%" PRIu64, opt_threads);
	/* With more threads than CPUs the rate also counts time the workers
	 * waited for a CPU; CPU time per object does not. */
	bu_result("cpu_ns_per_op", "%.1f", (double)cpu_ns / (double)opt_iterations);
	bu_result_rate("cache-scratch", opt_iterations, t1 - gate.start_ns);
	bu_result_print("cache-scratch");
	return 0;
}
