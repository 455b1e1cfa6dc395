/* test_stats.cpp: the statistics API (the identity of the byte gauges, growth
 * of `allocated`, the printer), ebb_trim, and the options API. The detailed
 * memory-return tests live elsewhere; these are about the API. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace apitest;

namespace {

/* A snapshot that adds up, if the allocator's own background thread lets us
 * see one within a few tries (the identity is promised when nothing else
 * runs; the test itself is single-threaded here). */
ebb_stats_t settled_stats()
{
	ebb_stats_t s = stats();
	for (int i = 0; i < 20 && s.mapped != stats_parts(s); i++) {
		std::this_thread::yield();
		s = stats();
	}
	return s;
}

struct Held {
	const Api *a;
	void *p;
	size_t n;
};

/* A mix of small, large, huge and aligned blocks from every API. */
std::vector<Held> allocate_mix(size_t &total)
{
	std::vector<Held> v;
	v.reserve(4000);
	total = 0;
	Rng rng(31);
	for (const Api *a : all_apis()) {
		for (int i = 0; i < 1500; i++) {
			size_t n = rng.log_size(32 * KiB);
			void *p = a->malloc_(n);
			REQUIRE(p != nullptr);
			memset(p, 1, n);
			v.push_back({a, p, n});
			total += n;
		}
		for (size_t n : {size_t(40000), size_t(100000), 1 * MiB, 3 * MiB, 5 * MiB, 17 * MiB}) {
			void *p = a->malloc_(n);
			REQUIRE(p != nullptr);
			memset(p, 2, n);
			v.push_back({a, p, n});
			total += n;
		}
		for (size_t al : {size_t(64), size_t(4096), size_t(65536), 1 * MiB}) {
			void *p = a->aligned_alloc_(al, 3000);
			REQUIRE(p != nullptr);
			v.push_back({a, p, 3000});
			total += 3000;
		}
	}
	return v;
}

} // namespace

TEST_CASE("quiescent stats add up: mapped == allocated + tcache + central + dirty + purged + metadata + waste",
	  "[stats]")
{
	ebb_trim();
	ebb_stats_t s0 = settled_stats();
	INFO("at start:        " << stats_str(s0));
	CHECK(s0.mapped == stats_parts(s0));

	size_t total = 0;
	std::vector<Held> held = allocate_mix(total);
	ebb_stats_t s1 = settled_stats();
	INFO("blocks live:     " << stats_str(s1));
	CHECK(s1.mapped == stats_parts(s1));
	CHECK(s1.allocated >= total);
	CHECK(s1.allocated >= s0.allocated + total);
	CHECK(s1.mapped >= s1.allocated);

	for (const Held &h : held) h.a->free_(h.p);
	held.clear();
	held.shrink_to_fit();
	ebb_stats_t s2 = settled_stats();
	INFO("all freed:       " << stats_str(s2));
	CHECK(s2.mapped == stats_parts(s2));

	int rc = ebb_trim();
	CHECK((rc == 0 || rc == 1));
	ebb_stats_t s3 = settled_stats();
	INFO("freed + trimmed: " << stats_str(s3));
	CHECK(s3.mapped == stats_parts(s3));
	CHECK(s3.allocated + total <= s1.allocated);
	/* the trim gave the huge blocks' mappings back */
	CHECK(s3.mapped + 17 * MiB <= s1.mapped);
}

TEST_CASE("allocated grows by at least the bytes allocated, through every API", "[stats]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		std::vector<void *> v;
		v.reserve(3000);
		size_t total = 0;
		ebb_stats_t before = stats();
		for (int i = 0; i < 2000; i++) {
			v.push_back(a->malloc_(100));
			total += 100;
		}
		for (int i = 0; i < 50; i++) {
			v.push_back(a->calloc_(20, 1024));
			total += 20 * 1024;
		}
		for (int i = 0; i < 10; i++) {
			v.push_back(a->realloc_(nullptr, 300 * KiB));
			total += 300 * KiB;
		}
		for (int i = 0; i < 2; i++) {
			void *p = nullptr;
			CHECK(a->posix_memalign_(&p, 4096, 8 * MiB) == 0);
			v.push_back(p);
			total += 8 * MiB;
		}
		ebb_stats_t mid = stats();
		for (void *p : v) REQUIRE(p != nullptr);
		for (void *p : v) a->free_(p);
		ebb_stats_t after = stats();
		INFO("before: " << stats_str(before));
		INFO("mid:    " << stats_str(mid));
		INFO("after:  " << stats_str(after));
		CHECK(mid.allocated >= before.allocated + total);
		CHECK(after.allocated + total <= mid.allocated);
		CHECK(mid.large_allocs >= before.large_allocs + 2); /* the two 8 MiB blocks at least */
	}
}

TEST_CASE("counters that only grow do not go back", "[stats]")
{
	ebb_stats_t a = stats();
	for (int i = 0; i < 100; i++) {
		void *p = ebb_malloc(5 * MiB);
		REQUIRE(p != nullptr);
		ebb_free(p);
		void *q = ebb_malloc(64);
		ebb_free(q);
	}
	ebb_trim();
	ebb_stats_t b = stats();
#define EBB_API_TEST_TOTAL_(name, kind, doc)                                                      \
	if (std::string(#kind) == "total") {                                                      \
		INFO("counter " #name);                                                           \
		CHECK(b.name >= a.name);                                                          \
	}
	EBB_STATS_FIELDS(EBB_API_TEST_TOTAL_)
#undef EBB_API_TEST_TOTAL_
	CHECK(b.large_allocs >= a.large_allocs + 100);
	CHECK(b.superblocks_mapped >= b.superblocks_unmapped);
}

TEST_CASE("ebb_stats_print prints every field", "[stats]")
{
	std::string text = stats_print_text();
#define EBB_API_TEST_NAME_(name, kind, doc)                                                       \
	{                                                                                         \
		INFO("field " #name);                                                             \
		CHECK(text.find(#name) != std::string::npos);                                     \
	}
	EBB_STATS_FIELDS(EBB_API_TEST_NAME_)
#undef EBB_API_TEST_NAME_
}

TEST_CASE("ebb_trim returns 0 or 1 and the allocator works after it", "[stats]")
{
	for (int i = 0; i < 20; i++) {
		std::vector<void *> v;
		for (int j = 0; j < 200; j++) v.push_back(ebb_malloc((size_t)(j * 61 + i)));
		void *big = ebb_malloc(6 * MiB);
		REQUIRE(big != nullptr);
		memset(big, 3, 6 * MiB);
		for (void *p : v) ebb_free(p);
		ebb_free(big);
		int rc = ebb_trim();
		CHECK((rc == 0 || rc == 1));
		void *p = ebb_calloc(1, 6 * MiB);
		REQUIRE(p != nullptr);
		CHECK(first_nonzero(p, 6 * MiB) == 6 * MiB);
		ebb_free(p);
	}
}

TEST_CASE("unknown option names are rejected with -1 and EINVAL", "[options]")
{
	for (const char *name : {"no_such_option", "", "decay_ms_", "DECAY_MS", "decay_ms=5"}) {
		INFO("name '" << name << "'");
		errno = 0;
		CHECK(ebb_option_set(name, "1") == -1);
		CHECK(errno == EINVAL);
		long long v = 12345;
		errno = 0;
		CHECK(ebb_option_get(name, &v) == -1);
		CHECK(errno == EINVAL);
	}
}

TEST_CASE("an option can be read, set, and a bad value is rejected", "[options]")
{
	/* decay_ms and background_thread are the header's own examples */
	long long orig = -1;
	REQUIRE(ebb_option_get("decay_ms", &orig) == 0);
	CHECK(orig >= 0);
	REQUIRE(ebb_option_set("decay_ms", "1234") == 0);
	long long v = -1;
	REQUIRE(ebb_option_get("decay_ms", &v) == 0);
	CHECK(v == 1234);
	for (const char *bad : {"banana", "", "12abc"}) {
		INFO("value '" << bad << "'");
		errno = 0;
		CHECK(ebb_option_set("decay_ms", bad) == -1);
		CHECK(errno == EINVAL);
		v = -1;
		CHECK(ebb_option_get("decay_ms", &v) == 0);
		CHECK(v == 1234); /* ignored */
	}
	REQUIRE(ebb_option_set("decay_ms", std::to_string(orig).c_str()) == 0);
	CHECK(ebb_option_get("decay_ms", &v) == 0);
	CHECK(v == orig);

	long long bg = -1;
	CHECK(ebb_option_get("background_thread", &bg) == 0);
	CHECK((bg == 0 || bg == 1));
}

/* Run by tests/api/run_env_test.sh with EBB_OPTIONS set: the program starts
 * and works, and an expected value (if given) was taken from the environment.
 * The script checks that stderr names the bad option. */
TEST_CASE("the program runs with EBB_OPTIONS from the environment", "[env]")
{
	void *p = ebb_malloc(100);
	REQUIRE(p != nullptr);
	ebb_free(p);
	const char *expect = getenv("API_TEST_EXPECT_DECAY_MS");
	if (expect) {
		long long v = -1;
		REQUIRE(ebb_option_get("decay_ms", &v) == 0);
		CHECK(v == atoll(expect));
	}
}
