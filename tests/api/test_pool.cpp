/* test_pool.cpp: fixed-size pools (ebb_pool_*): objects of several sizes and
 * alignments, aligned and disjoint with their contents intact; freed objects
 * reused; spans going back to the page heap as they empty (stats); double
 * free and foreign pointers reported; bad arguments; the threading contract
 * (an owned pool used from another thread is reported; a shared one works
 * under several threads with objects freed by threads that did not allocate
 * them). The reports of plain free() on pool objects are in test_arena.cpp.
 *
 * Calls that change process state (on_error=warn) or are meant to abort run
 * in a forked child; inside it no Catch2 macro is used, the child returns a
 * small number naming the first check that failed. */
#include "api_util.h"
#include "child_util.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace apitest;

namespace {

const char *const kOtherThread =
	"the pool belongs to another thread (create it with EBB_SHARED to share it, or hand it over with "
	"ebb_pool_adopt)";
const char *const kNotPool = "not an ebb_pool (never created, or destroyed)";

ebb_stats_t settled()
{
	ebb_stats_t s = stats();
	for (int i = 0; i < 50 && s.mapped != stats_parts(s); i++) {
		std::this_thread::yield();
		s = stats();
	}
	return s;
}

constexpr uint64_t kSlack = 512 * KiB;

/* The alignment ebb_pool_create documents for alignment 0. */
size_t natural_align(size_t size)
{
	size_t a = size & (0 - size);
	return a > 16 ? 16 : a;
}

size_t stride_of(size_t size, size_t align)
{
	size_t n = size < 8 ? 8 : size;
	return (n + align - 1) / align * align;
}

} // namespace

TEST_CASE("pools of several sizes and alignments hand out aligned, disjoint objects", "[pool]")
{
	struct Shape {
		size_t size, align;
	};
	const Shape shapes[] = {{1, 0},      {8, 0},          {12, 0},     {12, 4},       {13, 1},
				{24, 0},     {40, 8},         {64, 64},    {100, 0},      {100, 32},
				{4096, 4096}, {5000, 0},      {65536, 65536}, {300000, 0}, {1 * MiB, 0},
				{1000, 1 * MiB}, {8, 4096}};
	for (unsigned flags : {0u, EBB_SHARED}) {
		for (const Shape &sh : shapes) {
			INFO("size " << sh.size << " alignment " << sh.align << " flags " << flags);
			ebb_pool_t *pool = ebb_pool_create(sh.size, sh.align, flags);
			REQUIRE(pool != nullptr);
			size_t align = sh.align ? sh.align : natural_align(sh.size);
			size_t stride = stride_of(sh.size, align);
			size_t count = std::min<size_t>(3000, 48 * MiB / stride);
			std::vector<char *> objs(count);
			for (size_t i = 0; i < count; i++) {
				objs[i] = static_cast<char *>(ebb_pool_alloc(pool));
				REQUIRE(objs[i] != nullptr);
				REQUIRE(is_aligned(objs[i], align));
				fill(objs[i], sh.size, (unsigned)i);
			}
			size_t bad = 0;
			for (size_t i = 0; i < count; i++)
				if (first_mismatch(objs[i], sh.size, (unsigned)i) != sh.size) bad++;
			CHECK(bad == 0);
			std::vector<char *> sorted = objs;
			std::sort(sorted.begin(), sorted.end());
			size_t close_pairs = 0;
			for (size_t i = 1; i < count; i++)
				if (sorted[i] < sorted[i - 1] + stride) close_pairs++;
			CHECK(close_pairs == 0);
			/* Half freed in random order: the other half keeps its
			 * contents; the pool hands out distinct objects again. */
			std::vector<size_t> order(count);
			for (size_t i = 0; i < count; i++) order[i] = i;
			std::shuffle(order.begin(), order.end(), std::mt19937(7));
			for (size_t k = 0; k < count / 2; k++) ebb_pool_free(pool, objs[order[k]]);
			bad = 0;
			for (size_t k = count / 2; k < count; k++)
				if (first_mismatch(objs[order[k]], sh.size, (unsigned)order[k]) != sh.size) bad++;
			CHECK(bad == 0);
			for (size_t k = 0; k < count / 2; k++) {
				objs[order[k]] = static_cast<char *>(ebb_pool_alloc(pool));
				REQUIRE(objs[order[k]] != nullptr);
				REQUIRE(is_aligned(objs[order[k]], align));
			}
			sorted = objs;
			std::sort(sorted.begin(), sorted.end());
			CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
			for (char *o : objs) ebb_pool_free(pool, o);
			ebb_pool_free(pool, nullptr); /* does nothing */
			ebb_pool_destroy(pool);
		}
	}
	ebb_pool_destroy(nullptr); /* does nothing */
}

TEST_CASE("a pool's spans go back to the page heap as they empty", "[pool]")
{
	constexpr size_t kObjects = 100000;
	std::vector<void *> objs(kObjects);
	ebb_trim();
	ebb_stats_t s0 = settled();
	INFO("before:     " << stats_str(s0));
	ebb_pool_t *pool = ebb_pool_create(64, 0, 0);
	REQUIRE(pool != nullptr);
	for (size_t i = 0; i < kObjects; i++) {
		objs[i] = ebb_pool_alloc(pool);
		REQUIRE(objs[i] != nullptr);
		memset(objs[i], 0x33, 64);
	}
	ebb_stats_t s1 = settled();
	INFO("allocated:  " << stats_str(s1));
	CHECK(s1.mapped == stats_parts(s1));
	CHECK(s1.allocated >= s0.allocated + kObjects * 64);

	/* Every 1000th object kept: each pins one span, the others go back. */
	for (size_t i = 0; i < kObjects; i++)
		if (i % 1000 != 0) ebb_pool_free(pool, objs[i]);
	ebb_stats_t s2 = settled();
	INFO("most freed: " << stats_str(s2));
	CHECK(s2.mapped == stats_parts(s2));
	CHECK(s2.allocated <= s0.allocated + 100 * 16 * KiB + kSlack);
	CHECK(s2.allocated + 4 * MiB <= s1.allocated);

	for (size_t i = 0; i < kObjects; i += 1000) ebb_pool_free(pool, objs[i]);
	ebb_stats_t s3 = settled();
	INFO("all freed:  " << stats_str(s3));
	CHECK(s3.mapped == stats_parts(s3));
	CHECK(s3.allocated <= s0.allocated + kSlack);

	/* Given back like any freed page: decay (here ebb_trim) purges them. */
	ebb_trim();
	ebb_stats_t s4 = settled();
	INFO("trimmed:    " << stats_str(s4));
	CHECK(s4.resident <= s0.resident + kSlack);
	CHECK(s4.dirty <= s0.dirty + kSlack);
	ebb_pool_destroy(pool);
}

TEST_CASE("destroying a pool gives back its spans, objects still out included", "[pool]")
{
	ebb_trim();
	ebb_stats_t s0 = settled();
	std::vector<ebb_pool_t *> pools;
	for (size_t size : {size_t(16), size_t(200), size_t(3000), size_t(70000)}) {
		ebb_pool_t *pool = ebb_pool_create(size, 0, 0);
		REQUIRE(pool != nullptr);
		for (int i = 0; i < 500; i++) {
			void *p = ebb_pool_alloc(pool);
			REQUIRE(p != nullptr);
			memset(p, 1, size);
		}
		pools.push_back(pool);
	}
	ebb_stats_t s1 = settled();
	CHECK(s1.allocated >= s0.allocated + 500 * (16 + 200 + 3000 + 70000));
	for (ebb_pool_t *pool : pools) ebb_pool_destroy(pool);
	ebb_stats_t s2 = settled();
	INFO("before: " << stats_str(s0) << "\nafter:  " << stats_str(s2));
	CHECK(s2.mapped == stats_parts(s2));
	CHECK(s2.allocated <= s0.allocated + kSlack);
}

TEST_CASE("bad arguments to ebb_pool_create", "[pool]")
{
	struct Bad {
		size_t size, align;
		unsigned flags;
	};
	for (Bad b : {Bad{0, 0, 0}, Bad{1 * MiB + 1, 0, 0}, Bad{SIZE_MAX, 0, 0}, Bad{16, 3, 0}, Bad{16, 24, 0},
		      Bad{16, 2 * MiB, 0}, Bad{16, 0, 2}, Bad{16, 0, ~0u}}) {
		INFO("size " << b.size << " alignment " << b.align << " flags " << b.flags);
		errno = 0;
		CHECK(ebb_pool_create(b.size, b.align, b.flags) == nullptr);
		CHECK(errno == EINVAL);
	}
	/* The limits themselves are fine. */
	ebb_pool_t *pool = ebb_pool_create(1 * MiB, 1 * MiB, 0);
	REQUIRE(pool != nullptr);
	void *p = ebb_pool_alloc(pool);
	REQUIRE(p != nullptr);
	CHECK(is_aligned(p, 1 * MiB));
	memset(p, 1, 1 * MiB);
	ebb_pool_free(pool, p);
	ebb_pool_destroy(pool);
}

/* The tests below run pieces in a forked child. ThreadSanitizer does not
 * support forking a multithreaded process (the allocator's background
 * thread exists): they run in the other builds. */
#if !EBB_TEST_TSAN
TEST_CASE("double frees and foreign pointers given to ebb_pool_free are reported", "[pool]")
{
	ebb_pool_t *pool = ebb_pool_create(48, 0, 0);
	ebb_pool_t *other = ebb_pool_create(48, 0, 0);
	ebb_pool_t *tiny = ebb_pool_create(8, 0, 0);
	REQUIRE((pool && other && tiny));
	char *a = static_cast<char *>(ebb_pool_alloc(pool));
	char *b = static_cast<char *>(ebb_pool_alloc(pool));
	char *o = static_cast<char *>(ebb_pool_alloc(other));
	void *m = ebb_malloc(48);
	REQUIRE((a && b && o && m));
	char *never = b + 48 * 10; /* in the span, never handed out */
	ebb_pool_t *dead = ebb_pool_create(16, 0, 0);
	REQUIRE(dead != nullptr);
	ebb_pool_destroy(dead);

	/* Default on_error=abort. */
	ChildResult c = run_child([&] {
		ebb_pool_free(pool, a);
		ebb_pool_free(pool, a);
		return 0;
	});
	CHECK(c.signal == SIGABRT);
	CHECK(c.err == bad_pointer_line("ebb_pool_free", a, "double free (the object is already free)"));

	c = run_child([&] {
		if (ebb_option_set("on_error", "warn") != 0) return 1;
		ebb_pool_free(pool, a);
		ebb_pool_free(pool, a);       /* double free */
		ebb_pool_free(pool, b + 1);   /* not an object start */
		ebb_pool_free(pool, never);   /* never handed out */
		ebb_pool_free(pool, o);       /* another pool's */
		ebb_pool_free(pool, m);       /* a malloc block */
		errno = 0;
		if (ebb_pool_alloc(dead) != nullptr || errno != EINVAL) return 2;
		errno = 0;
		if (ebb_pool_alloc(nullptr) != nullptr || errno != EINVAL) return 3;
		errno = 0;
		if (ebb_pool_alloc(reinterpret_cast<ebb_pool_t *>(m)) != nullptr || errno != EINVAL) return 4;
		ebb_pool_destroy(dead);
		ebb_pool_free(dead, a);
		/* The pool is unharmed: a is handed out once more, then fresh
		 * objects, all distinct. */
		std::vector<char *> got;
		for (int i = 0; i < 2000; i++) {
			char *p = static_cast<char *>(ebb_pool_alloc(pool));
			if (!p) return 5;
			got.push_back(p);
		}
		if (got[0] != a) return 6;
		std::sort(got.begin(), got.end());
		if (std::adjacent_find(got.begin(), got.end()) != got.end()) return 7;
		if (std::find(got.begin(), got.end(), b) != got.end()) return 8;
		return 0;
	});
	CHECK(c.exited);
	CHECK(c.code == 0);
	CHECK(c.err == bad_pointer_line("ebb_pool_free", a, "double free (the object is already free)") +
			       bad_pointer_line("ebb_pool_free", b + 1, "not the start of an object of this ebb_pool") +
			       bad_pointer_line("ebb_pool_free", never, "not the start of an object of this ebb_pool") +
			       bad_pointer_line("ebb_pool_free", o, "an object of another ebb_pool") +
			       bad_pointer_line("ebb_pool_free", m, "not an object of this ebb_pool") +
			       bad_pointer_line("ebb_pool_alloc", dead, kNotPool) +
			       bad_pointer_line("ebb_pool_alloc", nullptr, kNotPool) +
			       bad_pointer_line("ebb_pool_alloc", m, kNotPool) +
			       bad_pointer_line("ebb_pool_destroy", dead, kNotPool) +
			       bad_pointer_line("ebb_pool_free", dead, kNotPool));

	/* Objects of 8 bytes have no room for the mark: a double free is not
	 * caught there (documented), but a pointer that is not an object is. */
	c = run_child([&] {
		if (ebb_option_set("on_error", "warn") != 0) return 1;
		char *t = static_cast<char *>(ebb_pool_alloc(tiny));
		if (!t) return 2;
		ebb_pool_free(tiny, t + 4);
		ebb_pool_free(tiny, t);
		return 0;
	});
	CHECK(c.exited);
	CHECK(c.code == 0);
	CHECK(c.err.find("not the start of an object of this ebb_pool") != std::string::npos);
	ebb_free(m);
	ebb_pool_destroy(pool);
	ebb_pool_destroy(other);
	ebb_pool_destroy(tiny);
}

TEST_CASE("a pool used from a thread that does not own it is reported; adopt hands it over", "[pool]")
{
	ebb_pool_t *pool = ebb_pool_create(32, 0, 0);
	REQUIRE(pool != nullptr);
	void *p = ebb_pool_alloc(pool);
	REQUIRE(p != nullptr);

	ChildResult c = run_child([&] {
		std::thread t([&] { ebb_pool_free(pool, p); });
		t.join();
		return 0;
	});
	CHECK(c.signal == SIGABRT);
	CHECK(c.err == bad_pointer_line("ebb_pool_free", pool, kOtherThread));

	c = run_child([&] {
		if (ebb_option_set("on_error", "warn") != 0) return 1;
		int rc = 0;
		std::thread t([&] {
			errno = 0;
			if (ebb_pool_alloc(pool) != nullptr || errno != EPERM) rc = 2;
			ebb_pool_free(pool, p);
			ebb_pool_destroy(pool);
			ebb_pool_adopt(pool);
			void *q = ebb_pool_alloc(pool);
			if (q == nullptr) rc = 3;
			ebb_pool_free(pool, q);
		});
		t.join();
		if (rc) return rc;
		errno = 0;
		if (ebb_pool_alloc(pool) != nullptr || errno != EPERM) return 4;
		ebb_pool_adopt(pool);
		ebb_pool_free(pool, p);
		ebb_pool_destroy(pool);
		return 0;
	});
	CHECK(c.exited);
	CHECK(c.code == 0);
	CHECK(c.err == bad_pointer_line("ebb_pool_alloc", pool, kOtherThread) +
			       bad_pointer_line("ebb_pool_free", pool, kOtherThread) +
			       bad_pointer_line("ebb_pool_destroy", pool, kOtherThread) +
			       bad_pointer_line("ebb_pool_alloc", pool, kOtherThread));
	ebb_pool_free(pool, p);
	ebb_pool_destroy(pool);
}

#endif /* !EBB_TEST_TSAN */

TEST_CASE("a shared pool under several threads, objects freed by other threads", "[pool]")
{
	constexpr int kThreads = 4;
	constexpr size_t kSize = 48;
	/* Objects pass through a common exchange, so most are freed by a thread
	 * that did not allocate them. An object holds its allocating thread and
	 * a counter, checked by whoever frees it. */
	std::mutex mu;
	std::vector<uint64_t *> exchange;
	exchange.reserve(1 << 16);
	ebb_trim();
	ebb_stats_t s0 = settled();
	ebb_pool_t *pool = ebb_pool_create(kSize, 0, EBB_SHARED);
	REQUIRE(pool != nullptr);
	std::atomic<size_t> bad{0};
	auto tag = [](uint64_t *o) { return o[0] ^ 0x9E3779B97F4A7C15ull; };
	std::vector<std::thread> threads;
	for (int t = 0; t < kThreads; t++) {
		threads.emplace_back([&, t] {
			Rng rng(t + 1);
			std::vector<uint64_t *> mine;
			mine.reserve(512);
			for (uint64_t i = 0; i < 60000; i++) {
				if (mine.size() < 256 || rng.below(2)) {
					uint64_t *o = static_cast<uint64_t *>(ebb_pool_alloc(pool));
					if (!o) {
						bad++;
						continue;
					}
					o[1] = (uint64_t)t << 32 | (i & 0xffffffffu);
					o[0] = o[1] ^ 0x9E3779B97F4A7C15ull;
					o[5] = o[1];
					mine.push_back(o);
				}
				if (mine.size() > 300 || rng.below(3) == 0) {
					size_t k = rng.below(mine.size());
					uint64_t *o = mine[k];
					mine[k] = mine.back();
					mine.pop_back();
					std::lock_guard<std::mutex> g(mu);
					exchange.push_back(o);
				}
				uint64_t *f = nullptr;
				{
					std::lock_guard<std::mutex> g(mu);
					if (exchange.size() > 64) {
						size_t k = rng.below(exchange.size());
						f = exchange[k];
						exchange[k] = exchange.back();
						exchange.pop_back();
					}
				}
				if (f) {
					if (tag(f) != f[1] || f[5] != f[1]) bad++;
					ebb_pool_free(pool, f);
				}
			}
			for (uint64_t *o : mine) {
				if (tag(o) != o[1] || o[5] != o[1]) bad++;
				ebb_pool_free(pool, o);
			}
		});
	}
	for (auto &th : threads) th.join();
	for (uint64_t *o : exchange) {
		if (tag(o) != o[1] || o[5] != o[1]) bad++;
		ebb_pool_free(pool, o);
	}
	CHECK(bad == 0);
	/* Every object is back, so every span is. */
	ebb_stats_t s1 = settled();
	INFO("before: " << stats_str(s0) << "\nafter:  " << stats_str(s1));
	CHECK(s1.allocated <= s0.allocated + kSlack);
	ebb_pool_destroy(pool);
}
