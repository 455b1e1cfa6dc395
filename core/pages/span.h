/* span.h: the span descriptor and the rules of who may touch it.
 *
 * Glossary (also in docs/architecture.md):
 *   block       what the program gets from malloc
 *   page        always the OS page (4 KiB)
 *   span        a run of pages inside one superblock: the blocks of one size
 *               class, one large block, or a free run
 *   superblock  one 4 MiB aligned mapping; its header holds every descriptor
 *   class       a small-block size class (size_class.h); class 0 = none
 *   bin         a thread cache's list of free blocks of one class
 *
 * A span's descriptor lives in its superblock's header, at the index of the
 * span's first page (out of band: nothing is ever stored in front of a block).
 *
 * Ownership: exactly one party may write a descriptor at any moment.
 *
 * | state        | owner (only writer)                   | listed in                      | leaves by                                   |
 * |--------------|---------------------------------------|--------------------------------|---------------------------------------------|
 * | FREE_DIRTY   | page heap, under its lock             | heap size list + dirty LRU     | alloc -> CENTRAL/LARGE; purge -> BUSY;      |
 * |              |                                       |                                | merged into a dirty neighbour -> NONE       |
 * | BUSY         | the purging thread, no lock held      | nowhere                        | purged -> FREE_PURGED (or back to DIRTY     |
 * |              |                                       |                                | if madvise failed)                          |
 * | FREE_PURGED  | page heap, under its lock             | heap size list (purged)        | alloc -> CENTRAL/LARGE; merged -> NONE;     |
 * |              |                                       |                                | superblock unmapped                         |
 * | CENTRAL      | its home central list, under the      | home's partial list while it   | last block back -> page_heap_free           |
 * |              | home's lock, for its whole life       | has free or withheld blocks    | (FREE_DIRTY; its given-back pages           |
 * |              |                                       |                                | FREE_PURGED); while purging, only the       |
 * |              |                                       |                                | purge pass retires it (central_purge.c)     |
 * | LARGE        | the program, from malloc to free      | nowhere (pagemap only)         | free -> FREE_DIRTY                          |
 * | ARENA        | its ebb_arena (u.arena.arena), under  | the arena's chunk or block     | reset/destroy, ebb_arena_free of a block    |
 * |              | the arena's contract (arena.h)        | list                           | -> FREE_DIRTY                               |
 * | POOL         | its ebb_pool (u.pool.pool), under     | the pool's partial or full     | last object back, destroy -> FREE_DIRTY     |
 * |              | the pool's contract (pool.h)          | list                           |                                             |
 * | NONE         | -                                     | -                              | this page is not the first page of a span   |
 *
 * The page heap's own steps, besides those in the table: FREE_PURGED -> BUSY
 * (a pass trims the header descriptor pages), BUSY -> NONE (the run was given
 * back into a free neighbour), NONE -> a kind (a span cut from the end of a
 * run), LARGE -> LARGE (a cached huge block handed out again) and LARGE ->
 * FREE_PURGED (a cached huge block that could not be grown goes back to the
 * cache). A purged run whose descriptor's header page a trim gave back is a
 * cold run (superblock.h): its descriptor reads as zero (NONE, by the
 * kernel, not by a state write) and the page heap keeps its size in the
 * superblock's table until page_heap_warm writes it afresh (NONE ->
 * FREE_PURGED); nobody reads a cold run's descriptor for what it held.
 * In the EBB_INVARIANTS build every state write goes through
 * SPAN_SET_STATE, and span_check_transition (span_check.c) aborts on any step
 * this comment does not name, or on a writer without the lock it names.
 *
 * Between page_heap_alloc returning a span and its first publication (a block
 * handed out, or the span linked into a central list) the allocating thread
 * owns it alone.
 *
 * Block identities for a CENTRAL span:
 *   used + |free list| + withheld + lost == blocks (span_carve accounts for
 *           every block at once; withheld blocks are free blocks whose pages
 *           were given back, or never touched by a lazy carve,
 *           core/blocks/central_purge.c: a refill that finds the free list
 *           empty relinks those of the lowest such pages; withheld == 0 iff
 *           given_back == 0; lost is 0 but after a reported corruption).
 *           The list's length is not stored: it is what the identity
 *           leaves (span_free_count)
 *   used == blocks held by the program + blocks in thread caches + blocks in
 *           central transfer batches (those may sit in any CPU's list), in
 *           its low 31 bits; bit 31 set iff the span is off its home's
 *           partial list and not empty (CENTRAL_USED_FULL, central.h).
 * For a POOL span: used + |free list| + (per span - bump) == objects per span.
 * ARENA and POOL pages are counted by the page heap with the LARGE ones
 * (large_pages), so the stats count them as allocated, whole, from the moment
 * the arena or pool takes them until it gives them back.
 */
#ifndef EBB_CORE_SPAN_H
#define EBB_CORE_SPAN_H

#include "core/base/config.h"
#include "core/base/util.h"

EBB_BEGIN_DECLS

struct central;
struct ebb_arena;
struct ebb_pool;

enum span_state {
	SPAN_NONE = 0,
	SPAN_FREE_DIRTY,
	SPAN_FREE_PURGED,
	SPAN_BUSY,
	SPAN_CENTRAL,
	SPAN_LARGE,
	SPAN_ARENA, /* a chunk or a block of an ebb_arena (core/ext/arena.h) */
	SPAN_POOL,  /* objects of one ebb_pool (core/ext/pool.h) */
};

typedef struct span {
	/* FREE_*: links of the page heap's size list. CENTRAL: links of the home's
	 * partial list. */
	struct span *next, *prev;
	union {
		struct { /* FREE_DIRTY: age order for decay, newest at the head */
			struct span *lru_next, *lru_prev;
			uint64_t freed_ns; /* when it last became dirty */
		} free;
		struct { /* CENTRAL */
			void *free_head;        /* freed blocks, plain links checked before use, EBB_LIST_END */
			struct central *home;   /* immutable while CENTRAL */
			uint32_t lost;          /* free blocks a report dropped from the list
						 * (leaked until the span empties); the blocks
						 * on free_head are blocks - used - withheld -
						 * lost (span_free_count, central.h), so a
						 * block's return writes no count of its own */
			uint16_t withheld;      /* free blocks off the list: they touch a page in
						 * given_back (core/blocks/central_purge.c) */
			uint8_t purging;        /* given_back's newest pages are being given back,
						 * home lock dropped: withheld stays off the list and
						 * only that pass may retire the span */
			uint64_t given_back;    /* bit i: page i of the span was given back (madvise) */
		} central;
		struct { /* ARENA */
			struct ebb_arena *arena; /* immutable while ARENA */
			uint8_t block;           /* one block of its own, not a bump chunk */
		} arena;
		struct { /* LARGE */
			/* u.free's words, as the page heap left them: never
			 * read as LARGE. sampled sits past them, where only
			 * u.central.given_back (and alloc_count's zeroing of
			 * the union) writes, so a page run comes out of the
			 * page heap with it 0. */
			uint64_t stale[3];
			uint8_t sampled; /* listed in the heap profiler's sample table
					  * (core/process/prof.c): large_free_checked's
					  * test. Written by the block's owner under the
					  * profiler's lock, read by free with no lock;
					  * a stray 1 (a huge block cut from a run that
					  * was CENTRAL) only costs the hook's lookup */
		} large;
		struct { /* POOL */
			void *free_head;         /* freed objects, encoded links, EBB_LIST_END */
			struct ebb_pool *pool;   /* immutable while POOL */
			uint32_t bump;           /* objects [bump, per span) were never handed out */
		} pool;
	} u;
	uint32_t npages;
	uint32_t used;     /* CENTRAL: blocks out of the span (see identities), bit 31
			    * set while it is full and off the partial list
			    * (CENTRAL_USED_FULL, central.h); POOL: objects out;
			    * huge LARGE/ARENA: pages asked for */
	uint16_t page;     /* index of the first page in the superblock (1024 for huge) */
	uint8_t state;     /* enum span_state */
	uint8_t cls;       /* CENTRAL: size class */
	uint8_t zeroed;    /* FREE_PURGED, LARGE: the pages read as zero; CENTRAL, at
			    * its carve: 1 + the first page from which on they do;
			    * CENTRAL after it: 1 + the first page of the lazy
			    * carve's pages that nothing has written since (they
			    * read zero; central_purge.c), 0 if none */
	uint8_t in_partial;/* CENTRAL: linked in home's partial list; POOL: in the pool's */
	uint8_t huge;      /* the single span of a huge superblock */
	uint8_t purge_ok;  /* BUSY: the purger's madvise result */
} EBB_ALIGNED(64) span_t;

#ifndef __cplusplus
_Static_assert(sizeof(span_t) == 64, "one descriptor per cache line: spans owned by "
	       "different CPUs never share a line");
_Static_assert(offsetof(span_t, u.large.sampled) >= sizeof(((span_t *)0)->u.free) + offsetof(span_t, u) &&
		       offsetof(span_t, u.large.sampled) >= offsetof(span_t, u.pool.bump) + sizeof(uint32_t) &&
		       offsetof(span_t, u.large.sampled) > offsetof(span_t, u.arena.block),
	       "a LARGE span's sampled mark shares no byte with a free, arena or pool span's fields");
#endif

/* End of the lists linked through free blocks (span free lists, pool free
 * lists). Misaligned, so no block address ever equals it. */
#define EBB_LIST_END ((void *)(uintptr_t)1)

EBB_END_DECLS

#endif /* EBB_CORE_SPAN_H */
