/*
 * linemix: which blocks put two threads' live blocks on one cache line, and
 * where the allocator got them (a measuring shim, not a benchmark; a
 * companion of lineshare.c, built and run the same way).
 *
 * Threads are grouped in chains: a thread started by main begins a chain, a
 * thread started by another joins its creator's chain (larson's workers hand
 * their array to the thread they start, so a chain is one array's lineage).
 * Wrapping malloc, free and pthread_create, it counts at each malloc:
 *   migrated    the block's previous malloc was by another chain: it moved
 *               from one chain's address set to the other's;
 *   live-mixed  a 16-byte granule of the block's 64-byte line starts a live
 *               block of another chain (not main's): the two chains use the
 *               line at once. Unlike lineshare's "window", this does not
 *               depend on timing (this shim is slow, ~120 ns a malloc).
 * It also keeps lineshare's "other"/"window" counts. An allocator that
 * moves whole pages between threads (mimalloc reclaims a dead thread's
 * pages) migrates many blocks and mixes few lines (larson t=2: 0.04%);
 * one that moves single blocks through shared lists mixes a line with
 * nearly each one.
 *
 * Sources: if the allocator exports `uint32_t ebb_dbgtab[1 << 24]` (a
 * counting build; none is on main), each slot (the hash below of the block's
 * address) holds kind << 24 | tid of the thread whose refill took the block
 * (kind: 1 own CPU's transfer batch, 2 another CPU's, 3 a span's free list,
 * 4 a new span, 5 a split batch, 6 a thread stash); this shim writes kind 7
 * (its bin) with the freeing tid at each free. If it exports a thread-local
 * `ebb_dbgchain`, the shim sets it to the thread's chain before the thread's
 * first call (for an oracle experiment). Without them every kind reads 0.
 * Output (stderr, at exit): a summary line (mallocs, migrated, live-mixed,
 * with shares), then the raw counts: `MIG kind inherited early all
 * from-other-chain from-main live-mixed` (kind: the source above;
 * inherited: the refill was another thread's; early: among the first 4 000
 * mallocs) and `LS2 kind inherited freer line window count` (freer and
 * line: whose the block's last free and the line's last block were: 0 none,
 * 1 this thread, 2 its chain alive, 3 another chain alive, 4 its chain
 * dead, 5 another chain dead, 6 main; window: 1 the line's last block was
 * another thread's, 2 within the window).
 *
 *   cc -O2 -shared -fPIC -o /tmp/linemix.so bench/linemix.c -ldl -lpthread
 *   LD_PRELOAD="/tmp/linemix.so build/libebbmalloc.so" chrt -f 1 \
 *       build/bench/bench_larson --threads=2 --ops=10m
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#define SLOTS (1u << 24)
#define TIDS (1u << 22)
#define TB 48
#define TM ((1ull << TB) - 1)
static _Atomic uint64_t line_tab[SLOTS];   /* tid << 48 | time */
static _Atomic uint32_t free_tab[SLOTS];   /* last freer tid of the block */
static _Atomic uint16_t achain[SLOTS];     /* chain that last malloc'ed the block */
static _Atomic uint16_t live[SLOTS];       /* chain of the live block starting at this 16-byte granule */
/* kind(8) x inherited(2) x {malloc, migrated from other chain, migrated from main, on a line with another chain's live block} */
static _Atomic uint64_t mig[8][2][2][4];
static __thread uint64_t nmal;
static _Atomic uint8_t alive[TIDS];
static _Atomic uint16_t chain_of[TIDS];
static _Atomic unsigned next_chain = 1;
static uint32_t *dbgtab, *dbgchain;
static void *(*rmalloc)(size_t);
static void (*rfree)(void *);
static int (*rcreate)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static uint64_t window = 20000;
static uint32_t main_tid;
static __thread uint32_t my_tid;
static __thread uint64_t clk, calls;
static pthread_key_t key;
/* kind(8) x inherited(2) x freer(7) x lineowner(6) x {other, window} */
static _Atomic uint64_t cnt[8][2][7][6][3];
static _Alignas(16) char boot[1 << 14];
static _Atomic size_t boot_used;
static void *boot_alloc(size_t n)
{
	size_t at = atomic_fetch_add(&boot_used, (n + 15) & ~(size_t)15);
	return at + n <= sizeof boot ? boot + at : NULL;
}
static uint64_t now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) & TM;
}
static uint32_t bslot(const void *p)
{
	return (uint32_t)((((uint64_t)(uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull) >> (64 - 24));
}
static void on_exit_thread(void *v)
{
	(void)v;
	atomic_store(&alive[my_tid % TIDS], 0);
}
static uint32_t me(void)
{
	if (my_tid == 0) {
		my_tid = (uint32_t)syscall(SYS_gettid) & 0xffffff;
		atomic_store(&alive[my_tid % TIDS], 1);
		if (my_tid != main_tid && main_tid != 0)
			pthread_setspecific(key, (void *)1);
	}
	return my_tid;
}
static int resolving;
static void resolve(void)
{
	resolving = 1;
	const char *w = getenv("LS_WINDOW_NS");
	if (w)
		window = strtoull(w, NULL, 10);
	rfree = (void (*)(void *))dlsym(RTLD_NEXT, "free");
	rcreate = dlsym(RTLD_NEXT, "pthread_create");
	dbgtab = (uint32_t *)dlsym(RTLD_DEFAULT, "ebb_dbgtab");
	dbgchain = (uint32_t *)dlsym(RTLD_DEFAULT, "ebb_dbgchain");
	main_tid = (uint32_t)getpid();
	pthread_key_create(&key, on_exit_thread);
	rmalloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
	resolving = 0;
}
/* A new thread's start record comes from a static ring, not from the
 * allocator, and the thread makes no allocator call (nor dlsym, which may
 * allocate) before its own code runs: a malloc or free there would give the
 * thread a cache of its own before it waits in pthread_join, which changes
 * the allocator's hand-over of exited threads' caches (larson t=2 then
 * takes warm caches it otherwise never takes). */
struct start { void *(*fn)(void *); void *arg; unsigned chain; };
#define START_RING 4096
static struct start start_ring[START_RING];
static _Atomic unsigned start_next;
static void *trampoline(void *a)
{
	struct start s = *(struct start *)a;
	if (dbgchain) *dbgchain = s.chain;
	uint32_t t = me();
	atomic_store(&chain_of[t % TIDS], (uint16_t)s.chain);
	return s.fn(s.arg);
}
int pthread_create(pthread_t *th, const pthread_attr_t *at, void *(*fn)(void *), void *arg)
{
	if (rmalloc == NULL) resolve();
	uint32_t t = me();
	struct start *s = &start_ring[atomic_fetch_add(&start_next, 1) % START_RING];
	s->fn = fn; s->arg = arg;
	s->chain = t == main_tid ? atomic_fetch_add(&next_chain, 1) : atomic_load(&chain_of[t % TIDS]);
	return rcreate(th, at, trampoline, s);
}
void free(void *p)
{
	if (p == NULL) return;
	if ((char *)p >= boot && (char *)p < boot + sizeof boot) return;
	if (rmalloc == NULL) { if (resolving) return; resolve(); }
	uint32_t t = me();
	uint32_t sl = bslot(p);
	atomic_store_explicit(&free_tab[sl], t, memory_order_relaxed);
	atomic_store_explicit(&live[sl], 0, memory_order_relaxed);
	if (dbgtab)
		__atomic_store_n(&dbgtab[sl], 7u << 24 | t, __ATOMIC_RELAXED);
	rfree(p);
}
static int rel(uint32_t other, uint32_t t, uint32_t lineowner)
{
	/* 0 none 1 me 2 line's prev owner 3 other alive 4 dead same chain 5 dead other chain 6 main */
	if (other == 0) return 0;
	(void)lineowner;
	if (other == t) return 1;
	if (other == main_tid) return 6;
	int same = atomic_load(&chain_of[other % TIDS]) == atomic_load(&chain_of[t % TIDS]);
	if (atomic_load(&alive[other % TIDS])) return same ? 2 : 3;
	return same ? 4 : 5;
}
void *malloc(size_t n)
{
	if (rmalloc == NULL) {
		if (resolving) return boot_alloc(n);
		resolve();
	}
	void *p = rmalloc(n);
	if (p == NULL) return p;
	uint32_t t = me();
	if ((calls++ & 63) == 0) clk = now();
	uint32_t sl = bslot(p);
	uint32_t tag = dbgtab ? __atomic_load_n(&dbgtab[sl], __ATOMIC_RELAXED) : 0;
	unsigned kind = tag >> 24, who = tag & 0xffffff;
	if (dbgtab) __atomic_store_n(&dbgtab[sl], 0, __ATOMIC_RELAXED);
	unsigned inh = kind != 0 && who != t;
	uint32_t freer = atomic_load_explicit(&free_tab[sl], memory_order_relaxed);
	uint64_t line = (uint64_t)(uintptr_t)p >> 6;
	_Atomic uint64_t *ls = &line_tab[(line * 0x9E3779B97F4A7C15ull) >> (64 - 24)];
	uint64_t old = atomic_load_explicit(ls, memory_order_relaxed);
	uint32_t lo = (uint32_t)(old >> TB);
	int lrel = old == 0 ? 0 : rel(lo, t, 0); /* 0 none 1 me 3 alive other 4 dead same 5 dead other 6 main */
	static const int lmap[7] = { 0, 1, 0, 2, 3, 4, 5 };
	int li = lmap[lrel];
	int fr = rel(freer, t, lo);
	int w = 0;
	if (old != 0 && lo != t)
		w = (((clk - (old & TM)) & TM) < window) ? 2 : 1;
	atomic_fetch_add_explicit(&cnt[kind & 7][inh][fr][li][w], 1, memory_order_relaxed);
	atomic_store_explicit(ls, (uint64_t)t << TB | clk, memory_order_relaxed);
	int ph = nmal++ < 4000;
	uint16_t ch = atomic_load_explicit(&chain_of[t % TIDS], memory_order_relaxed);
	if (t == main_tid) ch = 0xffff;
	uint16_t pc = atomic_exchange_explicit(&achain[sl], ch, memory_order_relaxed);
	atomic_fetch_add_explicit(&mig[kind & 7][inh][ph][0], 1, memory_order_relaxed);
	if (pc != 0 && pc != ch)
		atomic_fetch_add_explicit(&mig[kind & 7][inh][ph][pc == 0xffff ? 2 : 1], 1, memory_order_relaxed);
	atomic_store_explicit(&live[sl], ch, memory_order_relaxed);
	uintptr_t l0 = (uintptr_t)p & ~(uintptr_t)63;
	for (uintptr_t g = l0; g < l0 + 64; g += 16) {
		if (g == (uintptr_t)p) continue;
		uint16_t o = atomic_load_explicit(&live[bslot((void *)g)], memory_order_relaxed);
		if (o != 0 && o != ch && o != 0xffff) {
			atomic_fetch_add_explicit(&mig[kind & 7][inh][ph][3], 1, memory_order_relaxed);
			break;
		}
	}
	return p;
}
__attribute__((destructor)) static void report(void)
{
	unsigned long long all = 0, moved = 0, mixed = 0;
	for (int k = 0; k < 8; k++) for (int i = 0; i < 2; i++) for (int h = 0; h < 2; h++) {
		all += mig[k][i][h][0];
		moved += mig[k][i][h][1];
		mixed += mig[k][i][h][3];
	}
	if (all)
		fprintf(stderr, "linemix: %llu mallocs, migrated %llu (%.3f%%), live-mixed %llu (%.3f%%)\n", all, moved,
			100.0 * moved / all, mixed, 100.0 * mixed / all);
	for (int k = 0; k < 8; k++) for (int i = 0; i < 2; i++) for (int h = 0; h < 2; h++)
		if (mig[k][i][h][0])
			fprintf(stderr, "MIG %d %d %d %llu %llu %llu %llu\n", k, i, h, (unsigned long long)mig[k][i][h][0],
				(unsigned long long)mig[k][i][h][1], (unsigned long long)mig[k][i][h][2], (unsigned long long)mig[k][i][h][3]);
	for (int k = 0; k < 8; k++) for (int i = 0; i < 2; i++) for (int f = 0; f < 7; f++)
		for (int l = 0; l < 6; l++) for (int w = 0; w < 3; w++)
			if (cnt[k][i][f][l][w])
				fprintf(stderr, "LS2 %d %d %d %d %d %llu\n", k, i, f, l, w,
					(unsigned long long)cnt[k][i][f][l][w]);
}
