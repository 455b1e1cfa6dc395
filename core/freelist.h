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
 * Building with EBB_SAFE_LINKING=0 stores plain links (to measure the cost). */
#ifndef EBB_CORE_FREELIST_H
#define EBB_CORE_FREELIST_H

#include "core/config.h"
#include "core/span.h"
#include "core/util.h"

#ifndef EBB_SAFE_LINKING
#define EBB_SAFE_LINKING 1
#endif

EBB_BEGIN_DECLS

/* Per-process secret; set once by init before any list exists. */
extern uint64_t freelist_secret;

EBB_INLINE void *freelist_decode(const void *block, uint64_t secret)
{
	uintptr_t raw = *(const uintptr_t *)block;
	return (void *)(EBB_SAFE_LINKING ? raw ^ (uintptr_t)secret : raw);
}

EBB_INLINE void freelist_set_next(void *block, void *next, uint64_t secret)
{
	uintptr_t v = (uintptr_t)next;
	*(uintptr_t *)block = EBB_SAFE_LINKING ? v ^ (uintptr_t)secret : v;
}

/* A decoded link is plausible if it is 16-byte aligned or the list end. */
EBB_INLINE bool freelist_link_ok(const void *next)
{
	return ((uintptr_t)next & (EBB_MIN_ALIGN - 1)) == 0 || next == EBB_LIST_END;
}

/* Reports a corrupted link found in `block` (a use-after-free write or a
 * wild write into a free block) and aborts, or returns under on_error=warn. */
void freelist_corrupt(const char *func, const void *block);

EBB_END_DECLS

#endif /* EBB_CORE_FREELIST_H */
