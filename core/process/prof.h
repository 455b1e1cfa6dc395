/* prof.h: the sampled heap profiler (options prof, prof_sample, prof_file,
 * prof_leaks; docs/usage.md says how to use it).
 *
 * Sampling: each thread counts down the bytes it allocates (prof_left); the
 * allocation that takes the count below zero is sampled, and the distance
 * to the next one is drawn from an exponential distribution of mean
 * prof_sample bytes (a per-thread PRNG). An allocation of n bytes is thus
 * sampled with probability 1 - exp(-n / prof_sample), whatever came before
 * it, which is what pprof assumes when it scales samples back up (heap_v2).
 *
 * A sample of a small allocation (malloc, calloc, operator new, realloc
 * from NULL: up to EBB_SMALL_MAX - PROF_INNER bytes, no alignment above
 * EBB_MIN_ALIGN, up to a size whose block stays small; and a realloc's move
 * to a small block, prof_alloc_moved) is an inner one: a
 * small block from the thread's cache (the unsampled block's class when
 * the size leaves PROF_INNER bytes of it, else the next: prof.c,
 * prof_inner_bytes), the program's pointer PROF_INNER bytes
 * into it. That pointer fails the block test of every fast path (free's,
 * realloc's, malloc_usable_size's: it is no block's start), so each of
 * them reaches its slow path with it, and only the slow paths ask the
 * profiler (prof_free_inner, prof_inner_usable): the fast paths, prof on
 * or off, run no instruction for it. Free's slow path is tcache_free_slow,
 * which would report the pointer: with prof on every free goes through
 * api_prof_free (core/api/api.c: free, ebb_free, free_sized and
 * operator delete are redirected to it at start-up as malloc is), whose
 * slow path asks the profiler first. Inner samples are made only when
 * that redirect was written (prof_set_inner), else (threads ran already
 * at start-up) every sample is a page run as below.
 *
 * Every other sampled block (larger, aligned, or moved by realloc to a page
 * run or a mapping) is served as a page run of its own (large_alloc), so a
 * free of it never
 * stays on the small-block fast path: the profiler looks at frees of
 * those where page runs are freed (large_free_checked's hook, set when
 * prof is on). The sample table maps the live sampled blocks to their
 * allocation sites (a stack, deduplicated); sites also keep the totals
 * sampled since start. Both live in metadata memory, never freed.
 *
 * Off (the default) none of this runs: core/api/api.c's standard names
 * (malloc, calloc, realloc, operator new) are their plain code, and only
 * when prof=1 does the library constructor write a jump to their prof
 * variants over their entries (os_code_redirect), and point the PLT slots
 * of malloc and calloc in the objects loaded then at the variants
 * (os_plt_redirect: a program's call skips the jump), so the fast paths are
 * today's, instruction for instruction. The prefixed API tests prof_on.
 *
 * Locking: one lock over both tables, a leaf (nothing is called under it
 * that takes another lock) taken without an allocator lock held; the
 * unwinder runs before it is taken. realloc's look at a live page-run
 * sample (prof_realloc_usable) reads a small cache written under the lock
 * instead, without it (prof.c, prof_run_cache). Fork takes it before every other
 * allocator lock (its own pthread_atfork handler, registered after
 * fork.c's, so it runs first). A per-thread flag keeps the profiler from
 * sampling the allocations of its own calls (dlopen of the unwinder). */
#ifndef EBB_CORE_PROF_H
#define EBB_CORE_PROF_H

#include "core/base/config.h"
#include "core/base/util.h"
#include "core/pages/large.h"

EBB_BEGIN_DECLS

/* Bytes this thread may still allocate before the next sample. Starts at 0,
 * so a thread's first allocation asks prof_should_sample, which seeds the
 * thread (and, with prof off, sets it out of reach). */
extern __thread int64_t prof_left __attribute__((tls_model("initial-exec")));
/* Sampling is on (set once prof_setup read the options): the prefixed API's
 * test. */
extern bool prof_on;

/* Whether a page run or huge block is a live sampled block is its span's
 * sampled mark (span.h: u.large.sampled), set while the block is listed
 * (a live or a kept sample) and read with no lock by free
 * (large_free_checked) and realloc (core/api/api.c), which have the
 * descriptor loaded; a stray 1 only costs a look in the table. (Filters
 * of counters by a hash of the page, raised and lowered with each live
 * sample and with each kept one, answered realloc before: about 15 and 20
 * instructions a sample to keep, and the mark says the same where the
 * span is at hand.) */

/* The small-block malloc and free (tcache/'s) that a sample of a small
 * allocation takes and frees the block it stands for with (prof.c). The
 * free returns true, so that the free hook can end with a tail call of
 * it. */
void prof_set_small(void *(*alloc)(size_t size), bool (*free_fn)(void *p));

/* How far into its small block an inner sample's pointer is: the
 * alignment malloc promises, and less than any class's size, so never a
 * block start. */
#define PROF_INNER EBB_MIN_ALIGN
/* Inner samples may be made from now on (on): every way to free a block
 * asks prof_free_inner on its slow path (core/api/api.c). */
void prof_set_inner(bool on);
/* A free of p that the small-block test turned down: true if p was a live
 * inner sample, dropped from the table (its count's live totals) and its
 * block freed; false if not (the caller reports p as it would have). Takes
 * the profiler's lock, any thread. */
bool prof_free_inner(void *p);
/* p's usable size if p is a live inner sample (what its block holds past
 * PROF_INNER), else 0; then *class_usable (if not NULL) is that of the
 * small block an unsampled allocation of its size (or the unsampled move,
 * prof_alloc_moved) would have been, which realloc resizes it as (in
 * place only within the usable size: the two differ by PROF_INNER bytes at
 * most, for sizes that fill their class). Answered without the lock for a
 * sample asked about before (prof.c, prof_inner_cache): realloc asks at
 * every call on one. */
size_t prof_inner_usable(const void *p, size_t *class_usable);

/* The prof variants' only cost on an allocation: true when this one of
 * `size` bytes crossed the sampling point (then ask prof_should_sample). */
EBB_INLINE bool prof_tick(size_t size)
{
	/* True on the borrow (size > prof_left), not on a negative result:
	 * prof_left is >= 0 whenever a tick starts (each true tick is followed
	 * by prof_should_sample, which draws again, or is undone), so the two
	 * agree for every size up to 2^63, and a request of 2^63 bytes or more
	 * (which fails) ticks true too instead of wrapping prof_left to a
	 * huge positive distance that would stop this thread's sampling. So
	 * a caller needs no test of the size before the tick. */
#if defined(__x86_64__)
	/* gcc 12 makes the C below a load, subtraction, store and jump after
	 * the TLS offset's load; here the subtraction is from memory (as
	 * prof_tick_patched's) and the jump goes to the common case. */
	__asm__ goto("subq %1, %0\n\t"
		     "jae %l[counted]"
		     : /* no output: gcc 12 mislinks asm goto outputs here */
		     : "m"(prof_left), "r"(size)
		     : "cc", "memory"
		     : counted);
	return true;
counted:
	return false;
#else
	uint64_t left;
	bool borrow = __builtin_sub_overflow((uint64_t)prof_left, (uint64_t)size, &left);
	prof_left = (int64_t)left;
	return EBB_UNLIKELY(borrow);
#endif
}

/* prof_tick for the variants that api_prof_redirect makes the standard
 * names jump to (malloc, operator new), on x86-64: prof_left's offset from
 * the thread pointer is written into the subtraction itself at start-up
 * (os_tls_patch, before the redirect makes the code reachable), so the
 * tick is a subtraction from memory and a jump: the GOT load of the TLS
 * offset is gone (4 instructions per malloc with the redirect's jump, now
 * 3). The placeholder PROF_TICK_DISP is what os_tls_patch checks it
 * overwrites; the section ebb_prof_ticks lists the instructions. Never
 * run unpatched: the prefixed API and everything reached before the
 * redirect use prof_tick. */
#define PROF_TICK_DISP 0x7e5a1f00
#if defined(__x86_64__)
EBB_INLINE bool prof_tick_patched(size_t size)
{
	__asm__ goto("1: subq %0, %%fs:%c1\n\t"
		     ".pushsection ebb_prof_ticks, \"aw\"\n\t"
		     ".balign 8\n\t"
		     ".quad 1b\n\t"
		     ".popsection\n\t"
		     "jb %l[sample]" /* the borrow, as prof_tick's */
		     :
		     : "r"(size), "i"(PROF_TICK_DISP)
		     : "cc", "memory"
		     : sample);
	return false;
sample:
	__attribute__((cold));
	return true;
}
#else
#define prof_tick_patched prof_tick
#endif

/* The same variants load this thread's cache pointer (tcache_tls,
 * tcache/tcache.h; void * here, which knows no tcache_t) the same way:
 * its offset from the thread pointer is written into the load at start-up
 * (api_prof_patch; the section ebb_prof_tcache lists the loads), one
 * instruction where tcache_self() takes two (the GOT load of the offset,
 * then the load from fs). That pays for half of the tick: malloc with
 * prof=1 is one instruction more than with prof=0 instead of two
 * (bench_fastpath same slot, callgrind, measured at 908dfe7 where prof=0
 * was 52: 53 per pair, was 54); the
 * plain entry points are untouched. calloc's variant and the sizes above
 * TCACHE_DIRECT_MAX (api_prof_alloc_mid, core/api/api.c) too. Never run unpatched, as
 * prof_tick_patched. x86-64 only (the callers use tcache_self()
 * elsewhere). */
#define PROF_TCACHE_DISP 0x7e5a1f08
#if defined(__x86_64__)
EBB_INLINE void *prof_tcache_patched(void)
{
	void *tc;
	__asm__("1: movq %%fs:%c1, %0\n\t"
		".pushsection ebb_prof_tcache, \"aw\"\n\t"
		".balign 8\n\t"
		".quad 1b\n\t"
		".popsection"
		: "=r"(tc)
		: "i"(PROF_TCACHE_DISP));
	return tc;
}
#endif

/* The code prof=1 writes into at start-up (os_code_redirect's entries,
 * prof_tick_patched's subtractions), gathered in one page: each code page
 * written is a copy-on-write fault of the process (3 when these were spread
 * over .text). core/api/layout.ld puts these sections of every object
 * first (api.c's, then cxx_new.cpp's, about 2.9 KiB), then the EBB_HOT_TEXT
 * functions (core/base/util.h), and api.c aligns the section to a page
 * (PROF_PATCHED_ALIGN). 2.9 KiB of
 * the page's 4 are taken since calloc's variant and api_prof_alloc_mid
 * joined them: patched code that grows past it costs each process one
 * fault more (prof.own_faults' bound leaves room for it). */
#if defined(__x86_64__) /* the only target that writes code (os_prof.c) */
#define PROF_PATCHED __attribute__((section(".text.hot.ebb_prof_patched")))
#define PROF_PATCHED_ALIGN                                                                                 \
	__asm__(".pushsection .text.hot.ebb_prof_patched,\"ax\",@progbits\n\t.balign 4096\n\t.popsection")
#else
#define PROF_PATCHED
#define PROF_PATCHED_ALIGN _Static_assert(1, "")
#endif

/* After prof_tick said true: whether this allocation is sampled (false for
 * a thread's first count, inside the profiler, or with prof off); draws the
 * next distance. A size above EBB_MAX_REQUEST may be sampled: prof_alloc
 * then fails it with ENOMEM, as the caller's own path would (the tick of a
 * thread's first count or inside the profiler is undone instead). */
EBB_NOINLINE bool prof_should_sample(size_t size);
/* A sampled block: a page run of at least `size` bytes aligned to `align`,
 * zeroed if `zero`, recorded with the stack from the frame whose return
 * address is `ret` (the entry point's caller) outwards. NULL with errno
 * ENOMEM. */
EBB_NOINLINE void *prof_alloc(size_t size, size_t align, bool zero, void *ret);
/* prof_alloc for a realloc that moves a block to `size` bytes: the block
 * has `bytes` >= size (the headroom realloc gives a growing block, so that
 * a sampled string is not moved again at its next few growths); the sample
 * records size. A move to a small block is an inner sample in a block of
 * the class the unsampled move takes (prof.c, prof_alloc_inner), so that
 * the string's bytes lie where they would unsampled, on lines and pages
 * the program is using: it then holds PROF_INNER bytes less than that
 * class when size leaves them, and moves there, PROF_INNER bytes before
 * the unsampled block would (a kept-size run for each, as before, cost
 * bench realloc string about 40 minor faults a run more than prof=0, and
 * 3-4% of its CPU time). mapped: the block is a mapping of its own
 * (large_alloc_mapped), as the same move unsampled gets, so that its next
 * growths are mremaps too (a page run cost bench realloc vector ~2 400
 * minor faults more with prof=1). run: the unsampled move takes a page
 * run of its own (core/api/api.c, REALLOC_RUN_MIN), and so does the sample. */
EBB_NOINLINE void *prof_alloc_moved(size_t size, size_t bytes, bool mapped, bool run, void *ret);
/* A sampled block stands in for the small block the allocation would have
 * had unsampled, and realloc resizes it as that block (core/api/api.c,
 * realloc_slow_at): in place while its class holds the size at no more
 * than twice, else moved to the class an unsampled block of that class
 * would move to. So a sampled string climbs the same ladder of classes as
 * the others instead of one of its own (page runs grown by a quarter, then
 * classes 1.5 apart from there), which took fresh pages and spans of
 * classes nothing else used: bench realloc string, 64 MB, medians of 9,
 * 3 480 page faults and 89 purges a run against 1 800 and 19 with prof
 * off; 2 330 and 39 since. For a realloc of p, a page run whose span has
 * the sampled mark (a live or a kept sample, or a stray mark): that
 * class's usable size if p is a live sample of one, 0 if not (its page
 * run is what it holds); SIZE_MAX if p is a kept sample block (freed
 * already), reported (a double free, as realloc's) and let go of first,
 * a page run the realloc then goes on with if on_error=warn returns. A
 * live sample p stays listed whatever the realloc does: resized in place
 * it stays sampled as it was (as in tcmalloc); moved or freed, its free
 * reaches the profiler through large_free_checked's hook like any other.
 * Takes the profiler's lock. */
size_t prof_realloc_usable(void *p);

/* prof_realloc_usable's answer when it needs neither the span nor the
 * lock: the usable size of the class that p, a live page-run sample,
 * stands in for, read from the cache of the last samples listed (a slot
 * names only a sample listed now, and a realloc's caller owns p: no other
 * thread unlists it meanwhile); 0 if the cache does not say (then look at
 * p's span and ask prof_realloc_usable). A sampled string grown a few bytes
 * at a time asks at every realloc (bench realloc string 16M: about 5 900
 * calls), which this answers without the span's look; realloc's profiler
 * copies ask it before their slow path (core/api/api.c,
 * realloc_run_stays_prof), with the span looked at. */
size_t prof_realloc_cached(const void *p);
/* Around a resize of p that may move it without a free (a huge block,
 * mremap: core/api/api.c, realloc_slow_at): begin takes p's sample out of
 * the table if p is a live sampled block (NULL if not), end lists it again
 * at q, where the block is now (p if it stayed or the resize failed), with
 * its stack and size. Out of the table in between, so that a block mapped
 * at p's old address meanwhile by another thread is never taken for it.
 * span: p's descriptor, whose sampled mark says whether to look. */
void *prof_resize_begin(void *p, span_t *span);
void prof_resize_end(void *entry, void *q);
/* Whether p is a live sampled block. */
bool prof_holds(const void *p);

/* From the library constructor: reads the options, loads the unwinder and
 * registers the fork handlers when prof is on; whether it is. */
bool prof_start(void);
/* From the library destructor: the leak report (prof_leaks) and the profile
 * (prof_file). */
void prof_at_exit(void);
/* ebb_prof_dump: 0, or -1 with errno (ENOTSUP when prof is off). */
int prof_dump(const char *path);

EBB_END_DECLS

#endif /* EBB_CORE_PROF_H */
