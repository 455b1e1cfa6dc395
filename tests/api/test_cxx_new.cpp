/* test_cxx_new.cpp (EBB_OVERRIDE builds only): every standard form of the
 * global operator new/delete comes from ebbmalloc and works: plain, array,
 * nothrow, sized, aligned (std::align_val_t), aligned nothrow, sized aligned;
 * failures throw std::bad_alloc after calling the new-handler, and nothrow
 * forms return nullptr. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <dlfcn.h>
#include <memory>
#include <new>
#include <string>
#include <vector>

#if !EBB_TEST_OVERRIDE
#error "test_cxx_new.cpp is built only with EBB_OVERRIDE=ON"
#endif

using namespace apitest;

namespace {

const void *object_of(const void *addr, std::string *name)
{
	Dl_info info;
	memset(&info, 0, sizeof info);
	if (!dladdr(addr, &info)) return nullptr;
	*name = info.dli_fname ? info.dli_fname : "?";
	return info.dli_fbase;
}

/* A size no allocator can serve; opaque so the call is really made. */
size_t impossible() { return opaque(SIZE_MAX / 2); }

int g_handler_calls = 0;
int g_handler_limit = 0;
void handler_uninstalls()
{
	g_handler_calls++;
	std::set_new_handler(nullptr);
}
void handler_throws_after_limit()
{
	if (++g_handler_calls >= g_handler_limit) throw std::bad_alloc();
}

struct HandlerGuard {
	std::new_handler old;
	explicit HandlerGuard(std::new_handler h) : old(std::set_new_handler(h)) { g_handler_calls = 0; }
	~HandlerGuard() { std::set_new_handler(old); }
};

void use(void *p)
{
	/* keeps a pointer alive as far as the optimizer knows */
	asm volatile("" : : "r"(p) : "memory");
}

struct alignas(4096) PageAligned {
	char bytes[4096];
};
struct alignas(256) Aligned256 {
	char bytes[300];
};

} // namespace

TEST_CASE("operator new and delete in every form are ebbmalloc's", "[cxx]")
{
	std::string ebb_name;
	const void *ebb = object_of(reinterpret_cast<void *>(&ebb_malloc), &ebb_name);
	REQUIRE(ebb != nullptr);
	INFO("ebb_malloc is in " << ebb_name);
	const char *const syms[] = {
		"_Znwm",                       /* new(size_t) */
		"_Znam",                       /* new[](size_t) */
		"_ZnwmRKSt9nothrow_t",         /* new(size_t, nothrow) */
		"_ZnamRKSt9nothrow_t",         /* new[](size_t, nothrow) */
		"_ZnwmSt11align_val_t",        /* new(size_t, align_val_t) */
		"_ZnamSt11align_val_t",        /* new[](size_t, align_val_t) */
		"_ZnwmSt11align_val_tRKSt9nothrow_t", /* new(size_t, align_val_t, nothrow) */
		"_ZnamSt11align_val_tRKSt9nothrow_t", /* new[](size_t, align_val_t, nothrow) */
		"_ZdlPv",                      /* delete(void*) */
		"_ZdaPv",                      /* delete[](void*) */
		"_ZdlPvRKSt9nothrow_t",        /* delete(void*, nothrow) */
		"_ZdaPvRKSt9nothrow_t",        /* delete[](void*, nothrow) */
		"_ZdlPvm",                     /* delete(void*, size_t) */
		"_ZdaPvm",                     /* delete[](void*, size_t) */
		"_ZdlPvSt11align_val_t",       /* delete(void*, align_val_t) */
		"_ZdaPvSt11align_val_t",       /* delete[](void*, align_val_t) */
		"_ZdlPvSt11align_val_tRKSt9nothrow_t", /* delete(void*, align_val_t, nothrow) */
		"_ZdaPvSt11align_val_tRKSt9nothrow_t", /* delete[](void*, align_val_t, nothrow) */
		"_ZdlPvmSt11align_val_t",      /* delete(void*, size_t, align_val_t) */
		"_ZdaPvmSt11align_val_t",      /* delete[](void*, size_t, align_val_t) */
	};
	for (const char *sym : syms) {
		INFO("symbol " << sym);
		void *addr = dlsym(RTLD_DEFAULT, sym);
		REQUIRE(addr != nullptr);
		std::string where;
		const void *obj = object_of(addr, &where);
		INFO("found in " << where);
		CHECK(obj == ebb);
	}
}

TEST_CASE("plain, array, nothrow and sized new/delete allocate from ebbmalloc", "[cxx]")
{
	for (size_t n : {size_t(0), size_t(1), size_t(100), size_t(5000), size_t(40000), size_t(300000), 5 * MiB}) {
		INFO("size " << n);
		const size_t want = n ? n : 1;
		void *p[6];
		p[0] = ::operator new(opaque(n));
		p[1] = ::operator new[](opaque(n));
		p[2] = ::operator new(opaque(n), std::nothrow);
		p[3] = ::operator new[](opaque(n), std::nothrow);
		p[4] = ::operator new(opaque(n));
		p[5] = ::operator new[](opaque(n));
		for (int i = 0; i < 6; i++) {
			REQUIRE(p[i] != nullptr);
			CHECK(is_aligned(p[i], __STDCPP_DEFAULT_NEW_ALIGNMENT__ < want ? __STDCPP_DEFAULT_NEW_ALIGNMENT__ : 1));
			CHECK(ebb_malloc_usable_size(p[i]) >= want);
			fill(p[i], n, (unsigned)i);
		}
		for (int i = 0; i < 6; i++) CHECK(first_mismatch(p[i], n, (unsigned)i) == n);
		::operator delete(p[0]);
		::operator delete[](p[1]);
		::operator delete(p[2], std::nothrow);
		::operator delete[](p[3], std::nothrow);
		::operator delete(p[4], n);
		::operator delete[](p[5], n);
	}
	/* new's bytes show up in ebbmalloc's statistics */
	std::vector<char *> v;
	v.reserve(1000);
	ebb_stats_t before = stats();
	for (int i = 0; i < 1000; i++) v.push_back(new char[opaque<size_t>(1000)]);
	ebb_stats_t after = stats();
	CHECK(after.allocated >= before.allocated + 1000 * 1000);
	for (char *c : v) delete[] c;
	ebb_stats_t freed = stats();
	CHECK(freed.allocated + 1000 * 1000 <= after.allocated);
}

TEST_CASE("aligned new/delete in every form, alignments 16 bytes to 1 MiB", "[cxx]")
{
	for (size_t al = 16; al <= MiB; al <<= 1) {
		const std::align_val_t a{al};
		for (size_t n : {size_t(1), al, 3 * al + 1, size_t(100000)}) {
			INFO("alignment " << al << ", size " << n);
			void *p[10];
			p[0] = ::operator new(opaque(n), a);
			p[1] = ::operator new[](opaque(n), a);
			p[2] = ::operator new(opaque(n), a, std::nothrow);
			p[3] = ::operator new[](opaque(n), a, std::nothrow);
			p[4] = ::operator new(opaque(n), a);
			p[5] = ::operator new[](opaque(n), a);
			p[6] = ::operator new(opaque(n), a, std::nothrow);
			p[7] = ::operator new[](opaque(n), a, std::nothrow);
			p[8] = ::operator new(opaque(n), a);
			p[9] = ::operator new[](opaque(n), a);
			for (int i = 0; i < 10; i++) {
				REQUIRE(p[i] != nullptr);
				CHECK(is_aligned(p[i], al));
				CHECK(ebb_malloc_usable_size(p[i]) >= n);
				fill(p[i], n, (unsigned)(i + al));
			}
			for (int i = 0; i < 10; i++) CHECK(first_mismatch(p[i], n, (unsigned)(i + al)) == n);
			::operator delete(p[0], a);
			::operator delete[](p[1], a);
			::operator delete(p[2], a, std::nothrow);
			::operator delete[](p[3], a, std::nothrow);
			::operator delete(p[4], n, a);
			::operator delete[](p[5], n, a);
			::operator delete(p[6], n, a); /* nothrow-allocated, sized-freed */
			::operator delete[](p[7], a);
			::operator delete(p[8], a, std::nothrow);
			::operator delete[](p[9], a, std::nothrow);
		}
	}
}

TEST_CASE("new and delete expressions use the operators, over-aligned types included", "[cxx]")
{
	ebb_stats_t before = stats();
	PageAligned *pa = new PageAligned;
	use(pa);
	CHECK(is_aligned(pa, 4096));
	CHECK(ebb_malloc_usable_size(pa) >= sizeof(PageAligned));
	memset(pa->bytes, 1, sizeof pa->bytes);
	PageAligned *arr = new PageAligned[5];
	use(arr);
	CHECK(is_aligned(arr, 4096));
	Aligned256 *a256 = new Aligned256[7];
	use(a256);
	CHECK(is_aligned(a256, 256));
	std::unique_ptr<Aligned256> one(new Aligned256);
	CHECK(is_aligned(one.get(), 256));
	std::vector<double> vec(200000, 1.5);
	CHECK(ebb_malloc_usable_size(vec.data()) >= 200000 * sizeof(double));
	std::string s(100000, 'x');
	CHECK(ebb_malloc_usable_size(s.data()) >= 100000);
	ebb_stats_t mid = stats();
	CHECK(mid.allocated >= before.allocated + sizeof(PageAligned) * 6 + sizeof(Aligned256) * 8 +
				       200000 * sizeof(double) + 100000);
	delete pa;
	delete[] arr;
	delete[] a256;
}

TEST_CASE("a failed new throws std::bad_alloc", "[cxx]")
{
	CHECK_THROWS_AS(use(::operator new(impossible())), std::bad_alloc);
	CHECK_THROWS_AS(use(::operator new[](impossible())), std::bad_alloc);
	CHECK_THROWS_AS(use(::operator new(impossible(), std::align_val_t(64))), std::bad_alloc);
	CHECK_THROWS_AS(use(::operator new[](impossible(), std::align_val_t(4096))), std::bad_alloc);
	CHECK_THROWS_AS(use(::operator new(opaque<size_t>(SIZE_MAX))), std::bad_alloc);
	CHECK_THROWS_AS(use(::operator new(opaque<size_t>(1) << 47)), std::bad_alloc);
	/* the allocator works afterwards */
	void *p = ::operator new(opaque<size_t>(64));
	CHECK(p != nullptr);
	::operator delete(p);
}

TEST_CASE("nothrow new returns nullptr on failure", "[cxx]")
{
	HandlerGuard g(nullptr);
	CHECK(::operator new(impossible(), std::nothrow) == nullptr);
	CHECK(::operator new[](impossible(), std::nothrow) == nullptr);
	CHECK(::operator new(impossible(), std::align_val_t(64), std::nothrow) == nullptr);
	CHECK(::operator new[](impossible(), std::align_val_t(1 << 20), std::nothrow) == nullptr);
	CHECK(::operator new(opaque<size_t>(SIZE_MAX), std::nothrow) == nullptr);
}

TEST_CASE("the new-handler is called before new fails", "[cxx]")
{
	SECTION("a handler that uninstalls itself: called once, then bad_alloc")
	{
		using Fn = void *(*)();
		const Fn forms[] = {
			[]() { return ::operator new(impossible()); },
			[]() { return ::operator new[](impossible()); },
			[]() { return ::operator new(impossible(), std::align_val_t(64)); },
			[]() { return ::operator new[](impossible(), std::align_val_t(8192)); },
		};
		int i = 0;
		for (Fn f : forms) {
			INFO("form " << i++);
			HandlerGuard g(handler_uninstalls);
			CHECK_THROWS_AS(use(f()), std::bad_alloc);
			CHECK(g_handler_calls == 1);
			CHECK(std::get_new_handler() == nullptr);
		}
	}
	SECTION("a handler that throws after three calls: called three times")
	{
		HandlerGuard g(handler_throws_after_limit);
		g_handler_limit = 3;
		CHECK_THROWS_AS(use(::operator new(impossible())), std::bad_alloc);
		CHECK(g_handler_calls == 3);
		g_handler_calls = 0;
		CHECK_THROWS_AS(use(::operator new(impossible(), std::align_val_t(256))), std::bad_alloc);
		CHECK(g_handler_calls == 3);
	}
	SECTION("nothrow new calls the handler too, then returns nullptr")
	{
		{
			HandlerGuard g(handler_uninstalls);
			CHECK(::operator new(impossible(), std::nothrow) == nullptr);
			CHECK(g_handler_calls == 1);
		}
		{
			HandlerGuard g(handler_throws_after_limit);
			g_handler_limit = 2;
			CHECK(::operator new[](impossible(), std::nothrow) == nullptr);
			CHECK(g_handler_calls == 2);
		}
		{
			HandlerGuard g(handler_uninstalls);
			CHECK(::operator new(impossible(), std::align_val_t(128), std::nothrow) == nullptr);
			CHECK(g_handler_calls == 1);
		}
	}
	SECTION("a handler is not called when new succeeds")
	{
		HandlerGuard g(handler_uninstalls);
		void *p = ::operator new(opaque<size_t>(1000));
		CHECK(g_handler_calls == 0);
		::operator delete(p);
	}
}
