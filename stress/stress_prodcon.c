/*
 * stress_prodcon: one producer thread allocates, one consumer thread frees
 * (the xmalloc-test pattern), through a bounded queue.
 *
 * The producer mallocs --objects objects of a few small sizes (16 to 512 B),
 * fills each with a pattern and queues it; the consumer checks the pattern
 * and the usable size and frees it. Every object is freed by a thread other
 * than the one that made it, which is where an allocator that does not send
 * remotely freed memory back to where it can be reused grows without bound.
 *
 * Memory: live bytes are counted exactly (the producer adds each object's
 * size after malloc, the consumer subtracts it after free, one atomic
 * counter; a second figure counts usable sizes). A sampler thread reads the
 * resident set from /proc/self/statm every --sample-ms; at the end ru_maxrss
 * is read too. The check:
 *     peak RSS growth over the start < 2 x peak live bytes + 64 MiB
 * (--rss-check 0 reports without failing: under a sanitizer the shadow
 * memory makes the RSS meaningless).
 */
#include "stress_util.h"

#include <sched.h>

static uint64_t opt_objects = 100000000;
static uint64_t opt_queue = 4096;
static double opt_sample_ms = 5;
static bool opt_rss_check = true;
static size_t opt_slack = 64 * ST_MIB;

static const uint32_t sizes[16] = {16, 16, 24, 32, 32, 48, 64, 64, 96, 128, 160, 200, 256, 320, 384, 512};

typedef struct item {
	unsigned char *p;
	uint64_t seq;
	uint32_t size;
	uint32_t usable;
} item;

static item *ring;
static size_t ring_mask;
#define PUBLISH_EVERY 32

static struct {
	_Alignas(64) atomic_size_t head; /* next slot the producer fills (published) */
	_Alignas(64) atomic_size_t tail; /* next slot the consumer empties (published) */
	_Alignas(64) atomic_uint_fast64_t live; /* requested bytes << 32 | usable bytes */
	_Alignas(64) atomic_int producer_done;
	atomic_int sampler_stop;
	atomic_size_t rss_peak;
} q;

static uint64_t peak_req, peak_usable; /* written by the producer only */
static uint64_t produced_objects, consumed_objects;
static uint64_t producer_waits, consumer_waits;

static void *producer(void *arg)
{
	(void)arg;
	st_tid = 0;
	st_rng r;
	st_rng_init(&r, st_seed, 1);
	size_t head = 0, tail_seen = 0, published = 0;
	const size_t cap = ring_mask + 1;
	uint64_t rbits = 0;
	int rleft = 0;
	for (uint64_t n = 0; n < opt_objects; n++) {
		st_op = n;
		if (head - tail_seen >= cap) {
			atomic_store_explicit(&q.head, head, memory_order_release);
			published = head;
			while (head - (tail_seen = atomic_load_explicit(&q.tail, memory_order_acquire)) >= cap) {
				producer_waits++;
				sched_yield();
			}
		}
		if (rleft == 0) {
			rbits = st_rand(&r);
			rleft = 16;
		}
		uint32_t size = sizes[rbits & 15];
		rbits >>= 4;
		rleft--;
		unsigned char *p = (unsigned char *)ebb_malloc(size);
		if (!p)
			ST_FAIL("malloc(%u) returned NULL after %" PRIu64 " objects", size, n);
		if ((uintptr_t)p % ST_MIN_ALIGN)
			ST_FAIL("malloc(%u) returned %p, not 16-byte aligned", size, (void *)p);
		size_t usable = ebb_malloc_usable_size(p);
		if (usable < size)
			ST_FAIL("malloc(%u) returned %p with usable size %zu", size, (void *)p, usable);
		uint64_t v = atomic_fetch_add_explicit(&q.live, ((uint64_t)size << 32) | usable, memory_order_relaxed) +
		             (((uint64_t)size << 32) | usable);
		if ((v >> 32) > peak_req)
			peak_req = v >> 32;
		if ((v & 0xffffffffu) > peak_usable)
			peak_usable = v & 0xffffffffu;
		st_fill(p, 0, size, st_key(p, size, n));
		item *it = &ring[head & ring_mask];
		it->p = p;
		it->seq = n;
		it->size = size;
		it->usable = (uint32_t)usable;
		head++;
		if (head - published >= PUBLISH_EVERY) {
			atomic_store_explicit(&q.head, head, memory_order_release);
			published = head;
			if ((head & 4095) == 0)
				st_tick();
		}
	}
	atomic_store_explicit(&q.head, head, memory_order_release);
	produced_objects = head;
	atomic_store_explicit(&q.producer_done, 1, memory_order_release);
	return NULL;
}

static void *consumer(void *arg)
{
	(void)arg;
	st_tid = 1;
	size_t tail = 0, head_seen = 0, published = 0;
	for (;;) {
		if (tail == head_seen) {
			atomic_store_explicit(&q.tail, tail, memory_order_release);
			published = tail;
			for (;;) {
				int done = atomic_load_explicit(&q.producer_done, memory_order_acquire);
				head_seen = atomic_load_explicit(&q.head, memory_order_acquire);
				if (head_seen != tail || done)
					break;
				consumer_waits++;
				sched_yield();
			}
			if (head_seen == tail)
				break; /* producer done and everything consumed */
		}
		item it = ring[tail & ring_mask];
		st_op = it.seq;
		if (it.seq != tail)
			ST_FAIL("queue corrupted: slot %zu holds object %" PRIu64, tail, it.seq);
		size_t usable = ebb_malloc_usable_size(it.p);
		if (usable != it.usable)
			ST_FAIL("object %" PRIu64 " (%p, %u bytes): usable size %u in the producer, %zu in the consumer",
			        it.seq, (void *)it.p, it.size, it.usable, usable);
		uint64_t key = st_key(it.p, it.size, it.seq);
		size_t bad = st_find_bad(it.p, 0, it.size, key);
		if (bad != SIZE_MAX) {
			(void)atomic_exchange(&st_failing, 1);
			fprintf(stderr, "\n%s: FAIL: object %" PRIu64 " at %p (%u bytes) damaged at byte %zu\n", st_prog,
			        it.seq, (void *)it.p, it.size, bad);
			st_describe_damage(it.p, 0, it.size, key, bad);
			ST_FAIL("object %" PRIu64 " damaged between producer and consumer", it.seq);
		}
		if ((it.seq & 7) == 0)
			ebb_free_sized(it.p, it.size);
		else
			ebb_free(it.p);
		atomic_fetch_sub_explicit(&q.live, ((uint64_t)it.size << 32) | it.usable, memory_order_relaxed);
		tail++;
		if (tail - published >= PUBLISH_EVERY) {
			atomic_store_explicit(&q.tail, tail, memory_order_release);
			published = tail;
			if ((tail & 4095) == 0)
				st_tick();
		}
	}
	consumed_objects = tail;
	return NULL;
}

static void *sampler(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&q.sampler_stop, memory_order_acquire)) {
		size_t rss = st_rss_bytes();
		if (rss > atomic_load_explicit(&q.rss_peak, memory_order_relaxed))
			atomic_store_explicit(&q.rss_peak, rss, memory_order_relaxed);
		st_sleep_ms(opt_sample_ms);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	static const st_opt opts[] = {
		{"objects", ST_OPT_COUNT, &opt_objects, "objects handed from producer to consumer"},
		{"queue", ST_OPT_COUNT, &opt_queue, "queue capacity (rounded up to a power of two)"},
		{"sample-ms", ST_OPT_DOUBLE, &opt_sample_ms, "RSS sampling period"},
		{"rss-check", ST_OPT_BOOL, &opt_rss_check, "fail if peak RSS growth >= 2 x peak live + slack"},
		{"slack", ST_OPT_SIZE, &opt_slack, "the + term of the RSS bound"},
	};
	st_parse_args(argc, argv, "stress_prodcon",
	              "One producer mallocs, one consumer frees, through a bounded queue; checks contents and RSS.",
	              opts, sizeof opts / sizeof opts[0]);
	if (opt_queue < PUBLISH_EVERY * 2 || opt_queue > ((size_t)1 << 22) || opt_sample_ms <= 0) {
		fprintf(stderr, "stress_prodcon: bad arguments (try --help)\n");
		return 2;
	}
	st_print_config(argc, argv);
	size_t cap = st_next_pow2((size_t)opt_queue);
	ring_mask = cap - 1;
	ring = (item *)calloc(cap, sizeof *ring);
	ST_CHECK(ring != NULL, "out of memory for the queue");
	memset(ring, 0, cap * sizeof *ring); /* resident before the baseline */

	pthread_t ts, tp, tc;
	st_thread_create(&ts, sampler, NULL);
	st_sleep_ms(20);
	size_t rss0 = st_rss_bytes();
	atomic_store(&q.rss_peak, rss0);
	st_watchdog_start();
	double t0 = st_now();
	st_thread_create(&tc, consumer, NULL);
	st_thread_create(&tp, producer, NULL);
	st_thread_join(tp);
	st_thread_join(tc);
	double elapsed = st_now() - t0;
	atomic_store_explicit(&q.sampler_stop, 1, memory_order_release);
	st_thread_join(ts);
	st_watchdog_end();
	size_t rss_end = st_rss_bytes();
	size_t peak_sampled = atomic_load(&q.rss_peak);
	size_t maxrss = st_maxrss_bytes();

	ST_CHECK(produced_objects == opt_objects && consumed_objects == opt_objects,
	         "produced %" PRIu64 ", consumed %" PRIu64 ", expected %" PRIu64, produced_objects, consumed_objects,
	         opt_objects);
	uint64_t live_end = atomic_load(&q.live);
	ST_CHECK(live_end == 0, "live byte counter is %" PRIu64 " at the end", live_end);

	size_t peak = peak_sampled > maxrss ? peak_sampled : maxrss;
	size_t growth = peak > rss0 ? peak - rss0 : 0;
	double bound = 2.0 * (double)peak_req + (double)opt_slack;
	bool ok = (double)growth < bound;
	printf("%s: objects %" PRIu64 ", seconds %.2f (%.1f M objects/s), queue %zu, producer waits %" PRIu64
	       ", consumer waits %" PRIu64 "\n",
	       st_prog, opt_objects, elapsed, (double)opt_objects / elapsed / 1e6, cap, producer_waits, consumer_waits);
	printf("%s: peak live bytes %" PRIu64 " requested (%.2f MiB), %" PRIu64 " usable (%.2f MiB)\n", st_prog, peak_req,
	       (double)peak_req / ST_MIB, peak_usable, (double)peak_usable / ST_MIB);
	printf("%s: RSS at start %.1f MiB, peak %.1f MiB (sampled every %g ms %.1f MiB, ru_maxrss %.1f MiB), at end "
	       "%.1f MiB\n",
	       st_prog, (double)rss0 / ST_MIB, (double)peak / ST_MIB, opt_sample_ms, (double)peak_sampled / ST_MIB,
	       (double)maxrss / ST_MIB, (double)rss_end / ST_MIB);
	printf("%s: peak RSS growth %.1f MiB, bound 2 x %.2f MiB + %.0f MiB = %.1f MiB: %s%s\n", st_prog,
	       (double)growth / ST_MIB, (double)peak_req / ST_MIB, (double)opt_slack / ST_MIB, bound / ST_MIB,
	       ok ? "PASS" : "FAIL", opt_rss_check ? "" : " (not enforced: --rss-check 0)");
	struct ebb_stats s;
	ebb_stats_get(&s);
	st_stats_print_short(&s, "end");
	free(ring);
	if (!ok && opt_rss_check) {
		fprintf(stderr, "%s: FAIL: peak RSS grew by %.1f MiB, more than 2 x peak live (%.2f MiB) + %.0f MiB "
		        "(seed %" PRIu64 ")\n",
		        st_prog, (double)growth / ST_MIB, (double)peak_req / ST_MIB, (double)opt_slack / ST_MIB, st_seed);
		return 1;
	}
	st_log("PASS");
	return 0;
}
