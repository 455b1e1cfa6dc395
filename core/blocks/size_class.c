/* size_class.c: generates the size-class table and the per-class parameters. */
#include "core/blocks/size_class.h"

size_class_t size_classes[EBB_NUM_CLASSES];

/* Written out here rather than filled by size_class_init (issue 14): filled
 * at start-up its 2 KiB of .bss pushed the library's writable data onto a
 * fifth page that every process dirtied (.data and .bss now take four; the
 * table's .rodata fits in the pages that segment already had). R(k, a, b):
 * class k holds sizes a+1 .. b, so it serves the buckets of those sizes.
 * The test "size_class_table agrees with size_classes" (tests/test_size_class.cpp)
 * checks it against the classes size_class_init computes, so a change of
 * class sizes that forgets this table fails there. */
#define R(k, a, b) [((a) >> 4) + 1 ... (b) >> 4] = (k)
const uint8_t size_class_table[(EBB_SMALL_MAX >> 4) + 1] = {
	[0] = 1,
	R(1, 0, 16), R(2, 16, 32), R(3, 32, 48), R(4, 48, 64), R(5, 64, 80),
	R(6, 80, 96), R(7, 96, 112), R(8, 112, 128), R(9, 128, 144), R(10, 144, 160),
	R(11, 160, 176), R(12, 176, 192), R(13, 192, 208), R(14, 208, 224),
	R(15, 224, 240), R(16, 240, 256), R(17, 256, 288), R(18, 288, 320),
	R(19, 320, 352), R(20, 352, 384), R(21, 384, 416), R(22, 416, 448),
	R(23, 448, 480), R(24, 480, 512), R(25, 512, 576), R(26, 576, 640),
	R(27, 640, 704), R(28, 704, 768), R(29, 768, 832), R(30, 832, 896),
	R(31, 896, 960), R(32, 960, 1024), R(33, 1024, 1088), R(34, 1088, 1152),
	R(35, 1152, 1280), R(36, 1280, 1408), R(37, 1408, 1536), R(38, 1536, 1664),
	R(39, 1664, 1792), R(40, 1792, 1920), R(41, 1920, 2048), R(42, 2048, 2192),
	R(43, 2192, 2304), R(44, 2304, 2560), R(45, 2560, 2816), R(46, 2816, 3072),
	R(47, 3072, 3328), R(48, 3328, 3584), R(49, 3584, 3840), R(50, 3840, 4096),
	R(51, 4096, 4432), R(52, 4432, 4608), R(53, 4608, 5120), R(54, 5120, 5632),
	R(55, 5632, 6144), R(56, 6144, 6656), R(57, 6656, 7168), R(58, 7168, 7680),
	R(59, 7680, 8192), R(60, 8192, 8704), R(61, 8704, 9216), R(62, 9216, 10240),
	R(63, 10240, 11264), R(64, 11264, 12288), R(65, 12288, 13312),
	R(66, 13312, 14336), R(67, 14336, 15360), R(68, 15360, 16384),
	R(69, 16384, 17408), R(70, 17408, 18432), R(71, 18432, 20480),
	R(72, 20480, 22528), R(73, 22528, 24576), R(74, 24576, 26624),
	R(75, 26624, 28672), R(76, 28672, 30720), R(77, 30720, 32768),
};
#undef R

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
