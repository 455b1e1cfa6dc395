/* huge.c: huge blocks, those of more pages than a superblock has. Each is a
 * mapping of its own (a huge superblock, superblock.c) with one span; a freed
 * one stays mapped in its heap's huge cache, as a dirty run that decay purges
 * and release unmaps like any other (page_heap_purge.c), and the next huge
 * request of a size near it takes it back, resized by the kernel if need be.
 *
 * Locking: h->lock of the block's heap guards the cache list and the page
 * counts; it is dropped around huge_create and huge_resize (mmap, mremap),
 * the block being marked LARGE and out of every list meanwhile. The rules of
 * the page heap as a whole are in page_heap.h. */
#include "core/pages/page_heap.h"
#include "core/pages/span_check.h"

#include "os/os.h"


/* A huge block serves a request (a cached one reused, a live one shrunk by
 * realloc) as it is while it is at most twice as large as asked plus 1 MiB:
 * its resident pages are worth more than the few the program does not use,
 * which would have to be faulted in again when it grows back. */
#define HUGE_SLACK(pages) ((pages) + 256)

/* Marks cached huge block s (unlisted) as handed out for `asked` pages.
 * Caller holds the lock. */
static void huge_take(page_heap_t *h, span_t *s, size_t asked)
{
	SPAN_SET_STATE(s, SPAN_LARGE, &h->lock);
	s->used = (uint32_t)asked;
	span_superblock(s)->empty_since_ns = 0;
	h->huge_pages += s->npages;
	h->huge_slack_pages += s->npages - asked;
	h->huge_live++;
	h->large_allocs++;
	page_heap_inuse_add(s->npages);
}

/* A request for a huge block reuses the cached one that fits best: one that
 * is a little larger as it is; one much larger, shrunk in place; else the
 * largest smaller one, grown (mremap moves its page tables if it cannot grow
 * in place). Either way its resident pages serve the new block instead of
 * fresh ones that must be faulted in: a program whose big buffers change
 * size from one use to the next pays for the difference only. */
span_t *page_heap_huge_alloc(page_heap_t *h, size_t npages, size_t align, size_t asked_pages)
{
	span_t *fit = NULL, *below = NULL;
	lock_acquire(&h->lock);
	for (superblock_t *sb = h->huge_cache; sb; sb = sb->next) {
		page_heap_check_listed(h, sb, true);
		span_t *c = &sb->spans[0];
		if ((((uintptr_t)sb + EBB_SB_SIZE) & (align - 1)) != 0)
			continue;
		if (c->npages >= npages) {
			if (fit == NULL || c->npages < fit->npages)
				fit = c;
		} else if ((below == NULL || c->npages > below->npages) && align <= EBB_SB_SIZE) {
			below = c; /* growing may move it, keeping only 4 MiB alignment */
		}
	}
	span_t *s = fit ? fit : below;
	if (s != NULL) {
		bool was_dirty = s->state == SPAN_FREE_DIRTY;
		page_heap_run_unlist(h, s);
		if (was_dirty)
			decay_note_removed(&h->decay, s->npages);
		s->zeroed = was_dirty ? 0 : s->zeroed;
		bool resize = s->npages < npages || s->npages - npages > HUGE_SLACK(npages);
		SPAN_SET_STATE(s, SPAN_LARGE, &h->lock); /* ours alone now: out of every list */
		if (!resize) {
			huge_take(h, s, asked_pages);
			lock_release(&h->lock);
			return s;
		}
		/* Counted as cached-and-in-use while the lock is dropped; the
		 * resize updates the mapping totals itself. */
		lock_release(&h->lock);
		superblock_t *nsb = huge_resize(span_superblock(s), npages);
		lock_acquire(&h->lock);
		if (nsb != NULL) {
			s = &nsb->spans[0];
			huge_take(h, s, asked_pages);
			lock_release(&h->lock);
			return s;
		}
		if (s->npages >= npages) { /* could not shrink: use it as it is */
			huge_take(h, s, asked_pages);
			lock_release(&h->lock);
			return s;
		}
		/* Could not grow: back into the cache, and map a new one. */
		SPAN_SET_STATE(s, was_dirty ? SPAN_FREE_DIRTY : SPAN_FREE_PURGED, &h->lock);
		s->u.free.freed_ns = os_now_ns();
		span_superblock(s)->empty_since_ns = s->u.free.freed_ns;
		page_heap_run_list(h, s, NULL);
	}
	lock_release(&h->lock);

	superblock_t *sb = huge_create(h, npages, align);
	if (sb == NULL)
		return NULL;
	s = &sb->spans[0];
	lock_acquire(&h->lock);
	h->huge_count++;
	h->meta_pages += 1;
	huge_take(h, s, asked_pages);
	lock_release(&h->lock);
	return s;
}

void page_heap_huge_free(span_t *s)
{
	superblock_t *sb = span_superblock(s);
	page_heap_t *h = page_heap_owner(sb, true);
	uint64_t now = os_now_ns();
	lock_acquire(&h->lock);
	h->huge_pages -= s->npages;
	h->huge_slack_pages -= s->npages - s->used;
	h->huge_live--;
	page_heap_inuse_sub(s->npages);
	SPAN_SET_STATE(s, SPAN_FREE_DIRTY, &h->lock);
	s->zeroed = 0;
	s->u.free.freed_ns = now;
	sb->empty_since_ns = now;
	page_heap_run_list(h, s, NULL);
	lock_release(&h->lock);
	page_heap_maybe_decay(h, now);
}

span_t *page_heap_huge_resize(span_t *s, size_t npages)
{
	superblock_t *sb = span_superblock(s);
	page_heap_t *h = page_heap_owner(sb, true);
	size_t old = s->npages, old_asked = s->used;
	if (npages < old && old - npages <= HUGE_SLACK(npages)) {
		/* Shrunk in place: the tail stays mapped, as slack. */
		lock_acquire(&h->lock);
		s->used = (uint32_t)npages;
		h->huge_slack_pages += old_asked - npages;
		lock_release(&h->lock);
		return s;
	}
	superblock_t *nsb = huge_resize(sb, npages);
	if (nsb == NULL)
		return NULL;
	span_t *ns = &nsb->spans[0];
	ns->used = (uint32_t)npages;
	lock_acquire(&h->lock);
	h->huge_pages += npages;
	h->huge_pages -= old;
	h->huge_slack_pages -= old - old_asked;
	if (npages > old)
		page_heap_inuse_add(npages - old);
	else
		page_heap_inuse_sub(old - npages);
	lock_release(&h->lock);
	return ns;
}
