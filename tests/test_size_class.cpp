// Size classes: the waste bound for every size, the lookup table, and the
// per-class parameters the layers above rely on.
#include <catch2/catch.hpp>

#include "core/blocks/size_class.h"
#include "tests/support/unit.h"

TEST_CASE("every small size maps to the smallest class that holds it", "[size_class]")
{
	unit_init();
	for (size_t n = 0; n <= EBB_SMALL_MAX; n++) {
		unsigned c = size_class_of(n);
		REQUIRE(c >= 1);
		REQUIRE(c < EBB_NUM_CLASSES);
		REQUIRE(size_classes[c].size >= n);
		if (c > 1)
			REQUIRE(size_classes[c - 1].size < n);
	}
}

TEST_CASE("internal waste is at most 15 bytes below 128 and at most 12.5% from 128 up", "[size_class]")
{
	unit_init();
	size_t worst_n = 0;
	double worst = 0;
	for (size_t n = 1; n <= EBB_SMALL_MAX; n++) {
		size_t block = size_classes[size_class_of(n)].size;
		size_t waste = block - n;
		if (n < 128) {
			REQUIRE(waste <= 15);
		} else {
			INFO("size " << n << " gets a block of " << block);
			REQUIRE(waste * 8 <= n);
			double ratio = (double)waste / (double)n;
			if (ratio > worst) {
				worst = ratio;
				worst_n = n;
			}
		}
	}
	INFO("worst waste " << worst * 100 << "% at size " << worst_n);
	CHECK(worst <= 0.125);
}

TEST_CASE("classes are 16-byte multiples, increasing, ending at the small maximum", "[size_class]")
{
	unit_init();
	REQUIRE(size_classes[1].size == 16);
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		REQUIRE(size_classes[c].size % 16 == 0);
		if (c > 1)
			REQUIRE(size_classes[c].size > size_classes[c - 1].size);
	}
	REQUIRE(size_classes[EBB_NUM_CLASSES - 1].size == EBB_SMALL_MAX);
}

TEST_CASE("spans hold at least 8 blocks (4 above 8 KiB) and lose at most 1/16 to their tail", "[size_class]")
{
	unit_init();
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		const size_class_t &k = size_classes[c];
		size_t bytes = (size_t)k.pages * EBB_PAGE_SIZE;
		INFO("class " << c << " size " << k.size);
		REQUIRE(k.blocks >= (k.size > 8192 ? 4 : 8));
		/* A class above 8 KiB needs no span larger than 4 blocks
		 * (plus a tail under 1/16): one block must not pin 8. */
		if (k.size > 8192 && k.size % EBB_PAGE_SIZE == 0)
			REQUIRE(k.blocks == 4);
		REQUIRE(k.blocks == bytes / k.size);
		REQUIRE((bytes - (size_t)k.blocks * k.size) * 16 <= bytes);
		REQUIRE(k.batch >= 2);
		REQUIRE(k.bin_cap >= 2 * k.batch);
		REQUIRE(k.transfer_cap >= 2);
	}
}

TEST_CASE("batches hold at most 32 blocks, 12 KiB up to 1 KiB and 64 KiB above, central lists about 256 KiB",
	  "[size_class]")
{
	unit_init();
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		const size_class_t &k = size_classes[c];
		size_t limit = k.size <= 1024 ? 12288 : 65536;
		size_t batch_bytes = (size_t)k.batch * k.size;
		INFO("class " << c << " size " << k.size << " batch " << k.batch);
		REQUIRE(k.batch >= 2);
		REQUIRE(k.batch <= 32); /* central.c's TRANSFER_BATCH_MAX */
		/* The largest batch within the limit: one more block would
		 * exceed it, unless the batch is at 32 blocks or at 2. */
		REQUIRE((batch_bytes <= limit || k.batch == 2));
		REQUIRE((k.batch == 32 || k.batch == 2 || batch_bytes + k.size > limit));
		/* A bin's first region (two batches) fits its cap. */
		REQUIRE(k.bin_cap >= 2 * k.batch);
		/* The transfer stack: 2..255 batches (its head's 8-bit count),
		 * at most 256 KiB of blocks unless two batches are more. */
		REQUIRE(k.transfer_cap >= 2);
		REQUIRE(k.transfer_cap <= 255);
		REQUIRE(((size_t)k.transfer_cap * batch_bytes <= 256 * 1024 || k.transfer_cap == 2));
	}
	/* The 1 KiB class moves 12 blocks; 32 B still 32 (bench/fastpath). */
	REQUIRE(size_classes[size_class_of(1024)].batch == 12);
	REQUIRE(size_classes[size_class_of(32)].batch == 32);
}

TEST_CASE("the division by multiplication is exact for every offset in a span", "[size_class]")
{
	unit_init();
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		const size_class_t &k = size_classes[c];
		size_t bytes = (size_t)k.pages * EBB_PAGE_SIZE;
		for (size_t off = 0; off < bytes; off += 16)
			REQUIRE(size_class_div(c, off) == off / k.size);
	}
}

TEST_CASE("aligned classes have blocks that are multiples of the alignment", "[size_class]")
{
	unit_init();
	for (size_t align = 32; align <= 4096; align *= 2) {
		for (size_t n = 1; n <= EBB_SMALL_MAX; n += 37) {
			unsigned c = size_class_aligned(n, align);
			if (c == 0)
				continue;
			REQUIRE(size_classes[c].size >= n);
			REQUIRE(size_classes[c].size % align == 0);
		}
		// A size that is a power of two up to the alignment always fits.
		REQUIRE(size_class_aligned(align, align) != 0);
	}
	REQUIRE(size_class_aligned(100, 8192) == 0);
	REQUIRE(size_class_aligned(EBB_SMALL_MAX + 1, 64) == 0);
}

TEST_CASE("free's block-start test is exact for every offset of a span", "[size_class]")
{
	unit_init();
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		const size_class_t &k = size_classes[c];
		INFO("class " << c << " size " << k.size);
		// off * ceil(2^64 / size) < ceil(2^64 / size) (mod 2^64) exactly when
		// size divides off: tcache_free's test, over a whole span.
		for (uint64_t off = 0; off < ((uint64_t)k.pages << EBB_PAGE_SHIFT); off += 16)
			REQUIRE((off * k.div_magic < k.div_magic) == (off % k.size == 0));
	}
}

// Rounding on a log-uniform mix (as many requests in every doubling), from
// the table itself: the share of the bytes handed out beyond those asked for,
// by class size, and by span bytes per block (the span tails too). The
// stats-based measurement of the same is tests/api/test_waste.cpp.
static double log_uniform_rounding(size_t lo, size_t hi, bool per_span)
{
	double asked = 0, given = 0;
	for (size_t n = lo; n <= hi; n++) {
		const size_class_t &k = size_classes[size_class_of(n)];
		double block = per_span ? (double)((size_t)k.pages << EBB_PAGE_SHIFT) / k.blocks : (double)k.size;
		// Weight 1/n: the same number of requests per doubling.
		asked += 1.0;
		given += block / (double)n;
	}
	return given / asked - 1.0;
}

TEST_CASE("rounding on log-uniform mixes is at most 6%, span tails included", "[size_class]")
{
	unit_init();
	for (size_t hi : {size_t(16384), EBB_SMALL_MAX}) {
		double by_class = log_uniform_rounding(16, hi, false);
		double by_span = log_uniform_rounding(16, hi, true);
		INFO("16 B - " << hi << " B: " << by_class * 100 << "% by class size, " << by_span * 100
			       << "% by span bytes per block");
		CHECK(by_class <= 0.06);
		CHECK(by_span <= 0.06);
		CHECK(by_span >= by_class);
	}
	// SQLite's page-cache entry (bench/sqlite_bench.py) rounds by at most 3%.
	CHECK(size_classes[size_class_of(4368)].size * 100 <= 4368 * 103);
}

// size_class_table is written out in size_class.c (so that start-up does not
// dirty a page filling it): every 16-byte bucket must still name the smallest
// class whose size holds the bucket's largest size, as size_class_init's
// classes are now.
TEST_CASE("size_class_table agrees with size_classes", "[size_class]")
{
	unit_init();
	unsigned k = 1;
	for (size_t i = 0; i <= (EBB_SMALL_MAX >> 4); i++) {
		size_t size = i << 4;
		while (k < EBB_NUM_CLASSES && size_classes[k].size < size)
			k++;
		INFO("bucket " << i << " (size " << size << ")");
		REQUIRE(k < EBB_NUM_CLASSES);
		CHECK(size_class_table[i] == k);
	}
}
