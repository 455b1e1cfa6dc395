/* size_class.c: generates the size-class table and the per-class parameters. */
#include "core/blocks/size_class.h"

size_class_t size_classes[EBB_NUM_CLASSES];
uint8_t size_class_table[(EBB_SMALL_MAX >> 4) + 1];

/* Span sizing: at least 8 blocks per span and at most 1/16 of the span lost
 * to the tail that cannot hold a block. Small classes get one-page spans, so
 * a span empties (and goes back to the page heap) as soon as possible. */
#define SPAN_MIN_BLOCKS 8
/* Classes above 8 KiB (from SPAN_FEW_FROM bytes) get spans of at least
 * SPAN_FEW_BLOCKS blocks, not 8 (the classes just above a power of two keep
 * fit_class_for's spans of 8 or more). A program uses many of these classes
 * a few blocks at a time (initdb's memory contexts: classes of 8.5 to 32 KiB
 * with one to three blocks each at its peak, most of them in the thread
 * cache), and one block kept a span of 8 from emptying: up to 256 KiB of
 * pages, resident wherever earlier blocks had been, that the page heap could
 * not give to the next class. Measured (max RSS, interleaved pairs,
 * medians): initdb's largest process 55 528 -> 54 812 KiB (11 pairs; glibc
 * 52 400), py_alloc.py --threads=1 --rounds=4 34 740 -> 34 540 (5 pairs);
 * callgrind, bench_churn 16 B-32 KiB 300K ops ws=1000 -0.5%, ws=100 000 -2.0%
 * instructions, larson t=2 unchanged. The 8 KiB class keeps 8 (tests use its
 * geometry; with it at 4 too initdb looked about 0.2 MiB lower still, within
 * its noise, and churn ws=1000 took 0.9% more instructions). */
#define SPAN_FEW_FROM 8193u
#define SPAN_FEW_BLOCKS 4
/* Batches: enough blocks to amortize a central-list lock, at most 64 KiB,
 * and at most 12 KiB for classes up to 1 KiB (12 blocks of 1 KiB, 24 of
 * 512 B; 32 up to 384 B as before). A thread cache keeps about one to two
 * batches of each class it uses, and a program that churns blocks at random
 * keeps every span part-used, so those blocks' pages stay resident per
 * thread: the classes from 512 B to 1 KiB held 16-32 KiB a class a thread.
 * Measured against 64 KiB (bench/runner.py's rows, 18 interleaved runs,
 * medians of peak RSS): churn 16 B-1 KiB ws=20K/t t=8 12 498 -> 12 112 KiB,
 * t=32 18 832 -> 18 340, ws=10K t=1..32 -0.8 to -2.1%, ws=100 -4.7% (within
 * its spread), 16 B-32 KiB ws=1K -2.5%, ws=1M and 16 B-32 KiB ws=100K
 * unchanged; xmalloc t=2 -7%, t=8 -10%; larson and cache-scratch t=2 within
 * noise; CPU per operation within noise on every row. Callgrind: churn and
 * larson within 0.05% of the instructions, but xmalloc t=2, where every
 * block crosses the central lists, +2.5-4% (257-261 M -> 264-269 M,
 * --fair-sched, 5 runs). 8 KiB: another 1-2% off the ws=20K/t peaks,
 * xmalloc t=2 +3-4.5%, ws=100 bimodal; 16 KiB (only the classes above 512 B
 * move): xmalloc within 1%, but ws=20K/t t=32 +1% and the other rows -0.4
 * to -1.8%. */
#define BATCH_BYTES 65536u
#define BATCH_SMALL_BYTES 12288u
#define BATCH_SMALL_UPTO 1024u
#define BATCH_MAX 32u
/* A thread cache bin holds at most 512 blocks or 256 KiB. */
#define BIN_CAP_BLOCKS 512u
#define BIN_CAP_BYTES (256u * 1024u)
/* A central list keeps at most 256 KiB (and 2..255 batches: the transfer
 * head's 8-bit count, central.c) ready to hand out. When consumers' flushes
 * arrive in bursts (xmalloc at 32 threads), a smaller stack spilled about
 * 20% of freed blocks to their spans one by one and emptied spans only to
 * carve them again; at this size xmalloc t=32 used about 5% less CPU per
 * operation with a peak RSS no higher. Idle lists are drained back to their
 * spans by the purge pass (central_purge.c). The classes below 128 B were
 * held to 64 batches (64 KiB at 32 B, 32 KiB at 16 B) until the count's
 * limit moved to 255: a block through a batch costs about 3 instructions,
 * through its span about 45 (the return and the refill's take), and
 * bench/fastpath's random batch of 32 B went 102.5 -> 100.3 a pair,
 * reverse 87.3 -> 86.2 (callgrind), with xmalloc t=1/t=4, larson t=1/t=2
 * and churn's peak RSS within their run-to-run noise (7 interleaved runs). */
#define TRANSFER_BYTES (256u * 1024u)
#define TRANSFER_MAX 255u

static unsigned clampu(unsigned v, unsigned lo, unsigned hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static uint16_t span_pages_for(uint32_t size)
{
	for (unsigned pages = 1;; pages++) {
		size_t bytes = (size_t)pages << EBB_PAGE_SHIFT;
		if (bytes / size < (size >= SPAN_FEW_FROM ? SPAN_FEW_BLOCKS : SPAN_MIN_BLOCKS))
			continue;
		if ((bytes % size) * 16 <= bytes)
			return (uint16_t)pages;
	}
}

/* The class just above a power of two b >= FIT_FROM (see size_class.h): the
 * smallest block size of at least b + b/16 that fills a span of 8 blocks'
 * worth of pages, or up to half again as many, exactly (span bytes / blocks,
 * down to 16): the span's tail is then under 16 bytes a block. For 4096
 * that is 4432 (13 pages, 12 blocks), which holds SQLite's 4368-byte
 * page-cache entries that the step after it, 4608, rounds up by 5.5%. */
#define FIT_FROM 1024u
static uint32_t fit_class_for(uint32_t b, uint16_t *pages_out)
{
	uint32_t target = b + b / 16;
	unsigned lo = (unsigned)(((size_t)SPAN_MIN_BLOCKS * target + EBB_PAGE_SIZE - 1) >> EBB_PAGE_SHIFT);
	uint32_t best = 0;
	for (unsigned pages = lo; pages <= lo + lo / 2; pages++) {
		size_t bytes = (size_t)pages << EBB_PAGE_SHIFT;
		uint32_t size = (uint32_t)(bytes / (bytes / target)) & ~15u;
		if (best == 0 || size < best) {
			best = size;
			*pages_out = (uint16_t)pages;
		}
	}
	return best;
}

static void set_class_pages(unsigned c, uint32_t size, uint16_t pages)
{
	size_class_t *k = &size_classes[c];
	k->size = size;
	k->pages = pages;
	k->blocks = (uint16_t)(((size_t)k->pages << EBB_PAGE_SHIFT) / size);
	k->batch = (uint16_t)clampu((size <= BATCH_SMALL_UPTO ? BATCH_SMALL_BYTES : BATCH_BYTES) / size, 2, BATCH_MAX);
	k->bin_cap = (uint16_t)clampu(BIN_CAP_BYTES / size, 2u * k->batch, BIN_CAP_BLOCKS);
	k->transfer_cap = (uint16_t)clampu(TRANSFER_BYTES / (size * k->batch), 2, TRANSFER_MAX);
	k->div_magic = UINT64_MAX / size + 1; /* == ceil(2^64 / size) for every size > 1 */
	k->block_mul = k->div_magic + 1;
	k->block_limit = (uint64_t)k->blocks * (size * k->block_mul); /* product mod 2^64 */
}

static void set_class(unsigned c, uint32_t size)
{
	set_class_pages(c, size, span_pages_for(size));
}

void size_class_init(void)
{
	unsigned c = 1;
	for (uint32_t size = 16; size <= 256; size += 16)
		set_class(c++, size);
	for (uint32_t base = 256; base < EBB_SMALL_MAX; base *= 2) {
		if (base >= FIT_FROM) {
			uint16_t pages = 0;
			uint32_t size = fit_class_for(base, &pages);
			EBB_CHECK(size > base && size < base + base / 8);
			set_class_pages(c++, size, pages);
		}
		for (uint32_t step = 1; step <= 8; step++)
			set_class(c++, base + step * (base / 8));
	}
	EBB_CHECK(c == EBB_NUM_CLASSES);
	EBB_CHECK(size_classes[EBB_NUM_CLASSES - 1].size == EBB_SMALL_MAX);

	/* Lookup by (size + 15) >> 4: every 16-byte bucket maps to the smallest
	 * class that holds its largest size. */
	unsigned k = 1;
	for (size_t i = 0; i <= (EBB_SMALL_MAX >> 4); i++) {
		size_t size = i << 4;
		while (size_classes[k].size < size)
			k++;
		size_class_table[i] = (uint8_t)k;
	}
}

unsigned size_class_aligned(size_t size, size_t align)
{
	if (size > EBB_SMALL_MAX || align > EBB_PAGE_SIZE)
		return 0;
	for (unsigned c = size_class_of(size); c < EBB_NUM_CLASSES; c++)
		if (size_classes[c].size % align == 0)
			return c;
	return 0;
}
