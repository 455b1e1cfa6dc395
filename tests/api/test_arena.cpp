/* test_arena.cpp: task arenas (ebb_arena_*): blocks of every size and
 * alignment with their contents intact, reset and destroy giving the memory
 * back (stats), many arenas, single-block free, bad arguments, the threading
 * contract (an owned arena used from another thread is reported; a shared one
 * works under several threads), and the reports of plain free / realloc /
 * malloc_usable_size on arena and pool blocks.
 *
 * Calls that change process state (on_error=warn) or are meant to abort run
 * in a forked child (run_child of child_util.h); inside it no Catch2 macro is used, the
 * child returns a small number naming the first check that failed. */
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
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace apitest;

namespace {

const char *const kArenaBlock =
	"a block of an ebb_arena, not a malloc block (it goes back with ebb_arena_reset or ebb_arena_destroy)";
const char *const kArenaHandle = "an ebb_arena handle, not a malloc block (destroy it with ebb_arena_destroy)";
const char *const kPoolObject = "an object of an ebb_pool, not a malloc block (give it back with ebb_pool_free)";
const char *const kPoolHandle = "an ebb_pool handle, not a malloc block (destroy it with ebb_pool_destroy)";
const char *const kOtherThread =
	"the arena belongs to another thread (create it with EBB_SHARED to share it, or hand it over with "
	"ebb_arena_adopt)";
const char *const kNotArena = "not an ebb_arena (never created, or destroyed)";

struct Block {
	char *p;
	size_t n;
	unsigned seed;
};

/* Every block holds its pattern, and no two blocks overlap. */
void check_blocks(std::vector<Block> v)
{
	size_t bad = 0;
	for (const Block &b : v)
		if (first_mismatch(b.p, b.n, b.seed) != b.n) bad++;
	CHECK(bad == 0);
	std::sort(v.begin(), v.end(), [](const Block &x, const Block &y) { return x.p < y.p; });
	size_t overlaps = 0;
	for (size_t i = 1; i < v.size(); i++)
		if (v[i - 1].p + v[i - 1].n > v[i].p) overlaps++;
	CHECK(overlaps == 0);
}

/* A snapshot that adds up (the background thread may be mid-purge). */
ebb_stats_t settled()
{
	ebb_stats_t s = stats();
	for (int i = 0; i < 50 && s.mapped != stats_parts(s); i++) {
		std::this_thread::yield();
		s = stats();
	}
	return s;
}

/* Where results the test does not look at go (warn_unused_result). */
void *volatile g_sink;

/* Slack for what Catch2 and the C++ library allocate meanwhile (malloc is
 * ebbmalloc in the override build). */
constexpr uint64_t kSlack = 512 * KiB;

} // namespace

TEST_CASE("an arena hands out aligned, disjoint blocks that keep their contents until reset", "[arena]")
{
	ebb_arena_t *a = ebb_arena_create(0, 0);
	REQUIRE(a != nullptr);
	std::vector<Block> v;
	v.reserve(6000);
	char *first = nullptr;
	for (int round = 0; round < 3; round++) {
		Rng rng(7 + round);
		v.clear();
		for (unsigned i = 0; i < 5000; i++) {
			size_t n = rng.log_size(3000);
			char *p = static_cast<char *>(ebb_arena_alloc(a, n));
			REQUIRE(p != nullptr);
			REQUIRE(is_aligned(p, 16));
			if (i == 0) {
				/* After a reset the first chunk is reused from its start. */
				if (round == 0) first = p;
				else CHECK(p == first);
			}
			size_t len = n ? n : 1; /* size 0 still gets a byte of its own */
			fill(p, len, i + 100u * round);
			v.push_back({p, len, i + 100u * round});
		}
		check_blocks(v);
		ebb_arena_reset(a);
	}
	ebb_arena_destroy(a);
	ebb_arena_destroy(nullptr); /* does nothing */
}

TEST_CASE("arena blocks: every alignment from 1 byte to 8 MiB", "[arena]")
{
	for (unsigned flags : {0u, EBB_SHARED}) {
		ebb_arena_t *a = ebb_arena_create(0, flags);
		REQUIRE(a != nullptr);
		std::vector<Block> v;
		unsigned seed = 1;
		for (size_t align = 1; align <= 8 * MiB; align *= 2) {
			for (size_t n : {size_t(1), size_t(24), size_t(1000), align + 1, size_t(70000)}) {
				INFO("flags " << flags << " alignment " << align << " size " << n);
				char *p = static_cast<char *>(ebb_arena_aligned_alloc(a, align, n));
				REQUIRE(p != nullptr);
				CHECK(is_aligned(p, align));
				fill(p, n, seed);
				v.push_back({p, n, seed++});
			}
		}
		check_blocks(v);
		ebb_arena_destroy(a);
	}
}

TEST_CASE("arena blocks: sizes from 1 byte to 8 MiB keep their contents", "[arena]")
{
	ebb_arena_t *a = ebb_arena_create(0, 0);
	REQUIRE(a != nullptr);
	std::vector<Block> v;
	std::vector<size_t> sizes = {1,           2,           3,           15,          16,      17,
				     4095,        4096,        4097,        64 * KiB - 1, 64 * KiB, 64 * KiB + 1,
				     1 * MiB,     4 * MiB - 1, 4 * MiB + 1, 8 * MiB};
	Rng rng(99);
	for (int i = 0; i < 200; i++) sizes.push_back(rng.log_size(8 * MiB) + 1);
	unsigned seed = 1;
	for (size_t n : sizes) {
		INFO("size " << n);
		char *p = static_cast<char *>(ebb_arena_alloc(a, n));
		REQUIRE(p != nullptr);
		CHECK(is_aligned(p, 16));
		fill(p, n, seed);
		v.push_back({p, n, seed++});
	}
	check_blocks(v);
	ebb_arena_destroy(a);
}

TEST_CASE("reset and destroy give an arena's memory back", "[arena]")
{
	std::vector<char *> big;
	big.reserve(16);
	ebb_trim();
	ebb_stats_t s0 = settled();
	INFO("before:  " << stats_str(s0));

	ebb_arena_t *a = ebb_arena_create(0, 0);
	REQUIRE(a != nullptr);
	Rng rng(5);
	uint64_t asked = 0;
	for (int i = 0; i < 30000; i++) {
		size_t n = 16 + rng.below(2048);
		char *p = static_cast<char *>(ebb_arena_alloc(a, n));
		REQUIRE(p != nullptr);
		memset(p, 0x5a, n);
		asked += n;
	}
	for (size_t n : {3 * MiB, 3 * MiB, 200 * KiB, 6 * MiB}) { /* own spans, one huge block */
		char *p = static_cast<char *>(ebb_arena_alloc(a, n));
		REQUIRE(p != nullptr);
		memset(p, 0x6b, n);
		big.push_back(p);
		asked += n;
	}
	ebb_stats_t s1 = settled();
	INFO("in use:  " << stats_str(s1));
	CHECK(s1.mapped == stats_parts(s1));
	CHECK(s1.allocated >= s0.allocated + asked); /* chunks count whole, from when they are taken */
	CHECK(s1.resident >= s0.resident + asked);

	ebb_arena_reset(a);
	ebb_trim();
	ebb_stats_t s2 = settled();
	INFO("reset:   " << stats_str(s2));
	CHECK(s2.mapped == stats_parts(s2));
	/* All that is left is the first chunk (64 KiB). */
	CHECK(s2.allocated <= s0.allocated + 64 * KiB + kSlack);
	CHECK(s2.resident <= s0.resident + 64 * KiB + kSlack);
	CHECK(s2.dirty <= s0.dirty + kSlack);
	CHECK(s2.resident + 30 * MiB <= s1.resident);
	/* Superblocks that emptied are unmapped (others may hold a small span
	 * carved meanwhile: their free pages are purged, counted above); the
	 * huge block's mapping is gone in any case. */
	CHECK(s2.mapped + 6 * MiB <= s1.mapped);

	/* The arena still works after the reset. */
	void *p = ebb_arena_alloc(a, 100);
	CHECK(p != nullptr);
	ebb_arena_destroy(a);
	ebb_trim();
	ebb_stats_t s3 = settled();
	INFO("destroy: " << stats_str(s3));
	CHECK(s3.mapped == stats_parts(s3));
	CHECK(s3.allocated <= s0.allocated + kSlack);
	CHECK(s3.resident <= s0.resident + kSlack);
	CHECK(s3.dirty <= s0.dirty + kSlack);
}

TEST_CASE("many arenas at once", "[arena]")
{
	constexpr int kArenas = 1000;
	std::vector<ebb_arena_t *> arenas(kArenas);
	std::vector<std::vector<Block>> blocks(kArenas);
	ebb_trim();
	ebb_stats_t s0 = settled();
	for (int i = 0; i < kArenas; i++) {
		size_t chunk = i % 100 == 0 ? 1 * MiB : i % 3 == 0 ? 4096 : i % 3 == 1 ? 16 * KiB : 0;
		unsigned flags = i % 7 == 0 ? EBB_SHARED : 0;
		arenas[i] = ebb_arena_create(chunk, flags);
		REQUIRE(arenas[i] != nullptr);
		blocks[i].reserve(21);
	}
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < kArenas; i++) {
			Rng rng(i * 31 + round);
			for (int k = 0; k < 20; k++) {
				size_t n = 1 + rng.log_size(4096);
				char *p = static_cast<char *>(ebb_arena_alloc(arenas[i], n));
				REQUIRE(p != nullptr);
				unsigned seed = i * 100 + k;
				fill(p, n, seed);
				blocks[i].push_back({p, n, seed});
			}
			if (i % 10 == 0) {
				char *p = static_cast<char *>(ebb_arena_alloc(arenas[i], 100 * KiB));
				REQUIRE(p != nullptr);
				fill(p, 100 * KiB, i);
				blocks[i].push_back({p, 100 * KiB, (unsigned)i});
			}
		}
		std::vector<Block> all;
		for (auto &b : blocks) all.insert(all.end(), b.begin(), b.end());
		check_blocks(all);
		/* Resetting the even arenas leaves the odd ones intact. */
		for (int i = 0; i < kArenas; i += 2) {
			ebb_arena_reset(arenas[i]);
			blocks[i].clear();
		}
		all.clear();
		for (auto &b : blocks) all.insert(all.end(), b.begin(), b.end());
		check_blocks(all);
	}
	for (ebb_arena_t *a : arenas) ebb_arena_destroy(a);
	/* The test's own vectors too: their small spans, carved between the
	 * arenas' chunks, would keep those superblocks mapped. */
	std::vector<std::vector<Block>>().swap(blocks);
	ebb_trim();
	ebb_stats_t s1 = settled();
	INFO("before: " << stats_str(s0) << "\nafter:  " << stats_str(s1));
	CHECK(s1.mapped == stats_parts(s1));
	CHECK(s1.allocated <= s0.allocated + kSlack);
	CHECK(s1.resident <= s0.resident + kSlack);
	CHECK(s1.mapped <= s0.mapped + 4 * MiB);
}

TEST_CASE("ebb_arena_free gives a block of its own back at once and reuses the newest block", "[arena]")
{
	ebb_arena_t *a = ebb_arena_create(0, 0);
	REQUIRE(a != nullptr);
	ebb_arena_free(a, nullptr); /* does nothing */

	/* The newest block cut from a chunk is taken back: its bytes are reused. */
	void *p = ebb_arena_alloc(a, 100);
	ebb_arena_free(a, p);
	void *q = ebb_arena_alloc(a, 100);
	CHECK(q == p);
	/* An older one stays until the reset. */
	char *b1 = static_cast<char *>(ebb_arena_alloc(a, 50));
	char *b2 = static_cast<char *>(ebb_arena_alloc(a, 50));
	ebb_arena_free(a, b1);
	char *b3 = static_cast<char *>(ebb_arena_alloc(a, 50));
	CHECK(b3 >= b2 + 50);
	ebb_arena_free(a, b1); /* freeing it again is harmless too */

	/* Blocks with pages of their own (above 64 KiB, a huge one, one aligned
	 * above a page) go back to the page heap at once. */
	for (size_t n : {size_t(100 * KiB), 2 * MiB, 6 * MiB}) {
		for (size_t align : {size_t(16), size_t(64 * KiB)}) {
			INFO("size " << n << " alignment " << align);
			ebb_stats_t before = settled();
			void *big = ebb_arena_aligned_alloc(a, align, n);
			REQUIRE(big != nullptr);
			memset(big, 1, n);
			ebb_stats_t mid = settled();
			CHECK(mid.allocated >= before.allocated + n);
			ebb_arena_free(a, big);
			ebb_stats_t after = settled();
			CHECK(after.allocated + n <= mid.allocated);
			CHECK(after.mapped == stats_parts(after));
		}
	}
	/* A small block that must be aligned above a page gets its own pages too. */
	void *al = ebb_arena_aligned_alloc(a, 8192, 10);
	REQUIRE(al != nullptr);
	CHECK(is_aligned(al, 8192));
	ebb_arena_free(a, al);
	ebb_arena_destroy(a);
}

TEST_CASE("bad arguments to the arena API", "[arena]")
{
	errno = 0;
	CHECK(ebb_arena_create(1 * MiB + 1, 0) == nullptr);
	CHECK(errno == EINVAL);
	errno = 0;
	CHECK(ebb_arena_create(0, 2) == nullptr);
	CHECK(errno == EINVAL);

	ebb_arena_t *a = ebb_arena_create(1 * MiB, 0); /* the largest first chunk */
	REQUIRE(a != nullptr);
	for (size_t align : {size_t(0), size_t(3), size_t(48), size_t(4097)}) {
		errno = 0;
		CHECK(ebb_arena_aligned_alloc(a, align, 8) == nullptr);
		CHECK(errno == EINVAL);
	}
	for (size_t n : {SIZE_MAX, SIZE_MAX - 4096, (size_t)1 << 50}) {
		errno = 0;
		CHECK(ebb_arena_alloc(a, opaque(n)) == nullptr);
		CHECK(errno == ENOMEM);
	}
	errno = 0;
	CHECK(ebb_arena_aligned_alloc(a, (size_t)1 << 50, 1) == nullptr);
	CHECK(errno == ENOMEM);
	/* Size 0: distinct blocks, like malloc(0). */
	void *z1 = ebb_arena_alloc(a, 0), *z2 = ebb_arena_alloc(a, 0);
	CHECK(z1 != nullptr);
	CHECK(z2 != nullptr);
	CHECK(z1 != z2);
	/* The arena is unharmed. */
	char *p = static_cast<char *>(ebb_arena_alloc(a, 1000));
	REQUIRE(p != nullptr);
	fill(p, 1000, 3);
	CHECK(first_mismatch(p, 1000, 3) == 1000);
	ebb_arena_destroy(a);
}

/* The tests below run pieces in a forked child. ThreadSanitizer does not
 * support forking a multithreaded process (the allocator's background
 * thread exists): they run in the other builds. */
#if !EBB_TEST_TSAN
TEST_CASE("free, realloc and malloc_usable_size report arena and pool blocks and abort", "[arena]")
{
	enum What { CUT, OWN, HUGE, HANDLE, POOL_OBJ, POOL_HANDLE };
	for (const Api *api : all_apis()) {
		for (int what = CUT; what <= POOL_HANDLE; what++) {
			for (int op = 0; op < 3; op++) {
				INFO("api " << api->name << " block kind " << what << " call " << op);
				const char *func = op == 0 ? "free" : op == 1 ? "realloc" : "malloc_usable_size";
				/* The block is made before the fork, so the parent knows its address. */
				ebb_arena_t *a = ebb_arena_create(0, 0);
				ebb_pool_t *pool = ebb_pool_create(40, 0, 0);
				REQUIRE(a != nullptr);
				REQUIRE(pool != nullptr);
				void *p = what == CUT ? ebb_arena_alloc(a, 100)
					  : what == OWN ? ebb_arena_alloc(a, 1 * MiB)
					  : what == HUGE ? ebb_arena_alloc(a, 6 * MiB)
					  : what == HANDLE ? static_cast<void *>(a)
					  : what == POOL_OBJ ? ebb_pool_alloc(pool)
							     : static_cast<void *>(pool);
				REQUIRE(p != nullptr);
				ChildResult c = run_child([&] {
					if (op == 0) api->free_(p);
					else if (op == 1) (void)api->realloc_(p, 200);
					else (void)api->usable_(p);
					return 0; /* not reached: the report aborts */
				});
				const char *reason = what <= HUGE ? kArenaBlock
						     : what == HANDLE ? kArenaHandle
						     : what == POOL_OBJ ? kPoolObject
									: kPoolHandle;
				CHECK(c.signal == SIGABRT);
				CHECK(c.err == bad_pointer_line(func, p, reason));
				ebb_pool_destroy(pool);
				ebb_arena_destroy(a);
			}
		}
	}
}

TEST_CASE("under on_error=warn, free and realloc of an arena block leave it alone", "[arena]")
{
	ChildResult c = run_child([] {
		if (ebb_option_set("on_error", "warn") != 0) return 1;
		ebb_arena_t *a = ebb_arena_create(0, 0);
		if (!a) return 2;
		int fails = 0;
		for (const Api *api : all_apis()) {
			for (size_t n : {size_t(100), 1 * MiB}) {
				char *p = static_cast<char *>(ebb_arena_alloc(a, n));
				if (!p) return 3;
				fill(p, n, 7);
				api->free_(p);
				if (api->realloc_(p, 2 * n) != nullptr) fails |= 4;
				if (api->usable_(p) != 0) fails |= 8;
				if (first_mismatch(p, n, 7) != n) fails |= 16;
			}
		}
		ebb_arena_destroy(a);
		return fails;
	});
	CHECK(c.exited);
	CHECK(c.code == 0);
	size_t lines = (size_t)std::count(c.err.begin(), c.err.end(), '\n');
	CHECK(lines == 6 * all_apis().size());
	CHECK(c.err.find(kArenaBlock) != std::string::npos);
}

TEST_CASE("bad arena handles and blocks given to ebb_arena_free are reported", "[arena]")
{
	ebb_arena_t *a = ebb_arena_create(0, 0);
	ebb_arena_t *b = ebb_arena_create(0, 0);
	REQUIRE(a != nullptr);
	REQUIRE(b != nullptr);
	void *pa = ebb_arena_alloc(a, 100);
	void *pb = ebb_arena_alloc(b, 100);
	g_sink = ebb_arena_alloc(b, 100); /* pb is no longer b's newest block */
	void *own = ebb_arena_alloc(a, 1 * MiB);
	void *m = ebb_malloc(64);
	alignas(64) char local[256] = {0}; /* the arena check reads a few words of it */
	ebb_arena_t *dead = ebb_arena_create(0, 0);
	REQUIRE(dead != nullptr);
	ebb_arena_destroy(dead);
	REQUIRE((pa && pb && own && m));

	ChildResult c = run_child([&] {
		if (ebb_option_set("on_error", "warn") != 0) return 1;
		ebb_arena_free(a, pb);                            /* another arena's block */
		ebb_arena_free(a, m);                             /* a malloc block */
		ebb_arena_free(a, static_cast<char *>(own) + 64); /* inside a block of its own */
		ebb_arena_free(a, a);                             /* the arena itself */
		errno = 0;
		if (ebb_arena_alloc(reinterpret_cast<ebb_arena_t *>(m), 10) != nullptr || errno != EINVAL) return 2;
		errno = 0;
		if (ebb_arena_alloc(reinterpret_cast<ebb_arena_t *>(local), 10) != nullptr || errno != EINVAL)
			return 3;
		errno = 0;
		if (ebb_arena_alloc(dead, 10) != nullptr || errno != EINVAL) return 4;
		errno = 0;
		if (ebb_arena_alloc(nullptr, 10) != nullptr || errno != EINVAL) return 5;
		ebb_arena_reset(dead);
		/* a is unharmed */
		char *p = static_cast<char *>(ebb_arena_alloc(a, 64));
		if (!p) return 6;
		memset(p, 1, 64);
		return 0;
	});
	CHECK(c.exited);
	CHECK(c.code == 0);
	std::string want = bad_pointer_line("ebb_arena_free", pb, "a block of another ebb_arena") +
			   bad_pointer_line("ebb_arena_free", m, "not a block of this ebb_arena") +
			   bad_pointer_line("ebb_arena_free", static_cast<char *>(own) + 64,
				       "not the start of a block of this ebb_arena") +
			   bad_pointer_line("ebb_arena_free", a, "the ebb_arena itself, not one of its blocks") +
			   bad_pointer_line("ebb_arena_alloc", m, kNotArena) + bad_pointer_line("ebb_arena_alloc", local, kNotArena) +
			   bad_pointer_line("ebb_arena_alloc", dead, kNotArena) + bad_pointer_line("ebb_arena_alloc", nullptr, kNotArena) +
			   bad_pointer_line("ebb_arena_reset", dead, kNotArena);
	CHECK(c.err == want);
	ebb_free(m);
	ebb_arena_destroy(a);
	ebb_arena_destroy(b);
}

TEST_CASE("an arena used from a thread that does not own it is reported; adopt hands it over", "[arena]")
{
	ebb_arena_t *a = ebb_arena_create(0, 0);
	REQUIRE(a != nullptr);
	void *p = ebb_arena_alloc(a, 10);
	REQUIRE(p != nullptr);

	/* Default on_error=abort: the first wrong-thread call ends the process. */
	ChildResult c = run_child([&] {
		std::thread t([&] { g_sink = ebb_arena_alloc(a, 10); });
		t.join();
		return 0;
	});
	CHECK(c.signal == SIGABRT);
	CHECK(c.err == bad_pointer_line("ebb_arena_alloc", a, kOtherThread));

	/* on_error=warn: each call is reported and does nothing. */
	c = run_child([&] {
		if (ebb_option_set("on_error", "warn") != 0) return 1;
		int rc = 0;
		std::thread t([&] {
			errno = 0;
			if (ebb_arena_alloc(a, 10) != nullptr || errno != EPERM) rc = 2;
			errno = 0;
			if (ebb_arena_aligned_alloc(a, 64, 10) != nullptr || errno != EPERM) rc = 3;
			ebb_arena_free(a, p);
			ebb_arena_reset(a);
			ebb_arena_destroy(a);
			/* Handed over: now this thread owns it. */
			ebb_arena_adopt(a);
			if (ebb_arena_alloc(a, 10) == nullptr) rc = 4;
		});
		t.join();
		if (rc) return rc;
		errno = 0;
		if (ebb_arena_alloc(a, 10) != nullptr || errno != EPERM) return 5; /* no longer the owner */
		ebb_arena_adopt(a);
		if (ebb_arena_alloc(a, 10) == nullptr) return 6;
		ebb_arena_destroy(a);
		return 0;
	});
	CHECK(c.exited);
	CHECK(c.code == 0);
	CHECK(c.err == bad_pointer_line("ebb_arena_alloc", a, kOtherThread) +
			       bad_pointer_line("ebb_arena_aligned_alloc", a, kOtherThread) +
			       bad_pointer_line("ebb_arena_free", a, kOtherThread) +
			       bad_pointer_line("ebb_arena_reset", a, kOtherThread) +
			       bad_pointer_line("ebb_arena_destroy", a, kOtherThread) +
			       bad_pointer_line("ebb_arena_alloc", a, kOtherThread));
	ebb_arena_destroy(a);
}

#endif /* !EBB_TEST_TSAN */

TEST_CASE("a shared arena under several threads", "[arena]")
{
	constexpr int kThreads = 4;
	ebb_arena_t *a = ebb_arena_create(16 * KiB, EBB_SHARED);
	REQUIRE(a != nullptr);
	for (int round = 0; round < 3; round++) {
		std::vector<std::vector<Block>> held(kThreads);
		std::vector<std::thread> threads;
		std::atomic<int> failures{0};
		for (int t = 0; t < kThreads; t++) {
			held[t].reserve(20000);
			threads.emplace_back([&, t] {
				Rng rng(t * 1000 + round);
				for (unsigned i = 0; i < 15000; i++) {
					unsigned seed = (unsigned)t << 24 | i;
					size_t n = i % 1000 == 999 ? 100 * KiB + rng.below(4096) : 1 + rng.log_size(2048);
					size_t align = i % 7 == 0 ? (size_t)1 << rng.below(13) : 16;
					char *p = static_cast<char *>(align == 16 ? ebb_arena_alloc(a, n)
										  : ebb_arena_aligned_alloc(a, align, n));
					if (!p || !is_aligned(p, align)) {
						failures++;
						continue;
					}
					fill(p, n, seed);
					if (i % 1000 == 999 && rng.below(2)) { /* a block of its own goes back */
						ebb_arena_free(a, p);
						continue;
					}
					held[t].push_back({p, n, seed});
				}
			});
		}
		for (auto &th : threads) th.join();
		CHECK(failures == 0);
		std::vector<Block> all;
		for (auto &h : held) all.insert(all.end(), h.begin(), h.end());
		check_blocks(all);
		ebb_arena_reset(a);
	}
	ebb_arena_destroy(a);
}
