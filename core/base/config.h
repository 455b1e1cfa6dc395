/* config.h: compile-time constants of ebbmalloc and the static checks that tie
 * them together. Everything here is a constant; runtime settings live in
 * options.c. Every other file may include this one; it includes nothing of
 * the project. */
#ifndef EBB_CORE_CONFIG_H
#define EBB_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define EBB_BEGIN_DECLS extern "C" {
#define EBB_END_DECLS }
#else
#define EBB_BEGIN_DECLS
#define EBB_END_DECLS
#endif

/* Pages: always the OS page. ebbmalloc supports 4 KiB pages (x86-64 Linux);
 * init refuses to run on anything else rather than purging wrong ranges. */
#define EBB_PAGE_SHIFT 12
#define EBB_PAGE_SIZE ((size_t)1 << EBB_PAGE_SHIFT)

/* Superblocks: 4 MiB, aligned to their size, so p & ~(4 MiB - 1) is the
 * header of p's superblock. Why 4 MiB (docs/architecture.md): the header (span
 * descriptors for 1024 pages) costs 1.6% of address space and at most a few
 * pages of RAM; large blocks up to ~3.9 MiB come from the page heap, where
 * they are cached and decayed instead of paying mmap+fault every time; the
 * registry needs only 2^25 byte entries for a 47-bit address space. */
#define EBB_SB_SHIFT 22
#define EBB_SB_SIZE ((size_t)1 << EBB_SB_SHIFT)
#define EBB_SB_PAGES (EBB_SB_SIZE >> EBB_PAGE_SHIFT)

/* User address space covered by the superblock registry: x86-64 Linux gives
 * programs 47-bit addresses unless they ask for more with mmap hints. */
#define EBB_ADDR_BITS 47
#define EBB_REGISTRY_ENTRIES ((size_t)1 << (EBB_ADDR_BITS - EBB_SB_SHIFT))

/* Small blocks: sizes up to EBB_SMALL_MAX go through size classes, thread
 * caches and central lists. Larger ones are whole page runs. */
#define EBB_SMALL_MAX ((size_t)32768)
/* Number of size classes including class 0, which means "not a small block". */
#define EBB_NUM_CLASSES 78
/* Every block is aligned to at least this, as malloc must be. */
#define EBB_MIN_ALIGN ((size_t)16)

/* Upper bounds on structures sized by the machine. CPUs beyond the bound share
 * central lists (cpu % EBB_MAX_CPUS); page heaps are shared by CPUs likewise. */
#define EBB_MAX_CPUS 1024
#define EBB_MAX_HEAPS 64

#define EBB_CACHELINE 64

/* Largest request accepted at all: beyond it, ENOMEM without trying. Keeps
 * every size computation below free of overflow. */
#define EBB_MAX_REQUEST (((size_t)1 << 46))

/* Debug level: 0 release, 1 cheap internal asserts, 2 expensive checks. */
#ifndef EBB_DEBUG
#define EBB_DEBUG 0
#endif

/* Invariant checkers (cmake -DEBB_INVARIANTS=ON): lock order, span state
 * transitions, page-heap, central-list and thread-cache identities, checked
 * as the code runs (core/runtime/lock_check.c, core/pages/span_check.c,
 * core/blocks/central_check.c, tcache/tcache_check.c). 0: every check and
 * every field it needs compile out; release builds pay nothing. */
#ifndef EBB_INVARIANTS
#define EBB_INVARIANTS 0
#endif

#if defined(__SANITIZE_THREAD__)
#define EBB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EBB_TSAN 1
#endif
#endif
#ifndef EBB_TSAN
#define EBB_TSAN 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define EBB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EBB_ASAN 1
#endif
#endif
#ifndef EBB_ASAN
#define EBB_ASAN 0
#endif

#ifndef __cplusplus
_Static_assert(EBB_SB_PAGES == 1024, "a pmap entry holds the first page in bits 12-21 (superblock.h)");
_Static_assert(EBB_SMALL_MAX % EBB_MIN_ALIGN == 0, "small sizes are 16-byte multiples");
_Static_assert((EBB_SMALL_MAX >> 4) < 4096, "the class lookup table stays small");
#endif

#endif /* EBB_CORE_CONFIG_H */
