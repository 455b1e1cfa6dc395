/* arena.h: task arenas (ebb_arena_*, include/ebbmalloc.h): bump allocation
 * in chunks taken from the page heap, all given back at once by reset.
 *
 * An arena's memory is spans in state SPAN_ARENA, each naming the arena in
 * u.arena.arena:
 *   first   the chunk that holds the arena itself (at its start) and is kept
 *           by reset: the memory a reset arena still has;
 *   chunks  further chunks, doubling from 64 KiB (or the first chunk's size)
 *           to 1 MiB, newest first through span->next;
 *   blocks  spans holding one block of more than ARENA_OWN_MIN bytes or with
 *           an alignment above a page (u.arena.block = 1), doubly linked, so
 *           that ebb_arena_free gives one back in O(1). Blocks larger than a
 *           superblock holds are huge blocks, marked ARENA under the heap's
 *           lock after page_heap_huge_alloc.
 * Blocks are cut from [cur, end) of the newest chunk; nothing is stored
 * with a block. `last` is the newest cut block, which ebb_arena_free can take
 * back (cur = last); any other cut block stays until reset.
 *
 * Ownership: as for pools (pool.h): the owner thread, or the holder of
 * `own.lock` for an EBB_SHARED arena, is the only writer of the arena and of the
 * non-page-heap fields of its spans. The fast path of ebb_arena_alloc is the
 * owner compare and a bump: no lock, no atomic, no call.
 *
 * Accounting: the page heap counts the spans with the LARGE ones, so the
 * stats show an arena's chunks and blocks, whole, as allocated. */
#ifndef EBB_CORE_ARENA_H
#define EBB_CORE_ARENA_H

#include "core/runtime/atomic.h"
#include "core/base/config.h"
#include "core/pages/span.h"
#include "core/ext/owner.h"

EBB_BEGIN_DECLS

#define EBB_ARENA_CHUNK_DEFAULT ((size_t)64 << 10)
#define EBB_ARENA_CHUNK_MAX ((size_t)1 << 20)
/* Blocks above this many bytes get a span of their own. */
#define EBB_ARENA_OWN_MIN ((size_t)64 << 10)

struct ebb_arena {
	/* the fast path: one cache line */
	char *cur, *end;        /* free bytes of the newest chunk */
	owner_t own;            /* owner thread, magic ARENA_MAGIC, EBB_SHARED and its lock */
	char *last;             /* start of the newest cut block, NULL if taken back */
	/* the slow paths */
	span_t *first;
	span_t *chunks;
	span_t *blocks;
	char *first_cur;        /* cur of the first chunk after a reset */
	size_t first_pages;
	size_t next_pages;      /* pages of the next chunk */
} EBB_ALIGNED(EBB_CACHELINE);

/* The reason a plain free/realloc/malloc_usable_size of p, which lies in the
 * ARENA or POOL span s, reports. Any thread. */
const char *arena_span_reason(const void *p, const span_t *s);

EBB_END_DECLS

#endif /* EBB_CORE_ARENA_H */
