/* api_util.h: helpers shared by the API-level tests of tests/api.
 *
 * The tests call the allocator only through its public names. The same test
 * body usually runs against several "APIs": the ebb_* functions (every build)
 * and the standard names malloc/free/... (only when the library overrides
 * them, EBB_TEST_OVERRIDE=1). An Api is a table of function pointers; calling
 * through pointers also keeps the compiler from folding or deleting the calls
 * it knows as builtins (the test sources are compiled with -fno-builtin too).
 */
#ifndef EBB_TESTS_API_UTIL_H
#define EBB_TESTS_API_UTIL_H

#include <ebbmalloc.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

#ifndef EBB_TEST_OVERRIDE
#define EBB_TEST_OVERRIDE 0
#endif

#if defined(__SANITIZE_THREAD__)
#define EBB_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EBB_TEST_TSAN 1
#endif
#endif
#ifndef EBB_TEST_TSAN
#define EBB_TEST_TSAN 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define EBB_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EBB_TEST_ASAN 1
#endif
#endif
#ifndef EBB_TEST_ASAN
#define EBB_TEST_ASAN 0
#endif
/* A thread started in the child of a multithreaded fork: TSan refuses it, and
 * gcc 12's ASan does not hold its own allocator's lock across fork, so the
 * child's new thread can wait forever on that lock, left taken by a parent
 * thread (seen in gdb: __sanitizer::SizeClassAllocator64::GetFromAllocator
 * under AsanThread::ThreadStart). Neither is ebbmalloc's to fix. */
#define EBB_TEST_THREADS_AFTER_FORK (!EBB_TEST_TSAN && !EBB_TEST_ASAN)

namespace apitest {

constexpr size_t KiB = 1024;
constexpr size_t MiB = 1024 * 1024;

/* Hides a value from the optimizer, so that calls with constant arguments are
 * made as written. */
template <class T> inline T opaque(T v)
{
	asm volatile("" : "+r"(v));
	return v;
}

struct Api {
	const char *name;
	void *(*malloc_)(size_t);
	void (*free_)(void *);
	void *(*calloc_)(size_t, size_t);
	void *(*realloc_)(void *, size_t);
	void *(*reallocarray_)(void *, size_t, size_t);
	int (*posix_memalign_)(void **, size_t, size_t);
	void *(*aligned_alloc_)(size_t, size_t);
	void *(*memalign_)(size_t, size_t);
	void *(*valloc_)(size_t);
	void *(*pvalloc_)(size_t);
	size_t (*usable_)(const void *);
};

const Api &ebb_api();
#if EBB_TEST_OVERRIDE
const Api &std_api();
#endif
/* ebb_api(), then std_api() when the standard names are ebbmalloc's. */
std::vector<const Api *> all_apis();

size_t page_size();
inline bool is_aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }
inline bool is_pow2(size_t a) { return a && !(a & (a - 1)); }
/* Monotonic milliseconds, for tests that wait on the allocator's clocks. */
inline double now_ms()
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* A pattern that depends on the seed and on the offset (so a block copied to
 * the wrong place or shifted by a page does not verify). first_mismatch
 * returns n when [p, p+n) holds the pattern, else the first bad offset. */
void fill(void *p, size_t n, unsigned seed);
size_t first_mismatch(const void *p, size_t n, unsigned seed);
/* Offset of the first non-zero byte, n if all zero. */
size_t first_nonzero(const void *p, size_t n);

/* Allocator statistics. */
ebb_stats_t stats();
uint64_t stats_parts(const ebb_stats_t &s); /* allocated + tcache + ... + waste */
std::string stats_str(const ebb_stats_t &s);
/* What ebb_stats_print writes, as a string. */
std::string stats_print_text();

/* Runs `prog mode 0` in a fresh exec (a forked child of a test inherits its
 * heap and its threaded state), with env as its whole environment, stdout
 * and stderr into *text, and an alarm of 60 s; the wait status. */
int run_fresh(const char *prog, const char *mode, const char *env, std::string *text);

/* A small deterministic PRNG (xorshift64*). */
struct Rng {
	uint64_t s;
	explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
	uint64_t next()
	{
		s ^= s >> 12;
		s ^= s << 25;
		s ^= s >> 27;
		return s * 0x2545F4914F6CDD1Dull;
	}
	size_t below(size_t n) { return n ? (size_t)(next() % n) : 0; }
	/* Log-uniform in [0, max]. */
	size_t log_size(size_t max)
	{
		unsigned bits = 0;
		while (((size_t)1 << bits) < max) bits++;
		size_t top = (size_t)1 << below(bits + 1);
		size_t v = below(top + 1);
		return v > max ? max : v;
	}
};

} // namespace apitest

#endif
