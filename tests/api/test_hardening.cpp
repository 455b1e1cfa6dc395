/* test_hardening.cpp: every bad pointer the allocator promises to catch is
 * caught, reported as one exact line on stderr naming the function, the
 * address and the reason, and then abort()s; under on_error=warn the call
 * returns, the process goes on and the allocator keeps working.
 *
 * Each case runs in a forked child twice: once with the default on_error=abort
 * (the child must die of SIGABRT after writing exactly the expected line) and
 * once with on_error=warn (the child must write the same line, see the call
 * return, pass a workout with content checks and stats that add up, and exit
 * 0). The bad pointers are made in the parent, so the expected address is
 * known before the fork. */
#include "api_util.h"
#include "child_util.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <dlfcn.h>
#include <functional>
#include <sched.h>
#include <sys/mman.h>
#include <thread>
#include <vector>

using namespace apitest;

namespace {

alignas(64) char g_global[256];

enum class Call { Free, Realloc, Usable };
const char *call_name(Call c)
{
	return c == Call::Free ? "free" : c == Call::Realloc ? "realloc" : "malloc_usable_size";
}

/* The allocator works after a report: blocks of every kind keep their
 * contents through realloc, and quiescent stats add up. 0 if all is well. */
int workout(const Api *a)
{
	std::vector<void *> v;
	std::vector<size_t> n;
	Rng rng(7);
	for (int i = 0; i < 400; i++) {
		size_t sz = i % 50 == 0 ? 300 * KiB + (size_t)i : rng.log_size(40 * KiB);
		void *p = a->malloc_(sz);
		if (p == nullptr) return 101;
		fill(p, sz, (unsigned)i);
		v.push_back(p);
		n.push_back(sz);
	}
	void *huge = a->malloc_(6 * MiB);
	if (huge == nullptr) return 102;
	fill(huge, 6 * MiB, 99);
	for (size_t i = 0; i < v.size(); i += 3) {
		size_t nn = n[i] * 2 + 1;
		void *q = a->realloc_(v[i], nn);
		if (q == nullptr) return 103;
		if (first_mismatch(q, n[i], (unsigned)i) != n[i]) return 104;
		fill(q, nn, (unsigned)i);
		v[i] = q;
		n[i] = nn;
	}
	for (size_t i = 0; i < v.size(); i++) {
		if (first_mismatch(v[i], n[i], (unsigned)i) != n[i]) return 105;
		if (a->usable_(v[i]) < n[i]) return 106;
		a->free_(v[i]);
	}
	if (first_mismatch(huge, 6 * MiB, 99) != 6 * MiB) return 107;
	a->free_(huge);
	ebb_trim();
	for (int i = 0; i < 20; i++) {
		ebb_stats_t s = stats();
		if (s.mapped == stats_parts(s)) return 0;
		std::this_thread::yield();
	}
	return 108;
}

/* One case: `prepare` runs in the parent and returns the bad pointer (and
 * may set up state the child inherits); `act` runs in the child and makes the
 * bad call; it returns 0 when, under on_error=warn, the call came back as
 * it should. */
struct Outcome {
	ChildResult abort_run, warn_run;
};

Outcome run_case(const Api *a, std::function<int()> act)
{
	Outcome o;
	o.abort_run = run_child([&] { return act(); });
	o.warn_run = run_child([&] {
		if (ebb_option_set("on_error", "warn") != 0) return 90;
		int rc = act();
		if (rc != 0) return rc;
		return workout(a);
	});
	return o;
}

void check_outcome(const Outcome &o, const std::string &line)
{
	INFO("expected: " << line);
	INFO("abort run stderr: " << o.abort_run.err);
	CHECK(!o.abort_run.exited);
	CHECK(o.abort_run.signal == SIGABRT);
	CHECK(o.abort_run.err == line);
	INFO("warn run stderr: " << o.warn_run.err << " exit code " << o.warn_run.code);
	CHECK(o.warn_run.exited);
	CHECK(o.warn_run.code == 0);
	CHECK(o.warn_run.err == line);
}

/* The bad call itself; under warn, realloc must return NULL and leave errno
 * alone, malloc_usable_size must return 0. */
int bad_call(const Api *a, Call c, void *p)
{
	switch (c) {
	case Call::Free:
		a->free_(p);
		return 0;
	case Call::Realloc: {
		errno = 1234;
		void *q = a->realloc_(p, 100);
		return q == nullptr && errno == 1234 ? 0 : 91;
	}
	case Call::Usable:
		return a->usable_(p) == 0 ? 0 : 92;
	}
	return 93;
}

void expect_bad(const Api *a, Call c, void *p, const char *reason)
{
	INFO("api " << a->name << ", " << call_name(c) << "(" << p << ")");
	Outcome o = run_case(a, [=] { return bad_call(a, c, p); });
	check_outcome(o, bad_pointer_line(call_name(c), p, reason));
}

void expect_bad_all_calls(const Api *a, void *p, const char *reason)
{
	for (Call c : {Call::Free, Call::Realloc, Call::Usable}) expect_bad(a, c, p, reason);
}

/* Another allocator's malloc: glibc's own when ebbmalloc replaces malloc,
 * else whatever malloc the process has (glibc's, or a sanitizer's). */
void *other_function(const char *name, void *own)
{
#if EBB_TEST_OVERRIDE
	(void)own;
	void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
	return libc != nullptr ? dlsym(libc, name) : nullptr;
#else
	(void)name;
	return own;
#endif
}

void *(*other_malloc())(size_t)
{
	return reinterpret_cast<void *(*)(size_t)>(other_function("malloc", reinterpret_cast<void *>(::malloc)));
}

/* Its free, to give the foreign blocks back (LeakSanitizer counts them). */
void (*other_free())(void *)
{
	return reinterpret_cast<void (*)(void *)>(other_function("free", reinterpret_cast<void *>(::free)));
}

void pin_to_first_cpu()
{
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof set, &set) != 0) return;
	for (int i = 0; i < CPU_SETSIZE; i++) {
		if (CPU_ISSET(i, &set)) {
			CPU_ZERO(&set);
			CPU_SET(i, &set);
			sched_setaffinity(0, sizeof set, &set);
			return;
		}
	}
}

const char *kNotOurs = "not allocated by ebbmalloc";
const char *kNotStart = "not the start of a block";
const char *kFreedMark = "the block was freed (it carries the free mark)";
const char *kCorrupt = "corrupted free-list link (a write into a freed block, or a double free)";
/* A double free that the free fast path let through (it reads nothing of the
 * block), found when a copy of the block is about to be handed out again. */
const char *kLostMark = "double free (the block was freed twice and is about to be handed out again), "
			"or a write into it after it was freed";

} // namespace

TEST_CASE("pointers ebbmalloc never returned: stack, global, another allocator's block, an mmap'd page",
	  "[hardening]")
{
	alignas(64) char stack_buf[256];
	memset(stack_buf, 0, sizeof stack_buf);
	void *(*om)(size_t) = other_malloc();
	REQUIRE(om != nullptr);
	void *foreign_small = om(48);
	void *foreign_large = om(300 * 1024);
	REQUIRE(foreign_small != nullptr);
	REQUIRE(foreign_large != nullptr);
	void *page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(page != MAP_FAILED);
	for (const Api *a : all_apis()) {
		expect_bad_all_calls(a, opaque(stack_buf + 64), kNotOurs);
		expect_bad_all_calls(a, opaque(g_global + 64), kNotOurs);
		expect_bad_all_calls(a, opaque(foreign_small), kNotOurs);
		expect_bad_all_calls(a, opaque(foreign_large), kNotOurs);
		expect_bad_all_calls(a, opaque(page), kNotOurs);
	}
	munmap(page, 4096);
	void (*of)(void *) = other_free();
	REQUIRE(of != nullptr);
	of(foreign_small);
	of(foreign_large);
}

TEST_CASE("interior and misaligned pointers into small blocks", "[hardening]")
{
	for (const Api *a : all_apis()) {
		char *p = static_cast<char *>(a->malloc_(64));
		REQUIRE(p != nullptr);
		REQUIRE(a->usable_(p) == 64);
		char *big = static_cast<char *>(a->malloc_(3000)); /* a multi-page span */
		REQUIRE(big != nullptr);
		for (Call c : {Call::Realloc, Call::Usable}) {
			expect_bad(a, c, p + 16, kNotStart);
			expect_bad(a, c, p + 1, kNotStart);
			expect_bad(a, c, p + 8, kNotStart);
			expect_bad(a, c, big + 2048, kNotStart);
		}
		a->free_(p);
		a->free_(big);
	}
}

/* free() of an interior or misaligned small pointer: the free fast path
 * (tcache/tcache.h, tcache_free) catches it with the block test
 * (core/blocks/block.h, rule 3: p's offset in its span from the page map
 * word, one multiply and compare) and its slow path reports it. Offsets
 * inside one page and inside a multi-page span's later page. */
TEST_CASE("free() of interior and misaligned pointers into small blocks", "[hardening_fastpath]")
{
	for (const Api *a : all_apis()) {
		char *p = static_cast<char *>(a->malloc_(64));
		REQUIRE(p != nullptr);
		char *big = static_cast<char *>(a->malloc_(3000));
		REQUIRE(big != nullptr);
		expect_bad(a, Call::Free, p + 16, kNotStart);
		expect_bad(a, Call::Free, p + 1, kNotStart);
		expect_bad(a, Call::Free, p + 8, kNotStart);
		expect_bad(a, Call::Free, big + 2048, kNotStart);
		a->free_(p);
		a->free_(big);
	}
}

TEST_CASE("interior and misaligned pointers into large and huge blocks", "[hardening]")
{
	for (const Api *a : all_apis()) {
		char *large = static_cast<char *>(a->malloc_(200 * KiB));
		char *huge = static_cast<char *>(a->malloc_(10 * MiB));
		char *aligned = static_cast<char *>(a->aligned_alloc_(64 * KiB, 100 * KiB));
		REQUIRE(large != nullptr);
		REQUIRE(huge != nullptr);
		REQUIRE(aligned != nullptr);
		for (Call c : {Call::Free, Call::Realloc, Call::Usable}) {
			expect_bad(a, c, large + 4096, kNotStart);
			expect_bad(a, c, large + 8, kNotStart);
			expect_bad(a, c, large + 1, kNotStart);
			expect_bad(a, c, aligned + 64 * KiB, kNotStart);
			expect_bad(a, c, huge + 4096, kNotStart);
			expect_bad(a, c, huge + 16, kNotStart);
			/* past the block's first 4 MiB: a slot that only continues it */
			expect_bad(a, c, huge + 5 * MiB, "not the start of a block (inside a huge block)");
		}
		a->free_(large);
		a->free_(huge);
		a->free_(aligned);
	}
}

TEST_CASE("double free of a small block still in the freeing thread's cache", "[hardening]")
{
	for (const Api *a : all_apis()) {
		void *p = a->malloc_(64);
		REQUIRE(p != nullptr);
		void *keep = a->malloc_(64); /* the span stays in use */
		INFO("api " << a->name);
		Outcome o = run_case(a, [=] {
			a->free_(p);
			a->free_(p);
			return 0;
		});
		check_outcome(o, bad_pointer_line("free", p,
						  "double free (the block is already in this thread's cache)"));
		/* realloc and malloc_usable_size of the freed block */
		for (Call c : {Call::Realloc, Call::Usable}) {
			INFO(call_name(c));
			Outcome r = run_case(a, [=] {
				a->free_(p);
				return bad_call(a, c, p);
			});
			check_outcome(r, bad_pointer_line(call_name(c), p, kFreedMark));
		}
		/* realloc(p, 0) frees: of a freed block, it is realloc's double free */
		Outcome z = run_case(a, [=] {
			a->free_(p);
			return a->realloc_(p, 0) == nullptr ? 0 : 94;
		});
		check_outcome(z, bad_pointer_line("realloc", p, kFreedMark));
		a->free_(p);
		a->free_(keep);
	}
}

TEST_CASE("a double free caught by the malloc fast path leaves the block as the program wrote it",
	  "[hardening]")
{
	/* The fast path tests and clears the mark with one xor and undoes the
	 * xor when the test fails (freelist_take_mark): the block is reported
	 * and, under warn, dropped with its words as they were, never with a
	 * word derived from the key in it. */
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		void **shared = static_cast<void **>(
			mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
		REQUIRE(shared != MAP_FAILED);
		ChildResult r[2];
		for (int warn = 0; warn < 2; warn++) {
			r[warn] = run_child([=] {
				if (warn && ebb_option_set("on_error", "warn") != 0) return 90;
				void *keep = a->malloc_(64); /* the span stays in use */
				void *p = a->malloc_(64), *q = a->malloc_(64);
				shared[warn] = p;
				a->free_(p);
				a->free_(q);
				a->free_(p); /* not the block freed last: the free fast path takes it */
				if (a->malloc_(64) != p) return 91;
				const uint64_t w0 = 0x0123456789abcdefull, w1 = 0x1122334455667788ull;
				static_cast<volatile uint64_t *>(p)[0] = w0;
				static_cast<volatile uint64_t *>(p)[1] = w1;
				if (a->malloc_(64) != q) return 92;
				if (a->malloc_(64) == p) return 93; /* reported here */
				if (static_cast<volatile uint64_t *>(p)[0] != w0) return 94;
				if (static_cast<volatile uint64_t *>(p)[1] != w1) return 95;
				for (int i = 0; i < 1000; i++)
					if (a->malloc_(64) == p) return 96;
				(void)keep;
				return warn ? workout(a) : 0;
			});
		}
		for (int warn = 0; warn < 2; warn++) {
			const ChildResult &c = r[warn];
			INFO((warn ? "warn" : "abort") << " run stderr: " << c.err << " code " << c.code);
			CHECK(abort_and_warn_ok(c, warn));
			CHECK(c.err == bad_pointer_line("malloc", shared[warn], kLostMark));
		}
		munmap(shared, 4096);
	}
}

TEST_CASE("double free of a small block that went back to its span", "[hardening]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		/* The second free is not seen at once: the free fast path does not
		 * read the block. The next malloc of the class hands p out from the
		 * bin (clearing its mark); the refill after it finds p, unmarked, on
		 * its span's free list and reports it before handing it out twice.
		 * The child makes the span itself, on the CPU it is pinned to, so
		 * that its refills look at the span's central list; p's address
		 * comes back through a shared page. */
		void **shared = static_cast<void **>(
			mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
		REQUIRE(shared != MAP_FAILED);
		ChildResult r[2];
		for (int warn = 0; warn < 2; warn++) {
			r[warn] = run_child([=] {
				pin_to_first_cpu();
				if (warn && ebb_option_set("on_error", "warn") != 0) return 90;
				/* The blocks the forked cache holds may be of spans homed on
				 * another CPU: start from an empty cache. */
				ebb_trim();
				/* One page of 64-byte blocks held, but for p: after a trim p
				 * is the only block on its span's free list. */
				std::vector<void *> v;
				for (int i = 0; i < 300; i++) v.push_back(a->malloc_(64));
				void *p = v[150];
				shared[warn] = p;
				a->free_(p);
				ebb_trim(); /* the cache and the central lists go back to the spans */
				a->free_(p);
				if (a->malloc_(64) != p) return 93;
				/* Enough to reach p's span past the list's other partial
				 * spans; p must never come back. */
				for (int i = 0; i < 20000; i++)
					if (a->malloc_(64) == p) return 94;
				return warn ? workout(a) : 0;
			});
		}
		for (int warn = 0; warn < 2; warn++) {
			const ChildResult &c = r[warn];
			INFO((warn ? "warn" : "abort") << " run stderr: " << c.err << " code " << c.code);
			CHECK(abort_and_warn_ok(c, warn));
			CHECK(c.err == bad_pointer_line("malloc", shared[warn], kLostMark));
		}
		munmap(shared, 4096);
		/* realloc of the block after it went back to its span */
		std::vector<void *> v;
		for (int i = 0; i < 300; i++) v.push_back(a->malloc_(64));
		void *p = v[150];
		Outcome o = run_case(a, [=] {
			a->free_(p);
			ebb_trim();
			return bad_call(a, Call::Realloc, p);
		});
		check_outcome(o, bad_pointer_line("realloc", p, kFreedMark));
		for (void *q : v) a->free_(q);
	}
}

TEST_CASE("double free of a small block another thread freed", "[hardening]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		void *p = a->malloc_(96);
		REQUIRE(p != nullptr);
		void *keep = a->malloc_(96);
		Outcome o = run_case(a, [=] {
			/* The other thread holds p in its cache while this one frees it. */
			std::atomic<int> stage{0};
			std::thread t([&] {
				/* A thread's very first free goes past its cache, to the
				 * span: let it use its cache first. */
				a->free_(a->malloc_(96));
				a->free_(p);
				stage = 1;
				while (stage.load() != 2) std::this_thread::yield();
			});
			while (stage.load() != 1) std::this_thread::yield();
			a->free_(p);
			/* Not seen yet (the free fast path does not read the block);
			 * this thread's next malloc hands p out, clearing its mark, and
			 * the other thread's exit, flushing its cache, finds p there
			 * without it. */
			if (a->malloc_(96) != p) return 93;
			stage = 2;
			t.join();
			return 0;
		});
		check_outcome(o, bad_pointer_line("free", p, kLostMark));
		a->free_(keep);
		a->free_(p);
	}
}

TEST_CASE("double free of large and huge blocks, also through realloc", "[hardening]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		/* A large block between two live ones: freeing it merges with no
		 * neighbour, so its pages are still known as one freed run. */
		std::vector<char *> v;
		for (int i = 0; i < 12; i++) v.push_back(static_cast<char *>(a->malloc_(100 * KiB)));
		std::vector<char *> sorted = v;
		std::sort(sorted.begin(), sorted.end());
		size_t u = a->usable_(v[0]);
		char *mid = nullptr;
		for (size_t i = 1; i + 1 < sorted.size() && mid == nullptr; i++)
			if (sorted[i - 1] + u == sorted[i] && sorted[i] + u == sorted[i + 1]) mid = sorted[i];
		REQUIRE(mid != nullptr);
		char *huge = static_cast<char *>(a->malloc_(12 * MiB));
		REQUIRE(huge != nullptr);
		for (char *p : {mid, huge}) {
			Outcome o = run_case(a, [=] {
				a->free_(p);
				a->free_(p);
				return 0;
			});
			check_outcome(o, bad_pointer_line("free", p, "double free (the block is already free)"));
			for (Call c : {Call::Realloc, Call::Usable}) {
				Outcome r = run_case(a, [=] {
					a->free_(p);
					return bad_call(a, c, p);
				});
				check_outcome(r, bad_pointer_line(call_name(c), p, "the block was freed"));
			}
		}
		for (char *p : v) a->free_(p);
		a->free_(huge);
	}
}

TEST_CASE("a write into a freed block in a thread cache is harmless", "[hardening]")
{
	/* Bins are arrays of addresses outside the blocks (tcache.h): a block
	 * in a bin holds no link, so a use-after-free write of an address into
	 * it changes nothing malloc reads (it must not clobber the mark in word
	 * 1: that case is tests/api/test_attack.cpp's). */
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		for (uintptr_t evil : {(uintptr_t)(g_global + 64), (uintptr_t)0}) {
			INFO("word 0 overwritten with " << (void *)evil);
			ChildResult c = run_child([=] {
				void *p = a->malloc_(80);
				if (p == nullptr) return 95;
				a->free_(p);
				memcpy(p, &evil, sizeof evil); /* use after free */
				for (int i = 0; i < 1000; i++) {
					void *q = a->malloc_(80);
					if (q == nullptr) return 96;
					if ((uintptr_t)q == evil || ((uintptr_t)q & 15) != 0) return 97;
					if (a->usable_(q) != 80) return 98;
				}
				return workout(a);
			});
			INFO("stderr: " << c.err << " code " << c.code);
			CHECK(c.exited);
			CHECK(c.code == 0);
			CHECK(c.err.empty());
		}
	}
}

TEST_CASE("a corrupted link in a span's free list is reported, never followed", "[hardening]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		ChildResult r[2];
		/* The address of the corrupted block, found by the child; passed back
		 * through a shared page so the parent can build the exact line. */
		void **shared = static_cast<void **>(
			mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
		REQUIRE(shared != MAP_FAILED);
		for (int warn = 0; warn < 2; warn++) {
			r[warn] = run_child([=] {
				pin_to_first_cpu(); /* the span's central list is this CPU's */
				if (warn && ebb_option_set("on_error", "warn") != 0) return 90;
				/* A fresh span of 1 KiB blocks, all held, then one freed and
				 * flushed into the span's free list: the only free block. */
				std::vector<void *> v;
				for (int i = 0; i < 4000; i++) v.push_back(a->malloc_(1008));
				void *x = v[2000];
				a->free_(x);
				ebb_trim();
				void *evil = g_global + 64;
				memcpy(x, &evil, sizeof evil);
				shared[warn] = x;
				for (int i = 0; i < 2000; i++) {
					void *q = a->malloc_(1008);
					if (q == nullptr) return 96;
					if (q == evil) return 97;
					v.push_back(q);
				}
				for (void *q : v)
					if (q != x) a->free_(q);
				return warn ? workout(a) : 0;
			});
		}
		for (int warn = 0; warn < 2; warn++) {
			const ChildResult &c = r[warn];
			INFO((warn ? "warn" : "abort") << " run stderr: " << c.err << " code " << c.code);
			CHECK(abort_and_warn_ok(c, warn));
			CHECK(c.err == bad_pointer_line("malloc", shared[warn], kCorrupt));
		}
		munmap(shared, 4096);
	}
}

/* Registered with EBB_OPTIONS=on_error=warn in the environment: the option
 * is read at start-up, and a bad free in this very process returns. */
TEST_CASE("EBB_OPTIONS=on_error=warn from the environment: report, return, carry on", "[hardening_env]")
{
	long long v = -1;
	REQUIRE(ebb_option_get("on_error", &v) == 0);
	REQUIRE(v == 1);
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		ChildResult r = run_child([=] {
			/* no option set here: the child inherits the environment's */
			void *p = a->malloc_(64);
			a->free_(g_global + 64);
			a->free_(p);
			a->free_(p);
			if (a->realloc_(g_global + 64, 10) != nullptr) return 91;
			if (a->usable_(g_global + 64) != 0) return 92;
			return workout(a);
		});
		CHECK(r.exited);
		CHECK(r.code == 0);
		void *g = g_global + 64;
		CHECK(r.err.find(bad_pointer_line("free", g, kNotOurs)) == 0);
		CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 4);
		CHECK(r.err.find(bad_pointer_line("realloc", g, kNotOurs)) != std::string::npos);
		CHECK(r.err.find(bad_pointer_line("malloc_usable_size", g, kNotOurs)) != std::string::npos);
		CHECK(r.err.find("double free (the block is already in this thread's cache)\n") != std::string::npos);
	}
	/* and in this process itself */
	void *g = g_global + 64;
	ebb_free(g);
	CHECK(ebb_realloc(g, 1) == nullptr);
	CHECK(workout(&ebb_api()) == 0);
}
