/* size_class.h: the small size classes, generated in one place
 * (size_class_init), and the per-class parameters of the layers above.
 *
 * Classes 1..16 are 16..256 bytes in 16-byte steps; above 256 each doubling is
 * cut into 8 steps (288, 320, ..., 512, 576, ..., 32768). From 1 KiB up, one
 * more class sits just above each power of two b, at about b + b/16 (1088,
 * 2192, 4432, 8704, 17408): sizes of a power of two plus a header are common
 * (a 4 KiB page and SQLite's header, a buffer and its length), and the first
 * step of 8, b + b/8, rounds them up the most. That class is fitted to its
 * span (size_class.c, fit_class_for). 77 classes; waste bound, checked for
 * every size by tests/test_size_class.cpp: a request of n bytes gets a block
 * of at most n + 15 bytes below 128 bytes, and at most n + n/8 (12.5%) from
 * 128 bytes up. On a log-uniform mix of sizes the rounding is 4.1% of the
 * bytes asked for (16 B - 16 KiB; 4.5% without the fitted classes), checked
 * through the stats by tests/api/test_waste.cpp.
 *
 * Pure policy: no locks, no system calls, no state but the tables, which are
 * written once at start-up before any thread cache exists. Until then the
 * lookup table is all zeros, so every size maps to class 0, which has no
 * cached blocks: the malloc fast path falls to the slow path and initializes. */
#ifndef EBB_CORE_SIZE_CLASS_H
#define EBB_CORE_SIZE_CLASS_H

#include "core/base/config.h"
#include "core/base/util.h"

EBB_BEGIN_DECLS

typedef struct size_class {
	uint32_t size;         /* block size in bytes (a multiple of 16) */
	uint16_t pages;        /* pages per span */
	uint16_t blocks;       /* blocks per span */
	uint16_t batch;        /* blocks moved between a thread cache and a central list at once */
	uint16_t bin_cap;      /* most blocks a thread cache bin may hold */
	uint16_t transfer_cap; /* most batches a central list keeps ready */
	uint16_t pad_;
	uint64_t div_magic;    /* ceil(2^64 / size): offset / size as one multiply */
	uint64_t block_mul;    /* div_magic + 1 and ... */
	uint64_t block_limit;  /* ... blocks * (size * block_mul mod 2^64): for an
				* offset off < 2^22 into a span, off * block_mul mod 2^64
				* < block_limit iff off is a block start below
				* blocks * size (core/blocks/block.h) */
} size_class_t;

extern size_class_t size_classes[EBB_NUM_CLASSES];
/* (size + 15) >> 4 -> class, for size <= EBB_SMALL_MAX. Entry 0 (size 0) is
 * class 1: malloc(0) costs no extra branch. */
extern const uint8_t size_class_table[(EBB_SMALL_MAX >> 4) + 1];

/* Builds size_classes (size_class_table is a constant); idempotent. */
void size_class_init(void);

/* Class of a small size; size <= EBB_SMALL_MAX. */
EBB_INLINE unsigned size_class_of(size_t size)
{
	return size_class_table[(size + 15) >> 4];
}

/* offset / size of class c, exact for offsets below 2^32. */
EBB_INLINE uint32_t size_class_div(unsigned c, size_t offset)
{
	return (uint32_t)(((unsigned __int128)offset * size_classes[c].div_magic) >> 64);
}

/* Smallest class whose blocks hold `size` bytes aligned to `align` (a power of
 * two <= 4096): block size a multiple of align, since spans start on a page.
 * 0 if no small class fits. */
unsigned size_class_aligned(size_t size, size_t align);

EBB_END_DECLS

#endif /* EBB_CORE_SIZE_CLASS_H */
