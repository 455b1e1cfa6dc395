/* Scattered survivors (issue 14, docs/memory-return.md): a program frees most
 * of its blocks but keeps a few spread over every span. The free pages
 * inside those spans go back to the kernel (core/blocks/central_purge.c),
 * the survivors keep their bytes, and the blocks whose pages went back come
 * into use again, once each.
 *
 * Through the ebb_* names only, so it also runs under the sanitizers; there
 * the bounds hold the allocator's resident figure instead of the RSS (their
 * shadow memory of the freed pages stays resident whatever the allocator
 * gives back; the memory tests check that figure against the RSS). */
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sched.h>
#include <set>
#include <thread>
#include <unistd.h>
#include <vector>

#include "api_util.h"

using namespace apitest;

namespace {

struct Block {
	char *p;
	size_t size;
	unsigned seed;
};

size_t rss_bytes()
{
#if EBB_TEST_TSAN || EBB_TEST_ASAN
	return (size_t)stats().resident;
#endif
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;
	if (f) {
		if (fscanf(f, "%lu %lu", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return (size_t)res * page_size();
}

/* Distinct pages the blocks touch: what no allocator can give back without
 * moving them. */
size_t pinned_bytes(const std::vector<Block> &bs)
{
	std::set<uintptr_t> pages;
	size_t ps = page_size();
	for (const Block &b : bs)
		for (uintptr_t a = (uintptr_t)b.p / ps; a <= ((uintptr_t)b.p + b.size - 1) / ps; a++)
			pages.insert(a);
	return pages.size() * ps;
}

/* Blocks of 1-16 KiB (classes whose spans have several pages), spread over
 * powers of two, written whole. */
size_t survivor_size(Rng &r)
{
	size_t lo = 1024 << r.below(4); /* 1, 2, 4 or 8 KiB */
	return lo + r.below(lo + 1);
}

/* No two blocks overlap (nothing handed out twice), and each still holds
 * its pattern. */
void check_blocks(std::vector<Block> bs)
{
	std::sort(bs.begin(), bs.end(), [](const Block &a, const Block &b) { return a.p < b.p; });
	size_t overlaps = 0, bad = 0;
	for (size_t i = 0; i < bs.size(); i++) {
		if (i > 0 && bs[i - 1].p + bs[i - 1].size > bs[i].p)
			overlaps++;
		if (first_mismatch(bs[i].p, bs[i].size, bs[i].seed) != bs[i].size)
			bad++;
	}
	CHECK(overlaps == 0);
	CHECK(bad == 0);
}

} // namespace

TEST_CASE("scattered survivors: free pages inside spans go back, survivors keep their bytes, "
	  "withheld blocks come back once each", "[survivors]")
{
	const size_t total = 64 * MiB;
	const size_t keep_every = 8;
	Rng rng(14);
	/* On one CPU: a thread that moves takes blocks from another CPU's
	 * central lists, whose spans are not those that kept the survivors, and
	 * the count of spans carved again below would measure the scheduler. */
	cpu_set_t was, one;
	bool pinned_cpu = sched_getaffinity(0, sizeof was, &was) == 0 && sched_getcpu() >= 0;
	if (pinned_cpu) {
		CPU_ZERO(&one);
		CPU_SET(sched_getcpu(), &one);
		pinned_cpu = sched_setaffinity(0, sizeof one, &one) == 0;
	}
	ebb_trim();
	size_t rss0 = rss_bytes();
	ebb_stats_t s0 = stats();

	std::vector<Block> all, kept, gone;
	size_t got = 0;
	while (got < total) {
		size_t n = survivor_size(rng);
		char *p = (char *)ebb_malloc(n);
		REQUIRE(p != nullptr);
		unsigned seed = (unsigned)all.size() + 1;
		fill(p, n, seed);
		all.push_back({p, n, seed});
		got += n;
	}
	for (size_t i = 0; i < all.size(); i++)
		(i % keep_every == keep_every - 1 ? kept : gone).push_back(all[i]);
	for (size_t i = gone.size(); i > 1; i--)
		std::swap(gone[i - 1], gone[rng.below(i)]);
	for (const Block &b : gone)
		ebb_free(b.p);
	size_t live = 0;
	for (const Block &b : kept)
		live += b.size;
	ebb_trim();

	ebb_stats_t s1 = stats();
	size_t rss1 = rss_bytes();
	size_t pinned = pinned_bytes(kept);
	INFO("blocks " << all.size() << ", kept " << kept.size() << " (" << live / KiB << " KiB, pinning "
		       << pinned / KiB << " KiB of pages); RSS " << rss0 / KiB << " KiB before, " << rss1 / KiB
		       << " KiB after the frees and ebb_trim; " << stats_str(s1));
	/* Given back: most of the freed bytes, through madvise. */
	CHECK(s1.bytes_purged - s0.bytes_purged >= (total - live) / 2);
	/* What stays: the pages the survivors touch, plus a margin for headers,
	 * the one-page spans of the test's own vectors and the thread cache. */
	CHECK(rss1 <= rss0 + pinned + 8 * MiB);
	/* Without the pass, nearly every span keeps all its pages. */
	CHECK(rss1 < rss0 + (total - live) / 4);
	/* The allocator's estimate follows. */
	CHECK(s1.resident <= s0.resident + pinned + 8 * MiB);
	check_blocks(kept);

	/* The same sizes again: the partial spans' blocks, withheld ones
	 * included, serve them before new spans are carved. */
	std::vector<Block> again = kept;
	for (size_t i = 0; i < gone.size(); i++) {
		size_t n = gone[i].size;
		char *p = (char *)ebb_malloc(n);
		REQUIRE(p != nullptr);
		unsigned seed = (unsigned)(all.size() + i + 1);
		fill(p, n, seed);
		again.push_back({p, n, seed});
	}
	ebb_stats_t s2 = stats();
	uint64_t carved_first = s1.spans_carved - s0.spans_carved;
	uint64_t returned = s1.spans_returned - s0.spans_returned;
	uint64_t carved_again = s2.spans_carved - s1.spans_carved;
	INFO("spans carved at first " << carved_first << ", returned whole " << returned << ", carved again "
				       << carved_again);
	/* Only the spans that went back whole need carving again (give or take
	 * the blocks thread caches and transfer batches keep). */
	CHECK(carved_again <= returned + carved_first / 10 + 8);
	check_blocks(again);
	if (pinned_cpu)
		sched_setaffinity(0, sizeof was, &was);

	for (size_t i = keep_every - 1; i < again.size(); i += keep_every)
		ebb_free(again[i].p), again[i].p = nullptr;
	for (const Block &b : again)
		if (b.p)
			ebb_free(b.p);
	ebb_trim();
}

TEST_CASE("scattered survivors: the background thread gives the pages back on its own", "[survivors]")
{
	const size_t total = 64 * MiB;
	Rng rng(15);
	ebb_trim();
	size_t rss0 = rss_bytes();
	std::vector<Block> kept;
	std::vector<char *> gone;
	size_t got = 0, i = 0;
	/* Another thread allocates and frees, then ends: its cache goes back
	 * to the central lists when it exits. */
	std::thread t([&] {
		while (got < total) {
			size_t n = survivor_size(rng);
			char *p = (char *)ebb_malloc(n);
			if (p == nullptr)
				abort(); /* no Catch2 macros off the main thread */
			fill(p, n, (unsigned)i + 1);
			if (i % 8 == 7)
				kept.push_back({p, n, (unsigned)i + 1});
			else
				gone.push_back(p);
			got += n;
			i++;
		}
		for (size_t j = gone.size(); j > 1; j--)
			std::swap(gone[j - 1], gone[rng.below(j)]);
		for (char *p : gone)
			ebb_free(p);
	});
	t.join();
	size_t pinned = pinned_bytes(kept);
	/* decay_ms (500) after the spans settle, and the page heap's own decay
	 * of the spans that went back whole: well within 5 s. */
	double start = now_ms();
	size_t rss = rss_bytes();
	while (rss > rss0 + pinned + 8 * MiB && now_ms() - start < 5000) {
		usleep(50 * 1000);
		rss = rss_bytes();
	}
	INFO("kept " << kept.size() << " blocks pinning " << pinned / KiB << " KiB; RSS " << rss0 / KiB << " KiB before, "
		     << rss / KiB << " KiB after " << (now_ms() - start) << " ms; " << stats_str(stats()));
	CHECK(rss <= rss0 + pinned + 8 * MiB);
	check_blocks(kept);
	for (const Block &b : kept)
		ebb_free(b.p);
}

TEST_CASE("scattered survivors: purges race with threads that allocate and free", "[survivors]")
{
	/* Each worker keeps some blocks for a long time and churns the rest;
	 * the main thread purges over and over (ebb_trim), so that spans are
	 * purging while refills relink, flushes return blocks, and spans
	 * empty. Any block handed out twice or a survivor losing its bytes
	 * shows as a pattern mismatch. */
	const unsigned workers = 2;
	const double run_ms = EBB_TEST_TSAN ? 1500 : 1000;
	std::atomic<unsigned> bad{0}, done{0};
	std::vector<std::thread> ts;
	for (unsigned w = 0; w < workers; w++) {
		ts.emplace_back([&, w] {
			Rng r(100 + w);
			std::vector<Block> live(2048, Block{nullptr, 0, 0});
			unsigned seed = (w + 1) << 24;
			double start = now_ms();
			while (now_ms() - start < run_ms) {
				for (int k = 0; k < 256; k++) {
					Block &b = live[r.below(live.size())];
					if (b.p) {
						if (first_mismatch(b.p, b.size, b.seed) != b.size)
							bad++;
						ebb_free(b.p);
						b.p = nullptr;
					} else {
						b.size = survivor_size(r);
						b.p = (char *)ebb_malloc(b.size);
						if (b.p == nullptr)
							abort();
						b.seed = ++seed;
						fill(b.p, b.size, b.seed);
					}
				}
				/* Now and then drop most blocks, keeping every 8th. */
				if (r.below(8) == 0)
					for (size_t i = 0; i < live.size(); i++)
						if (live[i].p && i % 8 != 0) {
							if (first_mismatch(live[i].p, live[i].size, live[i].seed) != live[i].size)
								bad++;
							ebb_free(live[i].p);
							live[i].p = nullptr;
						}
			}
			for (Block &b : live)
				if (b.p) {
					if (first_mismatch(b.p, b.size, b.seed) != b.size)
						bad++;
					ebb_free(b.p);
				}
			done++;
		});
	}
	unsigned trims = 0;
	while (done.load() < workers) {
		ebb_trim();
		trims++;
	}
	for (std::thread &t : ts)
		t.join();
	INFO("trims " << trims);
	CHECK(bad.load() == 0);
	CHECK(trims > 0);
}
