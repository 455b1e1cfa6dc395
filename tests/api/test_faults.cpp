/* test_faults.cpp: the kernel saying no. Through the hidden options
 * fault_map / fault_purge / fault_unmap (os_fault_set), every allocation that
 * needs new memory returns NULL with errno ENOMEM (C++ new throws
 * std::bad_alloc), nothing already allocated is damaged or lost, the stats
 * identity holds, and allocation works again as soon as the kernel does; a
 * failed madvise or munmap during decay keeps the memory counted (dirty, or
 * mapped) and it goes back once the kernel agrees. [ulimit] runs the same
 * kind of checks under a real address-space limit (ulimit -v, see
 * CMakeLists.txt).
 *
 * Fault injection is process-wide, so each case runs in a forked child that
 * reports through its exit status (child_util.h). */
#include "api_util.h"
#include "child_util.h"

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <functional>
#include <new>
#include <thread>
#include <vector>

using namespace apitest;

namespace {

struct Block {
	void *p;
	size_t n;
	unsigned seed;
};

/* Quiescent stats add up (a few tries: the allocator's own thread may be
 * between two counters). */
bool stats_add_up()
{
	for (int i = 0; i < 50; i++) {
		ebb_stats_t s = stats();
		if (s.mapped == stats_parts(s)) return true;
		std::this_thread::yield();
	}
	return false;
}

bool intact(const std::vector<Block> &v)
{
	for (const Block &b : v)
		if (first_mismatch(b.p, b.n, b.seed) != b.n) return false;
	return true;
}

void free_all(const Api *a, std::vector<Block> &v)
{
	for (const Block &b : v) a->free_(b.p);
	v.clear();
}

int set(const char *name, const char *value)
{
	return ebb_option_set(name, value);
}

/* Blocks of every kind the program holds when the kernel starts refusing. */
int make_witnesses(const Api *a, std::vector<Block> &v)
{
	const size_t sizes[] = {16, 100, 1000, 9000, 32 * KiB, 40 * KiB, 300 * KiB, 3 * MiB, 6 * MiB};
	unsigned seed = 1;
	for (size_t n : sizes) {
		for (int i = 0; i < 3; i++) {
			void *p = a->malloc_(n);
			if (p == nullptr) return 1;
			fill(p, n, seed);
			v.push_back({p, n, seed++});
		}
	}
	void *q = a->aligned_alloc_(64 * KiB, 100 * KiB);
	if (q == nullptr) return 2;
	fill(q, 100 * KiB, seed);
	v.push_back({q, 100 * KiB, seed++});
	return 0;
}

/* Expects NULL with ENOMEM from a call that needs a new mapping. */
#define EXPECT_ENOMEM(expr, code)                                                    \
	do {                                                                         \
		errno = 0;                                                           \
		void *r_ = (expr);                                                   \
		if (r_ != nullptr || errno != ENOMEM) return code;                   \
	} while (0)

int refuse_everything(const Api *a)
{
	std::vector<Block> held;
	if (int rc = make_witnesses(a, held)) return rc;
	Block &huge = held[held.size() - 2]; /* a 6 MiB block */
	std::vector<Block> got;
	got.reserve(1100000); /* no vector growth once memory is full */
	if (set("fault_map", "always") != 0) return 3;

	/* Requests that need a mapping of their own. */
	EXPECT_ENOMEM(a->malloc_(64 * MiB), 10);
	EXPECT_ENOMEM(a->calloc_(1, 64 * MiB), 11);
	EXPECT_ENOMEM(a->aligned_alloc_(8 * MiB, 8 * MiB), 12);
	EXPECT_ENOMEM(a->realloc_(huge.p, 64 * MiB), 13);
	void *out = nullptr;
	if (a->posix_memalign_(&out, 4096, 64 * MiB) != ENOMEM || out != nullptr) return 14;
#if EBB_TEST_OVERRIDE
	if (a == &std_api()) {
		bool threw = false;
		try {
			char *c = new char[opaque(64 * MiB)];
			delete[] c;
		} catch (const std::bad_alloc &) {
			threw = true;
		}
		if (!threw) return 15;
		if (new (std::nothrow) char[opaque(64 * MiB)] != nullptr) return 16;
	}
#endif
	if (!intact(held)) return 17;
	/* A new thread works too, with or without a cache of its own. */
	int thread_rc = 0;
	std::thread t([&] {
		for (int i = 0; i < 100; i++) {
			errno = 0;
			void *p = a->malloc_(48);
			if (p == nullptr && errno != ENOMEM) thread_rc = 23;
			a->free_(p);
		}
	});
	t.join();
	if (thread_rc) return thread_rc;

	/* Everything the mapped memory still holds can be had; then every
	 * request of that size fails with ENOMEM. With no new mapping, at most
	 * (mapped - allocated) / n more blocks of n bytes fit (the rest of
	 * mapped is caches, free blocks and pages, metadata and waste): one
	 * more means memory handed out twice. (A fixed cap of 200 000 blocks
	 * failed a run in which the child had mapped superblocks on both CPUs'
	 * page heaps and a span of small blocks took the other heap's dirty
	 * runs: more than 9.6 MB free for 48-byte blocks.) */
	unsigned seed = 1000;
	const size_t sizes[] = {48, 1000, 9000, 70 * KiB, 500 * KiB};
	for (size_t n : sizes) {
		bool failed = false;
		ebb_stats_t st = stats();
		size_t most = (st.mapped - st.allocated) / n + 1;
		if (got.size() + most > got.capacity()) return 28; /* got must not grow */
		for (size_t i = 0; i < most && !failed; i++) {
			errno = 0;
			void *p = a->malloc_(n);
			if (p == nullptr) {
				if (errno != ENOMEM) return 20;
				failed = true;
				break;
			}
			fill(p, n, seed);
			got.push_back({p, n, seed++});
		}
		if (!failed) return 21;
		EXPECT_ENOMEM(a->malloc_(n), 22); /* and again */
	}
	if (!intact(held) || !intact(got)) return 24;
	if (!stats_add_up()) return 25;

	/* Freed memory is reused without asking the kernel. */
	for (size_t i = 0; i < got.size(); i += 2) {
		a->free_(got[i].p);
		got[i].p = nullptr;
	}
	for (size_t i = 0; i < got.size(); i += 2) {
		void *p = a->malloc_(got[i].n);
		if (p == nullptr) return 26;
		fill(p, got[i].n, got[i].seed);
		got[i].p = p;
	}
	if (!intact(held) || !intact(got)) return 27;

	/* The kernel agrees again: so does the allocator, at once. */
	if (set("fault_map", "off") != 0) return 4;
	void *big = a->malloc_(64 * MiB);
	if (big == nullptr) return 30;
	fill(big, 64 * MiB, 7);
	held.push_back({big, 64 * MiB, 7});
	void *r = a->realloc_(huge.p, 20 * MiB);
	if (r == nullptr) return 31;
	huge.p = r;
	for (int i = 0; i < 20000; i++) {
		void *p = a->malloc_(48);
		if (p == nullptr) return 32;
		got.push_back({p, 0, 0});
	}
	if (!intact(held) || !intact(got)) return 33;
	free_all(a, got);
	free_all(a, held);
	ebb_trim();
	return stats_add_up() ? 0 : 34;
}

/* Only the n-th mapping call fails: huge blocks map one each, so exactly the
 * n-th of them returns NULL, and the next one works again. Then smaller
 * blocks, whose new superblocks a refusal may also take from another CPU's
 * free pages: at most one fails. */
int nth_map_fails(const Api *a, int nth)
{
	std::vector<Block> held;
	held.reserve(4000);
	if (int rc = make_witnesses(a, held)) return rc;
	char v[16];
	snprintf(v, sizeof v, "%d", nth);
	if (set("fault_map", v) != 0) return 3;
	int nulls = 0, failed_at = -1;
	unsigned seed = 500;
	for (int i = 0; i < 20; i++) {
		errno = 0;
		void *p = a->malloc_(5 * MiB);
		if (p == nullptr) {
			if (errno != ENOMEM) return 10;
			nulls++;
			failed_at = i;
			continue;
		}
		fill(p, 5 * MiB, seed);
		held.push_back({p, 5 * MiB, seed++});
	}
	if (nulls != 1 || failed_at != nth - 1) return 11;
	if (set("fault_map", v) != 0) return 3;
	nulls = 0;
	for (int i = 0; i < 2000; i++) {
		errno = 0;
		void *p = a->malloc_(20 * KiB);
		if (p == nullptr) {
			if (errno != ENOMEM) return 12;
			nulls++;
			continue;
		}
		fill(p, 20 * KiB, seed);
		held.push_back({p, 20 * KiB, seed++});
	}
	if (nulls > 1) return 13;
	if (!intact(held)) return 14;
	if (!stats_add_up()) return 15;
	set("fault_map", "off");
	free_all(a, held);
	ebb_trim();
	return stats_add_up() ? 0 : 16;
}

/* A random mix of every call while a fifth of the mappings, a third of the
 * madvise calls and a third of the munmap calls fail. */
int random_faults(const Api *a)
{
	if (set("background_thread", "0") || set("decay_ms", "0")) return 3;
	if (set("fault_map", "200000ppm") || set("fault_purge", "300000ppm") ||
	    set("fault_unmap", "300000ppm"))
		return 4;
	Rng rng(99);
	std::vector<Block> live;
	int nulls = 0;
	for (int op = 0; op < 6000; op++) {
		unsigned r = (unsigned)rng.below(100);
		if (r < 45 || live.empty()) {
			size_t n = rng.below(20) == 0 ? 4 * MiB + rng.below(4 * MiB) : rng.log_size(300 * KiB);
			errno = 0;
			void *p = rng.below(4) == 0 ? a->calloc_(1, n) : a->malloc_(n);
			if (p == nullptr) {
				if (errno != ENOMEM) return 10;
				nulls++;
				continue;
			}
			fill(p, n, (unsigned)op);
			live.push_back({p, n, (unsigned)op});
		} else if (r < 65) {
			Block &b = live[rng.below(live.size())];
			size_t n = rng.below(20) == 0 ? 5 * MiB : 1 + rng.log_size(300 * KiB);
			errno = 0;
			void *q = a->realloc_(b.p, n);
			if (q == nullptr) {
				if (errno != ENOMEM) {
					fprintf(stderr, "realloc(%p [%zu], %zu): NULL, errno %d\n", b.p, b.n, n, errno);
					return 11;
				}
				nulls++;
				if (first_mismatch(b.p, b.n, b.seed) != b.n) return 12;
				continue;
			}
			size_t keep = b.n < n ? b.n : n;
			if (first_mismatch(q, keep, b.seed) != keep) return 13;
			fill(q, n, b.seed);
			b.p = q;
			b.n = n;
		} else {
			size_t i = rng.below(live.size());
			if (first_mismatch(live[i].p, live[i].n, live[i].seed) != live[i].n) return 14;
			a->free_(live[i].p);
			live[i] = live.back();
			live.pop_back();
		}
		if (op % 1000 == 999) ebb_trim();
	}
	if (nulls == 0) return 15;
	if (!intact(live)) return 16;
	if (!stats_add_up()) return 17;
	set("fault_map", "off");
	set("fault_purge", "off");
	set("fault_unmap", "off");
	free_all(a, live);
	ebb_trim();
	if (!stats_add_up()) return 18;
	ebb_stats_t s = stats();
	return s.dirty == 0 ? 0 : 19;
}

/* Decay with madvise and munmap refused: the pages stay counted as dirty
 * and mapped, and go back once the kernel agrees. */
int decay_refused(const Api *a)
{
	if (set("background_thread", "0") || set("decay_ms", "-1")) return 3;
	ebb_trim();
	ebb_stats_t s0 = stats();
	std::vector<Block> v;
	for (int i = 0; i < 24; i++) {
		void *p = a->malloc_(1 * MiB);
		if (p == nullptr) return 4;
		memset(p, 1, 1 * MiB);
		v.push_back({p, 1 * MiB, 0});
	}
	void *huge = a->malloc_(8 * MiB);
	if (huge == nullptr) return 5;
	memset(huge, 2, 8 * MiB);
	if (set("fault_purge", "always") || set("fault_unmap", "always")) return 6;
	free_all(a, v);
	a->free_(huge);
	ebb_stats_t s1 = stats();
	if (s1.mapped != stats_parts(s1)) return 10;
	if (s1.dirty < s0.dirty + 32 * MiB) return 11;
	if (s1.bytes_purged != s0.bytes_purged) return 12;

	int rc = ebb_trim(); /* every madvise and munmap fails */
	ebb_stats_t s2 = stats();
	if (rc != 0) return 13;
	if (s2.mapped != stats_parts(s2)) return 14;
	if (s2.dirty < s0.dirty + 32 * MiB) return 15;
	if (s2.bytes_purged != s0.bytes_purged || s2.superblocks_unmapped != s0.superblocks_unmapped) return 16;
	if (s2.mapped != s1.mapped || s2.superblocks != s1.superblocks) return 17;
	if (s2.madvise_calls <= s1.madvise_calls) return 18; /* it did try */

	/* madvise works again, munmap not yet: the pages are purged and the
	 * superblocks stay mapped. */
	set("fault_purge", "off");
	ebb_trim();
	ebb_stats_t s3 = stats();
	if (s3.mapped != stats_parts(s3)) return 20;
	if (s3.dirty != 0) {
		fprintf(stderr, "after purge: %s\n", stats_str(s3).c_str());
		return 21;
	}
	if (s3.bytes_purged < s0.bytes_purged + 32 * MiB) return 22;
	if (s3.superblocks_unmapped != s0.superblocks_unmapped || s3.mapped != s1.mapped) return 23;

	/* munmap works again: the empty superblocks and the huge block go. */
	set("fault_unmap", "off");
	ebb_trim();
	ebb_stats_t s4 = stats();
	if (s4.mapped != stats_parts(s4)) return 30;
	if (s4.superblocks_unmapped < s0.superblocks_unmapped + 2) return 31;
	if (s4.mapped + 32 * MiB > s1.mapped) return 32;
	/* and the memory is usable as ever */
	void *p = a->malloc_(20 * MiB);
	if (p == nullptr) return 33;
	fill(p, 20 * MiB, 3);
	bool ok = first_mismatch(p, 20 * MiB, 3) == 20 * MiB;
	a->free_(p);
	return ok ? 0 : 34;
}

void expect_child_ok(const char *what, std::function<int()> fn)
{
	ChildResult r = run_child(fn);
	INFO(what << ": child exit code " << r.code << " (the failed check), signal " << r.signal
		  << ", stderr: " << r.err);
	CHECK(r.exited);
	CHECK(r.code == 0);
}

} // namespace

TEST_CASE("every mapping refused: NULL with ENOMEM where new memory is needed, nothing lost, recovery",
	  "[faults]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		expect_child_ok("refuse_everything", [=] { return refuse_everything(a); });
	}
}

TEST_CASE("the n-th mapping refused: exactly one allocation fails, the next one works", "[faults]")
{
	for (const Api *a : all_apis()) {
		for (int nth : {1, 2, 3, 5, 8, 13}) {
			INFO("api " << a->name << ", nth " << nth);
			expect_child_ok("nth_map_fails", [=] { return nth_map_fails(a, nth); });
		}
	}
}

TEST_CASE("random mmap, madvise and munmap failures under a mix of calls", "[faults]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		expect_child_ok("random_faults", [=] { return random_faults(a); });
	}
}

TEST_CASE("decay with madvise and munmap refused keeps the memory counted, and returns it later",
	  "[faults]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		expect_child_ok("decay_refused", [=] { return decay_refused(a); });
	}
}

TEST_CASE("fault options: bad values are refused, good ones accepted", "[faults]")
{
	ChildResult r = run_child([] {
		if (ebb_option_set("fault_map", "banana") != -1 || errno != EINVAL) return 1;
		if (ebb_option_set("fault_map", "2000000ppm") != -1) return 2;
		if (ebb_option_set("fault_nothing", "1") != -1) return 3;
		for (const char *v : {"off", "always", "3", "10ppm", "0"})
			if (ebb_option_set("fault_purge", v) != 0) return 4;
		return 0;
	});
	CHECK(r.exited);
	CHECK(r.code == 0);
}

/* Run under `ulimit -v` (CMakeLists.txt): the kernel's own refusal. Nothing
 * that allocates (Catch2 included) runs between reaching the limit and
 * freeing: the results are kept in plain variables and checked after. */
TEST_CASE("a real address-space limit: allocate until NULL, ENOMEM, free, allocate again", "[ulimit]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		std::vector<Block> v;
		v.reserve(1100000);
		size_t first_round = 0;
		for (int round = 0; round < 2; round++) {
			void *p = nullptr;
			for (int i = 0; i < 100000; i++) {
				p = a->malloc_(1 * MiB);
				if (p == nullptr) break;
				fill(p, 4096, (unsigned)i);
				v.push_back({p, 4096, (unsigned)i});
			}
			int large_errno = errno;
			bool large_null = p == nullptr;
			size_t large = v.size();
			/* small blocks from what is left, until that fails too */
			for (int i = 0; i < 1000000; i++) {
				errno = 0;
				p = a->malloc_(200);
				if (p == nullptr) break;
				fill(p, 200, (unsigned)i);
				v.push_back({p, 200, (unsigned)i});
			}
			int small_errno = errno;
			bool small_null = p == nullptr;
			errno = 0;
			bool huge_null = a->malloc_(opaque(64 * MiB)) == nullptr;
			int huge_errno = errno;
			bool threw = true;
#if EBB_TEST_OVERRIDE
			if (a == &std_api()) {
				threw = false;
				try {
					char *c = new char[opaque(64 * MiB)];
					delete[] c;
				} catch (const std::bad_alloc &) {
					threw = true;
				}
			}
#endif
			bool ok = intact(v);
			size_t small = v.size() - large;
			free_all(a, v);
			ebb_trim();
			INFO("round " << round << ": " << large << " blocks of 1 MiB, then " << small
				      << " of 200 B");
			CHECK(large_null);
			CHECK(large_errno == ENOMEM);
			CHECK(small_null);
			CHECK(small_errno == ENOMEM);
			CHECK(huge_null);
			CHECK(huge_errno == ENOMEM);
			CHECK(threw);
			CHECK(ok);
			CHECK(large >= 16);
			if (round == 0)
				first_round = large;
			else
				CHECK(large * 10 >= first_round * 9); /* the freed memory came back */
			CHECK(stats_add_up());
		}
	}
}
