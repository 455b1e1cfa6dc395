/*
 * floor_alloc: a trivial allocator preloaded under churn and larson to measure the
 * benchmark's own cost (its cache misses and thread handling) with no
 * allocator work to speak of: per-thread LIFO stacks of free pointers per
 * fixed size class, no locks on any path a benchmark times, no returns to
 * the OS. The stacks are arrays outside the blocks, so neither malloc nor
 * free touches a block's memory (an intrusive list would add a cache miss
 * per operation that the benchmark itself does not have).
 * Each class owns one fixed region of a single reservation, so free() finds
 * the class from the address alone (no header, so the footprint matches a
 * size-class allocator's). A block freed by another thread joins the
 * freeing thread's list (no ownership). A thread's lists go to a shared
 * stash when it exits and the next new thread adopts them, so larson's
 * short-lived threads reuse memory instead of bumping fresh pages.
 * Not part of the library: a measuring tool only (see docs/performance.md,
 * "Oversubscription"). Built as build/bench/libbench_floor_alloc.so;
 * -DFLOOR_INTRUSIVE (libbench_floor_alloc_list.so) keeps the free lists in
 * the blocks instead, as most allocators do: free writes the block, so the
 * block malloc hands out next is already in the cache.
 * Run: LD_PRELOAD=build/bench/libbench_floor_alloc.so build/bench/bench_churn ...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define NSMALL 20                 /* four classes a doubling up to 1 KiB, as ebbmalloc's */
#define NCLASS (NSMALL + 15)      /* then powers of two up to 32 MiB */
#define REGION ((size_t)1 << 30)  /* per class, reserved only */
#define CHUNK ((size_t)64 << 10)
#define ALIGNED_REGION NCLASS     /* leaked over-aligned blocks */

#define CAP ((size_t)1 << 16) /* free pointers a class keeps; more are leaked */
#define STACKS (NCLASS * (CAP + 72))

typedef struct tcache {
	void *head[NCLASS]; /* FLOOR_INTRUSIVE: lists through the blocks */
	void **stack[NCLASS];
	size_t count[NCLASS];
	char *bump[NCLASS], *end[NCLASS];
	struct tcache *next;
} tcache;

static char *base;
static _Atomic size_t region_used[NCLASS + 1];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static pthread_mutex_t stash_lock = PTHREAD_MUTEX_INITIALIZER;
static tcache *stash;
static __thread tcache *tc;
static __thread int tc_state; /* 0 none, 1 live, 2 being destroyed */

static const unsigned short small_size[NSMALL] = {
	16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
};
static unsigned char small_class[65]; /* by (n + 15) / 16 */

static void small_table(void)
{
	unsigned c = 0;
	for (unsigned i = 0; i <= 64; i++) {
		while (small_size[c] < i * 16)
			c++;
		small_class[i] = (unsigned char)c;
	}
}

static size_t class_size(unsigned c)
{
	return c < NSMALL ? small_size[c] : (size_t)2048 << (c - NSMALL);
}

static int size_class(size_t n)
{
	if (n <= 1024)
		return small_class[(n + 15) / 16];
	if (n > ((size_t)2048 << (NCLASS - 1 - NSMALL)))
		return -1;
	unsigned c = NSMALL;
	size_t s = 2048;
	while (s < n) {
		s <<= 1;
		c++;
	}
	return c < NCLASS ? (int)c : -1;
}

static char *region_take(unsigned r, size_t n)
{
	size_t off = __atomic_fetch_add(&region_used[r], n, __ATOMIC_RELAXED);
	if (off + n > REGION)
		return NULL;
	/* regions start a page and a line apart so that classes do not share cache sets */
	return base + (size_t)r * (REGION + 4160) + off;
}

static void on_exit_thread(void *p)
{
	tcache *t = p;
	tc_state = 2;
	pthread_mutex_lock(&stash_lock);
	t->next = stash;
	stash = t;
	pthread_mutex_unlock(&stash_lock);
	tc = NULL;
}

static void init_once(void)
{
	small_table();
	base = mmap(NULL, (REGION + 4160) * (NCLASS + 1), PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED)
		__builtin_trap();
	pthread_key_create(&key, on_exit_thread);
}

/* Boot cache for the calls made before and after a thread's own cache
 * (no stacks: what it frees is leaked). */
static tcache boot;
static pthread_mutex_t boot_lock = PTHREAD_MUTEX_INITIALIZER;

static tcache *get_cache(int *locked)
{
	*locked = 0;
	if (tc)
		return tc;
	pthread_once(&once, init_once);
	if (tc_state == 0) {
		tc_state = 1;
		pthread_mutex_lock(&stash_lock);
		tcache *t = stash;
		if (t)
			stash = t->next;
		pthread_mutex_unlock(&stash_lock);
		if (!t) {
			t = (tcache *)region_take(ALIGNED_REGION, sizeof(tcache) + 64);
			memset(t, 0, sizeof *t);
			void **st = mmap(NULL, STACKS * sizeof(void *), PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (st == MAP_FAILED)
				__builtin_trap();
			for (unsigned c = 0; c < NCLASS; c++)
				t->stack[c] = st + c * CAP + c * 72; /* staggered: equal strides would share cache sets */
		}
		tc = t;
		pthread_setspecific(key, t);
		return t;
	}
	pthread_mutex_lock(&boot_lock);
	*locked = 1;
	return &boot;
}

void *malloc(size_t n)
{
	if (__builtin_expect(!base, 0))
		pthread_once(&once, init_once);
	int c = size_class(n);
	if (c < 0) {
		errno = ENOMEM;
		return NULL;
	}
	int locked;
	tcache *t = get_cache(&locked);
	void *p;
#ifdef FLOOR_INTRUSIVE
	if (t->head[c]) {
		p = t->head[c];
		t->head[c] = *(void **)p;
	} else
#else
	if (t->count[c]) {
		p = t->stack[c][--t->count[c]];
	} else
#endif
	{
		size_t sz = class_size((unsigned)c);
		if (t->bump[c] + sz > t->end[c]) {
			size_t take = sz > CHUNK ? sz : CHUNK;
			char *r = region_take((unsigned)c, take);
			t->bump[c] = r;
			t->end[c] = r ? r + take : NULL;
		}
		p = t->bump[c];
		if (p)
			t->bump[c] += sz;
	}
	if (locked)
		pthread_mutex_unlock(&boot_lock);
	if (!p)
		errno = ENOMEM;
	return p;
}

void free(void *p)
{
	if (!p)
		return;
	size_t r = (size_t)((char *)p - base) / (REGION + 4160);
	if (r >= NCLASS)
		return; /* over-aligned blocks are never reused */
	int locked;
	tcache *t = get_cache(&locked);
#ifdef FLOOR_INTRUSIVE
	if (t != &boot) {
		*(void **)p = t->head[r];
		t->head[r] = p;
	}
#else
	if (t->stack[r] && t->count[r] < CAP)
		t->stack[r][t->count[r]++] = p;
#endif
	if (locked)
		pthread_mutex_unlock(&boot_lock);
}

size_t malloc_usable_size(void *p)
{
	if (!p)
		return 0;
	size_t r = (size_t)((char *)p - base) / (REGION + 4160);
	return r < NCLASS ? class_size((unsigned)r) : 0;
}

void *calloc(size_t a, size_t b)
{
	size_t n;
	if (__builtin_mul_overflow(a, b, &n)) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = malloc(n);
	if (p)
		memset(p, 0, n);
	return p;
}

void *realloc(void *p, size_t n)
{
	if (!p)
		return malloc(n);
	size_t old = malloc_usable_size(p);
	if (old && n <= old)
		return p;
	void *q = malloc(n);
	if (q && old)
		memcpy(q, p, old);
	/* over-aligned old blocks have no recorded size: never realloc'd by the benchmarks */
	free(p);
	return q;
}

void *memalign(size_t al, size_t n)
{
	if (al <= 16)
		return malloc(n);
	if (n > REGION || al > REGION || (al & (al - 1)))
		return NULL;
	pthread_once(&once, init_once);
	char *r = region_take(ALIGNED_REGION, n + al);
	if (!r)
		return NULL;
	return (void *)(((uintptr_t)r + al - 1) & ~(uintptr_t)(al - 1));
}

int posix_memalign(void **out, size_t al, size_t n)
{
	void *p = memalign(al, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void *aligned_alloc(size_t al, size_t n) { return memalign(al, n); }
void *valloc(size_t n) { return memalign(4096, n); }
void *pvalloc(size_t n) { return memalign(4096, (n + 4095) & ~(size_t)4095); }
