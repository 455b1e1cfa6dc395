/* arena.c: task arenas (see arena.h). */
#include "core/ext/arena.h"

#include <errno.h>
#include <string.h>

#include "core/process/init.h"
#include "core/pages/page_heap.h"
#include "core/ext/owner.h"
#include "core/runtime/report.h"
#include "core/pages/superblock.h"
#include "ebbmalloc.h"
#include "os/os.h"

#define ARENA_MAGIC 0x6562625f6172656eull /* "ebb_aren" */
/* The arena sits at the start of its first chunk; blocks follow it. */
#define ARENA_HEADER util_align_up(sizeof(struct ebb_arena), EBB_CACHELINE)
#define ARENA_CHUNK_MAX_PAGES (EBB_ARENA_CHUNK_MAX >> EBB_PAGE_SHIFT)
#define ARENA_OWN_MIN_PAGES (EBB_ARENA_OWN_MIN >> EBB_PAGE_SHIFT)

/* ---------------------------------------------------------------------------
 * Spans
 * ------------------------------------------------------------------------- */

/* A span of `pages` pages aligned to `align` for arena a: from the page heap
 * of this CPU, or (more than a superblock holds) a huge block. NULL with
 * errno ENOMEM. */
static span_t *arena_span(ebb_arena_t *a, size_t pages, size_t align, bool block)
{
	page_heap_t *h = page_heap_for_cpu(os_cpu_id());
	size_t align_pages = align > EBB_PAGE_SIZE ? align >> EBB_PAGE_SHIFT : 1;
	span_t *s;
	if (pages + align_pages - 1 <= EBB_SB_USABLE_PAGES) {
		s = page_heap_alloc(h, pages, align_pages, SPAN_ARENA);
		if (s == NULL) {
			errno = ENOMEM;
			return NULL;
		}
		/* Every page names the first: free() of any block in it finds the
		 * span and reports it; page class 0: never a thread-cache block. */
		superblock_map_span(span_superblock(s), s->page, s->npages, 0);
	} else {
		s = page_heap_huge_alloc(h, pages, align > EBB_SB_SIZE ? align : EBB_SB_SIZE, pages);
		if (s == NULL) {
			errno = ENOMEM;
			return NULL;
		}
		/* The page heap made it LARGE; the state is written under its
		 * lock like every state change (span.h). */
		page_heap_t *owner = span_superblock(s)->heap;
		lock_acquire(&owner->lock);
		s->state = SPAN_ARENA;
		lock_release(&owner->lock);
	}
	s->u.arena.arena = a;
	s->u.arena.block = block;
	return s;
}

static void arena_span_free(span_t *s)
{
	if (s->huge)
		page_heap_huge_free(s);
	else
		page_heap_free(s);
}

static inline char *span_base(const span_t *s)
{
	return span_start(span_superblock(s), s);
}

static void blocks_push(ebb_arena_t *a, span_t *s)
{
	s->prev = NULL;
	s->next = a->blocks;
	if (s->next)
		s->next->prev = s;
	a->blocks = s;
}

static void blocks_unlink(ebb_arena_t *a, span_t *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		a->blocks = s->next;
	if (s->next)
		s->next->prev = s->prev;
}

static size_t first_next_pages(size_t first_pages)
{
	size_t n = first_pages * 2;
	if (n < ARENA_OWN_MIN_PAGES)
		n = ARENA_OWN_MIN_PAGES;
	return n > ARENA_CHUNK_MAX_PAGES ? ARENA_CHUNK_MAX_PAGES : n;
}

/* ---------------------------------------------------------------------------
 * Blocks (caller is the owner or holds the lock)
 * ------------------------------------------------------------------------- */

/* n bytes aligned to align (<= a page) from the newest chunk into *out;
 * false if they do not fit. */
EBB_INLINE bool cut(ebb_arena_t *a, size_t n, size_t align, void **out)
{
	char *p = (char *)util_align_up((uintptr_t)a->cur, align);
	if (EBB_UNLIKELY(p > a->end || n > (size_t)(a->end - p)))
		return false;
	a->last = p;
	a->cur = p + n;
	*out = p;
	return true;
}

static void *arena_alloc_locked(ebb_arena_t *a, size_t size, size_t align)
{
	if (size > EBB_MAX_REQUEST || align > EBB_MAX_REQUEST) {
		errno = ENOMEM;
		return NULL;
	}
	size_t n = size + (size == 0);
	if (n <= EBB_ARENA_OWN_MIN && align <= EBB_PAGE_SIZE) {
		void *p;
		if (cut(a, n, align, &p))
			return p;
		/* A new chunk; the rest of the old one is left unused. A chunk
		 * starts on a page, and n <= 64 KiB <= its size. */
		span_t *s = arena_span(a, a->next_pages, 1, false);
		if (s == NULL)
			return NULL;
		s->next = a->chunks;
		a->chunks = s;
		a->cur = span_base(s);
		a->end = a->cur + ((size_t)s->npages << EBB_PAGE_SHIFT);
		a->next_pages = a->next_pages * 2 > ARENA_CHUNK_MAX_PAGES ? ARENA_CHUNK_MAX_PAGES
									   : a->next_pages * 2;
		return cut(a, n, align, &p) ? p : NULL;
	}
	span_t *s = arena_span(a, util_pages(n), align, true);
	if (s == NULL)
		return NULL;
	blocks_push(a, s);
	return span_base(s);
}

/* Every chunk but the first and every block of its own go back. */
static void arena_reset_locked(ebb_arena_t *a)
{
	span_t *chunks = a->chunks, *blocks = a->blocks;
	a->chunks = NULL;
	a->blocks = NULL;
	a->cur = a->first_cur;
	a->end = span_base(a->first) + (a->first_pages << EBB_PAGE_SHIFT);
	a->last = NULL;
	a->next_pages = first_next_pages(a->first_pages);
	for (span_t *s = chunks, *next; s; s = next) {
		next = s->next;
		arena_span_free(s);
	}
	for (span_t *s = blocks, *next; s; s = next) {
		next = s->next;
		arena_span_free(s);
	}
}

static void arena_free_locked(ebb_arena_t *a, void *ptr, const char *func)
{
	superblock_t *sb;
	span_t *s = superblock_span_lookup(ptr, &sb);
	if (EBB_UNLIKELY(s == NULL || s->state != SPAN_ARENA || s->u.arena.arena != a)) {
		report_bad_pointer(func, ptr, s && s->state == SPAN_ARENA ? "a block of another ebb_arena"
									  : "not a block of this ebb_arena");
		return;
	}
	if (!s->u.arena.block) {
		/* A block cut from a chunk: its bytes come back with the reset. */
		if (EBB_UNLIKELY(s == a->first && (char *)ptr < a->first_cur))
			report_bad_pointer(func, ptr, "the ebb_arena itself, not one of its blocks");
		return;
	}
	if (EBB_UNLIKELY(ptr != span_start(sb, s))) {
		report_bad_pointer(func, ptr, "not the start of a block of this ebb_arena");
		return;
	}
	blocks_unlink(a, s);
	arena_span_free(s);
}

/* ---------------------------------------------------------------------------
 * Handles and the owner check
 * ------------------------------------------------------------------------- */

/* a is a live arena: the start of the first chunk of an arena span that
 * names it, holding the magic. The registry and the pagemap are consulted
 * before a is read. */
static bool handle_ok(const ebb_arena_t *a)
{
	superblock_t *sb;
	span_t *s = superblock_span_lookup(a, &sb);
	return s != NULL && s->state == SPAN_ARENA && !s->u.arena.block && s->u.arena.arena == a &&
	       span_start(sb, s) == (const void *)a && a->own.magic == ARENA_MAGIC;
}

static bool handle_ok_any(const void *h)
{
	return handle_ok((const ebb_arena_t *)h);
}

static const owner_kind_t arena_kind = {
	.magic = ARENA_MAGIC,
	.handle_ok = handle_ok_any,
	.not_one = "not an ebb_arena (never created, or destroyed)",
	.not_ours = "the arena belongs to another thread (create it with EBB_SHARED to share it, or "
		    "hand it over with ebb_arena_adopt)",
};

/* The owner-or-lock rule (owner.h). */
EBB_INLINE bool arena_enter(ebb_arena_t *a, const char *func)
{
	return owner_enter(a, a != NULL ? &a->own : NULL, &arena_kind, func);
}

EBB_INLINE void arena_leave(ebb_arena_t *a)
{
	owner_leave(&a->own);
}

static EBB_NOINLINE void *arena_alloc_slow(ebb_arena_t *a, size_t size, size_t align, const char *func)
{
	if (!arena_enter(a, func))
		return NULL;
	void *p = arena_alloc_locked(a, size, align);
	arena_leave(a);
	return p;
}

/* ---------------------------------------------------------------------------
 * The API
 * ------------------------------------------------------------------------- */
EBB_API ebb_arena_t *ebb_arena_create(size_t chunk_size, unsigned flags)
{
	if (chunk_size > EBB_ARENA_CHUNK_MAX || (flags & ~EBB_SHARED) != 0) {
		errno = EINVAL;
		return NULL;
	}
	if (!init_ensure()) {
		errno = ENOMEM;
		return NULL;
	}
	size_t pages = util_pages(chunk_size ? chunk_size : EBB_ARENA_CHUNK_DEFAULT);
	span_t *s = arena_span(NULL, pages, 1, false);
	if (s == NULL)
		return NULL;
	ebb_arena_t *a = (ebb_arena_t *)span_base(s);
	memset(a, 0, sizeof *a); /* the pages may be reused ones */
	s->u.arena.arena = a;
	a->first = s;
	a->first_pages = pages;
	a->first_cur = (char *)a + ARENA_HEADER;
	a->cur = a->first_cur;
	a->end = (char *)a + (pages << EBB_PAGE_SHIFT);
	a->next_pages = first_next_pages(pages);
	owner_init(&a->own, &arena_kind, flags);
	return a;
}

/* The fast path: owner, block fits the newest chunk. */
EBB_API void *ebb_arena_alloc(ebb_arena_t *arena, size_t size)
{
	if (EBB_LIKELY(arena != NULL && arena->own.thread == owner_thread_self() && size <= EBB_ARENA_OWN_MIN)) {
		void *p;
		if (EBB_LIKELY(cut(arena, size + (size == 0), EBB_MIN_ALIGN, &p)))
			return p;
	}
	return arena_alloc_slow(arena, size, EBB_MIN_ALIGN, "ebb_arena_alloc");
}

EBB_API void *ebb_arena_aligned_alloc(ebb_arena_t *arena, size_t alignment, size_t size)
{
	if (!util_is_pow2(alignment)) {
		errno = EINVAL;
		return NULL;
	}
	if (EBB_LIKELY(arena != NULL && arena->own.thread == owner_thread_self() && size <= EBB_ARENA_OWN_MIN &&
		       alignment <= EBB_PAGE_SIZE)) {
		void *p;
		if (EBB_LIKELY(cut(arena, size + (size == 0), alignment, &p)))
			return p;
	}
	return arena_alloc_slow(arena, size, alignment, "ebb_arena_aligned_alloc");
}

EBB_API void ebb_arena_free(ebb_arena_t *arena, void *ptr)
{
	if (ptr == NULL)
		return;
	if (!arena_enter(arena, "ebb_arena_free"))
		return;
	if (ptr == arena->last) {
		arena->cur = arena->last; /* the newest cut block: its bytes are reused */
		arena->last = NULL;
	} else {
		arena_free_locked(arena, ptr, "ebb_arena_free");
	}
	arena_leave(arena);
}

EBB_API void ebb_arena_reset(ebb_arena_t *arena)
{
	if (!arena_enter(arena, "ebb_arena_reset"))
		return;
	arena_reset_locked(arena);
	arena_leave(arena);
}

EBB_API void ebb_arena_destroy(ebb_arena_t *arena)
{
	if (arena == NULL)
		return;
	if (!arena_enter(arena, "ebb_arena_destroy"))
		return;
	arena_reset_locked(arena);
	span_t *first = arena->first;
	owner_clear(&arena->own);
	arena_leave(arena);
	page_heap_free(first); /* the arena itself goes with it */
}

EBB_API void ebb_arena_adopt(ebb_arena_t *arena)
{
	if (arena == NULL || !handle_ok(arena)) {
		report_bad_pointer("ebb_arena_adopt", arena, arena_kind.not_one);
		errno = EINVAL;
		return;
	}
	owner_adopt(&arena->own);
}

/* ---------------------------------------------------------------------------
 * For the rest of the allocator
 * ------------------------------------------------------------------------- */
const char *arena_span_reason(const void *p, const span_t *s)
{
	if (!s->u.arena.block && p == (const void *)s->u.arena.arena)
		return "an ebb_arena handle, not a malloc block (destroy it with ebb_arena_destroy)";
	return "a block of an ebb_arena, not a malloc block (it goes back with ebb_arena_reset or "
	       "ebb_arena_destroy)";
}
