/*
 * aligned: posix_memalign, aligned_alloc and memalign with alignments from
 * 64 B (a cache line) to 2 MiB (a huge page).
 *
 * Each thread holds --slots blocks and replaces random ones with blocks of a
 * random power-of-two alignment and a random size. Every block is checked
 * for its alignment and has its pages written, so the report shows both the
 * time and the memory that alignment costs: an allocator that satisfies a
 * 2 MiB alignment by over-allocating and not giving the slack back shows a
 * high peak RSS.
 */
#include "bench_util.h"
#include <malloc.h>

static uint64_t opt_threads = 1;
static uint64_t opt_slots = 1000;
static uint64_t opt_min_align = 64;
static uint64_t opt_max_align = 2u << 20;
static uint64_t opt_max_size = 64u << 10;
static uint64_t opt_ops = 100000;
static uint64_t opt_seed = 42;

static const bu_opt options[] = {
	{ "threads", BU_COUNT, &opt_threads, "threads" },
	{ "slots", BU_COUNT, &opt_slots, "blocks held by each thread" },
	{ "min-align", BU_SIZE, &opt_min_align, "smallest alignment (power of two)" },
	{ "max-align", BU_SIZE, &opt_max_align, "largest alignment (power of two)" },
	{ "max-size", BU_SIZE, &opt_max_size, "largest block (sizes from 8 B, spread over powers of two)" },
	{ "ops", BU_COUNT, &opt_ops, "replacements in total, split among threads" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ NULL, 0, NULL, NULL },
};

static const char *const api_name[3] = { "posix_memalign", "aligned_alloc", "memalign" };

typedef struct {
	uint64_t ops;
	uint64_t index;
	uint64_t misaligned[3]; /* per interface, indexed as api_name */
	char pad[BU_CACHE_LINE];
} work;

static bu_gate gate;
static int lg_min, lg_max;

static void *aligned_block(unsigned api, size_t align, size_t size)
{
	/* aligned_alloc gets a size rounded to the alignment, as C11 asks. */
	switch (api) {
	case 0: {
		void *p = NULL;
		return posix_memalign(&p, align, size) == 0 ? p : NULL;
	}
	case 1: return aligned_alloc(align, (size + align - 1) & ~(align - 1));
	default: return memalign(align, size);
	}
}

static void *worker(void *arg)
{
	work *w = arg;
	bu_rng rng = bu_rng_make(opt_seed, w->index);
	size_t n = (size_t)opt_slots;
	void **slot = bu_map(n * sizeof(void *));
	bu_gate_wait(&gate);
	for (uint64_t i = 0; i < w->ops; i++) {
		size_t k = (size_t)bu_rng_below(&rng, n);
		free(slot[k]);
		size_t align = (size_t)1 << (lg_min + (int)bu_rng_below(&rng, (uint64_t)(lg_max - lg_min + 1)));
		size_t size = bu_rng_size_log(&rng, 8, (size_t)opt_max_size);
		unsigned api = (unsigned)bu_rng_below(&rng, 3);
		void *p = aligned_block(api, align, size);
		BU_CHECK(p, "%s of %zu bytes at alignment %zu failed", api_name[api], size, align);
		if ((uintptr_t)p & (align - 1))
			w->misaligned[api]++;
		bu_touch(p, size, (unsigned char)i);
		slot[k] = p;
	}
	for (size_t k = 0; k < n; k++)
		free(slot[k]);
	bu_unmap(slot, n * sizeof(void *));
	return NULL;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Aligned allocation: random alignments from 64 B to 2 MiB through\n"
		      "posix_memalign, aligned_alloc and memalign, random sizes, pages written.\n"
		      "Reports replacements per second for a fixed total; the run fails if any\n"
		      "block is misaligned.",
		      options);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 2048, "--threads must be 1..2048");
	BU_CHECK(opt_min_align >= sizeof(void *) && !(opt_min_align & (opt_min_align - 1)) &&
			 !(opt_max_align & (opt_max_align - 1)) && opt_min_align <= opt_max_align,
		 "alignments must be powers of two, at least a pointer, min <= max");
	BU_CHECK(opt_slots >= 1 && opt_max_size >= 8, "need --slots >= 1 and --max-size >= 8");
	lg_min = __builtin_ctzll(opt_min_align);
	lg_max = __builtin_ctzll(opt_max_align);
	size_t t = (size_t)opt_threads;
	work *w = bu_map(t * sizeof(work));
	for (size_t i = 0; i < t; i++) {
		w[i].ops = opt_ops / t + (i < opt_ops % t ? 1 : 0);
		w[i].index = i;
	}
	gate.expected = t;
	bu_run_threads(t, worker, w, sizeof(work));
	uint64_t t1 = bu_now_ns();
	uint64_t bad[3] = { 0, 0, 0 };
	for (size_t i = 0; i < t; i++)
		for (int a = 0; a < 3; a++)
			bad[a] += w[i].misaligned[a];
	if (bad[0] + bad[1] + bad[2]) {
		for (int a = 0; a < 3; a++)
			if (bad[a])
				fprintf(stderr, "%s returned %" PRIu64 " misaligned blocks\n", api_name[a], bad[a]);
		bu_die("misaligned blocks: the allocator does not honour the alignment");
	}
	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result_rate("aligned", opt_ops, t1 - gate.start_ns);
	bu_result_print("aligned");
	return 0;
}
