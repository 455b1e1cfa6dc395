/* freelist.h: what a free small block holds.
 *
 * Free blocks are listed out of band where it matters for speed and safety:
 * a thread cache bin (tcache.h) and a central transfer batch (central.h) are
 * arrays of block addresses in the allocator's own memory, so no address the
 * allocator pops was ever stored where the program can write. Every address
 * that enters such an array was checked first: by free (core/blocks/block.h: one of
 * our superblocks, a page of a span of the right class, a block start below
 * the span's carved limit), or by the span it came from (central.c). A pop
 * therefore needs only the mark test below.
 *
 * The double-free mark: word 1 of a free block holds a key xor the block's
 * address. free() writes it without reading the block; every hand-out (the
 * malloc fast path, a refill, a carve) checks it and clears it, so a block
 * the program gets holds nothing derived from the key, and a block found
 * without its mark is reported (it was freed twice and one copy is already
 * out, or the program wrote into it after freeing it) instead of being
 * handed out a second time. Keyed by address, a mark copied elsewhere (a
 * realloc, a struct copy) is not a mark at its new place; keyed by a
 * per-process random key, a program cannot forge one by accident or design.
 *
 * Two forms of the mark, so that a block listed twice is caught when the
 * second copy moves: the bin mark (in a bin or a transfer batch) and the span
 * mark (on its span's free list, the only list still linked through blocks:
 * word 0 holds a plain link, and central.c checks every link before it
 * follows it).
 *
 * Building with EBB_CHECKS=0 writes and tests no mark, to measure what the
 * checks cost (docs/reliability.md). */
#ifndef EBB_CORE_FREELIST_H
#define EBB_CORE_FREELIST_H

#include "core/base/config.h"
#include "core/pages/span.h"
#include "core/base/util.h"

#ifndef EBB_CHECKS
#define EBB_CHECKS 1
#endif

EBB_BEGIN_DECLS

/* Per-process keys, set once by init before any block is free:
 * freelist_mark keys the marks; freelist_secret encodes the links of pool
 * free lists (pool.c). */
extern uint64_t freelist_secret;
extern uint64_t freelist_mark;

/* The bin mark `block` carries while it sits in a bin or a transfer batch:
 * computed once, then tested and stored. */
EBB_INLINE uint64_t freelist_mark_of(const void *block, uint64_t key)
{
	return key ^ (uintptr_t)block;
}

/* The span mark (on its span's free list): differs from the bin mark in bit
 * 0, which no block address has. */
EBB_INLINE uint64_t freelist_span_mark_of(const void *block, uint64_t key)
{
	return key ^ (uintptr_t)block ^ 1u;
}

EBB_INLINE void freelist_put_mark(void *block, uint64_t mark)
{
	if (EBB_CHECKS)
		((uint64_t *)block)[1] = mark;
}

/* Turns the span mark `block` carries into its bin mark or back (they
 * differ in bit 0 only): one instruction on memory where the caller has
 * just tested the mark, instead of forming the other and storing it. */
EBB_INLINE void freelist_flip_mark(void *block)
{
	if (!EBB_CHECKS)
		return;
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
	/* gcc would store the other mark from a register (it knows the
	 * value): a copy and an xor more. The C form under TSan, which sees
	 * no write inside asm. */
	__asm__("xorq $1, %0" : "+m"(((uint64_t *)block)[1]));
#else
	((uint64_t *)block)[1] ^= 1u;
#endif
}

EBB_INLINE void freelist_set_mark(void *block, uint64_t key)
{
	freelist_put_mark(block, freelist_mark_of(block, key));
}

/* Whether `block` still carries `mark` (true without checks). */
EBB_INLINE bool freelist_mark_kept(const void *block, uint64_t mark)
{
	return !EBB_CHECKS || ((const uint64_t *)block)[1] == mark;
}

/* The word that holds `block`'s mark while it is free. */
EBB_INLINE const uint64_t *freelist_mark_word(const void *block)
{
	return (const uint64_t *)block + 1;
}

/* Whether w, the word read at `block`'s mark, is either of its marks: they
 * differ in bit 0 alone, so w xor the bin mark is 0 or 1 exactly then (one
 * compare instead of two, realloc's fast path); always false without
 * checks. */
EBB_INLINE bool freelist_is_mark(uint64_t w, const void *block, uint64_t key)
{
	return EBB_CHECKS && (w ^ freelist_mark_of(block, key)) <= 1;
}

/* Whether `block` is free already, in a bin, a batch or its span (double
 * free, realloc of a freed block); always false without checks. */
EBB_INLINE bool freelist_marked(const void *block, uint64_t key)
{
	uint64_t w = *freelist_mark_word(block);
	return EBB_CHECKS && (w == freelist_mark_of(block, key) || w == freelist_span_mark_of(block, key));
}

/* A block being handed out: its mark goes, so the program sees no word
 * derived from the key. */
EBB_INLINE void freelist_clear_mark(void *block)
{
	if (EBB_CHECKS)
		((uint64_t *)block)[1] = 0;
}

/* The test and the clear of a pop in one instruction where it can be:
 * xors `mark` into `block`'s mark word, which leaves it zero (cleared, true)
 * exactly when it held the mark. When false the word holds its old value
 * xor mark until freelist_untake_mark(block, mark) puts it back, which the
 * caller does before anything else reads the block. x86-64 without TSan
 * (which sees no write inside asm); elsewhere the test and the clear. */
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__) && EBB_CHECKS
#define FREELIST_TAKE_XOR 1
#else
#define FREELIST_TAKE_XOR 0
#endif
EBB_INLINE bool freelist_take_mark(void *block, uint64_t mark)
{
#if FREELIST_TAKE_XOR
	bool zero;
	__asm__("xorq %2, %1" : "=@ccz"(zero), "+m"(((uint64_t *)block)[1]) : "r"(mark));
	return zero;
#else
	if (!freelist_mark_kept(block, mark))
		return false;
	freelist_clear_mark(block);
	return true;
#endif
}

EBB_INLINE void freelist_untake_mark(void *block, uint64_t mark)
{
#if FREELIST_TAKE_XOR
	__asm__("xorq %1, %0" : "+m"(((uint64_t *)block)[1]) : "r"(mark));
#else
	(void)block;
	(void)mark;
#endif
}

/* Span free lists: word 0 of a block on one holds the next block (plain,
 * EBB_LIST_END at the end); central.c checks it before following it. */
EBB_INLINE void *freelist_span_next(const void *block)
{
	return *(void *const *)block;
}

EBB_INLINE void freelist_span_link(void *block, void *next, uint64_t key)
{
	*(void **)block = next;
	((uint64_t *)block)[1] = freelist_span_mark_of(block, key);
}

/* Reports a corrupted link found in `block` (a use-after-free write or a
 * wild write into a free block) and aborts, or returns under on_error=warn. */
void freelist_corrupt(const char *func, const void *block);
/* Reports a block found listed free without its free mark: it was freed
 * twice and one copy has been handed out (which cleared the mark), or the
 * program wrote into it after freeing it. Aborts, or returns under
 * on_error=warn (the caller then drops the block). */
void freelist_lost_mark(const char *func, const void *block);

EBB_END_DECLS

#endif /* EBB_CORE_FREELIST_H */
