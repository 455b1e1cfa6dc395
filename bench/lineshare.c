/*
 * lineshare: how often malloc hands a thread a block on a cache line whose
 * previous block went to another thread (a measuring shim, not a benchmark).
 *
 * Preloaded in front of the allocator under test, it wraps malloc only
 * (free, calloc and realloc go straight to the allocator) and keeps, for
 * each 64-byte line a block starts on (a hashed table of 2^24 slots, so a
 * collision now and then counts as a line of its own), which thread got a
 * block there last and when. At exit it prints, of all mallocs:
 *   other   the line's previous block went to another thread (at any time);
 *   window  ... within the last LS_WINDOW_NS nanoseconds (default 20 000):
 *           lines that two threads running at once write, the false sharing
 *           that costs a cross-core line transfer in both mallocs;
 *   same    the line's previous block went to this thread.
 * An allocator that gives each thread its own pages (mimalloc) reads about 0
 * for both; one whose blocks pass between threads' caches through shared
 * lists (ebbmalloc's per-CPU central lists) does not. The counts are a
 * statistic: the table is written with relaxed atomics and no lock, and the
 * clock is read once per 64 mallocs of a thread (about 2 us at 30 Mops/s).
 *
 * Build and use (not built by CMake: it is a tool, run by hand):
 *   cc -O2 -shared -fPIC -o /tmp/lineshare.so bench/lineshare.c -ldl
 *   LD_PRELOAD="/tmp/lineshare.so build/libebbmalloc.so" chrt -f 1 \
 *       build/bench/bench_larson --threads=2 --ops=10m
 * chrt -f 1 (as root) keeps other processes off the two CPUs, so the
 * threads run at the same time as they would on an idle machine.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define LS_SLOTS (1u << 24)
#define LS_TIME_BITS 48
#define LS_TIME_MASK ((1ull << LS_TIME_BITS) - 1)

/* thread tag << 48 | time in ns (low 48 bits); 0: no block seen yet. */
static _Atomic uint64_t ls_table[LS_SLOTS];
static void *(*ls_real)(size_t);
static uint64_t ls_window = 20000;
static _Atomic uint64_t ls_all, ls_other, ls_window_hits, ls_same;
static _Atomic unsigned ls_next_tag = 1;
static __thread unsigned ls_tag;
static __thread uint64_t ls_clock, ls_calls;

/* dlsym may allocate before ls_real is known: those few requests are served
 * from here (never freed: free() of them would reach the allocator, which
 * does not own them, so this must stay rare; glibc's dlsym asks for none
 * or one). */
static _Alignas(16) char ls_boot[1 << 14];
static _Atomic size_t ls_boot_used;

static uint64_t ls_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) & LS_TIME_MASK;
}

static void *ls_boot_alloc(size_t n)
{
	size_t at = atomic_fetch_add(&ls_boot_used, (n + 15) & ~(size_t)15);
	return at + n <= sizeof ls_boot ? ls_boot + at : NULL;
}

void *malloc(size_t n)
{
	static __thread int resolving;
	if (ls_real == NULL) {
		if (resolving)
			return ls_boot_alloc(n);
		resolving = 1;
		const char *w = getenv("LS_WINDOW_NS");
		if (w != NULL)
			ls_window = strtoull(w, NULL, 10);
		ls_real = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
		resolving = 0;
		if (ls_real == NULL)
			return ls_boot_alloc(n);
	}
	void *p = ls_real(n);
	if (p == NULL)
		return p;
	if (ls_tag == 0)
		ls_tag = atomic_fetch_add(&ls_next_tag, 1) & 0xffff;
	if ((ls_calls++ & 63) == 0)
		ls_clock = ls_now();
	uint64_t line = (uint64_t)(uintptr_t)p >> 6;
	_Atomic uint64_t *slot = &ls_table[(line * 0x9E3779B97F4A7C15ull) >> (64 - 24)];
	uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);
	if (old != 0) {
		unsigned tag = (unsigned)(old >> LS_TIME_BITS);
		if (tag == ls_tag) {
			atomic_fetch_add_explicit(&ls_same, 1, memory_order_relaxed);
		} else {
			atomic_fetch_add_explicit(&ls_other, 1, memory_order_relaxed);
			if (((ls_clock - (old & LS_TIME_MASK)) & LS_TIME_MASK) < ls_window)
				atomic_fetch_add_explicit(&ls_window_hits, 1, memory_order_relaxed);
		}
	}
	atomic_fetch_add_explicit(&ls_all, 1, memory_order_relaxed);
	atomic_store_explicit(slot, (uint64_t)ls_tag << LS_TIME_BITS | ls_clock, memory_order_relaxed);
	return p;
}

__attribute__((destructor)) static void ls_report(void)
{
	double all = (double)(ls_all ? ls_all : 1);
	fprintf(stderr,
		"lineshare: mallocs %llu; line's previous block to another thread %.2f%%, within %llu ns %.2f%%; "
		"to this thread %.2f%%\n",
		(unsigned long long)ls_all, 100.0 * (double)ls_other / all, (unsigned long long)ls_window,
		100.0 * (double)ls_window_hits / all, 100.0 * (double)ls_same / all);
}
