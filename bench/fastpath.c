/*
 * fastpath: the cost of a malloc and a free that hit the thread cache.
 *
 * A loop allocates one block of --size bytes, writes a byte to it and frees
 * it, --iterations times: after the first round every malloc is served from
 * the thread cache and every free goes back to it. The program is meant to
 * run under `valgrind --tool=callgrind`, which counts instructions exactly,
 * so the answer does not depend on a noisy machine (bench/run does this; it
 * runs it at two lengths and divides the difference in counts by the
 * difference in iterations, which cancels start-up and warm-up).
 *
 * malloc and free are called through two small non-inlined wrappers,
 * call_malloc and call_free, so callgrind can attribute their inclusive cost
 * separately: that gives malloc alone and free alone. --null=1 swaps in
 * wrappers that do not call the allocator, which measures the cost of the
 * loop and the wrappers themselves so the runner can subtract it.
 *
 * --keep blocks of the same size stay allocated during the loop, as in any
 * program that uses a size class for more than one block at a time: with
 * nothing else live, every free would empty its page or run, and some
 * allocators (mimalloc, for one) then take a page-retirement path on every
 * call, which is not the fast path this program is about.
 *
 * --batch=N with --order=random or --order=reverse measures another pattern:
 * N blocks are allocated, then all freed (in a fixed random order, or last
 * first), round after round, until --iterations pairs are done. With N far
 * above a thread cache's bins (100 000 blocks of 32 bytes) most blocks go
 * through refills and flushes: it is the cost of the whole small-block path
 * per pair, not of the cache hit (issue 13 asks for <= 70 random, <= 60
 * reverse). --null=1 again measures the harness alone.
 *
 * Without valgrind it prints a time per pair, which on a quiet machine is a
 * rough cross-check of the instruction counts.
 */
#include "bench_util.h"

static uint64_t opt_iterations = 1000000;
static uint64_t opt_size = 64;
static uint64_t opt_null = 0;
static uint64_t opt_keep = 64;
static uint64_t opt_batch = 0;
static const char *opt_order = "same";

static const bu_opt options[] = {
	{ "iterations", BU_COUNT, &opt_iterations, "malloc+free pairs" },
	{ "size", BU_SIZE, &opt_size, "block size" },
	{ "keep", BU_COUNT, &opt_keep, "blocks of the same size kept allocated around the loop" },
	{ "null", BU_COUNT, &opt_null, "1: call no allocator (measures the harness)" },
	{ "batch", BU_COUNT, &opt_batch, "0: one block at a time; N: N blocks allocated, then all freed" },
	{ "order", BU_STRING, &opt_order, "with --batch: free order, random or reverse" },
	{ NULL, 0, NULL, NULL },
};

static char null_block[64] __attribute__((aligned(16)));

/* The empty asm statements make each call's result opaque, so neither call
 * can be turned into a tail jump (which callgrind would not count as a call
 * of the wrapper) nor dropped. */
BU_NOINLINE void *call_malloc(size_t n)
{
	void *p = malloc(n);
	__asm__ volatile("" : "+r"(p) : : "memory");
	return p;
}

BU_NOINLINE void call_free(void *p)
{
	free(p);
	__asm__ volatile("" : : : "memory");
}

BU_NOINLINE void *call_null_malloc(size_t n)
{
	void *p = null_block;
	__asm__ volatile("" : "+r"(p), "+r"(n) : : "memory");
	return p;
}

BU_NOINLINE void call_null_free(void *p)
{
	__asm__ volatile("" : "+r"(p) : : "memory");
}

BU_NOINLINE static void run(uint64_t iterations, size_t size, void *(*m)(size_t), void (*f)(void *))
{
	for (uint64_t i = 0; i < iterations; i++) {
		volatile char *p = m(size);
		p[0] = (char)i;
		f((void *)p);
	}
}

/* --batch: `pairs` mallocs and frees, `n` blocks at a time, freed in the
 * order of perm[] (indexes into the round's blocks). */
BU_NOINLINE static void run_batch(uint64_t pairs, size_t size, size_t n, void **blocks, const uint32_t *perm,
				  void *(*m)(size_t), void (*f)(void *))
{
	for (uint64_t done = 0; done < pairs; done += n) {
		for (size_t i = 0; i < n; i++) {
			volatile char *p = m(size);
			p[0] = (char)i;
			blocks[i] = (void *)p;
		}
		for (size_t i = 0; i < n; i++)
			f(blocks[perm[i]]);
	}
}

static int main_batch(void)
{
	size_t n = (size_t)opt_batch;
	int random = strcmp(opt_order, "random") == 0;
	BU_CHECK(random || strcmp(opt_order, "reverse") == 0, "--order must be random or reverse");
	void *(*m)(size_t) = opt_null ? call_null_malloc : call_malloc;
	void (*f)(void *) = opt_null ? call_null_free : call_free;
	void **blocks = bu_map(n * sizeof(void *));
	uint32_t *perm = bu_map(n * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		perm[i] = (uint32_t)(n - 1 - i);
	if (random) { /* Fisher-Yates with a fixed seed: the same order every run */
		bu_rng r = bu_rng_make(42, 0);
		for (size_t i = n - 1; i > 0; i--) {
			size_t j = (size_t)(bu_rng_next(&r) % (i + 1));
			uint32_t t = perm[i];
			perm[i] = perm[j];
			perm[j] = t;
		}
	}
	run_batch(n, (size_t)opt_size, n, blocks, perm, m, f); /* warm-up round */
	uint64_t t0 = bu_now_ns();
	run_batch(opt_iterations, (size_t)opt_size, n, blocks, perm, m, f);
	uint64_t t1 = bu_now_ns();
	bu_result("size", "%" PRIu64, opt_size);
	bu_result("batch", "%" PRIu64, opt_batch);
	bu_result("order", "%s", opt_order);
	bu_result("null", "%" PRIu64, opt_null);
	bu_result("ns_per_pair", "%.2f", (double)(t1 - t0) / (double)(opt_iterations ? opt_iterations : 1));
	bu_result_rate("fastpath", opt_iterations, t1 - t0);
	bu_result_print("fastpath");
	return 0;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Thread-cache hit path: malloc(--size), write a byte, free, in a loop.\n"
		      "Meant for valgrind --tool=callgrind; the functions call_malloc and\n"
		      "call_free carry the inclusive cost of malloc and free.",
		      options);
	BU_CHECK(opt_size >= 1, "--size must be >= 1");
	if (opt_batch)
		return main_batch();
	void *(*m)(size_t) = opt_null ? call_null_malloc : call_malloc;
	void (*f)(void *) = opt_null ? call_null_free : call_free;
	void **kept = bu_map((size_t)(opt_keep + 1) * sizeof(void *));
	for (uint64_t i = 0; i < opt_keep && !opt_null; i++) {
		kept[i] = malloc((size_t)opt_size);
		BU_CHECK(kept[i], "malloc failed");
	}
	/* One warm-up round outside the timing, as the difference of two
	 * callgrind runs would discount it anyway. */
	run(1000, (size_t)opt_size, m, f);
	uint64_t t0 = bu_now_ns();
	run(opt_iterations, (size_t)opt_size, m, f);
	uint64_t t1 = bu_now_ns();
	for (uint64_t i = 0; i < opt_keep && !opt_null; i++)
		free(kept[i]);
	bu_result("size", "%" PRIu64, opt_size);
	bu_result("null", "%" PRIu64, opt_null);
	bu_result("ns_per_pair", "%.2f", (double)(t1 - t0) / (double)(opt_iterations ? opt_iterations : 1));
	bu_result_rate("fastpath", opt_iterations, t1 - t0);
	bu_result_print("fastpath");
	return 0;
}
