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
 *   3. off = p - (first page of its span, from the same pmap entry as the
 *      class: one load, superblock.h) is a multiple of
 *      the block size and below blocks x size (not in the span's unused
 *      tail). One multiply and one compare test both: with
 *      M = ceil(2^64 / size) + 1 and e = size * M mod 2^64 (size <= e <
 *      2 size), off * M mod 2^64 is q * e for off = q * size, and at least M
 *      (> 2^49) otherwise, for every off < 2^32 (off = q * size + r:
 *      q * e < 2^33 and r * M <= 2^64 + e - M, whose sum stays below 2^64
 *      as M > 2^33 + e for size <= 2^15); so it is below blocks * e
 *      exactly when off is one of the span's block starts
 *      (size_classes[c].block_mul and block_limit).
 * A block start on a page with a class is a block that exists: span_carve
 * lists every block it carves before the pages get their class, and a lazy
 * carve (a span of several pages that reads as zero, central_purge.c) leaves
 * the pages from its first uncarved block on without class until a refill
 * carves them, each run of them ending at a block start, so no uncarved
 * block starts on a page with a class. So free() rejects a block that was
 * never carved (rule 2), and a stale pointer into a recycled span names a
 * block that is free on its span's list, withheld (given back by the purge
 * pass: its first 16 bytes must read zero when it is relinked) or held by
 * someone; either way it is caught by its mark when it is handed out twice.
 * A pointer the program legitimately holds passes all three, and the span
 * cannot leave CENTRAL while the block is out.
 *
 * Any thread, no lock. A pointer that is neither a small block nor in a
 * small-block page (block_lookup returns 0 with *why == NULL) may be a large
 * block: large.c says (large_why_bad). */
#ifndef EBB_CORE_BLOCK_H
#define EBB_CORE_BLOCK_H

#include "core/base/config.h"
#include "core/blocks/size_class.h"
#include "core/pages/superblock.h"
#include "core/runtime/atomic.h"
#include "core/base/util.h"

EBB_BEGIN_DECLS

/* Offset of p from the first page of its span, given the raw pmap entry e of
 * p's page, whose bits 12-31 are the low 32 bits of the span's first byte
 * (superblock.h): (uint32_t)p - (e without its class), modulo 2^32, formed
 * as (p + class) - e, since e without its class is e - class. After the
 * load and the movzbl the class needs anyway, that is an lea (a copy of p
 * and the add in one) and a sub: no mask to find p's offset in its
 * superblock first, and no copy of p and clear of the class byte apart
 * (one instruction fewer on the free fast path; gcc turns the C form below
 * into a copy of the class, a sub, an add and a zero extension, hence the
 * asm). The offset is below 2^22 for a p inside the span, and below 2^32
 * always (a p below the span's first page, from a stale entry, wraps to
 * 2^32 - x), where rule 3's test is still exact (see above). For an entry
 * without address bits (pmap_entry, pmap_load) and p's offset in its
 * superblock, the same. */
EBB_INLINE uint64_t block_offset_in(uint32_t e, uintptr_t p)
{
	uintptr_t cls = pmap_class(e);
	uint32_t p_cls;
#if defined(__x86_64__)
	__asm__("leal (%1,%2), %0" : "=r"(p_cls) : "r"(p), "r"(cls));
#else
	p_cls = (uint32_t)p + (uint32_t)cls;
#endif
	return (uint32_t)(p_cls - e);
}

/* Rule 3, given the class's block_mul and block_limit. */
EBB_INLINE bool block_offset_ok(uint64_t off, uint64_t mul, uint64_t limit)
{
	return off * mul < limit;
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
	/* Read once: class, offset and span come from one entry. */
	uint32_t e = pmap_peek(sb, page);
	unsigned cls = pmap_class(e);
	if (cls == 0)
		return 0;
	const size_class_t *k = &size_classes[cls];
	unsigned first = pmap_first(e);
	uint64_t off = block_offset_in(e, (uintptr_t)p);
	if (!block_offset_ok(off, k->block_mul, k->block_limit))
		*why = off * k->div_magic >= k->div_magic ? "not the start of a block"
							  : "not a block (the unused tail of a span)";
	if (*why)
		return 0;
	*span_out = superblock_span_at(sb, first);
	return cls;
}

EBB_END_DECLS

#endif /* EBB_CORE_BLOCK_H */
