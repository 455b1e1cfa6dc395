/* tcache.h: per-thread caches, and the malloc and free fast paths.
 *
 * Each thread has one tcache: a bin (a stack of free block addresses) per
 * size class, refilled from and flushed to the central lists in batches. A
 * thread reaches its tcache through one initial-exec TLS pointer (with the
 * exited flag, 9 bytes of static TLS: the same libebbmalloc.so works linked,
 * preloaded and dlopen'ed). The pointer starts at `tcache_empty`, a static
 * tcache whose bins are all empty and full at once (top == empty == full,
 * all NULL), so a thread that has not allocated yet takes the slow path
 * without a test of its own; the slow path creates the real tcache (in memory mapped by meta.c)
 * and points TLS at it. After the thread-exit hook has flushed the cache (or
 * left it warm in the pool, tcache.c), TLS
 * points at `tcache_empty` again, and a thread-local flag (tcache.c) tells the
 * slow path to work directly on the central lists instead of creating a cache.
 *
 * A bin lives out of band: its slots are an array of up to bin_cap addresses in
 * the cache's own metadata memory (tcache.c maps them with the cache; a
 * slot page is resident only once a bin reached it). The bin holds the
 * blocks [top, empty); it may hold up to its bound max, and up to its
 * region's cap slots before the region grows (tcache.c, bin_fit): `full` =
 * empty - min(max, cap). The slot at `empty` is the bin's sentinel: it holds the address
 * 8 bytes below the cache's `sentinel_word` field, a "block" whose mark
 * word is never its mark M = mark ^ address: it starts as mark | 1 (1 in
 * tcache_empty, whose mark is 0), which is neither M (address != 0, and
 * address & 1 == 0) nor 0, and a pop that fails xors M into it and back
 * (freelist_take_mark), so it only ever holds W or W ^ M, neither of which
 * is M or 0 -- also while threads without a cache race on tcache_empty's,
 * each of them xoring the same M. The malloc fast path therefore needs no
 * test for an empty bin: popping the sentinel fails the mark test, and the
 * slow path sees top == empty.
 * tcache_empty has one such slot, shared by all its
 * bins; so does every bin of a cache until it is first given a bound
 * (idle_slot): writing each bin's own sentinel at creation would make a
 * page of slots resident per class and thread (measured: 4.4 MiB more peak
 * RSS with 32 threads, bench cache-thrash), touched or not. Nothing is linked through a free block: a block only carries its
 * double-free mark (freelist.h), so no address malloc pops was ever where the
 * program can write, and every address that enters a bin was checked (free:
 * core/blocks/block.h; a refill: central.c).
 *
 * Ownership: a tcache is read and written only by its thread; the only
 * exception is ebb_stats_get(), which reads other threads' `published` bytes
 * (written with an atomic store at the thread's slow-path events). The
 * background thread never drains a live thread's bins (only caches of exited
 * threads left warm in the pool, which no thread owns: tcache.c): it advances a trim
 * epoch, and each thread trims its own bins at its next slow path (all of
 * them but the one it serves, if a whole epoch passed without one). So a
 * thread that parks keeps its cache until it runs again: reclaiming it from
 * outside would need the fast paths to publish or fence something
 * (docs/memory-return.md, "Idle threads"), and they do neither.
 *
 * This header holds exactly the two fast-path inlines and what they need. */
#ifndef EBB_TCACHE_TCACHE_H
#define EBB_TCACHE_TCACHE_H

#include "core/blocks/block.h"
#include "core/base/config.h"
#include "core/blocks/freelist.h"
#include "core/blocks/size_class.h"
#include "core/pages/superblock.h"
#include "core/base/util.h"

EBB_BEGIN_DECLS

/* Sizes up to TCACHE_DIRECT_MAX find their class in the cache's own table,
 * indexed by the size itself: one load, no rounding, no table address to
 * form (1 KiB per cache). Larger small sizes take tcache_alloc_mid, which
 * uses size_class_of. */
#define TCACHE_DIRECT_MAX 1024

/* A bin is column `cls` of the arrays top/empty/full/mul/limit: arrays rather
 * than an array of structs so that the fast paths index each with the class
 * in one addressing mode (no multiply or shift by the struct size; measured:
 * 2 instructions per operation). */
typedef struct tcache {
	/* --- hot: the fast paths touch only these. top first: at offset 0 its
	 * address is plain base + 8 * class. --- */
	void **top[EBB_NUM_CLASSES];        /* next block to hand out */
	void **empty[EBB_NUM_CLASSES];      /* end of the bin's slots: top == empty, no block */
	void **full[EBB_NUM_CLASSES];       /* top == full: the bin holds min(max, cap) blocks */
	uint64_t mark;                      /* copy of freelist_mark; also the sentinel's mark word */
	uint64_t mul[EBB_NUM_CLASSES];      /* size_classes[c].block_mul and */
	uint64_t limit[EBB_NUM_CLASSES];    /* .block_limit: the block test of free */
	uint8_t class_of[TCACHE_DIRECT_MAX + 1]; /* size -> class (size_class_of), by size itself */
	/* --- cold: slow paths --- */
	void **slots;                       /* the bins' slot arrays (kept when recycled) */
	void *idle_slot;                    /* holds the sentinel: top/empty/full of every bin never used */
	uint64_t sentinel_word;             /* the sentinel's mark word (see above) */
	uint32_t max[EBB_NUM_CLASSES];      /* current bound */
	uint32_t size[EBB_NUM_CLASSES];     /* size_classes[c].size: publish's sum reads 5 lines, not 45 */
	uint16_t misses[EBB_NUM_CLASSES];   /* refills per bin since its last trim; 1 on a full flush */
	uint8_t was_full[EBB_NUM_CLASSES];  /* a free found the bin full once (bin_grow) */
	uint16_t cap[EBB_NUM_CLASSES];      /* slots of the bin's region (0: on the idle slot); may be < max */
	uint32_t slot_next;                 /* first slot no region holds yet (bin_place) */
	uint64_t budget;                    /* sum of max * size over bins */
	uint32_t events;                    /* refills + flushes, drives incremental trim */
	uint32_t trim_cursor;
	uint64_t trim_epoch;                /* last background trim request seen */
	uint16_t used_at[EBB_NUM_CLASSES];  /* large_clock at the bin's last refill, full flush or release */
	uint16_t large_clock;               /* this thread's large allocations, mod 2^16 (big_bins_release) */
	uint8_t idle_shift[EBB_NUM_CLASSES]; /* the bin's idle window is BIG_IDLE_LARGE << idle_shift */
	uint8_t released[EBB_NUM_CLASSES];  /* emptied by big_bins_release, no slow event since */
	uint64_t big_bins;                  /* bit c - first class of 4 KiB: bin c has a bound */
	uint64_t refills, flushes;
	uint64_t published;                 /* cached bytes as of the last slow event (atomic) */
	struct tcache *next, *prev;         /* list of live tcaches (tcache_list_lock) */
	bool shared;                        /* on the shared CPU slot (tcache_shared_enter) */
	bool in_shared;                     /* inside a slow path counted in tcache_shared_busy */
	uint32_t conflicts;                 /* slow paths that met another cache's there */
	bool warm;                          /* in the pool with its bins' blocks (tcache.c, "The pool") */
} tcache_t;
/* Class 0 ("not a small block") has a bin that is always empty and full. */

/* The sentinel of tc's bins: the value of the slot at each bin's `empty`. */
#define TCACHE_SENTINEL(tc) ((void *)((char *)&(tc).sentinel_word - sizeof(uint64_t)))

/* Slots from one bin's sentinel (at its `empty`) to the next region's first
 * slot: the sentinel and 7 never used. Regions are 2 * batch (64 slots for
 * classes up to 2 KiB) or bin_cap (512) slots, handed out in order of use
 * (tcache.c, bin_place), so consecutive live ends step 72 or 520 slots: 9
 * or 65 cache lines, both odd, so the live ends of up to 64 bins fall on
 * distinct sets of a 64-set L1 (32 KiB 8-way, 48 KiB 12-way). With one
 * slot between regions of 512 they stepped 8 bytes modulo 4 KiB and the
 * bins of every class up to 512 B shared 3-4 sets, evicting each other and
 * the blocks: callgrind's cache model (48 KiB 12-way), bench_arena
 * --mode=malloc, 2 M pairs, D1 misses in malloc + free 522 K -> 136 K, the
 * whole program 1.14 M -> 438 K (tcmalloc 395 K); instructions unchanged. */
#define TCACHE_BIN_GAP 8u

extern tcache_t tcache_empty;
extern __thread tcache_t *tcache_tls __attribute__((tls_model("initial-exec")));

EBB_INLINE tcache_t *tcache_self(void)
{
	return tcache_tls;
}

/* Code-generation hints for the two fast paths (no effect on what they do;
 * each saves one instruction, measured with bench/fastpath). EBB_OPAQUE(x)
 * hides how x was computed, so gcc keeps a value it already has in a
 * register instead of recomputing it another way. EBB_RESULT_REG(x) asks for
 * x in the return register where it is loaded, so the hit path ends without
 * a register move; EBB_OTHER_REG(x) keeps the class index out of it (else
 * gcc loads the class into the return register and copies it away). */
#define EBB_OPAQUE(x) __asm__("" : "+r"(x))
#if defined(__x86_64__)
#define EBB_RESULT_REG(x) __asm__("" : "+a"(x))
#define EBB_OTHER_REG(x) __asm__("" : "+c"(x))
#else
#define EBB_RESULT_REG(x) ((void)0)
#define EBB_OTHER_REG(x) ((void)0)
#endif

/* Moves a bin's top by n slots (+1: a block taken, -1: one pushed) with
 * one add to memory on x86-64, where gcc would add in a register it already
 * holds top in and then store (one instruction more per fast path; the add
 * to memory is the same work). The top is thread-private: no atomicity is
 * wanted or implied. */
#if defined(__x86_64__)
#define TCACHE_TOP_MOVE(topref, n) \
	__asm__("addq %1, %0" : "+m"(topref) : "i"((long)(n) * (long)sizeof(void *)))
#else
#define TCACHE_TOP_MOVE(topref, n) ((topref) += (n))
#endif

/* Slow paths: init, refill, large blocks, flush, bad pointers. */
EBB_NOINLINE void *tcache_alloc_slow(size_t size);
/* Counts a large allocation made around the cache (a heap profile sample
 * of malloc or realloc above EBB_SMALL_MAX), as tcache_alloc_slow counts
 * its own. */
void tcache_large_tick(void);
EBB_NOINLINE void tcache_free_slow(void *p);
/* realloc's allocation of the block it moves to (a block of class cls) and
 * its free of the block it leaves (of class cls), around the bin's bounds:
 * tcache.c. */
void *tcache_alloc_moving(unsigned cls);
void tcache_free_moved(void *p, unsigned cls);
/* Sizes above TCACHE_DIRECT_MAX: the same pop, class by size_class_of. */
EBB_NOINLINE void *tcache_alloc_mid(size_t size);

/* Pops the next block of bin cls of tc if there is one and it carries its
 * free mark; NULL otherwise (an empty bin, whose top is its sentinel, fails
 * the mark test too). A block without its mark was freed twice and one copy
 * is already out, or written after free: the slow path reports it. The mark
 * is tested and cleared in one xor (freelist_take_mark: one instruction
 * fewer than a compare and a store), undone when the test fails.
 *
 * The block the bin hands out next (the slot under this one: readable,
 * top < empty here, at worst the sentinel, and most often in the line just
 * read) is prefetched, so that the next pop of the class finds its mark in
 * the cache instead of waiting for memory for the load and the clear: a bin
 * can hold blocks freed long ago (a working set that shrank and grows
 * again). Two instructions (the slot load and the prefetch, which never
 * faults), part of what the checks cost: none without them. bench/latency,
 * medians of interleaved runs, malloc p99 without -> with: t=1 281 -> 170
 * ns, t=4 421 -> 311 (11 runs; 9 runs later on a busier machine: 381 ->
 * 210, 521 -> 401). Prefetching two slots down measured the same. */
EBB_INLINE void *tcache_pop(tcache_t *tc, uintptr_t cls)
{
	EBB_OTHER_REG(cls);
	void **top = tc->top[cls];
	void *block = *top;
	EBB_RESULT_REG(block);
	/* Without checks no mark is tested, and the sentinel must be caught
	 * by its place. */
	uint64_t mark = freelist_mark_of(block, tc->mark);
	if (EBB_LIKELY((EBB_CHECKS || top != tc->empty[cls]) && freelist_take_mark(block, mark))) {
		if (EBB_CHECKS) /* without checks no pop reads the block */
			__builtin_prefetch(top[1], 1);
		TCACHE_TOP_MOVE(tc->top[cls], 1);
		if (block == NULL) /* never (a bin holds block addresses): spares the caller's test */
			__builtin_unreachable();
		return block;
	}
	/* The slow path finds the word as it was: the block is reported by
	 * bin_pop, the sentinel stays W. */
	if (EBB_CHECKS)
		freelist_untake_mark(block, mark);
	return NULL;
}

/* tcache_alloc of a size up to TCACHE_DIRECT_MAX from tc, this thread's
 * cache (tcache_self(), or the heap profiler's variants of malloc and
 * operator new, which load the pointer their own way: prof_tcache_patched,
 * core/process/prof.h). */
EBB_INLINE void *tcache_alloc_direct(tcache_t *tc, size_t size)
{
	void *block = tcache_pop(tc, tc->class_of[size]);
	if (EBB_LIKELY(block != NULL))
		return block;
	return tcache_alloc_slow(size);
}

/* tcache_alloc_mid's pop from tc, this thread's cache (tcache_self(), or
 * the heap profiler's variants' patched load, as tcache_alloc_direct). */
EBB_INLINE void *tcache_alloc_mid_from(tcache_t *tc, size_t size)
{
	if (EBB_LIKELY(size <= EBB_SMALL_MAX)) {
		void *block = tcache_pop(tc, size_class_of(size));
		if (EBB_LIKELY(block != NULL))
			return block;
	}
	return tcache_alloc_slow(size);
}

/* Fast path of malloc. Stays here when the size is at most
 * TCACHE_DIRECT_MAX and this thread's bin of its class holds a block: a TLS
 * load, a table load, a pop. No lock, no atomic, no call, no stack frame
 * (measured: docs/reliability.md). Everything else tail-calls
 * tcache_alloc_mid() (larger sizes) or tcache_alloc_slow(). */
EBB_INLINE void *tcache_alloc(size_t size)
{
	if (EBB_LIKELY(size <= TCACHE_DIRECT_MAX))
		return tcache_alloc_direct(tcache_self(), size);
	return tcache_alloc_mid(size);
}

/* Fast path of free. Stays here when p starts a small block of one of our
 * superblocks (core/blocks/block.h: registry byte, page class, one multiply and
 * compare for a block start outside the span's tail) and this thread's bin of its class has
 * room, and p is not the block freed last (free(p); free(p): the slot at
 * top, which is always readable: a block or the bin's sentinel): then p's
 * address is pushed and its free mark written. It reads nothing of the
 * block itself: a free of a block whose line has left the cache does not
 * wait for the line (the mark is checked when the block is handed out
 * again, which catches every other double free). It does wait for the
 * translation of p's page: a store retires only once its address is
 * translated, so where that page has left the TLB the free takes a page
 * walk, and that is what bench/latency's free p99 measures (t=4, medians
 * of 15 interleaved runs on a 2-vCPU AMD guest, whose nested walks cost
 * hundreds of cycles: 361 ns, 150 with no store into the block, jemalloc
 * 140). Writing the mark later, after a prefetch for writing, gains
 * nothing: a prefetch waits for the walk as the store does (p prefetched
 * and no mark written: 361 ns), and any later write into p is a walk in
 * some later call. NULL, foreign pointers, large
 * blocks (page class 0: bin 0 is always full), anything that fails the
 * block test and full bins tail-call `slow`: tcache_free_slow(), which says
 * what is wrong, or the heap profiler's (core/api/api.c, api_prof_free),
 * which tells its inner samples apart first. Always a constant argument, so
 * tcache_free's code is the same as with tcache_free_slow written in. */
EBB_INLINE void tcache_free_or(void *p, void (*slow)(void *p))
{
	size_t slot;
	if (EBB_LIKELY(registry_slot(p, &slot) && registry_at(slot) == REG_HEADER)) {
		tcache_t *tc = tcache_self();
		/* One load of p's pmap entry: class and span start together.
		 * Its address from the registry slot and p (pmap_peek_slot), the
		 * offset from p and the entry (block_offset_in): neither needs
		 * sb, the page or p's offset in its superblock. */
		uint32_t e = pmap_peek_slot(slot, p);
		uintptr_t cls = pmap_class(e);
		uint64_t off = block_offset_in(e, (uintptr_t)p);
		/* The block test first, then the bin. EBB_OPAQUE(cls) between
		 * the groups of bin fields keeps gcc from forming &tc->top[cls]
		 * in a register of its own (an lea) for its five uses: each is
		 * then addressed as tc + 8 * cls directly. */
		if (EBB_LIKELY(!EBB_CHECKS || block_offset_ok(off, tc->mul[cls], tc->limit[cls]))) {
			EBB_OPAQUE(cls);
			void **top = tc->top[cls];
			if (EBB_LIKELY(top != tc->full[cls] && (!EBB_CHECKS || *top != p))) {
				EBB_OPAQUE(cls);
				freelist_set_mark(p, tc->mark);
				top[-1] = p;
				TCACHE_TOP_MOVE(tc->top[cls], -1);
				return;
			}
		}
	}
	slow(p);
}

/* The fast path of free (core/api/api.c, api_free). */
EBB_INLINE void tcache_free(void *p)
{
	tcache_free_or(p, tcache_free_slow);
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

/* The invariant checker of the EBB_INVARIANTS build (tcache_check.c). */
#if EBB_INVARIANTS
/* Checks bin cls (its slots too), and
 * every bin's bounds and the byte budget every TCACHE_CHECK_EVERY calls (per
 * thread) or when cls == 0. Aborts with a report on the first that fails. */
void tcache_check(const tcache_t *tc, unsigned cls);
#define TCACHE_CHECK(tc, cls) tcache_check((tc), (cls))
#else
#define TCACHE_CHECK(tc, cls) ((void)0)
#endif

EBB_END_DECLS

#endif /* EBB_TCACHE_TCACHE_H */
