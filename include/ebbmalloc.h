/*
 * ebbmalloc.h: the public interface of ebbmalloc.
 *
 * ebbmalloc is a multithreaded allocator that gives idle memory back to the
 * kernel on a timer. Built with EBB_OVERRIDE=ON (the default) the shared and
 * static libraries also define the standard names (malloc, free, calloc,
 * realloc, posix_memalign, aligned_alloc, memalign, valloc, pvalloc,
 * malloc_usable_size, malloc_trim, mallinfo2, malloc_stats, malloc_info, mallopt,
 * the glibc __libc_* aliases and the C++
 * operators new/delete), so linking or LD_PRELOAD replaces the system
 * allocator. The ebb_* names below exist in every build, including sanitizer
 * builds in which the sanitizer owns malloc.
 *
 * Everything here may be called from any thread at any time, including before
 * main(): the first call initializes the allocator.
 */
#ifndef EBBMALLOC_H
#define EBBMALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define EBB_API __attribute__((visibility("default")))
#define EBB_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#else
#define EBB_API
#define EBB_MALLOC_ATTR
#endif

#define EBB_VERSION_MAJOR 0
#define EBB_VERSION_MINOR 1

/* ----------------------------------------------------------------------------
 * The allocation API. Semantics are those of the C and POSIX functions of the
 * same name (glibc flavour where they differ): failures return NULL (or an
 * error number for posix_memalign) and set errno to ENOMEM for exhausted
 * memory or impossible sizes, EINVAL for bad alignments.
 * ------------------------------------------------------------------------- */
EBB_API EBB_MALLOC_ATTR void *ebb_malloc(size_t size);
EBB_API void ebb_free(void *ptr);
EBB_API EBB_MALLOC_ATTR void *ebb_calloc(size_t count, size_t size);
/* realloc(NULL, n) is malloc(n); realloc(p, 0) frees p and returns NULL (glibc). */
EBB_API void *ebb_realloc(void *ptr, size_t size);
EBB_API void *ebb_reallocarray(void *ptr, size_t count, size_t size);
/* alignment: a power of two and a multiple of sizeof(void *), else EINVAL. */
EBB_API int ebb_posix_memalign(void **out, size_t alignment, size_t size);
/* alignment: a power of two, else NULL with EINVAL. */
EBB_API EBB_MALLOC_ATTR void *ebb_aligned_alloc(size_t alignment, size_t size);
/* glibc memalign: an alignment that is not a power of two is rounded up to one. */
EBB_API EBB_MALLOC_ATTR void *ebb_memalign(size_t alignment, size_t size);
EBB_API EBB_MALLOC_ATTR void *ebb_valloc(size_t size);
/* Page aligned, size rounded up to whole pages (pvalloc(0) is one page). */
EBB_API EBB_MALLOC_ATTR void *ebb_pvalloc(size_t size);
/* Bytes usable at ptr (at least what was asked for); 0 for NULL. */
EBB_API size_t ebb_malloc_usable_size(const void *ptr);
/* free() with the size that was asked for (C23 free_sized); size is checked
 * against the block in debug builds only. */
EBB_API void ebb_free_sized(void *ptr, size_t size);
EBB_API void ebb_free_aligned_sized(void *ptr, size_t alignment, size_t size);

/* ----------------------------------------------------------------------------
 * Task arenas and fixed-size pools (docs/arenas.md). Their memory comes from
 * the same page heaps as malloc's, counts as `allocated` in the statistics
 * while they hold it, and decays to the kernel like any freed page once they
 * give it back.
 *
 * Threading: an arena or pool created with flags 0 belongs to the thread that
 * created it and takes no lock; a call from any other thread is reported
 * ("belongs to another thread") and does nothing (under on_error=warn: NULL or
 * no effect, errno EPERM). ebb_arena_adopt / ebb_pool_adopt make the calling
 * thread the owner, for a hand-over the program synchronizes itself. Created
 * with EBB_SHARED, every call takes the arena's or pool's own lock and any
 * thread may use it. A handle that is not a live arena or pool is reported
 * (errno EINVAL). Blocks of arenas and pools are not malloc blocks: free,
 * realloc and malloc_usable_size report them.
 * ------------------------------------------------------------------------- */
#define EBB_SHARED 1u

typedef struct ebb_arena ebb_arena_t;
/* An empty arena. chunk_size: bytes of its first chunk, which holds the arena
 * itself and is kept by ebb_arena_reset (0: 64 KiB; at most 1 MiB, else
 * EINVAL); later chunks double up to 1 MiB. flags: 0 or EBB_SHARED (else
 * EINVAL). NULL with ENOMEM when memory is exhausted. */
EBB_API ebb_arena_t *ebb_arena_create(size_t chunk_size, unsigned flags);
/* size bytes aligned to 16 (size 0 gives a distinct 1-byte block). Blocks up
 * to 64 KiB are cut from the arena's chunks; larger ones get pages of their
 * own. NULL with ENOMEM like malloc. */
EBB_API EBB_MALLOC_ATTR void *ebb_arena_alloc(ebb_arena_t *arena, size_t size);
/* alignment: any power of two (1 packs strings), else NULL with EINVAL. */
EBB_API EBB_MALLOC_ATTR void *ebb_arena_aligned_alloc(ebb_arena_t *arena, size_t alignment, size_t size);
/* Optional: a block with pages of its own goes back to the page heap now; the
 * newest block of a chunk is taken back (its bytes are reused); any other
 * block stays until reset. A pointer that is not a block of this arena is
 * reported. NULL does nothing. */
EBB_API void ebb_arena_free(ebb_arena_t *arena, void *ptr);
/* Drops every block at once: all chunks but the first and every block with
 * pages of its own go back to the page heap; the arena stays usable. */
EBB_API void ebb_arena_reset(ebb_arena_t *arena);
/* Gives all of the arena's memory back, including the arena. NULL does nothing. */
EBB_API void ebb_arena_destroy(ebb_arena_t *arena);
/* Makes the calling thread the owner (no effect on an EBB_SHARED arena). */
EBB_API void ebb_arena_adopt(ebb_arena_t *arena);

typedef struct ebb_pool ebb_pool_t;
/* A pool of objects of `size` bytes (1 to 1 MiB) aligned to `alignment` (a
 * power of two up to 1 MiB; 0: the largest power of two up to 16 that divides
 * size), else EINVAL. Objects are `size` rounded up to the alignment (and to
 * at least 8 bytes) apart, with no header: a free object holds the free-list
 * link. flags: 0 or EBB_SHARED. NULL with ENOMEM when memory is exhausted. */
EBB_API ebb_pool_t *ebb_pool_create(size_t size, size_t alignment, unsigned flags);
/* One object, O(1). NULL with ENOMEM. */
EBB_API EBB_MALLOC_ATTR void *ebb_pool_alloc(ebb_pool_t *pool);
/* Gives an object back, O(1); a span whose last object comes back goes back
 * to the page heap at once. A pointer that is not an object of this pool, or
 * (for objects of 16 bytes or more) an object already free, is reported.
 * NULL does nothing. */
EBB_API void ebb_pool_free(ebb_pool_t *pool, void *ptr);
/* Gives all of the pool's memory back; its objects become invalid. NULL does nothing. */
EBB_API void ebb_pool_destroy(ebb_pool_t *pool);
/* Makes the calling thread the owner (no effect on an EBB_SHARED pool). */
EBB_API void ebb_pool_adopt(ebb_pool_t *pool);

/* ----------------------------------------------------------------------------
 * Memory return.
 * ebb_trim() flushes the calling thread's cache, returns cached objects to
 * their spans, purges every dirty free page and unmaps every free superblock
 * now. It returns 1 if memory was given back to the kernel, 0 otherwise.
 * ------------------------------------------------------------------------- */
EBB_API int ebb_trim(void);

/* ----------------------------------------------------------------------------
 * Statistics. One list generates the struct and the printer, so the two cannot
 * drift apart. Byte gauges satisfy, when no other thread is allocating:
 *
 *   mapped == allocated + tcache + central + dirty + purged + metadata + waste
 *
 * rounding_max is a part of allocated, not a term of the sum: ebbmalloc never
 * sees the size a program asked for on its fast path, so it bounds the class
 * rounding instead. Each small block out of its span counts its class size
 * minus the smallest request that class serves (1 byte more than the class
 * below); blocks sitting in thread caches count too (ebb_trim empties the
 * caller's). Large blocks round up to whole pages (at most 4095 bytes each)
 * and are not in it.
 * docs/usage.md shows how to measure the true rounding of a program.
 *
 * X(name, kind, description): kind is "bytes" for a gauge in bytes, "count"
 * for a gauge that counts things, and "total" for a counter that only grows.
 * ------------------------------------------------------------------------- */
#define EBB_STATS_FIELDS(X)                                                              \
	X(mapped, bytes, "mapped from the kernel (superblocks and metadata)")                \
	X(resident, bytes, "resident in RAM, as tracked by the allocator")                   \
	X(allocated, bytes, "in blocks the program holds (class size or whole pages)")        \
	X(tcache, bytes, "free blocks in thread caches")                                     \
	X(central, bytes, "free blocks in central lists and partially used spans")          \
	X(dirty, bytes, "free pages still resident (waiting for decay)")                     \
	X(purged, bytes, "free pages given back to the kernel but still mapped")            \
	X(metadata, bytes, "superblock headers and allocator structures")                   \
	X(waste, bytes, "span tails too small for a block, unused tails of huge blocks")   \
	X(rounding_max, bytes, "at most this much of allocated is small blocks' class rounding") \
	X(threads, count, "live thread caches")                                            \
	X(superblocks, count, "superblocks currently mapped (huge blocks included)")       \
	X(superblocks_mapped, total, "superblocks mapped since start")                      \
	X(superblocks_unmapped, total, "superblocks unmapped since start")                  \
	X(purges, total, "purge passes that gave memory back")                              \
	X(madvise_calls, total, "ranges given back (one per madvise or per batched range)") \
	X(bytes_purged, total, "bytes given back with madvise since start")                \
	X(tcache_refills, total, "thread cache refills from central lists")                \
	X(tcache_flushes, total, "thread cache flushes to central lists")                  \
	X(spans_carved, total, "spans taken from the page heap for small blocks")         \
	X(spans_returned, total, "empty spans given back to the page heap")              \
	X(large_allocs, total, "allocations served by the page heap or mapped directly")

struct ebb_stats {
#define EBB_STATS_DECLARE_(name, kind, doc) uint64_t name;
	EBB_STATS_FIELDS(EBB_STATS_DECLARE_)
#undef EBB_STATS_DECLARE_
};
typedef struct ebb_stats ebb_stats_t;

/* Fills *out with a snapshot. Gauges are summed from per-layer counters
 * without stopping other threads, so under load they are momentarily
 * inconsistent by the blocks in flight; quiescent, they add up exactly. */
EBB_API void ebb_stats_get(struct ebb_stats *out);
/* Prints the snapshot for people, one line per field, then the kernel's RSS
 * of the process and a table of the size classes in use (spans, live
 * objects, fragmentation); docs/usage.md explains how to read it. */
EBB_API void ebb_stats_print(FILE *out);

/* The figures of glibc's mallinfo2(), from the statistics above; with
 * EBB_OVERRIDE, mallinfo2() and mallinfo() return them (mallinfo clamps each
 * to INT_MAX). Huge blocks (4 MiB and more) count as glibc's mmapped chunks:
 * in hblks/hblkhd, not in arena/uordblks. docs/usage.md maps each field.
 *   arena == uordblks + fordblks + overhead (headers, span tails) */
struct ebb_mallinfo {
	size_t arena;    /* mapped for superblocks and metadata (all but live huge blocks) */
	size_t ordblks;  /* 0: free runs are not counted */
	size_t smblks;   /* 0: no fastbins */
	size_t hblks;    /* huge blocks the program holds */
	size_t hblkhd;   /* bytes of those huge blocks */
	size_t usmblks;  /* 0, as in glibc */
	size_t fsmblks;  /* free blocks in thread caches (glibc: fastbins) */
	size_t uordblks; /* in blocks the program holds, huge blocks aside */
	size_t fordblks; /* free: thread caches, central lists, free pages */
	size_t keepcost; /* free pages still resident: what ebb_trim gives back */
};
typedef struct ebb_mallinfo ebb_mallinfo_t;
EBB_API void ebb_mallinfo(struct ebb_mallinfo *out);

/* ----------------------------------------------------------------------------
 * Options. Each is read from the environment variable EBB_OPTIONS at start-up,
 * for example EBB_OPTIONS=decay_ms=500,background_thread=0, and can be changed
 * later with ebb_option_set(). A wrong name or value prints a warning naming
 * it and is ignored. docs/usage.md lists every option with its default.
 * ------------------------------------------------------------------------- */
/* Returns 0, or -1 with errno EINVAL for an unknown name or a bad value. */
EBB_API int ebb_option_set(const char *name, const char *value);
/* Stores the option's current value (numbers as numbers, choices as their
 * index, text such as stats_file as its length) and returns 0, or returns -1
 * with errno EINVAL for an unknown name. */
EBB_API int ebb_option_get(const char *name, long long *value);

/* ----------------------------------------------------------------------------
 * Heap profile. With EBB_OPTIONS=prof=1 about one allocation per prof_sample
 * bytes (default 512 KiB) is sampled with its stack. ebb_prof_dump writes the
 * sampled blocks still live and those sampled since start to `path` (created
 * or truncated) in gperftools' heap profile format, which `google-pprof` and
 * `go tool pprof` read: `google-pprof --text ./program path`. Returns 0, or
 * -1 with errno (ENOTSUP when prof is off). docs/usage.md has the details.
 * ------------------------------------------------------------------------- */
EBB_API int ebb_prof_dump(const char *path);

#ifdef __cplusplus
}
#endif
#endif /* EBBMALLOC_H */
