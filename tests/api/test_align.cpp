/* test_align.cpp: posix_memalign, aligned_alloc, memalign, valloc, pvalloc:
 * every power-of-two alignment from 1 byte to 4 MiB (and 16 MiB once), the
 * error cases, and the page-granular functions. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <vector>

using namespace apitest;

namespace {

enum AlignFn { POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN, NUM_ALIGN_FNS };
const char *const kAlignFnName[] = {"posix_memalign", "aligned_alloc", "memalign"};

/* Allocates with one of the aligned functions; NULL only for a failed call. */
void *aligned_with(const Api *a, AlignFn fn, size_t align, size_t size)
{
	switch (fn) {
	case POSIX_MEMALIGN: {
		void *p = nullptr;
		int rc = a->posix_memalign_(&p, opaque(align), opaque(size));
		return rc == 0 ? p : nullptr;
	}
	case ALIGNED_ALLOC:
		return a->aligned_alloc_(opaque(align), opaque(size));
	default:
		return a->memalign_(opaque(align), opaque(size));
	}
}

void check_aligned_sweep(size_t align, const std::vector<size_t> &sizes)
{
	for (const Api *a : all_apis()) {
		for (int fn = 0; fn < NUM_ALIGN_FNS; fn++) {
			/* posix_memalign wants a multiple of sizeof(void *) */
			if (fn == POSIX_MEMALIGN && align < sizeof(void *)) continue;
			INFO("api " << a->name << ", " << kAlignFnName[fn] << ", alignment " << align);
			struct Live {
				void *p;
				size_t n;
				unsigned seed;
			};
			std::vector<Live> live;
			unsigned seed = (unsigned)(align * 3 + (size_t)fn);
			/* all sizes live at once, so neighbours share spans and superblocks */
			for (size_t n : sizes) {
				INFO("size " << n);
				void *p = aligned_with(a, (AlignFn)fn, align, n);
				REQUIRE(p != nullptr);
				CHECK(is_aligned(p, align));
				size_t u = a->usable_(p);
				CHECK(u >= n);
				fill(p, u, seed);
				live.push_back({p, u, seed++});
			}
			for (size_t i = 0; i < live.size(); i++) {
				INFO("size " << sizes[i]);
				CHECK(first_mismatch(live[i].p, live[i].n, live[i].seed) == live[i].n);
				/* alternate plain free and the sized aligned free */
				if (i & 1) ebb_free_aligned_sized(live[i].p, align, sizes[i]);
				else a->free_(live[i].p);
			}
		}
	}
}

std::vector<size_t> sizes_for(size_t align)
{
	std::vector<size_t> s = {0, 1, align - 1, align, align + 1, 3000, 3 * MiB};
	if (align == 1) s[2] = 2; /* align - 1 == 0 is already there */
	return s;
}

} // namespace

TEST_CASE("every power-of-two alignment from 1 byte to 4 MiB works for all sizes", "[align]")
{
	for (size_t align = 1; align <= 4 * MiB; align <<= 1) check_aligned_sweep(align, sizes_for(align));
}

TEST_CASE("a 16 MiB alignment works", "[align]")
{
	check_aligned_sweep(16 * MiB, {1, 16 * MiB + 1});
}

TEST_CASE("aligned blocks of many sizes interleaved with malloc stay aligned and disjoint", "[align]")
{
	Rng rng(7);
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		struct Live {
			void *p;
			size_t n;
			unsigned seed;
		};
		std::vector<Live> live;
		for (int i = 0; i < 600; i++) {
			size_t align = (size_t)1 << rng.below(17); /* up to 64 KiB */
			size_t n = rng.log_size(40000);
			void *p = (i % 3 == 0) ? a->malloc_(n) : a->aligned_alloc_(align, n);
			REQUIRE(p != nullptr);
			if (i % 3 != 0) CHECK(is_aligned(p, align));
			fill(p, n, (unsigned)i);
			live.push_back({p, n, (unsigned)i});
			if (rng.below(3) == 0) {
				size_t k = rng.below(live.size());
				CHECK(first_mismatch(live[k].p, live[k].n, live[k].seed) == live[k].n);
				a->free_(live[k].p);
				live[k] = live.back();
				live.pop_back();
			}
		}
		for (Live &l : live) {
			CHECK(first_mismatch(l.p, l.n, l.seed) == l.n);
			a->free_(l.p);
		}
	}
}

TEST_CASE("posix_memalign rejects bad alignments with EINVAL and leaves *out alone", "[align]")
{
	void *const sentinel = reinterpret_cast<void *>(uintptr_t(0x5eed));
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t align : {size_t(0), size_t(1), size_t(2), size_t(4), size_t(3), size_t(12), size_t(24),
				     size_t(48), size_t(100), sizeof(void *) * 3, size_t(4096 + 8), 3 * MiB}) {
			INFO("alignment " << align);
			void *out = sentinel;
			CHECK(a->posix_memalign_(&out, opaque(align), opaque<size_t>(64)) == EINVAL);
			CHECK(out == sentinel);
		}
		/* size 0 with a good alignment: 0, and a pointer that free accepts */
		void *out = sentinel;
		CHECK(a->posix_memalign_(&out, opaque<size_t>(64), opaque<size_t>(0)) == 0);
		CHECK(out != sentinel);
		a->free_(out);
		/* sizeof(void *) itself is fine */
		out = sentinel;
		REQUIRE(a->posix_memalign_(&out, opaque(sizeof(void *)), opaque<size_t>(10)) == 0);
		CHECK(out != sentinel);
		CHECK(out != nullptr);
		CHECK(is_aligned(out, sizeof(void *)));
		a->free_(out);
	}
}

TEST_CASE("aligned_alloc rejects alignments that are not powers of two with NULL and EINVAL", "[align]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t align : {size_t(0), size_t(3), size_t(5), size_t(24), size_t(48), size_t(100),
				     size_t(4096 + 16), 3 * MiB}) {
			INFO("alignment " << align);
			errno = 0;
			void *p = a->aligned_alloc_(opaque(align), opaque<size_t>(128));
			CHECK(p == nullptr);
			CHECK(errno == EINVAL);
			if (p) a->free_(p);
		}
		/* the size need not be a multiple of the alignment */
		void *p = a->aligned_alloc_(opaque<size_t>(256), opaque<size_t>(100));
		REQUIRE(p != nullptr);
		CHECK(is_aligned(p, 256));
		a->free_(p);
	}
}

TEST_CASE("memalign rounds an alignment that is not a power of two up to one", "[align]")
{
	struct Case {
		size_t asked, expect;
	};
	const Case cases[] = {{0, 16},     {3, 4},      {24, 32},    {48, 64}, {100, 128},
			      {4097, 8192}, {MiB + 1, 2 * MiB}, {3 * MiB, 4 * MiB}};
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (const Case &c : cases) {
			INFO("alignment " << c.asked);
			void *p = a->memalign_(opaque(c.asked), opaque<size_t>(100));
			REQUIRE(p != nullptr);
			CHECK(is_aligned(p, c.expect));
			CHECK(a->usable_(p) >= 100);
			memset(p, 1, 100);
			a->free_(p);
		}
	}
}

TEST_CASE("valloc returns page-aligned blocks", "[align]")
{
	const size_t ps = page_size();
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t n : {size_t(1), size_t(100), ps - 1, ps, ps + 1, size_t(100000), 5 * MiB}) {
			INFO("size " << n);
			void *p = a->valloc_(opaque(n));
			REQUIRE(p != nullptr);
			CHECK(is_aligned(p, ps));
			size_t u = a->usable_(p);
			CHECK(u >= n);
			fill(p, u, 77);
			CHECK(first_mismatch(p, u, 77) == u);
			a->free_(p);
		}
		void *p = a->valloc_(opaque<size_t>(0));
		if (p) CHECK(is_aligned(p, ps));
		a->free_(p);
	}
}

TEST_CASE("pvalloc returns page-aligned whole pages, and pvalloc(0) a page", "[align]")
{
	const size_t ps = page_size();
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t n : {size_t(0), size_t(1), size_t(100), ps - 1, ps, ps + 1, 3 * ps + 7, size_t(100000),
				 5 * MiB + 1}) {
			INFO("size " << n);
			void *p = a->pvalloc_(opaque(n));
			REQUIRE(p != nullptr);
			CHECK(is_aligned(p, ps));
			size_t u = a->usable_(p);
			size_t pages = n == 0 ? ps : (n + ps - 1) / ps * ps;
			CHECK(u >= pages);
			CHECK(u % ps == 0);
			fill(p, u, 78);
			CHECK(first_mismatch(p, u, 78) == u);
			a->free_(p);
		}
	}
}
