/* large.h: blocks above the largest size class, and aligned blocks that no
 * class can hold: whole page runs from the page heap, or (above what a
 * superblock holds) huge blocks mapped for themselves.
 *
 * A LARGE span belongs to the program from malloc to free; pagemap entries
 * of all its pages name its first page, so an interior pointer is told apart
 * from the block's start. */
#ifndef EBB_CORE_LARGE_H
#define EBB_CORE_LARGE_H

#include "core/base/config.h"
#include "core/base/util.h"
#include "core/pages/span_check.h"

EBB_BEGIN_DECLS

/* A block of at least `size` bytes aligned to `align` (a power of two),
 * zero-filled if `zero` (skipping the memset when the pages are known to be
 * fresh or purged). NULL with errno ENOMEM. Any thread. */
void *large_alloc(size_t size, size_t align, bool zero);
/* large_alloc of a page run from the heap profiler's own page heap
 * (page_heap_prof): its sample runs of small blocks, kept out of the
 * CPUs' heaps so that these hold what they would with prof=0. Not zeroed. */
void *large_alloc_aside(size_t size);
/* Before a run of large_alloc_aside's is freed or handed out as a plain
 * block (prof.c): its pages counted in use again (page_heap_inuse_recount);
 * nothing for a page run of another heap. */
void large_aside_recount(const span_t *s);
/* free() of p, which is not a small block: checks that p starts a LARGE
 * span, reports it (naming `func`) if not, and frees it. */
void large_free_checked(void *p, const char *func);
/* large_free_checked for the old block of a realloc that moved p: its
 * pages stay dirty for the next growth rather than going back to the
 * kernel in the free (page_heap_free_large). */
void large_free_moved(void *p);
/* Why p is not the start of an allocated page-run or huge block (the reason
 * of a bad-pointer report), or NULL if it is one. `freeing`: the call frees
 * it (a free run here is then a double free). Any thread, no lock. */
const char *large_why_bad(const void *p, bool freeing);
/* The reason large_why_bad gives for a pointer into an ARENA or POOL span:
 * the extensions know their own handles, and sit above this file, so the
 * entry points register it at start-up. Without it, a generic reason. */
typedef const char *(*large_span_reason_t)(const void *p, const span_t *s);
void large_set_ext_reason(large_span_reason_t reason);
/* The heap profiler's look at a page-run or huge block that free is about
 * to give back (p starts the LARGE span s; checked already): true if the
 * profiler took p (a sample block it keeps, or reported), and free must
 * leave it. Registered at start-up only with prof on (core/process/prof.c,
 * above this file); it is called only for a span whose sampled mark (span.h: u.large.sampled,
 * set and cleared by the profiler) is set, so that the free of a page run
 * that is not sampled (most of them) tests a byte of the descriptor it
 * loaded already (bench aligned 64B-2M, 9 000 page-run frees in 15 000
 * operations: about 17 instructions a free with the test in the hook,
 * where gcc also saved registers around the call; 9 with a hashed filter
 * of counters; 2 with the mark). */
typedef bool (*large_free_hook_t)(void *p, span_t *s);
void large_set_free_hook(large_free_hook_t hook);

/* Usable bytes of a LARGE span. Inline: realloc of a long string asks it
 * at every append. */
EBB_INLINE size_t large_usable(const span_t *s)
{
	return (size_t)atomic_peek_u32(&s->npages) << EBB_PAGE_SHIFT; /* block_info: maybe a stale pointer */
}
/* Resizes the large block p (span s) to hold `size` bytes without moving it,
 * if it can: shrinking, growing into free pages right of it, or remapping a
 * huge block. Returns p (or the huge block's new address, contents kept) or
 * NULL if the caller must allocate, copy and free (always for a size above
 * EBB_MAX_REQUEST, p untouched). */
void *large_resize(void *p, span_t *s, size_t size);
/* A huge block (a mapping of its own, huge.c) of at least `size` bytes
 * (<= EBB_MAX_REQUEST), also below the huge size: for realloc, so that the
 * block's later growth is an mremap. NULL with errno ENOMEM (also for a
 * size above EBB_MAX_REQUEST, without trying). Any thread. */
void *large_alloc_mapped(size_t size);

EBB_END_DECLS

#endif /* EBB_CORE_LARGE_H */
