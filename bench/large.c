/*
 * large: big blocks (64 KiB to 32 MiB) in a working set that grows and
 * shrinks.
 *
 * Each thread holds --slots blocks and replaces random ones. The largest size
 * it asks for rises from --min-size to --max-size and falls back, --cycles
 * times over the run, so the allocator sees a demand that swells and
 * subsides as a program's does between quiet and busy phases. One operation
 * in four resizes a block with realloc (up or down) instead of replacing it.
 * Every new page of a block is written once, so the cost of fresh pages
 * (page faults, zeroing) is part of the measurement: this is where caching
 * freed large blocks, or handing them back to the kernel too eagerly, shows.
 *
 * --mode=malloc-large does what mimalloc-bench's malloc-large does instead:
 * 20 slots, a random one replaced at each step by a block of 5 to 25 MiB
 * (uniform), allocated before the old one is freed and written in full.
 * Every block is huge and every size differs: an allocator that serves a
 * request only from a cached block of about its size, or gives freed blocks
 * back while the loop still swings between them, faults them in again.
 */
#include "bench_util.h"
#include <math.h>

static uint64_t opt_threads = 1;
static uint64_t opt_slots = 16;
static uint64_t opt_min = 64u << 10;
static uint64_t opt_max = 32u << 20;
static uint64_t opt_ops = 2000;
static uint64_t opt_cycles = 2;
static uint64_t opt_seed = 42;
static const char *opt_mode = "cycle";

static const bu_opt options[] = {
	{ "mode", BU_STRING, &opt_mode, "cycle (the default) or malloc-large" },
	{ "threads", BU_COUNT, &opt_threads, "threads" },
	{ "slots", BU_COUNT, &opt_slots, "blocks held by each thread" },
	{ "min-size", BU_SIZE, &opt_min, "smallest block" },
	{ "max-size", BU_SIZE, &opt_max, "largest block at the top of a cycle" },
	{ "ops", BU_COUNT, &opt_ops, "replacements and resizes in total, split among threads" },
	{ "cycles", BU_COUNT, &opt_cycles, "grow-and-shrink cycles of the size ceiling over the run" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ NULL, 0, NULL, NULL },
};

typedef struct {
	uint64_t ops;
	uint64_t index;
	char pad[BU_CACHE_LINE];
} work;

static bu_gate gate;

/* The size ceiling at progress x in [0, 1): a triangle wave per cycle,
 * geometric between min and max so each octave gets equal time. */
static size_t ceiling_at(double x)
{
	double c = x * (double)opt_cycles;
	double f = c - floor(c);
	double tri = f < 0.5 ? 2 * f : 2 - 2 * f;
	double lmin = log2((double)opt_min), lmax = log2((double)opt_max);
	return (size_t)exp2(lmin + tri * (lmax - lmin));
}

/* mimalloc-bench's malloc-large: see the top of the file. */
static void malloc_large(work *w)
{
	enum { SLOTS = 20 };
	bu_rng rng = bu_rng_make(opt_seed, w->index);
	char *slot[SLOTS] = { 0 };
	for (uint64_t i = 0; i < w->ops; i++) {
		size_t k = (size_t)bu_rng_below(&rng, SLOTS);
		size_t sz = (5u << 20) + (size_t)bu_rng_below(&rng, (20u << 20) + 1);
		char *p = malloc(sz);
		BU_CHECK(p, "malloc(%zu) failed", sz);
		memset(p, 0, sz);
		free(slot[k]);
		slot[k] = p;
	}
	for (size_t k = 0; k < SLOTS; k++)
		free(slot[k]);
}

static void *worker(void *arg)
{
	work *w = arg;
	if (strcmp(opt_mode, "malloc-large") == 0) {
		bu_gate_wait(&gate);
		malloc_large(w);
		return NULL;
	}
	bu_rng rng = bu_rng_make(opt_seed, w->index);
	size_t n = (size_t)opt_slots;
	char **slot = bu_map(n * sizeof(char *));
	size_t *len = bu_map(n * sizeof(size_t));
	bu_gate_wait(&gate);
	for (uint64_t i = 0; i < w->ops; i++) {
		size_t k = (size_t)bu_rng_below(&rng, n);
		size_t top = ceiling_at((double)i / (double)w->ops);
		size_t sz = bu_rng_size_log(&rng, (size_t)opt_min, top < opt_min ? (size_t)opt_min : top);
		if (slot[k] && bu_rng_below(&rng, 4) == 0) {
			char *p = realloc(slot[k], sz);
			BU_CHECK(p, "realloc(%zu) failed", sz);
			BU_CHECK((unsigned char)p[0] == (unsigned char)k, "realloc lost the contents of a block");
			if (sz > len[k])
				bu_touch(p + len[k], sz - len[k], (unsigned char)k);
			slot[k] = p;
		} else {
			free(slot[k]);
			char *p = malloc(sz);
			BU_CHECK(p, "malloc(%zu) failed", sz);
			bu_touch(p, sz, (unsigned char)k);
			slot[k] = p;
		}
		len[k] = sz;
	}
	for (size_t k = 0; k < n; k++)
		free(slot[k]);
	bu_unmap(slot, n * sizeof(char *));
	bu_unmap(len, n * sizeof(size_t));
	return NULL;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Large blocks: each thread replaces or reallocs random slots with blocks\n"
		      "of 64 KiB up to a ceiling that rises to 32 MiB and falls back, writing\n"
		      "every new page. Reports operations per second for a fixed total.",
		      options);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 2048, "--threads must be 1..2048");
	BU_CHECK(opt_min >= 1 && opt_min <= opt_max, "need 1 <= --min-size <= --max-size");
	BU_CHECK(opt_slots >= 1 && opt_cycles >= 1, "--slots and --cycles must be >= 1");
	BU_CHECK(strcmp(opt_mode, "cycle") == 0 || strcmp(opt_mode, "malloc-large") == 0,
		 "--mode must be cycle or malloc-large");
	size_t t = (size_t)opt_threads;
	work *w = bu_map(t * sizeof(work));
	for (size_t i = 0; i < t; i++) {
		w[i].ops = opt_ops / t + (i < opt_ops % t ? 1 : 0);
		w[i].index = i;
	}
	gate.expected = t;
	bu_run_threads(t, worker, w, sizeof(work));
	uint64_t t1 = bu_now_ns();
	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result_rate("large", opt_ops, t1 - gate.start_ns);
	bu_result_print("large");
	return 0;
}
