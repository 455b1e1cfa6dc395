/*
 * realloc: growth by realloc, the way C programs build strings and vectors.
 *
 * --mode=string: several strings are built at once, round robin, each by
 *   appending a piece of 1 to 64 bytes and calling realloc for exactly the
 *   new length (the naive and very common pattern). A string that reaches its
 *   target length is checked, freed and started again. Many small reallocs:
 *   the allocator's size classes and in-place growth decide the cost.
 * --mode=vector: several vectors of 8-byte elements grow by half their
 *   capacity when full (as C++ and Rust vectors do), up to a target of up to
 *   --max-len bytes, and are then freed and started again. Few reallocs of
 *   large blocks: whether the allocator can grow in place or remap pages
 *   instead of copying decides the cost.
 *
 * Building several at once matters: a lone growing block can usually be
 * extended in place, which hides the copying that real programs pay.
 */
#include "bench_util.h"

static const char *opt_mode = "string";
static uint64_t opt_threads = 1;
static uint64_t opt_builders = 0;
static uint64_t opt_max_len = 0;
static uint64_t opt_bytes = 0;
static uint64_t opt_seed = 42;

static const bu_opt options[] = {
	{ "mode", BU_STRING, &opt_mode, "string or vector" },
	{ "threads", BU_COUNT, &opt_threads, "threads, each with its own builders" },
	{ "builders", BU_COUNT, &opt_builders, "strings or vectors growing at once per thread (0: 64 strings, 16 vectors)" },
	{ "max-len", BU_SIZE, &opt_max_len, "largest target length in bytes (0: 64K string, 4M vector)" },
	{ "bytes", BU_SIZE, &opt_bytes, "bytes appended in total, split among threads (0: 256M string, 512M vector)" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ NULL, 0, NULL, NULL },
};

typedef struct {
	char *data;
	size_t len, cap, target;
} builder;

typedef struct {
	uint64_t bytes;
	uint64_t index;
	uint64_t reallocs;
	uint64_t finished;
	uint64_t bad;
	char pad[BU_CACHE_LINE];
} work;

static int vector_mode;
static bu_gate gate;

static size_t pick_target(bu_rng *rng)
{
	/* Spread over powers of two, so most builds are short and a few long. */
	return bu_rng_size_log(rng, 64, (size_t)opt_max_len);
}

/* The byte at position pos of every buffer, so contents can be checked
 * without keeping a copy. Periodic with period 256. */
static inline unsigned char byte_at(size_t pos)
{
	return (unsigned char)(pos * 7u + 3u);
}

/* 256 bytes of period plus the longest piece, so any append is one memcpy. */
#define MAX_PIECE 4096
static unsigned char pattern[256 + MAX_PIECE];

static void finish(builder *b, work *w, bu_rng *rng)
{
	/* Sampled check: a realloc that lost or mangled the contents when it
	 * moved the block fails the run. */
	size_t step = b->len / 64 + 1;
	for (size_t i = 0; i < b->len; i += step)
		if ((unsigned char)b->data[i] != byte_at(i)) {
			w->bad++;
			break;
		}
	free(b->data);
	w->finished++;
	b->data = NULL;
	b->len = b->cap = 0;
	b->target = pick_target(rng);
}

static void *worker(void *arg)
{
	work *w = arg;
	bu_rng rng = bu_rng_make(opt_seed, w->index);
	size_t nb = (size_t)opt_builders;
	builder *bs = bu_map(nb * sizeof(builder));
	for (size_t i = 0; i < nb; i++)
		bs[i].target = pick_target(&rng);
	bu_gate_wait(&gate);
	uint64_t left = w->bytes;
	size_t i = 0;
	while (left) {
		builder *b = &bs[i];
		i = (i + 1 == nb) ? 0 : i + 1;
		/* Strings append a piece of text; vectors push a run of 8-byte
		 * elements per visit, so they grow faster than the round robin
		 * alone would let them. */
		size_t piece = vector_mode ? 8 * bu_rng_range(&rng, 1, MAX_PIECE / 8) : bu_rng_range(&rng, 1, 64);
		if (piece > left)
			piece = (size_t)left;
		size_t need = b->len + piece + (vector_mode ? 0 : 1);
		if (need > b->cap) {
			size_t cap = vector_mode ? (b->cap < 64 ? 64 : b->cap + b->cap / 2) : need;
			while (cap < need)
				cap += cap / 2;
			char *p = realloc(b->data, cap);
			BU_CHECK(p, "realloc(%zu) failed", cap);
			b->data = p;
			b->cap = cap;
			w->reallocs++;
		}
		memcpy(b->data + b->len, pattern + (b->len & 255), piece);
		b->len += piece;
		if (!vector_mode)
			b->data[b->len] = '\0';
		left -= piece;
		if (b->len >= b->target)
			finish(b, w, &rng);
	}
	for (size_t k = 0; k < nb; k++)
		free(bs[k].data);
	bu_unmap(bs, nb * sizeof(builder));
	return NULL;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Realloc growth: strings built by exact-size reallocs of small appends,\n"
		      "or vectors grown by 1.5x, several at once per thread. Reports bytes\n"
		      "appended per second (ops = bytes) for a fixed total.",
		      options);
	if (!strcmp(opt_mode, "vector"))
		vector_mode = 1;
	else if (strcmp(opt_mode, "string"))
		bu_die("--mode must be string or vector");
	if (!opt_builders)
		opt_builders = vector_mode ? 16 : 64;
	if (!opt_max_len)
		opt_max_len = vector_mode ? (4u << 20) : (64u << 10);
	if (!opt_bytes)
		opt_bytes = vector_mode ? (512ull << 20) : (256ull << 20);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 2048, "--threads must be 1..2048");
	BU_CHECK(opt_builders >= 1 && opt_max_len >= 64, "need --builders >= 1 and --max-len >= 64");
	for (size_t i = 0; i < sizeof pattern; i++)
		pattern[i] = byte_at(i);
	size_t t = (size_t)opt_threads;
	work *w = bu_map(t * sizeof(work));
	for (size_t i = 0; i < t; i++) {
		w[i].bytes = opt_bytes / t + (i < opt_bytes % t ? 1 : 0);
		w[i].index = i;
	}
	gate.expected = t;
	bu_run_threads(t, worker, w, sizeof(work));
	uint64_t t1 = bu_now_ns();
	uint64_t reallocs = 0, finished = 0, bad = 0;
	for (size_t i = 0; i < t; i++) {
		reallocs += w[i].reallocs;
		finished += w[i].finished;
		bad += w[i].bad;
	}
	BU_CHECK(bad == 0, "%" PRIu64 " buffers lost their contents in realloc", bad);
	const char *name = vector_mode ? "realloc-vector" : "realloc-string";
	bu_result("mode", "%s", opt_mode);
	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result("reallocs", "%" PRIu64, reallocs);
	bu_result("built", "%" PRIu64, finished);
	bu_result_rate(name, opt_bytes, t1 - gate.start_ns);
	bu_result_print(name);
	return 0;
}
