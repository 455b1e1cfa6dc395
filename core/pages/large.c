/* large.c: page-run and huge blocks (see large.h). */
#include "core/pages/large.h"

#include <errno.h>
#include <string.h>

#include "core/pages/page_heap.h"
#include "core/runtime/report.h"
#include "core/pages/superblock.h"
#include "os/os.h"

/* The most pages a normal superblock can give one block. */
#define LARGE_MAX_PAGES ((size_t)EBB_SB_PAGES - EBB_SB_HEADER_PAGES)

/* A block aligned to this or more is a huge block (a mapping of its own,
 * its data 4 MiB aligned), however small. A superblock has few places at
 * such an alignment (15 at 256 KiB, 3 at 1 MiB, one at 2 MiB), and any
 * block over one of them takes it from every such request, so they mapped
 * superblock after superblock, each faulting in pages of its own. A freed
 * huge block is cached whole and the next one takes it with the pages the
 * last one touched (bench aligned 64B-2M: faults 18.5K -> 11.7K, peak RSS
 * 73 -> 47 MiB; jemalloc 14.7K, 60 MiB). */
#define LARGE_HUGE_ALIGN ((size_t)256 << 10)

/* ...while heap 0 holds fewer huge blocks than this: each is two mappings
 * of the kernel (header and data), and a program holding many thousands of
 * small aligned blocks would run out of them (vm.max_map_count, 65530 by
 * default). Past it, such blocks are page runs again. */
#define LARGE_HUGE_ALIGN_MAX_LIVE 1024

/* The start of LARGE span s, fresh from the page heap, once its pmap
 * entries are written: every page names the first, so interior pointers
 * are recognized; if `sized`, the first names the run's size for realloc's
 * fast path (pmap_set_run). */
EBB_INLINE void *large_publish(span_t *s, bool sized)
{
	superblock_t *sb = span_superblock(s);
	superblock_map_span(sb, s->page, s->npages, 0);
	if (sized)
		pmap_set_run(sb, s->page, s->npages);
	return span_start(sb, s);
}

void *large_alloc(size_t size, size_t align, bool zero)
{
	if (size > EBB_MAX_REQUEST || align > EBB_MAX_REQUEST) {
		errno = ENOMEM;
		return NULL;
	}
	size_t pages = util_pages(size ? size : 1);
	size_t align_pages = align > EBB_PAGE_SIZE ? align >> EBB_PAGE_SHIFT : 1;
	page_heap_t *h = page_heap_for_cpu(os_cpu_id());
	span_t *s;
	void *p;
	bool huge = pages + align_pages - 1 > LARGE_MAX_PAGES;
	if (!huge && align >= LARGE_HUGE_ALIGN)
		huge = __atomic_load_n(&page_heap_get(0)->huge_live, __ATOMIC_RELAXED) < LARGE_HUGE_ALIGN_MAX_LIVE;
	if (!huge) {
		s = page_heap_alloc(h, pages, align_pages, SPAN_LARGE);
		if (s == NULL)
			return NULL;
		p = large_publish(s, true);
	} else {
		/* Every huge block lives in heap 0, whatever CPU asks: with a cache
		 * per CPU, a thread that migrates frees into one cache and allocates
		 * from another, which then maps and faults in fresh pages while the
		 * first fills up until the dirty budget purges it. A huge request
		 * writes megabytes; one lock for all of them costs nothing next to
		 * that. (An aligned one may be small, but takes a cached block
		 * whole: one short hold of the lock.) */
		s = page_heap_huge_alloc(page_heap_get(0), pages, align > EBB_SB_SIZE ? align : EBB_SB_SIZE,
					 pages);
		if (s == NULL)
			return NULL;
		p = span_start(span_superblock(s), s);
	}
	if (zero && !s->zeroed)
		memset(p, 0, size);
	return p;
}

static large_span_reason_t large_ext_reason;

void large_set_ext_reason(large_span_reason_t reason)
{
	__atomic_store_n(&large_ext_reason, reason, __ATOMIC_RELEASE);
}

const char *large_why_bad(const void *p, bool freeing)
{
	superblock_t *sb;
	span_t *s = superblock_span_lookup(p, &sb);
	if (s == NULL) {
		switch (registry_get(p)) {
		case REG_NONE:
			return "not allocated by ebbmalloc";
		case REG_HUGE_CONT:
			return "not the start of a block (inside a huge block)";
		default:
			return "not an allocated block (already freed, or not a block start)";
		}
	}
	/* Relaxed loads (core/pages/span_check.h): p may be a stale pointer
	 * into a run the page heap is merging or purging right now. */
	unsigned state = span_load_state(s);
	if (state == SPAN_ARENA || state == SPAN_POOL) {
		large_span_reason_t why = __atomic_load_n(&large_ext_reason, __ATOMIC_ACQUIRE);
		return why != NULL ? why(p, s)
				   : "a block of an ebb_arena or ebb_pool, not a malloc block";
	}
	/* A span of small blocks sends p here only from a page without class:
	 * one given back with nothing but free blocks on it (a block freed
	 * there is withheld, core/blocks/central_purge.c) or one a lazy carve
	 * never handed a block out of. */
	if (state == SPAN_CENTRAL)
		return "not an allocated block (its page holds only free blocks, given back)";
	if (state == SPAN_LARGE && p != span_start_seen(sb, s))
		return "not the start of a block";
	if (state == SPAN_LARGE)
		return NULL;
	/* A free run that starts here: the block's pages, freed and not yet
	 * reused (a merge with a free neighbour left of it loses this). */
	if (p != span_start_seen(sb, s))
		return "not an allocated block (already freed, or not a block start)";
	return freeing ? "double free (the block is already free)" : "the block was freed";
}

static large_free_hook_t large_free_hook;

void large_set_free_hook(large_free_hook_t hook)
{
	__atomic_store_n(&large_free_hook, hook, __ATOMIC_RELEASE);
}

/* prompt: a block of PAGE_HEAP_PROMPT_PAGES or more may go back to the
 * kernel in this free (page_heap_free_large); not for the old block of a
 * realloc that moved: a block grown by copying is most often grown again,
 * and its pages serve that next, larger block (bench realloc vector). */
static void large_free_at(void *p, const char *func, bool prompt)
{
	superblock_t *sb;
	span_t *s = superblock_span_lookup(p, &sb);
	if (EBB_UNLIKELY(s == NULL || span_load_state(s) != SPAN_LARGE || p != span_start_seen(sb, s))) {
		const char *why = large_why_bad(p, true);
		report_bad_pointer(func, p, why ? why : "not an allocated block");
		return;
	}
	/* Before the block leaves the program (to the page heap, or kept by
	 * the hook): realloc's fast path must not find the size of a freed
	 * run, which, merged into a free neighbour, no tag write would clear. */
	if (!s->huge)
		pmap_set_run(sb, s->page, 0);
	/* The sampled mark (span.h) is set before its sample reaches the
	 * program, and only with the hook registered (a stray mark, with
	 * the hook NULL, is passed over). A byte of the descriptor read
	 * above, where a hash of p into the profiler's filter was 9
	 * instructions on every page-run free with prof on. */
	large_free_hook_t hook;
	if (EBB_UNLIKELY(__atomic_load_n(&s->u.large.sampled, __ATOMIC_RELAXED) != 0) &&
	    (hook = __atomic_load_n(&large_free_hook, __ATOMIC_ACQUIRE)) != NULL && hook(p, s))
		return;
	if (s->huge)
		page_heap_huge_free(s);
	else if (prompt)
		page_heap_free_large(s);
	else
		page_heap_free(s);
}

void large_free_checked(void *p, const char *func)
{
	large_free_at(p, func, true);
}

void large_free_moved(void *p)
{
	large_free_at(p, "realloc", false);
}

void *large_resize(void *p, span_t *s, size_t size)
{
	/* util_pages wraps near SIZE_MAX (to 0 pages): such a size would
	 * shrink the block instead of failing. realloc checks it first; this
	 * holds for every caller. */
	if (size > EBB_MAX_REQUEST)
		return NULL;
	size_t pages = util_pages(size);
	if (s->huge) {
		span_t *ns = page_heap_huge_resize(s, pages);
		return ns ? span_start(span_superblock(ns), ns) : NULL;
	}
	if (pages > LARGE_MAX_PAGES)
		return NULL;
	size_t old = s->npages;
	if (!page_heap_resize(s, pages))
		return NULL;
	superblock_t *sb = span_superblock(s);
	if (pages > old)
		superblock_map_span(sb, s->page, s->npages, 0);
	pmap_set_run(sb, s->page, s->npages);
	return p;
}

void *large_alloc_mapped(size_t size)
{
	/* Heap 0, as every huge block (large_alloc says why). The bound, as
	 * in large_alloc: past it util_pages wraps, and a request near
	 * SIZE_MAX would get a block of a few pages. */
	if (size > EBB_MAX_REQUEST) {
		errno = ENOMEM;
		return NULL;
	}
	size_t pages = util_pages(size);
	span_t *s = page_heap_huge_alloc(page_heap_get(0), pages, EBB_SB_SIZE, pages);
	if (s == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	return span_start(span_superblock(s), s);
}

void *large_alloc_aside(size_t size)
{
	span_t *s = page_heap_alloc(page_heap_prof(), util_pages(size), 1, SPAN_LARGE);
	if (s == NULL)
		return NULL;
	/* Its first pmap entry without the run's size, which would have
	 * realloc's fast path (core/api/api.c) keep it in place as a page
	 * run: a sample is resized as the small block it stands for, in the
	 * slow path, so that what moves with prof=0 moves with prof=1. */
	page_heap_inuse_sub(s->npages); /* page_heap_inuse_recount */
	return large_publish(s, false);
}

void large_aside_recount(const span_t *s)
{
	if (span_superblock(s)->heap == page_heap_prof())
		page_heap_inuse_recount(s->npages);
}
