/* freelist.h: the format of every list of free blocks (thread cache bins,
 * central transfer batches, span free lists).
 *
 * A free block's first word holds the link to the next block, encoded as
 * next ^ secret (safe linking): a use-after-free write of a plain pointer into
 * a free block decodes to an address the attacker cannot choose without
 * knowing the per-process secret, and in 15 of 16 cases to a misaligned one,
 * which the malloc fast path's `head & 15` test sends to the slow path, where
 * freelist_corrupt() reports it instead of following it. Lists end with
 * EBB_LIST_END (span.h), never NULL.
 *
 * The secret is chosen at start-up (os_random) and never changes, so a block
 * list can move between threads and central lists without re-encoding.
 *
 * Double-free mark: the second word of a free block holds freelist_mark
 * xor the block's address (a block of 16 bytes has room for both words).
 * free() checks it before pushing: a block that carries its mark is already
 * free somewhere, and the slow path looks for it and reports it. malloc clears
 * the word when it hands a block out. Keyed by address, a mark copied
 * elsewhere (realloc or a struct copy of never-written bytes that once held a
 * free block's mark) is not a mark at its new place, so a live block only
 * looks freed if the program stored exactly secret ^ address there. The two
 * keys are independent, so a mark read out of a freed block tells nothing
 * about the link encoding.
 *
 * Building with EBB_CHECKS=0 stores plain links and no mark, to measure what
 * the checks cost (docs/reliability.md). */
#ifndef EBB_CORE_FREELIST_H
#define EBB_CORE_FREELIST_H

#include "core/config.h"
#include "core/span.h"
#include "core/util.h"

#ifndef EBB_CHECKS
#define EBB_CHECKS 1
#endif

EBB_BEGIN_DECLS

/* Per-process keys; set once by init before any list exists. */
extern uint64_t freelist_secret;
extern uint64_t freelist_mark;

EBB_INLINE void *freelist_decode(const void *block, uint64_t secret)
{
	uintptr_t raw = *(const uintptr_t *)block;
	return (void *)(EBB_CHECKS ? raw ^ (uintptr_t)secret : raw);
}

EBB_INLINE void freelist_set_next(void *block, void *next, uint64_t secret)
{
	uintptr_t v = (uintptr_t)next;
	*(uintptr_t *)block = EBB_CHECKS ? v ^ (uintptr_t)secret : v;
}

/* The double-free mark that `block` carries while it is free (second word):
 * computed once, then tested and stored. */
EBB_INLINE uint64_t freelist_mark_of(const void *block, uint64_t key)
{
	return key ^ (uintptr_t)block;
}

EBB_INLINE bool freelist_has_mark(const void *block, uint64_t mark)
{
	return EBB_CHECKS && ((const uint64_t *)block)[1] == mark;
}

EBB_INLINE void freelist_put_mark(void *block, uint64_t mark)
{
	if (EBB_CHECKS)
		((uint64_t *)block)[1] = mark;
}

/* Whether `block` looks freed already (double free, realloc of a freed
 * block); always false without checks. */
EBB_INLINE bool freelist_marked(const void *block, uint64_t key)
{
	return freelist_has_mark(block, freelist_mark_of(block, key));
}

/* Whether a block found on a free list still carries its mark, as every free
 * block must (see tcache_alloc); always true without checks. */
EBB_INLINE bool freelist_mark_kept(const void *block, uint64_t mark)
{
	return !EBB_CHECKS || ((const uint64_t *)block)[1] == mark;
}

EBB_INLINE void freelist_set_mark(void *block, uint64_t key)
{
	freelist_put_mark(block, freelist_mark_of(block, key));
}

EBB_INLINE void freelist_clear_mark(void *block)
{
	if (EBB_CHECKS)
		((uint64_t *)block)[1] = 0;
}

/* A decoded link is plausible if it is 16-byte aligned or the list end. */
EBB_INLINE bool freelist_link_ok(const void *next)
{
	return ((uintptr_t)next & (EBB_MIN_ALIGN - 1)) == 0 || next == EBB_LIST_END;
}

/* Reports a corrupted link found in `block` (a use-after-free write or a
 * wild write into a free block) and aborts, or returns under on_error=warn. */
void freelist_corrupt(const char *func, const void *block);
/* Reports a block found on a free list without its free mark: it was freed
 * twice and one copy has been handed out (which cleared the mark), or the
 * program wrote into it after freeing it. Aborts, or returns under
 * on_error=warn (the caller then drops the rest of the list). */
void freelist_lost_mark(const char *func, const void *block);

EBB_END_DECLS

#endif /* EBB_CORE_FREELIST_H */
