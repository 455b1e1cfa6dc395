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
 * Without valgrind it prints a time per pair, which on a quiet machine is a
 * rough cross-check of the instruction counts.
 */
#include "bench_util.h"

static uint64_t opt_iterations = 1000000;
static uint64_t opt_size = 64;
static uint64_t opt_null = 0;
static uint64_t opt_keep = 64;

static const bu_opt options[] = {
	{ "iterations", BU_COUNT, &opt_iterations, "malloc+free pairs" },
	{ "size", BU_SIZE, &opt_size, "block size" },
	{ "keep", BU_COUNT, &opt_keep, "blocks of the same size kept allocated around the loop" },
	{ "null", BU_COUNT, &opt_null, "1: call no allocator (measures the harness)" },
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

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Thread-cache hit path: malloc(--size), write a byte, free, in a loop.\n"
		      "Meant for valgrind --tool=callgrind; the functions call_malloc and\n"
		      "call_free carry the inclusive cost of malloc and free.",
		      options);
	BU_CHECK(opt_size >= 1, "--size must be >= 1");
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
