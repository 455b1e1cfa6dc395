/* util.h: attributes, bit and alignment helpers, and internal assertions that
 * print without allocating. Pure header; no state. */
#ifndef EBB_CORE_UTIL_H
#define EBB_CORE_UTIL_H

#include "core/base/config.h"

#define EBB_INLINE static inline __attribute__((always_inline))
#define EBB_NOINLINE __attribute__((noinline))
#define EBB_COLD __attribute__((cold, noinline))
#define EBB_LIKELY(x) __builtin_expect(!!(x), 1)
#define EBB_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define EBB_HIDDEN __attribute__((visibility("hidden")))
#define EBB_NORETURN __attribute__((noreturn))
#define EBB_ALIGNED(n) __attribute__((aligned(n)))
#define EBB_UNUSED __attribute__((unused))
/* A large zero-filled table (tens of KiB or more), placed in .lbss, which the
 * linker puts after all of .bss: among the small globals it would spread
 * them over more pages, each written page one more fault and 4 KiB more RSS
 * in every process. Still zero-fill, still reached RIP-relative (the code
 * model is unchanged). Only for tables a process need not touch. */
#define EBB_BIG_ZERO __attribute__((section(".lbss")))
/* The code that every malloc, free and realloc of a busy program runs (the
 * API's free and realloc bodies, realloc's move to a smaller class, the
 * thread cache's slow paths), gathered by core/api/layout.ld's ".text.hot.*" rule
 * (next to malloc and calloc, core/process/prof.h's PROF_PATCHED) instead of
 * spread over .text by link order. Spread, free, realloc and realloc_shrink
 * fell on the same sets of a 32 KiB 8-way instruction cache (the sets are
 * the address bits 6-11) as each other and as the hot code of python3:
 * py_alloc.py --threads=1 --rounds=2 with PYTHONMALLOC=malloc, cachegrind's
 * model, I1 misses 3.43 M -> 2.62 M (tcmalloc 2.31 M): realloc_shrink's
 * own 155 K (2 a call) -> 8 K, free's 51 K -> 1 K; data misses and
 * instructions unchanged. Which sets the
 * program's own code uses is the program's layout, so this only keeps ours
 * few and adjacent; it cannot promise no conflict. */
#define EBB_HOT_TEXT __attribute__((section(".text.hot.ebb_fast")))

EBB_BEGIN_DECLS

static inline uintptr_t util_align_up(uintptr_t x, uintptr_t align)
{
	return (x + align - 1) & ~(align - 1);
}

static inline uintptr_t util_align_down(uintptr_t x, uintptr_t align)
{
	return x & ~(align - 1);
}

static inline bool util_is_pow2(size_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

/* Time from `then` to `now`, 0 if `then` is later: clock readings taken by
 * different threads are compared, and a reading taken before another may be
 * compared with it after. */
static inline uint64_t util_elapsed(uint64_t now, uint64_t then)
{
	return now > then ? now - then : 0;
}

/* Floor of log2; x must be non-zero. */
static inline unsigned util_log2(size_t x)
{
	return (unsigned)(63 - __builtin_clzll((unsigned long long)x));
}

static inline size_t util_pages(size_t bytes)
{
	return (bytes + EBB_PAGE_SIZE - 1) >> EBB_PAGE_SHIFT;
}

/* Internal invariant violated: print file:line and the condition, then abort.
 * Never allocates (report.c writes with os_write_err). */
EBB_NORETURN void report_assert_failed(const char *file, int line, const char *cond);

#define EBB_CHECK(cond)                                                          \
	do {                                                                     \
		if (EBB_UNLIKELY(!(cond)))                                       \
			report_assert_failed(__FILE__, __LINE__, #cond);         \
	} while (0)

#if EBB_DEBUG >= 1
#define EBB_ASSERT(cond) EBB_CHECK(cond)
#else
#define EBB_ASSERT(cond) ((void)0)
#endif

EBB_END_DECLS

#endif /* EBB_CORE_UTIL_H */
