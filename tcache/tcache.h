/* tcache.h: per-thread caches, and the malloc and free fast paths.
 *
 * Each thread has one tcache: a bin (list of free blocks) per size class,
 * refilled from and flushed to the central lists in batches. A thread reaches
 * its tcache through one initial-exec TLS pointer (8 bytes of static TLS:
 * the same libebbmalloc.so works linked, preloaded and dlopen'ed). The pointer
 * starts at `tcache_empty`, a static tcache whose bins are all empty and full
 * at once (head = EBB_LIST_END, avail = 0), so a thread that has not
 * allocated yet takes the slow path without a test of its own; the slow path
 * creates the real tcache (in memory mapped by meta.c) and points TLS at it.
 * After the thread-exit hook has flushed the cache, TLS points at
 * `tcache_dead` (same shape), whose slow path works directly on the central
 * lists.
 *
 * Ownership: a tcache is read and written only by its thread; the only
 * exception is ebb_stats_get(), which reads other threads' `published` bytes
 * (written with an atomic store at the thread's slow-path events). The
 * background thread never drains another thread's bins: it advances a trim
 * epoch, and each thread trims its own bins at its next slow path.
 *
 * This header holds exactly the two fast-path inlines and what they need. */
#ifndef EBB_TCACHE_TCACHE_H
#define EBB_TCACHE_TCACHE_H

#include "core/config.h"
#include "core/freelist.h"
#include "core/size_class.h"
#include "core/superblock.h"
#include "core/util.h"

EBB_BEGIN_DECLS

/* A bin is column `cls` of the three arrays head/avail/max: kept as arrays
 * rather than an array of structs so that the fast paths index each with the
 * class in one addressing mode (no multiply by the struct size). */
typedef struct tcache {
	/* --- hot: the fast paths touch only these. head first: at offset 0 its
	 * address is plain base + 8 * class. --- */
	void *head[EBB_NUM_CLASSES];        /* first free block, EBB_LIST_END when empty */
	uint64_t secret;                    /* copy of freelist_secret */
	uint64_t mark;                      /* copy of freelist_mark */
	uint64_t avail[EBB_NUM_CLASSES];    /* blocks the bin may still take before it must flush */
	uint64_t magic[EBB_NUM_CLASSES];    /* size_classes[c].div_magic: block-start test of free */
	/* --- cold: slow paths --- */
	uint32_t max[EBB_NUM_CLASSES];      /* current bound; count == max - avail */
	uint16_t misses[EBB_NUM_CLASSES];   /* refills per bin since its last trim */
	uint64_t budget;                    /* sum of max * size over bins */
	uint32_t events;                    /* refills + flushes, drives incremental trim */
	uint32_t trim_cursor;
	uint64_t trim_epoch;                /* last background trim request seen */
	uint64_t refills, flushes;
	uint64_t published;                 /* cached bytes as of the last slow event (atomic) */
	struct tcache *next, *prev;         /* list of live tcaches (tcache_list_lock) */
} tcache_t;
/* Class 0 ("not a small block") has a bin that is always empty and full. */

extern tcache_t tcache_empty;
extern __thread tcache_t *tcache_tls __attribute__((tls_model("initial-exec")));

EBB_INLINE tcache_t *tcache_self(void)
{
	return tcache_tls;
}

/* Whether p (on page `page` of sb, a page of class cls) starts a block of
 * its span: the offset from the span's first page (pagemap) is a multiple of
 * the block size, tested as a multiply (n % d == 0 iff n * ceil(2^64/d) mod
 * 2^64 < ceil(2^64/d), for n < 2^32). An interior or misaligned pointer thus
 * never enters a bin, where the next malloc would hand it out. */
EBB_INLINE bool tcache_block_start(const tcache_t *tc, const superblock_t *sb, unsigned page,
				   const void *p, unsigned cls)
{
	uint64_t off = ((uintptr_t)p & (EBB_SB_SIZE - 1)) - ((uint64_t)sb->pagemap[page] << EBB_PAGE_SHIFT);
	return !EBB_CHECKS || off * tc->magic[cls] < tc->magic[cls];
}

/* Slow paths: init, refill, large blocks, flush, bad pointers. */
EBB_NOINLINE void *tcache_alloc_slow(size_t size);
EBB_NOINLINE void tcache_free_slow(void *p);

/* Fast path of malloc. Stays here when the size is small and this thread's
 * bin of its class holds a block: a table lookup, a TLS load, a pop. No lock,
 * no atomic, no call, no stack frame; budget about 20 x86-64 instructions
 * (measured: docs/performance.md). The `head & 15` test catches an empty bin
 * (EBB_LIST_END is misaligned) and a corrupted link alike; the block must
 * carry its free mark (in the line the pop reads anyway), else it was freed
 * twice and one copy is already out, or written after free. Everything else
 * tail-calls tcache_alloc_slow(). */
EBB_INLINE void *tcache_alloc(size_t size)
{
	if (EBB_LIKELY(size <= EBB_SMALL_MAX)) {
		tcache_t *tc = tcache_self();
		unsigned cls = size_class_of(size);
		void *block = tc->head[cls];
		if (EBB_LIKELY(((uintptr_t)block & (EBB_MIN_ALIGN - 1)) == 0 &&
			       freelist_mark_kept(block, freelist_mark_of(block, tc->mark)))) {
			tc->head[cls] = freelist_decode(block, tc->secret);
			tc->avail[cls]++;
			freelist_clear_mark(block);
			return block;
		}
	}
	return tcache_alloc_slow(size);
}

/* Fast path of free. Stays here when p starts a small block of one of our
 * superblocks, this thread's bin of its class has room, and p is not the
 * bin's head (free(p); free(p)): a registry byte, a page-class byte, the
 * block-start test, a push that writes p's link and free mark. It reads
 * nothing of the block itself: a free of a block whose line has left the
 * cache does not wait for it (the mark is checked when the block is handed
 * out again, by the pops above and in tcache.c/central.c). NULL, foreign
 * pointers, large blocks (page class 0; bins[0] never has room), full bins
 * and repeated frees tail-call tcache_free_slow(). */
EBB_INLINE void tcache_free(void *p)
{
	if (EBB_LIKELY(registry_get(p) == REG_HEADER)) {
		superblock_t *sb = superblock_of(p);
		tcache_t *tc = tcache_self();
		unsigned page = superblock_page_index(p);
		unsigned cls = sb->page_class[page];
		if (EBB_LIKELY(tc->avail[cls] != 0 && tcache_block_start(tc, sb, page, p, cls) &&
			       (!EBB_CHECKS || p != tc->head[cls]))) {
			freelist_set_next(p, tc->head[cls], tc->secret);
			freelist_set_mark(p, tc->mark);
			tc->head[cls] = p;
			tc->avail[cls]--;
			return;
		}
	}
	tcache_free_slow(p);
}

/* ---- used by the rest of the allocator (tcache.c) ---------------------- */

/* Gives back every block of the calling thread's cache (ebb_trim). */
void tcache_flush_self(void);
/* Stats: bytes cached by all threads (the caller's own exactly, others as
 * published), live caches, refill and flush counts. */
void tcache_stats(uint64_t *bytes, uint64_t *threads, uint64_t *refills, uint64_t *flushes);
void tcache_prefork(void);
void tcache_postfork_parent(void);
void tcache_postfork_child(void);

EBB_END_DECLS

#endif /* EBB_TCACHE_TCACHE_H */
