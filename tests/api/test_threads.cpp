/* test_threads.cpp: threads and their ends. A thread's first allocation
 * inside a C++ thread_local destructor and inside a pthread key destructor
 * (after the allocator's own thread-exit hook may have run); threads that exit
 * holding blocks that other threads free later; blocks passed between live
 * threads. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <pthread.h>
#include <set>
#include <thread>
#include <vector>

using namespace apitest;

namespace {

/* Blocks handed from dying threads to the test, without allocating. */
struct Handed {
	void *p;
	size_t n;
	unsigned seed;
	const Api *api;
};
struct Handoff {
	std::atomic<size_t> count{0};
	Handed slot[8192];
	void push(void *p, size_t n, unsigned seed, const Api *api)
	{
		size_t i = count.fetch_add(1);
		if (i < std::size(slot)) slot[i] = {p, n, seed, api};
	}
	/* Verifies and frees everything handed over; returns the number of bad blocks. */
	size_t drain()
	{
		size_t bad = 0, n = count.load();
		if (n > std::size(slot)) n = std::size(slot);
		for (size_t i = 0; i < n; i++) {
			const Handed &h = slot[i];
			if (!h.p || first_mismatch(h.p, h.n, h.seed) != h.n || h.api->usable_(h.p) < h.n) bad++;
			if (h.p) h.api->free_(h.p);
		}
		count = 0;
		return bad;
	}
};
Handoff g_handoff;
std::atomic<size_t> g_errors{0};
std::atomic<unsigned> g_seed{1};

/* What a dying thread does: allocate a mix of sizes (small, large, huge),
 * free some at once, reallocate one, hand the rest over. */
void allocate_while_dying(const Api *a)
{
	const size_t sizes[] = {16, 700, 5000, 40000, 300000, 5 * MiB};
	int i = 0;
	for (size_t n : sizes) {
		unsigned seed = g_seed.fetch_add(1);
		void *p = a->malloc_(n);
		if (!p) {
			g_errors++;
			continue;
		}
		fill(p, n, seed);
		if (i == 2) { /* grow one */
			void *q = a->realloc_(p, n * 3);
			if (!q || first_mismatch(q, n, seed) != n) {
				g_errors++;
				if (q) a->free_(q);
				i++;
				continue;
			}
			p = q;
		}
		if (i % 2) {
			if (first_mismatch(p, n, seed) != n) g_errors++;
			a->free_(p);
		} else {
			g_handoff.push(p, n, seed, a);
		}
		i++;
	}
	void *c = a->calloc_(100, 10);
	if (!c || first_nonzero(c, 1000) != 1000) g_errors++;
	a->free_(c);
}

struct DyingAllocator {
	const Api *api = nullptr;
	~DyingAllocator()
	{
		if (api) allocate_while_dying(api);
	}
};
thread_local DyingAllocator t_dying;

void *thread_local_body(void *arg)
{
	/* Touch the thread_local (registers its destructor) without allocating
	 * through the API: the thread's first allocation is in the destructor. */
	t_dying.api = static_cast<const Api *>(arg);
	return nullptr;
}

pthread_key_t g_key;
std::atomic<const Api *> g_key_api{nullptr};
std::atomic<size_t> g_key_rounds{0};

void key_destructor(void *value)
{
	intptr_t round = (intptr_t)value;
	g_key_rounds++;
	allocate_while_dying(g_key_api.load());
	/* Re-arm: glibc calls the destructors again, after the allocator's own
	 * thread-exit hook has run at least once. */
	if (round < 3) pthread_setspecific(g_key, (void *)(round + 1));
}

void *key_body(void *)
{
	pthread_setspecific(g_key, (void *)(intptr_t)1);
	return nullptr;
}

void run_pthreads(int n, void *(*body)(void *), void *arg)
{
	std::vector<pthread_t> t(n);
	for (int i = 0; i < n; i++) REQUIRE(pthread_create(&t[i], nullptr, body, arg) == 0);
	for (int i = 0; i < n; i++) REQUIRE(pthread_join(t[i], nullptr) == 0);
}

/* A snapshot that adds up, if the allocator's own background thread lets us
 * see one within a few tries. */
ebb_stats_t settled_stats()
{
	ebb_stats_t s = stats();
	for (int i = 0; i < 20 && s.mapped != stats_parts(s); i++) {
		std::this_thread::yield();
		s = stats();
	}
	return s;
}

/* After ebb_trim, a snapshot of the stats adds up (every mapped byte is in
 * one of the parts). */
void check_trimmed_stats_add_up()
{
	ebb_trim();
	ebb_stats_t s = settled_stats();
	INFO(stats_str(s));
	CHECK(s.mapped == stats_parts(s));
}

} // namespace

TEST_CASE("a thread's first allocation inside a thread_local destructor works", "[threads]")
{
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		g_errors = 0;
		ebb_stats_t before = stats();
		run_pthreads(24, thread_local_body, const_cast<Api *>(a));
		CHECK(g_errors == 0);
		CHECK(g_handoff.count.load() == 24 * 3);
		CHECK(g_handoff.drain() == 0);
		ebb_trim();
		ebb_stats_t after = settled_stats();
		INFO("before: " << stats_str(before));
		INFO("after:  " << stats_str(after));
		/* caches made by dead threads are gone (slack: the allocator's own thread) */
		CHECK(after.threads <= before.threads + 1);
		CHECK(after.mapped == stats_parts(after));
	}
}

TEST_CASE("a thread's first allocation inside a pthread key destructor works, over several rounds",
	  "[threads]")
{
	REQUIRE(pthread_key_create(&g_key, key_destructor) == 0);
	for (const Api *a : all_apis()) {
		INFO("api " << a->name);
		g_errors = 0;
		g_key_rounds = 0;
		g_key_api = a;
		ebb_stats_t before = stats();
		run_pthreads(24, key_body, nullptr);
		CHECK(g_errors == 0);
		CHECK(g_key_rounds == 24 * 3);
		CHECK(g_handoff.count.load() == 24 * 3 * 3);
		CHECK(g_handoff.drain() == 0);
		ebb_trim();
		ebb_stats_t after = settled_stats();
		INFO("before: " << stats_str(before));
		INFO("after:  " << stats_str(after));
		CHECK(after.threads <= before.threads + 1);
		CHECK(after.mapped == stats_parts(after));
	}
	pthread_key_delete(g_key);
}

TEST_CASE("blocks of threads that have exited are freed and reallocated by other threads", "[threads]")
{
	const int producers = 8, per_thread = 400, consumers = 4;
	std::vector<const Api *> apis = all_apis();
	std::vector<Handed> blocks(producers * per_thread);
	std::atomic<size_t> errors{0};
	{
		std::vector<std::thread> t;
		for (int id = 0; id < producers; id++)
			t.emplace_back([&, id] {
				Rng rng(id + 1);
				for (int i = 0; i < per_thread; i++) {
					const Api *a = apis[(size_t)i % apis.size()];
					size_t n = i % 150 == 7 ? 5 * MiB : i % 40 == 3 ? 100 * KiB + rng.below(900 * KiB)
										  : rng.log_size(32 * KiB);
					unsigned seed = (unsigned)(id * per_thread + i);
					void *p = a->malloc_(n);
					if (!p) {
						errors++;
						continue;
					}
					fill(p, n, seed);
					blocks[(size_t)(id * per_thread + i)] = {p, n, seed, a};
				}
			});
		for (auto &th : t) th.join();
	}
	REQUIRE(errors == 0);
	/* every producer has exited; the consumers free (some after a realloc) */
	{
		std::vector<std::thread> t;
		for (int k = 0; k < consumers; k++)
			t.emplace_back([&, k] {
				for (size_t i = (size_t)k; i < blocks.size(); i += consumers) {
					Handed &h = blocks[i];
					if (first_mismatch(h.p, h.n, h.seed) != h.n) errors++;
					if (i % 8 == 1) {
						void *q = h.api->realloc_(h.p, h.n + 1000);
						if (!q || first_mismatch(q, h.n, h.seed) != h.n) errors++;
						h.p = q;
					}
					if (i % 3 == 0) ebb_free(h.p); /* every API's blocks go to ebb_free too */
					else h.api->free_(h.p);
				}
			});
		for (auto &th : t) th.join();
	}
	CHECK(errors == 0);
	check_trimmed_stats_add_up();
}

TEST_CASE("blocks passed between live threads are freed remotely", "[threads]")
{
	const int nthreads = 4, per_thread = 5000;
	std::vector<const Api *> apis = all_apis();
	struct Queue {
		std::mutex m;
		std::deque<Handed> q;
	};
	std::vector<Queue> queues(nthreads);
	std::atomic<size_t> errors{0}, freed{0};
	std::atomic<int> producing{nthreads};
	std::vector<std::thread> t;
	for (int id = 0; id < nthreads; id++)
		t.emplace_back([&, id] {
			Rng rng(100 + id);
			Queue &mine = queues[(size_t)id], &next = queues[(size_t)(id + 1) % nthreads];
			auto drain = [&] {
				std::deque<Handed> got;
				{
					std::lock_guard<std::mutex> g(mine.m);
					got.swap(mine.q);
				}
				for (Handed &h : got) {
					if (first_mismatch(h.p, h.n, h.seed) != h.n) errors++;
					h.api->free_(h.p);
					freed++;
				}
			};
			for (int i = 0; i < per_thread; i++) {
				const Api *a = apis[rng.below(apis.size())];
				size_t n = rng.below(100) == 0 ? rng.log_size(2 * MiB) : rng.log_size(4 * KiB);
				unsigned seed = (unsigned)(id * per_thread + i);
				void *p = a->malloc_(n);
				if (!p) {
					errors++;
					continue;
				}
				fill(p, n, seed);
				{
					std::lock_guard<std::mutex> g(next.m);
					next.q.push_back({p, n, seed, a});
				}
				if (i % 64 == 0) drain();
			}
			producing--;
			while (producing.load() > 0) {
				drain();
				std::this_thread::yield();
			}
			drain();
		});
	for (auto &th : t) th.join();
	for (Queue &q : queues)
		for (Handed &h : q.q) {
			if (first_mismatch(h.p, h.n, h.seed) != h.n) errors++;
			h.api->free_(h.p);
			freed++;
		}
	CHECK(errors == 0);
	CHECK(freed == (size_t)nthreads * per_thread);
}

/* Thread churn (larson's pattern, tcache.c "The pool"): chains of short-lived
 * threads, each freeing what its predecessor allocated and handing its own
 * blocks on, so that caches left warm by exited threads are taken over by new
 * ones while other chains run. Every block a malloc returns is checked to be
 * distinct from every block held (a cache handed out twice, or a warm cache's
 * block handed out by two threads, would show as a duplicate or a broken
 * pattern), and the memory the caches hold stays bounded: after the chains
 * end and one thread is left, no cache of an exited thread keeps blocks. */
TEST_CASE("thousands of short-lived threads, each freeing its predecessor's blocks, share no block and "
	  "leave nothing in caches nobody runs", "[threads]")
{
	const int chains = 4, generations = 600, slots = 64, ops = 96;
	struct Slot {
		void *p;
		size_t n;
		unsigned seed;
	};
	std::vector<std::vector<Slot>> held(chains, std::vector<Slot>(slots, Slot{nullptr, 0, 0}));
	std::atomic<size_t> errors{0};
	std::mutex live_lock;
	std::set<void *> live; /* every block held by any chain */
	ebb_free(ebb_malloc(16)); /* the main thread has a cache: exits then leave two or more */
	const uint64_t main_cached = stats().tcache; /* its bins, filled before this case */
	auto take = [&](Slot &s, Rng &rng, unsigned seed) {
		if (s.p) {
			if (first_mismatch(s.p, s.n, s.seed) != s.n) errors++;
			{
				std::lock_guard<std::mutex> g(live_lock);
				if (live.erase(s.p) != 1) errors++;
			}
			ebb_free(s.p);
		}
		s.n = 16 + rng.below(1024);
		s.p = ebb_malloc(s.n);
		if (!s.p) {
			errors++;
			s.n = 0;
			return;
		}
		s.seed = seed;
		{
			std::lock_guard<std::mutex> g(live_lock);
			if (!live.insert(s.p).second) errors++; /* handed out while another holds it */
		}
		fill(s.p, s.n, seed);
	};
	uint64_t most_cached = 0;
	std::atomic<uint64_t> cached_sum{0}, cached_samples{0};
	{
		std::vector<std::thread> t;
		for (int c = 0; c < chains; c++)
			t.emplace_back([&, c] {
				for (int g = 0; g < generations; g++) {
					std::thread gen([&, c, g] {
						Rng rng((uint64_t)(c * generations + g + 1));
						for (int i = 0; i < ops; i++) {
							Slot &s = held[(size_t)c][rng.below(slots)];
							take(s, rng, (unsigned)(c * 1000000 + g * 1000 + i));
						}
						if (g % 50 == 0) {
							cached_sum += stats().tcache;
							cached_samples++;
						}
					});
					gen.join();
				}
			});
		for (auto &th : t) th.join();
	}
	CHECK(errors == 0);
	/* While the chains ran: the caches of at most chains + 1 live threads,
	 * plus the warm pool's bound (8 MiB): far below what 2 400 caches kept
	 * would hold. */
	most_cached = cached_sum / std::max<uint64_t>(cached_samples, 1);
	INFO("mean cached while running " << most_cached);
	CHECK(most_cached < 16 * MiB);
	/* The chains' last threads have exited, leaving the main thread and at
	 * most the chains' drivers, which allocated nothing: the last exit that
	 * left one cache flushed every warm one. */
	ebb_stats_t after = stats();
	INFO(stats_str(after));
	CHECK(after.threads == 1);
	CHECK(after.tcache <= main_cached + 64 * KiB); /* the main thread's own bins */
	for (auto &chain : held)
		for (Slot &s : chain) {
			if (!s.p) continue;
			CHECK(first_mismatch(s.p, s.n, s.seed) == s.n);
			ebb_free(s.p);
		}
	CHECK(errors == 0);
	check_trimmed_stats_add_up();
}

/* A cache left warm in the pool is flushed by the background thread's epoch
 * hook only, so that thread must not retire while one is there: here nothing
 * else is left for it to do (no dirty pages to speak of), and the warm
 * cache's blocks must still leave the caches within a few trim intervals
 * (tcache.c, "The pool"; background.c, bg_quiet). */
TEST_CASE("a cache an exited thread left warm is flushed within seconds while the process idles", "[threads]")
{
	ebb_free(ebb_malloc(16)); /* the main thread has a cache */
	std::mutex m;
	std::condition_variable cv;
	bool ready = false, go = false;
	std::thread bystander([&] { /* a second live cache, so that an exit leaves its cache warm */
		void *p = ebb_malloc(32);
		std::unique_lock<std::mutex> g(m);
		ready = true;
		cv.notify_all();
		cv.wait(g, [&] { return go; });
		g.unlock();
		ebb_free(p);
	});
	{
		std::unique_lock<std::mutex> g(m);
		cv.wait(g, [&] { return ready; });
	}
	const uint64_t before = stats().tcache;
	const size_t n = 200, size = 96;
	std::thread worker([&] {
		std::vector<void *> held;
		for (size_t i = 0; i < n; i++) held.push_back(ebb_malloc(size));
		for (void *p : held) ebb_free(p);
	});
	worker.join();
	const uint64_t warm = stats().tcache;
	INFO("cached before " << before << ", after the worker's exit " << warm);
	/* Whether it was left warm depends on the pool's bounds and the epoch;
	 * when it was, its blocks must go. */
	if (warm > before + 32 * size) {
		uint64_t now = warm;
		for (int i = 0; i < 100 && now > before + 32 * size; i++) {
			std::this_thread::sleep_for(std::chrono::milliseconds(100));
			now = stats().tcache;
		}
		INFO("cached 10 s later " << now);
		CHECK(now <= before + 32 * size);
	}
	{
		std::lock_guard<std::mutex> g(m);
		go = true;
	}
	cv.notify_all();
	bystander.join();
}
