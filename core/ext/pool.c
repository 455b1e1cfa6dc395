/* pool.c: fixed-size object pools (see pool.h). */
#include "core/ext/pool.h"

#include <errno.h>
#include <string.h>

#include "core/blocks/freelist.h"
#include "core/process/init.h"
#include "core/pages/page_heap.h"
#include "core/runtime/report.h"
#include "core/pages/superblock.h"
#include "ebbmalloc.h"
#include "os/os.h"

#define POOL_MAGIC 0x6562625f706f6f6cull /* "ebb_pool" */

/* Span size: about 32 objects, at least 16 KiB (small objects: one span is
 * a few pages, not one page per 32 objects), at most 256 KiB unless a single
 * object is bigger. The span is a whole number of objects rounded up to a
 * page, so the tail wasted per span is under a page (or under one object
 * when 16 KiB hold a non-whole number of them). */
#define POOL_SPAN_OBJECTS 32
#define POOL_SPAN_MIN ((size_t)16 << 10)
#define POOL_SPAN_MAX ((size_t)256 << 10)
/* Offsets in a span are divided by the stride as a multiply and a shift
 * (object_index). */
#define POOL_DIV_SHIFT 42

/* Handles: two cache lines each, so that pools owned by different threads
 * never write the same line. */
#define POOL_HANDLE_STRIDE 128
#ifndef __cplusplus
_Static_assert(sizeof(struct ebb_pool) <= POOL_HANDLE_STRIDE, "a pool handle fits its slot");
#endif

/* The pool whose objects are pool handles. Shared: its lock is the only
 * process-wide lock of this file (see pool.h for its rank). Laid out on first
 * use, under the lock. */
static struct ebb_pool pool_headers = {
	.own = {.flags = EBB_SHARED, .lock = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_POOL_HANDLES)},
};

/* ---------------------------------------------------------------------------
 * Object words (memcpy: a stride need not be a multiple of 8)
 * ------------------------------------------------------------------------- */
static inline void *link_get(const void *obj)
{
	uintptr_t v;
	memcpy(&v, obj, sizeof v);
	return (void *)(EBB_CHECKS ? v ^ (uintptr_t)freelist_secret : v);
}

static inline void link_set(void *obj, const void *next)
{
	uintptr_t v = (uintptr_t)next;
	if (EBB_CHECKS)
		v ^= (uintptr_t)freelist_secret;
	memcpy(obj, &v, sizeof v);
}

/* The double-free mark lives in the second word of objects of 16 bytes or
 * more (smaller ones have room for the link only). */
static inline bool has_mark_room(const ebb_pool_t *p)
{
	return EBB_CHECKS && p->stride >= 16;
}

static inline bool mark_get(const void *obj)
{
	uint64_t v;
	memcpy(&v, (const char *)obj + 8, sizeof v);
	return v == freelist_mark_of(obj, freelist_mark);
}

static inline void mark_put(void *obj, uint64_t v)
{
	memcpy((char *)obj + 8, &v, sizeof v);
}

/* ---------------------------------------------------------------------------
 * Layout and span lists (caller is the pool's owner or holds its lock)
 * ------------------------------------------------------------------------- */
static void pool_layout(ebb_pool_t *p, size_t size, size_t align)
{
	if (align == 0) {
		align = size & (0 - size); /* lowest set bit */
		if (align > EBB_MIN_ALIGN)
			align = EBB_MIN_ALIGN;
	}
	size_t stride = util_align_up(size < sizeof(void *) ? sizeof(void *) : size, align);
	size_t n = POOL_SPAN_MAX / stride;
	n = n < 1 ? 1 : n > POOL_SPAN_OBJECTS ? POOL_SPAN_OBJECTS : n;
	size_t bytes = n * stride < POOL_SPAN_MIN ? POOL_SPAN_MIN : n * stride;
	size_t pages = util_pages(bytes);
	p->size = (uint32_t)size;
	p->align = (uint32_t)align;
	p->stride = (uint32_t)stride;
	p->span_pages = (uint32_t)pages;
	p->span_bytes = (uint32_t)(pages << EBB_PAGE_SHIFT);
	p->per_span = (uint32_t)((pages << EBB_PAGE_SHIFT) / stride);
	p->align_pages = (uint32_t)(align > EBB_PAGE_SIZE ? align >> EBB_PAGE_SHIFT : 1);
	p->div_magic = (((uint64_t)1 << POOL_DIV_SHIFT) + stride - 1) / stride;
}

static void list_push(span_t **head, span_t *s)
{
	s->prev = NULL;
	s->next = *head;
	if (s->next)
		s->next->prev = s;
	*head = s;
}

static void list_unlink(span_t **head, span_t *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		*head = s->next;
	if (s->next)
		s->next->prev = s->prev;
}

static void to_full(ebb_pool_t *p, span_t *s)
{
	list_unlink(&p->partial, s);
	list_push(&p->full, s);
	s->in_partial = 0;
}

static void to_partial(ebb_pool_t *p, span_t *s)
{
	list_unlink(&p->full, s);
	list_push(&p->partial, s);
	s->in_partial = 1;
}

/* First byte of a pool span (never a huge one). */
static inline char *span_base(const span_t *s)
{
	return (char *)superblock_of(s) + ((size_t)s->page << EBB_PAGE_SHIFT);
}

/* Index of the object at offset `off` of a span: off * ceil(2^42 / stride)
 * >> 42, exact for off < 2^22 (a superblock) and stride <= 2^20 (the error of
 * the rounded-up reciprocal stays below 1/stride over that range), and the
 * product fits 64 bits. */
static inline uint64_t object_index(const ebb_pool_t *p, size_t off)
{
	return ((uint64_t)off * p->div_magic) >> POOL_DIV_SHIFT;
}

/* Offset `off` (inside span s) starts an object that has been handed out at
 * least once. */
static inline bool object_at(const ebb_pool_t *p, const span_t *s, size_t off)
{
	uint64_t i = object_index(p, off);
	return i * p->stride == off && i < s->u.pool.bump;
}

/* q is the start of an object of s that has been handed out at least once. */
static inline bool object_of_span(const ebb_pool_t *p, const span_t *s, const char *base, const void *q)
{
	size_t off = (size_t)((const char *)q - base);
	if ((const char *)q < base || off >= ((size_t)s->npages << EBB_PAGE_SHIFT))
		return false;
	return object_at(p, s, off);
}

/* The span of p that holds obj, or NULL: the one span lookup of
 * superblock.h (pool spans are never huge, so the inline header branch),
 * then the state and pool, which reject stale entries. No lock: the
 * descriptors of p's spans are written by p's owner only, which is the
 * caller. */
static inline span_t *pool_span_of(const ebb_pool_t *p, const void *obj, char **base_out)
{
	superblock_t *sb;
	if (EBB_UNLIKELY(registry_get(obj) != REG_HEADER))
		return NULL;
	span_t *s = superblock_span_in(obj, &sb);
	if (EBB_UNLIKELY(s == NULL || s->state != SPAN_POOL || s->u.pool.pool != p))
		return NULL;
	*base_out = span_start(sb, s);
	return s;
}

/* Is obj on s's free list? Walked only when obj carries the mark, so a live
 * object that happens to hold its mark value costs one walk, never a report. */
static bool span_holds_free(const ebb_pool_t *p, const span_t *s, const void *obj)
{
	const char *base = span_base(s);
	const void *q = s->u.pool.free_head;
	for (uint32_t i = 0; i < p->per_span && q != EBB_LIST_END; i++) {
		if (q == obj)
			return true;
		if (!object_of_span(p, s, base, q))
			return false;
		q = link_get(q);
	}
	return false;
}

static span_t *pool_grow(ebb_pool_t *p)
{
	span_t *s = page_heap_alloc(page_heap_for_cpu(os_cpu_id()), p->span_pages, p->align_pages,
				    SPAN_POOL);
	if (s == NULL)
		return NULL;
	/* Interior pages name the first (free() of an object anywhere in the
	 * span finds it); page class 0: never a thread-cache block. */
	superblock_map_span(span_superblock(s), s->page, s->npages, 0);
	s->u.pool.pool = p;
	s->u.pool.free_head = EBB_LIST_END;
	s->u.pool.bump = 0;
	s->used = 0;
	list_push(&p->partial, s);
	s->in_partial = 1;
	return s;
}

/* ---------------------------------------------------------------------------
 * Alloc and free of one object (caller is the owner or holds the lock)
 * ------------------------------------------------------------------------- */

/* Hands out obj of span s. */
static void *handed_out(ebb_pool_t *p, span_t *s, void *obj)
{
	/* Clear the mark also on never-used objects: pages of a span that went
	 * back may still hold marks of its last life. */
	if (has_mark_room(p))
		mark_put(obj, 0);
	s->used++;
	if (s->u.pool.free_head == EBB_LIST_END && s->u.pool.bump == p->per_span)
		to_full(p, s);
	return obj;
}

/* One object: the first partial span's free list, else its never-used tail;
 * a new span if no span has room. */
static void *pool_take(ebb_pool_t *p, const char *func)
{
	for (;;) {
		span_t *s = p->partial;
		if (s == NULL && (s = pool_grow(p)) == NULL) {
			errno = ENOMEM;
			return NULL;
		}
		char *base = span_base(s);
		void *obj = s->u.pool.free_head;
		if (obj != EBB_LIST_END) {
			void *next = link_get(obj);
			if (next == EBB_LIST_END || object_of_span(p, s, base, next)) {
				s->u.pool.free_head = next;
				return handed_out(p, s, obj);
			}
			/* A write into a free object: do not follow it. The objects
			 * still listed are lost until the span goes back (they are
			 * not counted in `used`). */
			freelist_corrupt(func, obj);
			s->u.pool.free_head = EBB_LIST_END;
		}
		if (s->u.pool.bump < p->per_span)
			return handed_out(p, s, base + (size_t)s->u.pool.bump++ * p->stride);
		to_full(p, s);
	}
}

/* Gives obj back to p, or reports why it cannot be one of p's free
 * objects. A span whose last object came back goes to the page heap; one
 * that was full rejoins `partial`. */
static void pool_put(ebb_pool_t *p, void *obj, const char *func)
{
	char *base;
	span_t *s = pool_span_of(p, obj, &base);
	if (s == NULL) {
		superblock_t *sb;
		span_t *o = superblock_span_lookup(obj, &sb);
		report_bad_pointer(func, obj, o && o->state == SPAN_POOL ? "an object of another ebb_pool"
									 : "not an object of this ebb_pool");
		return;
	}
	if (has_mark_room(p) && mark_get(obj) && span_holds_free(p, s, obj)) {
		report_bad_pointer(func, obj, "double free (the object is already free)");
		return;
	}
	if (!object_of_span(p, s, base, obj)) {
		report_bad_pointer(func, obj, "not the start of an object of this ebb_pool");
		return;
	}
	if (has_mark_room(p))
		mark_put(obj, freelist_mark_of(obj, freelist_mark));
	link_set(obj, s->u.pool.free_head);
	s->u.pool.free_head = obj;
	if (--s->used == 0) {
		list_unlink(s->in_partial ? &p->partial : &p->full, s);
		if (p->hot == s) {
			p->hot = NULL;
			p->hot_base = NULL;
		}
		page_heap_free(s);
	} else if (!s->in_partial) {
		to_partial(p, s);
	}
}

/* The owner's fast paths: the common case, which moves no span between
 * lists and finds nothing to report. They return false having changed
 * nothing, and the caller takes the general path (pool_take, pool_put),
 * which handles everything else; so they are leaves without a stack frame. */
EBB_INLINE bool take_fast(ebb_pool_t *p, void **out)
{
	span_t *s = p->partial;
	if (EBB_UNLIKELY(s == NULL))
		return false;
	char *base = span_base(s);
	void *obj = s->u.pool.free_head;
	uint32_t bump = s->u.pool.bump;
	if (obj != EBB_LIST_END) {
		/* A link must point into the span or end the list: one that a
		 * stray write changed decodes, through the secret, to anywhere. */
		void *next = link_get(obj);
		if (EBB_UNLIKELY(next == EBB_LIST_END
					 ? bump == p->per_span
					 : (size_t)((char *)next - base) >= ((size_t)s->npages << EBB_PAGE_SHIFT)))
			return false;
		s->u.pool.free_head = next;
	} else {
		if (EBB_UNLIKELY(bump + 1 >= p->per_span))
			return false;
		s->u.pool.bump = bump + 1;
		obj = base + (size_t)bump * p->stride;
	}
	if (has_mark_room(p))
		mark_put(obj, 0);
	s->used++;
	if (EBB_UNLIKELY(p->hot != s)) {
		p->hot = s;
		p->hot_base = base;
	}
	*out = obj;
	return true;
}

EBB_INLINE bool put_fast(ebb_pool_t *p, void *obj)
{
	/* Most frees go back to the span objects are being taken from. */
	span_t *s = p->hot;
	size_t off = (size_t)((char *)obj - p->hot_base);
	if (EBB_UNLIKELY(off >= p->span_bytes)) { /* also when hot is NULL: obj - 0 */
		char *base;
		s = pool_span_of(p, obj, &base);
		if (EBB_UNLIKELY(s == NULL))
			return false;
		off = (size_t)((char *)obj - base);
	}
	/* obj is inside s: only the object boundary is left to check. */
	if (EBB_UNLIKELY(s->used == 1 || !s->in_partial || !object_at(p, s, off)))
		return false;
	if (has_mark_room(p)) {
		uint64_t mark = freelist_mark_of(obj, freelist_mark);
		if (EBB_UNLIKELY(mark_get(obj)))
			return false;
		mark_put(obj, mark);
	}
	link_set(obj, s->u.pool.free_head);
	s->u.pool.free_head = obj;
	s->used--;
	return true;
}

/* ---------------------------------------------------------------------------
 * Handles and the owner check
 * ------------------------------------------------------------------------- */

/* h points at a live pool handle: a slot of pool_headers that holds the
 * magic. The registry and the pagemap are consulted before h is read; it
 * reads nothing another thread may be writing for a live handle (the
 * handle span's descriptor fields other than `bump` are written before its
 * first handle is handed out). */
static bool handle_ok(const ebb_pool_t *h)
{
	superblock_t *sb;
	span_t *s = superblock_span_lookup(h, &sb);
	if (s == NULL || s->state != SPAN_POOL || s->u.pool.pool != &pool_headers)
		return false;
	size_t off = (size_t)((const char *)h - (const char *)span_start(sb, s));
	return object_index(&pool_headers, off) * POOL_HANDLE_STRIDE == off && h->own.magic == POOL_MAGIC;
}

static bool handle_ok_any(const void *h)
{
	return handle_ok((const ebb_pool_t *)h);
}

static const owner_kind_t pool_kind = {
	.magic = POOL_MAGIC,
	.handle_ok = handle_ok_any,
	.not_one = "not an ebb_pool (never created, or destroyed)",
	.not_ours = "the pool belongs to another thread (create it with EBB_SHARED to share it, or "
		    "hand it over with ebb_pool_adopt)",
};

/* The owner-or-lock rule (owner.h). */
EBB_INLINE bool pool_enter(ebb_pool_t *p, const char *func)
{
	return owner_enter(p, p != NULL ? &p->own : NULL, &pool_kind, func);
}

EBB_INLINE void pool_leave(ebb_pool_t *p)
{
	owner_leave(&p->own);
}

static ebb_pool_t *handle_alloc(void)
{
	lock_acquire(&pool_headers.own.lock);
	if (pool_headers.stride == 0) {
		pool_layout(&pool_headers, POOL_HANDLE_STRIDE, EBB_CACHELINE);
		pool_headers.own.magic = POOL_MAGIC;
	}
	ebb_pool_t *h = pool_take(&pool_headers, "ebb_pool_create");
	lock_release(&pool_headers.own.lock);
	return h;
}

static void handle_free(ebb_pool_t *h)
{
	lock_acquire(&pool_headers.own.lock);
	pool_put(&pool_headers, h, "ebb_pool_destroy");
	lock_release(&pool_headers.own.lock);
}

/* ---------------------------------------------------------------------------
 * The API
 * ------------------------------------------------------------------------- */
EBB_API ebb_pool_t *ebb_pool_create(size_t size, size_t alignment, unsigned flags)
{
	if (size == 0 || size > EBB_POOL_MAX_SIZE || alignment > EBB_POOL_MAX_ALIGN ||
	    (alignment != 0 && !util_is_pow2(alignment)) || (flags & ~EBB_SHARED) != 0) {
		errno = EINVAL;
		return NULL;
	}
	if (!init_ensure()) {
		errno = ENOMEM;
		return NULL;
	}
	ebb_pool_t *p = handle_alloc();
	if (p == NULL)
		return NULL;
	memset(p, 0, sizeof *p);
	pool_layout(p, size, alignment);
	owner_init(&p->own, &pool_kind, flags);
	return p;
}

static EBB_NOINLINE void *pool_alloc_slow(ebb_pool_t *pool)
{
	if (!pool_enter(pool, "ebb_pool_alloc"))
		return NULL;
	void *obj = pool_take(pool, "ebb_pool_alloc");
	pool_leave(pool);
	return obj;
}

static EBB_NOINLINE void pool_free_slow(ebb_pool_t *pool, void *ptr)
{
	if (ptr == NULL)
		return;
	if (!pool_enter(pool, "ebb_pool_free"))
		return;
	pool_put(pool, ptr, "ebb_pool_free");
	pool_leave(pool);
}

EBB_API void *ebb_pool_alloc(ebb_pool_t *pool)
{
	void *obj;
	if (EBB_LIKELY(pool != NULL && pool->own.thread == owner_thread_self() && take_fast(pool, &obj)))
		return obj;
	return pool_alloc_slow(pool);
}

EBB_API void ebb_pool_free(ebb_pool_t *pool, void *ptr)
{
	if (EBB_LIKELY(ptr != NULL && pool != NULL && pool->own.thread == owner_thread_self() && put_fast(pool, ptr)))
		return;
	pool_free_slow(pool, ptr);
}

EBB_API void ebb_pool_destroy(ebb_pool_t *pool)
{
	if (pool == NULL)
		return;
	if (!pool_enter(pool, "ebb_pool_destroy"))
		return;
	span_t *lists[2] = {pool->partial, pool->full};
	pool->partial = pool->full = pool->hot = NULL;
	pool->hot_base = NULL;
	owner_clear(&pool->own);
	pool_leave(pool);
	for (unsigned i = 0; i < 2; i++) {
		for (span_t *s = lists[i], *next; s; s = next) {
			next = s->next;
			page_heap_free(s);
		}
	}
	handle_free(pool);
}

EBB_API void ebb_pool_adopt(ebb_pool_t *pool)
{
	if (pool == NULL || !handle_ok(pool)) {
		report_bad_pointer("ebb_pool_adopt", pool, pool_kind.not_one);
		errno = EINVAL;
		return;
	}
	owner_adopt(&pool->own);
}

/* ---------------------------------------------------------------------------
 * For the rest of the allocator
 * ------------------------------------------------------------------------- */
const char *pool_span_reason(const void *p, const span_t *s)
{
	(void)p;
	if (s->u.pool.pool == &pool_headers)
		return "an ebb_pool handle, not a malloc block (destroy it with ebb_pool_destroy)";
	return "an object of an ebb_pool, not a malloc block (give it back with ebb_pool_free)";
}

void pool_prefork(void)
{
	lock_acquire(&pool_headers.own.lock);
}

void pool_postfork_parent(void)
{
	lock_release(&pool_headers.own.lock);
}

void pool_postfork_child(void)
{
	lock_init(&pool_headers.own.lock);
}
