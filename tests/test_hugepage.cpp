// Transparent huge pages for a large heap of small blocks (page_heap.c,
// "Transparent huge pages"; option thp_min_mb), end to end: the real
// library, RSS and AnonHugePages from /proc. Where the kernel's THP mode is
// not "madvise", or MADV_COLLAPSE is unknown (before Linux 6.1), the cases
// that need huge pages are skipped.
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ebbmalloc.h"

namespace {

const size_t MiB = 1 << 20;

// A field of /proc/self/smaps_rollup in bytes (kB in the file), or 0.
size_t rollup_bytes(const char *field)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	if (f == nullptr)
		return 0;
	char line[256];
	size_t len = strlen(field), kb = 0;
	while (fgets(line, sizeof line, f) != nullptr) {
		if (strncmp(line, field, len) == 0 && line[len] == ':') {
			kb = strtoull(line + len + 1, nullptr, 10);
			break;
		}
	}
	fclose(f);
	return kb * 1024;
}

size_t rss_bytes()
{
	return rollup_bytes("Rss");
}

// THP mode "madvise", and a kernel that takes MADV_COLLAPSE on a page of
// ours (an unknown advice is EINVAL).
bool thp_on_request()
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	if (f == nullptr)
		return false;
	char buf[128] = {0};
	bool madv = fgets(buf, sizeof buf, f) != nullptr && strstr(buf, "[madvise]") != nullptr;
	fclose(f);
	if (!madv)
		return false;
	size_t two = 2 * MiB;
	char *raw = (char *)mmap(nullptr, 2 * two, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return false;
	char *p = (char *)(((uintptr_t)raw + two - 1) & ~(uintptr_t)(two - 1));
	p[0] = 1;
	bool ok = madvise(p, two, 25 /* MADV_COLLAPSE */) == 0 || errno != EINVAL;
	munmap(raw, 2 * two);
	return ok;
}

// n blocks of `size` bytes, each written whole, in an array of their own.
void **fill(size_t n, size_t size)
{
	void **v = (void **)malloc(n * sizeof(void *));
	REQUIRE(v != nullptr);
	for (size_t i = 0; i < n; i++) {
		v[i] = malloc(size);
		REQUIRE(v[i] != nullptr);
		memset(v[i], (int)i, size);
	}
	return v;
}

void drop(void **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

} // namespace

TEST_CASE("hugepage: a large heap of small blocks is backed by huge pages, and gives them back", "[hugepage]")
{
	if (!thp_on_request()) {
		WARN("THP mode is not madvise, or no MADV_COLLAPSE: skipped");
		return;
	}
	REQUIRE(ebb_option_set("thp_min_mb", "16") == 0);
	size_t rss0 = rss_bytes(), huge0 = rollup_bytes("AnonHugePages");
	const size_t n = 96 * MiB / 64;
	void **v = fill(n, 64);
	size_t rss1 = rss_bytes(), huge1 = rollup_bytes("AnonHugePages");
	INFO("RSS " << (rss0 >> 10) << " -> " << (rss1 >> 10) << " KiB; AnonHugePages " << (huge0 >> 10) << " -> "
		    << (huge1 >> 10) << " KiB");
	// 96 MiB of blocks (and the 12 MiB array, a huge block of its own):
	// every region handed out whole once 16 MiB were in use, but for the
	// last of each heap. At least half of it.
	CHECK(huge1 - huge0 >= 40 * MiB);
	// What is resident is what was written: no region filled beyond a few
	// pages per 2 MiB (thin pages), no more than 4 MiB over the 4 KiB
	// pages' figure (blocks, their headers, the array).
	CHECK(rss1 - rss0 <= 96 * MiB + 12 * MiB + 8 * MiB);
	drop(v, n);
	ebb_trim();
	size_t rss2 = rss_bytes(), huge2 = rollup_bytes("AnonHugePages");
	INFO("after the frees and ebb_trim: RSS " << (rss2 >> 10) << " KiB, AnonHugePages " << (huge2 >> 10) << " KiB");
	CHECK(rss2 <= rss0 + 8 * MiB);
	CHECK(huge2 <= huge0 + 4 * MiB);
}

TEST_CASE("hugepage: below thp_min_mb, and with -1, no huge page", "[hugepage]")
{
	if (!thp_on_request()) {
		WARN("THP mode is not madvise, or no MADV_COLLAPSE: skipped");
		return;
	}
	size_t huge0 = rollup_bytes("AnonHugePages");
	SECTION("below thp_min_mb=16")
	{
		REQUIRE(ebb_option_set("thp_min_mb", "16") == 0);
		const size_t n = 12 * MiB / 64;
		void **v = fill(n, 64);
		CHECK(rollup_bytes("AnonHugePages") == huge0);
		drop(v, n);
	}
	SECTION("thp_min_mb=-1, the default")
	{
		// Set: the section before ran in this process.
		REQUIRE(ebb_option_set("thp_min_mb", "-1") == 0);
		const size_t n = 96 * MiB / 64;
		void **v = fill(n, 64);
		CHECK(rollup_bytes("AnonHugePages") == huge0);
		drop(v, n);
	}
}

TEST_CASE("hugepage: a region with purged holes stays 4 KiB pages", "[hugepage]")
{
	if (!thp_on_request()) {
		WARN("THP mode is not madvise, or no MADV_COLLAPSE: skipped");
		return;
	}
	// No huge page while the heap grows to 48 MiB of 64-byte blocks (a
	// page a span); then one block of every eighth span kept, the rest
	// freed and purged (ebb_trim): purged holes of seven pages between
	// live ones. With the bar at 0, new spans are cut from the holes:
	// collapsing their regions would make the holes resident.
	REQUIRE(ebb_option_set("thp_min_mb", "-1") == 0);
	const size_t n = 48 * MiB / 64;
	void **v = fill(n, 64);
	for (size_t i = 0; i < n; i++) {
		if (i % 512 != 0) {
			free(v[i]);
			v[i] = nullptr;
		}
	}
	ebb_trim();
	size_t rss1 = rss_bytes(), huge1 = rollup_bytes("AnonHugePages");
	// The new blocks' array first (a block of 391 pages, from a new
	// superblock), then the blocks, whose spans fit the holes.
	const size_t m = 200000;
	void **w = (void **)malloc(m * sizeof(void *));
	REQUIRE(w != nullptr);
	REQUIRE(ebb_option_set("thp_min_mb", "0") == 0);
	for (size_t i = 0; i < m; i++) {
		w[i] = malloc(64);
		REQUIRE(w[i] != nullptr);
		memset(w[i], 1, 64);
	}
	size_t rss2 = rss_bytes(), huge2 = rollup_bytes("AnonHugePages");
	INFO("RSS " << (rss1 >> 10) << " -> " << (rss2 >> 10) << " KiB; AnonHugePages " << (huge1 >> 10) << " -> "
		    << (huge2 >> 10) << " KiB");
	// Collapsed, the 21 regions of holes would add some 36 MiB. A new
	// superblock or two (a heap without holes: the thread moved) may be
	// huge pages, with 4 MiB resident each at most.
	CHECK(rss2 <= rss1 + m * 64 + m * sizeof(void *) + 8 * MiB);
	drop(w, m);
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}
