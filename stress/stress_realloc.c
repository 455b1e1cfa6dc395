/*
 * stress_realloc: realloc chains in several threads.
 *
 * Each thread runs chains, one block each, of these kinds:
 *   small-steps  grow by 1-64 B from a few bytes to 40-80 KiB (through every
 *                small class and over the 32 KiB small/large boundary), then
 *                shrink by 1-64 B back down;
 *   page-steps   grow by 1 B-96 KiB from ~16 KiB to 4.5-10 MiB (over the
 *                ~4 MiB large/huge boundary), then shrink by up to 128 KiB;
 *   geometric    grow by x1.05-x2 up to --max-size (64 MiB), then shrink by
 *                x0.3-x0.95 down to a few bytes;
 *   random-walk  60 jumps to log-uniform sizes in [1, --max-size];
 *   boundaries   60 jumps to sizes just below, at and above the class,
 *                page, small/large and large/huge boundaries.
 * Steps use realloc or reallocarray. After every step min(old, new) bytes
 * must still hold the block's pattern: checked in full up to --full-check
 * bytes, and above that the first and last 64 KiB plus a rotating 64-byte
 * window of every page, with a full check every 16th step and at the end of
 * each chain. Once per chain, a realloc and a reallocarray that cannot be
 * satisfied must return NULL with ENOMEM and leave the block intact. Now and
 * then a thread swaps its chain's block with a shared slot and carries on
 * with another thread's block. Each thread also keeps small "bystander"
 * blocks and checks them as it goes (a realloc that writes past its block
 * damages a neighbour).
 */
#include "stress_util.h"

static uint64_t opt_threads = 6;
static double opt_seconds = 20;
static size_t opt_max_size = 64 * ST_MIB;
static size_t opt_full_check = 256 * ST_KIB;
static uint64_t opt_bystanders = 32;

enum chain_kind { C_SMALL_STEPS, C_PAGE_STEPS, C_GEOMETRIC, C_RANDOM_WALK, C_BOUNDARIES, C_COUNT };
static const char *const chain_names[C_COUNT] = {"small-steps", "page-steps", "geometric", "random-walk",
                                                 "boundaries"};

static st_xchg X;
static double deadline;

typedef struct tstats {
	uint64_t chains[C_COUNT], steps, moved, grown, shrunk, handoffs, max_size, failed_reallocs;
	double bytes_kept;
} tstats;
static tstats *T;

static size_t boundary_size(st_rng *r)
{
	static const size_t points[] = {
		16, 32, 48, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 32768 + 16, 65536, 131072,
		ST_MIB, 1006 * ST_PAGE, 1007 * ST_PAGE, 1008 * ST_PAGE, 4 * ST_MIB - 68 * ST_KIB, 4 * ST_MIB,
		4 * ST_MIB + ST_PAGE, 8 * ST_MIB, 16 * ST_MIB,
	};
	size_t n = sizeof points / sizeof points[0];
	size_t p = points[st_below(r, n)];
	if (p > opt_max_size)
		p = opt_max_size;
	long jitter = (long)st_range(r, 0, 32) - 16; /* -16 .. +16 */
	if (st_chance(r, 300))
		jitter = 0;
	if (jitter < 0 && (size_t)-jitter >= p)
		return p;
	size_t s = (size_t)((long)p + jitter);
	return s < opt_max_size ? s : opt_max_size;
}

/* Checks the whole block (used every 16th step and at the end of a chain). */
static void full_check(const st_block *b, const char *where)
{
	st_block_check(b, where);
}

/* Impossible requests must fail cleanly and leave the block as it was. */
static void check_failing_realloc(st_block *b, tstats *ts)
{
	errno = 0;
	void *q = ebb_realloc(b->p, SIZE_MAX - 2 * ST_PAGE);
	if (q != NULL)
		ST_FAIL("realloc(%p, SIZE_MAX - 8192) returned %p, expected NULL", (void *)b->p, q);
	if (errno != ENOMEM)
		ST_FAIL("realloc(%p, SIZE_MAX - 8192) set errno %d, expected ENOMEM", (void *)b->p, errno);
	errno = 0;
	q = ebb_reallocarray(b->p, SIZE_MAX / 2, 4);
	if (q != NULL)
		ST_FAIL("reallocarray(%p, SIZE_MAX / 2, 4) returned %p, expected NULL", (void *)b->p, q);
	if (errno != ENOMEM)
		ST_FAIL("reallocarray(%p, SIZE_MAX / 2, 4) set errno %d, expected ENOMEM", (void *)b->p, errno);
	errno = 0;
	q = ebb_realloc(b->p, (size_t)1 << 50);
	if (q != NULL)
		ST_FAIL("realloc(%p, 1 PiB) returned %p, expected NULL", (void *)b->p, q);
	ts->failed_reallocs += 3;
	full_check(b, "after a failed realloc (the block must be untouched)");
}

static void check_bystander(st_block *bs, st_rng *r, uint64_t serial)
{
	st_block_check(bs, "bystander block (damaged by a realloc nearby?)");
	if (st_chance(r, 500)) {
		ebb_free(bs->p);
		memset(bs, 0, sizeof *bs);
		st_block_alloc(bs, r, ST_K_MALLOC, st_logrange(r, 1, 64 * ST_KIB), 0, serial, true);
	}
}

static void *worker(void *arg)
{
	int tid = (int)(intptr_t)arg;
	st_tid = tid;
	st_rng r;
	st_rng_init(&r, st_seed, (uint64_t)tid + 1);
	tstats *ts = &T[tid];
	uint32_t mine = (uint32_t)(opt_threads + (uint64_t)tid);
	uint64_t serial = 0;
	st_block *by = (st_block *)calloc(opt_bystanders ? opt_bystanders : 1, sizeof *by);
	ST_CHECK(by != NULL, "out of memory");
	for (uint64_t i = 0; i < opt_bystanders; i++)
		st_block_alloc(&by[i], &r, ST_K_MALLOC, st_logrange(&r, 1, 64 * ST_KIB), 0,
		               ((uint64_t)(tid + 1) << 40) | ++serial, true);

	while (st_now() < deadline) {
		enum chain_kind kind = (enum chain_kind)st_below(&r, C_COUNT);
		st_block *b = &X.desc[mine];
		if (!b->p) {
			size_t start = kind == C_PAGE_STEPS ? st_range(&r, 8 * ST_KIB, 24 * ST_KIB)
			                                    : kind == C_RANDOM_WALK || kind == C_BOUNDARIES
			                                          ? st_logrange(&r, 1, 64 * ST_KIB)
			                                          : st_range(&r, 1, 48);
			st_block_alloc(b, &r, st_chance(&r, 200) ? ST_K_CALLOC : ST_K_MALLOC, start, 0,
			               ((uint64_t)(tid + 1) << 40) | ++serial, false);
		}
		ts->chains[kind]++;
		size_t top = 0, bottom = 0;
		int phase = 0; /* 0 growing, 1 shrinking */
		int jumps = 60;
		switch (kind) {
		case C_SMALL_STEPS:
			top = st_range(&r, 40 * ST_KIB, 80 * ST_KIB);
			bottom = st_range(&r, 1, 64);
			break;
		case C_PAGE_STEPS:
			top = st_range(&r, 4 * ST_MIB + ST_MIB / 2, 10 * ST_MIB);
			bottom = st_range(&r, 8 * ST_KIB, 40 * ST_KIB);
			break;
		case C_GEOMETRIC:
			top = st_logrange(&r, opt_max_size / 4, opt_max_size);
			bottom = st_range(&r, 1, 100);
			break;
		default:
			break;
		}
		if (top > opt_max_size)
			top = opt_max_size;
		/* a block carried over from another chain may be far from where a
		 * step-wise chain starts: get there with one big realloc */
		size_t restart = 0;
		if (kind == C_SMALL_STEPS && b->size > 4096)
			restart = st_range(&r, 1, 48);
		else if (kind == C_PAGE_STEPS && b->size > ST_MIB)
			restart = st_range(&r, 8 * ST_KIB, 24 * ST_KIB);
		if (restart) {
			st_block_realloc_ex(b, restart, false, opt_full_check, st_seed ^ ts->steps, "restart of a chain");
			ts->steps++;
			ts->shrunk++;
		}
		bool tested_failure = false;
		for (uint64_t step = 0;; step++) {
			if (st_now() >= deadline)
				break;
			st_op = ++ts->steps;
			st_tick();
			b = &X.desc[mine];
			size_t cur = b->size, next = cur;
			bool done = false;
			switch (kind) {
			case C_SMALL_STEPS:
				if (phase == 0) {
					next = cur + st_range(&r, 1, 64);
					if (next >= top)
						phase = 1;
				} else {
					next = cur > bottom + 64 ? cur - st_range(&r, 1, 64) : bottom;
					done = next <= bottom;
				}
				break;
			case C_PAGE_STEPS:
				if (phase == 0) {
					next = cur + st_range(&r, 1, 96 * ST_KIB);
					if (next >= top)
						phase = 1;
				} else {
					next = cur > bottom + 128 * ST_KIB ? cur - st_range(&r, 1, 128 * ST_KIB) : bottom;
					done = next <= bottom;
				}
				break;
			case C_GEOMETRIC:
				if (phase == 0) {
					next = (size_t)((double)cur * (1.05 + (double)st_below(&r, 950) / 1000.0)) + 1;
					if (next >= top) {
						next = top;
						phase = 1;
					}
				} else {
					next = (size_t)((double)cur * (0.3 + (double)st_below(&r, 650) / 1000.0));
					if (next <= bottom) {
						next = bottom;
						done = true;
					}
				}
				break;
			case C_RANDOM_WALK:
				next = st_logrange(&r, 1, opt_max_size);
				done = --jumps <= 0;
				break;
			case C_BOUNDARIES:
				next = boundary_size(&r);
				done = --jumps <= 0;
				break;
			default:
				break;
			}
			if (next > opt_max_size)
				next = opt_max_size;
			if (next == 0)
				next = 1;
			unsigned char *before = b->p;
			size_t keep = cur < next ? cur : next;
			st_block_realloc_ex(b, next, st_chance(&r, 250), opt_full_check, st_seed ^ ts->steps,
			                    chain_names[kind]);
			ts->moved += b->p != before;
			ts->grown += next > cur;
			ts->shrunk += next < cur;
			ts->bytes_kept += (double)keep;
			if (next > ts->max_size)
				ts->max_size = next;
			if (step % 16 == 15)
				full_check(b, chain_names[kind]);
			if (!tested_failure && st_chance(&r, 50)) {
				check_failing_realloc(b, ts);
				tested_failure = true;
			}
			if (opt_bystanders && step % 8 == 0)
				check_bystander(&by[st_below(&r, opt_bystanders)], &r, ((uint64_t)(tid + 1) << 40) | ++serial);
			if (st_chance(&r, 10)) {
				/* carry on with another thread's chain block (or a new one) */
				mine = st_xchg_swap(&X, (size_t)st_below(&r, X.nslots), mine);
				ts->handoffs++;
				b = &X.desc[mine];
				if (b->p)
					full_check(b, "block received from another thread");
				break; /* the next chain starts from whatever we hold now */
			}
			if (done)
				break;
		}
		b = &X.desc[mine];
		if (b->p) {
			full_check(b, "end of a chain");
			if (st_chance(&r, 600))
				st_block_free(b, &r, "end of a chain");
		}
	}
	st_block *b = &X.desc[mine];
	if (b->p)
		st_block_free(b, &r, "thread exit");
	for (uint64_t i = 0; i < opt_bystanders; i++)
		st_block_free(&by[i], &r, "bystander at thread exit");
	free(by);
	return NULL;
}

int main(int argc, char **argv)
{
	static const st_opt opts[] = {
		{"threads", ST_OPT_COUNT, &opt_threads, "threads running realloc chains"},
		{"seconds", ST_OPT_DOUBLE, &opt_seconds, "run time"},
		{"max-size", ST_OPT_SIZE, &opt_max_size, "largest size a chain reaches"},
		{"full-check", ST_OPT_SIZE, &opt_full_check, "check kept bytes in full up to this size, sampled above"},
		{"bystanders", ST_OPT_COUNT, &opt_bystanders, "small blocks each thread keeps and checks"},
	};
	st_parse_args(argc, argv, "stress_realloc", "Realloc chains across the size boundaries, in several threads.",
	              opts, sizeof opts / sizeof opts[0]);
	if (opt_threads < 1 || opt_threads > ST_MAX_THREADS || opt_seconds <= 0 || opt_max_size < 64 * ST_KIB) {
		fprintf(stderr, "stress_realloc: bad arguments (try --help)\n");
		return 2;
	}
	st_print_config(argc, argv);
	st_xchg_init(&X, opt_threads, opt_threads);
	T = (tstats *)calloc(opt_threads, sizeof *T);
	pthread_t *th = (pthread_t *)calloc(opt_threads, sizeof *th);
	ST_CHECK(T && th, "out of memory");
	st_watchdog_start();
	double t0 = st_now();
	deadline = t0 + opt_seconds;
	for (uint64_t t = 0; t < opt_threads; t++)
		st_thread_create(&th[t], worker, (void *)(intptr_t)t);
	for (uint64_t t = 0; t < opt_threads; t++)
		st_thread_join(th[t]);
	double elapsed = st_now() - t0;
	st_rng r;
	st_rng_init(&r, st_seed, 0);
	for (size_t s = 0; s < X.nslots; s++) {
		st_block *b = &X.desc[atomic_load(&X.slot[s])];
		if (b->p)
			st_block_free(b, &r, "drain of the slots");
	}
	st_watchdog_end();

	tstats tot;
	memset(&tot, 0, sizeof tot);
	for (uint64_t t = 0; t < opt_threads; t++) {
		for (int c = 0; c < C_COUNT; c++)
			tot.chains[c] += T[t].chains[c];
		tot.steps += T[t].steps;
		tot.moved += T[t].moved;
		tot.grown += T[t].grown;
		tot.shrunk += T[t].shrunk;
		tot.handoffs += T[t].handoffs;
		tot.failed_reallocs += T[t].failed_reallocs;
		tot.bytes_kept += T[t].bytes_kept;
		if (T[t].max_size > tot.max_size)
			tot.max_size = T[t].max_size;
	}
	st_log("%" PRIu64 " threads, %.1f s: %" PRIu64 " realloc steps (%" PRIu64 " grew, %" PRIu64 " shrank, %" PRIu64
	       " moved), %.1f GiB of kept contents checked or sampled, largest %.1f MiB, %" PRIu64
	       " hand-overs, %" PRIu64 " impossible reallocs refused",
	       opt_threads, elapsed, tot.steps, tot.grown, tot.shrunk, tot.moved, tot.bytes_kept / (1024.0 * ST_MIB),
	       (double)tot.max_size / ST_MIB, tot.handoffs, tot.failed_reallocs);
	printf("%s: chains:", st_prog);
	for (int c = 0; c < C_COUNT; c++)
		printf(" %s %" PRIu64, chain_names[c], tot.chains[c]);
	printf("\n");
	ST_CHECK(tot.steps > 0, "no realloc step ran");
	(void)ebb_trim();
	st_check_stats_identity("after every block was freed");
	st_xchg_destroy(&X);
	free(T);
	free(th);
	st_log("PASS");
	return 0;
}
