/* test_realloc_fast.cpp: realloc's fast paths (core/api/api.c, realloc_impl
 * and realloc_slow; issue 14's realloc rows) keep realloc's contract.
 *
 *  - A block that keeps its class, or a page run that keeps its pages, is
 *    returned as it is (same pointer, nothing copied).
 *  - Strings grown a few bytes at a time, several at once, through every
 *    class, the 32 KiB boundary to page runs and the 1 MiB boundary to a
 *    mapping of their own, keep every byte; growth by small steps moves a
 *    block a logarithmic number of times, not at every class.
 *  - Sizes above the largest request fail with ENOMEM and leave the block
 *    as it was; realloc(p, 0) frees.
 *  - A freed or interior pointer passed to realloc is reported with its
 *    address and aborts, on the fast path too.
 *  - Quiescent stats balance: after the blocks are freed, `allocated` is
 *    back where it started. */
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "api_util.h"
#include "child_util.h"

using namespace apitest;

namespace {

/* Starts the allocator's thread (8 MiB freed) and waits until it runs. Its
 * first pthread_create allocates glibc's DTV for it, kept for good with the
 * cached stack; a process that has never had a second thread starts it only
 * once 4 MiB are dirty, which would be inside a section that compares
 * `allocated` before and after. */
void start_allocator_thread()
{
	std::vector<void *> v;
	for (int i = 0; i < 32; i++) {
		void *p = ebb_malloc(256 * KiB);
		REQUIRE(p != nullptr);
		memset(p, 1, 256 * KiB);
		v.push_back(p);
	}
	for (void *p : v) ebb_free(p);
	for (int tries = 0; tries < 200; tries++) {
		DIR *d = opendir("/proc/self/task");
		REQUIRE(d != nullptr);
		bool seen = false;
		for (struct dirent *e; !seen && (e = readdir(d)) != nullptr;) {
			char path[300], comm[32] = {0};
			snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) continue;
			seen = read(fd, comm, sizeof comm - 1) > 0 && strncmp(comm, "ebb-background", 14) == 0;
			close(fd);
		}
		closedir(d);
		if (seen) return;
		usleep(10000);
	}
	WARN("the allocator's thread did not start (background_thread=0?)");
}

/* The byte at position i of buffer `seed`: a buffer moved to the wrong
 * place, or shifted, does not verify. */
inline unsigned char byte_at(size_t i, unsigned seed)
{
	return (unsigned char)(i * 131u + seed * 29u + (i >> 8) * 7u);
}

void put(unsigned char *p, size_t from, size_t to, unsigned seed)
{
	for (size_t i = from; i < to; i++) p[i] = byte_at(i, seed);
}

/* The first offset below n that does not hold its byte, n if all do. */
size_t bad_at(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != byte_at(i, seed)) return i;
	return n;
}

struct Built {
	int bad = 0;       /* number of a failed check, 0 if none */
	size_t moves = 0;  /* reallocs that returned another address */
	size_t calls = 0;
};

/* `count` strings grown round robin by exact-size reallocs of 1..max_step
 * bytes up to `target` each (the pattern of bench/realloc --mode=string).
 * Every byte is checked each time a block moves, and at the end. No Catch2
 * macro inside: the caller compares stats around it. */
Built grow_strings(const Api *a, size_t count, size_t target, size_t max_step, unsigned seed)
{
	Built r;
	std::vector<unsigned char *> p(count, nullptr);
	std::vector<size_t> len(count, 0);
	Rng rng(seed);
	for (bool left = true; left && r.bad == 0;) {
		left = false;
		for (size_t k = 0; k < count && r.bad == 0; k++) {
			if (len[k] >= target) continue;
			left = true;
			size_t step = 1 + rng.below(max_step);
			size_t n = len[k] + step > target ? target : len[k] + step;
			auto *q = static_cast<unsigned char *>(a->realloc_(p[k], n));
			r.calls++;
			if (q == nullptr) {
				r.bad = 1;
				break;
			}
			if (p[k] != nullptr && q != p[k]) {
				r.moves++;
				if (bad_at(q, len[k], seed + (unsigned)k) != len[k]) r.bad = 2;
			}
			if (a->usable_(q) < n) r.bad = 3;
			put(q, len[k], n, seed + (unsigned)k);
			p[k] = q;
			len[k] = n;
		}
	}
	for (size_t k = 0; k < count; k++) {
		if (r.bad == 0 && p[k] != nullptr && bad_at(p[k], len[k], seed + (unsigned)k) != len[k]) r.bad = 4;
		a->free_(p[k]);
	}
	return r;
}

/* The sizes where a class ends, found through malloc_usable_size. */
std::vector<size_t> class_sizes(const Api *a)
{
	std::vector<size_t> out;
	for (size_t n = 1; n <= 32 * KiB;) {
		void *p = a->malloc_(n);
		size_t u = a->usable_(p);
		a->free_(p);
		out.push_back(u);
		n = u + 1;
	}
	return out;
}

} // namespace

TEST_CASE("a realloc that stays in its class returns the same block, contents and all", "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t u : class_sizes(a)) {
			INFO("class of " << u << " bytes");
			auto *p = static_cast<unsigned char *>(a->malloc_(u));
			REQUIRE(p != nullptr);
			REQUIRE(a->usable_(p) == u);
			put(p, 0, u, 5);
			/* up to the end of the class, down to just over half of it */
			for (size_t n : {u, u - 1, u / 2 + u / 4, u / 2 + 1, u}) {
				void *q = a->realloc_(p, opaque(n));
				CHECK(q == p);
			}
			CHECK(bad_at(p, u, 5) == u);
			a->free_(p);
		}
	}
}

TEST_CASE("a page run keeps its address while realloc stays within its pages", "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		/* Page runs; the sizes asked stay above half of what the run
		 * holds, up to all of it. */
		for (size_t n0 : {45 * KiB + 100, 197 * KiB + 5}) {
			auto *p = static_cast<unsigned char *>(a->malloc_(n0));
			REQUIRE(p != nullptr);
			size_t u = a->usable_(p);
			REQUIRE(u >= n0);
			put(p, 0, n0, 9);
			for (size_t n : {u, n0 + 1, n0 - 100, u / 2 + 1, u}) {
				INFO("from " << n0 << " (usable " << u << ") to " << n);
				void *q = a->realloc_(p, opaque(n));
				CHECK(q == p);
				CHECK(a->usable_(p) == u);
			}
			CHECK(bad_at(p, n0, 9) == n0);
			a->free_(p);
		}
	}
}

/* realloc_impl tells a small block from a page run without a branch: one
 * test keeps p if it is either and stays at least half used. What is
 * neither must still go to the checked path: a page run's interior page
 * (page-aligned, its pagemap entry names the run's first page) and a
 * superblock's header page (no span); a freed run is the test above. A
 * page run shrunk below the largest class but at least half used stays
 * where it is (the slow path keeps it). */
TEST_CASE("realloc's one test for small blocks and page runs lets nothing else through",
	  "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		auto *run = static_cast<unsigned char *>(a->malloc_(40 * KiB));
		REQUIRE(run != nullptr);
		size_t u = a->usable_(run);
		put(run, 0, u, 5);
		/* Shrunk to a small size at least half of what it holds. */
		void *q = a->realloc_(run, opaque(u / 2 + 16));
		CHECK(q == run);
		CHECK(a->usable_(run) == u);
		CHECK(bad_at(run, u / 2 + 16, 5) == u / 2 + 16);
		/* Its second page: page-aligned, inside a LARGE span. */
		unsigned char *inner = run + 4096;
		ChildResult r = run_child([=] {
			void *q2 = a->realloc_(inner, 4096);
			return q2 == inner ? 1 : 2;
		});
		CHECK(r.signal == SIGABRT);
		CHECK(r.err == bad_pointer_line("realloc", inner, "not the start of a block"));
		/* A header page of the superblock a small block lives in. */
		void *small = a->malloc_(64);
		REQUIRE(small != nullptr);
		auto *header = reinterpret_cast<unsigned char *>((uintptr_t)small & ~(uintptr_t)(4 * MiB - 1)) + 4096;
		r = run_child([=] {
			void *q2 = a->realloc_(header, 4096);
			return q2 == header ? 1 : 2;
		});
		CHECK(r.signal == SIGABRT);
		std::string head = bad_pointer_line("realloc", header, "");
		head.pop_back();
		CHECK(r.err.compare(0, head.size(), head) == 0);
		a->free_(small);
		a->free_(run);
	}
}

/* A page run of at most 15 pages carries its size in its first page's map
 * entry, which realloc's fast path trusts (core/pages/superblock.h,
 * EBB_PMAP_RUN_SHIFT): the entry must follow the run. Freed, also when it
 * merges into a free run left of it (its first page is then inside that
 * run, and no boundary tag is written there), realloc must report it.
 * Shrunk in place to 10 pages, realloc must not keep it at a size over the
 * pages it gave up, which the next blocks may hold. */
TEST_CASE("a short page run's size in the page map follows its free and its resizes", "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		/* 10-page runs, freed: alone, and the upper of two side by side
		 * after the lower one (it then merges into it). Made in the
		 * child, where the runs that neighbour each other are found. */
		for (bool merged : {false, true}) {
			INFO("freed after its left neighbour: " << merged);
			ChildResult r = run_child([=] {
				unsigned char *v[16];
				for (auto &b : v)
					if ((b = static_cast<unsigned char *>(a->malloc_(40 * KiB))) == nullptr)
						return 3;
				unsigned char *lo = nullptr, *hi = nullptr;
				for (auto *b : v)
					for (auto *c : v)
						if (c == b + 40 * KiB)
							lo = b, hi = c;
				if (hi == nullptr)
					return 4; /* no neighbours: the test cannot be made */
				if (merged)
					a->free_(lo);
				a->free_(hi);
				fprintf(stderr, "%p\n", static_cast<void *>(hi));
				void *q = a->realloc_(hi, opaque(40 * KiB - 100));
				return q == hi ? 1 : 2;
			});
			CHECK(r.signal == SIGABRT);
			/* The run's address, then the report about it. */
			size_t nl = r.err.find('\n');
			REQUIRE(nl != std::string::npos);
			void *hi = nullptr;
			REQUIRE(sscanf(r.err.c_str(), "%p", &hi) == 1);
			std::string head = bad_pointer_line("realloc", hi, "");
			head.pop_back(); /* the reason depends on what the free run merged with */
			CHECK(r.err.compare(nl + 1, head.size(), head) == 0);
		}

		/* 25 pages (no size in the entry) shrunk in place to 10 (now
		 * with one), its tail then taken by other runs: realloc up to
		 * 11 pages must move it or grow it into free pages, never keep
		 * it over what the others hold. */
		auto *p = static_cast<unsigned char *>(a->malloc_(100 * KiB));
		REQUIRE(p != nullptr);
		put(p, 0, 100 * KiB, 3);
		void *q = a->realloc_(p, opaque(40 * KiB));
		CHECK(q == p);
		CHECK(a->usable_(p) == 40 * KiB);
		std::vector<unsigned char *> others;
		for (int i = 0; i < 4; i++) {
			auto *o = static_cast<unsigned char *>(a->malloc_(36 * KiB + 1));
			REQUIRE(o != nullptr);
			put(o, 0, 36 * KiB + 1, 7);
			others.push_back(o);
		}
		auto *g = static_cast<unsigned char *>(a->realloc_(p, opaque(44 * KiB)));
		REQUIRE(g != nullptr);
		CHECK(a->usable_(g) >= 44 * KiB);
		CHECK(bad_at(g, 40 * KiB, 3) == 40 * KiB);
		put(g, 0, 44 * KiB, 4);
		for (unsigned char *o : others) {
			CHECK(bad_at(o, 36 * KiB + 1, 7) == 36 * KiB + 1);
			a->free_(o);
		}
		/* The run, grown in place or moved, at its new size: a realloc
		 * to all of it stays. */
		void *h = a->realloc_(g, opaque(a->usable_(g)));
		CHECK(h == g);
		a->free_(g);
	}
}

/* A string that outgrows a class near the largest moves, with headroom, to
 * a page run while it is still below the largest class; from there on it
 * stays where it is up to the run's end (bench realloc string: 1 realloc in
 * 10 was such a call, kept in place by the slow path; now by the fast one).
 * A small block shrunk below half its class moves to the smaller class with
 * its first bytes, and its old block is free (a second free of it is
 * reported, as a double free). */
TEST_CASE("a string past the largest class's headroom stays in its page run from below that class up",
	  "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		std::vector<size_t> classes = class_sizes(a);
		REQUIRE(classes.size() >= 3);
		size_t top = classes.back();             /* the largest class */
		size_t below = classes[classes.size() - 2]; /* the one under it */
		auto *p = static_cast<unsigned char *>(a->malloc_(below));
		REQUIRE(p != nullptr);
		put(p, 0, below, 3);
		/* One byte past the class: a move, with headroom past the
		 * largest class (half the class more) if the class is large
		 * enough for that. */
		auto *q = static_cast<unsigned char *>(a->realloc_(p, opaque(below + 1)));
		REQUIRE(q != nullptr);
		put(q, below, below + 1, 3);
		CHECK(bad_at(q, below + 1, 3) == below + 1);
		size_t u = a->usable_(q);
		INFO("moved to a block of " << u << " bytes");
		size_t len = below + 1;
		if (u > top) {
			CHECK((uintptr_t)q % 4096 == 0);
			/* Grown a few bytes at a time up to all of its pages:
			 * never moved, also below the largest class. */
			size_t steps = 0, moved = 0;
			for (size_t n = len + 7; n <= u; n += 7 + (n % 61)) {
				void *r = a->realloc_(q, opaque(n));
				steps++;
				if (r != q) moved++;
				q = static_cast<unsigned char *>(r);
				put(q, len, n, 3);
				len = n;
			}
			CHECK(steps > 100);
			CHECK(moved == 0);
			CHECK(bad_at(q, len, 3) == len);
		}
		/* Shrunk below half: moved to a small class, first bytes kept. */
		auto *s = static_cast<unsigned char *>(a->realloc_(q, opaque(40)));
		REQUIRE(s != nullptr);
		CHECK(s != q);
		CHECK(a->usable_(s) < 128);
		CHECK(bad_at(s, 40, 3) == 40);
		/* A small block shrunk below half of its class, by the fast path. */
		auto *m = static_cast<unsigned char *>(a->malloc_(1000));
		REQUIRE(m != nullptr);
		put(m, 0, 1000, 4);
		auto *m2 = static_cast<unsigned char *>(a->realloc_(m, opaque(100)));
		REQUIRE(m2 != nullptr);
		CHECK(m2 != m);
		CHECK(a->usable_(m2) < 500);
		CHECK(bad_at(m2, 100, 4) == 100);
		ChildResult r = run_child([=] {
			a->free_(m);
			return 1;
		});
		CHECK(r.signal == SIGABRT);
		CHECK(r.err.find("double free") != std::string::npos);
		a->free_(m2);
		a->free_(s);
	}
}

TEST_CASE("strings grown a few bytes at a time keep every byte through all classes and into page runs",
	  "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		ebb_trim();
		ebb_stats_t s0 = stats();
		/* 24 strings at once (neighbours take the space a lone string
		 * would grow into), each to 100 KiB by 1-64 bytes: every class and
		 * the step from the largest class to page runs. */
		Built b = grow_strings(a, 24, 100 * KiB, 64, 17);
		ebb_trim();
		ebb_stats_t s1 = stats();
		CHECK(b.bad == 0);
		/* Headroom on every move: from 1 byte to 100 KiB a string moves a
		 * logarithmic number of times (17 on average when written), not
		 * at each of the 70-odd classes and pages it passes. */
		INFO(b.moves << " moves in " << b.calls << " reallocs");
		CHECK(b.moves <= 24 * 24);
		CHECK(s1.allocated == s0.allocated);
		CHECK(s1.mapped == stats_parts(s1));
	}
}

/* core/api/api.c, REALLOC_UNCACHED_MIN: a block that a buffer built a
 * piece at a time outgrew would wait in the thread cache (and keep its span)
 * for another buffer to grow into its class. On a thread of its own: its
 * cache holds only what is here, and ebb_trim empties it. */
TEST_CASE("a block of 1 KiB or more that realloc moves up after a small step goes back to its span, and the "
	  "block it moves to comes alone",
	  "[realloc_fast]")
{
	std::thread([] {
		/* 1500 bytes: the class of 1536; 1600 is a step of 64 bytes,
		 * which moves it with headroom to the class of 2304. */
		void *p = ebb_malloc(1500);
		REQUIRE(p != nullptr);
		fill(p, 1500, 3);
		size_t old = ebb_malloc_usable_size(p);
		ebb_trim();
		ebb_stats_t s0 = stats();
		void *q = ebb_realloc(p, 1600);
		ebb_stats_t s1 = stats();
		REQUIRE(q != nullptr);
		REQUIRE(q != p);
		CHECK(first_mismatch(q, 1500, 3) == 1500);
		/* Neither the old block nor the rest of a refilled batch of the
		 * new class waits in the cache; the old block is free in its span
		 * (allocated counts the new block only). */
		CHECK(s1.tcache == s0.tcache);
		CHECK(s1.allocated == s0.allocated - old + ebb_malloc_usable_size(q));
		CHECK(s1.mapped == stats_parts(s1));

		/* A block of the new class that the program freed into the cache
		 * is the one the move takes. */
		void *r = ebb_malloc(1500);
		REQUIRE(r != nullptr);
		fill(r, 1500, 4);
		void *freed = ebb_malloc(ebb_malloc_usable_size(q));
		REQUIRE(freed != nullptr);
		ebb_free(freed);
		void *m = ebb_realloc(r, 1600);
		CHECK(m == freed);
		CHECK(first_mismatch(m, 1500, 4) == 1500);

		/* Grown by a large step (a vector's), the block it leaves goes
		 * to the cache as a free's would. */
		void *v = ebb_malloc(1500);
		REQUIRE(v != nullptr);
		size_t vold = ebb_malloc_usable_size(v);
		ebb_trim();
		s0 = stats();
		void *w = ebb_realloc(v, 3000);
		s1 = stats();
		REQUIRE(w != nullptr);
		CHECK(w != v);
		CHECK(s1.tcache >= s0.tcache + vold);
		ebb_free(w);
		ebb_free(m);
		ebb_free(q);
	}).join();
}

TEST_CASE("vectors grown by half and strings grown past 1 MiB keep their contents, also when shrunk",
	  "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		start_allocator_thread();
		const size_t nv = 4;
		std::vector<unsigned char *> v(nv, nullptr); /* before s0: alive at s1 */
		std::vector<size_t> cap(nv, 0);
		ebb_trim();
		ebb_stats_t s0 = stats();
		/* Four vectors of 8-byte elements grown by half up to 6 MiB:
		 * page runs, then (past 1 MiB) mappings of their own grown in
		 * place by the kernel; written in full at every step. Then shrunk
		 * step by step: each keeps the bytes below its new size. No
		 * Catch2 macro until the stats are read again. */
		int bad = 0;
		for (size_t c = 64; c <= 6 * MiB && bad == 0; c += c / 2) {
			for (size_t k = 0; k < nv && bad == 0; k++) {
				size_t want = c + k * 8;
				auto *q = static_cast<unsigned char *>(a->realloc_(v[k], want));
				if (q == nullptr) {
					bad = 1;
					break;
				}
				if (bad_at(q, cap[k], 40 + (unsigned)k) != cap[k]) bad = 2;
				put(q, cap[k], want, 40 + (unsigned)k);
				v[k] = q;
				cap[k] = want;
			}
		}
		for (size_t k = 0; k < nv; k++) {
			for (size_t n : {cap[k] - cap[k] / 3, 3 * MiB, 700 * KiB, 40 * KiB, (size_t)3000, (size_t)24}) {
				auto *q = static_cast<unsigned char *>(bad ? nullptr : a->realloc_(v[k], n));
				if (q == nullptr) {
					bad = bad ? bad : 3;
					break;
				}
				if (bad_at(q, n, 40 + (unsigned)k) != n) bad = 4;
				if (a->usable_(q) < n) bad = 5;
				v[k] = q;
			}
			a->free_(v[k]);
		}
		/* A string grown by small steps across the 1 MiB boundary. */
		Built b = grow_strings(a, 2, 1536 * KiB, 4096, 77);
		ebb_trim();
		ebb_stats_t s1 = stats();
		CHECK(bad == 0);
		CHECK(b.bad == 0);
		CHECK(s1.allocated == s0.allocated);
		CHECK(s1.mapped == stats_parts(s1));
	}
}

TEST_CASE("realloc to an impossible size fails with ENOMEM and leaves the block as it was", "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t n0 : {(size_t)40, 20 * KiB, 100 * KiB, 5 * MiB}) {
			INFO("block of " << n0);
			auto *p = static_cast<unsigned char *>(a->malloc_(n0));
			REQUIRE(p != nullptr);
			put(p, 0, n0, 3);
			for (size_t n : {SIZE_MAX, SIZE_MAX / 2, (size_t)PTRDIFF_MAX + 1, (size_t)1 << 47}) {
				errno = 0;
				void *q = a->realloc_(p, opaque(n));
				CHECK(q == nullptr);
				CHECK(errno == ENOMEM);
			}
			CHECK(bad_at(p, n0, 3) == n0);
			/* still a live block of ours: it grows and is freed */
			auto *q = static_cast<unsigned char *>(a->realloc_(p, n0 + 1));
			REQUIRE(q != nullptr);
			CHECK(bad_at(q, n0, 3) == n0);
			a->free_(q);
		}
		errno = 0;
		CHECK(a->realloc_(nullptr, opaque(SIZE_MAX)) == nullptr);
		CHECK(errno == ENOMEM);
	}
}

TEST_CASE("realloc(p, 0) frees p and returns NULL", "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (size_t n0 : {(size_t)24, 3 * KiB, 64 * KiB, 3 * MiB}) {
			ebb_trim();
			ebb_stats_t s0 = stats();
			void *p = a->malloc_(n0);
			void *q = a->realloc_(p, opaque((size_t)0));
			ebb_trim();
			ebb_stats_t s1 = stats();
			INFO("block of " << n0);
			CHECK(p != nullptr);
			CHECK(q == nullptr);
			CHECK(s1.allocated == s0.allocated);
		}
	}
}

TEST_CASE("realloc of a freed or interior pointer is reported with its address, on the fast path too",
	  "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		/* A small block freed, then realloc'd to a size its class holds
		 * (the call that returns p at once when p is live). */
		auto *keep = static_cast<unsigned char *>(a->malloc_(200));
		auto *p = static_cast<unsigned char *>(a->malloc_(200));
		REQUIRE(p != nullptr);
		size_t u = a->usable_(p);
		ChildResult r = run_child([=] {
			a->free_(p);
			void *q = a->realloc_(p, u);
			return q == p ? 1 : 2;
		});
		CHECK(r.signal == SIGABRT);
		CHECK(r.err == bad_pointer_line("realloc", p, "the block was freed (it carries the free mark)"));
		/* An interior pointer of a live small block. */
		r = run_child([=] {
			void *q = a->realloc_(p + 16, 100);
			return q == nullptr ? 1 : 2;
		});
		CHECK(r.signal == SIGABRT);
		CHECK(r.err == bad_pointer_line("realloc", p + 16, "not the start of a block"));
		/* A page run freed, then realloc'd within its old pages. */
		auto *big = static_cast<unsigned char *>(a->malloc_(100 * KiB));
		REQUIRE(big != nullptr);
		r = run_child([=] {
			a->free_(big);
			void *q = a->realloc_(big, 100 * KiB + 10);
			return q == big ? 1 : 2;
		});
		CHECK(r.signal == SIGABRT);
		std::string head = bad_pointer_line("realloc", big, "");
		head.pop_back(); /* the reason depends on what the free run merged with */
		CHECK(r.err.compare(0, head.size(), head) == 0);
		/* The same, realloc'd to a small size that a live run of its
		 * pages would hold (a page run is kept in place on the fast
		 * path also at or below the largest class). */
		r = run_child([=] {
			a->free_(big);
			void *q = a->realloc_(big, 30 * KiB);
			return q == big ? 1 : 2;
		});
		CHECK(r.signal == SIGABRT);
		CHECK(r.err.compare(0, head.size(), head) == 0);
		/* A live run's second page, at such a size. */
		r = run_child([=] {
			void *q = a->realloc_(big + 4096, 30 * KiB);
			return q == big + 4096 ? 1 : 2;
		});
		CHECK(r.signal == SIGABRT);
		CHECK(r.err == bad_pointer_line("realloc", big + 4096, "not the start of a block"));
		/* A small block freed, then shrunk below half its class (the
		 * move to a smaller class, realloc_shrink, comes after the
		 * mark's test). */
		r = run_child([=] {
			a->free_(p);
			void *q = a->realloc_(p, 16);
			return q == nullptr ? 1 : 2;
		});
		CHECK(r.signal == SIGABRT);
		CHECK(r.err == bad_pointer_line("realloc", p, "the block was freed (it carries the free mark)"));
		a->free_(big);
		a->free_(p);
		a->free_(keep);
	}
}

namespace {

/* Where a freed small block waits until it is handed out again: one of the
 * places a realloc of it may find it. */
enum class FreedIn { OwnCache, OtherCache, TransferBatch, SpanList };

const char *freed_in_name(FreedIn w)
{
	switch (w) {
	case FreedIn::OwnCache: return "this thread's cache";
	case FreedIn::OtherCache: return "another thread's cache";
	case FreedIn::TransferBatch: return "a transfer batch";
	case FreedIn::SpanList: return "its span's free list";
	}
	return "?";
}

void pin_to_one_cpu()
{
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof set, &set) != 0) return;
	for (int i = 0; i < CPU_SETSIZE; i++)
		if (CPU_ISSET(i, &set)) {
			CPU_ZERO(&set);
			CPU_SET(i, &set);
			sched_setaffinity(0, sizeof set, &set);
			return;
		}
}

uint64_t flushes_so_far()
{
	ebb_stats_t s;
	ebb_stats_get(&s);
	return s.tcache_flushes;
}

/* In a child: frees a block of `size` bytes so that it waits in `w`, writes
 * its address to *out, then reallocs it to a size its class holds (u: the
 * call that returns p at once when p is live) and returns 0 if that came
 * back NULL with errno untouched (on_error=warn). Error codes 3-9: the
 * place could not be set up. */
int realloc_freed_in(const Api *a, size_t size, FreedIn w, void **out)
{
	pin_to_one_cpu(); /* flushes and trims reach this CPU's central lists */
	ebb_trim();       /* no transfer batches: a flush has room for p's */
	std::vector<void *> keep; /* p's span stays in use: p stays a block of its class */
	for (int i = 0; i < 8; i++) keep.push_back(a->malloc_(size));
	void *p = nullptr;
	std::thread other;
	std::atomic<int> stage{0};
	switch (w) {
	case FreedIn::OwnCache:
		p = a->malloc_(size);
		a->free_(p);
		break;
	case FreedIn::OtherCache:
		p = a->malloc_(size);
		other = std::thread([&] {
			/* A thread's very first free goes to the span, past its
			 * cache (cache_scratch), and a bin of a large class starts
			 * with no room: use the cache first. */
			for (int i = 0; i < 4; i++) {
				void *x = a->malloc_(size), *y = a->malloc_(size);
				a->free_(x);
				a->free_(y);
			}
			a->free_(p);
			stage = 1;
			while (stage.load() != 2) std::this_thread::yield();
		});
		while (stage.load() != 1) std::this_thread::yield();
		break;
	case FreedIn::TransferBatch: {
		/* Blocks freed one by one fill the cache's bin; the free that
		 * finds it full flushes its newest blocks, whole batches first
		 * onto the transfer stack (core/blocks/central.c, flush_in):
		 * the block freed just before that free is in the first one. */
		size_t n = (8 * MiB) / size;
		if (n > 4096) n = 4096;
		std::vector<void *> v;
		for (size_t i = 0; i < n; i++) v.push_back(a->malloc_(size));
		uint64_t before = flushes_so_far();
		size_t i = 0;
		for (; i < n && p == nullptr; i++) {
			a->free_(v[i]);
			if (i > 0 && flushes_so_far() != before) p = v[i - 1];
		}
		for (; i < n; i++) keep.push_back(v[i]);
		if (p == nullptr) return 3;
		break;
	}
	case FreedIn::SpanList:
		/* One block of a span whose others are held, back from the
		 * cache and the central lists to its span by a trim. */
		p = keep[4];
		keep[4] = nullptr;
		a->free_(p);
		ebb_trim();
		break;
	}
	*out = p;
	errno = 1234;
	void *q = a->realloc_(p, opaque(size));
	int rc = q == nullptr && errno == 1234 ? 0 : 1;
	if (other.joinable()) {
		stage = 2;
		other.join();
	}
	for (void *k : keep) a->free_(k);
	return rc;
}

} // namespace

/* A freed small block realloc'd to a size its class holds is reported, on
 * the fast path (realloc_impl_at reads the free mark of a small block),
 * wherever it waits to be handed out again; else realloc would return it to
 * the program while a malloc could hand it out too. Classes of one-page and
 * multi-page spans, and the largest classes, whose blocks may start a page
 * as a page run does (realloc_impl_at reads no mark for a run). Under
 * on_error=warn realloc returns NULL and leaves errno alone. */
TEST_CASE("realloc of a freed small block that its class would keep is reported wherever the block waits",
	  "[realloc_fast]")
{
	void **shared =
		static_cast<void **>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
	REQUIRE(shared != MAP_FAILED);
	for (const Api *a : all_apis()) {
		for (size_t size : {(size_t)64, (size_t)1008, 8 * KiB, 16 * KiB, 32 * KiB}) {
			for (FreedIn w : {FreedIn::OwnCache, FreedIn::OtherCache, FreedIn::TransferBatch,
					  FreedIn::SpanList}) {
				/* Left out: a block of 4 KiB or more on its span's
				 * list covers a page of its own, which the trim's
				 * purge gives back (central_purge.c). The block is
				 * then withheld and reads zero, with no mark, and
				 * realloc does not catch it yet: it returns the
				 * block, which a later refill relinks and hands out
				 * again. */
				INFO("api " << a->name << ", " << size << " bytes, freed into " << freed_in_name(w));
				for (int warn = 0; warn < 2; warn++) {
					shared[0] = nullptr;
					ChildResult r = run_child([=] {
						if (warn && ebb_option_set("on_error", "warn") != 0) return 90;
						return realloc_freed_in(a, size, w, &shared[0]);
					});
					INFO((warn ? "warn" : "abort") << " run: " << r.err << " code " << r.code);
					REQUIRE(shared[0] != nullptr);
					CHECK(abort_and_warn_ok(r, warn));
					/* A block of 4 KiB or more alone on its span's
					 * list covers a page of its own, which the
					 * trim's purge gives back: the block is withheld
					 * (no mark, reads zero) and its page loses its
					 * class (central_purge.c), so realloc finds no
					 * block there. */
					bool given_back = w == FreedIn::SpanList && size >= 4 * KiB;
					CHECK(r.err == bad_pointer_line("realloc", shared[0],
									given_back ? "not an allocated block (its page holds only free blocks, given back)"
										   : "the block was freed (it carries the free mark)"));
				}
			}
		}
	}
	munmap(shared, 4096);
}

/* A second free of blocks whose pages the purge pass gave back. A freed
 * block on such a page is withheld: off every list, reading zero, with no
 * mark (central_purge.c). Nothing caught its second free: it went into a
 * bin, out to the program, and a refill relinked it later and handed it out
 * again (on a5108a8, 1 KiB blocks below: 236 addresses handed out twice and
 * 32 blocks the program still held handed out). Now the pages given back
 * lose their class, so free() reports a block that starts on one, and the
 * relink wants a block that starts on a page that stayed to carry the span
 * mark the pass wrote. Blocks of classes with spans of several pages, most
 * freed and one in `every` kept, then a trim, then every freed block freed
 * again, under on_error=warn: nothing allocated after is a kept block or
 * handed out twice, and for classes of whole pages every second free is
 * reported at the free. Blocks that straddle pages (3 KiB, 5 KiB, 6 KiB):
 * one that starts on a page a kept block holds and ends on one given back
 * keeps the span mark; its second free goes into a bin unseen (the fast
 * path reads no mark), and the relink then finds the mark gone and drops
 * it. Before that relink wrote the mark again over such a block when the
 * page after it stayed withheld, and took it (3 KiB: one address handed
 * out twice here). */
TEST_CASE("a second free of a block whose page the purge gave back is reported, and the block is not handed out twice",
	  "[realloc_fast]")
{
	for (const Api *a : all_apis()) {
		for (size_t size : {(size_t)1008, (size_t)3072, (size_t)5120, (size_t)6144, 8 * KiB, 16 * KiB, 32 * KiB}) {
			INFO("api " << a->name << ", " << size << " bytes");
			constexpr size_t kBlocks = 1024, kEvery = 7;
			ChildResult r = run_child([=] {
				if (ebb_option_set("on_error", "warn") != 0) return 90;
				pin_to_one_cpu();
				std::vector<char *> v;
				for (size_t i = 0; i < kBlocks; i++) {
					char *b = static_cast<char *>(a->malloc_(size));
					if (b == nullptr) return 3;
					memset(b, 0x5a, size);
					v.push_back(b);
				}
				std::vector<char *> kept, freed;
				for (size_t i = 0; i < kBlocks; i++)
					(i % kEvery == 0 ? kept : freed).push_back(v[i]);
				for (char *b : freed) a->free_(b);
				ebb_trim();
				for (char *b : freed) a->free_(b); /* each one a double free */
				fputs("-- second frees done\n", stderr);
				std::vector<char *> got;
				for (size_t i = 0; i < 2 * kBlocks; i++)
					got.push_back(static_cast<char *>(a->malloc_(size)));
				std::sort(got.begin(), got.end());
				if (std::adjacent_find(got.begin(), got.end()) != got.end()) return 4;
				for (char *k : kept)
					if (std::binary_search(got.begin(), got.end(), k)) return 5;
				return 0;
			});
			CHECK(r.exited);
			CHECK(r.code == 0); /* 4: an address handed out twice, 5: a kept block handed out */
			std::string at_free = r.err.substr(0, r.err.find("-- second frees done"));
			size_t reports = 0;
			for (size_t at = 0; (at = at_free.find("ebbmalloc: free(): invalid pointer", at)) != std::string::npos;
			     at++)
				reports++;
			if (size % (4 * KiB) == 0)
				CHECK(reports == kBlocks - (kBlocks + kEvery - 1) / kEvery);
		}
	}
}

/* ---------------------------------------------------------------------------
 * The heap profiler's sampled blocks (core/process/prof.h, issue 15). Run by
 * the ctest api.prof_realloc with EBB_OPTIONS=prof=1,prof_sample=1: every
 * allocation is sampled, so every block below is a sample block (an inner
 * one: a pointer 16 bytes into a small block). Each stands in for the
 * small block it would have been unsampled, and realloc must move it at
 * the very sizes it moves that block, but for the last 16 bytes of a
 * class, which the sample's block may not hold: the same ladder of
 * classes. The unsampled ladder comes from a copy of this program
 * run with prof=0 (the hidden test below); the profile must count each
 * string once, at the size of its last move.
 * ------------------------------------------------------------------------- */
namespace {

/* One realloc of a ladder: the size asked, whether the block moved, and
 * the usable size of the block before it (0 for the first). */
struct Step {
	uint32_t size;
	uint32_t moved;
	uint32_t held;
	bool operator==(const Step &o) const { return size == o.size && moved == o.moved; }
};

constexpr size_t kLadderStrings = 5;

/* kLadderStrings strings grown round robin by steps of 1..48 bytes to
 * 1000..13000 bytes (so that no class's headroom reaches past the largest
 * class: page runs above it may grow in place or not by where their
 * neighbours lie), then shrunk by steps of 1..200 to at most 16 bytes.
 * Appends every call to `steps` (reserved: no allocation in here but the
 * strings'); `last` gets each string's size at its last move (or first
 * allocation); `dump` (may be null) is called at the peak with `last`.
 * Returns 0, or the number of a failed check. */
template <class Dump>
int ladder(const Api *a, std::vector<Step> &steps, size_t (&last)[kLadderStrings], Dump dump)
{
	unsigned char *s[kLadderStrings] = {};
	size_t len[kLadderStrings] = {};
	uint32_t x = 12345;
	auto next = [&x](uint32_t n) {
		x = x * 1103515245u + 12345u;
		return 1 + (x >> 16) % n;
	};
	auto step = [&](size_t i, size_t to) {
		uint32_t held = s[i] != nullptr ? (uint32_t)a->usable_(s[i]) : 0;
		auto *q = static_cast<unsigned char *>(a->realloc_(s[i], to));
		if (q == nullptr) return 1;
		if (bad_at(q, len[i] < to ? len[i] : to, (unsigned)i) != (len[i] < to ? len[i] : to)) return 2;
		if (a->usable_(q) < to) return 3;
		if (steps.size() == steps.capacity()) return 4;
		steps.push_back(Step{(uint32_t)to, q != s[i], held});
		if (q != s[i]) last[i] = to;
		put(q, len[i], to, (unsigned)i);
		s[i] = q;
		len[i] = to;
		return 0;
	};
	for (bool more = true; more;) {
		more = false;
		for (size_t i = 0; i < kLadderStrings; i++) {
			size_t target = 1000 + 3000 * i;
			if (len[i] >= target) continue;
			more = true;
			size_t to = len[i] + next(48);
			if (int rc = step(i, to < target ? to : target)) return rc;
		}
	}
	dump(last);
	for (bool more = true; more;) {
		more = false;
		for (size_t i = 0; i < kLadderStrings; i++) {
			if (len[i] <= 16) continue;
			more = true;
			size_t down = next(200);
			if (int rc = step(i, len[i] > down + 16 ? len[i] - down : 16)) return rc;
		}
	}
	for (size_t i = 0; i < kLadderStrings; i++) a->free_(s[i]);
	return 0;
}

const Api *api_named(const char *name)
{
	for (const Api *a : all_apis())
		if (name != nullptr && strcmp(a->name, name) == 0) return a;
	return nullptr;
}

/* The header of a profile: live objects and bytes, sampled objects and
 * bytes since start. */
struct ProfHead {
	unsigned long long live_n = 0, live_bytes = 0, alloc_n = 0, alloc_bytes = 0;
	bool ok = false;
};

ProfHead prof_head(const std::string &path)
{
	ProfHead h;
	FILE *f = fopen(path.c_str(), "r");
	if (f == nullptr) return h;
	h.ok = fscanf(f, "heap profile: %llu: %llu [%llu: %llu]", &h.live_n, &h.live_bytes, &h.alloc_n,
		      &h.alloc_bytes) == 4;
	fclose(f);
	return h;
}

} // namespace

/* The unsampled ladder, for the test below: run with prof=0, writes the
 * steps of API_TEST_LADDER_API's ladder to API_TEST_LADDER_OUT. */
TEST_CASE("the ladder of unsampled strings (run by the profiler's test)", "[.prof_realloc_ladder]")
{
	const Api *a = api_named(getenv("API_TEST_LADDER_API"));
	const char *out = getenv("API_TEST_LADDER_OUT");
	REQUIRE(a != nullptr);
	REQUIRE(out != nullptr);
	std::vector<Step> steps;
	steps.reserve(1 << 16);
	size_t last[kLadderStrings] = {};
	REQUIRE(ladder(a, steps, last, [](const size_t *) {}) == 0);
	FILE *f = fopen(out, "wb");
	REQUIRE(f != nullptr);
	REQUIRE(fwrite(steps.data(), sizeof(Step), steps.size(), f) == steps.size());
	REQUIRE(fclose(f) == 0);
}

TEST_CASE("a sampled block realloc'ed up and down moves where an unsampled one does, and is counted once",
	  "[prof_realloc]")
{
	char dir[] = "/tmp/ebb_prof_realloc_XXXXXX";
	REQUIRE(mkdtemp(dir) != nullptr);
	std::string base = dir;
	if (ebb_prof_dump((base + "/0.heap").c_str()) != 0) {
		REQUIRE(errno == ENOTSUP);
		rmdir(dir);
		WARN("prof is off (run with EBB_OPTIONS=prof=1,prof_sample=1): skipped");
		return;
	}
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		/* The unsampled ladder: this program again, with prof off. */
		std::string out = base + (a == &ebb_api() ? "/ladder.ebb" : "/ladder.std");
		std::string opt = "EBB_OPTIONS=prof=0", api = std::string("API_TEST_LADDER_API=") + a->name,
			    file = "API_TEST_LADDER_OUT=" + out;
		std::vector<char *> env;
		for (char **e = environ; *e; e++)
			if (strncmp(*e, "EBB_OPTIONS=", 12) != 0) env.push_back(*e);
		env.push_back(&opt[0]);
		env.push_back(&api[0]);
		env.push_back(&file[0]);
		env.push_back(nullptr);
		char self[] = "/proc/self/exe", tag[] = "[.prof_realloc_ladder]";
		char *argv[] = {self, tag, nullptr};
		pid_t pid;
		REQUIRE(posix_spawn(&pid, self, nullptr, nullptr, argv, env.data()) == 0);
		int st = 0;
		REQUIRE(waitpid(pid, &st, 0) == pid);
		REQUIRE(WIFEXITED(st));
		REQUIRE(WEXITSTATUS(st) == 0);
		std::vector<Step> want;
		FILE *f = fopen(out.c_str(), "rb");
		REQUIRE(f != nullptr);
		Step s;
		while (fread(&s, sizeof s, 1, f) == 1) want.push_back(s);
		fclose(f);
		unlink(out.c_str());

		/* The same strings here, every block sampled: the profile is
		 * dumped before, at the peak and after they are freed. Nothing
		 * between the dumps allocates but the strings. */
		std::string d0 = base + "/0.heap", d1 = base + "/1.heap", d2 = base + "/2.heap";
		std::vector<Step> steps;
		steps.reserve(1 << 16);
		size_t last[kLadderStrings] = {}, peak[kLadderStrings] = {};
		int dumped = ebb_prof_dump(d0.c_str());
		int rc = ladder(a, steps, last, [&](const size_t *l) {
			memcpy(peak, l, sizeof peak);
			dumped |= ebb_prof_dump(d1.c_str());
		});
		dumped |= ebb_prof_dump(d2.c_str());
		REQUIRE(rc == 0);
		REQUIRE(dumped == 0);
		REQUIRE(steps.size() == want.size());
		/* The one difference allowed: a sample is an inner one
		 * (core/process/prof.h), 16 bytes (PROF_INNER) into a small
		 * block of the class the unsampled block has, so it holds 16
		 * bytes less than that class when its size leaves them, and a
		 * string that grows into those 16 bytes moves there (to a block
		 * that then holds the whole class), where the unsampled one
		 * still fits. Its next move is the unsampled one's. */
		size_t moves = 0, early = 0, placed = 0, first_diff = steps.size();
		for (size_t i = 0; i < steps.size(); i++) {
			moves += steps[i].moved;
			if (steps[i] == want[i]) continue;
			if (steps[i].size == want[i].size && steps[i].moved && !want[i].moved &&
			    want[i].held == steps[i].held + 16 && steps[i].size > steps[i].held) {
				early++;
				continue;
			}
			/* A string built to 8 KiB or more is a page run of its own,
			 * sampled or not (core/api/api.c, REALLOC_RUN_MIN), and
			 * grows into the free pages right of it where they are free:
			 * which they are depends on what else the process has
			 * placed (the profiler's own blocks here), so one side may
			 * move where the other grows in place, from the same page
			 * run size. */
			if (steps[i].size == want[i].size && steps[i].moved != want[i].moved &&
			    steps[i].held == want[i].held && steps[i].held >= 8192 && steps[i].held % 4096 == 0) {
				placed++;
				continue;
			}
			if (first_diff == steps.size()) first_diff = i;
		}
		INFO("first step that differs: " << first_diff << " of " << steps.size() << " (" << early
						 << " moved 16 bytes early, " << placed
						 << " page runs moved or grown in place by their neighbours)");
		if (first_diff < steps.size())
			for (size_t i = first_diff >= 6 ? first_diff - 6 : 0; i <= first_diff; i++)
				UNSCOPED_INFO("step " << i << ": sampled size " << steps[i].size << " moved " << steps[i].moved
						      << " held " << steps[i].held << "; unsampled moved " << want[i].moved
						      << " held " << want[i].held);
		CHECK(first_diff == steps.size());
		/* Climbing and shrinking moves each string several times; a
		 * sample block kept at every step would move it only when it
		 * left its pages. */
		CHECK(moves > 8 * kLadderStrings);

		ProfHead h0 = prof_head(d0), h1 = prof_head(d1), h2 = prof_head(d2);
		REQUIRE((h0.ok && h1.ok && h2.ok));
		unsigned long long peak_bytes = 0;
		for (size_t b : peak) peak_bytes += b;
		/* At the peak: each string once, at the size of its last move
		 * (a block resized in place stays sampled as it was). */
		CHECK(h1.live_n - h0.live_n == kLadderStrings);
		CHECK(h1.live_bytes - h0.live_bytes == peak_bytes);
		/* Every move and every first allocation was a sample. */
		CHECK(h2.alloc_n - h0.alloc_n == moves);
		/* Freed: nothing of them is left. */
		CHECK(h2.live_n == h0.live_n);
		CHECK(h2.live_bytes == h0.live_bytes);
	}
	unlink((base + "/0.heap").c_str());
	unlink((base + "/1.heap").c_str());
	unlink((base + "/2.heap").c_str());
	rmdir(dir);
}

/* A sample that a realloc moved is a page run standing in for a small
 * block (prof_alloc_moved). realloc's profiler copies (core/api/api.c,
 * realloc_run_stays_prof: ebb_realloc's, and with the standard names the
 * one the program's PLT slot of realloc points at) keep it in place while
 * its class would hold the size, as the slow path does, and move it where
 * the class ends, never at the end of its pages; it stays the sample it
 * was (counted once, at the size of its move). Run by api.prof_realloc
 * (prof_sample=1: every move is sampled). */
TEST_CASE("a moved sample grown a byte at a time stays in place up to its class and moves there, "
	  "through realloc and ebb_realloc",
	  "[prof_realloc]")
{
	char dir[] = "/tmp/ebb_prof_grow_XXXXXX";
	REQUIRE(mkdtemp(dir) != nullptr);
	std::string d0 = std::string(dir) + "/0.heap", d1 = std::string(dir) + "/1.heap";
	if (ebb_prof_dump(d0.c_str()) != 0) {
		REQUIRE(errno == ENOTSUP);
		rmdir(dir);
		WARN("prof is off (run with EBB_OPTIONS=prof=1,prof_sample=1): skipped");
		return;
	}
	for (int entry = EBB_TEST_OVERRIDE ? 0 : 1; entry < 2; entry++) {
		INFO("entry " << (entry == 0 ? "realloc" : "ebb_realloc")); /* before the first dump */
		/* A direct call (not through an Api's pointer): the PLT slot. */
		auto re = [entry](void *p, size_t n) { return entry == 0 ? realloc(p, n) : ebb_realloc(p, n); };
		auto *small = static_cast<unsigned char *>(re(nullptr, 100));
		REQUIRE(small != nullptr);
		put(small, 0, 100, 7);
		/* Read after the second dump: fopen allocates. */
		int dumped = ebb_prof_dump(d0.c_str());
		auto *q = static_cast<unsigned char *>(re(small, 6000)); /* a move: sampled */
		REQUIRE(q != nullptr);
		REQUIRE(bad_at(q, 100, 7) == 100);
		put(q, 100, 6000, 7);
		/* an inner sample (core/process/prof.h): inside a small block of
		 * the class an unsampled move takes, no block start, no run */
		REQUIRE((uintptr_t)q % 4096 != 0);
		const size_t held = ebb_malloc_usable_size(q);
		size_t n = 6000, stayed = 0;
		unsigned char *r = q;
		while (r == q && n < 32 * 1024) {
			r = static_cast<unsigned char *>(re(q, ++n));
			REQUIRE(r != nullptr);
			if (r == q) {
				stayed = n;
				q[n - 1] = (unsigned char)(n * 7 + 7); /* put's byte for seed 7 is overwritten below */
			}
		}
		/* The profile before anything else allocates (Catch's messages
		 * do): counted once for the first move and once for the
		 * second, the in-place steps allocated nothing. */
		dumped |= ebb_prof_dump(d1.c_str());
		INFO("stayed up to " << stayed << ", moved at " << n);
		REQUIRE(dumped == 0);
		ProfHead h0 = prof_head(d0), h1 = prof_head(d1);
		REQUIRE((h0.ok && h1.ok));
		CHECK(h1.alloc_n - h0.alloc_n == 2);
		CHECK(h1.live_n - h0.live_n == 0); /* small's sample went, r's came */
		/* In place through its class: from 6000 up to what its block
		 * holds (the class's size less the 16 bytes before the pointer,
		 * at most 8 KiB for a 6000-byte class), then moved at the next
		 * byte. */
		CHECK(r != q);
		CHECK(stayed > 6000);
		CHECK(stayed < 8 * 1024);
		CHECK(stayed == held);
		CHECK(n == stayed + 1);
		CHECK(ebb_malloc_usable_size(r) >= n);
		for (size_t i = 6000; i < stayed; i++)
			if (r[i] != (unsigned char)((i + 1) * 7 + 7))
				FAIL("byte " << i << " lost in place");
		CHECK(bad_at(r, 6000, 7) == 6000);
		re(r, 0);
	}
	unlink(d0.c_str());
	unlink(d1.c_str());
	rmdir(dir);
}
