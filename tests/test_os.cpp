// test_os.cpp: os/os_linux.c itself, against the real kernel (the unit tests
// link the fake os instead). os_purge_vec: ranges given back read as zero,
// the pages between them keep their contents, and an injected refusal stops
// the vector at the range it hits.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>

#include "os/os.h"

namespace {

constexpr size_t kPages = 40;

// A mapping of kPages pages, page i filled with the byte i + 1.
char *filled_mapping(size_t page)
{
	char *p = static_cast<char *>(os_map(kPages * page));
	REQUIRE(p != nullptr);
	for (size_t i = 0; i < kPages; i++)
		memset(p + i * page, static_cast<int>(i + 1), page);
	return p;
}

bool page_is(const char *p, size_t page, unsigned char v)
{
	for (size_t j = 0; j < page; j++)
		if (static_cast<unsigned char>(p[j]) != v)
			return false;
	return true;
}

} // namespace

TEST_CASE("os_purge_vec gives back separate ranges and nothing between them", "[os]")
{
	const size_t page = os_page_size();
	for (int lazy = 0; lazy < 2; lazy++) {
		char *p = filled_mapping(page);
		// Ranges of 1, 2 and 3 pages with untouched pages between them,
		// not in address order.
		const size_t first[] = { 30, 1, 10, 5, 20, 36 };
		const size_t count[] = { 3, 1, 2, 1, 3, 2 };
		const size_t n = sizeof(first) / sizeof(first[0]);
		os_range_t r[n];
		bool released[kPages] = {};
		for (size_t i = 0; i < n; i++) {
			r[i].p = p + first[i] * page;
			r[i].size = count[i] * page;
			for (size_t k = 0; k < count[i]; k++)
				released[first[i] + k] = true;
		}
		REQUIRE(os_purge_vec(r, n, lazy != 0) == n);
		for (size_t i = 0; i < kPages; i++) {
			INFO("lazy " << lazy << " page " << i);
			if (!released[i])
				CHECK(page_is(p + i * page, page, static_cast<unsigned char>(i + 1)));
			else if (!lazy)
				CHECK(page_is(p + i * page, page, 0));
			else // MADV_FREE: either the old contents or zero, per page
				CHECK((page_is(p + i * page, page, static_cast<unsigned char>(i + 1)) ||
				       page_is(p + i * page, page, 0)));
		}
		REQUIRE(os_unmap(p, kPages * page));
	}
}

TEST_CASE("os_purge_vec: more ranges than one system call takes", "[os]")
{
	const size_t page = os_page_size();
	const size_t big = 300; // every other page of 600: several vectors of 64
	char *p = static_cast<char *>(os_map(2 * big * page));
	REQUIRE(p != nullptr);
	memset(p, 0x5a, 2 * big * page);
	os_range_t r[big];
	for (size_t i = 0; i < big; i++) {
		r[i].p = p + 2 * i * page;
		r[i].size = page;
	}
	REQUIRE(os_purge_vec(r, big, false) == big);
	for (size_t i = 0; i < 2 * big; i++) {
		INFO("page " << i);
		CHECK(page_is(p + i * page, page, i % 2 ? 0x5a : 0));
	}
	REQUIRE(os_unmap(p, 2 * big * page));
}

TEST_CASE("os_purge_vec stops at the range the kernel refuses", "[os]")
{
	const size_t page = os_page_size();
	char *p = filled_mapping(page);
	os_range_t r[5];
	for (size_t i = 0; i < 5; i++) {
		r[i].p = p + (2 * i + 1) * page;
		r[i].size = page;
	}
	os_fault_set(OS_FAULT_PURGE, 3, 0); // the third range is refused
	REQUIRE(os_purge_vec(r, 5, false) == 2);
	os_fault_set(OS_FAULT_PURGE, 0, 0);
	for (size_t i = 0; i < kPages; i++) {
		INFO("page " << i);
		bool gone = i == 1 || i == 3;
		CHECK(page_is(p + i * page, page, gone ? 0 : static_cast<unsigned char>(i + 1)));
	}
	// A range the kernel itself refuses (not mapped): the ones before it
	// are given back, the one after it is not touched.
	REQUIRE(os_unmap(p + 20 * page, page));
	os_range_t bad[3] = { { p + 15 * page, page }, { p + 20 * page, page }, { p + 25 * page, page } };
	// madvise(MADV_DONTNEED) of an unmapped range fails with ENOMEM.
	REQUIRE(os_purge_vec(bad, 3, false) == 1);
	CHECK(page_is(p + 15 * page, page, 0));
	CHECK(page_is(p + 25 * page, page, 26));
	REQUIRE(os_unmap(p, 20 * page));
	REQUIRE(os_unmap(p + 21 * page, (kPages - 21) * page));
}

// The lock's futex wait and wake run inside malloc and free, and free must
// keep errno (glibc promises it; its tst-free-errno checks). A wait on a word
// that already reads otherwise fails at once with EAGAIN: errno must still
// read what the program left there.
TEST_CASE("os_wait_u32 and os_wake_one keep errno", "[os]")
{
	uint32_t word = 1;
	errno = 4242;
	os_wait_u32(&word, 2); // the word is not 2: the kernel says EAGAIN
	CHECK(errno == 4242);
	os_wake_one(&word); // nobody sleeps there: wakes none
	CHECK(errno == 4242);
}

TEST_CASE("os_resident_pages counts the pages written, over more than one mincore piece", "[os]")
{
	const size_t pages = 2500;
	char *p = (char *)os_map(pages * 4096);
	REQUIRE(p != nullptr);
	CHECK(os_resident_pages(p, pages * 4096) == 0);
	p[0] = 1;
	p[1030 * 4096] = 1;
	p[(pages - 1) * 4096 + 5] = 1;
	CHECK(os_resident_pages(p, pages * 4096) == 3);
	CHECK(os_resident_pages(p + 4096, 4096) == 0);
	REQUIRE(os_unmap(p, pages * 4096));
}
