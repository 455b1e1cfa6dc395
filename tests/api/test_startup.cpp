/* test_startup.cpp: allocations before main and after it. The program's own
 * constructor (priority 101, before C++ static initializers) allocates with
 * the standard names first (EBB_OVERRIDE) and the ebb_* names; built as
 * api_startup_lib, it is also linked with libapi_ctorlib, whose constructor
 * does the same while the program is still being loaded, possibly before
 * ebbmalloc's own constructor. A destructor allocates after main() returned:
 * a failure there exits with status 97. */
#include "api_util.h"
#include "startup_ctorlib.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <unistd.h>

#ifndef API_STARTUP_WITH_LIB
#define API_STARTUP_WITH_LIB 0
#endif

using namespace apitest;

static api_ctor_record g_exe_record;

__attribute__((constructor(101))) static void api_startup_ctor()
{
	api_ctor_allocate(&g_exe_record, 1);
}

__attribute__((destructor)) static void api_startup_dtor()
{
	for (int i = 0; i < 200; i++) {
		size_t n = (size_t)i * 1500 + (i == 199 ? 5 * MiB : 1);
		unsigned char *p = static_cast<unsigned char *>(ebb_malloc(n));
		if (!p) _exit(97);
		memset(p, i, n);
		if (p[n - 1] != (unsigned char)i) _exit(97);
		ebb_free(p);
#if EBB_TEST_OVERRIDE
		p = static_cast<unsigned char *>(malloc(n));
		if (!p) _exit(97);
		memset(p, i, n);
		free(p);
#endif
	}
}

static void check_record(const api_ctor_record &r)
{
	REQUIRE(r.ran == 1);
	CHECK(r.errors == 0);
	CHECK(r.thread_ok == 1);
	int expected = EBB_TEST_OVERRIDE ? 11 : 6, got = 0;
	for (int i = 0; i < API_CTOR_BLOCKS; i++) {
		void *p = r.block[i];
		if (!p) continue;
		got++;
		INFO("block " << i << " of " << r.size[i] << " bytes");
		CHECK(ebb_malloc_usable_size(p) >= r.size[i]);
		const unsigned char *c = static_cast<const unsigned char *>(p);
		size_t bad = 0;
		for (size_t k = 0; k < r.size[i]; k++) bad += c[k] != r.fill[i];
		CHECK(bad == 0);
#if EBB_TEST_OVERRIDE
		if (r.from_malloc[i]) {
			free(p);
			continue;
		}
#endif
		ebb_free(p);
	}
	CHECK(got == expected);
}

TEST_CASE("blocks allocated in the program's constructor are valid and can be freed", "[startup]")
{
	check_record(g_exe_record);
}

#if API_STARTUP_WITH_LIB
TEST_CASE("blocks allocated in a shared library's constructor are valid and can be freed", "[startup]")
{
	check_record(*api_ctorlib_record());
}
#endif
