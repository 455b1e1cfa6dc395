// Memory return, end to end: the real library with its background thread, RSS
// read from /proc/self/statm. These are the scenarios users report against
// every allocator: a burst, then idle; RSS must come back within 16 MiB of
// where it started within 2 x decay_ms.
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "ebbmalloc.h"

namespace {

const size_t MiB = 1 << 20;

size_t rss_bytes()
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, resident = 0;
	if (f) {
		if (fscanf(f, "%lu %lu", &size, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * (size_t)sysconf(_SC_PAGESIZE);
}

long long option(const char *name)
{
	long long v = 0;
	REQUIRE(ebb_option_get(name, &v) == 0);
	return v;
}

double now_ms()
{
	using namespace std::chrono;
	return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// Polls RSS until it is within `slack` of `target` or `limit_ms` passes;
// returns the milliseconds it took (or -1).
double wait_for_rss(size_t target, size_t slack, double limit_ms, size_t *last)
{
	double t0 = now_ms();
	for (;;) {
		*last = rss_bytes();
		double t = now_ms() - t0;
		if (*last <= target + slack)
			return t;
		if (t > limit_ms)
			return -1;
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	}
}

// An array outside the allocator, so it does not blur what is measured.
template <typename T> struct mapped_array {
	T *p;
	size_t n;
	explicit mapped_array(size_t count) : n(count)
	{
		p = (T *)mmap(nullptr, n * sizeof(T), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		REQUIRE(p != MAP_FAILED);
	}
	void release()
	{
		if (p)
			munmap(p, n * sizeof(T));
		p = nullptr;
	}
	~mapped_array() { release(); }
};

// Log-uniform sizes from 16 B to 1 MiB, as in the seeds' scenario.
size_t mixed_size(std::mt19937_64 &rng)
{
	std::uniform_real_distribution<double> d(4.0, 20.0);
	return (size_t)std::exp2(d(rng));
}

// No background thread, a long decay and a large dirty budget while it
// lives: nothing but what a case does may give pages back. Restores the
// defaults.
struct without_decay {
	without_decay()
	{
		REQUIRE(ebb_option_set("background_thread", "0") == 0);
		REQUIRE(ebb_option_set("decay_ms", "60000") == 0);
		REQUIRE(ebb_option_set("dirty_max", "1G") == 0);
	}
	~without_decay()
	{
		ebb_option_set("decay_ms", "500");
		ebb_option_set("dirty_max", "25%");
		ebb_option_set("background_thread", "1");
	}
};
} // namespace

TEST_CASE("5 million 120-byte blocks freed: RSS back within 16 MiB in 2 x decay_ms", "[memory]")
{
	const long long decay = option("decay_ms");
	REQUIRE(decay > 0);
	const size_t n = 5000000;
	mapped_array<void *> ptrs(n);
	size_t rss0 = rss_bytes();
	for (size_t i = 0; i < n; i++) {
		ptrs.p[i] = ebb_malloc(120);
		REQUIRE(ptrs.p[i] != nullptr);
		memset(ptrs.p[i], (int)i, 120);
	}
	size_t peak = rss_bytes();
	for (size_t i = 0; i < n; i++)
		ebb_free(ptrs.p[i]);
	ptrs.release(); // the test's own 40 MB, not the allocator's
	size_t last;
	double took = wait_for_rss(rss0, 16 * MiB, 2.0 * (double)decay, &last);
	WARN("start " << rss0 / MiB << " MiB, peak " << peak / MiB << " MiB, back to " << last / MiB
		      << " MiB after " << took << " ms (decay_ms " << decay << ")");
	CHECK(peak > rss0 + 500 * MiB);
	REQUIRE(took >= 0);
}

// The two threads stay alive and idle after their frees, and a live thread's
// cache is its own: nothing but the thread itself gives its bins back (the
// background thread only asks it to trim at its next refill or flush,
// docs/memory-return.md, "Idle threads"), and each class it used keeps up
// to one batch (two if its mallocs and frees interleaved, tcache.c
// bin_grow). Those bytes (the stats' `tcache`: 1.5-1.9 MiB per thread here,
// 2.7-3.2 before the second batch needed a full bin) are counted apart and
// bounded at 2.5 MiB a thread; everything else must come back to within
// 16 MiB. (Before they were counted apart, they were inside the 16 MiB: the
// floor at 2 x decay_ms was 15.5-15.8 MiB and a third of the runs failed.)
TEST_CASE("2 threads, 512 MiB of mixed sizes freed: RSS back within 16 MiB in 2 x decay_ms", "[memory]")
{
	const long long decay = option("decay_ms");
	size_t rss0 = rss_bytes();
	std::atomic<int> done{0};
	std::atomic<bool> release{false};
	size_t peak = 0;
	std::vector<std::thread> threads;
	for (int t = 0; t < 2; t++) {
		threads.emplace_back([t, &done, &release] {
			std::mt19937_64 rng(42 + t);
			std::vector<std::pair<void *, size_t>> blocks;
			size_t total = 0;
			while (total < 256 * MiB) {
				size_t sz = mixed_size(rng);
				void *p = ebb_malloc(sz);
				memset(p, 1, sz);
				blocks.push_back({p, sz});
				total += sz;
			}
			done++;
			while (done.load() < 3) // wait until the main thread has seen the peak
				std::this_thread::sleep_for(std::chrono::milliseconds(1));
			for (auto &b : blocks)
				ebb_free(b.first);
			std::vector<std::pair<void *, size_t>>().swap(blocks);
			done++;
			// Stay alive and idle: a thread's cache must not pin the memory.
			while (!release.load())
				std::this_thread::sleep_for(std::chrono::milliseconds(2));
		});
	}
	while (done.load() < 2)
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	peak = rss_bytes();
	done++;
	while (done.load() < 5)
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	ebb_stats_t st;
	ebb_stats_get(&st);
	size_t cached = st.tcache; /* the idle threads' bins, which only they give back */
	size_t last;
	double took = wait_for_rss(rss0 + cached, 16 * MiB, 2.0 * (double)decay, &last);
	WARN("start " << rss0 / MiB << " MiB, peak " << peak / MiB << " MiB, idle thread caches "
		      << cached / 1024 << " KiB, back to " << last / MiB << " MiB after " << took << " ms");
	release = true;
	for (auto &th : threads)
		th.join();
	CHECK(peak > rss0 + 400 * MiB);
	CHECK(cached <= 2 * 5 * MiB / 2);
	REQUIRE(took >= 0);
}

TEST_CASE("every 100th object kept alive: every free page still goes back", "[memory]")
{
	const long long decay = option("decay_ms");
	size_t rss0 = rss_bytes();
	std::mt19937_64 rng(7);
	std::vector<std::pair<void *, size_t>> blocks, kept;
	size_t total = 0, kept_bytes = 0;
	while (total < 512 * MiB) {
		size_t sz = mixed_size(rng);
		void *p = ebb_malloc(sz);
		memset(p, 2, sz);
		blocks.push_back({p, sz});
		total += sz;
	}
	size_t peak = rss_bytes();
	for (size_t i = 0; i < blocks.size(); i++) {
		if (i % 100 == 0) {
			kept.push_back(blocks[i]);
			kept_bytes += blocks[i].second;
		} else {
			ebb_free(blocks[i].first);
		}
	}
	std::vector<std::pair<void *, size_t>>().swap(blocks);
	std::this_thread::sleep_for(std::chrono::milliseconds(2 * decay + 100));
	size_t after = rss_bytes();
	ebb_stats_t st;
	ebb_stats_get(&st);
	WARN("kept " << kept.size() << " objects, " << kept_bytes / MiB << " MiB live; RSS start "
		     << rss0 / MiB << " MiB, peak " << peak / MiB << " MiB, after idle " << after / MiB
		     << " MiB; " << (peak - after) * 100 / (peak - rss0) << "% of the growth came back; "
		     << "allocator: allocated " << st.allocated / MiB << " MiB, central (free blocks in partial spans) "
		     << st.central / MiB << " MiB, dirty " << st.dirty / MiB << " MiB");
	// Every fully free span went back to the page heap and was purged: no
	// dirty page is left, and what stays resident is live data plus the free
	// blocks that share a span with a live one.
	CHECK(st.dirty <= 16 * MiB);
	CHECK(after <= rss0 + st.allocated + st.central + st.tcache + st.metadata + 16 * MiB);
	for (auto &b : kept)
		ebb_free(b.first);
}

TEST_CASE("the allocator's resident figure agrees with the kernel's RSS", "[memory]")
{
	size_t rss0 = rss_bytes();
	ebb_stats_t s0, s1;
	ebb_stats_get(&s0);
	std::mt19937_64 rng(11);
	std::vector<void *> blocks;
	size_t total = 0;
	while (total < 400 * MiB) {
		size_t sz = mixed_size(rng);
		void *p = ebb_malloc(sz);
		memset(p, 3, sz); // touched: resident
		blocks.push_back(p);
		total += sz;
	}
	size_t rss1 = rss_bytes();
	ebb_stats_get(&s1);
	double kernel = (double)rss1 - (double)rss0;
	double ours = (double)s1.resident - (double)s0.resident;
	WARN("kernel RSS grew " << kernel / MiB << " MiB, ebbmalloc's resident figure " << ours / MiB << " MiB");
	// The vector of pointers lives outside ebbmalloc's stats only if the
	// test binary uses another malloc; allow it and a few percent.
	CHECK(std::abs(kernel - ours) <= 0.05 * kernel + 8.0 * MiB);
	for (void *p : blocks)
		ebb_free(p);
}

TEST_CASE("ebb_trim gives memory back at once, without the background thread", "[memory]")
{
	without_decay quiet;
	// What an earlier case in this process freed may still be dirty (the
	// whole binary runs the cases in one process, ctest one per process):
	// the burst below would reuse it and not raise RSS.
	ebb_trim();
	size_t rss0 = rss_bytes();
	std::vector<void *> v;
	for (int i = 0; i < 2000; i++) {
		void *p = ebb_malloc(64 * 1024);
		memset(p, 4, 64 * 1024);
		v.push_back(p);
	}
	for (void *p : v)
		ebb_free(p);
	size_t before = rss_bytes();
	REQUIRE(ebb_trim() == 1);
	// Read before anything allocates again: rss_bytes' stream buffer (8
	// KiB) comes from a class that gets no thread-cache bin until its 16th
	// use (tcache.c, CACHE_LATE_USES), so its free may empty a span and
	// leave its pages dirty in the page heap, as it should.
	ebb_stats_t st;
	ebb_stats_get(&st);
	size_t after = rss_bytes();
	WARN("RSS " << rss0 / MiB << " -> " << before / MiB << " MiB after free, " << after / MiB << " MiB after ebb_trim");
	CHECK(before > rss0 + 100 * MiB);
	CHECK(after <= rss0 + 16 * MiB);
	CHECK(st.dirty == 0);
}

TEST_CASE("a thread that frees what it used and exits gives it back at its exit", "[memory]")
{
	// bench/latency's end: a worker frees its working set of small blocks
	// in random order and exits, and the program goes on to use memory the
	// allocator does not see. Before issue 14's fix its blocks waited in
	// transfer batches (pinning the spans of nearly all of them) and its
	// pages in dirty runs, 8.7 MiB after the join with one thread. No
	// background thread and a long decay here: nothing but the exit may give
	// the pages back before the RSS is read.
	without_decay quiet;
	ebb_trim();
	// At most one exit in 100 ms drains (background.c): an earlier case's
	// thread must not have used this window up.
	std::this_thread::sleep_for(std::chrono::milliseconds(120));
	size_t rss0 = rss_bytes(), during = 0;
	std::thread worker([&] {
		const size_t n = 40000;
		mapped_array<void *> v(n);
		std::mt19937_64 rng(7);
		std::uniform_real_distribution<double> d(4.0, 10.0);
		for (size_t i = 0; i < n; i++) {
			size_t sz = (size_t)std::exp2(d(rng));
			v.p[i] = ebb_malloc(sz);
			REQUIRE(v.p[i] != nullptr);
			memset(v.p[i], 1, sz);
		}
		during = rss_bytes();
		for (size_t i = n; i > 1; i--)
			std::swap(v.p[i - 1], v.p[rng() % i]);
		for (size_t i = 0; i < n; i++)
			ebb_free(v.p[i]);
	});
	worker.join();
	size_t after = rss_bytes();
	WARN("RSS " << rss0 / 1024 << " KiB, " << during / 1024 << " KiB with the blocks, " << after / 1024
		    << " KiB after the join");
	CHECK(during > rss0 + 8 * MiB);
	CHECK(after <= rss0 + 2 * MiB);
}

TEST_CASE("an exit that winds the heaps down leaves their purge to the background thread, which does it at once",
	  "[memory]")
{
	// bench/large's end: its worker frees 140 MiB of large blocks and exits,
	// and the join, inside the timer, waited for the exit to purge them
	// (10-60 ms). With the background thread running the exit hands the
	// purge to it instead. Handed over, it must not be lost: decay_ms is a
	// minute here, so only that purge can give the pages back within a
	// second.
	REQUIRE(ebb_option_set("decay_ms", "60000") == 0);
	REQUIRE(ebb_option_set("dirty_max", "1G") == 0);
	ebb_trim();
	// At most one exit in 100 ms acts (background.c).
	std::this_thread::sleep_for(std::chrono::milliseconds(120));
	ebb_stats_t st;
	ebb_stats_get(&st);
	uint64_t purged0 = st.bytes_purged;
	size_t rss0 = rss_bytes(), during = 0;
	std::thread worker([&] {
		std::vector<void *> v;
		for (int i = 0; i < 32; i++) {
			v.push_back(ebb_malloc(MiB + (size_t)i * 8192));
			REQUIRE(v.back() != nullptr);
			memset(v.back(), 3, MiB);
		}
		during = rss_bytes();
		for (void *p : v)
			ebb_free(p);
	});
	worker.join();
	// The thread counts its purge once the kernel has returned: poll both.
	size_t last = 0;
	double t0 = now_ms(), took = -1;
	do {
		last = rss_bytes();
		ebb_stats_get(&st);
		if (last <= rss0 + 4 * MiB && st.bytes_purged >= purged0 + 24 * MiB) {
			took = now_ms() - t0;
			break;
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	} while (now_ms() - t0 < 1000);
	WARN("RSS " << rss0 / 1024 << " KiB, " << during / 1024 << " KiB with the blocks, " << last / 1024
		    << " KiB " << took << " ms after the join");
	ebb_option_set("decay_ms", "500");
	ebb_option_set("dirty_max", "25%");
	CHECK(during > rss0 + 24 * MiB);
	CHECK(took >= 0);
}

TEST_CASE("a thread that exits while the program holds its data purges nothing", "[memory]")
{
	// The other side of the rule: a thread's exit sends its transfer batches
	// home but purges only once in use is down to an eighth of the most the
	// heaps held, so a program that keeps its data (larson hands its blocks
	// to the next thread) keeps the pages it will come back for.
	without_decay quiet;
	ebb_trim();
	ebb_stats_t st;
	ebb_stats_get(&st);
	// Held by this thread: more than an eighth of any mark an earlier case of
	// this binary may have set (up to 512 MiB in use at once).
	const size_t held_n = 100, held_size = 1 * MiB;
	std::vector<void *> held;
	for (size_t i = 0; i < held_n; i++) {
		held.push_back(ebb_malloc(held_size));
		REQUIRE(held.back() != nullptr);
		memset(held.back(), 2, held_size);
	}
	ebb_stats_get(&st);
	uint64_t purged0 = st.bytes_purged;
	std::thread worker([] {
		std::vector<void *> v;
		for (int i = 0; i < 20000; i++)
			v.push_back(ebb_malloc(16 + (size_t)(i % 64) * 16));
		for (void *p : v)
			ebb_free(p);
	});
	worker.join();
	ebb_stats_get(&st);
	CHECK(st.bytes_purged == purged0);
	CHECK(st.dirty > 0);
	for (void *p : held)
		ebb_free(p);
}

TEST_CASE("big buffers of changing sizes replaced in a loop are not faulted in again", "[memory]")
{
	// mimalloc-bench's malloc-large, shortened: 8 buffers of 5 to 25 MiB,
	// each written in full, one replaced at a time (the new one allocated
	// before the old one is freed). Once the loop has reached its peak, the
	// pages freed a moment ago must serve the next buffer, whatever its
	// size: a cached block grown with fresh pages, or shrunk by giving pages
	// back, faulted about a fifth of every buffer in again. decay_ms is long
	// here so that a loaded machine, which may stall the loop for longer
	// than the default decay, does not decide the outcome.
	REQUIRE(ebb_option_set("decay_ms", "5000") == 0);
	std::mt19937_64 rng(42);
	const int slots = 8;
	void *buf[slots] = {};
	size_t written = 0;
	auto replace = [&]() {
		int k = (int)(rng() % slots);
		size_t sz = 5 * MiB + rng() % (20 * MiB);
		void *p = ebb_malloc(sz);
		REQUIRE(p != nullptr);
		memset(p, 1, sz);
		ebb_free(buf[k]);
		buf[k] = p;
		written += (sz + 4095) / 4096;
	};
	for (int i = 0; i < 64; i++)
		replace();
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	written = 0;
	for (int i = 0; i < 200; i++)
		replace();
	getrusage(RUSAGE_SELF, &r1);
	long faults = r1.ru_minflt - r0.ru_minflt;
	WARN(faults << " page faults for " << written << " pages written");
	CHECK((size_t)faults < written / 20);
	for (void *p : buf)
		ebb_free(p);
	REQUIRE(ebb_option_set("decay_ms", "500") == 0);
}
