/* test_dlopen.cpp: libebbmalloc.so dlopen()ed into a running, multithreaded
 * program that was not linked with it. The ebb_* API, found with dlsym, works
 * from the main thread, from threads that existed before the dlopen and from
 * threads created after it (an allocator whose TLS needs a static TLS block
 * fails here with "cannot allocate memory in static TLS block").
 *
 * This program does not link ebbmalloc: the header is used for types only.
 * With EBB_OVERRIDE the library's malloc does not replace the program's
 * (already bound) malloc; only the ebb_* names are used. */
#include <ebbmalloc.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <dlfcn.h>
#include <mutex>
#include <thread>
#include <vector>

#ifndef EBB_LIB_PATH
#error "EBB_LIB_PATH: the path of libebbmalloc.so"
#endif

namespace {

struct EbbFns {
	decltype(&ebb_malloc) malloc_ = nullptr;
	decltype(&ebb_free) free_ = nullptr;
	decltype(&ebb_realloc) realloc_ = nullptr;
	decltype(&ebb_stats_get) stats_get = nullptr;
};

struct Exchange {
	std::mutex m;
	std::vector<std::pair<unsigned char *, size_t>> blocks;
};

size_t block_size(unsigned &x, int i)
{
	x = x * 1103515245u + 12345u;
	size_t n = (x >> 8) % 2048 + 1;
	if (i % 97 == 0) n = (size_t)((x >> 4) % (3u << 20)) + 65536; /* large and huge */
	else if (i % 13 == 0) n = (x >> 8) % 65536 + 1;
	return n;
}

bool filled(const unsigned char *p, size_t n, unsigned char v)
{
	return p[0] == v && p[n / 2] == v && p[n - 1] == v;
}

/* Allocation work for one thread: returns the number of errors. */
size_t work(const EbbFns &f, int id, Exchange &ex)
{
	size_t errors = 0;
	unsigned x = (unsigned)id * 7919u + 1;
	std::vector<std::pair<unsigned char *, size_t>> mine;
	for (int i = 0; i < 3000; i++) {
		size_t n = block_size(x, i);
		unsigned char v = (unsigned char)(id * 31 + i);
		unsigned char *p = static_cast<unsigned char *>(f.malloc_(n));
		if (!p) {
			errors++;
			continue;
		}
		memset(p, v, n);
		if (i % 5 == 0) {
			unsigned char *q = static_cast<unsigned char *>(f.realloc_(p, n * 2 + 10));
			if (!q || !filled(q, n, v)) errors++;
			if (!q) continue;
			p = q;
		}
		if (i % 3 == 0) {
			std::lock_guard<std::mutex> g(ex.m);
			ex.blocks.push_back({p, n});
			*p = 0xEE; /* marks "handed over" */
		} else if (i % 3 == 1) {
			mine.push_back({p, n});
		} else {
			f.free_(p);
		}
		if (i % 50 == 0) { /* free what other threads handed over */
			std::vector<std::pair<unsigned char *, size_t>> got;
			{
				std::lock_guard<std::mutex> g(ex.m);
				got.swap(ex.blocks);
			}
			for (auto &b : got) {
				if (b.first[0] != 0xEE) errors++;
				f.free_(b.first);
			}
		}
	}
	for (auto &b : mine) f.free_(b.first);
	return errors;
}

} // namespace

TEST_CASE("dlopen libebbmalloc.so into a running multithreaded program and use it from every thread",
	  "[dlopen]")
{
	EbbFns f;
	std::mutex m;
	std::condition_variable cv;
	bool ready = false;
	Exchange ex;
	std::atomic<size_t> errors{0};

	/* threads that exist before the library is loaded */
	std::vector<std::thread> early;
	for (int id = 0; id < 4; id++)
		early.emplace_back([&, id] {
			std::unique_lock<std::mutex> lk(m);
			cv.wait(lk, [&] { return ready; });
			lk.unlock();
			if (f.malloc_ && f.free_ && f.realloc_) errors += work(f, id, ex);
		});

	/* On every way out (a failed REQUIRE included) the early threads are
	 * released and joined; they work only if every function was found. */
	struct Release {
		std::mutex &m;
		std::condition_variable &cv;
		bool &ready;
		std::vector<std::thread> &threads;
		void go()
		{
			{
				std::lock_guard<std::mutex> g(m);
				ready = true;
			}
			cv.notify_all();
		}
		~Release()
		{
			go();
			for (auto &t : threads)
				if (t.joinable()) t.join();
		}
	} release{m, cv, ready, early};

	void *h = dlopen(EBB_LIB_PATH, RTLD_NOW | RTLD_LOCAL);
	const char *err = h ? nullptr : dlerror();
	INFO("dlopen(" EBB_LIB_PATH "): " << (err ? err : "ok"));
	REQUIRE(h != nullptr);
	f.malloc_ = reinterpret_cast<decltype(&ebb_malloc)>(dlsym(h, "ebb_malloc"));
	f.free_ = reinterpret_cast<decltype(&ebb_free)>(dlsym(h, "ebb_free"));
	f.realloc_ = reinterpret_cast<decltype(&ebb_realloc)>(dlsym(h, "ebb_realloc"));
	f.stats_get = reinterpret_cast<decltype(&ebb_stats_get)>(dlsym(h, "ebb_stats_get"));
	REQUIRE(f.malloc_ != nullptr);
	REQUIRE(f.free_ != nullptr);
	REQUIRE(f.realloc_ != nullptr);
	REQUIRE(f.stats_get != nullptr);

	/* the main thread first, holding blocks while the others run */
	ebb_stats_t before;
	memset(&before, 0, sizeof before);
	f.stats_get(&before);
	std::vector<void *> held;
	for (int i = 0; i < 100; i++) {
		void *p = f.malloc_(10000);
		REQUIRE(p != nullptr);
		memset(p, i, 10000);
		held.push_back(p);
	}
	ebb_stats_t mid;
	memset(&mid, 0, sizeof mid);
	f.stats_get(&mid);
	CHECK(mid.allocated >= before.allocated + 100 * 10000);

	release.go();
	/* and threads created after the dlopen */
	std::vector<std::thread> late;
	for (int id = 4; id < 8; id++) late.emplace_back([&, id] { errors += work(f, id, ex); });
	for (auto &t : early) t.join();
	for (auto &t : late) t.join();
	CHECK(errors == 0);

	for (size_t i = 0; i < held.size(); i++) {
		const unsigned char *c = static_cast<const unsigned char *>(held[i]);
		CHECK((c[0] == (unsigned char)i && c[9999] == (unsigned char)i));
		f.free_(held[i]);
	}
	for (auto &b : ex.blocks) f.free_(b.first);
	ex.blocks.clear();

	ebb_stats_t after;
	memset(&after, 0, sizeof after);
	f.stats_get(&after);
	/* every block is free again: the program holds nothing of what it held at `mid` */
	CHECK(after.allocated + 100 * 10000 <= mid.allocated);

	/* ebbmalloc is linked with -z nodelete: dlclose succeeds and keeps it */
	CHECK(dlclose(h) == 0);
}
