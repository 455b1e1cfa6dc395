/* test_attack.cpp: the memory-safety attacks of issue 11 (items 1-4, 6-9),
 * each done for real in a forked child, with the safe outcome asserted: the
 * allocator reports the bad address and aborts (SIGABRT, never SIGSEGV), or
 * the attack is harmless; it never hands a block out twice and never returns
 * an address it did not carve. Through the ebb_* names, so the same tests run
 * under the sanitizer builds (where the sanitizer owns malloc). */
#include "api_util.h"
#include "child_util.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <pthread.h>
#include <atomic>
#include <sched.h>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace apitest;

namespace {

alignas(64) char g_target[256];

const char *kTail = "not a block (the unused tail of a span)";
const char *kLostMark = "double free (the block was freed twice and is about to be handed out again), or "
			"a write into it after it was freed";
const char *kOutside = "not a block of this allocator (outside the user address space: a tagged or "
		       "corrupted pointer)";

enum class Call { Free, Realloc, Usable };
const Call kCalls[] = {Call::Free, Call::Realloc, Call::Usable};
const char *call_name(Call c)
{
	return c == Call::Free ? "free" : c == Call::Realloc ? "realloc" : "malloc_usable_size";
}

void do_call(Call c, void *p)
{
	if (c == Call::Free)
		ebb_free(p);
	else if (c == Call::Realloc)
		(void)ebb_realloc(p, 100);
	else
		(void)ebb_malloc_usable_size(p);
}

/* A forked child runs without the background thread: under TSan a child of
 * a multithreaded process cannot start threads, and the attacks need none. */
template <class F> ChildResult run_quiet(F fn)
{
	return run_child([=] {
		if (ebb_option_set("background_thread", "0") != 0) return 89;
		return fn();
	});
}

/* The child must die of SIGABRT after writing exactly `line`. */
template <class F> void expect_abort(F fn, const std::string &line)
{
	ChildResult r = run_quiet(fn);
	INFO("stderr: " << r.err << " exited " << r.exited << " code " << r.code << " signal " << r.signal);
	CHECK_FALSE(r.exited);
	CHECK(r.signal == SIGABRT);
	CHECK(r.err == line);
}

/* Every "invalid pointer 0x..." address in a child's stderr. */
std::vector<uintptr_t> reported(const std::string &err)
{
	std::vector<uintptr_t> v;
	const std::string key = "invalid pointer 0x";
	for (size_t at = err.find(key); at != std::string::npos; at = err.find(key, at + 1))
		v.push_back((uintptr_t)strtoull(err.c_str() + at + key.size(), nullptr, 16));
	return v;
}

/* A report of a bad or corrupted block and SIGABRT, never SIGSEGV, and the
 * address named is one of `freed`. */
void check_reported_abort(const ChildResult &r, const std::set<uintptr_t> &freed)
{
	INFO("stderr: " << r.err << " exited " << r.exited << " code " << r.code << " signal " << r.signal);
	CHECK_FALSE(r.exited);
	CHECK(r.signal == SIGABRT);
	std::vector<uintptr_t> a = reported(r.err);
	REQUIRE(a.size() == 1);
	CHECK(freed.count(a[0]) == 1);
}

} // namespace

TEST_CASE("item 1: the unused tail of a span is not a block", "[attack]")
{
	/* 48-byte blocks: a one-page span holds 85 of them, 4080 bytes; the
	 * 16 bytes at page offset 4080 are aligned but no block. */
	std::vector<void *> keep;
	for (int i = 0; i < 200; i++)
		keep.push_back(ebb_malloc(48));
	char *tail = (char *)((uintptr_t)keep[0] & ~(uintptr_t)4095) + 4080;
	REQUIRE(ebb_malloc_usable_size(keep[0]) == 48);
	for (Call c : kCalls) {
		INFO(call_name(c));
		expect_abort([=] {
			do_call(c, tail);
			return 0;
		}, bad_pointer_line(call_name(c), tail, kTail));
	}
	for (void *p : keep)
		ebb_free(p);
}

TEST_CASE("item 2: a write after free into a block on a transfer batch", "[attack]")
{
	/* 2000 blocks freed: the thread cache flushes whole batches onto the
	 * central transfer stack, the rest to their spans. Then 8 bytes at
	 * offset 8 (and at 0) of every freed block are overwritten. */
	for (size_t off : {size_t(8), size_t(0)}) {
		INFO("offset " << off);
		std::set<uintptr_t> freed;
		std::vector<void *> v;
		for (int i = 0; i < 2000; i++)
			v.push_back(ebb_malloc(64));
		for (void *p : v)
			freed.insert((uintptr_t)p);
		for (int warn = 0; warn < 2; warn++) {
			ChildResult r = run_quiet([=] {
				if (warn && ebb_option_set("on_error", "warn") != 0) return 90;
				for (void *p : v)
					ebb_free(p);
				uint64_t evil = (uintptr_t)g_target;
				for (void *p : v)
					memcpy((char *)p + off, &evil, 8);
				ebb_trim();
				std::set<void *> live;
				for (int i = 0; i < 4000; i++) {
					void *q = ebb_malloc(64);
					if (q == nullptr) return 91;
					if (q == (void *)g_target) return 92;
					if (!live.insert(q).second) return 93; /* handed out twice */
				}
				return 0;
			});
			INFO((warn ? "warn" : "abort") << " stderr: " << r.err.substr(0, 400) << " code " << r.code
			     << " signal " << r.signal);
			/* Reported (a block's mark, in word 1, gone; a span free
			 * list's link, in word 0 of blocks that went back to their
			 * span, broken), or harmless (word 0 of a block in a bin or a
			 * batch is not the allocator's); never a crash. */
			if (!warn && r.exited) {
				CHECK(off == 0);
				CHECK(r.code == 0);
				CHECK(r.err.empty());
			} else if (!warn) {
				check_reported_abort(r, freed);
			} else {
				CHECK(r.exited);
				CHECK(r.code == 0);
				for (uintptr_t a : reported(r.err))
					CHECK(freed.count(a) == 1);
			}
		}
		for (void *p : v)
			ebb_free(p);
	}
}

TEST_CASE("item 3: a block handed out holds no secret, and no UAF write makes malloc return a chosen address",
	  "[attack]")
{
	SECTION("the first 16 bytes of every block handed out") {
		ChildResult r = run_quiet([] {
			const uint64_t pattern = 0xa5a5a5a5a5a5a5a5ull;
			std::vector<void *> v;
			/* round 0: from bins and carves; round 1: from bins (the
			 * blocks of round 0, which hold the program's pattern); round
			 * 2, after ebb_trim sent every block home: from span free
			 * lists and carves, where the allocator wrote links */
			for (int round = 0; round < 3; round++) {
				for (int i = 0; i < 3000; i++) {
					size_t n = 16 + (size_t)(i % 16) * 16;
					uint64_t *p = (uint64_t *)ebb_malloc(n);
					if (p == nullptr) return 91;
					if (p[1] != 0) return 92; /* the mark is gone */
					if (round == 2 && p[0] != 0) return 93; /* and the span link */
					for (size_t w = 0; w < n / 8; w++)
						p[w] = pattern;
					v.push_back(p);
				}
				for (void *p : v)
					ebb_free(p);
				v.clear();
				if (round == 1)
					ebb_trim();
			}
			return 0;
		});
		INFO("stderr: " << r.err << " code " << r.code);
		CHECK(r.exited);
		CHECK(r.code == 0);
		CHECK(r.err.empty());
	}
	SECTION("a chosen address written over every word of freed blocks") {
		for (int mark_too = 0; mark_too < 2; mark_too++) {
			INFO("word 1 overwritten too: " << mark_too);
			ChildResult r = run_quiet([=] {
				if (ebb_option_set("on_error", "warn") != 0) return 90;
				std::vector<void *> v;
				for (int i = 0; i < 500; i++)
					v.push_back(ebb_malloc(32));
				for (void *p : v)
					ebb_free(p);
				uint64_t evil = (uintptr_t)g_target;
				for (void *p : v)
					for (int w = 0; w < 4; w++)
						if (mark_too || w != 1)
							memcpy((char *)p + 8 * w, &evil, 8);
				ebb_trim();
				for (int i = 0; i < 3000; i++) {
					void *q = ebb_malloc(32);
					if (q == (void *)g_target) return 92;
					if (q == nullptr) return 91;
				}
				return 0;
			});
			INFO("stderr: " << r.err.substr(0, 400) << " code " << r.code << " signal " << r.signal);
			CHECK(r.exited);
			CHECK(r.code == 0);
			if (!mark_too)
				CHECK(r.err.empty());
			else
				CHECK(!reported(r.err).empty());
		}
	}
}

TEST_CASE("item 4: a partial overwrite of a free block is reported, not followed", "[attack]")
{
	/* Blocks on their spans' free lists (every tenth block stays live, so the
	 * spans stay in use) and in the thread cache (the last ones freed, after
	 * ebb_trim: the next malloc pops one of them, whatever CPU the child runs
	 * on); bytes 4-7, or 6-7, of each of their first two words zeroed. */
	for (int from : {4, 6}) {
		INFO("bytes " << from << "-7 zeroed");
		std::vector<void *> v;
		std::set<uintptr_t> freed;
		for (int i = 0; i < 1000; i++)
			v.push_back(ebb_malloc(64));
		for (size_t i = 0; i < v.size(); i++)
			if (i % 10)
				freed.insert((uintptr_t)v[i]);
		ChildResult r = run_quiet([=] {
			for (size_t i = 0; i < 800; i++)
				if (i % 10)
					ebb_free(v[i]);
			ebb_trim();
			for (size_t i = 800; i < v.size(); i++)
				if (i % 10)
					ebb_free(v[i]);
			for (size_t i = 0; i < v.size(); i++)
				if (i % 10)
					for (int w = 0; w < 2; w++)
						memset((char *)v[i] + 8 * w + from, 0, (size_t)(8 - from));
			for (int i = 0; i < 2000; i++)
				if (ebb_malloc(64) == nullptr) return 91;
			return 0;
		});
		check_reported_abort(r, freed);
		for (size_t i = 0; i < v.size(); i += 10)
			ebb_free(v[i]);
	}
}

TEST_CASE("item 6: a stale pointer into a recycled span is never handed out twice", "[attack]")
{
	/* 112-byte blocks: 36 to a one-page span, a refill takes 32. A span is
	 * carved whole (core/blocks/block.h): its last 4 blocks wait on its free list,
	 * each with its mark. Freeing a stale pointer to one of them (a block of
	 * the span's previous life) puts it in the bin as well; whichever copy
	 * is handed out first clears the mark, and the other is reported when
	 * its turn comes, never handed out. */
	for (int warn = 0; warn < 2; warn++) {
		ChildResult r = run_quiet([=] {
			if (warn && ebb_option_set("on_error", "warn") != 0) return 90;
			/* One CPU: the refills must come from the list that holds the
			 * new span (the CPU id picks the central list). */
			cpu_set_t one;
			CPU_ZERO(&one);
			CPU_SET(sched_getcpu(), &one);
			if (sched_setaffinity(0, sizeof one, &one) != 0) return 88;
			std::vector<void *> old;
			for (int i = 0; i < 36 * 8; i++)
				old.push_back(ebb_malloc(112));
			for (void *p : old)
				ebb_free(p);
			ebb_trim(); /* the spans go back to the page heap */
			/* Allocate until a span is carved anew: its first block at page
			 * offset 0, then its next 31 in order. */
			std::set<void *> live;
			char *page = nullptr;
			for (int i = 0; i < 5000 && page == nullptr; i++) {
				char *q = (char *)ebb_malloc(112);
				if (q == nullptr) return 91;
				live.insert(q);
				if (((uintptr_t)q & 4095) != 0)
					continue;
				bool in_order = true;
				for (int k = 1; k < 32; k++) {
					char *b = (char *)ebb_malloc(112);
					live.insert(b);
					in_order = in_order && b == q + 112 * k;
				}
				if (in_order)
					page = q;
			}
			if (page == nullptr) return 92;
			char *stale = page + 35 * 112;
			fprintf(stderr, "stale %p\n", (void *)stale);
			ebb_free(stale);
			for (int i = 0; i < 2000; i++) {
				void *b = ebb_malloc(112);
				if (b == nullptr) return 93;
				if (!live.insert(b).second) return 94; /* handed out twice */
			}
			return 0;
		});
		INFO((warn ? "warn" : "abort") << " stderr: " << r.err << " code " << r.code << " signal "
		     << r.signal);
		void *stale = nullptr;
		REQUIRE(sscanf(r.err.c_str(), "stale %p", &stale) == 1);
		std::string line = bad_pointer_line("malloc", stale, kLostMark);
		CHECK(r.err.find(line) != std::string::npos);
		if (warn) {
			CHECK(r.exited);
			CHECK(r.code == 0);
		} else {
			CHECK_FALSE(r.exited);
			CHECK(r.signal == SIGABRT);
		}
	}
}

/* Not under TSan, which does not support new threads after a multithreaded
 * fork, nor under ASan, whose runtime keeps pthread keys of its own: the
 * forged value reaches their destructors too, which write into it. */
#if !EBB_TEST_TSAN && !defined(__SANITIZE_ADDRESS__)
namespace {

unsigned char g_buffer[4096];

void *key_smasher(void *)
{
	void *p = ebb_malloc(100); /* the thread gets a cache and the exit hook */
	ebb_free(p);
	for (pthread_key_t k = 0; k < 1024; k++)
		if (pthread_getspecific(k) != nullptr)
			pthread_setspecific(k, g_buffer);
	return nullptr;
}

} // namespace

TEST_CASE("item 7: the thread-exit hook ignores a forged key value", "[attack]")
{
	ChildResult r = run_quiet([] {
		memset(g_buffer, 0x5c, sizeof g_buffer);
		pthread_t t;
		if (pthread_create(&t, nullptr, key_smasher, nullptr) != 0) return 90;
		pthread_join(t, nullptr);
		for (unsigned char c : g_buffer)
			if (c != 0x5c) return 91; /* the hook wrote into the program's buffer */
		std::vector<void *> v;
		for (int i = 0; i < 1000; i++)
			v.push_back(ebb_malloc(100));
		for (void *p : v)
			if (p == nullptr || (unsigned char *)p == g_buffer) return 92;
		for (void *p : v)
			ebb_free(p);
		return 0;
	});
	INFO("stderr: " << r.err << " code " << r.code << " signal " << r.signal);
	CHECK(r.exited);
	CHECK(r.code == 0);
}
#endif

TEST_CASE("item 8: tagged and non-canonical pointers are not ours", "[attack]")
{
	void *p = ebb_malloc(64);
	void *big = ebb_malloc(100000);
	for (void *base : {p, big}) {
		for (uintptr_t tag : {uintptr_t(1) << 56, uintptr_t(1) << 47}) {
			void *bad = (void *)((uintptr_t)base | tag);
			for (Call c : kCalls) {
				INFO(call_name(c) << " " << bad);
				expect_abort([=] {
					do_call(c, bad);
					return 0;
				}, bad_pointer_line(call_name(c), bad, kOutside));
			}
		}
	}
	ebb_free(p);
	ebb_free(big);
}

TEST_CASE("item 9: a double free of a block on a transfer batch is caught every time", "[attack]")
{
	/* 50 rounds in one child under on_error=warn: 512 blocks freed (whole
	 * batches reach the central transfer stack), then each freed a second
	 * time; then enough allocations to drain the stacks, all kept live. No
	 * block may be handed out twice, and every block freed twice must be
	 * reported. */
	ChildResult r = run_quiet([] {
		if (ebb_option_set("on_error", "warn") != 0) return 90;
		for (int round = 0; round < 50; round++) {
			std::vector<void *> v;
			for (int i = 0; i < 512; i++)
				v.push_back(ebb_malloc(64));
			for (void *p : v)
				ebb_free(p);
			for (void *p : v)
				ebb_free(p);
			std::set<void *> live;
			for (int i = 0; i < 1500; i++) {
				void *q = ebb_malloc(64);
				if (q == nullptr) return 91;
				if (!live.insert(q).second) return 92; /* handed out twice */
			}
			for (void *q : live)
				ebb_free(q);
			ebb_trim(); /* copies still listed meet their twins here */
			fprintf(stderr, "round\n");
		}
		return 0;
	});
	INFO("stderr (start): " << r.err.substr(0, 600) << " code " << r.code << " signal " << r.signal);
	CHECK(r.exited);
	CHECK(r.code == 0);
	/* Each round: every one of the 512 doubly freed blocks reported. */
	size_t start = 0;
	int rounds = 0;
	for (size_t end = r.err.find("round\n"); end != std::string::npos; end = r.err.find("round\n", start)) {
		std::vector<uintptr_t> a = reported(r.err.substr(start, end - start));
		std::set<uintptr_t> distinct(a.begin(), a.end());
		INFO("round " << rounds);
		CHECK(distinct.size() == 512);
		start = end + 6;
		rounds++;
	}
	CHECK(rounds == 50);
}

TEST_CASE("a block freed twice while the cache of the thread that freed it waits warm in the pool is "
	  "reported, never handed out twice",
	  "[attack]")
{
	/* In a child under on_error=warn: with the main thread and a bystander
	 * holding caches, a thread fills a bin and exits, leaving its cache
	 * warm in the pool (tcache.c, "The pool"); the main thread frees each
	 * of those blocks again (into its own bin: the free fast path does not
	 * read the block). A new thread takes the warm cache over and
	 * allocates, then the main thread does: each block must reach the
	 * program once, its second copy reported where it is popped. */
	ChildResult r = run_quiet([] {
		if (ebb_option_set("on_error", "warn") != 0) return 90;
		ebb_free(ebb_malloc(64)); /* the main thread has a cache */
		std::atomic<int> stage{0};
		std::thread bystander([&] {
			void *p = ebb_malloc(32);
			stage = 1;
			while (stage != 2) sched_yield();
			ebb_free(p);
		});
		while (stage != 1) sched_yield();
		std::vector<void *> v;
		v.reserve(40);
		std::thread([&] {
			for (int i = 0; i < 40; i++)
				v.push_back(ebb_malloc(64));
			for (void *p : v)
				ebb_free(p);
		}).join();
		for (void *p : v)
			ebb_free(p);
		std::set<void *> live;
		int code = 0;
		auto take = [&](int n) {
			for (int i = 0; i < n; i++) {
				void *q = ebb_malloc(64);
				if (q == nullptr) code = 91;
				else if (!live.insert(q).second) code = 92; /* handed out twice */
			}
		};
		std::thread([&] { take(200); }).join(); /* kept live */
		take(200);
		for (void *q : live)
			ebb_free(q);
		ebb_trim();
		stage = 2;
		bystander.join();
		for (void *p : v)
			fprintf(stderr, "freed: %p\n", p);
		return code;
	});
	INFO("stderr (start): " << r.err.substr(0, 600) << " code " << r.code << " signal " << r.signal);
	CHECK(r.exited);
	CHECK(r.code == 0);
	size_t end = r.err.find("freed: ");
	REQUIRE(end != std::string::npos);
	std::vector<uintptr_t> a = reported(r.err.substr(0, end));
	std::set<uintptr_t> distinct(a.begin(), a.end()), freed;
	for (size_t at = r.err.find("freed: ", end); at != std::string::npos; at = r.err.find("freed: ", at + 1))
		freed.insert((uintptr_t)strtoull(r.err.c_str() + at + 7, nullptr, 16));
	REQUIRE(freed.size() == 40);
	/* The copies the main thread popped after the new thread handed the
	 * cached blocks out: all but the one block the exited thread's first
	 * free sent to its span. */
	CHECK(distinct.size() >= 39);
	for (uintptr_t x : distinct)
		CHECK(freed.count(x) == 1);
}
