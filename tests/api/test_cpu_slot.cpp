/* The shared CPU slot (tcache/tcache.c, tcache_shared_enter): a thread that
 * the scheduler moves to another CPU keeps allocating from the central
 * lists and the page heap it used before, so the pages it freed on the
 * first CPU serve it on the second (before, the second CPU's page heap
 * served it from superblocks of its own, and the first CPU's freed pages
 * stayed resident beside them). */
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <sched.h>
#include <set>
#include <thread>
#include <vector>

#include "api_util.h"
#include "child_util.h"

using namespace apitest;

namespace {

bool pin_to(int cpu)
{
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	return sched_setaffinity(0, sizeof one, &one) == 0 && sched_getcpu() == cpu;
}

/* The 4 MiB superblock a block is in: each belongs to one page heap. */
uintptr_t superblock_of(const void *p)
{
	return (uintptr_t)p >> 22;
}

} // namespace

TEST_CASE("a thread moved to another CPU reuses the pages it freed on the first", "[cpu_slot]")
{
	cpu_set_t was;
	REQUIRE(sched_getaffinity(0, sizeof was, &was) == 0);
	int a = -1, b = -1;
	for (int i = 0; i < CPU_SETSIZE && b < 0; i++)
		if (CPU_ISSET(i, &was))
			(a < 0 ? a : b) = i;
	if (b < 0) {
		WARN("needs two CPUs to move a thread between");
		return;
	}
	/* In a child, whose new thread is the only one with a cache: 64 KiB
	 * blocks are page runs of the page heap that os_cpu_id picks. */
	ChildResult r = run_child([=] {
		const int n = 8;
		std::set<uintptr_t> first;
		std::vector<void *> second;
		bool moved = false;
		std::thread t([&] {
			if (!pin_to(a))
				return;
			/* Keeps their superblock from emptying: an empty one may
			 * go to any page heap. */
			void *keep = ebb_malloc(64 << 10);
			std::vector<void *> v;
			for (int i = 0; i < n; i++)
				v.push_back(ebb_malloc(64 << 10));
			for (void *p : v) {
				first.insert(superblock_of(p));
				ebb_free(p);
			}
			moved = pin_to(b);
			for (int i = 0; i < n; i++)
				second.push_back(ebb_malloc(64 << 10));
			for (void *p : second)
				ebb_free(p);
			ebb_free(keep);
		});
		t.join();
		if (!moved)
			return 3;
		int again = 0;
		for (void *p : second)
			again += first.count(superblock_of(p)) != 0;
		fprintf(stderr, "%d of %d in the first CPU's superblocks\n", again, n);
		return again == n ? 0 : 2;
	});
	INFO("stderr: " << r.err);
	REQUIRE(r.exited);
	if (r.code == 3) {
		WARN("the thread could not be moved to CPU " << b);
		return;
	}
	CHECK(r.code == 0);
}
