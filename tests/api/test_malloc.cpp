/* test_malloc.cpp: malloc, free, calloc, realloc, reallocarray,
 * malloc_usable_size, ebb_free_sized and ebb_free_aligned_sized, through the
 * ebb_* names and (EBB_OVERRIDE) the standard names. Huge and overflowing
 * sizes are in test_limits.cpp, alignment in test_align.cpp. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <malloc.h>
#include <set>
#include <vector>

using namespace apitest;

TEST_CASE("malloc(0) returns unique freeable pointers and free(NULL) does nothing", "[malloc]")
{
	for (const Api *a : all_apis()) {
		INFO("api: " << a->name);
		std::vector<void *> v;
		for (int i = 0; i < 512; i++) {
			void *p = a->malloc_(opaque<size_t>(0));
			REQUIRE(p != nullptr);
			v.push_back(p);
		}
		std::set<void *> distinct(v.begin(), v.end());
		CHECK(distinct.size() == v.size());
		for (void *p : v) a->free_(p);
		a->free_(nullptr);
		/* and once more after the frees: still non-NULL */
		void *p = a->malloc_(opaque<size_t>(0));
		CHECK(p != nullptr);
		a->free_(p);
	}
	ebb_free(nullptr);
	ebb_free_sized(nullptr, 0);
	ebb_free_sized(nullptr, 100);
	ebb_free_aligned_sized(nullptr, 64, 0);
	ebb_free_aligned_sized(nullptr, 4096, 4096);
	CHECK(ebb_malloc_usable_size(nullptr) == 0);
#if EBB_TEST_OVERRIDE
	CHECK(malloc_usable_size(nullptr) == 0);
#endif
}

TEST_CASE("malloc returns aligned, writable blocks of at least the requested size", "[malloc]")
{
	std::vector<size_t> sizes;
	for (size_t n = 1; n <= 300; n++) sizes.push_back(n);
	for (size_t n : {511, 512, 513, 1000, 1024, 4095, 4096, 4097, 16384, 32767, 32768, 32769,
			 65536, 100000, 262144, 1048576, 4194303, 4194304, 4194305, 10000000})
		sizes.push_back(n);
	for (const Api *a : all_apis()) {
		INFO("api: " << a->name);
		unsigned seed = 1;
		for (size_t n : sizes) {
			INFO("size " << n);
			void *p = a->malloc_(opaque(n));
			REQUIRE(p != nullptr);
			if (n >= 16) CHECK(is_aligned(p, 16));
			else if (n >= 8) CHECK(is_aligned(p, 8));
			size_t u = a->usable_(p);
			CHECK(u >= n);
			CHECK(ebb_malloc_usable_size(p) == u);
			fill(p, u, seed);
			CHECK(first_mismatch(p, u, seed) == u);
			a->free_(p);
			seed++;
		}
	}
}

TEST_CASE("calloc returns zeroed memory, also when it reuses dirty blocks", "[malloc]")
{
	const size_t sizes[] = {1,      24,     100,     1000,    4096,    20000,   32768,
				32769,  100000, 1 * MiB, 3 * MiB + 5, 4 * MiB, 5 * MiB, 9 * MiB};
	for (const Api *a : all_apis()) {
		INFO("api: " << a->name);
		for (size_t n : sizes) {
			const int count = n >= MiB ? 2 : 32;
			for (int round = 0; round < 3; round++) {
				INFO("size " << n << ", round " << round);
				/* Dirty blocks of this size (and of a slightly larger size that may
				 * share the class), free them, then calloc the same size. Round 1
				 * trims in between, round 2 splits n into count * size. */
				std::vector<void *> v;
				for (int i = 0; i < count; i++) {
					size_t m = (i & 1) ? n + n / 16 : n;
					void *p = a->malloc_(opaque(m));
					REQUIRE(p != nullptr);
					memset(p, 0xAB, a->usable_(p));
					v.push_back(p);
				}
				for (void *p : v) a->free_(p);
				if (round == 1) ebb_trim();
				v.clear();
				for (int i = 0; i < count; i++) {
					void *p;
					if (round == 2 && n % 4 == 0) p = a->calloc_(opaque(n / 4), opaque<size_t>(4));
					else if (round == 2) p = a->calloc_(opaque(n), opaque<size_t>(1));
					else p = a->calloc_(opaque<size_t>(1), opaque(n));
					REQUIRE(p != nullptr);
					CHECK(a->usable_(p) >= n);
					CHECK(first_nonzero(p, n) == n);
					memset(p, 0xCD, n);
					v.push_back(p);
				}
				for (void *p : v) a->free_(p);
			}
		}
		/* calloc(0, n) and calloc(n, 0) behave like malloc(0) */
		void *p = a->calloc_(opaque<size_t>(0), opaque<size_t>(16));
		void *q = a->calloc_(opaque<size_t>(16), opaque<size_t>(0));
		CHECK(p != nullptr);
		CHECK(q != nullptr);
		CHECK(p != q);
		a->free_(p);
		a->free_(q);
	}
}

TEST_CASE("realloc(NULL, n) is malloc(n) and realloc(p, 0) frees p and returns NULL", "[malloc]")
{
	for (const Api *a : all_apis()) {
		INFO("api: " << a->name);
		void *p = a->realloc_(nullptr, opaque<size_t>(100));
		REQUIRE(p != nullptr);
		CHECK(a->usable_(p) >= 100);
		fill(p, 100, 7);
		CHECK(first_mismatch(p, 100, 7) == 100);
		a->free_(p);

		p = a->realloc_(nullptr, opaque<size_t>(0));
		CHECK(p != nullptr); /* malloc(0) */
		a->free_(p);

		for (size_t n : {size_t(100), size_t(5000), size_t(100000), 8 * MiB}) {
			INFO("size " << n);
			p = a->malloc_(opaque(n));
			REQUIRE(p != nullptr);
			fill(p, n, 3);
			ebb_stats_t before = stats();
			void *r = a->realloc_(p, opaque<size_t>(0));
			ebb_stats_t after = stats();
			CHECK(r == nullptr);
			/* the block was freed: the program holds at least n bytes less */
			CHECK(after.allocated + n <= before.allocated);
		}
	}
}

TEST_CASE("realloc preserves contents while growing and shrinking across size ranges", "[malloc]")
{
	const size_t ladder[] = {1,      8,       16,      17,      100,         256,
				 1000,   4096,    10000,   32768,   32769,       65536,
				 100000, 1 * MiB, 4 * MiB - 4096, 4 * MiB, 4 * MiB + 1, 9 * MiB,
				 33 * MiB};
	std::vector<size_t> seq(std::begin(ladder), std::end(ladder));
	for (size_t i = std::size(ladder) - 1; i-- > 0;) seq.push_back(ladder[i]);
	/* big jumps both ways */
	for (size_t n : {size_t(1), 33 * MiB, size_t(24), 5 * MiB, size_t(40000), size_t(3)}) seq.push_back(n);

	for (const Api *a : all_apis()) {
		INFO("api: " << a->name);
		unsigned seed = 100;
		size_t cur = seq[0];
		void *p = a->malloc_(opaque(cur));
		REQUIRE(p != nullptr);
		fill(p, cur, seed);
		for (size_t k = 1; k < seq.size(); k++) {
			size_t next = seq[k];
			INFO("realloc " << cur << " -> " << next);
			void *q = a->realloc_(p, opaque(next));
			REQUIRE(q != nullptr);
			size_t keep = std::min(cur, next);
			CHECK(first_mismatch(q, keep, seed) == keep);
			CHECK(a->usable_(q) >= next);
			seed++;
			fill(q, a->usable_(q), seed);
			p = q;
			cur = next;
		}
		a->free_(p);

		/* a random walk, with several live chains at once */
		Rng rng(42);
		struct Chain {
			void *p;
			size_t n;
			unsigned seed;
		};
		std::vector<Chain> chains;
		for (int i = 0; i < 8; i++) {
			size_t n = rng.log_size(64 * KiB) + 1;
			void *c = a->malloc_(n);
			REQUIRE(c != nullptr);
			fill(c, n, seed);
			chains.push_back({c, n, seed++});
		}
		for (int step = 0; step < 1500; step++) {
			Chain &c = chains[rng.below(chains.size())];
			size_t next = rng.below(20) == 0 ? rng.log_size(6 * MiB) + 1 : rng.log_size(64 * KiB) + 1;
			INFO("step " << step << ": realloc " << c.n << " -> " << next);
			void *q = a->realloc_(c.p, next);
			REQUIRE(q != nullptr);
			size_t keep = std::min(c.n, next);
			REQUIRE(first_mismatch(q, keep, c.seed) == keep);
			REQUIRE(a->usable_(q) >= next);
			c.seed = seed++;
			fill(q, next, c.seed);
			c.p = q;
			c.n = next;
		}
		for (Chain &c : chains) {
			CHECK(first_mismatch(c.p, c.n, c.seed) == c.n);
			a->free_(c.p);
		}
	}
}

TEST_CASE("realloc within the usable size keeps the contents", "[malloc]")
{
	for (const Api *a : all_apis()) {
		INFO("api: " << a->name);
		for (size_t n : {size_t(10), size_t(1000), size_t(50000), 6 * MiB}) {
			void *p = a->malloc_(opaque(n));
			REQUIRE(p != nullptr);
			size_t u = a->usable_(p);
			fill(p, u, 9);
			void *q = a->realloc_(p, opaque(u));
			REQUIRE(q != nullptr);
			CHECK(first_mismatch(q, u, 9) == u);
			void *r = a->realloc_(q, opaque(n));
			REQUIRE(r != nullptr);
			CHECK(first_mismatch(r, n, 9) == n);
			a->free_(r);
		}
	}
}

/* realloc's shrink below half a small block's class moves the block in
 * realloc itself (api.c), as a string cut to its length after being built
 * in an over-allocated buffer: every length below half of each class size. */
TEST_CASE("realloc shrinking a small block below half moves it and keeps the prefix", "[malloc]")
{
	for (const Api *a : all_apis()) {
		INFO("api: " << a->name);
		for (size_t n : {size_t(64), size_t(100), size_t(256), size_t(1000), size_t(3000)}) {
			size_t u0 = 0;
			for (size_t m = 1; u0 == 0 || m < u0 / 2; m++) {
				void *p = a->malloc_(opaque(n));
				REQUIRE(p != nullptr);
				size_t u = a->usable_(p);
				u0 = u;
				fill(p, u, unsigned(m));
				INFO("realloc " << n << " (usable " << u << ") -> " << m);
				void *q = a->realloc_(p, opaque(m));
				REQUIRE(q != nullptr);
				CHECK(first_mismatch(q, m, unsigned(m)) == m);
				CHECK(a->usable_(q) >= m);
				CHECK(a->usable_(q) < u);
				/* The moved-from block is free: a second free of it
				 * would be reported (test_hardening); q is the live one. */
				fill(q, a->usable_(q), 3);
				a->free_(q);
			}
		}
	}
}

TEST_CASE("reallocarray allocates count * size and keeps contents", "[malloc]")
{
	for (const Api *a : all_apis()) {
		INFO("api: " << a->name);
		void *p = a->reallocarray_(nullptr, opaque<size_t>(10), opaque<size_t>(10));
		REQUIRE(p != nullptr);
		CHECK(a->usable_(p) >= 100);
		fill(p, 100, 11);
		void *q = a->reallocarray_(p, opaque<size_t>(1000), opaque<size_t>(100));
		REQUIRE(q != nullptr);
		CHECK(a->usable_(q) >= 100000);
		CHECK(first_mismatch(q, 100, 11) == 100);
		fill(q, 100000, 12);
		void *r = a->reallocarray_(q, opaque<size_t>(3), opaque<size_t>(7));
		REQUIRE(r != nullptr);
		CHECK(a->usable_(r) >= 21);
		CHECK(first_mismatch(r, 21, 12) == 21);
		void *s = a->reallocarray_(r, opaque<size_t>(1 << 20), opaque<size_t>(6));
		REQUIRE(s != nullptr);
		CHECK(a->usable_(s) >= 6 * MiB);
		CHECK(first_mismatch(s, 21, 12) == 21);
		a->free_(s);
	}
}

TEST_CASE("ebb_free_sized and ebb_free_aligned_sized free the block", "[malloc]")
{
	const size_t sizes[] = {0, 1, 24, 1000, 32768, 40000, 300000, 1 * MiB, 5 * MiB};
	const size_t aligns[] = {16, 64, 4096, 65536, 2 * MiB};
	struct Block {
		void *p;
		size_t n, align;
		int how; /* 0 free_sized, 1 free_aligned_sized */
	};
	std::vector<Block> blocks;
	blocks.reserve(2000);
	size_t total = 0;

	ebb_stats_t before = stats();
	for (size_t n : sizes) {
		int reps = n >= MiB ? 2 : 20;
		for (int i = 0; i < reps; i++) {
			void *p = ebb_malloc(opaque(n));
			REQUIRE(p != nullptr);
			fill(p, n, 5);
			blocks.push_back({p, n, 0, 0});
			total += n;
			p = ebb_calloc(opaque<size_t>(4), opaque(n / 4));
			REQUIRE(p != nullptr);
			blocks.push_back({p, 4 * (n / 4), 0, 0});
			total += 4 * (n / 4);
		}
		for (size_t al : aligns) {
			void *p = ebb_aligned_alloc(opaque(al), opaque(n));
			REQUIRE(p != nullptr);
			CHECK(is_aligned(p, al));
			blocks.push_back({p, n, al, 1});
			total += n;
			void *q = nullptr;
			REQUIRE(ebb_posix_memalign(&q, opaque(al), opaque(n)) == 0);
			CHECK(is_aligned(q, al));
			blocks.push_back({q, n, al, 1});
			total += n;
			q = ebb_memalign(opaque(al), opaque(n));
			REQUIRE(q != nullptr);
			blocks.push_back({q, n, al, 1});
			total += n;
		}
	}
	ebb_stats_t mid = stats();
	for (const Block &b : blocks) {
		if (b.how == 0) ebb_free_sized(b.p, b.n);
		else ebb_free_aligned_sized(b.p, b.align, b.n);
	}
	ebb_stats_t after = stats();
	INFO("before: " << stats_str(before));
	INFO("mid:    " << stats_str(mid));
	INFO("after:  " << stats_str(after));
	CHECK(mid.allocated >= before.allocated + total);
	CHECK(after.allocated + total <= mid.allocated);
}
