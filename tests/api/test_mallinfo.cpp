/* test_mallinfo.cpp: mallinfo2() and mallinfo() answer with ebbmalloc's
 * figures, not glibc's empty heap (issue 11, item 15), and ebb_mallinfo()
 * agrees with ebb_stats_get().
 *
 * The allocating thread's cache is counted exactly, so in this
 * single-threaded test: allocating N bytes of small and page-run blocks adds
 * at least N to uordblks (class sizes and whole pages, never less), a huge
 * block goes to hblks/hblkhd as glibc's mmapped chunks do, and freeing moves
 * the bytes from uordblks to fordblks (thread cache, central lists, dirty
 * pages: none is unmapped within the unmap delay of 5 s). The background
 * thread may purge meanwhile (dirty to purged: both free), so the comparison
 * with ebb_stats_get is retried until two snapshots agree. */
#include "api_util.h"
#include "child_util.h"

#include <catch2/catch.hpp>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <malloc.h>
#include <thread>
#include <vector>

using namespace apitest;

namespace {

ebb_mallinfo_t info()
{
	ebb_mallinfo_t m;
	ebb_mallinfo(&m);
	return m;
}

/* ebb_mallinfo and ebb_stats_get describe the same state: true once two
 * back-to-back snapshots agree field by field (20 tries). */
bool consistent_with_stats(bool huge_live)
{
	for (int i = 0; i < 20; i++) {
		ebb_mallinfo_t m = info();
		ebb_stats_t s = stats();
		ebb_mallinfo_t again = info();
		if (memcmp(&m, &again, sizeof m) != 0) {
			std::this_thread::yield();
			continue;
		}
		bool ok = m.arena + m.hblkhd == s.mapped && m.fsmblks == s.tcache &&
			  m.fordblks == s.tcache + s.central + s.dirty + s.purged && m.keepcost == s.dirty &&
			  m.uordblks <= s.allocated && m.ordblks == 0 && m.smblks == 0 && m.usmblks == 0;
		/* without huge blocks: every allocated byte is in uordblks, and
		 * arena = uordblks + fordblks + overhead exactly */
		if (!huge_live)
			ok = ok && m.hblks == 0 && m.hblkhd == 0 && m.uordblks == s.allocated &&
			     m.arena == m.uordblks + m.fordblks + s.metadata + s.waste;
		if (ok) return true;
		std::this_thread::yield();
	}
	return false;
}

} // namespace

TEST_CASE("ebb_mallinfo: uordblks grows by what is allocated, fordblks by what is freed", "[mallinfo]")
{
	std::vector<void *> blocks;
	size_t total = 0;
	/* glibc's tst-mallinfo2 sizes, then page-run blocks */
	ebb_mallinfo_t before = info();
	for (size_t i = 1; i < 20; i++) {
		blocks.push_back(ebb_malloc(160 * i));
		total += 160 * i;
	}
	for (size_t n : {40 * KiB, 200 * KiB, 1 * MiB}) {
		blocks.push_back(ebb_malloc(n));
		total += n;
	}
	for (void *p : blocks) REQUIRE(p != nullptr);
	ebb_mallinfo_t held = info();
	CHECK(held.uordblks >= before.uordblks + total);
	CHECK(held.arena >= held.uordblks);
	CHECK(held.hblks == before.hblks);
	CHECK(consistent_with_stats(held.hblks != 0));

	/* a huge block: glibc's mmapped chunk */
	void *huge = ebb_malloc(9 * MiB);
	REQUIRE(huge != nullptr);
	ebb_mallinfo_t with_huge = info();
	CHECK(with_huge.hblks == held.hblks + 1);
	CHECK(with_huge.hblkhd >= held.hblkhd + 9 * MiB);
	CHECK(with_huge.uordblks < held.uordblks + 9 * MiB);
	CHECK(consistent_with_stats(true));
	ebb_free(huge);
	ebb_mallinfo_t no_huge = info();
	CHECK(no_huge.hblks == held.hblks);
	CHECK(no_huge.hblkhd == held.hblkhd);

	/* freed: out of uordblks, into fordblks (nothing is unmapped yet) */
	ebb_mallinfo_t pre_free = info();
	for (void *p : blocks) ebb_free(p);
	ebb_mallinfo_t freed = info();
	CHECK(freed.uordblks + total <= pre_free.uordblks);
	CHECK(freed.fordblks >= pre_free.fordblks + total);
	CHECK(freed.keepcost <= freed.fordblks);
	CHECK(freed.fsmblks <= freed.fordblks);
	CHECK(consistent_with_stats(freed.hblks != 0));
}

#if EBB_TEST_OVERRIDE
TEST_CASE("mallinfo2 and mallinfo are ebbmalloc's (EBB_OVERRIDE)", "[mallinfo]")
{
	/* glibc's tst-mallinfo2, through the standard names */
	static_assert(sizeof(((struct mallinfo2 *)nullptr)->arena) == sizeof(size_t), "mallinfo2 fields are size_t");
	struct mallinfo2 mi1 = mallinfo2();
	std::vector<void *> blocks;
	size_t total = 0;
	for (size_t i = 1; i < 20; i++) {
		blocks.push_back(malloc(160 * i));
		total += 160 * i;
	}
	struct mallinfo2 mi2 = mallinfo2();
	CHECK(mi2.uordblks >= mi1.uordblks + total);
	CHECK(mi2.arena > 0);

	/* the same figures as ebb_mallinfo, and mallinfo() as ints */
	bool same = false;
	for (int i = 0; i < 20 && !same; i++) {
		ebb_mallinfo_t e = info();
		struct mallinfo2 m2 = mallinfo2();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
		struct mallinfo m1 = mallinfo();
#pragma GCC diagnostic pop
		ebb_mallinfo_t e2 = info();
		if (memcmp(&e, &e2, sizeof e) != 0) continue;
		auto clamp = [](size_t v) { return v > (size_t)INT_MAX ? INT_MAX : (int)v; };
		same = m2.arena == e.arena && m2.uordblks == e.uordblks && m2.fordblks == e.fordblks &&
		       m2.hblks == e.hblks && m2.hblkhd == e.hblkhd && m2.fsmblks == e.fsmblks &&
		       m2.keepcost == e.keepcost && m2.ordblks == e.ordblks && m2.smblks == e.smblks &&
		       m2.usmblks == e.usmblks && m1.arena == clamp(e.arena) &&
		       m1.uordblks == clamp(e.uordblks) && m1.fordblks == clamp(e.fordblks) &&
		       m1.hblkhd == clamp(e.hblkhd) && m1.keepcost == clamp(e.keepcost);
	}
	CHECK(same);
	for (void *p : blocks) free(p);
	struct mallinfo2 mi3 = mallinfo2();
	CHECK(mi3.uordblks + total <= mi2.uordblks);
}

/* malloc_info writes glibc's elements with ebbmalloc's figures: the free
 * blocks of a class just freed show in <sizes>, and the "rest" total is
 * mallinfo2's fordblks (glibc's would describe its own untouched arena). */
TEST_CASE("malloc_info and malloc_stats are ebbmalloc's (EBB_OVERRIDE)", "[mallinfo]")
{
	std::vector<void *> blocks;
	for (int i = 0; i < 4000; i++) blocks.push_back(malloc(700));
	for (size_t i = 0; i < blocks.size(); i += 2) free(blocks[i]);
	char *buf = nullptr;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	REQUIRE(f != nullptr);
	CHECK(malloc_info(0, f) == 0);
	fclose(f);
	std::string xml(buf, len);
	free(buf);
	INFO(xml);
	CHECK(xml.rfind("<malloc version=\"1\">", 0) == 0);
	CHECK(xml.find("</malloc>") != std::string::npos);
	/* a class of 700 B or a little more holds some of the 2 000 freed blocks
	 * that did not fit in the thread cache */
	bool found = false;
	for (size_t at = xml.find("<size from=\""); at != std::string::npos; at = xml.find("<size from=\"", at + 1)) {
		unsigned long long from = 0, to = 0, total = 0, count = 0;
		if (sscanf(xml.c_str() + at, "<size from=\"%llu\" to=\"%llu\" total=\"%llu\" count=\"%llu\"", &from, &to,
			   &total, &count) == 4 && from <= 700 && 700 <= to && count > 0 && total >= count * 700)
			found = true;
	}
	CHECK(found);
	unsigned long long rest = 0;
	size_t at = xml.rfind("<total type=\"rest\"");
	REQUIRE(at != std::string::npos);
	REQUIRE(sscanf(xml.c_str() + at, "<total type=\"rest\" count=\"%*llu\" size=\"%llu\"", &rest) == 1);
	CHECK(rest >= 1000 * 700);

	errno = 0;
	CHECK(malloc_info(1, stdout) == -1);
	CHECK(errno == EINVAL);

	ChildResult c = run_child([] {
		malloc_stats();
		return 0;
	});
	CHECK(c.exited);
	CHECK(c.code == 0);
	CHECK(c.err.find("in use bytes") != std::string::npos);
	CHECK(c.err.find("ebbmalloc statistics") != std::string::npos);
	for (size_t i = 1; i < blocks.size(); i += 2) free(blocks[i]);
}

/* mallopt accepts glibc's parameters as glibc answers them, and none of them
 * turns the double-free report off: a program's M_CHECK_ACTION of 0 still
 * aborts on a double free (only on_error=warn warns). */
TEST_CASE("mallopt answers as glibc and changes no check (EBB_OVERRIDE)", "[mallinfo]")
{
	CHECK(mallopt(M_ARENA_MAX, 2) == 1);
	CHECK(mallopt(M_TRIM_THRESHOLD, 128 * 1024) == 1);
	CHECK(mallopt(M_MMAP_THRESHOLD, 64 * 1024) == 1);
	CHECK(mallopt(M_MXFAST, 64) == 1);
	CHECK(mallopt(M_MXFAST, 100000) == 0);
	CHECK(mallopt(12345, 1) == 1);
	ChildResult c = run_child([] {
		mallopt(M_CHECK_ACTION, 0);
		mallopt(M_PERTURB, 0);
		void *keep = malloc(64);
		void *p = malloc(64), *q = malloc(64);
		free(p);
		free(q);
		free(opaque(p)); /* not the block freed last */
		void *a = malloc(64), *b = malloc(64), *d = malloc(64); /* p handed out twice, or caught */
		free(keep);
		return a == p && b == p && d != nullptr ? 3 : 0;
	});
	INFO(c.err);
	CHECK(!c.exited);
	CHECK(c.signal == SIGABRT);
	CHECK(c.err.find("double free") != std::string::npos);
}
#endif
