/* pool.h: fixed-size object pools (ebb_pool_*, include/ebbmalloc.h), and the
 * owner check that pools and arenas share.
 *
 * A pool hands out objects of one size and alignment from spans of its own
 * (state SPAN_POOL), taken from the page heap of the calling thread's CPU and
 * given back to it the moment their last object comes back. There is no
 * per-object header: a free object's first word links it into its span's
 * free list (encoded like every block list, freelist.h), and objects of 16
 * bytes or more carry the double-free mark in their second word while free.
 * Objects are `stride` bytes apart: the size rounded up to the alignment and
 * to the 8 bytes of a link. Words are accessed with memcpy, since a stride of
 * 12 with alignment 4 leaves links unaligned.
 *
 * O(1) both ways: alloc takes from the first span of `partial` (its free
 * list, else its never-used tail); free finds the object's span through the
 * pagemap (superblock_span_lookup), checks it, pushes. A span is on exactly
 * one of the pool's two lists: `partial` (it has an object to give) or `full`.
 *
 * Ownership: the pool (its owner thread, or whoever holds `own.lock` for an
 * EBB_SHARED pool) is the only writer of the pool and of the descriptors of
 * its spans other than the fields the page heap owns (span.h). The owner is
 * identified by its thread pointer (the TLS base, unique among live threads),
 * read in one instruction, so an owned pool pays one compare per call for the
 * check that turns a use from another thread into a report instead of a race.
 *
 * Pool handles are objects of an internal shared pool (`pool_headers`, two
 * cache lines each so handles used by different threads never share one).
 * Its lock is an allocator lock: fork takes it (pool_prefork), after the
 * thread-cache list and before the central lists and page heaps, the order in
 * which it nests (it is held while its own spans come from the page heap).
 * The lock of an EBB_SHARED pool or arena nests the same way: page heap locks
 * are taken inside it, never the other way round. */
#ifndef EBB_CORE_POOL_H
#define EBB_CORE_POOL_H

#include "core/runtime/atomic.h"
#include "core/base/config.h"
#include "core/pages/span.h"
#include "core/base/util.h"
#include "core/ext/owner.h"

EBB_BEGIN_DECLS

/* Limits of ebb_pool_create. */
#define EBB_POOL_MAX_SIZE ((size_t)1 << 20)
#define EBB_POOL_MAX_ALIGN ((size_t)1 << 20)

struct ebb_pool {
	uint64_t link_[2];     /* the link and mark while the handle is free in pool_headers */
	owner_t own;           /* owner thread, magic POOL_MAGIC, EBB_SHARED and its lock */
	uint32_t size;         /* as asked */
	uint32_t align;
	uint32_t stride;       /* bytes from one object to the next */
	uint32_t per_span;     /* objects per span */
	uint32_t span_pages;
	uint32_t align_pages;  /* spans start on this many pages (align > page) */
	uint64_t div_magic;    /* ceil(2^42 / stride): offset / stride as a multiply (pool.c) */
	uint32_t span_bytes;   /* span_pages << page shift */
	span_t *partial;       /* spans with an object to give, doubly linked */
	span_t *full;          /* the others */
	span_t *hot;           /* the span last allocated from, or NULL: frees into it skip the lookup */
	char *hot_base;        /* its first byte (NULL with it) */
};

/* Invariant per pool: every span it holds is on partial or full, and
 * in_partial says which; a span with used == 0 is never held (but for the
 * moment between pool_grow and its first object); hot is NULL or one of
 * them. */

/* ---- any thread ---------------------------------------------------------- */

/* The reason a plain free/realloc/malloc_usable_size of p, which lies in the
 * POOL span s, reports. */
const char *pool_span_reason(const void *p, const span_t *s);

/* fork: the handle pool's lock (api.c calls these in rank order). */
void pool_prefork(void);
void pool_postfork_parent(void);
void pool_postfork_child(void);

EBB_END_DECLS

#endif /* EBB_CORE_POOL_H */
