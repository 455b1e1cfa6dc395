/* api.c: every public entry point, the standard names that replace the
 * system allocator (EBB_OVERRIDE), and the process-wide hooks (registering
 * core/api/fork.c's fork handlers, exit-time stats). The one core file that
 * includes tcache/: it is the top of the layers and the only place that sees
 * all of them.
 *
 * malloc and free are the tcache fast paths inlined here, so `malloc` costs
 * what `ebb_malloc` costs; everything else is built on them and on large.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "core/process/background.h"
#include "core/blocks/block.h"
#include "core/blocks/central.h"
#include "core/api/fork.h"
#include "core/blocks/freelist.h"
#include "core/process/init.h"
#include "core/pages/large.h"
#include "core/runtime/meta.h"
#include "core/runtime/options.h"
#include "core/pages/page_heap.h"
#include "core/ext/arena.h"
#include "core/ext/pool.h"
#include "core/process/prof.h"
#include "core/runtime/report.h"
#include "core/process/stats.h"
#include "core/base/track.h"
#include "ebbmalloc.h"
#include "os/os.h"
#include "os/os_prof.h"
#include "tcache/tcache.h"

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */

/* Describes an allocated block: its usable size and, for page-run blocks,
 * its span. Reports a pointer that is not an allocated block's start (naming
 * `func`) and returns false. */
typedef struct block_info {
	size_t usable;
	span_t *large; /* NULL for small blocks */
	unsigned cls;
} block_info_t;

EBB_INLINE bool block_info(const void *p, const char *func, block_info_t *out)
{
	/* Small blocks: the one test of core/blocks/block.h (the free fast path's). */
	span_t *small;
	const char *why;
	unsigned cls = block_lookup(p, &small, &why);
	if (EBB_LIKELY(cls != 0)) {
		if (EBB_UNLIKELY(freelist_marked(p, freelist_mark))) {
			report_bad_pointer(func, p, "the block was freed (it carries the free mark)");
			return false;
		}
		out->usable = size_classes[cls].size;
		out->large = NULL;
		out->cls = cls;
		return true;
	}
	if (why != NULL) {
		report_bad_pointer(func, p, why);
		return false;
	}
	/* A page run (p's registry slot is a superblock header: block_lookup
	 * saw it) is found inline, realloc of a long string asks this. */
	superblock_t *sb;
	span_t *s = registry_get(p) == REG_HEADER ? superblock_span_in(p, &sb) : superblock_span_lookup(p, &sb);
	if (s != NULL && span_load_state(s) == SPAN_LARGE && p == span_start_seen(sb, s)) {
		out->usable = large_usable(s);
		out->large = s;
		out->cls = 0;
		return true;
	}
	why = large_why_bad(p, false);
	report_bad_pointer(func, p, why ? why : "not an allocated block");
	return false;
}

/* Valgrind build (core/base/track.h): tells memcheck that p is a new block of
 * `size` bytes, and that the rest of it is out of bounds. */
static void track_alloc(void *p, size_t size, int zeroed)
{
	(void)p;
	(void)size;
	(void)zeroed;
#if EBB_VALGRIND
	block_info_t b;
	if (p == NULL)
		return;
	TRACK_ALLOC(p, size, zeroed);
	TRACK_QUIET_BEGIN();
	bool known = block_info(p, "malloc", &b);
	TRACK_QUIET_END();
	if (known && b.usable > size)
		TRACK_NOACCESS((char *)p + size, b.usable - size);
#endif
}

/* malloc and free: the fast paths, and what memcheck is told about them in
 * the valgrind build (nothing otherwise). A block is untracked before free
 * gives it back: once back, another thread may get it. */
EBB_INLINE void *api_malloc(size_t size)
{
	TRACK_QUIET_BEGIN();
	void *p = tcache_alloc(size);
	TRACK_QUIET_END();
	track_alloc(p, size, 0);
	return p;
}

EBB_INLINE void api_free(void *p)
{
	TRACK_FREE(p);
	TRACK_QUIET_BEGIN();
	tcache_free(p);
	TRACK_QUIET_END();
}

/* Whether p lies in a small-block page but starts no block there: what an
 * inner sample of the heap profiler looks like (core/process/prof.h), and
 * any other such pointer is reported. Only slow paths ask. A page-aligned
 * pointer (a page run's, a huge block's) never is one, and is told apart
 * first: bench aligned 64B-2M frees 9 000 page runs in 15 000 operations,
 * and the lookup cost each about 15 instructions. */
static bool api_prof_inner(const void *p)
{
	if (((uintptr_t)p & (EBB_PAGE_SIZE - 1)) == 0)
		return false;
	span_t *s;
	const char *why;
	return block_lookup(p, &s, &why) == 0 && why != NULL;
}

/* p, which api_prof_inner said lies inside a small block, is no live
 * inner sample: if its block starts PROF_INNER bytes before it and is free
 * (its mark), p was one, freed already, and is reported as that (true). A
 * block handed out again since is not told apart from any other bad
 * pointer. */
static EBB_NOINLINE bool api_prof_inner_again(const void *p, const char *func)
{
	const char *block = (const char *)p - PROF_INNER;
	span_t *s;
	const char *why;
	if (block_lookup(block, &s, &why) == 0 || !freelist_marked(block, freelist_mark))
		return false;
	report_bad_pointer(func, p, "double free (a heap profiler sample block, freed already)");
	return true;
}

/* free's slow path with prof on: an inner sample's free, or one freed
 * already, before tcache_free_slow's reports. */
static EBB_NOINLINE void api_prof_free_slow(void *p)
{
	if (api_prof_inner(p) && (prof_free_inner(p) || api_prof_inner_again(p, "free")))
		return;
	tcache_free_slow(p);
}

PROF_PATCHED_ALIGN; /* before the first PROF_PATCHED function */

/* The heap profiler's free (prof on): free's fast path, whose slow path
 * asks the profiler about a pointer that fails the block test before
 * tcache_free_slow reports it (an inner sample's). With prof on, free,
 * ebb_free, free_sized, free_aligned_sized and operator delete jump here
 * (api_prof_redirect); a build without the standard names calls it from
 * ebb_free. Its fast path is free's, instruction for instruction (no
 * patched load: it also runs unpatched). */
EBB_NOINLINE PROF_PATCHED void api_prof_free(void *p)
{
	tcache_free_or(p, api_prof_free_slow);
}

/* realloc's free of a block it does not keep: with prof on through free's
 * prof variant, which knows an inner sample (prof: a constant in each copy
 * of realloc_slow_at). */
EBB_INLINE void realloc_free(void *p, bool prof)
{
	if (prof)
		api_prof_free(p);
	else
		tcache_free(p);
}

static void *alloc_aligned_impl(size_t align, size_t size)
{
	if (align <= EBB_MIN_ALIGN)
		return tcache_alloc(size);
	if (size > EBB_MAX_REQUEST || align > EBB_MAX_REQUEST) {
		errno = ENOMEM;
		return NULL;
	}
	if (EBB_UNLIKELY(!init_ensure())) {
		errno = ENOMEM;
		return NULL;
	}
	/* A class whose block size is a multiple of align has every block
	 * aligned: spans start on a page and align <= one page here. */
	unsigned cls = size_class_aligned(size, align);
	if (cls)
		return tcache_alloc(size_classes[cls].size);
	return large_alloc(size, align, false);
}

/* The prefixed API's and the aligned allocators' test of the heap profiler
 * (core/process/prof.h; the standard names choose at load time instead). */
#define API_PROF_ON() (!EBB_VALGRIND && __atomic_load_n(&prof_on, __ATOMIC_RELAXED))

static void *alloc_aligned(size_t align, size_t size)
{
	/* No test of the size before the tick (3 instructions a call fewer
	 * with prof on, bench aligned): prof_alloc fails a request no block
	 * holds (ENOMEM), and prof_tick's borrow keeps one of 2^63 bytes or
	 * more from stopping the sampling. */
	if (EBB_UNLIKELY(API_PROF_ON()) && prof_tick(size) && prof_should_sample(size))
		return prof_alloc(size, align, false, __builtin_return_address(0));
	TRACK_QUIET_BEGIN();
	void *p = alloc_aligned_impl(align, size);
	TRACK_QUIET_END();
	track_alloc(p, size, 0);
	return p;
}

/* calloc of more than EBB_SMALL_MAX bytes, or of a product that overflows
 * (total is then SIZE_MAX, which no allocation holds). */
static EBB_COLD void *calloc_large(size_t total)
{
	if (total > EBB_MAX_REQUEST || EBB_UNLIKELY(!init_ensure())) {
		errno = ENOMEM;
		return NULL;
	}
	return large_alloc(total, EBB_MIN_ALIGN, true);
}

/* The small path is kept compact: a program calls calloc far less often
 * than malloc, so its code is mostly out of the instruction cache when
 * called (python3 with PYTHONMALLOC=malloc, cachegrind: its first line
 * missed at 97% of the calls). The large path is out of line and memset
 * is a tail call. */
static void *calloc_impl(size_t count, size_t size)
{
	size_t total;
	if (EBB_UNLIKELY(__builtin_mul_overflow(count, size, &total)))
		total = SIZE_MAX;
	if (EBB_LIKELY(total <= EBB_SMALL_MAX)) {
		void *p = tcache_alloc(total);
		if (EBB_UNLIKELY(p == NULL))
			return NULL;
		return memset(p, 0, total);
	}
	return calloc_large(total);
}

/* The end of a realloc of p (b) to `size` that returns q, for memcheck: q
 * is the block now (its first min(old, new) bytes defined), or, if q is NULL,
 * p still is. Nothing in the normal build. */
static void *realloc_done(void *p, const block_info_t *b, void *q, size_t size)
{
	(void)p;
	(void)b;
	(void)size;
	if (q == NULL) {
		TRACK_ALLOC(p, b->usable, 0);
		TRACK_DEFINED(p, b->usable);
	} else {
		track_alloc(q, size, 0);
		TRACK_DEFINED(q, b->usable < size ? b->usable : size);
	}
	return q;
}

/* A block that realloc grows to at least this many bytes moves to a
 * mapping of its own (a huge block, huge.c), if it must move: its next
 * growth is then an mremap, which moves page tables instead of copying the
 * contents and fills the new pages from freed huge blocks, instead of a
 * copy into a larger page run that leaves the old one free and resident. At
 * 1 MiB a mapping (whole 2 MiB units) is at least half used. */
#define REALLOC_MAPPED_MIN ((size_t)1 << 20)

/* A small block of at least REALLOC_UNCACHED_MIN bytes that realloc moves
 * up out of after a step of at most an eighth of its size (a buffer built a
 * piece at a time: the headroom above chose the move) goes back to its span,
 * not into the thread cache, and the block it moves to comes from the bin
 * only if the bin holds one, else alone from the central lists
 * (tcache_alloc_moving, tcache_free_moved). Such a program builds many
 * buffers at once, each passing through every class on the way up, so each
 * class sees about as many of these frees as allocations: cached, the old
 * blocks waited in the bins (and, flushed, in transfer batches) and kept
 * their spans, up to 4 blocks of 8.5-32 KiB, from going back to the page
 * heap, as did the rest of each refilled batch. bench realloc string (64
 * strings grown 1-64 bytes at a time to 64 B-64 KiB) held 0.6-0.8 MiB in
 * thread caches and 0.4 MiB in transfer batches at its peak, with 1.2 MiB in
 * use. The central lists cost such a move some 735 instructions more
 * (span returns and carves included), paid a logarithmic number of times
 * per buffer (the headroom). A buffer grown by a large factor (a vector,
 * by half) keeps the cache: few such buffers are in one class at a time,
 * and with these frees sent to the spans nearly every move emptied a span
 * that the next move carved again (bench realloc vector: 3 423 spans
 * carved instead of 155, 7% more CPU, and its peak went from 52.5 to 55.0
 * MiB). Measurements:
 * docs/memory-return.md, "Strings grown by realloc". */
#define REALLOC_UNCACHED_MIN ((size_t)1024)

/* A buffer built a piece at a time (the small-step test of
 * REALLOC_UNCACHED_MIN), or a page run that grows, moves into a page run
 * of its own once the move is to REALLOC_RUN_MIN bytes or more, not into a
 * size class: its next growth is then tried in place into the free pages
 * right of it (large_resize), as glibc grows a chunk into the top of its
 * heap, and when it moves or is freed its pages go back to the page heap
 * for any size at once, instead of staying in a span of 4-8 blocks of
 * 8.5-28 KiB that only that class reuses (realloc string's peak held
 * 0.3-0.4 MiB free in those spans). bench realloc string, peak RSS
 * (medians of 7 interleaved runs, two sets): 4 924 KiB without, 4 372 and
 * 4 464 from 8 KiB, 4 540 from 4 KiB, 4 244 from 2 KiB; below a few pages
 * a page run rounds the buffer up by up to a page, so 8 KiB keeps small
 * strings in their classes. Page faults 888 -> 748, instructions +0.3%
 * (callgrind, --bytes=32M); a sampled move takes the same page run
 * (prof_alloc_moved). docs/memory-return.md, "Strings grown by realloc". */
#define REALLOC_RUN_MIN ((size_t)8192)

EBB_INLINE span_t *realloc_run_span(const void *p);
EBB_INLINE size_t realloc_span_stays(const span_t *s, size_t size);
EBB_INLINE size_t realloc_run_stays(const void *p, size_t size);

/* Every realloc but the one realloc_impl answers itself. cls: p's class if
 * realloc_impl found p to be a small block without a free mark, else 0 (p is
 * then checked here, and reported if bad). prof (a constant): the heap
 * profiler's copy (realloc_slow_prof), whose caller's return address is
 * ret. */
EBB_INLINE void *realloc_slow_at(void *p, size_t size, unsigned cls, bool prof, void *ret)
{
	/* A realloc allocates (is counted, and may be sampled) only when it
	 * allocates a block: from NULL, or moving. One that resizes in place
	 * allocates nothing, as in tcmalloc, and a sampled block resized in
	 * place stays sampled as it was (its stack and size). */
	if (prof && p == NULL && prof_tick(size) && prof_should_sample(size)) {
		if (size > EBB_SMALL_MAX)
			tcache_large_tick(); /* as malloc's own would count */
		return prof_alloc(size, EBB_MIN_ALIGN, false, ret);
	}
	/* prof: p is a sampled block standing in for a small block of this
	 * usable size (prof_realloc_usable, prof_inner_usable), resized below
	 * as that block. An inner sample (core/process/prof.h) fails
	 * realloc_impl's block test and comes here with cls 0; it holds
	 * inner_usable bytes (class_usable's less PROF_INNER at worst). */
	size_t class_usable = 0, inner_usable = 0;
	bool aligned = ((uintptr_t)p & (EBB_PAGE_SIZE - 1)) == 0; /* no inner sample: no call */
	if (prof && cls == 0 && p != NULL && !aligned && api_prof_inner(p)) {
		inner_usable = prof_inner_usable(p, &class_usable);
		if (inner_usable == 0 && api_prof_inner_again(p, "realloc"))
			return NULL;
	}
	bool inner = inner_usable != 0;
	/* prof: p's page run as realloc_run_span found it, block_info's
	 * answer below without a second look, else NULL (also when the
	 * profiler's cache answered without a look: block_info then looks,
	 * only if p moves or is freed). */
	span_t *seen = NULL;
	if (prof && cls == 0 && p != NULL && aligned) {
		/* A page run with the sampled mark is a live or a kept sample
		 * (core/process/prof.h): a kept one (freed already) is reported
		 * before anything is done to it (SIZE_MAX); a live sample of a
		 * class stays while the class would hold size (as realloc_impl
		 * answers a small block). Else a page run that stays is
		 * answered as realloc_impl answers those above EBB_SMALL_MAX. A
		 * sampled string grown a few bytes at a time comes here at
		 * every call from realloc_plain (a call through the GOT), and
		 * only past its class or with no cache answer from the
		 * profiler's copies (realloc_run_stays_prof). */
		span_t *run = NULL;
		size_t u = prof_realloc_cached(p);
		if (u == 0) {
			run = realloc_run_span(p);
			u = run != NULL && atomic_peek_u8(&run->u.large.sampled) ? prof_realloc_usable(p) : 0;
		}
		if (u == SIZE_MAX) {
			/* reported; on_error=warn: a plain page run now, looked
			 * up again below */
		} else if (u != 0) {
			seen = run; /* NULL if the cache answered */
			class_usable = u;
			if (size <= class_usable && size >= class_usable / 2) {
				block_info_t b = { class_usable, NULL, 0 };
				TRACK_FREE(p);
				return realloc_done(p, &b, p, size);
			}
		} else if (run != NULL) {
			size_t usable = realloc_span_stays(run, size);
			if (usable != 0) {
				block_info_t b = { usable, NULL, 0 };
				TRACK_FREE(p);
				return realloc_done(p, &b, p, size);
			}
			seen = run;
		}
	}
	if (p == NULL) {
		void *q = tcache_alloc(size);
		track_alloc(q, size, 0);
		return q;
	}
	/* Checked before anything else, so that a bad pointer is reported as
	 * realloc's, also when realloc would only free it. */
	block_info_t b = { cls ? size_classes[cls].size : class_usable, NULL, cls };
	if (prof && seen != NULL) {
		/* block_info's answer for a page run: realloc_run_span made its
		 * tests (p starts a LARGE span, not huge), and the caller owns
		 * p, so they still hold. */
		b.usable = large_usable(seen);
		b.large = seen;
	} else if (cls == 0 && !inner && !block_info(p, "realloc", &b)) {
		return NULL;
	}
	/* What a move copies: all p holds (its page run if sampled: the
	 * program may have used it all, malloc_usable_size says so). */
	size_t held = inner ? inner_usable : b.usable;
	if (prof && class_usable != 0) {
		/* From here on p is the small block it stands in for: headroom
		 * of a small block, no growth into the pages right of it. */
		b.usable = class_usable;
		b.large = NULL;
	}
	TRACK_FREE(p); /* told again at the end if p stays */
	if (size == 0) { /* glibc: free and return NULL */
		realloc_free(p, prof);
		return NULL;
	}
	if (size > EBB_MAX_REQUEST) {
		errno = ENOMEM;
		return realloc_done(p, &b, NULL, size);
	}
	/* A block grown by a small step gets headroom, in place or where it
	 * moves, so that a string grown a few bytes at a time is resized (and
	 * copied) a logarithmic number of times instead of at every size class
	 * or page: half its size while it is a small block (copies are what
	 * such a string costs, and the slack is at most 16 KiB), a quarter once
	 * it is a page run. */
	size_t room = b.large == NULL ? b.usable / 2 : b.usable / 4;
	size_t want = size;
	if (size > b.usable && size - b.usable < room && b.usable + room <= EBB_MAX_REQUEST)
		want = b.usable + room;
	/* In place while the block stays at least half used, small or a page
	 * run: a string that grows into its headroom asks for less than the
	 * block holds at every step, and a page run must not go back to a
	 * class then (a string near 32 KiB would go back and forth between
	 * the largest class and a page run, copied each time). A huge block
	 * keeps count of what it holds beyond the size asked (huge.c): it is
	 * always resized. */
	if (size <= b.usable && size >= b.usable / 2 && (b.large == NULL || !b.large->huge) &&
	    (!prof || size <= held))
		return realloc_done(p, &b, p, size);
	if (b.large != NULL && (size > EBB_SMALL_MAX || size >= REALLOC_RUN_MIN)) {
		/* Grown into free pages right of it (with headroom if they are
		 * there), shrunk in place, or a huge block remapped: no copy. */
		/* A huge block may move (mremap) without passing the free
		 * hook: a sample goes along (prof_resize_begin). */
		void *sample = prof && b.large->huge ? prof_resize_begin(p, b.large) : NULL;
		void *q = large_resize(p, b.large, want);
		if (q == NULL && want > size)
			q = large_resize(p, b.large, size);
		if (sample != NULL)
			prof_resize_end(sample, q != NULL ? q : p);
		if (q)
			return realloc_done(p, &b, q, size);
	}
	void *q = NULL;
	/* A buffer built a piece at a time (a small step of a block of
	 * REALLOC_UNCACHED_MIN or more; for a sample, of the small block it
	 * stands for) or a page run that grows: built, run (REALLOC_RUN_MIN). */
	bool small_step = b.usable >= REALLOC_UNCACHED_MIN && size > b.usable && size - b.usable <= b.usable / 8;
	bool built = b.cls != 0 && small_step;
	bool run = want >= REALLOC_RUN_MIN && want <= EBB_SMALL_MAX && size > b.usable &&
		   ((small_step && (b.cls != 0 || class_usable != 0)) || b.large != NULL);
	/* The move allocates: a sampled one moves into a sample block (if
	 * that fails, unsampled), of the kind the unsampled move takes. p, if
	 * sampled, leaves its sample in its free (large_free_checked's hook). */
	bool mapped = want >= REALLOC_MAPPED_MIN && size > b.usable;
	if (prof && prof_tick(size) && prof_should_sample(size)) {
		if (!mapped && want > EBB_SMALL_MAX)
			tcache_large_tick(); /* as tcache_alloc(want) would count */
		q = prof_alloc_moved(size, want, mapped, run, ret);
	}
	if (q == NULL && mapped)
		q = large_alloc_mapped(want);
	if (q == NULL && run)
		q = large_alloc(want, EBB_MIN_ALIGN, false);
	if (q == NULL && built && want <= EBB_SMALL_MAX)
		q = tcache_alloc_moving(size_class_of(want));
	if (q == NULL)
		q = tcache_alloc(want);
	if (q == NULL)
		return realloc_done(p, &b, NULL, size); /* p is untouched */
	memcpy(q, p, held < size ? held : size);
	if (b.large != NULL)
		large_free_moved(p);
	else if (built)
		tcache_free_moved(p, b.cls);
	else
		realloc_free(p, prof);
	return realloc_done(p, &b, q, size);
}

/* With prof on, api_prof_redirect writes a jump to realloc_slow_prof over
 * its entry (noclone: every call reaches this copy). */
static EBB_NOINLINE __attribute__((noclone)) PROF_PATCHED void *realloc_slow(void *p, size_t size, unsigned cls)
{
	return realloc_slow_at(p, size, cls, false, NULL);
}

/* Reached by a tail call from realloc (through realloc_slow's jump) or
 * realloc_prof, with no frame of the allocator between: its return address
 * is the program's call. */
static EBB_NOINLINE void *realloc_slow_prof(void *p, size_t size, unsigned cls)
{
	return realloc_slow_at(p, size, cls, true, __builtin_return_address(0));
}

/* The usable size of p if it is a page-run block (not huge) that stays at
 * least half used at `size` bytes (realloc_slow then keeps it in place),
 * else 0. A string past the largest class grows a few bytes per realloc:
 * this answers those calls, for runs longer than their pmap entry can
 * name (realloc_impl_at), without the slow path's second lookup. The tests
 * are block_info's for a page run: p starts a LARGE span. */
EBB_INLINE size_t realloc_run_stays(const void *p, size_t size)
{
	const span_t *s = realloc_run_span(p);
	return s != NULL ? realloc_span_stays(s, size) : 0;
}

/* realloc_run_stays' look: the descriptor of the page run (not huge) p
 * starts, else NULL. */
EBB_INLINE span_t *realloc_run_span(const void *p)
{
	superblock_t *sb;
	if (((uintptr_t)p & (EBB_PAGE_SIZE - 1)) != 0 || registry_get(p) != REG_HEADER)
		return NULL;
	span_t *s = superblock_span_in(p, &sb);
	if (s == NULL || atomic_peek_u8(&s->state) != SPAN_LARGE || atomic_peek_u8(&s->huge) ||
	    p != superblock_page_addr(sb, atomic_peek_u16(&s->page)))
		return NULL;
	return s;
}

/* realloc_run_stays' answer for the page run s. */
EBB_INLINE size_t realloc_span_stays(const span_t *s, size_t size)
{
	size_t usable = large_usable(s);
	/* A sample (its entry has no size: large_alloc_aside) is resized as
	 * the small block it stands for, in realloc_run_stays_prof or
	 * realloc_slow_prof. */
	return size <= usable && size >= usable / 2 && !atomic_peek_u8(&s->u.large.sampled) ? usable : 0;
}

/* realloc_run_stays for the profiler's copies (realloc_impl_at, prof): a
 * live sample of a class (its sampled mark, then prof_realloc_cached: a
 * slot names a live sample, and the caller owns p) is answered as the
 * small block it stands for, as realloc_slow_prof would (a sampled string
 * grown a few bytes at a time: bench realloc string entered the slow path
 * about 6 000 times a run for these alone). No answer (a kept sample, a
 * sample of no class, a slot taken by another run) goes on to
 * realloc_slow_prof, which looks again. */
EBB_INLINE size_t realloc_run_stays_prof(const void *p, size_t size)
{
	const span_t *s = realloc_run_span(p);
	if (s == NULL)
		return 0;
	if (atomic_peek_u8(&s->u.large.sampled)) {
		size_t u = prof_realloc_cached(p); /* 0: no answer */
		return size <= u && size >= u / 2 ? u : 0;
	}
	return realloc_span_stays(s, size);
}

/* realloc_impl's move of the small block p (class cls) to a smaller class
 * (its comment says when and why). Out of line: inlined, its calls made
 * realloc_impl save and restore six registers on every call, also when p
 * stays (bench realloc string: 14 of its 58 instructions). */
static EBB_NOINLINE EBB_HOT_TEXT void *realloc_shrink(void *p, size_t size, unsigned cls)
{
	void *q = tcache_alloc(size);
	if (EBB_UNLIKELY(q == NULL))
		return realloc_slow(p, size, cls);
	block_info_t b = { size_classes[cls].size, NULL, cls };
	TRACK_FREE(p);
	memcpy(q, p, size);
	tcache_free(p);
	return realloc_done(p, &b, q, size);
}

/* Where realloc_impl_at reads p's free mark: p's mark word if p is a small
 * block (small is 1: p passed the block test), else freelist_mark, a word
 * of ours that is never p's mark (key xor the bin mark is p, never 0 or 1
 * in a superblock), so that nothing of a run, nor of an address that is no
 * block, is read. A select, not a branch between the kinds (realloc_impl_at
 * says why). */
EBB_INLINE const uint64_t *realloc_mark_word(const void *p, unsigned small)
{
	const uint64_t *w = freelist_mark_word(p);
#if defined(__x86_64__)
	/* gcc makes a branch of the C form */
	__asm__("testl %1, %1\n\tcmovzq %2, %0" : "+r"(w) : "r"(small), "r"(&freelist_mark) : "cc");
#else
	w = small ? w : &freelist_mark;
#endif
	return w;
}

/* Most reallocs of a program that grows strings a few bytes at a time keep
 * the block where it is: p is a small block (the free fast path's test,
 * core/blocks/block.h, with no lock and no load beyond its superblock's page
 * tables) or a short page run, not free (its mark; a freed run's entry has
 * no size), and the block holds size at no more than twice: p stays,
 * without a stack frame. Everything else is realloc_slow, which reuses the
 * class found here instead of looking p up again.
 *
 * prof (a constant): the heap profiler's copies (realloc_prof,
 * realloc_std_prof): the same but for the slow path they reach, and for a
 * page run that is a sample (its sampled mark): a live one of a class is
 * resized in place here as the small block it stands for, when the
 * profiler's cache names it (realloc_run_stays_prof), else there (a kept
 * one is reported there). shrink (a constant): a small block shrunk below
 * half moves in realloc_shrink (the plain code and the standard name's
 * profiler copy), else in the slow path. */
EBB_INLINE void *realloc_impl_at(void *p, size_t size, bool prof, bool shrink)
{
	/* One pmap load answers both kinds that stay: a small block (the
	 * free fast path's test, core/blocks/block.h; never class 0, whose
	 * limit is 0) and a page run of at most EBB_PMAP_RUN_MAX pages (the
	 * entry's run bits, core/pages/superblock.h: p is then the first byte
	 * of its first page, class 0). usable is the class's size or the
	 * run's, never both (a class entry has no run bits, a run's class 0
	 * has size 0). Without a branch between the kinds: strings crossing 32
	 * KiB made it unpredictable (bench realloc string, cachegrind: 0.30
	 * mispredicts per realloc, 3 reallocs in 10 on page runs). */
	size_t slot;
	if (EBB_LIKELY(registry_slot(p, &slot) && registry_at(slot) == REG_HEADER)) {
		uint32_t e = pmap_peek_slot(slot, p);
		unsigned cls = pmap_class(e);
		const size_class_t *k = &size_classes[cls];
		unsigned small = block_offset_ok(block_offset_in(e, (uintptr_t)p), k->block_mul, k->block_limit);
		unsigned run = (((uint32_t)(uintptr_t)p ^ (e & ~EBB_PMAP_RUN_MASK)) | cls) == 0;
		size_t usable = k->size + ((size_t)(e & EBB_PMAP_RUN_MASK) << (EBB_PAGE_SHIFT - EBB_PMAP_RUN_SHIFT));
		/* A small block's free mark is read (a freed one goes to the
		 * slow path, which reports it); a run's is not: a run has none
		 * (its first words are the program's), its entry says it is
		 * not free (run bits, cleared before a run leaves the program,
		 * large_free_checked; without them it is looked up in
		 * realloc_run_stays), and its first line is the one a string
		 * grown at its end touches least (bench realloc string 16M,
		 * cachegrind: the mark read missed D1 on 375K of 516K
		 * reallocs, 116K of them runs'). For a run the word read is
		 * freelist_mark itself (realloc_mark_word): no branch.
		 * Kept from gcc, which would test the two kinds one after the
		 * other: the branch this removes. */
		__asm__("" : "+r"(run));
		if (EBB_LIKELY(small | run)) {
			if (EBB_UNLIKELY(freelist_is_mark(*realloc_mark_word(p, small), p, freelist_mark)))
				return prof ? realloc_slow_prof(p, size, 0) : realloc_slow(p, size, 0); /* reports it */
			/* A live sample stands in for a small block, resized as
			 * that block (prof_realloc_usable), not as its page run:
			 * one that would move unsampled moves here too, so that
			 * the heaps hold what they would with prof=0. It needs
			 * no test here: a sample of a small block is a run
			 * whose entry has no size (large_alloc_aside), which
			 * realloc_run_stays below turns down for its sampled
			 * mark, as it does every sample, so that the plain copy
			 * sends them all to realloc_slow (realloc_slow_prof
			 * once patched); the profiler's copies keep one in
			 * place as its class would (realloc_run_stays_prof). */
			/* size - 1 < usable: size 0 (free) goes on, also for a
			 * run whose entry has no size (usable 0). */
			if (EBB_LIKELY(size - 1 < usable && size >= usable / 2)) {
				block_info_t b = { usable, NULL, cls };
				TRACK_FREE(p);
				return realloc_done(p, &b, p, size);
			}
			/* Shrunk below half: moves to a smaller class, as realloc_slow
			 * would (no headroom, no mapping, the same checks: p's block
			 * test and mark above, q's and p's in the cache's own paths),
			 * in realloc_shrink, without realloc_slow's second look.
			 * python3 with PYTHONMALLOC=malloc (bench/run's python row):
			 * 91% of its reallocs are strings built in an over-allocated
			 * buffer of 65-256 bytes and cut to their length. The
			 * prefixed API's profiler copy keeps the slow path, which
			 * may sample the move; the standard name's (shrink) does
			 * as the plain code does, unsampled. */
			if (shrink && cls != 0 && size != 0 && size < usable / 2)
				return realloc_shrink(p, size, cls);
			if (cls != 0)
				return prof ? realloc_slow_prof(p, size, cls) : realloc_slow(p, size, cls);
			/* A run too long for its entry to hold its size (a string
			 * past 60 KiB grows a few bytes per realloc) stays here
			 * too, after a look at its span. */
			usable = prof ? realloc_run_stays_prof(p, size) : realloc_run_stays(p, size);
			if (usable != 0) {
				block_info_t b = { usable, NULL, 0 };
				TRACK_FREE(p);
				return realloc_done(p, &b, p, size);
			}
		}
	}
	return prof ? realloc_slow_prof(p, size, 0) : realloc_slow(p, size, 0);
}

static void *realloc_impl(void *p, size_t size)
{
	return realloc_impl_at(p, size, false, true);
}

/* ---------------------------------------------------------------------------
 * The heap profiler's variants (core/process/prof.h): what malloc, calloc
 * and realloc become when prof=1. With prof off the standard names run
 * their plain code, instruction for instruction: at start-up
 * (api_constructor) a jump to the variant is written over the plain
 * function's entry only when prof is on (api_prof_redirect). The prefixed
 * API tests prof_on. Each variant passes its caller's return address on:
 * the recorded stack starts there. free has no variant: a sampled block is
 * a page run, which free hands to large_free_checked, where the profiler
 * looks (its hook). Not in the valgrind build (the variants tell memcheck
 * nothing).
 * ------------------------------------------------------------------------- */
/* Reached by a tail call from the variant, so that its return address is
 * the variant's caller (with no tail call, the variant itself: one frame of
 * the allocator more at the top of the stack). Passing the address down
 * instead costs the fast path an instruction: gcc hoists the read. */
static EBB_NOINLINE void *prof_malloc_slow(size_t size)
{
	if (prof_should_sample(size)) {
		if (size > EBB_SMALL_MAX)
			tcache_large_tick(); /* as tcache_alloc would count */
		return prof_alloc(size, EBB_MIN_ALIGN, false, __builtin_return_address(0));
	}
	return tcache_alloc(size);
}

/* prof_tcache_patched's cache pointer, tcache_self() where nothing is
 * patched. */
#if defined(__x86_64__)
#define api_prof_tcache() ((tcache_t *)prof_tcache_patched())
#else
#define api_prof_tcache tcache_self
#endif

/* tcache_alloc_mid for the patched variants (malloc's, calloc's and
 * operator new's, core/api/cxx_new.cpp): sizes above TCACHE_DIRECT_MAX
 * with the cache pointer loaded the patched way, one instruction fewer
 * than tcache_alloc_mid's tcache_self(). One copy for all of them, beside
 * them in the patched page. Never run unpatched (as prof_tcache_patched). */
#if defined(__x86_64__)
EBB_NOINLINE PROF_PATCHED void *api_prof_alloc_mid(size_t size)
{
	return tcache_alloc_mid_from(api_prof_tcache(), size);
}
#else
#define api_prof_alloc_mid tcache_alloc_mid
#endif

/* patched: the redirect's variant (prof_tick_patched, api_prof_tcache),
 * else ebb_malloc. */
EBB_INLINE void *prof_malloc_at(size_t size, bool patched)
{
	if (patched ? prof_tick_patched(size) : prof_tick(size))
		return prof_malloc_slow(size);
	if (!patched)
		return tcache_alloc(size);
	/* The mid sizes out of line: inlined here they saved the jump, but gcc
	 * then shared the pop's tail between the two sizes' paths and the
	 * direct one took 2 register moves more. */
	if (EBB_LIKELY(size <= TCACHE_DIRECT_MAX))
		return tcache_alloc_direct(api_prof_tcache(), size);
	return api_prof_alloc_mid(size);
}

/* calloc's prof_malloc_slow: for a small total whose tick said true, and
 * for every larger one (counted here: the fast path's test of the size is
 * then the one calloc_impl makes anyway), SIZE_MAX for a product that
 * overflows (calloc_impl fails it). Reached by a tail call, so that the
 * return address is the variant's caller. */
static EBB_NOINLINE void *prof_calloc_slow(size_t total)
{
	if (total <= EBB_MAX_REQUEST && (total <= EBB_SMALL_MAX || prof_tick(total)) && prof_should_sample(total))
		return prof_alloc(total, EBB_MIN_ALIGN, true, __builtin_return_address(0));
	return calloc_impl(1, total);
}

/* calloc_impl with the tick; patched: the redirect's variant (as
 * prof_malloc_at's), else ebb_calloc. */
EBB_INLINE void *prof_calloc_at(size_t count, size_t size, bool patched)
{
	size_t total;
	if (EBB_UNLIKELY(__builtin_mul_overflow(count, size, &total)))
		total = SIZE_MAX;
	if (EBB_UNLIKELY(total > EBB_SMALL_MAX))
		return prof_calloc_slow(total);
	if (patched ? prof_tick_patched(total) : prof_tick(total))
		return prof_calloc_slow(total);
	void *p;
	if (!patched)
		p = tcache_alloc(total);
	else if (EBB_LIKELY(total <= TCACHE_DIRECT_MAX))
		p = tcache_alloc_direct(api_prof_tcache(), total);
	else
		p = api_prof_alloc_mid(total);
	if (EBB_UNLIKELY(p == NULL))
		return NULL;
	return memset(p, 0, total);
}

/* realloc has no variant of its own: a realloc is counted only when it
 * allocates, from NULL or moving, which only realloc_slow does, and the
 * redirect is written over realloc_slow's entry (to realloc_slow_prof, its
 * code compiled once more with the profiler's hooks), so a call that
 * resizes in place (most of a string's growth) costs no instruction more
 * than with prof off, and one that reaches realloc_slow costs the jump.
 * (Counting every call sampled a string grown a little at a time past a few
 * pages at nearly every step, and each sample moved and copied it: bench
 * realloc string ran 3 times slower; a variant that tested whether the
 * block moved after the call cost every call about 19 instructions.) This
 * is the prefixed API's copy. */
static EBB_NOINLINE void *realloc_prof(void *p, size_t size)
{
	return realloc_impl_at(p, size, true, false);
}

/* The standard name's copy with prof on: what the programs' PLT slots of
 * realloc point at (api_prof_redirect, os_plt_redirect). It is realloc_plain
 * (realloc_impl) but for realloc_run_stays_prof and the slow path it
 * reaches (realloc_slow_prof, without realloc_slow's jump); a shrink moves
 * as there, unsampled. Calls that still reach realloc_plain (objects loaded
 * later, function pointers) are right too, only slower for a sample: its
 * in-place growth goes through realloc_slow's jump to realloc_slow_prof. */
#if EBB_OVERRIDE && !EBB_VALGRIND
static EBB_NOINLINE void *realloc_std_prof(void *p, size_t size)
{
	return realloc_impl_at(p, size, true, true);
}
#endif

#if EBB_OVERRIDE && !EBB_VALGRIND /* the valgrind build has no profiler */
static PROF_PATCHED void *prof_malloc(size_t size)
{
	return prof_malloc_at(size, true);
}

static PROF_PATCHED void *prof_calloc(size_t count, size_t size)
{
	return prof_calloc_at(count, size, true);
}
#endif

/* ---------------------------------------------------------------------------
 * The prefixed API
 * ------------------------------------------------------------------------- */
/* The plain bodies of the standard names (their code with prof off). Not
 * inlined anywhere: api_prof_redirect writes over their entries. */
#if EBB_OVERRIDE
static EBB_NOINLINE PROF_PATCHED void *malloc_plain(size_t size)
{
	return api_malloc(size);
}

/* In the patched page, as is operator delete's (api_prof_redirect writes
 * over both): one copy-on-write fault for all. ebb_free and the sized
 * frees are this function (aliases). */
static EBB_NOINLINE PROF_PATCHED void free_plain(void *p)
{
	api_free(p);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wattribute-alias"
EBB_API void ebb_free(void *p) __attribute__((alias("free_plain")));
EBB_API void ebb_free_sized(void *p, size_t size) __attribute__((alias("free_plain")));
EBB_API void ebb_free_aligned_sized(void *p, size_t align, size_t size) __attribute__((alias("free_plain")));
#pragma GCC diagnostic pop

/* The same for operator new and delete (core/api/cxx_new.cpp). */
bool api_cxx_prof_redirect(void);
#endif

/* Aligned to a cache line: its small path (calloc_impl) then takes two
 * lines of code instead of three. */
static EBB_NOINLINE __attribute__((aligned(64))) PROF_PATCHED void *calloc_plain(size_t count, size_t size)
{
	TRACK_QUIET_BEGIN();
	void *p = calloc_impl(count, size);
	TRACK_QUIET_END();
	track_alloc(p, count * size, 1); /* no overflow when p != NULL */
	return p;
}

static EBB_NOINLINE EBB_HOT_TEXT void *realloc_plain(void *p, size_t size)
{
	TRACK_QUIET_BEGIN();
	void *q = realloc_impl(p, size);
	TRACK_QUIET_END();
	return q;
}

EBB_API void *ebb_malloc(size_t size)
{
	if (EBB_UNLIKELY(API_PROF_ON()))
		return prof_malloc_at(size, false);
	return api_malloc(size);
}

/* With the standard names, ebb_free and the sized frees are free_plain
 * (aliases, above: the sizes are ignored, which the x86-64 and AArch64
 * calling conventions allow), so that with prof on they jump to
 * api_prof_free as free does; without them, they test prof_on. */
#if !EBB_OVERRIDE
EBB_INLINE void api_free_entry(void *p)
{
#if !EBB_VALGRIND
	if (EBB_UNLIKELY(API_PROF_ON())) {
		api_prof_free(p);
		return;
	}
#endif
	api_free(p);
}

EBB_API void ebb_free(void *p)
{
	api_free_entry(p);
}
#endif

EBB_API void *ebb_calloc(size_t count, size_t size)
{
	if (EBB_UNLIKELY(API_PROF_ON()))
		return prof_calloc_at(count, size, false);
	return calloc_plain(count, size);
}

EBB_API void *ebb_realloc(void *p, size_t size)
{
	if (EBB_UNLIKELY(API_PROF_ON()))
		return realloc_prof(p, size);
	return realloc_plain(p, size);
}

EBB_API void *ebb_reallocarray(void *p, size_t count, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(count, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return ebb_realloc(p, total);
}

/* The aligned allocators fail as glibc 2.36's do (docs/usage.md has the
 * table): posix_memalign returns EINVAL for an alignment that is not a power
 * of two multiple of sizeof(void *), else ENOMEM with errno also ENOMEM (as
 * glibc leaves it); memalign and valloc/pvalloc set errno. */
EBB_API int ebb_posix_memalign(void **out, size_t align, size_t size)
{
	if (align < sizeof(void *) || !util_is_pow2(align))
		return EINVAL;
	void *p = alloc_aligned(align, size);
	if (p == NULL)
		return ENOMEM;
	*out = p;
	return 0;
}

EBB_API void *ebb_aligned_alloc(size_t align, size_t size)
{
	if (!util_is_pow2(align)) {
		errno = EINVAL;
		return NULL;
	}
	return alloc_aligned(align, size);
}

/* glibc rounds an alignment that is not a power of two up to the next one;
 * above SIZE_MAX / 2 + 1 there is none, which is EINVAL (glibc's
 * tst-memalign: memalign(-1, n)). A power of two too large to map is ENOMEM. */
EBB_API void *ebb_memalign(size_t align, size_t size)
{
	if (align > SIZE_MAX / 2 + 1) {
		errno = EINVAL;
		return NULL;
	}
	if (align > EBB_MAX_REQUEST) {
		errno = ENOMEM;
		return NULL;
	}
	if (!util_is_pow2(align))
		align = align < 2 ? 1 : (size_t)1 << (util_log2(align) + 1);
	return alloc_aligned(align, size);
}

EBB_API void *ebb_valloc(size_t size)
{
	return alloc_aligned(EBB_PAGE_SIZE, size);
}

EBB_API void *ebb_pvalloc(size_t size)
{
	if (size > EBB_MAX_REQUEST) {
		errno = ENOMEM;
		return NULL;
	}
	size_t rounded = util_align_up(size ? size : 1, EBB_PAGE_SIZE);
	return alloc_aligned(EBB_PAGE_SIZE, rounded);
}

static EBB_NOINLINE size_t usable_size_slow(const void *p)
{
	block_info_t b;
	if (API_PROF_ON() && p != NULL && api_prof_inner(p)) {
		size_t u = prof_inner_usable(p, NULL); /* an inner sample's (core/process/prof.h) */
		if (u != 0)
			return u;
	}
	TRACK_QUIET_BEGIN();
	bool ok = p != NULL && block_info(p, "malloc_usable_size", &b);
	TRACK_QUIET_END();
	return ok ? b.usable : 0;
}

/* Programs that count their memory ask this for every block they allocate
 * and free (Redis: two calls per malloc/free pair, 609 K calls in a 60 K
 * request run). A small block that passes the free fast path's test
 * (registry byte, one pmap load, rule 3 of core/blocks/block.h) and carries
 * no free mark is answered without a stack frame; all else, with its report,
 * is usable_size_slow's. callgrind, redis-server under redis_bench's load
 * (647 K calls): 46.0 -> 35.0 instructions a call (tcmalloc 27). The
 * valgrind build keeps the slow path: memcheck must not see the mark read of
 * a freed block. */
EBB_API size_t ebb_malloc_usable_size(const void *p)
{
#if !EBB_VALGRIND
	size_t slot;
	if (EBB_LIKELY(registry_slot(p, &slot) && registry_at(slot) == REG_HEADER)) {
		uint32_t e = pmap_peek_slot(slot, p);
		const size_class_t *k = &size_classes[pmap_class(e)];
		if (EBB_LIKELY(pmap_class(e) != 0 &&
			       block_offset_ok(block_offset_in(e, (uintptr_t)p), k->block_mul, k->block_limit) &&
			       !freelist_marked(p, freelist_mark)))
			return k->size;
	}
#endif
	return usable_size_slow(p);
}

#if !EBB_OVERRIDE
EBB_API void ebb_free_sized(void *p, size_t size)
{
	(void)size;
	api_free_entry(p);
}

EBB_API void ebb_free_aligned_sized(void *p, size_t align, size_t size)
{
	(void)align;
	(void)size;
	api_free_entry(p);
}
#endif

EBB_API int ebb_trim(void)
{
	if (!init_ensure())
		return 0;
	uint64_t purged_before;
	struct ebb_stats st;
	stats_tcache_t none = {0, 0, 0, 0};
	stats_collect(&st, &none);
	purged_before = st.bytes_purged + st.superblocks_unmapped;
	tcache_flush_self();
	background_tick(os_now_ns(), true);
	stats_collect(&st, &none);
	return st.bytes_purged + st.superblocks_unmapped != purged_before;
}

EBB_API void ebb_stats_get(struct ebb_stats *out)
{
	stats_tcache_t tc = {0, 0, 0, 0};
	if (!init_ensure()) {
		memset(out, 0, sizeof *out);
		return;
	}
	tcache_stats(&tc.bytes, &tc.threads, &tc.refills, &tc.flushes);
	stats_collect(out, &tc);
}

EBB_API void ebb_mallinfo(struct ebb_mallinfo *out)
{
	stats_tcache_t tc = {0, 0, 0, 0};
	if (!init_ensure()) {
		memset(out, 0, sizeof *out);
		return;
	}
	tcache_stats(&tc.bytes, &tc.threads, &tc.refills, &tc.flushes);
	stats_mallinfo(out, &tc);
}

EBB_API void ebb_stats_print(FILE *f)
{
	struct ebb_stats s;
	ebb_stats_get(&s);
	stats_print(f, &s);
}

EBB_API int ebb_option_set(const char *name, const char *value)
{
	init_ensure();
	if (name == NULL || value == NULL ||
	    !options_set(name, strlen(name), value, strlen(value), false)) {
		errno = EINVAL;
		return -1;
	}
	enum option_id id;
	if (options_lookup(name, &id))
		init_option_changed(id);
	return 0;
}

EBB_API int ebb_prof_dump(const char *path)
{
	return prof_dump(path);
}

EBB_API int ebb_option_get(const char *name, long long *value)
{
	enum option_id id;
	init_ensure();
	if (name == NULL || !options_lookup(name, &id)) {
		errno = EINVAL;
		return -1;
	}
	*value = options_get(id);
	return 0;
}

/* Not needed for initialization (any first call does that); it registers
 * the fork handlers (core/api/fork.c) from a context that holds no libc lock.
 * Registering them from inside the first malloc could deadlock: that malloc
 * may come from pthread_atfork itself, which holds the lock it would need.
 * Here rather than in fork.c so that a static link, which takes fork.o only
 * if something refers to it, always gets the handlers. */
/* What a plain free of an arena block or a pool object reports. */
static const char *api_ext_span_reason(const void *p, const span_t *s)
{
	return s->state == SPAN_POOL ? pool_span_reason(p, s) : arena_span_reason(p, s);
}

#if EBB_OVERRIDE && !EBB_VALGRIND
/* Every prof_tick_patched of the variants (core/process/prof.h), listed by
 * the section their asm writes; the linker defines the bounds. */
extern void *const __start_ebb_prof_ticks[] __attribute__((weak, visibility("hidden")));
extern void *const __stop_ebb_prof_ticks[] __attribute__((weak, visibility("hidden")));

/* And every prof_tcache_patched's load. */
extern void *const __start_ebb_prof_tcache[] __attribute__((weak, visibility("hidden")));
extern void *const __stop_ebb_prof_tcache[] __attribute__((weak, visibility("hidden")));

/* Writes prof_left's TLS offset into each tick and tcache_tls's into each
 * load: before the redirect, so none runs unpatched. */
static bool api_prof_patch(void)
{
	for (void *const *at = __start_ebb_prof_ticks; at < __stop_ebb_prof_ticks; at++)
		if (!os_tls_patch(*at, PROF_TICK_DISP, &prof_left))
			return false;
	for (void *const *at = __start_ebb_prof_tcache; at < __stop_ebb_prof_tcache; at++)
		if (!os_tls_patch(*at, PROF_TCACHE_DISP, &tcache_tls))
			return false;
	return true;
}
#endif

/* With prof on, the standard names jump to their prof variants from now on
 * (os_code_redirect). Not when other threads run already (libebbmalloc.so
 * dlopen'ed by a threaded program: one may be inside malloc): then only the
 * prefixed API samples. Before this point nothing is sampled through them.
 * Out of line: inlined, it made api_constructor, which every process runs
 * from the first 64 KiB of text (core/api/layout.ld), 150 bytes longer. */
static EBB_NOINLINE EBB_COLD void api_prof_redirect(void)
{
#if EBB_OVERRIDE && !EBB_VALGRIND
	/* A process that never had a second thread (glibc's flag, a load) is
	 * not asked /proc: at start-up, the case of every preloaded or linked
	 * library, reading /proc/self/stat was about 0.1 ms of a prof=1
	 * process's 0.2-0.3 ms more than prof=0 (bench /bin/true, 1 000 wait4
	 * pairs; procfs instantiates the process's entries at the first look).
	 * A flag that says threaded (one was made, maybe gone since) is asked
	 * the count as before. */
	if (!os_single_threaded() && os_thread_count() > 1) {
		report_warn("prof: threads already run; malloc/free are not sampled (ebb_* are)");
		return;
	}
	/* The frees first: a sample is inner only once every free asks the
	 * profiler (prof_set_inner). */
	/* One writable window for all these writes (os_code_write_begin). A
	 * failed one leaves the writes before it: as without the window. */
	os_code_write_begin();
	bool ok = api_prof_patch() && os_code_redirect((void *)free_plain, (void *)api_prof_free) &&
		  api_cxx_prof_redirect() && os_code_redirect((void *)malloc_plain, (void *)prof_malloc) &&
		  os_code_redirect((void *)calloc_plain, (void *)prof_calloc) &&
		  os_code_redirect((void *)realloc_slow, (void *)realloc_slow_prof);
	os_code_write_end();
	if (!ok)
		report_warn("prof: cannot redirect malloc/free to their sampling variants; only ebb_* sample");
	else {
		/* Inner samples need every fast path's block test: a build
		 * without it (EBB_CHECKS=0) would take one for a block. */
		prof_set_inner(EBB_CHECKS);
		/* The programs' PLT calls then skip the jump (os_plt_redirect). */
		const struct os_plt_target plt[] = {
			{"malloc", (void *)malloc_plain, (void *)prof_malloc},
			{"calloc", (void *)calloc_plain, (void *)prof_calloc},
			{"free", (void *)free_plain, (void *)api_prof_free},
			{"realloc", (void *)realloc_plain, (void *)realloc_std_prof},
		};
		os_plt_redirect(plt, 4);
	}
#endif
}

/* The profiler's shadow blocks (prof_set_small): plain tcache calls, never
 * sampled. */
static void *api_small_alloc(size_t size)
{
	return tcache_alloc(size);
}

static bool api_small_free(void *p)
{
	tcache_free(p);
	return true;
}

__attribute__((constructor)) static void api_constructor(void)
{
	large_set_ext_reason(api_ext_span_reason);
	/* For core/ readers of the stats (the timeline), which cannot call up
	 * into tcache/. */
	stats_set_tcache_source(tcache_stats);
	prof_set_small(api_small_alloc, api_small_free);
	if (init_ensure()) {
		fork_register(tcache_prefork, tcache_postfork_parent, tcache_postfork_child);
		/* After fork_register: the profiler's fork handler runs first. */
		if (prof_start())
			api_prof_redirect();
#if !EBB_OVERRIDE && !EBB_VALGRIND
		/* Without the standard names every free is ebb_free's, which
		 * asks the profiler (api_free_entry). */
		prof_set_inner(EBB_CHECKS);
#endif
	}
}

__attribute__((destructor)) static void api_destructor(void)
{
	if (atomic_load_u32_acquire(&init_state) == INIT_DONE && options_get(OPT_STATS_ON_EXIT))
		ebb_stats_print(stderr);
	if (atomic_load_u32_acquire(&init_state) == INIT_DONE)
		prof_at_exit();
}

/* ---------------------------------------------------------------------------
 * The standard names
 * ------------------------------------------------------------------------- */
#if EBB_OVERRIDE
#include <malloc.h>
#include <stdlib.h>

#define EBB_ALIAS(name) __attribute__((alias(#name), copy(name), used))

/* malloc, free, calloc and realloc (and their glibc and cfree names) are
 * these functions; with prof on, api_prof_redirect makes malloc, calloc and
 * realloc jump to their prof variants. (Not GNU ifuncs: a resolver runs while the loader relocates
 * libc, before this library, and glibc then prints "Relink ... for IFUNC
 * symbol" on stderr in every process.) */
EBB_API void *malloc(size_t size) EBB_ALIAS(malloc_plain);
EBB_API void free(void *p) EBB_ALIAS(free_plain);
EBB_API void *calloc(size_t count, size_t size) EBB_ALIAS(calloc_plain);
EBB_API void *realloc(void *p, size_t size) EBB_ALIAS(realloc_plain);
EBB_API void *reallocarray(void *p, size_t count, size_t size) EBB_ALIAS(ebb_reallocarray);
EBB_API int posix_memalign(void **out, size_t align, size_t size) EBB_ALIAS(ebb_posix_memalign);
EBB_API void *aligned_alloc(size_t align, size_t size) EBB_ALIAS(ebb_aligned_alloc);
EBB_API void *memalign(size_t align, size_t size) EBB_ALIAS(ebb_memalign);
EBB_API void *valloc(size_t size) EBB_ALIAS(ebb_valloc);
EBB_API void *pvalloc(size_t size) EBB_ALIAS(ebb_pvalloc);
EBB_API size_t malloc_usable_size(void *p) EBB_ALIAS(ebb_malloc_usable_size);
EBB_API void free_sized(void *p, size_t size) EBB_ALIAS(ebb_free_sized);
EBB_API void free_aligned_sized(void *p, size_t align, size_t size) EBB_ALIAS(ebb_free_aligned_sized);
EBB_API void cfree(void *p) EBB_ALIAS(free_plain);

/* glibc's internal names, used by some programs and by glibc's own code. */
EBB_API void *__libc_malloc(size_t size) EBB_ALIAS(malloc_plain);
EBB_API void __libc_free(void *p) EBB_ALIAS(free_plain);
EBB_API void *__libc_calloc(size_t count, size_t size) EBB_ALIAS(calloc_plain);
EBB_API void *__libc_realloc(void *p, size_t size) EBB_ALIAS(realloc_plain);
EBB_API void *__libc_memalign(size_t align, size_t size) EBB_ALIAS(ebb_memalign);
EBB_API void *__libc_valloc(size_t size) EBB_ALIAS(ebb_valloc);
EBB_API void *__libc_pvalloc(size_t size) EBB_ALIAS(ebb_pvalloc);

/* malloc_trim, mallinfo2 and the rest of <malloc.h>: glibc_ext.c. */
#endif /* EBB_OVERRIDE */
