/* test_override.cpp (EBB_OVERRIDE builds only): the standard names and the
 * glibc __libc_* aliases are ebbmalloc's, and memory from any allocation
 * function can be freed by free, ebb_free and __libc_free. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <dlfcn.h>
#include <functional>
#include <malloc.h>
#include <string>
#include <vector>

#if !EBB_TEST_OVERRIDE
#error "test_override.cpp is built only with EBB_OVERRIDE=ON"
#endif

extern "C" {
void *__libc_malloc(size_t);
void __libc_free(void *);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
}

using namespace apitest;

namespace {

/* dladdr's base address of the object that defines addr. */
const void *object_of(const void *addr, std::string *name = nullptr)
{
	Dl_info info;
	memset(&info, 0, sizeof info);
	if (!dladdr(addr, &info)) return nullptr;
	if (name) *name = info.dli_fname ? info.dli_fname : "?";
	return info.dli_fbase;
}

} // namespace

TEST_CASE("the standard allocation names and glibc aliases resolve to ebbmalloc", "[override]")
{
	std::string ebb_name;
	const void *ebb = object_of(reinterpret_cast<void *>(&ebb_malloc), &ebb_name);
	REQUIRE(ebb != nullptr);
	INFO("ebb_malloc is in " << ebb_name);
	for (const char *sym : {"malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign",
				"aligned_alloc", "memalign", "valloc", "pvalloc", "malloc_usable_size", "malloc_trim",
				"__libc_malloc", "__libc_free", "__libc_calloc", "__libc_realloc", "__libc_memalign"}) {
		INFO("symbol " << sym);
		void *addr = dlsym(RTLD_DEFAULT, sym);
		REQUIRE(addr != nullptr);
		std::string where;
		const void *obj = object_of(addr, &where);
		INFO("found in " << where);
		CHECK(obj == ebb);
	}
}

TEST_CASE("malloc and ebb_malloc are one allocator", "[override]")
{
	for (size_t n : {size_t(1), size_t(100), size_t(5000), size_t(40000), size_t(300000), 5 * MiB}) {
		INFO("size " << n);
		void *p = malloc(opaque(n));
		REQUIRE(p != nullptr);
		CHECK(ebb_malloc_usable_size(p) == malloc_usable_size(p));
		CHECK(ebb_malloc_usable_size(p) >= n);
		fill(p, n, 1);
		void *q = ebb_realloc(p, n * 2); /* ebb_realloc of a malloc block */
		REQUIRE(q != nullptr);
		CHECK(first_mismatch(q, n, 1) == n);
		void *r = realloc(q, n + 7); /* realloc of an ebb block */
		REQUIRE(r != nullptr);
		CHECK(first_mismatch(r, n, 1) == n);
		CHECK(malloc_usable_size(r) == ebb_malloc_usable_size(r));
		ebb_free(r);

		void *s = ebb_malloc(opaque(n));
		REQUIRE(s != nullptr);
		CHECK(malloc_usable_size(s) == ebb_malloc_usable_size(s));
		free(s);
	}
	/* malloc's bytes show up in ebbmalloc's statistics */
	std::vector<void *> v;
	v.reserve(1000);
	ebb_stats_t before = stats();
	for (int i = 0; i < 1000; i++) v.push_back(malloc(opaque<size_t>(1000)));
	ebb_stats_t after = stats();
	for (void *p : v) REQUIRE(p != nullptr);
	CHECK(after.allocated >= before.allocated + 1000 * 1000);
	for (void *p : v) free(p);
	int trimmed = malloc_trim(0);
	CHECK((trimmed == 0 || trimmed == 1));
}

TEST_CASE("the glibc __libc_* aliases work and mix with malloc and free", "[override]")
{
	for (size_t n : {size_t(10), size_t(1000), size_t(50000), 6 * MiB}) {
		INFO("size " << n);
		void *p = __libc_malloc(opaque(n));
		REQUIRE(p != nullptr);
		CHECK(ebb_malloc_usable_size(p) >= n);
		fill(p, n, 2);
		p = __libc_realloc(p, opaque(n * 3));
		REQUIRE(p != nullptr);
		CHECK(first_mismatch(p, n, 2) == n);
		free(p); /* __libc_malloc -> free */

		p = malloc(opaque(n));
		REQUIRE(p != nullptr);
		memset(p, 0xEE, n);
		__libc_free(p); /* malloc -> __libc_free */

		p = __libc_calloc(opaque<size_t>(1), opaque(n));
		REQUIRE(p != nullptr);
		CHECK(first_nonzero(p, n) == n);
		ebb_free(p); /* __libc_calloc -> ebb_free */

		p = __libc_realloc(nullptr, opaque(n));
		REQUIRE(p != nullptr);
		CHECK(ebb_malloc_usable_size(p) >= n);
		CHECK(__libc_realloc(p, opaque<size_t>(0)) == nullptr); /* frees */

		for (size_t al : {size_t(16), size_t(256), size_t(4096), 2 * MiB}) {
			INFO("alignment " << al);
			p = __libc_memalign(opaque(al), opaque(n));
			REQUIRE(p != nullptr);
			CHECK(is_aligned(p, al));
			CHECK(ebb_malloc_usable_size(p) >= n);
			memset(p, 1, n);
			__libc_free(p);
		}
	}
	std::vector<void *> v;
	v.reserve(100);
	ebb_stats_t before = stats();
	for (int i = 0; i < 100; i++) v.push_back(__libc_malloc(opaque<size_t>(10000)));
	ebb_stats_t after = stats();
	for (void *p : v) REQUIRE(p != nullptr);
	CHECK(after.allocated >= before.allocated + 100 * 10000);
	for (void *p : v) __libc_free(p);
}

TEST_CASE("memory from every allocation function can be freed by free, ebb_free and __libc_free",
	  "[override]")
{
	struct Alloc {
		const char *name;
		std::function<void *(size_t)> fn;
		bool sized; /* may be freed with ebb_free_sized(p, n) */
	};
	const std::vector<Alloc> allocs = {
		{"malloc", [](size_t n) { return malloc(n); }, true},
		{"calloc", [](size_t n) { return calloc(1, n); }, true},
		{"realloc(NULL)", [](size_t n) { return realloc(nullptr, n); }, true},
		{"realloc(grow)", [](size_t n) { return realloc(malloc(n / 2 + 1), n); }, true},
		{"reallocarray", [](size_t n) { return reallocarray(nullptr, n, 1); }, true},
		{"posix_memalign",
		 [](size_t n) {
			 void *p = nullptr;
			 return posix_memalign(&p, 64, n) == 0 ? p : nullptr;
		 },
		 false},
		{"aligned_alloc", [](size_t n) { return aligned_alloc(128, n); }, false},
		{"memalign", [](size_t n) { return memalign(4096, n); }, false},
		{"valloc", [](size_t n) { return valloc(n); }, false},
		{"pvalloc", [](size_t n) { return pvalloc(n); }, false},
		{"__libc_malloc", [](size_t n) { return __libc_malloc(n); }, true},
		{"__libc_calloc", [](size_t n) { return __libc_calloc(n, 1); }, true},
		{"__libc_realloc", [](size_t n) { return __libc_realloc(nullptr, n); }, true},
		{"__libc_memalign", [](size_t n) { return __libc_memalign(256, n); }, false},
		{"ebb_malloc", [](size_t n) { return ebb_malloc(n); }, true},
		{"ebb_calloc", [](size_t n) { return ebb_calloc(n, 1); }, true},
		{"ebb_realloc", [](size_t n) { return ebb_realloc(nullptr, n); }, true},
		{"ebb_reallocarray", [](size_t n) { return ebb_reallocarray(nullptr, 1, n); }, true},
		{"ebb_posix_memalign",
		 [](size_t n) {
			 void *p = nullptr;
			 return ebb_posix_memalign(&p, 32, n) == 0 ? p : nullptr;
		 },
		 false},
		{"ebb_aligned_alloc", [](size_t n) { return ebb_aligned_alloc(1024, n); }, false},
		{"ebb_memalign", [](size_t n) { return ebb_memalign(65536, n); }, false},
		{"ebb_valloc", [](size_t n) { return ebb_valloc(n); }, false},
		{"ebb_pvalloc", [](size_t n) { return ebb_pvalloc(n); }, false},
	};
	enum { FREE, EBB_FREE, LIBC_FREE, EBB_FREE_SIZED, REALLOC_THEN_FREE, NUM_FREERS };
	const char *const freer_name[] = {"free", "ebb_free", "__libc_free", "ebb_free_sized",
					  "realloc then free"};
	struct Live {
		void *p;
		size_t n;
		int freer;
	};
	const size_t kChecked = 64 * KiB; /* bytes written and checked per block */
	std::vector<Live> live;
	live.reserve(allocs.size() * NUM_FREERS * 4);
	size_t total = 0;
	ebb_stats_t before = stats();
	for (const Alloc &al : allocs) {
		for (size_t n : {size_t(24), size_t(5000), size_t(100000), 5 * MiB}) {
			for (int f = 0; f < NUM_FREERS; f++) {
				if (f == EBB_FREE_SIZED && !al.sized) continue;
				INFO(al.name << "(" << n << ")");
				void *p = al.fn(n);
				REQUIRE(p != nullptr);
				CHECK(ebb_malloc_usable_size(p) >= n);
				fill(p, std::min(n, kChecked), (unsigned)n);
				live.push_back({p, n, f});
				total += n;
			}
		}
	}
	ebb_stats_t mid = stats();
	for (Live &l : live) {
		INFO("freed by " << freer_name[l.freer] << ", size " << l.n);
		const size_t checked = std::min(l.n, kChecked);
		CHECK(first_mismatch(l.p, checked, (unsigned)l.n) == checked);
		switch (l.freer) {
		case FREE: free(l.p); break;
		case EBB_FREE: ebb_free(l.p); break;
		case LIBC_FREE: __libc_free(l.p); break;
		case EBB_FREE_SIZED: ebb_free_sized(l.p, l.n); break;
		default: {
			void *q = realloc(l.p, l.n * 2);
			REQUIRE(q != nullptr);
			CHECK(first_mismatch(q, checked, (unsigned)l.n) == checked);
			free(q);
		}
		}
	}
	ebb_stats_t after = stats();
	INFO("before: " << stats_str(before));
	INFO("mid:    " << stats_str(mid));
	INFO("after:  " << stats_str(after));
	CHECK(mid.allocated >= before.allocated + total);
	CHECK(after.allocated + total <= mid.allocated);
}
