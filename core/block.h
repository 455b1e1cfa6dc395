/* block.h: the one answer to "does p start a small block this allocator
 * handed out?", for every caller: the free fast path (tcache.h), its slow
 * path (tcache.c), realloc and malloc_usable_size (block_info in api.c), the
 * central lists (central.c) and the reports. It owns the test; nobody else
 * repeats it.
 *
 * p starts a small block if and only if
 *   1. p < 2^47 and its registry slot holds a superblock header (an address
 *      above the user address space, e.g. a tagged pointer, is not ours);
 *   2. the page of p has a class c != 0 (only pages of CENTRAL spans do);
 *   3. off = p - (first page of its span, from the pagemap) is a multiple of
 *      the block size: one multiply by ceil(2^64 / size), whose low 64 bits
 *      are below the multiplier iff the size divides off (off < 2^32);
 *   4. off < the span's `carved` bytes: the block was handed out at least
 *      once since the span was carved. This excludes the unused tail of a
 *      span (carved <= blocks * size) and the part of a recycled span not yet
 *      carved again (a stale pointer from its previous life).
 * A pointer the program legitimately holds passes all four: its span was
 * carved and the block handed out before the program got it, and the span
 * cannot leave CENTRAL while the block is out. `carved` only grows during a
 * span's CENTRAL life; it is written under the home's lock and read here
 * with a relaxed atomic load (a plain mov on x86-64; the builtin rather than
 * atomic.h's ck_pr_load_32, whose asm the compiler cannot fold into the
 * compare: one instruction on the free fast path).
 *
 * Any thread, no lock. A pointer that is neither a small block nor in a
 * small-block page (block_lookup returns 0 with *why == NULL) may be a large
 * block: large.c says (large_why_bad). */
#ifndef EBB_CORE_BLOCK_H
#define EBB_CORE_BLOCK_H

#include "core/atomic.h"
#include "core/config.h"
#include "core/size_class.h"
#include "core/superblock.h"
#include "core/util.h"

EBB_BEGIN_DECLS

/* Where p falls in its span (p on page `page` of sb, a page of a CENTRAL
 * span): its offset from the span's start, and the span. */
typedef struct block_pos {
	uint64_t off;
	span_t *span;
} block_pos_t;

EBB_INLINE block_pos_t block_pos(superblock_t *sb, unsigned page, const void *p)
{
	size_t first = sb->pagemap[page];
	block_pos_t b = {((uintptr_t)p & (EBB_SB_SIZE - 1)) - (first << EBB_PAGE_SHIFT),
			 superblock_span_at(sb, first)};
	return b;
}

/* Rule 3: the size whose ceil(2^64 / size) is magic divides off (off * magic
 * mod 2^64 < magic iff size | off, for off < 2^32). */
EBB_INLINE bool block_pos_start(block_pos_t b, uint64_t magic)
{
	return b.off * magic < magic;
}

/* Rule 4: the block at off was carved. */
EBB_INLINE bool block_pos_carved(block_pos_t b)
{
	return (uint32_t)b.off < __atomic_load_n(&b.span->carved, __ATOMIC_RELAXED);
}

/* The whole test with its reason: p's class if p starts a carved small
 * block (*span_out its span), else 0 with *why saying why p is bad, or
 * *why == NULL if p is not in a small-block page at all (ask large.c). */
EBB_INLINE unsigned block_lookup(const void *p, span_t **span_out, const char **why)
{
	*why = NULL;
	if ((uintptr_t)p >> EBB_ADDR_BITS) {
		*why = "not a block of this allocator (outside the user address space: a tagged "
		       "or corrupted pointer)";
		return 0;
	}
	if (registry_get(p) != REG_HEADER)
		return 0;
	superblock_t *sb = superblock_of(p);
	unsigned page = superblock_page_index(p);
	unsigned cls = sb->page_class[page];
	if (cls == 0)
		return 0;
	const size_class_t *k = &size_classes[cls];
	block_pos_t b = block_pos(sb, page, p);
	if (!block_pos_start(b, k->div_magic))
		*why = "not the start of a block";
	else if (b.off >= (uint64_t)k->blocks * k->size)
		*why = "not a block (the unused tail of a span)";
	else if (!block_pos_carved(b))
		*why = "not a block handed out by this allocator (past its span's carved blocks)";
	if (*why)
		return 0;
	*span_out = b.span;
	return cls;
}

EBB_END_DECLS

#endif /* EBB_CORE_BLOCK_H */
