// vg_workload.cpp: a small multithreaded program that allocates, reallocs
// and frees through the standard names and C++ new/delete, hands blocks
// between threads and checks every byte it wrote. Under memcheck with
// libebbmalloc.so (built with EBB_VALGRIND) preloaded it must draw zero
// errors: ebbmalloc's own accesses to free blocks are invisible to memcheck,
// the program's are all in bounds and initialized.
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <vector>

#include "ebbmalloc.h"

namespace {

struct Block {
	unsigned char *p;
	size_t n;
	unsigned seed;
};

std::mutex handoff_lock;
std::vector<Block> handoff; // blocks made by one thread, freed by another
int failures;

unsigned char pattern(unsigned seed, size_t i)
{
	return (unsigned char)(seed * 131u + i * 7u + (i >> 8));
}

void fill(Block &b)
{
	for (size_t i = 0; i < b.n; i++) b.p[i] = pattern(b.seed, i);
}

bool check(const Block &b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b.p[i] != pattern(b.seed, i)) return false;
	return true;
}

uint64_t rng_next(uint64_t &s)
{
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

size_t pick_size(uint64_t &s)
{
	uint64_t r = rng_next(s) % 1000;
	if (r < 700) return 1 + rng_next(s) % 256;
	if (r < 950) return 257 + rng_next(s) % 8000;
	if (r < 995) return 32 * 1024 + rng_next(s) % (200 * 1024);
	return 4 * 1024 * 1024 + rng_next(s) % (2 * 1024 * 1024);
}

void *worker(void *arg)
{
	uint64_t s = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
	std::vector<Block> live;
	for (int op = 0; op < 3000; op++) {
		uint64_t r = rng_next(s) % 100;
		if (r < 40 || live.empty()) {
			Block b{nullptr, pick_size(s), (unsigned)op};
			switch (rng_next(s) % 4) {
			case 0: b.p = (unsigned char *)malloc(b.n); break;
			case 1:
				b.p = (unsigned char *)calloc(1, b.n);
				for (size_t i = 0; i < b.n; i++)
					if (b.p[i] != 0) failures++;
				break;
			case 2: b.p = (unsigned char *)aligned_alloc(64, (b.n + 63) & ~(size_t)63); break;
			default: {
				void *q = nullptr;
				if (posix_memalign(&q, 4096, b.n) != 0) q = nullptr;
				b.p = (unsigned char *)q;
			}
			}
			if (b.p == nullptr) {
				failures++;
				continue;
			}
			fill(b);
			live.push_back(b);
		} else if (r < 65) {
			Block &b = live[rng_next(s) % live.size()];
			size_t n = pick_size(s);
			unsigned char *q = (unsigned char *)realloc(b.p, n);
			if (q == nullptr) {
				failures++;
				continue;
			}
			b.p = q;
			if (!check(b, b.n < n ? b.n : n)) failures++;
			b.n = n;
			fill(b);
		} else if (r < 75) {
			size_t i = rng_next(s) % live.size();
			std::lock_guard<std::mutex> g(handoff_lock);
			handoff.push_back(live[i]);
			live[i] = live.back();
			live.pop_back();
		} else if (r < 85) {
			std::lock_guard<std::mutex> g(handoff_lock);
			if (!handoff.empty()) {
				Block b = handoff.back();
				handoff.pop_back();
				if (!check(b, b.n)) failures++;
				free(b.p);
			}
		} else if (r < 90) {
			std::vector<int> *v = new std::vector<int>(1 + rng_next(s) % 500, 7);
			if ((*v)[v->size() - 1] != 7) failures++;
			delete v;
		} else {
			size_t i = rng_next(s) % live.size();
			Block &b = live[i];
			if (!check(b, b.n) || malloc_usable_size(b.p) < b.n) failures++;
			free(b.p);
			live[i] = live.back();
			live.pop_back();
		}
	}
	for (Block &b : live) {
		if (!check(b, b.n)) failures++;
		free(b.p);
	}
	return nullptr;
}

} // namespace

int main()
{
	auto stats_get = (void (*)(struct ebb_stats *))dlsym(RTLD_DEFAULT, "ebb_stats_get");
	if (stats_get == nullptr) {
		fprintf(stderr, "vg_workload: libebbmalloc is not preloaded\n");
		return 3;
	}
	pthread_t t[4];
	for (int i = 0; i < 4; i++) pthread_create(&t[i], nullptr, worker, (void *)(intptr_t)i);
	for (int i = 0; i < 4; i++) pthread_join(t[i], nullptr);
	for (Block &b : handoff) {
		if (!check(b, b.n)) failures++;
		free(b.p);
	}
	handoff.clear();
	// ebbmalloc served the blocks (memcheck did not put its own malloc in)
	struct ebb_stats st;
	stats_get(&st);
	if (st.tcache_refills == 0 || st.large_allocs == 0 || st.spans_carved == 0) {
		fprintf(stderr, "vg_workload: ebbmalloc's stats show no work: its malloc was not used\n");
		failures++;
	}
	if (failures) fprintf(stderr, "vg_workload: %d failed checks\n", failures);
	return failures ? 1 : 0;
}
