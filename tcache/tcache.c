/* tcache.c: thread cache slow paths: creation, refill, flush, trimming,
 * thread exit; and the part of free() that is not the fast path. */
#include "tcache/tcache.h"

#include <errno.h>
#include <string.h>

#include "core/atomic.h"
#include "core/background.h"
#include "core/central.h"
#include "core/init.h"
#include "core/large.h"
#include "core/meta.h"
#include "core/options.h"
#include "core/report.h"
#include "os/os.h"

#define TCACHE_STATIC_INIT                                                                 \
	{                                                                                  \
		.head = {[0 ... EBB_NUM_CLASSES - 1] = EBB_LIST_END},                     \
	}

/* Never written: every bin empty (malloc misses) and full (free misses). */
tcache_t tcache_empty = TCACHE_STATIC_INIT;
static tcache_t tcache_dead = TCACHE_STATIC_INIT;

__thread tcache_t *tcache_tls __attribute__((tls_model("initial-exec"))) = &tcache_empty;

/* The list of live caches (for stats) and the pool of recycled ones. */
static ebb_lock_t tcache_list_lock = EBB_LOCK_INITIALIZER;
static tcache_t *tcache_live, *tcache_pool;
static uint64_t tcache_live_count;
static uint64_t tcache_exited_refills, tcache_exited_flushes;

/* Incremental trimming: every TRIM_EVENTS slow-path events, TRIM_BINS bins. */
#define TRIM_EVENTS 32u
#define TRIM_BINS 8u

/* ---------------------------------------------------------------------------
 * Without a cache (before it exists, after the thread's exit hook ran, or
 * with tcache_max_bytes=0): straight to the central lists, one block at a time.
 * ------------------------------------------------------------------------- */
static void *alloc_uncached(unsigned cls)
{
	void *b;
	if (!central_refill(os_cpu_id(), cls, 1, false, &b))
		return NULL;
	freelist_clear_mark(b);
	return b;
}

static void free_uncached(void *p, unsigned cls)
{
	freelist_set_next(p, EBB_LIST_END, freelist_secret);
	freelist_set_mark(p, freelist_mark);
	central_flush(os_cpu_id(), cls, p, 1);
}

/* p carries the double-free mark: it is free already. Find where, for the
 * report (the thread's own bin, or its span's free list); a block that is in
 * another thread's cache or a transfer batch is reported all the same. */
static EBB_COLD void double_free(tcache_t *tc, void *p, unsigned cls)
{
	const char *why = "double free (the block is already free)";
	if (tc != NULL) {
		void *b = tc->head[cls];
		for (uint32_t i = 0; i < tc->max[cls] - tc->avail[cls] && freelist_link_ok(b) && b != EBB_LIST_END; i++) {
			if (b == p) {
				why = "double free (the block is already in this thread's cache)";
				break;
			}
			b = freelist_decode(b, tc->secret);
		}
	}
	if (central_span_holds_free(p))
		why = "double free (the block is already free in its span)";
	report_bad_pointer("free", p, why);
}

/* ---------------------------------------------------------------------------
 * Bins
 * ------------------------------------------------------------------------- */
static uint32_t bin_count(const tcache_t *tc, unsigned cls)
{
	return tc->max[cls] - tc->avail[cls];
}

/* Raises the bin's bound by one batch if the cache's byte budget allows.
 * A bin's first batch is granted whatever the budget says (it still counts
 * against it): without it a class that comes into use after the budget is
 * spent would go to the central lists one block at a time, for every malloc
 * and free (measured on bench/churn with sizes to 32 KiB: 2x the
 * instructions). The cache is thus bounded by the budget plus one batch (at
 * most 64 KiB) per class in use. */
static void bin_grow(tcache_t *tc, unsigned cls)
{
	const size_class_t *k = &size_classes[cls];
	uint64_t add = (uint64_t)k->batch * k->size;
	uint64_t limit = (uint64_t)options_get(OPT_TCACHE_MAX_BYTES);
	if (tc->max[cls] + k->batch > k->bin_cap || limit == 0 ||
	    (tc->max[cls] != 0 && tc->budget + add > limit))
		return;
	tc->max[cls] += k->batch;
	tc->avail[cls] += k->batch;
	tc->budget += add;
}

static void publish(tcache_t *tc)
{
	uint64_t bytes = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++)
		bytes += (uint64_t)bin_count(tc, c) * size_classes[c].size;
	atomic_store_u64(&tc->published, bytes);
}

/* Gives the first n blocks of the bin to the central lists. */
/* Gives the bin's first `good` blocks (head .. last) to the central lists
 * and drops the rest (leaked: after a report none of it can be trusted). */
static void bin_cut(tcache_t *tc, unsigned cls, void *head, void *last, uint32_t good)
{
	if (good) {
		freelist_set_next(last, EBB_LIST_END, tc->secret);
		central_flush(os_cpu_id(), cls, head, good);
	}
	tc->head[cls] = EBB_LIST_END;
	tc->avail[cls] = tc->max[cls];
}

static void bin_flush(tcache_t *tc, unsigned cls, uint32_t n)
{
	uint64_t secret = tc->secret;
	void *head = tc->head[cls], *last = head, *prev = NULL;
	for (uint32_t i = 1;; i++) {
		/* Every block leaving a bin must still be free (see tcache_alloc). */
		if (EBB_UNLIKELY(!freelist_mark_kept(last, freelist_mark_of(last, tc->mark)))) {
			freelist_lost_mark("free", last);
			bin_cut(tc, cls, head, prev, i - 1);
			return;
		}
		if (i == n)
			break;
		void *next = freelist_decode(last, secret);
		if (EBB_UNLIKELY(!freelist_link_ok(next) || next == EBB_LIST_END)) {
			freelist_corrupt("free", last);
			/* Give back what was walked; drop (leak) the rest of the bin. */
			bin_cut(tc, cls, head, last, i);
			return;
		}
		prev = last;
		last = next;
	}
	void *rest = freelist_decode(last, secret);
	freelist_set_next(last, EBB_LIST_END, secret);
	tc->head[cls] = rest;
	tc->avail[cls] += n;
	atomic_store_u64(&tc->flushes, tc->flushes + 1); /* read by ebb_stats_get */
	central_flush(os_cpu_id(), cls, head, n);
}

/* Trims one bin: under `all`, empties it; otherwise, if it has not missed
 * since its last trim (its stock outlived its use), gives back half of its
 * blocks and lowers its bound by a quarter, down to one batch. */
static void bin_trim(tcache_t *tc, unsigned cls, bool all)
{
	const size_class_t *k = &size_classes[cls];
	uint32_t count = bin_count(tc, cls);
	if (all) {
		if (count)
			bin_flush(tc, cls, count);
	} else if (tc->misses[cls] == 0 && tc->max[cls] > 0) {
		if (count)
			bin_flush(tc, cls, (count + 1) / 2);
		uint32_t new_max = tc->max[cls] - tc->max[cls] / 4;
		if (new_max < k->batch)
			new_max = tc->max[cls] < k->batch ? tc->max[cls] : k->batch;
		count = bin_count(tc, cls);
		if (new_max < count)
			new_max = count;
		tc->budget -= (uint64_t)(tc->max[cls] - new_max) * k->size;
		tc->max[cls] = new_max;
		tc->avail[cls] = new_max - count;
	}
	tc->misses[cls] = 0;
}

static void trim_all(tcache_t *tc, bool all)
{
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++)
		bin_trim(tc, c, all);
	publish(tc);
}

/* Called at every refill and flush: the cache's clock for trimming. */
static void slow_event(tcache_t *tc)
{
	uint64_t epoch = background_trim_epoch();
	if (EBB_UNLIKELY(epoch != tc->trim_epoch)) {
		tc->trim_epoch = epoch;
		trim_all(tc, false);
		return;
	}
	if (++tc->events % TRIM_EVENTS != 0)
		return;
	for (unsigned i = 0; i < TRIM_BINS; i++) {
		tc->trim_cursor = tc->trim_cursor % (EBB_NUM_CLASSES - 1) + 1;
		bin_trim(tc, tc->trim_cursor, false);
	}
	publish(tc);
	background_maybe_start();
}

/* ---------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------- */
static void tcache_thread_exit(void *arg)
{
	tcache_t *tc = arg;
	trim_all(tc, true);
	tcache_tls = &tcache_dead;
	lock_acquire(&tcache_list_lock);
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		tcache_live = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	tcache_live_count--;
	tcache_exited_refills += tc->refills;
	tcache_exited_flushes += tc->flushes;
	tc->next = tcache_pool;
	tcache_pool = tc;
	lock_release(&tcache_list_lock);
}

/* The thread-exit hook is registered by the first cache created (once per
 * process; pthread_key_create does not allocate). */
static uint32_t tcache_hook_state; /* 0 none, 1 registering, 2 ready, 3 failed */

static bool tcache_hook_ready(void)
{
	uint32_t s = atomic_load_u32_acquire(&tcache_hook_state);
	if (EBB_LIKELY(s == 2))
		return true;
	if (s == 0 && atomic_cas_u32(&tcache_hook_state, 0, 1)) {
		bool ok = os_thread_exit_hook(tcache_thread_exit);
		atomic_store_u32_release(&tcache_hook_state, ok ? 2 : 3);
		return ok;
	}
	while ((s = atomic_load_u32_acquire(&tcache_hook_state)) == 1)
		os_yield();
	return s == 2;
}

static tcache_t *tcache_create(void)
{
	/* Without the exit hook a cache's blocks would be stranded when its
	 * thread ends: work uncached instead. */
	if (options_get(OPT_TCACHE_MAX_BYTES) == 0 || !tcache_hook_ready())
		return NULL;
	lock_acquire(&tcache_list_lock);
	tcache_t *tc = tcache_pool;
	if (tc)
		tcache_pool = tc->next;
	lock_release(&tcache_list_lock);
	if (tc == NULL && (tc = meta_alloc(sizeof(tcache_t), EBB_CACHELINE)) == NULL)
		return NULL;
	memset(tc, 0, sizeof *tc);
	for (unsigned c = 0; c < EBB_NUM_CLASSES; c++) {
		tc->head[c] = EBB_LIST_END;
		tc->magic[c] = size_classes[c].div_magic;
	}
	tc->secret = freelist_secret;
	tc->mark = freelist_mark;
	tc->trim_epoch = background_trim_epoch();
	lock_acquire(&tcache_list_lock);
	tc->next = tcache_live;
	if (tc->next)
		tc->next->prev = tc;
	tcache_live = tc;
	tcache_live_count++;
	lock_release(&tcache_list_lock);
	/* TLS first: arming the exit hook may allocate (pthread_setspecific for
	 * high key numbers), and that allocation must find this cache. */
	tcache_tls = tc;
	os_thread_exit_set(tc);
	return tc;
}

/* The calling thread's cache, created on first use; NULL if it has none. */
static tcache_t *tcache_get(void)
{
	tcache_t *tc = tcache_self();
	if (EBB_LIKELY(tc != &tcache_empty))
		return tc == &tcache_dead ? NULL : tc;
	return tcache_create();
}

/* ---------------------------------------------------------------------------
 * malloc slow path
 * ------------------------------------------------------------------------- */
static void *tcache_refill(tcache_t *tc, unsigned cls)
{
	void *bad = tc->head[cls];
	if (EBB_UNLIKELY(bad != EBB_LIST_END)) {
		if (((uintptr_t)bad & (EBB_MIN_ALIGN - 1)) != 0) {
			/* A misaligned head: the last block taken from this bin carried
			 * a corrupted link. That block is the program's now and unknown
			 * here; the report names the value found. */
			report_bad_pointer("malloc", bad,
					   "a free-list link was overwritten with this value (a write into a "
					   "freed block of this size)");
		} else {
			/* The head lost its free mark: a copy of it was handed out. */
			freelist_lost_mark("malloc", bad);
		}
		tc->head[cls] = EBB_LIST_END; /* the rest of the bin is leaked */
		tc->avail[cls] = tc->max[cls];
	}
	tc->misses[cls]++;
	bin_grow(tc, cls);
	if (tc->max[cls] == 0) /* no room in the byte budget */
		return alloc_uncached(cls);
	void *list;
	unsigned n = central_refill(os_cpu_id(), cls, size_classes[cls].batch, true, &list);
	if (n == 0)
		return NULL;
	atomic_store_u64(&tc->refills, tc->refills + 1); /* read by ebb_stats_get */
	tc->head[cls] = freelist_decode(list, tc->secret);
	tc->avail[cls] = tc->max[cls] - (n - 1);
	freelist_clear_mark(list);
	slow_event(tc);
	return list;
}

void *tcache_alloc_slow(size_t size)
{
	if (EBB_UNLIKELY(!init_ensure())) {
		errno = ENOMEM;
		return NULL;
	}
	if (size > EBB_SMALL_MAX)
		return large_alloc(size, EBB_MIN_ALIGN, false);
	unsigned cls = size_class_of(size);
	tcache_t *tc = tcache_get();
	if (tc == NULL)
		return alloc_uncached(cls);
	/* The cache may have been created just now: its bin may not be empty
	 * (an allocation during creation refilled it). */
	void *b = tc->head[cls];
	if (((uintptr_t)b & (EBB_MIN_ALIGN - 1)) == 0 && freelist_mark_kept(b, freelist_mark_of(b, tc->mark))) {
		tc->head[cls] = freelist_decode(b, tc->secret);
		tc->avail[cls]++;
		freelist_clear_mark(b);
		return b;
	}
	return tcache_refill(tc, cls);
}

/* ---------------------------------------------------------------------------
 * free slow path
 * ------------------------------------------------------------------------- */
static void free_small_slow(void *p, unsigned cls)
{
	bool first = tcache_self() == &tcache_empty;
	tcache_t *tc = tcache_get();
	if (EBB_UNLIKELY(freelist_marked(p, freelist_mark))) {
		double_free(tc, p, cls);
		return;
	}
	/* A thread's first free goes back to its span, not into the cache it
	 * creates: it is typically of an object handed to the thread by its
	 * creator, allocated next to the objects handed to its siblings, and
	 * reusing it here would have the siblings write to one cache line for
	 * their whole lives (passive false sharing, bench/cache_scratch). */
	if (tc == NULL || first) {
		free_uncached(p, cls);
		return;
	}
	if (tc->avail[cls] == 0) {
		if (tc->max[cls] == 0)
			bin_grow(tc, cls);
		if (tc->max[cls] == 0) {
			free_uncached(p, cls);
			return;
		}
		if (tc->avail[cls] == 0) {
			/* Full: give back half, in whole batches where possible. */
			uint32_t batch = size_classes[cls].batch, count = bin_count(tc, cls);
			uint32_t n = (count / 2 + batch - 1) / batch * batch;
			bin_flush(tc, cls, n < count ? n : count);
			slow_event(tc);
		}
	}
	freelist_set_next(p, tc->head[cls], tc->secret);
	freelist_set_mark(p, tc->mark);
	tc->head[cls] = p;
	tc->avail[cls]--;
}

void tcache_free_slow(void *p)
{
	if (p == NULL)
		return;
	if (registry_get(p) == REG_HEADER) {
		superblock_t *sb = superblock_of(p);
		unsigned page = superblock_page_index(p);
		unsigned cls = sb->page_class[page];
		if (cls != 0) {
			uint64_t off = (uintptr_t)p - (uintptr_t)superblock_page_addr(sb, sb->pagemap[page]);
			if (EBB_UNLIKELY(off * size_classes[cls].div_magic >= size_classes[cls].div_magic)) {
				report_bad_pointer("free", p, "not the start of a block");
				return;
			}
			free_small_slow(p, cls);
			return;
		}
	}
	large_free_checked(p, "free");
}

/* ---------------------------------------------------------------------------
 * Requests from other layers, stats, fork
 * ------------------------------------------------------------------------- */
void tcache_flush_self(void)
{
	tcache_t *tc = tcache_self();
	if (tc != &tcache_empty && tc != &tcache_dead)
		trim_all(tc, true);
}

void tcache_stats(uint64_t *bytes, uint64_t *threads, uint64_t *refills, uint64_t *flushes)
{
	tcache_t *self = tcache_self();
	if (self != &tcache_empty && self != &tcache_dead)
		publish(self);
	lock_acquire(&tcache_list_lock);
	*threads = tcache_live_count;
	*refills = tcache_exited_refills;
	*flushes = tcache_exited_flushes;
	*bytes = 0;
	for (tcache_t *tc = tcache_live; tc; tc = tc->next) {
		*bytes += atomic_load_u64(&tc->published);
		*refills += atomic_load_u64(&tc->refills);
		*flushes += atomic_load_u64(&tc->flushes);
	}
	lock_release(&tcache_list_lock);
}

void tcache_prefork(void)
{
	lock_acquire(&tcache_list_lock);
}

void tcache_postfork_parent(void)
{
	lock_release(&tcache_list_lock);
}

void tcache_postfork_child(void)
{
	/* Only the forking thread exists in the child: the other caches' blocks
	 * are lost to it (a bounded, one-time leak); drop them from the list so
	 * the stats speak of this process only. */
	lock_init(&tcache_list_lock);
	tcache_t *self = tcache_self();
	tcache_live = NULL;
	tcache_live_count = 0;
	if (self != &tcache_empty && self != &tcache_dead) {
		self->next = self->prev = NULL;
		tcache_live = self;
		tcache_live_count = 1;
	}
}
