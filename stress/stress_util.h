/*
 * stress_util.h: shared helpers of the ebbmalloc stress suites.
 *
 * Header only (every suite is one translation unit): a seeded PRNG, block
 * patterns and their checks, an allocate/realloc/free wrapper that checks
 * what the API promises, argument parsing, failure reporting, timing, a
 * watchdog that turns a deadlock into a report, and an exchange array for
 * handing blocks between threads.
 *
 * Every program calls the prefixed ebb_* API, so the same sources run under
 * ThreadSanitizer and AddressSanitizer, where the sanitizer owns malloc.
 *
 * Patterns. A block of n bytes holds, at byte offset i, byte (i % 8) (little
 * endian) of the word  key ^ ((i / 8) * ST_PATTERN_MUL), where key is derived
 * from the block's address, its size and a serial number unique to each
 * allocation (two live blocks never share a key, so a block handed out twice
 * shows up as the other block's pattern). realloc keeps the key: the bytes it
 * must preserve still match, and the grown part is filled with the same
 * formula, so a block carries its expected contents across any number of
 * reallocs and threads.
 */
#ifndef EBB_STRESS_UTIL_H
#define EBB_STRESS_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <ebbmalloc.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__)
#define ST_UNUSED __attribute__((unused))
#define ST_NORETURN __attribute__((noreturn))
#define ST_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define ST_NOINLINE __attribute__((noinline))
#else
#define ST_UNUSED
#define ST_NORETURN
#define ST_PRINTF(a, b)
#define ST_NOINLINE
#endif

#if defined(__SANITIZE_THREAD__)
#define ST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ST_TSAN 1
#endif
#endif
#ifndef ST_TSAN
#define ST_TSAN 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define ST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ST_ASAN 1
#endif
#endif
#ifndef ST_ASAN
#define ST_ASAN 0
#endif

#define ST_KIB ((size_t)1024)
#define ST_MIB ((size_t)1024 * 1024)
#define ST_PAGE ((size_t)4096)
#define ST_MIN_ALIGN ((size_t)16) /* every ebbmalloc block is aligned to this */
#define ST_MAX_THREADS 1024       /* bound on worker indexes for progress counters */

/* ------------------------------------------------------------------------
 * Global run context, printed with every failure.
 * --------------------------------------------------------------------- */
static const char *st_prog = "stress";
static uint64_t st_seed;
static _Thread_local int st_tid = -1; /* worker index, -1 for main/helpers */
static _Thread_local uint64_t st_op;   /* operation number in this thread */
static atomic_int st_failing;          /* set by the first failure */

static ST_UNUSED double st_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static ST_UNUSED void st_sleep_ms(double ms)
{
	struct timespec ts;
	ts.tv_sec = (time_t)(ms / 1000.0);
	ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000.0) * 1e6);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

/* Failure: print what, where, seed and thread, then abort (non-zero exit and
 * a core for the debugger). Only the first failing thread prints in full. */
static ST_UNUSED ST_NORETURN ST_PRINTF(3, 4) void st_fail_at(const char *file, int line, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	int first = atomic_exchange(&st_failing, 1) == 0;
	fprintf(stderr,
	        "\n%s: FAIL at %s:%d: %s\n"
	        "%s:   thread %d, operation %" PRIu64 ", seed %" PRIu64
	        " (rerun with --seed %" PRIu64 ")\n",
	        st_prog, file, line, msg, st_prog, st_tid, st_op, st_seed, st_seed);
	fflush(stderr);
	fflush(stdout);
	if (!first)
		st_sleep_ms(200); /* let the first report finish */
	abort();
}
#define ST_FAIL(...) st_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define ST_CHECK(cond, ...)                   \
	do {                                      \
		if (!(cond))                          \
			st_fail_at(__FILE__, __LINE__, __VA_ARGS__); \
	} while (0)

/* Progress lines go to stdout; failures to stderr. */
static ST_UNUSED ST_PRINTF(1, 2) void st_log(const char *fmt, ...)
{
	va_list ap;
	printf("%s: ", st_prog);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* Under a sanitizer with a malloc-mapped build of the API (the development
 * shim), impossible sizes must come back as NULL rather than a sanitizer
 * report: the programs check that they do. Harmless with the real library,
 * whose ebb_* functions never reach the sanitizer's allocator. */
#if ST_ASAN
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}
#endif
#if ST_TSAN
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
	return "allocator_may_return_null=1";
}
#endif

/* ------------------------------------------------------------------------
 * PRNG: splitmix64 to seed, xoshiro256** to generate. Each thread gets its
 * own stream from (seed, stream number), so a run is reproducible per thread
 * (interleavings are up to the scheduler).
 * --------------------------------------------------------------------- */
typedef struct st_rng {
	uint64_t s[4];
} st_rng;

static inline uint64_t st_splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t st_mix64(uint64_t x)
{
	return st_splitmix64(&x);
}

static inline void st_rng_init(st_rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed ^ st_mix64(stream + 0x51a7e5u);
	for (int i = 0; i < 4; i++)
		r->s[i] = st_splitmix64(&x);
}

static inline uint64_t st_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t st_rand(st_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = st_rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = st_rotl(s[3], 45);
	return result;
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t st_below(st_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)st_rand(r) * n) >> 64);
}

/* Uniform in [lo, hi]. */
static inline uint64_t st_range(st_rng *r, uint64_t lo, uint64_t hi)
{
	return lo + st_below(r, hi - lo + 1);
}

/* True with probability permille / 1000. */
static inline bool st_chance(st_rng *r, unsigned permille)
{
	return st_below(r, 1000) < permille;
}

/* Roughly log-uniform in [lo, hi] (lo >= 1): a power of two picked
 * uniformly, then a uniform value inside it. */
static inline uint64_t st_logrange(st_rng *r, uint64_t lo, uint64_t hi)
{
	if (lo < 1)
		lo = 1;
	if (hi <= lo)
		return lo;
	int lob = 63 - __builtin_clzll(lo), hib = 63 - __builtin_clzll(hi);
	for (;;) {
		int b = (int)st_range(r, (uint64_t)lob, (uint64_t)hib);
		uint64_t a = (uint64_t)1 << b, z = b == 63 ? UINT64_MAX : (a << 1) - 1;
		if (a < lo)
			a = lo;
		if (z > hi)
			z = hi;
		if (a <= z)
			return st_range(r, a, z);
	}
}

/* ------------------------------------------------------------------------
 * Patterns.
 * --------------------------------------------------------------------- */
#define ST_PATTERN_MUL 0x9e3779b97f4a7c15ull

static inline uint64_t st_pattern_word(uint64_t key, size_t word)
{
	return key ^ ((uint64_t)word * ST_PATTERN_MUL);
}

static inline unsigned char st_pattern_byte(uint64_t key, size_t off)
{
	return (unsigned char)(st_pattern_word(key, off >> 3) >> (8 * (off & 7)));
}

static inline uint64_t st_key(const void *p, size_t size, uint64_t serial)
{
	uint64_t k = st_mix64((uint64_t)(uintptr_t)p ^ st_mix64(size ^ (serial << 20) ^ (serial >> 44)));
	return k ? k : 1;
}

static inline uint64_t st_load64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline void st_store64(unsigned char *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ST_LITTLE 1
#else
#define ST_LITTLE 0
#endif

/* Writes the pattern of key over bytes [from, to) of p. */
static ST_UNUSED void st_fill(unsigned char *p, size_t from, size_t to, uint64_t key)
{
	size_t i = from;
	while (i < to && ((i & 7) || !ST_LITTLE))
		p[i] = st_pattern_byte(key, i), i++;
	for (; i + 8 <= to; i += 8)
		st_store64(p + i, st_pattern_word(key, i >> 3));
	for (; i < to; i++)
		p[i] = st_pattern_byte(key, i);
}

/* Returns the first offset in [from, to) that does not hold the pattern of
 * key, or SIZE_MAX if all do. */
static ST_UNUSED size_t st_find_bad(const unsigned char *p, size_t from, size_t to, uint64_t key)
{
	size_t i = from;
	while (i < to && ((i & 7) || !ST_LITTLE)) {
		if (p[i] != st_pattern_byte(key, i))
			return i;
		i++;
	}
	for (; i + 8 <= to; i += 8) {
		if (st_load64(p + i) != st_pattern_word(key, i >> 3)) {
			for (size_t j = i;; j++)
				if (p[j] != st_pattern_byte(key, j))
					return j;
		}
	}
	for (; i < to; i++)
		if (p[i] != st_pattern_byte(key, i))
			return i;
	return SIZE_MAX;
}

/* First offset in [from, to) that is not zero, or SIZE_MAX. */
static ST_UNUSED size_t st_find_nonzero(const unsigned char *p, size_t from, size_t to)
{
	size_t i = from;
	while (i < to && (i & 7)) {
		if (p[i])
			return i;
		i++;
	}
	for (; i + 8 <= to; i += 8)
		if (st_load64(p + i)) {
			while (!p[i])
				i++;
			return i;
		}
	for (; i < to; i++)
		if (p[i])
			return i;
	return SIZE_MAX;
}

/* Optional hook: a program that knows every live block can name the block
 * whose pattern key is found where another block's should be. */
static const char *(*st_key_owner_hook)(uint64_t key, char *buf, size_t len);

/* Prints what is wrong at offset bad of a block: expected and found bytes
 * around it, the extent of the damage, and a guess at what was written. */
static ST_UNUSED void st_describe_damage(const unsigned char *p, size_t checked_from, size_t checked_to,
                                         uint64_t key, size_t bad)
{
	size_t last_bad = bad, nbad = 0;
	for (size_t i = bad; i < checked_to; i++)
		if (p[i] != st_pattern_byte(key, i))
			last_bad = i, nbad++;
	fprintf(stderr, "%s:   checked [%zu, %zu); first bad byte at %zu, last at %zu, %zu bad bytes\n",
	        st_prog, checked_from, checked_to, bad, last_bad, nbad);
	size_t lo = bad >= 16 ? (bad - 16) & ~(size_t)7 : 0;
	if (lo < checked_from)
		lo = checked_from;
	size_t hi = lo + 48 < checked_to ? lo + 48 : checked_to;
	fprintf(stderr, "%s:   offset  expected                  found\n", st_prog);
	for (size_t row = lo; row < hi; row += 8) {
		char e[40], f[40];
		int ne = 0, nf = 0;
		for (size_t i = row; i < row + 8 && i < hi; i++) {
			ne += snprintf(e + ne, sizeof e - (size_t)ne, "%02x ", st_pattern_byte(key, i));
			nf += snprintf(f + nf, sizeof f - (size_t)nf, "%02x ", p[i]);
		}
		fprintf(stderr, "%s:   %6zu  %-24s  %-24s%s\n", st_prog, row, e, f,
		        (bad >= row && bad < row + 8) ? " <--" : "");
	}
	/* What was written there instead? */
	size_t w = (bad + 7) & ~(size_t)7;
	if (w + 16 <= checked_to && ST_LITTLE) {
		uint64_t v0 = st_load64(p + w), v1 = st_load64(p + w + 8);
		uint64_t k0 = v0 ^ ((uint64_t)(w >> 3) * ST_PATTERN_MUL);
		uint64_t k1 = v1 ^ ((uint64_t)((w >> 3) + 1) * ST_PATTERN_MUL);
		if (v0 == 0 && v1 == 0)
			fprintf(stderr, "%s:   the damaged bytes read as zeros (page purged or zeroed while in use?)\n",
			        st_prog);
		else if (k0 == k1) {
			char buf[256] = "";
			const char *who = st_key_owner_hook ? st_key_owner_hook(k0, buf, sizeof buf) : NULL;
			fprintf(stderr,
			        "%s:   the damaged bytes hold another block's pattern at the same offset (key %#" PRIx64
			        ")%s%s: two blocks overlap\n",
			        st_prog, k0, who ? ", " : "", who ? who : "");
		} else {
			/* the same pattern at a shifted offset? (a bad copy) */
			for (int sh = -64; sh <= 64; sh += 8) {
				if (sh == 0 || (sh < 0 && (size_t)-sh > w))
					continue;
				size_t ws = w + (size_t)(ptrdiff_t)sh;
				if (v0 == st_pattern_word(key, ws >> 3)) {
					fprintf(stderr, "%s:   the bytes at %zu hold this block's own pattern for offset %zu (a shifted copy)\n",
					        st_prog, w, ws);
					break;
				}
			}
		}
	}
	fflush(stderr);
}

/* ------------------------------------------------------------------------
 * Blocks: one allocation with everything needed to check it.
 * --------------------------------------------------------------------- */
enum st_kind {
	ST_K_NONE = 0,
	ST_K_MALLOC,
	ST_K_CALLOC,
	ST_K_REALLOC_NULL,      /* realloc(NULL, n) */
	ST_K_REALLOCARRAY_NULL, /* reallocarray(NULL, c, s) */
	ST_K_POSIX_MEMALIGN,
	ST_K_ALIGNED_ALLOC,
	ST_K_MEMALIGN,
	ST_K_VALLOC,
	ST_K_PVALLOC,
	ST_K_COUNT
};

static const char *const st_kind_names[ST_K_COUNT] = {
	"none", "malloc", "calloc", "realloc(NULL)", "reallocarray(NULL)", "posix_memalign",
	"aligned_alloc", "memalign", "valloc", "pvalloc",
};

typedef struct st_block {
	unsigned char *p;  /* NULL: the descriptor is empty */
	size_t size;       /* bytes asked for */
	size_t usable;     /* ebb_malloc_usable_size() when last (re)allocated */
	size_t filled;     /* bytes holding the pattern: size, or usable (tail use) */
	size_t align;      /* alignment promised by the call that made it */
	uint64_t key;      /* pattern key */
	uint64_t serial;   /* (thread + 1) << 40 | count: unique per allocation */
	uint32_t kind;     /* enum st_kind of the allocation */
	uint32_t reallocs; /* reallocs since allocation */
} st_block;

static inline int st_block_thread(const st_block *b)
{
	return (int)(b->serial >> 40) - 1;
}

static ST_UNUSED void st_block_describe(const st_block *b, const char *what)
{
	fprintf(stderr,
	        "%s:   %s: block %p, size %zu, usable %zu, filled %zu, alignment %zu, made by %s in thread %d"
	        " (serial %" PRIu64 "), %u reallocs since, key %#" PRIx64 "\n",
	        st_prog, what, (void *)b->p, b->size, b->usable, b->filled, b->align,
	        b->kind < ST_K_COUNT ? st_kind_names[b->kind] : "?", st_block_thread(b),
	        b->serial & (((uint64_t)1 << 40) - 1), b->reallocs, b->key);
}

/* Checks [from, to) of b against its pattern; fails with a full report. */
static ST_UNUSED void st_block_check_range(const st_block *b, size_t from, size_t to, const char *where)
{
	size_t bad = st_find_bad(b->p, from, to, b->key);
	if (bad == SIZE_MAX)
		return;
	(void)atomic_exchange(&st_failing, 1);
	fprintf(stderr, "\n%s: FAIL: block contents damaged (%s): byte %zu of %p is %#04x, expected %#04x\n",
	        st_prog, where, bad, (void *)b->p, b->p[bad], st_pattern_byte(b->key, bad));
	st_block_describe(b, "block");
	st_describe_damage(b->p, from, to, b->key, bad);
	ST_FAIL("block contents damaged (%s)", where);
}

/* Full check: contents, and the usable size has not changed. */
static ST_UNUSED void st_block_check(const st_block *b, const char *where)
{
	size_t u = ebb_malloc_usable_size(b->p);
	if (u != b->usable) {
		st_block_describe(b, "block");
		ST_FAIL("%s: ebb_malloc_usable_size(%p) changed from %zu to %zu while the block was live", where,
		        (void *)b->p, b->usable, u);
	}
	st_block_check_range(b, 0, b->filled, where);
}

/* Checks a fresh pointer: not NULL, aligned, usable >= size. */
/* Fault mode: a --ebb-option fault_map/fault_purge/fault_unmap other than
 * "off" makes the allocator's kernel calls fail (the hidden options of
 * core/runtime/options.c). Then NULL with errno ENOMEM (posix_memalign: ENOMEM) is an
 * allowed answer from any allocation or realloc, never any other error; a
 * failed realloc must leave the block intact (checked in full). The refusals
 * are counted; a run in fault mode must see some. */
static bool st_faults;
static atomic_uint_fast64_t st_enomem_count;

/* In fault mode, accepts a refusal with ENOMEM (counts it, returns true);
 * anything else fails the run. */
static ST_UNUSED bool st_refused(const char *call, size_t size, int err)
{
	if (!st_faults)
		return false;
	if (err != ENOMEM)
		ST_FAIL("%s(size %zu) failed with errno %d (%s), expected ENOMEM", call, size, err, strerror(err));
	atomic_fetch_add_explicit(&st_enomem_count, 1, memory_order_relaxed);
	return true;
}

static ST_UNUSED void st_check_fresh(const void *p, size_t size, size_t align, const char *call, int err)
{
	if (p == NULL)
		ST_FAIL("%s(size %zu, alignment %zu) returned NULL (errno %d: %s)", call, size, align, err,
		        strerror(err));
	if ((uintptr_t)p % ST_MIN_ALIGN)
		ST_FAIL("%s(size %zu) returned %p, not %zu-byte aligned", call, size, p, ST_MIN_ALIGN);
	if (align && (uintptr_t)p % align)
		ST_FAIL("%s(alignment %zu, size %zu) returned %p, misaligned by %zu", call, align, size, p,
		        (size_t)((uintptr_t)p % align));
	size_t u = ebb_malloc_usable_size(p);
	if (u < size)
		ST_FAIL("%s(size %zu) returned %p whose usable size is only %zu", call, size, p, u);
}

static inline size_t st_next_pow2(size_t x)
{
	size_t p = 1;
	while (p < x)
		p <<= 1;
	return p;
}

/* Allocates b (which must be empty) with the given call, size and (for the
 * aligned calls) alignment, checks the result and fills the pattern. With
 * tail_use, the whole usable size is written and checked (usable bytes must
 * really be usable). */
static ST_UNUSED void st_block_alloc(st_block *b, st_rng *r, enum st_kind kind, size_t size, size_t align,
                                     uint64_t serial, bool tail_use)
{
	void *p = NULL;
	size_t promised = ST_MIN_ALIGN, want = size;
	const char *call = st_kind_names[kind];
	errno = 0;
	switch (kind) {
	case ST_K_MALLOC:
		p = ebb_malloc(size);
		break;
	case ST_K_CALLOC: {
		/* split size into count * elem in a random way */
		size_t elem = (size_t)1 << st_below(r, 6);
		while (elem > 1 && size % elem)
			elem >>= 1;
		size_t count = size / elem;
		if (st_chance(r, 300) && count > 0) {
			size_t t = count;
			count = elem;
			elem = t;
		}
		p = ebb_calloc(count, elem);
		break;
	}
	case ST_K_REALLOC_NULL:
		p = ebb_realloc(NULL, size);
		break;
	case ST_K_REALLOCARRAY_NULL: {
		size_t elem = size % 8 == 0 && size ? 8 : 1;
		p = ebb_reallocarray(NULL, size / elem, elem);
		break;
	}
	case ST_K_POSIX_MEMALIGN: {
		if (align < sizeof(void *))
			align = sizeof(void *);
		int rc = ebb_posix_memalign(&p, align, size);
		if (rc != 0 && st_refused(call, size, rc)) {
			memset(b, 0, sizeof *b);
			return;
		}
		if (rc != 0)
			ST_FAIL("posix_memalign(alignment %zu, size %zu) returned %d", align, size, rc);
		promised = align;
		break;
	}
	case ST_K_ALIGNED_ALLOC:
		p = ebb_aligned_alloc(align, size);
		promised = align;
		break;
	case ST_K_MEMALIGN: {
		/* sometimes an alignment that is not a power of two: glibc rounds it up */
		size_t a = align;
		if (st_chance(r, 100) && align >= 32)
			a = align / 2 + st_range(r, 1, align / 2 - 1);
		p = ebb_memalign(a, size);
		promised = st_next_pow2(a);
		break;
	}
	case ST_K_VALLOC:
		p = ebb_valloc(size);
		promised = ST_PAGE;
		break;
	case ST_K_PVALLOC:
		p = ebb_pvalloc(size);
		promised = ST_PAGE;
		want = size ? (size + ST_PAGE - 1) & ~(ST_PAGE - 1) : ST_PAGE;
		break;
	default:
		ST_FAIL("bad allocation kind %d", (int)kind);
	}
	if (p == NULL && st_refused(call, size, errno)) {
		memset(b, 0, sizeof *b); /* stays empty */
		return;
	}
	st_check_fresh(p, want, promised < ST_MIN_ALIGN ? ST_MIN_ALIGN : promised, call, errno);
	b->p = (unsigned char *)p;
	b->size = size;
	b->usable = ebb_malloc_usable_size(p);
	b->align = promised;
	b->serial = serial;
	b->kind = (uint32_t)kind;
	b->reallocs = 0;
	b->key = st_key(p, size, serial);
	if (kind == ST_K_CALLOC) {
		size_t nz = st_find_nonzero(b->p, 0, size);
		if (nz != SIZE_MAX) {
			b->filled = 0;
			st_block_describe(b, "calloc block");
			ST_FAIL("calloc block %p of %zu bytes is not zeroed: byte %zu is %#04x", p, size, nz, b->p[nz]);
		}
	}
	b->filled = tail_use ? b->usable : size;
	st_fill(b->p, 0, b->filled, b->key);
}

/* Checks [0, to) of a block against key, but of a long range only: the
 * first and last 64 KiB, and a 64-byte window in every 4 KiB page (its
 * position rotating with salt, so successive checks cover different bytes).
 * Catches lost or zeroed pages and bad copies at a fraction of the cost.
 * Returns the first bad offset found, or SIZE_MAX. */
static ST_UNUSED size_t st_find_bad_sampled(const unsigned char *p, size_t to, uint64_t key, uint64_t salt)
{
	const size_t edge = 64 * ST_KIB;
	if (to <= 2 * edge)
		return st_find_bad(p, 0, to, key);
	size_t bad = st_find_bad(p, 0, edge, key);
	if (bad != SIZE_MAX)
		return bad;
	size_t win = (size_t)(st_mix64(salt) % (ST_PAGE / 64)) * 64;
	for (size_t page = edge; page + ST_PAGE <= to - edge; page += ST_PAGE) {
		bad = st_find_bad(p, page + win, page + win + 64, key);
		if (bad != SIZE_MAX)
			return bad;
	}
	return st_find_bad(p, to - edge, to, key);
}

/* reallocs b to new_size (> 0), with reallocarray when use_array; checks
 * that min(old, new) bytes survived and fills the rest. The kept bytes are
 * checked in full up to full_limit bytes, sampled beyond (with salt). */
static ST_UNUSED void st_block_realloc_ex(st_block *b, size_t new_size, bool use_array, size_t full_limit,
                                          uint64_t salt, const char *where)
{
	size_t keep = b->size < new_size ? b->size : new_size;
	void *q;
	errno = 0;
	if (use_array) {
		size_t elem = new_size % 16 == 0 ? 16 : new_size % 4 == 0 ? 4 : 1;
		q = ebb_reallocarray(b->p, new_size / elem, elem);
	} else {
		q = ebb_realloc(b->p, new_size);
	}
	if (q == NULL && st_refused(use_array ? "reallocarray" : "realloc", new_size, errno)) {
		st_block_check(b, "after a refused realloc");
		return;
	}
	if (q == NULL) {
		st_block_describe(b, "block");
		ST_FAIL("%s: %s(%p, %zu) returned NULL (errno %d)", where, use_array ? "reallocarray" : "realloc",
		        (void *)b->p, new_size, errno);
	}
	unsigned char *old = b->p;
	b->p = (unsigned char *)q;
	st_check_fresh(q, new_size, ST_MIN_ALIGN, use_array ? "reallocarray" : "realloc", errno);
	b->usable = ebb_malloc_usable_size(q);
	b->reallocs++;
	b->align = ST_MIN_ALIGN;
	size_t bad = keep <= full_limit ? st_find_bad(b->p, 0, keep, b->key)
	                                : st_find_bad_sampled(b->p, keep, b->key, salt);
	if (bad != SIZE_MAX) {
		(void)atomic_exchange(&st_failing, 1);
		fprintf(stderr, "\n%s: FAIL: %s lost contents: %p (%zu bytes) -> %p (%zu bytes), byte %zu wrong\n",
		        st_prog, use_array ? "reallocarray" : "realloc", (void *)old, b->size, q, new_size, bad);
		st_block_describe(b, "block after realloc");
		st_describe_damage(b->p, 0, keep, b->key, bad);
		ST_FAIL("%s: realloc did not preserve min(old, new) = %zu bytes", where, keep);
	}
	b->size = new_size;
	b->filled = new_size;
	st_fill(b->p, keep, new_size, b->key);
}

static ST_UNUSED void st_block_realloc(st_block *b, size_t new_size, bool use_array, const char *where)
{
	st_block_realloc_ex(b, new_size, use_array, SIZE_MAX, 0, where);
}

/* Checks b fully and frees it with a call that fits how it was made
 * (free, free_sized, free_aligned_sized, or realloc(p, 0)). */
static ST_UNUSED void st_block_free(st_block *b, st_rng *r, const char *where)
{
	st_block_check(b, where);
	unsigned v = (unsigned)st_below(r, 8);
	bool plain = b->reallocs == 0 && (b->kind == ST_K_MALLOC || b->kind == ST_K_CALLOC ||
	                                 b->kind == ST_K_REALLOC_NULL || b->kind == ST_K_REALLOCARRAY_NULL);
	if (v == 0 && (plain || b->reallocs > 0)) {
		ebb_free_sized(b->p, b->size);
	} else if (v == 1 && b->kind == ST_K_ALIGNED_ALLOC && b->reallocs == 0) {
		ebb_free_aligned_sized(b->p, b->align, b->size);
	} else if (v == 2) {
		errno = 0;
		void *q = ebb_realloc(b->p, 0);
		if (q != NULL)
			ST_FAIL("%s: realloc(%p, 0) returned %p, the header promises NULL (glibc semantics)", where,
			        (void *)b->p, q);
	} else {
		ebb_free(b->p);
	}
	memset(b, 0, sizeof *b);
}

/* Sizes "mostly small, some large": per 10000, 200 tiny (1-15 B), 6000 of
 * 16-512 B, 2500 of 513 B-4 KiB, 1190 of 4-32 KiB (the small classes end at
 * 32 KiB), 100 of 32 KiB-1 MiB (page runs) and 10 of 1 MiB-max (large and,
 * past ~4 MiB, huge blocks). Log-uniform inside each range. The big ones
 * are rare but take most of the time (mapping, faulting, filling). */
static ST_UNUSED size_t st_pick_size(st_rng *r, size_t max)
{
	unsigned v = (unsigned)st_below(r, 10000);
	size_t s;
	if (v < 200)
		s = st_range(r, 1, 15);
	else if (v < 6200)
		s = st_logrange(r, 16, 512);
	else if (v < 8700)
		s = st_logrange(r, 513, 4096);
	else if (v < 9890)
		s = st_logrange(r, 4097, 32 * ST_KIB);
	else if (v < 9990)
		s = st_logrange(r, 32 * ST_KIB + 1, ST_MIB);
	else
		s = st_logrange(r, ST_MIB + 1, max > ST_MIB + 1 ? max : ST_MIB + 1);
	return s < max ? s : max;
}

/* Alignments: powers of two from 16 B to max_align, 70% up to 4 KiB and 30%
 * above (if max_align allows). */
static ST_UNUSED size_t st_pick_align(st_rng *r, size_t max_align)
{
	int hi = 63 - __builtin_clzll(max_align < 16 ? 16 : max_align);
	int mid = hi < 12 ? hi : 12;
	int b = (hi > 12 && st_chance(r, 300)) ? (int)st_range(r, 13, (uint64_t)hi) : (int)st_range(r, 4, (uint64_t)mid);
	return (size_t)1 << b;
}

/* ------------------------------------------------------------------------
 * Exchange array: blocks handed between threads. Descriptors live in one
 * array; a thread owns the indexes it holds, and slot[] holds the rest. A
 * thread hands a block over by swapping the index of its descriptor (full
 * or empty) with a slot's; the swap is acq_rel, so everything written to a
 * descriptor and its block before it was put in happens before whatever the
 * taker does with it. No descriptor is ever lost or shared.
 * --------------------------------------------------------------------- */
typedef struct st_xchg {
	st_block *desc;        /* all descriptors */
	size_t ndesc;
	_Atomic uint32_t *slot; /* shared slots, each holding a descriptor index */
	size_t nslots;
} st_xchg;

/* Creates descriptors: the first nslots go into the slots, the rest are
 * handed out to threads with st_xchg_reserve(). */
static ST_UNUSED void st_xchg_init(st_xchg *x, size_t nslots, size_t nprivate)
{
	x->ndesc = nslots + nprivate;
	x->nslots = nslots;
	x->desc = (st_block *)calloc(x->ndesc, sizeof *x->desc);
	x->slot = (_Atomic uint32_t *)calloc(nslots ? nslots : 1, sizeof *x->slot);
	if (!x->desc || !x->slot)
		ST_FAIL("out of memory for %zu descriptors", x->ndesc);
	for (size_t i = 0; i < nslots; i++)
		atomic_init(&x->slot[i], (uint32_t)i);
}

static inline uint32_t st_xchg_swap(st_xchg *x, size_t slot, uint32_t mine)
{
	return atomic_exchange_explicit(&x->slot[slot], mine, memory_order_acq_rel);
}

static ST_UNUSED void st_xchg_destroy(st_xchg *x)
{
	free(x->desc);
	free((void *)x->slot);
	memset(x, 0, sizeof *x);
}

/* ------------------------------------------------------------------------
 * Arguments. --name value or --name=value; counts take k/m/g suffixes
 * (x1000), sizes K/M/G (x1024, case-insensitive). Every program also takes
 * --seed, --stall, --ebb-option name=value and --help.
 * --------------------------------------------------------------------- */
enum st_opt_kind { ST_OPT_COUNT, ST_OPT_SIZE, ST_OPT_DOUBLE, ST_OPT_BOOL };

typedef struct st_opt {
	const char *name; /* without the leading -- */
	enum st_opt_kind kind;
	void *ptr; /* uint64_t for COUNT, size_t for SIZE, double, bool */
	const char *help;
} st_opt;

static double st_stall_seconds = 120.0; /* watchdog: no progress for this long is a hang */
static bool st_print_stats;              /* --print-stats: every ebb_stats field at the end */

static bool st_parse_number(const char *s, bool binary, uint64_t *out)
{
	char *end;
	errno = 0;
	double d = strtod(s, &end);
	if (end == s || errno || d < 0)
		return false;
	double mul = 1;
	switch (*end) {
	case 'k': case 'K': mul = binary ? 1024.0 : 1e3; end++; break;
	case 'm': case 'M': mul = binary ? 1048576.0 : 1e6; end++; break;
	case 'g': case 'G': mul = binary ? 1073741824.0 : 1e9; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'B')
		end++;
	if (*end == 'B')
		end++;
	if (*end)
		return false;
	*out = (uint64_t)(d * mul + 0.5);
	return true;
}

static ST_UNUSED void st_usage(const char *desc, const st_opt *opts, size_t n, FILE *f)
{
	fprintf(f, "usage: %s [options]\n%s\n\noptions:\n", st_prog, desc);
	for (size_t i = 0; i < n; i++) {
		char def[64];
		switch (opts[i].kind) {
		case ST_OPT_COUNT: snprintf(def, sizeof def, "%" PRIu64, *(uint64_t *)opts[i].ptr); break;
		case ST_OPT_SIZE: snprintf(def, sizeof def, "%zu", *(size_t *)opts[i].ptr); break;
		case ST_OPT_DOUBLE: snprintf(def, sizeof def, "%g", *(double *)opts[i].ptr); break;
		case ST_OPT_BOOL: snprintf(def, sizeof def, "%d", (int)*(bool *)opts[i].ptr); break;
		}
		fprintf(f, "  --%-16s %s (default %s)\n", opts[i].name, opts[i].help, def);
	}
	fprintf(f,
	        "  --%-16s PRNG seed (default: from the clock, or $EBB_STRESS_SEED)\n"
	        "  --%-16s seconds without progress before the watchdog reports a hang (default %g)\n"
	        "  --%-16s name=value passed to ebb_option_set() before the run (repeatable)\n"
	        "  --%-16s print every ebb_stats field at the end\n",
	        "seed", "stall", st_stall_seconds, "ebb-option", "print-stats");
}

static ST_UNUSED void st_parse_args(int argc, char **argv, const char *prog, const char *desc, const st_opt *opts,
                                    size_t n)
{
	st_prog = prog;
	const char *env = getenv("EBB_STRESS_SEED");
	uint64_t seed = 0;
	bool have_seed = false;
	if (env && *env) {
		if (!st_parse_number(env, false, &seed)) {
			fprintf(stderr, "%s: bad EBB_STRESS_SEED '%s'\n", prog, env);
			exit(2);
		}
		have_seed = true;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			st_usage(desc, opts, n, stdout);
			exit(0);
		}
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "%s: unexpected argument '%s' (try --help)\n", prog, a);
			exit(2);
		}
		a += 2;
		const char *eq = strchr(a, '=');
		size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
		const char *val = eq ? eq + 1 : NULL;
#define ST_TAKE_VALUE()                                                                  \
	do {                                                                                 \
		if (!val) {                                                                      \
			if (i + 1 >= argc) {                                                         \
				fprintf(stderr, "%s: --%.*s needs a value\n", prog, (int)nlen, a);       \
				exit(2);                                                                 \
			}                                                                            \
			val = argv[++i];                                                             \
		}                                                                                \
	} while (0)
		if (nlen == 4 && strncmp(a, "seed", 4) == 0) {
			ST_TAKE_VALUE();
			if (!st_parse_number(val, false, &seed)) {
				char *end;
				seed = strtoull(val, &end, 0);
				if (*end) {
					fprintf(stderr, "%s: bad seed '%s'\n", prog, val);
					exit(2);
				}
			}
			have_seed = true;
			continue;
		}
		if (nlen == 11 && strncmp(a, "print-stats", 11) == 0) {
			st_print_stats = true;
			continue;
		}
		if (nlen == 5 && strncmp(a, "stall", 5) == 0) {
			ST_TAKE_VALUE();
			st_stall_seconds = atof(val);
			continue;
		}
		if (nlen == 10 && strncmp(a, "ebb-option", 10) == 0) {
			ST_TAKE_VALUE();
			char name[128];
			const char *e2 = strchr(val, '=');
			if (!e2 || (size_t)(e2 - val) >= sizeof name) {
				fprintf(stderr, "%s: --ebb-option wants name=value, got '%s'\n", prog, val);
				exit(2);
			}
			memcpy(name, val, (size_t)(e2 - val));
			name[e2 - val] = 0;
			if (strncmp(name, "fault_", 6) == 0 && strcmp(e2 + 1, "off") != 0)
				st_faults = true;
			if (ebb_option_set(name, e2 + 1) != 0) {
				fprintf(stderr, "%s: ebb_option_set(\"%s\", \"%s\") failed: %s\n", prog, name, e2 + 1,
				        strerror(errno));
				exit(2);
			}
			continue;
		}
		size_t k;
		for (k = 0; k < n; k++)
			if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, a, nlen) == 0)
				break;
		if (k == n) {
			fprintf(stderr, "%s: unknown option '--%.*s' (try --help)\n", prog, (int)nlen, a);
			exit(2);
		}
		if (opts[k].kind == ST_OPT_BOOL && !val) {
			/* --flag alone means 1; --flag 0 / --flag 1 also work */
			if (i + 1 < argc && (strcmp(argv[i + 1], "0") == 0 || strcmp(argv[i + 1], "1") == 0))
				val = argv[++i];
			else {
				*(bool *)opts[k].ptr = true;
				continue;
			}
		}
		ST_TAKE_VALUE();
#undef ST_TAKE_VALUE
		uint64_t v;
		bool ok = true;
		switch (opts[k].kind) {
		case ST_OPT_COUNT:
			ok = st_parse_number(val, false, &v);
			if (ok)
				*(uint64_t *)opts[k].ptr = v;
			break;
		case ST_OPT_SIZE:
			ok = st_parse_number(val, true, &v);
			if (ok)
				*(size_t *)opts[k].ptr = (size_t)v;
			break;
		case ST_OPT_DOUBLE: {
			char *end;
			double d = strtod(val, &end);
			ok = end != val && !*end;
			if (ok)
				*(double *)opts[k].ptr = d;
			break;
		}
		case ST_OPT_BOOL:
			ok = (strcmp(val, "0") == 0 || strcmp(val, "1") == 0);
			if (ok)
				*(bool *)opts[k].ptr = val[0] == '1';
			break;
		}
		if (!ok) {
			fprintf(stderr, "%s: bad value '%s' for --%s\n", prog, val, opts[k].name);
			exit(2);
		}
	}
	if (!have_seed) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = st_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 48)) %
		       1000000000000ull;
	}
	st_seed = seed;
	setvbuf(stdout, NULL, _IOLBF, 0);
}

/* Prints the command line so that a failing run can be repeated. */
static ST_UNUSED void st_print_config(int argc, char **argv)
{
	printf("%s: seed %" PRIu64 "; command:", st_prog, st_seed);
	for (int i = 0; i < argc; i++)
		printf(" %s", argv[i]);
	printf("\n");
	fflush(stdout);
}

/* ------------------------------------------------------------------------
 * Progress and the watchdog. Workers bump their counter; a watchdog thread
 * that sees no counter move for st_stall_seconds prints every counter and
 * every task's state (a deadlock in the allocator shows as threads asleep
 * in futex), then aborts, before CTest's timeout would kill us silently.
 * --------------------------------------------------------------------- */
typedef struct {
	_Alignas(64) atomic_uint_fast64_t n;
} st_counter;

static st_counter st_progress[ST_MAX_THREADS + 1]; /* last one: main and helpers */
static atomic_int st_watchdog_stop;
static pthread_t st_watchdog_thread;
static bool st_watchdog_running;

static inline void st_tick(void)
{
	int t = st_tid >= 0 && st_tid < ST_MAX_THREADS ? st_tid : ST_MAX_THREADS;
	atomic_fetch_add_explicit(&st_progress[t].n, 1, memory_order_relaxed);
}

/* Prints one line per task of process pid: state, syscall wait channel. */
static ST_UNUSED void st_dump_tasks(pid_t pid)
{
	char path[320];
	snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d) {
		fprintf(stderr, "%s:   (cannot read %s)\n", st_prog, path);
		return;
	}
	struct dirent *e;
	int shown = 0;
	while ((e = readdir(d)) != NULL && shown < 64) {
		if (e->d_name[0] == '.')
			continue;
		char buf[512] = "", wchan[96] = "";
		snprintf(path, sizeof path, "/proc/%d/task/%s/stat", (int)pid, e->d_name);
		int fd = open(path, O_RDONLY);
		if (fd >= 0) {
			ssize_t k = read(fd, buf, sizeof buf - 1);
			buf[k > 0 ? k : 0] = 0;
			close(fd);
		}
		snprintf(path, sizeof path, "/proc/%d/task/%s/wchan", (int)pid, e->d_name);
		fd = open(path, O_RDONLY);
		if (fd >= 0) {
			ssize_t k = read(fd, wchan, sizeof wchan - 1);
			wchan[k > 0 ? k : 0] = 0;
			close(fd);
		}
		/* stat: "tid (comm) S ..." -- show comm and state */
		char *rp = strrchr(buf, ')');
		char state = rp && rp[1] == ' ' ? rp[2] : '?';
		char *lp = strchr(buf, '(');
		if (rp)
			*rp = 0;
		fprintf(stderr, "%s:   task %s (%s) state %c wchan %s\n", st_prog, e->d_name, lp ? lp + 1 : "?", state,
		        wchan[0] ? wchan : "-");
		shown++;
	}
	closedir(d);
}

/* If gdb is installed (and $EBB_STRESS_NO_GDB is not set), prints every
 * thread's stack of process pid: where a hung allocator is stuck. */
static ST_UNUSED void st_gdb_backtrace(pid_t pid)
{
	const char *no = getenv("EBB_STRESS_NO_GDB");
	if ((no && *no) || access("/usr/bin/gdb", X_OK) != 0)
		return;
	char cmd[256];
	snprintf(cmd, sizeof cmd,
	         "timeout 60 /usr/bin/gdb -p %d -batch -nx -q -ex 'thread apply all bt 30' </dev/null 1>&2 2>/dev/null",
	         (int)pid);
	fprintf(stderr, "%s:   stacks of process %d (gdb):\n", st_prog, (int)pid);
	fflush(stderr);
	if (system(cmd) != 0)
		fprintf(stderr, "%s:   (gdb could not attach)\n", st_prog);
}

static void *st_watchdog_main(void *arg)
{
	(void)arg;
	uint64_t last = UINT64_MAX;
	double last_change = st_now();
	while (!atomic_load_explicit(&st_watchdog_stop, memory_order_acquire)) {
		st_sleep_ms(250);
		uint64_t sum = 0;
		for (int i = 0; i <= ST_MAX_THREADS; i++)
			sum += atomic_load_explicit(&st_progress[i].n, memory_order_relaxed);
		double now = st_now();
		if (sum != last) {
			last = sum;
			last_change = now;
		} else if (now - last_change > st_stall_seconds && st_stall_seconds > 0) {
			(void)atomic_exchange(&st_failing, 1);
			fprintf(stderr, "\n%s: FAIL: no progress for %.0f s (deadlock or livelock?); progress counters:\n",
			        st_prog, now - last_change);
			for (int i = 0; i <= ST_MAX_THREADS; i++) {
				uint64_t v = atomic_load_explicit(&st_progress[i].n, memory_order_relaxed);
				if (v)
					fprintf(stderr, "%s:   %s %d: %" PRIu64 "\n", st_prog,
					        i == ST_MAX_THREADS ? "main/helpers" : "thread", i, v);
			}
			st_dump_tasks(getpid());
			st_gdb_backtrace(getpid());
			ST_FAIL("hang: no progress for %.0f s (seed %" PRIu64 ")", now - last_change, st_seed);
		}
	}
	return NULL;
}

static ST_UNUSED void st_watchdog_start(void)
{
	if (st_stall_seconds <= 0)
		return;
	atomic_store(&st_watchdog_stop, 0);
	if (pthread_create(&st_watchdog_thread, NULL, st_watchdog_main, NULL) != 0)
		ST_FAIL("cannot start the watchdog thread");
	st_watchdog_running = true;
}

static ST_UNUSED void st_watchdog_end(void)
{
	if (!st_watchdog_running)
		return;
	atomic_store_explicit(&st_watchdog_stop, 1, memory_order_release);
	pthread_join(st_watchdog_thread, NULL);
	st_watchdog_running = false;
}

/* ------------------------------------------------------------------------
 * Threads, memory, statistics.
 * --------------------------------------------------------------------- */
static ST_UNUSED void st_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int rc = pthread_create(t, NULL, fn, arg);
	if (rc != 0)
		ST_FAIL("pthread_create failed: %s", strerror(rc));
}

static ST_UNUSED void st_thread_join(pthread_t t)
{
	int rc = pthread_join(t, NULL);
	if (rc != 0)
		ST_FAIL("pthread_join failed: %s", strerror(rc));
}

/* Resident set size now, from /proc/self/statm (no allocation). */
static ST_UNUSED size_t st_rss_bytes(void)
{
	char buf[128];
	int fd = open("/proc/self/statm", O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t k = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (k <= 0)
		return 0;
	buf[k] = 0;
	unsigned long long size = 0, res = 0;
	if (sscanf(buf, "%llu %llu", &size, &res) != 2)
		return 0;
	return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* Peak RSS of this process so far (getrusage; Linux reports KiB). */
static ST_UNUSED size_t st_maxrss_bytes(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (size_t)ru.ru_maxrss * 1024;
}

static ST_UNUSED void st_stats_print_short(const struct ebb_stats *s, const char *what)
{
	if (st_print_stats) {
		printf("%s: %s: ebb_stats_print:\n", st_prog, what);
		fflush(stdout);
		ebb_stats_print(stdout);
		fflush(stdout);
	}
	printf("%s: %s: mapped %.1f MiB, resident %.1f MiB, allocated %.1f MiB, threads %" PRIu64
	       ", superblocks %" PRIu64 "\n",
	       st_prog, what, (double)s->mapped / ST_MIB, (double)s->resident / ST_MIB, (double)s->allocated / ST_MIB,
	       s->threads, s->superblocks);
}

/* The header promises, with no other thread allocating:
 *   mapped == allocated + tcache + central + dirty + purged + metadata + waste
 * A background purge may be moving bytes between gauges while we read, so
 * this takes a few snapshots and fails only if none adds up. */
static ST_UNUSED void st_check_stats_identity(const char *when)
{
	struct ebb_stats s;
	for (int attempt = 0; attempt < 20; attempt++) {
		ebb_stats_get(&s);
		uint64_t sum = s.allocated + s.tcache + s.central + s.dirty + s.purged + s.metadata + s.waste;
		if (sum == s.mapped)
			return;
		st_sleep_ms(10);
	}
	uint64_t sum = s.allocated + s.tcache + s.central + s.dirty + s.purged + s.metadata + s.waste;
	fprintf(stderr, "%s: statistics %s (last of 20 snapshots, 10 ms apart):\n", st_prog, when);
	ebb_stats_print(stderr);
	ST_FAIL("%s: ebb_stats_get: mapped %" PRIu64 " != allocated + tcache + central + dirty + purged + metadata"
	        " + waste = %" PRIu64 " (difference %" PRId64 ") with no other thread allocating",
	        when, s.mapped, sum, (int64_t)(s.mapped - sum));
}

#endif /* EBB_STRESS_UTIL_H */
