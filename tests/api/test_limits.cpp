/* test_limits.cpp: impossible sizes and overflowing products fail cleanly:
 * NULL (or an error number) with errno ENOMEM, never a crash, and a block
 * passed to a failing realloc stays intact. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>

using namespace apitest;

namespace {

const size_t kHuge[] = {
	SIZE_MAX,
	SIZE_MAX - 1,
	SIZE_MAX - 15,   /* overflows when rounded to 16 */
	SIZE_MAX - 4095, /* overflows when rounded to a page */
	SIZE_MAX / 2 + 1,
	(size_t)PTRDIFF_MAX + 1,
	(size_t)PTRDIFF_MAX,
	(size_t)1 << 47,
	(size_t)1 << 62,
};

/* A live block whose contents and usable size must survive failed calls. */
struct Witness {
	const Api *a;
	void *p;
	size_t n, u;
	unsigned seed;
	Witness(const Api *api, size_t size, unsigned s) : a(api), n(size), seed(s)
	{
		p = a->malloc_(opaque(n));
		REQUIRE(p != nullptr);
		u = a->usable_(p);
		fill(p, n, seed);
	}
	void check() const
	{
		CHECK(a->usable_(p) == u);
		CHECK(first_mismatch(p, n, seed) == n);
	}
};

} // namespace

TEST_CASE("sizes near SIZE_MAX fail with NULL and ENOMEM in every allocation function", "[limits]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		Witness small(a, 100, 1), large(a, 200 * KiB, 2), huge(a, 6 * MiB, 3);
		for (size_t n : kHuge) {
			INFO("size " << n);
			errno = 0;
			CHECK(a->malloc_(opaque(n)) == nullptr);
			CHECK(errno == ENOMEM);

			errno = 0;
			CHECK(a->calloc_(opaque<size_t>(1), opaque(n)) == nullptr);
			CHECK(errno == ENOMEM);
			errno = 0;
			CHECK(a->calloc_(opaque(n), opaque<size_t>(1)) == nullptr);
			CHECK(errno == ENOMEM);

			errno = 0;
			CHECK(a->realloc_(nullptr, opaque(n)) == nullptr);
			CHECK(errno == ENOMEM);
			for (const Witness *w : {&small, &large, &huge}) {
				INFO("realloc of a block of " << w->n);
				errno = 0;
				CHECK(a->realloc_(w->p, opaque(n)) == nullptr);
				CHECK(errno == ENOMEM);
				w->check();
				errno = 0;
				CHECK(a->reallocarray_(w->p, opaque(n), opaque<size_t>(1)) == nullptr);
				CHECK(errno == ENOMEM);
				w->check();
			}
			errno = 0;
			CHECK(a->reallocarray_(nullptr, opaque<size_t>(1), opaque(n)) == nullptr);
			CHECK(errno == ENOMEM);

			for (size_t align : {size_t(16), size_t(64), size_t(4096), 2 * MiB}) {
				INFO("alignment " << align);
				void *const sentinel = reinterpret_cast<void *>(uintptr_t(0xbad));
				void *out = sentinel;
				CHECK(a->posix_memalign_(&out, opaque(align), opaque(n)) == ENOMEM);
				CHECK(out == sentinel);
				errno = 0;
				CHECK(a->aligned_alloc_(opaque(align), opaque(n)) == nullptr);
				CHECK(errno == ENOMEM);
				errno = 0;
				CHECK(a->memalign_(opaque(align), opaque(n)) == nullptr);
				CHECK(errno == ENOMEM);
			}
			errno = 0;
			CHECK(a->valloc_(opaque(n)) == nullptr);
			CHECK(errno == ENOMEM);
			errno = 0;
			CHECK(a->pvalloc_(opaque(n)) == nullptr);
			CHECK(errno == ENOMEM);
		}
		small.check();
		large.check();
		huge.check();
		a->free_(small.p);
		a->free_(large.p);
		a->free_(huge.p);
	}
}

TEST_CASE("calloc and reallocarray detect count * size overflow", "[limits]")
{
	struct Pair {
		size_t count, size;
	};
	const Pair pairs[] = {
		{SIZE_MAX, SIZE_MAX},       {SIZE_MAX / 2 + 1, 2},    {2, SIZE_MAX / 2 + 1},
		{(size_t)1 << 32, (size_t)1 << 32}, {SIZE_MAX / 3 + 1, 3}, {65537, SIZE_MAX / 65536},
		{(size_t)1 << 33, (size_t)1 << 31}, {SIZE_MAX, 2},
	};
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		Witness w(a, 1000, 9);
		for (const Pair &pr : pairs) {
			INFO("count " << pr.count << ", size " << pr.size);
			errno = 0;
			CHECK(a->calloc_(opaque(pr.count), opaque(pr.size)) == nullptr);
			CHECK(errno == ENOMEM);
			errno = 0;
			CHECK(a->reallocarray_(nullptr, opaque(pr.count), opaque(pr.size)) == nullptr);
			CHECK(errno == ENOMEM);
			errno = 0;
			CHECK(a->reallocarray_(w.p, opaque(pr.count), opaque(pr.size)) == nullptr);
			CHECK(errno == ENOMEM);
			w.check();
		}
		a->free_(w.p);
	}
}

TEST_CASE("impossible alignments fail without crashing", "[limits]")
{
	const size_t aligns[] = {(size_t)1 << 62, SIZE_MAX / 2 + 1, (size_t)1 << 48};
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t al : aligns) {
			INFO("alignment " << al);
			errno = 0;
			CHECK(a->aligned_alloc_(opaque(al), opaque<size_t>(1)) == nullptr);
			CHECK((errno == ENOMEM || errno == EINVAL));
			errno = 0;
			CHECK(a->memalign_(opaque(al), opaque<size_t>(1)) == nullptr);
			CHECK((errno == ENOMEM || errno == EINVAL));
			void *out = reinterpret_cast<void *>(uintptr_t(0xbad));
			int rc = a->posix_memalign_(&out, opaque(al), opaque<size_t>(1));
			CHECK((rc == ENOMEM || rc == EINVAL));
			CHECK(out == reinterpret_cast<void *>(uintptr_t(0xbad)));
		}
		/* memalign rounds SIZE_MAX up to a power of two: that cannot exist */
		errno = 0;
		CHECK(a->memalign_(opaque<size_t>(SIZE_MAX), opaque<size_t>(1)) == nullptr);
		CHECK((errno == ENOMEM || errno == EINVAL));
		errno = 0;
		CHECK(a->memalign_(opaque<size_t>(SIZE_MAX / 2 + 2), opaque<size_t>(1)) == nullptr);
		CHECK((errno == ENOMEM || errno == EINVAL));
	}
}

TEST_CASE("the allocator keeps working after failed requests", "[limits]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (int i = 0; i < 100; i++) {
			void *bad = a->malloc_(opaque<size_t>(SIZE_MAX - (size_t)i));
			CHECK(bad == nullptr);
			void *p = a->malloc_(opaque<size_t>(64 + (size_t)i * 100));
			REQUIRE(p != nullptr);
			fill(p, 64 + (size_t)i * 100, (unsigned)i);
			CHECK(first_mismatch(p, 64 + (size_t)i * 100, (unsigned)i) == 64 + (size_t)i * 100);
			a->free_(p);
		}
	}
}
