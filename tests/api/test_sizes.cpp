/* test_sizes.cpp: every size class and a log-spaced set up to 256 MiB gets a
 * block at least that big that can be written entirely, and live blocks never
 * overlap. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

using namespace apitest;

TEST_CASE("every size up to 64 KiB: usable size at least the size, whole block writable", "[sizes]")
{
	std::vector<size_t> sizes;
	for (size_t n = 0; n <= 4096; n++) sizes.push_back(n);
	for (size_t n = 4097; n <= 64 * KiB; n += 13) sizes.push_back(n);
	for (size_t k = 1; k <= 16; k++) { /* around every multiple of 4 KiB */
		sizes.push_back(k * 4096 - 1);
		sizes.push_back(k * 4096);
		sizes.push_back(k * 4096 + 1);
	}
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t n : sizes) {
			void *p = a->malloc_(opaque(n));
			if (!p) FAIL("malloc(" << n << ") returned NULL");
			size_t u = a->usable_(p);
			if (u < n) FAIL("usable size " << u << " < " << n);
			memset(p, 0x5A, u);
			unsigned char *c = static_cast<unsigned char *>(p);
			if (u && (c[0] != 0x5A || c[u - 1] != 0x5A)) FAIL("block of size " << n << " not writable");
			a->free_(p);
		}
		/* the same again with several blocks of each size live */
		for (size_t n = 0; n <= 64 * KiB; n += (n < 1024 ? 1 : 97)) {
			void *v[4];
			for (int i = 0; i < 4; i++) {
				v[i] = a->malloc_(opaque(n));
				if (!v[i]) FAIL("malloc(" << n << ") returned NULL");
				memset(v[i], i, a->usable_(v[i]));
			}
			for (int i = 0; i < 4; i++) {
				size_t u = a->usable_(v[i]);
				const unsigned char *c = static_cast<const unsigned char *>(v[i]);
				if (u && (c[0] != i || c[u - 1] != i || c[u / 2] != i))
					FAIL("blocks of size " << n << " overlap");
				a->free_(v[i]);
			}
		}
	}
}

TEST_CASE("log-spaced sizes up to 256 MiB: usable size at least the size, whole block writable", "[sizes]")
{
	/* Every power of two from 64 KiB, with its neighbours up to 16 MiB (the
	 * bigger ones cost page faults and nothing new). With EBB_OVERRIDE the
	 * standard names, the same code path, stop at 16 MiB too. */
	std::vector<size_t> sizes;
	for (unsigned k = 16; k <= 28; k++) {
		size_t b = (size_t)1 << k;
		if (k <= 24) {
			for (size_t n : {b - 1, b, b + 1, b + b / 2}) sizes.push_back(n);
		} else {
			sizes.push_back(k == 28 ? b : b + 4096 + 1);
		}
	}
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t n : sizes) {
			if (a != &ebb_api() && n > 16 * MiB) continue;
			INFO("size " << n);
			void *p = a->malloc_(opaque(n));
			REQUIRE(p != nullptr);
			CHECK(is_aligned(p, 16));
			size_t u = a->usable_(p);
			CHECK(u >= n);
			memset(p, 0xC3, u);
			const unsigned char *c = static_cast<const unsigned char *>(p);
			CHECK(c[0] == 0xC3);
			CHECK(c[u - 1] == 0xC3);
			a->free_(p);
		}
		/* calloc of a big one: zero, sampled on every page */
		size_t n = 64 * MiB + 1;
		unsigned char *c = static_cast<unsigned char *>(a->calloc_(opaque(n), opaque<size_t>(1)));
		REQUIRE(c != nullptr);
		bool zero = true;
		for (size_t off = 0; off < n; off += 4096) zero &= c[off] == 0;
		zero &= c[n - 1] == 0;
		CHECK(zero);
		a->free_(c);
	}
}

TEST_CASE("live blocks of random sizes never overlap", "[sizes]")
{
	struct Live {
		uintptr_t start, end; /* [start, start + usable) */
		size_t n;
		unsigned seed;
		const Api *api;
		int kind; /* 0 malloc, 1 calloc, 2 aligned_alloc, 3 realloc */
	};
	std::vector<const Api *> apis = all_apis();
	Rng rng(2024);
	std::vector<Live> live;
	live.reserve(8000);
	unsigned seed = 1;
	for (int i = 0; i < 6000; i++) {
		const Api *a = apis[rng.below(apis.size())];
		size_t n = rng.below(200) == 0 ? rng.log_size(8 * MiB) : rng.log_size(64 * KiB);
		int kind = (int)rng.below(4);
		void *p = nullptr;
		switch (kind) {
		case 0: p = a->malloc_(n); break;
		case 1: p = a->calloc_(1, n); break;
		case 2: p = a->aligned_alloc_((size_t)1 << rng.below(13), n); break;
		default: p = n ? a->realloc_(a->malloc_(n / 2 + 1), n) : a->malloc_(0); break;
		}
		INFO("api " << a->name << ", kind " << kind << ", size " << n);
		REQUIRE(p != nullptr);
		size_t u = a->usable_(p);
		REQUIRE(u >= n);
		fill(p, u, seed);
		live.push_back({(uintptr_t)p, (uintptr_t)p + u, u, seed++, a, kind});
		/* free one in four, so later blocks reuse freed space */
		if (rng.below(4) == 0) {
			size_t k = rng.below(live.size());
			REQUIRE(first_mismatch((void *)live[k].start, live[k].n, live[k].seed) == live[k].n);
			live[k].api->free_((void *)live[k].start);
			live[k] = live.back();
			live.pop_back();
		}
	}
	std::sort(live.begin(), live.end(), [](const Live &x, const Live &y) { return x.start < y.start; });
	size_t overlaps = 0, corrupt = 0;
	for (size_t i = 0; i < live.size(); i++) {
		if (i + 1 < live.size() && live[i].end > live[i + 1].start) {
			if (overlaps++ < 5)
				UNSCOPED_INFO("overlap: [" << (void *)live[i].start << ", +" << live[i].n << ") and ["
						       << (void *)live[i + 1].start << ", +" << live[i + 1].n << ")");
		}
		if (first_mismatch((void *)live[i].start, live[i].n, live[i].seed) != live[i].n) corrupt++;
	}
	CHECK(overlaps == 0);
	CHECK(corrupt == 0);
	for (Live &l : live) l.api->free_((void *)l.start);
}
