/*
 * xmalloc: producer/consumer allocation, in the spirit of xmalloc-test.
 *
 * N producer threads allocate blocks of random sizes and pass them, in
 * batches, to N consumer threads that check and free them. Every free is a
 * remote free (the block was allocated by another thread), which is where
 * allocators with per-thread caches differ most: where the block goes back,
 * how much locking that takes, and whether memory piles up on the wrong side.
 *
 * The total number of blocks is fixed and split among the producers, so the
 * same work is done at every thread count and the throughput is comparable.
 * Each producer hands to its own consumer through a bounded queue, which
 * bounds the memory in flight; a producer that finds the queue full waits.
 *
 * The clock starts when every thread is at the start line and stops when the
 * last consumer has freed its last block, before any thread exits: thread
 * exit (and with it the allocator's clean-up of 2 x --threads caches) is not
 * timed. Threads that are done sleep in a barrier until then, taking no CPU
 * from the others. --time-setup=1 stops the clock after the threads are
 * joined (the program's behaviour before 2026-12-04).
 */
#include "bench_util.h"

static uint64_t opt_threads = 2;
static uint64_t opt_objects = 4000000;
static uint64_t opt_min = 16;
static uint64_t opt_max = 1024;
static uint64_t opt_batch = 64;
static uint64_t opt_queue = 32;
static uint64_t opt_seed = 42;
static uint64_t opt_time_setup = 0;
static uint64_t opt_pages = 0;
static uint64_t opt_floor = 0;

static const bu_opt options[] = {
	{ "threads", BU_COUNT, &opt_threads, "producer threads (as many consumers)" },
	{ "objects", BU_COUNT, &opt_objects, "blocks allocated in total, split among producers" },
	{ "min-size", BU_SIZE, &opt_min, "smallest block" },
	{ "max-size", BU_SIZE, &opt_max, "largest block (sizes spread evenly over powers of two)" },
	{ "batch", BU_COUNT, &opt_batch, "blocks handed over at a time" },
	{ "queue", BU_COUNT, &opt_queue, "batches a producer may have in flight" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ "time-setup", BU_COUNT, &opt_time_setup, "1: time thread exits too (0: until the last free)" },
	{ "pages", BU_COUNT, &opt_pages,
	  "1: report the distinct 4 KiB pages of each 2048 blocks a consumer reads (a locality figure: "
	  "the counting slows the run, its times mean nothing then)" },
	{ "floor", BU_SIZE, &opt_floor,
	  "BYTES > 0: no allocator at all: each pair carves its blocks in turn from a ring of BYTES and "
	  "the consumer's frees, in the same order, give them back (a floor: what the program's own "
	  "hand-over, scheduling and memory traffic cost, with perfect locality and no allocator code)" },
	{ NULL, 0, NULL, NULL },
};

/* A batch is itself allocated by the producer and freed by the consumer, as a
 * message buffer in a real pipeline would be. */
typedef struct {
	size_t count;
	void *blocks[];
} batch;

/* --floor: a side's place in its pair's ring: bytes made (or given back)
 * so far, and where in the ring the next block goes. Blocks never wrap: one
 * that would is put at the start, the bytes skipped counted as used. */
typedef struct {
	uint64_t total;
	size_t pos;
} floor_at;

/*
 * One producer-consumer pair: a bounded ring of batch pointers. A sleeping
 * side is woken only once the ring is half full (or half empty), not on every
 * batch: a wake-up per batch would make this a benchmark of futex calls and
 * context switches instead of the allocator.
 */
typedef struct {
	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full;
	batch **ring;
	int *ring_cpu; /* the CPU each batch was pushed on */
	uint64_t cross_cpu; /* batches popped on another CPU than they were pushed on */
	/* The pair's time split across CPUs: between two pops, counted as
	 * split when the consumer's CPU at the second differs from the CPU of
	 * the producer's latest push. A split pair hands over more batches a
	 * millisecond with a faster allocator, so cross_cpu alone weighs the
	 * same split time more for it; this does not. */
	int producer_cpu;
	uint64_t last_pop_ns, split_ns, paired_ns;
	size_t cap, head, tail, len;
	int done, consumer_waits, producer_waits;
	uint64_t objects;
	uint64_t seed;
	uint64_t bad;
	/* --floor: the ring, the producer's running offset and the consumer's
	 * (published once per batch). Both sides replay the same sequence of
	 * sizes, so the consumer knows each block's offset without reading it. */
	unsigned char *ring_mem;
	floor_at made;
	_Atomic uint64_t gone;
	uint64_t floor_waits;
	char pad[BU_CACHE_LINE];
} pair;

static bu_gate gate;

/* The end of the timed phase: the last thread to finish reads the clock. */
static pthread_barrier_t finished;
static atomic_size_t finished_count;
static uint64_t finished_ns;
static atomic_uint_fast64_t threads_cpu_ns; /* every thread's CPU time from the start line to finish() */

/* --pages: how many distinct pages a consumer's reads touch, per window of
 * PAGE_WINDOW blocks (each consumer's windows, summed over consumers). The
 * blocks an allocator hands one producer in a row may come from few pages
 * or from many: the consumer's reads (and the producer's writes) then miss
 * the TLB and the cache that much more, which no instruction count shows. */
#define PAGE_WINDOW 2048
static atomic_uint_fast64_t pages_sum, pages_windows;

static int cmp_page(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
	return x < y ? -1 : x > y;
}

static void count_pages(uintptr_t *win)
{
	qsort(win, PAGE_WINDOW, sizeof *win, cmp_page);
	uint64_t distinct = 1;
	for (size_t k = 1; k < PAGE_WINDOW; k++)
		distinct += win[k] != win[k - 1];
	atomic_fetch_add(&pages_sum, distinct);
	atomic_fetch_add(&pages_windows, 1);
}

static void finish(uint64_t cpu0)
{
	atomic_fetch_add(&threads_cpu_ns, bu_thread_cpu_ns() - cpu0);
	if (atomic_fetch_add(&finished_count, 1) + 1 == 2 * opt_threads)
		finished_ns = bu_now_ns();
	pthread_barrier_wait(&finished);
}

static size_t half(const pair *p)
{
	return p->cap / 2 ? p->cap / 2 : 1;
}

static void push(pair *p, batch *b)
{
	pthread_mutex_lock(&p->lock);
	while (p->len == p->cap) {
		p->producer_waits = 1;
		pthread_cond_wait(&p->not_full, &p->lock);
	}
	p->producer_waits = 0;
	p->ring[p->tail] = b;
	p->ring_cpu[p->tail] = p->producer_cpu = sched_getcpu();
	p->tail = (p->tail + 1) % p->cap;
	p->len++;
	if (p->consumer_waits && p->len >= half(p))
		pthread_cond_signal(&p->not_empty);
	pthread_mutex_unlock(&p->lock);
}

static batch *pop(pair *p)
{
	pthread_mutex_lock(&p->lock);
	while (p->len == 0 && !p->done) {
		p->consumer_waits = 1;
		pthread_cond_wait(&p->not_empty, &p->lock);
	}
	p->consumer_waits = 0;
	batch *b = NULL;
	if (p->len) {
		b = p->ring[p->head];
		int cpu = sched_getcpu();
		uint64_t now = bu_now_ns();
		p->cross_cpu += p->ring_cpu[p->head] != cpu;
		if (p->last_pop_ns != 0) {
			p->paired_ns += now - p->last_pop_ns;
			if (p->producer_cpu != cpu)
				p->split_ns += now - p->last_pop_ns;
		}
		p->last_pop_ns = now;
		p->head = (p->head + 1) % p->cap;
		p->len--;
		if (p->producer_waits && p->cap - p->len >= half(p))
			pthread_cond_signal(&p->not_full);
	}
	pthread_mutex_unlock(&p->lock);
	return b;
}

/* Steps over a block of sz bytes; returns its offset in the ring. */
static size_t floor_step(floor_at *a, size_t sz)
{
	sz = (sz + 15) & ~(size_t)15;
	if (a->pos + sz > opt_floor) {
		a->total += opt_floor - a->pos;
		a->pos = 0;
	}
	size_t at = a->pos;
	a->pos += sz;
	a->total += sz;
	return at;
}

static void *floor_make(pair *p, size_t sz)
{
	size_t at = floor_step(&p->made, sz);
	while (p->made.total - atomic_load_explicit(&p->gone, memory_order_acquire) > opt_floor) {
		p->floor_waits++;
		sched_yield();
	}
	return p->ring_mem + at;
}

static void *bench_malloc(pair *p, size_t sz)
{
	return opt_floor ? floor_make(p, sz) : malloc(sz);
}

static void *producer(void *arg)
{
	pair *p = arg;
	bu_rng rng = bu_rng_make(p->seed, 1);
	bu_gate_wait(&gate);
	uint64_t cpu0 = bu_thread_cpu_ns();
	uint64_t left = p->objects;
	while (left) {
		size_t n = left < opt_batch ? (size_t)left : (size_t)opt_batch;
		batch *b = bench_malloc(p, sizeof(batch) + n * sizeof(void *));
		BU_CHECK(b, "malloc of a batch failed");
		b->count = n;
		for (size_t i = 0; i < n; i++) {
			size_t sz = bu_rng_size_log(&rng, opt_min, opt_max);
			unsigned char *blk = bench_malloc(p, sz);
			BU_CHECK(blk, "malloc(%zu) failed", sz);
			/* The consumer checks these, so a block handed out twice or
			 * overwritten by allocator metadata shows up as an error. */
			blk[0] = (unsigned char)sz;
			blk[sz - 1] = (unsigned char)(sz >> 3);
			b->blocks[i] = blk;
		}
		push(p, b);
		left -= n;
	}
	pthread_mutex_lock(&p->lock);
	p->done = 1;
	pthread_cond_broadcast(&p->not_empty);
	pthread_mutex_unlock(&p->lock);
	finish(cpu0);
	return NULL;
}

static void *consumer(void *arg)
{
	pair *p = arg;
	/* The consumer re-derives each size from the producer's PRNG stream,
	 * which consumes the blocks in the same order. */
	bu_rng rng = bu_rng_make(p->seed, 1);
	bu_gate_wait(&gate);
	uint64_t cpu0 = bu_thread_cpu_ns();
	uintptr_t *win = opt_pages ? bu_map(PAGE_WINDOW * sizeof *win) : NULL;
	size_t wn = 0;
	batch *b;
	floor_at gone = { 0, 0 };
	while ((b = pop(p))) {
		if (opt_floor)
			floor_step(&gone, sizeof(batch) + b->count * sizeof(void *));
		for (size_t i = 0; i < b->count; i++) {
			size_t sz = bu_rng_size_log(&rng, opt_min, opt_max);
			unsigned char *blk = b->blocks[i];
			if (blk[0] != (unsigned char)sz || blk[sz - 1] != (unsigned char)(sz >> 3))
				p->bad++;
			if (win) {
				win[wn++] = (uintptr_t)blk >> 12;
				if (wn == PAGE_WINDOW) {
					count_pages(win);
					wn = 0;
				}
			}
			if (opt_floor)
				floor_step(&gone, sz);
			else
				free(blk);
		}
		if (opt_floor)
			atomic_store_explicit(&p->gone, gone.total, memory_order_release);
		else
			free(b);
	}
	finish(cpu0);
	return NULL;
}

typedef struct {
	pair *p;
	int is_consumer;
} role;

static void *run_role(void *arg)
{
	role *r = arg;
	return r->is_consumer ? consumer(r->p) : producer(r->p);
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Producer threads allocate random-size blocks and hand them to consumer\n"
		      "threads that free them: cross-thread frees dominate. Reports blocks\n"
		      "(malloc+free pairs) per second for a fixed total of blocks.",
		      options);
	BU_CHECK(opt_threads >= 1 && opt_threads <= 2048, "--threads must be 1..2048");
	BU_CHECK(opt_min >= 2 && opt_min <= opt_max, "need 2 <= --min-size <= --max-size");
	BU_CHECK(opt_batch >= 1 && opt_queue >= 1, "--batch and --queue must be >= 1");
	/* A ring that cannot hold two whole batches would leave the producer
	 * waiting for space the consumer frees only after the batch is pushed. */
	BU_CHECK(opt_floor == 0 || opt_floor >= 2 * (32 + opt_batch * (sizeof(void *) + opt_max + 16)),
		 "--floor must hold two whole batches");

	size_t n = (size_t)opt_threads;
	pair *pairs = bu_map(n * sizeof(pair));
	role *roles = bu_map(2 * n * sizeof(role));
	for (size_t i = 0; i < n; i++) {
		pair *p = &pairs[i];
		pthread_mutex_init(&p->lock, NULL);
		pthread_cond_init(&p->not_empty, NULL);
		pthread_cond_init(&p->not_full, NULL);
		p->cap = (size_t)opt_queue;
		p->ring = bu_map(p->cap * sizeof(batch *));
		p->ring_cpu = bu_map(p->cap * sizeof(int));
		if (opt_floor)
			p->ring_mem = bu_map((size_t)opt_floor);
		p->objects = opt_objects / n + (i < opt_objects % n ? 1 : 0);
		p->seed = opt_seed * 1000003u + i;
		roles[2 * i] = (role){ p, 0 };
		roles[2 * i + 1] = (role){ p, 1 };
	}
	gate.expected = 2 * n;
	pthread_barrier_init(&finished, NULL, (unsigned)(2 * n));

	bu_run_threads(2 * n, run_role, roles, sizeof(role));
	uint64_t t1 = bu_now_ns();
	uint64_t t0 = gate.start_ns;
	if (!opt_time_setup)
		t1 = finished_ns;

	uint64_t bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += pairs[i].bad;
	BU_CHECK(bad == 0, "%" PRIu64 " blocks came back corrupted", bad);
	uint64_t floor_waits = 0, cross_cpu = 0, batches = 0, split_ns = 0, paired_ns = 0;
	for (size_t i = 0; i < n; i++) {
		floor_waits += pairs[i].floor_waits;
		cross_cpu += pairs[i].cross_cpu;
		split_ns += pairs[i].split_ns;
		paired_ns += pairs[i].paired_ns;
		batches += (pairs[i].objects + opt_batch - 1) / opt_batch;
	}

	bu_result("threads", "%" PRIu64, opt_threads);
	bu_result("timed", "%s", opt_time_setup ? "all" : "steady");
	/* Producers' and consumers' CPU time (the queue's locking included):
	 * unlike the rate, not affected by time the threads slept or that other
	 * processes took from them. */
	bu_result("cpu_ns_per_op", "%.1f", (double)atomic_load(&threads_cpu_ns) / (double)opt_objects);
	/* Where the scheduler put each pair moves the rate more than the
	 * allocator does: with more threads than CPUs, a pair whose producer
	 * and consumer share a CPU hands its blocks over in that CPU's caches,
	 * a pair split across two CPUs moves every block between cores. 2 CPUs,
	 * --threads=2, 40 interleaved runs each on a loaded machine, medians:
	 * each pair on its own CPU 47 (ebbmalloc) and 45 (mimalloc) CPU ns an
	 * operation; runs with 5% or more of a pair's batches crossing, 71 and
	 * 116. The kernel picks the placement at run time, so a row's
	 * repetitions can land in different modes; this figure tells them
	 * apart. */
	bu_result("cross_cpu_batches", "%.3f",
		  batches ? (double)cross_cpu / (double)batches : 0.0);
	/* The same by time. A copy of this bench that logged every thread's
	 * CPU at each push and pop found, on a quiet machine, ebbmalloc's and
	 * mimalloc's pairs split for 0.162 and 0.163 of their runs (130 runs
	 * each), while cross_cpu_batches read above 0.05 in more of
	 * ebbmalloc's. */
	bu_result("split_time", "%.3f", paired_ns ? (double)split_ns / (double)paired_ns : 0.0);
	if (opt_floor)
		bu_result("floor_waits", "%" PRIu64, floor_waits);
	if (opt_pages && atomic_load(&pages_windows) != 0)
		bu_result("pages_per_2k_blocks", "%.1f",
			  (double)atomic_load(&pages_sum) / (double)atomic_load(&pages_windows));
	bu_result_rate("xmalloc", opt_objects, t1 - t0);
	bu_result_print("xmalloc");
	return 0;
}
