// The thread-cache bin policy (tcache/tcache.c): a small first bound doubled
// to one batch outside the byte budget, growth by batches under it, the flush of a
// full bin, trimming, and the trim epoch. Each case runs in a thread of its
// own, so that it starts from no cache at all; the bins are read through
// tcache_self() (tcache_t is in tcache.h).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <sys/mman.h>

#include "core/blocks/size_class.h"
#include "core/runtime/meta.h"
#include "core/process/background.h"
#include "os/os.h"
#include "tcache/tcache.h"
#include "tests/support/unit.h"

namespace {

struct bin_view {
	uint32_t count, max;
};

bin_view bin(unsigned cls)
{
	tcache_t *tc = tcache_self();
	return {(uint32_t)(tc->empty[cls] - tc->top[cls]), tc->max[cls]};
}

// Runs f in a new thread (a new, empty cache) and waits for it; a failed
// REQUIRE in f is rethrown here.
template <class F> void in_new_thread(F f)
{
	std::exception_ptr failed;
	std::thread t([&] {
		try {
			f();
		} catch (...) {
			failed = std::current_exception();
		}
	});
	t.join();
	if (failed)
		std::rethrow_exception(failed);
}

// Allocates until the bin of `size` has a bound of at least `blocks` and is
// empty: every miss grows the bound (doubling to one batch, then by one
// batch while the budget allows it, as here), and a refill may bring less
// than its bound.
void grow_to(size_t size, uint32_t blocks, std::vector<void *> &held)
{
	unsigned cls = size_class_of(size);
	while (bin(cls).max < blocks || bin(cls).count > 0)
		held.push_back(tcache_alloc(size));
}

// Frees blocks from `from` (taking them out of it) until the bin of cls is
// full; `freed` gets them in the order freed.
void fill(unsigned cls, std::vector<void *> &from, std::vector<void *> &freed)
{
	while (bin(cls).count < bin(cls).max) {
		REQUIRE(!from.empty());
		freed.push_back(from.back());
		from.pop_back();
		tcache_free(freed.back());
	}
}

void setup(const char *tcache_max_bytes)
{
	unit_option("decay_ms", "-1");
	unit_option("background_thread", "0");
	unit_option("tcache_max_bytes", tcache_max_bytes);
}

// Ends the current trim epoch, as the background thread does once per trim
// interval; each cache trims at its next refill or flush.
void next_trim_epoch()
{
	uint64_t before = background_trim_epoch();
	os_fake_advance(2000000000ull);
	background_tick(os_now_ns(), false);
	REQUIRE(background_trim_epoch() == before + 1);
}

// Allocates until the bin of `size` has been refilled once more: one slow
// event (a refill) in the calling thread.
void force_refill(size_t size, std::vector<void *> &keep)
{
	uint64_t refills = tcache_self()->refills;
	while (tcache_self()->refills == refills)
		keep.push_back(tcache_alloc(size));
}

void free_all(std::vector<void *> &v)
{
	for (void *p : v)
		tcache_free(p);
	v.clear();
}

} // namespace

// The bound a bin takes at its first miss (tcache.c, FIRST_REFILL_BYTES):
// 4 KiB worth of blocks, at least one, at most one batch.
static uint32_t first_max(const size_class_t &k)
{
	uint32_t n = 4096 / k.size;
	n = n ? n : 1;
	return n < k.batch ? n : k.batch;
}

// Empties the bin of `size`, then takes one block more: one miss.
static void miss(size_t size, std::vector<void *> &held)
{
	unsigned cls = size_class_of(size);
	while (bin(cls).count > 0)
		held.push_back(tcache_alloc(size));
	held.push_back(tcache_alloc(size));
}

TEST_CASE("a bin starts small, grows by its first bound per miss to one batch whatever the "
	  "budget (past 4 KiB from its fourth miss once the budget is spent), takes a second batch if the budget allows or once a free found it full, then "
	  "grows by one batch per miss while the byte budget allows",
	  "[tcache]")
{
	unit_init();
	const size_t A = 256, C = 1024;
	const unsigned a = size_class_of(A), c = size_class_of(C);
	const size_class_t &ka = size_classes[a], &kc = size_classes[c];
	REQUIRE(ka.bin_cap >= 3 * ka.batch);
	// Both start below a batch (else this case tests nothing of the first
	// bound): 16 blocks of 256 B of a batch of 32, 4 of 1 KiB of 12; C's
	// bound then grows by 4 per miss (size_class.c).
	REQUIRE(first_max(ka) * 2 == ka.batch);
	REQUIRE(kc.batch % first_max(kc) == 0);
	REQUIRE(kc.batch >= 3 * first_max(kc));
	// Room for exactly two batches of A.
	const uint64_t limit = 2ull * ka.batch * ka.size;
	char opt[32];
	snprintf(opt, sizeof opt, "%llu", (unsigned long long)limit);
	setup(opt);
	in_new_thread([&] {
		std::vector<void *> held;
		held.push_back(tcache_alloc(A)); // creates the cache, first miss
		tcache_t *tc = tcache_self();
		CHECK(bin(a).max == first_max(ka));
		CHECK(bin(a).count < first_max(ka)); // a refill brings at most the bound's worth
		CHECK(tc->budget == (uint64_t)first_max(ka) * ka.size);
		miss(A, held); // second miss: 4 KiB more, one batch
		CHECK(bin(a).max == ka.batch);
		CHECK(tc->budget == (uint64_t)ka.batch * ka.size);
		miss(A, held); // third: the second batch
		CHECK(bin(a).max == 2u * ka.batch);
		CHECK(tc->budget == limit);
		miss(A, held); // fourth: the budget is spent
		CHECK(bin(a).max == 2u * ka.batch);
		CHECK(tc->budget == limit);
		// A class that comes into use after the budget is spent still
		// reaches one batch (counted against the budget), not one block
		// at a time from the central lists, but only from its fourth miss
		// since its last trim (tcache.c, GROW_OVER_BUDGET_MISSES): a class
		// used in a short burst keeps 4 KiB. Then 8, 12, ... 32 blocks.
		// While it only misses (a burst of mallocs), no more.
		held.push_back(tcache_alloc(C));
		CHECK(bin(c).max == first_max(kc));
		miss(C, held);
		miss(C, held);
		CHECK(bin(c).max == first_max(kc));
		CHECK(tc->misses[c] == 3);
		for (uint32_t want = 2 * first_max(kc); want <= kc.batch; want += first_max(kc)) {
			miss(C, held);
			CHECK(bin(c).max == want);
		}
		miss(C, held);
		CHECK(bin(c).max == kc.batch);
		CHECK(tc->budget == limit + (uint64_t)kc.batch * kc.size);
		// Frees fill the bin and one more finds it full (a flush): its
		// mallocs and frees interleave, and its next miss takes the second
		// batch, outside the budget.
		std::vector<void *> freed;
		fill(c, held, freed);
		tcache_free(held.back());
		held.pop_back();
		CHECK(tc->was_full[c] == 1);
		CHECK(bin(c).max == kc.batch);
		miss(C, held);
		CHECK(bin(c).max == 2u * kc.batch);
		miss(C, held);
		CHECK(bin(c).max == 2u * kc.batch);
		CHECK(tc->budget == limit + 2ull * kc.batch * kc.size);
		free_all(held);
	});
	unit_option("tcache_max_bytes", "1M");
}

TEST_CASE("classes of 2 KiB and more that a thread allocates once each pin at most 4 KiB or one "
	  "block each in its cache, not a batch of up to 64 KiB",
	  "[tcache]")
{
	unit_init();
	setup("1M");
	in_new_thread([&] {
		std::vector<void *> held;
		uint64_t cached = 0, bound = 0;
		unsigned classes = 0;
		for (unsigned c = size_class_of(2048); c < EBB_NUM_CLASSES; c++) {
			const size_class_t &k = size_classes[c];
			held.push_back(tcache_alloc(k.size));
			CHECK(bin(c).max * k.size <= (k.size > 4096 ? k.size : 4096));
			cached += (uint64_t)bin(c).count * k.size;
			bound += (uint64_t)bin(c).max * k.size;
			classes++;
		}
		REQUIRE(classes >= 30);
		// One first batch each would be about 64 KiB a class (over 2 MiB).
		CHECK(bound <= (uint64_t)classes * 32768);
		CHECK(cached <= (uint64_t)classes * 2048);
		// A class in use goes on to whole batches: the bin of 2 KiB, after
		// a few misses, may hold a batch.
		const unsigned c2 = size_class_of(2048);
		const size_class_t &k2 = size_classes[c2];
		while (bin(c2).max < k2.batch)
			miss(2048, held);
		CHECK(bin(c2).max == k2.batch);
		free_all(held);
	});
}

TEST_CASE("a class of 4 KiB or more gets no bin until its 16th slow-path use since the last trim "
	  "(a malloc counts 2, a free 1): its first blocks go back to their spans at free",
	  "[tcache]")
{
	unit_init();
	setup("1M");
	in_new_thread([&] {
		const size_t big = 8192, small = 2048;
		const unsigned b = size_class_of(big), s = size_class_of(small);
		REQUIRE(size_classes[b].size >= 4096);
		REQUIRE(size_classes[s].size < 4096);
		void *first = tcache_alloc(64); // creates the cache (a first free goes uncached anyway)
		// Below 4 KiB: a bin at the first miss, and the free is cached.
		void *p = tcache_alloc(small);
		CHECK(bin(s).max > 0);
		tcache_free(p);
		CHECK(bin(s).count >= 1);
		// 4 KiB and more: 5 malloc + free pairs (15 uses) leave no bound
		// and no cached block; the 6th malloc reaches 16 and grows the bin.
		for (int i = 0; i < 5; i++) {
			p = tcache_alloc(big);
			REQUIRE(p != nullptr);
			CHECK(bin(b).max == 0);
			tcache_free(p);
			CHECK(bin(b).max == 0);
			CHECK(bin(b).count == 0);
			CHECK(tcache_self()->budget <= 64u * 1024u); // nothing counted for the big class
		}
		p = tcache_alloc(big);
		CHECK(bin(b).max == first_max(size_classes[b]));
		tcache_free(p);
		CHECK(bin(b).count >= 1); // cached from now on
		// A trim restarts the count of a class that has no bin yet.
		const size_t big2 = 16384;
		const unsigned b2 = size_class_of(big2);
		for (int i = 0; i < 5; i++)
			tcache_free(tcache_alloc(big2));
		CHECK(bin(b2).max == 0);
		next_trim_epoch();
		std::vector<void *> keep;
		force_refill(64, keep); // a slow event: this cache trims
		for (int i = 0; i < 5; i++)
			tcache_free(tcache_alloc(big2));
		CHECK(bin(b2).max == 0);
		free_all(keep);
		tcache_free(first);
	});
}

// Bytes in the thread caches as the stats report them (ebb_stats_get's
// tcache: the calling thread's bins exactly, other threads' as published).
static uint64_t cached_bytes()
{
	uint64_t bytes, threads, refills, flushes;
	tcache_stats(&bytes, &threads, &refills, &flushes);
	return bytes;
}

TEST_CASE("a bin of 4 KiB or more with no refill or flush during the last 3 large allocations of its "
	  "thread is emptied at the next look (every 4th), a bin used meanwhile and the bins of small classes "
	  "are kept, and a bin used again within its window after a release gets a window twice as long",
	  "[tcache]")
{
	unit_init();
	setup("1M");
	in_new_thread([&] {
		const size_t idle = 8192, used = 16384, small = 2048, large = 64 * 1024;
		const unsigned bi = size_class_of(idle), bu = size_class_of(used), bs = size_class_of(small);
		REQUIRE(size_classes[bi].size >= 4096);
		REQUIRE(size_classes[bu].size >= 4096);
		REQUIRE(size_classes[bs].size < 4096);
		void *first = tcache_alloc(64); // creates the cache (a first free goes uncached anyway)
		// 8 malloc + free pairs give a big class its bin (16 uses).
		for (size_t size : {idle, used})
			for (int i = 0; i < 8; i++)
				tcache_free(tcache_alloc(size));
		std::vector<void *> held_i, held_u, held_s, freed;
		grow_to(idle, 4, held_i);
		grow_to(used, 2, held_u);
		grow_to(small, 4, held_s);
		// Enough 16 KiB blocks to fill their bin and free one more into it
		// (each miss may raise the bound, up to the bin's cap).
		while (held_u.size() <= bin(bu).max)
			held_u.push_back(tcache_alloc(used));
		void *extra = held_u.back(); // freed into the full bin later
		held_u.pop_back();
		fill(bu, held_u, freed);
		for (auto *held : {&held_i, &held_s}) {
			unsigned cls = held == &held_i ? bi : bs;
			while (!held->empty() && bin(cls).count < bin(cls).max) {
				freed.push_back(held->back());
				held->pop_back();
				tcache_free(freed.back());
			}
		}
		const uint32_t n_idle = bin(bi).count, n_small = bin(bs).count;
		REQUIRE(n_idle >= 2);
		REQUIRE(n_small >= 2);

		std::vector<void *> big;
		big.push_back(tcache_alloc(large));
		big.push_back(tcache_alloc(large));
		// A free into the full 16 KiB bin: a flush, its slow event after
		// the second large allocation.
		uint32_t before_flush = bin(bu).count;
		tcache_free(extra);
		REQUIRE(bin(bu).count < before_flush); // flushed, then the block pushed
		const uint32_t n_used = bin(bu).count;
		REQUIRE(n_used >= 1);
		big.push_back(tcache_alloc(large));
		CHECK(bin(bi).count == n_idle); // idle over 3 large allocations: kept
		uint64_t bytes = cached_bytes();
		uint64_t flushes = tcache_self()->flushes;
		big.push_back(tcache_alloc(large)); // the 4th: the 8 KiB bin was idle over 3
		CHECK(bin(bi).count == 0);
		CHECK(bin(bi).max > 0); // only the blocks go: the bound stays
		CHECK(bin(bu).count == n_used);
		CHECK(bin(bs).count == n_small);
		CHECK(cached_bytes() == bytes - (uint64_t)n_idle * size_classes[bi].size);
		// In pieces under a batch: to the spans, not into a transfer batch.
		uint32_t piece = size_classes[bi].batch - 1u;
		CHECK(tcache_self()->flushes - flushes == (n_idle + piece - 1) / piece);
		// The 8 KiB class in use again right after its release (a refill,
		// then its bin refilled by frees): its window doubles to 6.
		void *again = tcache_alloc(idle);
		CHECK(tcache_self()->idle_shift[bi] == 1);
		tcache_free(again);
		const uint32_t n_again = bin(bi).count;
		REQUIRE(n_again >= 1);
		// The 16 KiB bin goes once it too has been idle over 3, at the next
		// look (every 4th large allocation: the 8th); the 8 KiB one, idle
		// over 4 there, stays until the 12th.
		for (int i = 5; i <= 7; i++) {
			big.push_back(tcache_alloc(large));
			CHECK(bin(bu).count == n_used);
		}
		big.push_back(tcache_alloc(large));
		CHECK(bin(bu).count == 0);
		CHECK(bin(bi).count == n_again);
		CHECK(cached_bytes() == bytes - (uint64_t)n_idle * size_classes[bi].size +
						   (uint64_t)n_again * size_classes[bi].size -
						   (uint64_t)n_used * size_classes[bu].size);
		for (int i = 9; i <= 11; i++)
			big.push_back(tcache_alloc(large));
		CHECK(bin(bi).count == n_again);
		big.push_back(tcache_alloc(large));
		CHECK(bin(bi).count == 0);
		free_all(big);
		free_all(held_i);
		free_all(held_u);
		free_all(held_s);
		tcache_free(first);
	});
}

TEST_CASE("a full bin gives back half its blocks, in whole batches, from its most recently freed "
	  "end",
	  "[tcache]")
{
	setup("1M");
	const size_t A = 256;
	const unsigned a = size_class_of(A);
	const uint32_t batch = size_classes[a].batch;
	// Blocks of the class from another thread's cache, to fill the bin with.
	std::vector<void *> others;
	for (unsigned i = 0; i < 4u * batch + 1; i++)
		others.push_back(tcache_alloc(A));
	in_new_thread([&] {
		std::vector<void *> held, freed;
		grow_to(A, 3u * batch, held);
		const uint32_t max = bin(a).max;
		REQUIRE(max == 3u * batch);
		others.insert(others.end(), held.begin(), held.end());
		fill(a, others, freed);
		REQUIRE(bin(a).count == max);
		tcache_t *tc = tcache_self();
		uint64_t flushes = tc->flushes;
		void *extra = others.back(); // the bin is full
		others.pop_back();
		tcache_free(extra);
		uint32_t n = (max / 2 + batch - 1) / batch * batch;
		CHECK(tc->flushes == flushes + 1);
		CHECK(bin(a).max == max);
		CHECK(bin(a).count == max - n + 1);
		// Left in the bin, from the top: the block just freed, then the
		// oldest max - n of the earlier frees (the n most recent went).
		void **top = tc->top[a];
		CHECK(top[0] == extra);
		for (uint32_t i = 0; i < max - n; i++)
			CHECK(top[1 + i] == freed[max - n - 1 - i]);
	});
	for (void *p : others)
		tcache_free(p);
}

TEST_CASE("a bin of two batches is left half full by a refill and by a flush, a bin that only "
	  "receives frees keeps one batch",
	  "[tcache]")
{
	unit_init();
	// C's refills (4 KiB, half a batch, a batch) take whole one-page spans
	// of 16 blocks, so none leaves a part-used span that the next takes
	// alone (central_refill hands out what part-used spans hold before it
	// carves): the counts below are exact.
	const size_t C = 256, D = 512;
	const unsigned c = size_class_of(C), d = size_class_of(D);
	const uint32_t batch = size_classes[c].batch, dbatch = size_classes[d].batch;
	REQUIRE(size_classes[c].blocks == 16);
	REQUIRE(batch == 32);
	// A budget spent by C's first two batches: no growth past them.
	char opt[32];
	snprintf(opt, sizeof opt, "%llu", 2ull * batch * size_classes[c].size);
	setup(opt);
	// Blocks of D from another thread's cache, for the new thread to free.
	std::vector<void *> others;
	for (unsigned i = 0; i < 4u * dbatch; i++)
		others.push_back(tcache_alloc(D));
	in_new_thread([&] {
		std::vector<void *> held, freed;
		for (int i = 0; i < 16 && bin(c).max < 2u * batch; i++)
			miss(C, held);
		REQUIRE(bin(c).max == 2u * batch);
		// The miss that gave the second batch refilled one batch.
		CHECK(bin(c).count == batch - 1);
		miss(C, held); // empty again: one batch in, one block out
		CHECK(bin(c).max == 2u * batch);
		CHECK(bin(c).count == batch - 1);
		// Fill the bin with held blocks; one free more gives back one
		// batch (the most recent frees) and leaves one batch and that block.
		tcache_t *tc = tcache_self();
		fill(c, held, freed);
		REQUIRE(bin(c).count == 2u * batch);
		uint64_t flushes = tc->flushes;
		void *extra = held.back();
		held.pop_back();
		tcache_free(extra);
		CHECK(tc->flushes == flushes + 1);
		CHECK(bin(c).count == batch + 1);
		CHECK(tc->top[c][0] == extra);

		// D: only frees. Its bound grows at each full free up to one batch
		// and stays there; each flush then gives back the whole batch.
		std::vector<void *> dfreed;
		while (!others.empty()) {
			dfreed.push_back(others.back());
			others.pop_back();
			tcache_free(dfreed.back());
			CHECK(bin(d).max <= dbatch);
		}
		CHECK(bin(d).max == dbatch);
		free_all(held);
	});
	unit_option("tcache_max_bytes", "1M");
}

TEST_CASE("trimming: a bin that did not miss since its last trim gives back half and loses a "
	  "quarter of its bound, never below one batch",
	  "[tcache]")
{
	setup("1M");
	const size_t A = 256, B = 16;
	const unsigned a = size_class_of(A);
	const uint32_t batch = size_classes[a].batch;
	const uint64_t size = size_classes[a].size;
	std::vector<void *> others;
	for (unsigned i = 0; i < 4u * batch; i++)
		others.push_back(tcache_alloc(A));
	in_new_thread([&] {
		std::vector<void *> held, keep, freed;
		grow_to(A, 4u * batch, held);
		others.insert(others.end(), held.begin(), held.end());
		fill(a, others, freed); // the bin: four batches, full
		tcache_t *tc = tcache_self();
		REQUIRE(bin(a).max == 4u * batch);
		REQUIRE(bin(a).count == 4u * batch);

		// The epoch moves, but nothing happens until this thread's next
		// slow event; then the bin, which missed since its last trim (it
		// grew), is only marked as not missed.
		next_trim_epoch();
		CHECK(bin(a).count == 4u * batch);
		force_refill(B, keep);
		CHECK(tc->trim_epoch == background_trim_epoch());
		CHECK(bin(a).max == 4u * batch);
		CHECK(bin(a).count == 4u * batch);
		CHECK(tc->misses[a] == 0);

		// Next epoch: no miss since, so half goes back and the bound drops
		// by a quarter.
		const unsigned b = size_class_of(B);
		uint64_t budget = tc->budget;
		uint32_t b_max = bin(b).max;
		next_trim_epoch();
		force_refill(B, keep);
		budget += (uint64_t)(bin(b).max - b_max) * size_classes[b].size; // B's refill grew B
		uint32_t max = 4u * batch, count = 4u * batch;
		uint32_t new_max = max - max / 4, new_count = count - (count + 1) / 2;
		CHECK(bin(a).count == new_count);
		CHECK(bin(a).max == new_max);
		CHECK(tc->budget == budget - (uint64_t)(max - new_max) * size);

		// Trim after trim: the bound shrinks to one batch and stays there.
		for (int i = 0; i < 12; i++) {
			uint32_t before = bin(a).max;
			next_trim_epoch();
			force_refill(B, keep);
			CHECK(bin(a).max <= before);
			CHECK(bin(a).max >= batch);
		}
		CHECK(bin(a).max == batch);
		CHECK(bin(a).count == 0);
		free_all(keep);
	});
	free_all(others);
}

// A thread that goes from a burst to light use: its bins hold what the burst
// left, and the first slow event after a whole trim interval without one
// gives all of it back, but for the bin it serves.
TEST_CASE("a cache without a slow event for a whole trim interval gives back every bin but the "
	  "one it serves at its next one",
	  "[tcache]")
{
	setup("1M");
	const size_t A = 256, B = 16;
	const unsigned a = size_class_of(A), b = size_class_of(B);
	const uint32_t batch = size_classes[a].batch;
	std::vector<void *> others;
	for (unsigned i = 0; i < 2u * batch; i++)
		others.push_back(tcache_alloc(A));
	in_new_thread([&] {
		std::vector<void *> held, keep, freed;
		grow_to(A, 2u * batch, held);
		others.insert(others.end(), held.begin(), held.end());
		fill(a, others, freed);
		tcache_t *tc = tcache_self();
		const uint32_t max = bin(a).max;
		REQUIRE(bin(a).count == max);
		// One epoch: A missed since its last trim (it grew), so it keeps
		// its blocks.
		next_trim_epoch();
		force_refill(B, keep);
		CHECK(bin(a).count == max);
		// Two epochs and no slow event between them: everything but B,
		// whose refill this is, goes back; the bounds stay.
		next_trim_epoch();
		next_trim_epoch();
		force_refill(B, keep);
		CHECK(bin(a).count == 0);
		CHECK(bin(a).max == max);
		CHECK(bin(b).count > 0);
		CHECK(tc->trim_epoch == background_trim_epoch());
		// Published by the trim, before the refill's block was handed out.
		CHECK(tc->published == (uint64_t)(bin(b).count + 1) * size_classes[b].size);
		free_all(keep);
	});
	free_all(others);
}

TEST_CASE("a bin that missed since its last trim keeps its blocks and its bound", "[tcache]")
{
	setup("1M");
	const size_t A = 256, B = 16;
	const unsigned a = size_class_of(A);
	const uint32_t batch = size_classes[a].batch;
	in_new_thread([&] {
		std::vector<void *> held, keep;
		grow_to(A, 2u * batch, held);
		next_trim_epoch();
		force_refill(B, keep); // trims: A's misses are reset
		REQUIRE(tcache_self()->misses[a] == 0);
		held.push_back(tcache_alloc(A)); // A misses again (its bin is empty)
		uint32_t max = bin(a).max, count = bin(a).count;
		CHECK(tcache_self()->misses[a] == 1);
		next_trim_epoch();
		force_refill(B, keep);
		CHECK(bin(a).max == max);
		CHECK(bin(a).count == count);
		CHECK(tcache_self()->misses[a] == 0);
		free_all(held);
		free_all(keep);
	});
}

// A consumer thread frees blocks that others allocated and never allocates
// them: its bin never misses, but it overflows (a flush of a full bin) again
// and again. That counts as use: the trim keeps the bin after a sweep that
// found a flush since the last one, and halves it only after a sweep
// without one. (Halving a bin in use sent less than a batch to the spans at
// every sweep, which producers then took back from the spans.)
TEST_CASE("a bin that only receives frees and was flushed full since its last trim keeps its "
	  "blocks, a trim without a flush since halves it",
	  "[tcache]")
{
	setup("1M");
	const size_t A = 256, B = 16;
	const unsigned a = size_class_of(A);
	const uint32_t batch = size_classes[a].batch;
	std::vector<void *> others;
	for (unsigned i = 0; i < 2u * batch + 16; i++)
		others.push_back(tcache_alloc(A));
	in_new_thread([&] {
		std::vector<void *> keep;
		force_refill(B, keep); // the cache exists: the frees below go to it
		tcache_t *tc = tcache_self();
		uint64_t flushes = tc->flushes;
		while (tc->flushes == flushes) {
			REQUIRE(!others.empty());
			tcache_free(others.back());
			others.pop_back();
		}
		for (int i = 0; i < 5; i++) {
			tcache_free(others.back());
			others.pop_back();
		}
		const uint32_t count = bin(a).count;
		REQUIRE(count >= 2);
		REQUIRE(bin(a).max == batch);
		CHECK(tc->misses[a] != 0);

		next_trim_epoch();
		force_refill(B, keep); // trims every bin: A was flushed full since
		CHECK(bin(a).count == count);
		CHECK(bin(a).max == batch);
		CHECK(tc->misses[a] == 0);

		next_trim_epoch();
		force_refill(B, keep); // no flush of A since: half of it goes back
		CHECK(bin(a).count == count - (count + 1) / 2);
		CHECK(bin(a).max == batch);
		free_all(keep);
	});
	free_all(others);
}

TEST_CASE("a bin whose bound grew past four batches is refilled with half of it, at most 4 KiB "
	  "of blocks (tcache.c, REFILL_MAX_BYTES)",
	  "[tcache]")
{
	unit_init();
	setup("1M");
	const size_t S = 32, L = 256;
	const unsigned s = size_class_of(S), l = size_class_of(L);
	const size_class_t &ks = size_classes[s], &kl = size_classes[l];
	// 32 B: one batch is 1 KiB, so a refill can take 4 KiB (4 batches);
	// 256 B: one batch is 8 KiB already, a refill stays one batch.
	REQUIRE(4096 / ks.size >= 4u * ks.batch);
	REQUIRE(ks.bin_cap >= 8u * ks.batch);
	REQUIRE(4096 / kl.size <= kl.batch);
	REQUIRE(kl.bin_cap >= 4u * kl.batch);
	in_new_thread([&] {
		std::vector<void *> held;
		uint32_t most = 0;
		for (int i = 0; i < 64 && bin(s).max < 8u * ks.batch; i++) {
			miss(S, held);
			uint32_t max = bin(s).max, in = bin(s).count + 1, want = ks.batch;
			if (max < want)
				want = max;
			else if (max >= 4u * ks.batch)
				want = (max / 2 < 4096 / ks.size ? max / 2 : 4096 / ks.size) / ks.batch * ks.batch;
			CHECK(in <= want); // a refill may bring less (a span's last blocks)
			most = in > most ? in : most;
		}
		REQUIRE(bin(s).max >= 8u * ks.batch);
		// At a bound of 8 batches and more, refills of 4 batches.
		for (int i = 0; i < 4; i++) {
			miss(S, held);
			most = bin(s).count + 1 > most ? bin(s).count + 1 : most;
		}
		CHECK(most == 4096 / ks.size);
		for (int i = 0; i < 64 && bin(l).max < 4u * kl.batch; i++)
			miss(L, held);
		REQUIRE(bin(l).max >= 4u * kl.batch);
		miss(L, held);
		CHECK(bin(l).count + 1 <= kl.batch);
		free_all(held);
	});
}

// A cache and its bins' slots are one piece of metadata (tcache.c,
// tcache_create): the cache page aligned, on as few pages as its size
// allows, and the slots right after it, so that class 0's slot (written at
// creation) shares the cache's last page. A thread that allocates once then
// writes three pages of its cache: the cache's two and its bin's. A cache
// recycled from an exited thread keeps its slots.
TEST_CASE("a thread cache and its slots are one page-aligned piece, class 0's slot on the cache's last page",
	  "[tcache]")
{
	setup("262144");
	for (int round = 0; round < 2; round++) // the second thread may get the first's cache back
		in_new_thread([] {
			void *p = tcache_alloc(24);
			REQUIRE(p != nullptr);
			tcache_free(p);
			tcache_t *tc = tcache_self();
			uintptr_t at = (uintptr_t)tc;
			CHECK(at % EBB_PAGE_SIZE == 0);
			CHECK(tc->slots == (void **)(tc + 1));
			CHECK((uintptr_t)tc->slots / EBB_PAGE_SIZE == (at + sizeof(tcache_t) - 1) / EBB_PAGE_SIZE);
			CHECK(sizeof(tcache_t) <= 2 * EBB_PAGE_SIZE);
			// Class 0's bin is always empty and full, on that slot.
			CHECK(tc->top[0] == tc->slots);
			CHECK(tc->full[0] == tc->slots);
			CHECK(*tc->slots == TCACHE_SENTINEL(*tc));
		});
}

// Bins take their slot regions in the order they first get a bound, two
// batches' worth first (tcache.c, bin_place), so a thread's slot pages are
// as many as its bins use, not one per class in use: every class up to 1 KiB
// used once fits in the first-region slots of those classes. A bin whose
// bound grows past two batches moves to a region twice as large each time
// its bound outgrows its slots (bin_next_cap), not at once to bin_cap slots
// (of which a producer's bin used the last hundred or so, one page per
// class), and keeps handing out and taking back every block.
TEST_CASE("bins take packed slot regions in order of use, and move to regions twice as large as they grow "
	  "past two batches",
	  "[tcache]")
{
	setup("262144");
	in_new_thread([] {
		size_t first_caps = 1;
		for (size_t size = 16; size <= 1024; size += 16) {
			void *p = tcache_alloc(size);
			REQUIRE(p != nullptr);
			tcache_free(p);
		}
		tcache_t *tc = tcache_self();
		for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
			if (tc->empty[c] == &tc->idle_slot)
				continue;
			const size_class_t &k = size_classes[c];
			first_caps += 2u * k.batch + TCACHE_BIN_GAP;
			CHECK(tc->cap[c] == 2u * k.batch);
			CHECK(tc->max[c] <= tc->cap[c]);
			CHECK(tc->empty[c] - tc->cap[c] >= tc->slots + 1);
			CHECK(*tc->empty[c] == TCACHE_SENTINEL(*tc));
			for (unsigned d = c + 1; d < EBB_NUM_CLASSES; d++) // regions do not overlap
				if (tc->empty[d] != &tc->idle_slot)
					CHECK((tc->empty[d] < tc->empty[c] - tc->cap[c] ||
					       tc->empty[d] - tc->cap[d] > tc->empty[c]));
		}
		CHECK(tc->slot_next == first_caps);

		unsigned cls = size_class_of(32);
		const size_class_t &k = size_classes[cls];
		std::vector<void *> held;
		for (int round = 0; round < 3; round++) {
			for (unsigned i = 0; i < 8u * k.batch; i++) {
				void *p = tcache_alloc(32);
				REQUIRE(p != nullptr);
				std::memset(p, 0xab, 32);
				held.push_back(p);
			}
			std::vector<void *> sorted = held;
			std::sort(sorted.begin(), sorted.end());
			CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
			for (void *p : held)
				tcache_free(p);
			held.clear();
		}
		uint32_t max = tc->max[cls], cap = tc->cap[cls];
		CHECK(max > 2u * k.batch);
		REQUIRE(max <= k.bin_cap / 2); // else bin_cap would be the right region
		CHECK(cap >= max);
		CHECK(cap / 2 < max); // the region before it would not hold the bound
		CHECK(cap < k.bin_cap);
		CHECK(*tc->empty[cls] == TCACHE_SENTINEL(*tc));
		// The bound grew a batch at a time, so the bin took every region of
		// the sequence 4, 8, ... batches up to its own, each once.
		size_t moved = 0;
		for (uint32_t c = 4u * k.batch; c <= cap; c *= 2)
			moved += c + TCACHE_BIN_GAP;
		CHECK(tc->slot_next == first_caps + moved);
	});
}

// A bin's region grows with the blocks it holds, not with its bound
// (tcache.c, bin_fit): a thread that only allocates a class of 128 B or more
// (a producer) gets one batch per refill whatever its bound, so its bin
// keeps its first region of two batches while the bound grows at every
// miss; the frees that then fill the bin to that region move it to one that
// holds the bound, and every block still goes out and comes back once.
TEST_CASE("a bin's region grows with what the bin holds, not with its bound", "[tcache]")
{
	setup("1048576");
	in_new_thread([] {
		unsigned cls = size_class_of(512);
		const size_class_t &k = size_classes[cls];
		std::vector<void *> held;
		for (unsigned i = 0; i < 16u * k.batch; i++) {
			void *p = tcache_alloc(512);
			REQUIRE(p != nullptr);
			std::memset(p, 0xcd, 512);
			held.push_back(p);
		}
		tcache_t *tc = tcache_self();
		CHECK(tc->max[cls] > 2u * k.batch); // the bound grew at the misses
		CHECK(tc->cap[cls] == 2u * k.batch); // no refill needed more slots
		CHECK(tc->full[cls] == tc->empty[cls] - tc->cap[cls]);
		uint32_t next = tc->slot_next;
		std::vector<void *> sorted = held;
		std::sort(sorted.begin(), sorted.end());
		CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
		for (void *p : held)
			tcache_free(p);
		CHECK(tc->cap[cls] >= tc->max[cls]); // moved once the region was full
		CHECK(tc->slot_next > next);
		CHECK(tc->full[cls] == tc->empty[cls] - tc->max[cls]);
		CHECK(*tc->empty[cls] == TCACHE_SENTINEL(*tc));
		// Everything freed comes back out, once each.
		std::vector<void *> again;
		for (unsigned i = 0; i < 16u * k.batch; i++) {
			void *p = tcache_alloc(512);
			REQUIRE(p != nullptr);
			again.push_back(p);
		}
		std::sort(again.begin(), again.end());
		CHECK(std::adjacent_find(again.begin(), again.end()) == again.end());
		for (void *p : again)
			tcache_free(p);
	});
}

// The live ends of the bins (their `empty` slots, where a bin of a few blocks
// works) must not share L1 sets: with one sentinel slot between bins of 512
// slots they stepped 8 bytes modulo 4 KiB, and the bins of every class up to
// 512 B fell on the same 3-4 sets of the cache (TCACHE_BIN_GAP, tcache.h).
// With the gap, regions step an odd number of lines, and each of those
// classes' `empty` slot is on a set of its own.
TEST_CASE("the live ends of the bins of classes up to 512 B fall on distinct L1 cache sets", "[tcache]")
{
	setup("262144");
	in_new_thread([] {
		unsigned last = size_class_of(512);
		std::vector<void *> held;
		for (unsigned c = 1; c <= last; c++)
			held.push_back(tcache_alloc(size_classes[c].size)); // gives every bin its slots
		tcache_t *tc = tcache_self();
		std::set<uintptr_t> sets;
		for (unsigned c = 1; c <= last; c++) {
			REQUIRE(tc->empty[c] != &tc->idle_slot);
			sets.insert(((uintptr_t)tc->empty[c] >> 6) & 63); // 64-byte lines, 4 KiB per way
		}
		CHECK(sets.size() == last);
		for (void *p : held)
			tcache_free(p);
	});
}

namespace {

// A thread with a cache that stays alive (holding one block) until released:
// while it and the test's thread have caches, an exiting thread leaves its
// cache warm (tcache.c, "The pool").
struct Bystander {
	std::mutex m;
	std::condition_variable cv;
	bool ready = false, go = false;
	std::thread t;
	Bystander()
	{
		t = std::thread([this] {
			void *p = tcache_alloc(32);
			std::unique_lock<std::mutex> g(m);
			ready = true;
			cv.notify_all();
			cv.wait(g, [this] { return go; });
			g.unlock();
			tcache_free(p);
		});
		std::unique_lock<std::mutex> g(m);
		cv.wait(g, [this] { return ready; });
	}
	void leave()
	{
		{
			std::lock_guard<std::mutex> g(m);
			go = true;
		}
		cv.notify_all();
		t.join();
	}
};

// In a new thread: frees `n` blocks of `size` into its cache and returns the
// cache and the blocks its bin holds at the exit.
tcache_t *exit_with_blocks(size_t size, unsigned n, std::set<void *> &in_bin)
{
	tcache_t *tc = nullptr;
	in_new_thread([&] {
		std::vector<void *> held;
		for (unsigned i = 0; i < n + 1; i++)
			held.push_back(tcache_alloc(size));
		free_all(held); // the first free goes to its span, the rest to the bin
		tc = tcache_self();
		unsigned cls = size_class_of(size);
		for (void **b = tc->top[cls]; b != tc->empty[cls]; b++)
			in_bin.insert(*b);
	});
	return tc;
}

} // namespace

TEST_CASE("a thread that exits while two others have caches leaves its cache warm: the next thread "
	  "takes it over with its blocks, and two trim epochs later it is flushed",
	  "[tcache]")
{
	setup("1M");
	void *mine = tcache_alloc(32); // the test's thread has a cache
	Bystander other;
	const size_t size = 64;
	const unsigned cls = size_class_of(size);
	const uint64_t before = cached_bytes();
	std::set<void *> in_bin;
	tcache_t *warm = exit_with_blocks(size, 20, in_bin);
	REQUIRE(in_bin.size() >= 20);
	CHECK(cached_bytes() >= before + in_bin.size() * size_classes[cls].size); // counted while pooled
	in_new_thread([&] {
		void *p = tcache_alloc(size);
		CHECK(tcache_self() == warm);
		CHECK(in_bin.count(p) == 1); // a block the exited thread cached, handed out once
		CHECK(bin(cls).count == in_bin.size() - 1);
		tcache_free(p);
	});
	// Still warm; the next trim epoch leaves it (its thread saw the last
	// one), the second flushes it.
	next_trim_epoch();
	CHECK(warm->warm);
	next_trim_epoch();
	CHECK(!warm->warm);
	in_new_thread([&] {
		void *p = tcache_alloc(16);
		CHECK(tcache_self() == warm); // back in the pool, cold
		CHECK(bin(cls).count == 0);
		tcache_free(p);
	});
	other.leave();
	tcache_free(mine);
}

TEST_CASE("the exit that leaves one thread with a cache flushes its own and every warm cache", "[tcache]")
{
	setup("1M");
	void *mine = tcache_alloc(32);
	Bystander other;
	std::set<void *> in_bin;
	tcache_t *warm = exit_with_blocks(64, 20, in_bin);
	REQUIRE(warm->warm);
	other.leave(); // leaves the test's thread only
	CHECK(!warm->warm);
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++)
		CHECK(warm->top[c] == warm->empty[c]);
	tcache_t *self = tcache_self();
	CHECK(cached_bytes() == self->published);
	tcache_free(mine);
}

// The shared CPU slot (tcache_shared_enter): once one cache has left it on
// meeting others there, every cache leaves at its next slow path. Before, the
// last cache in the slot met no one there any more and kept CPU 0's lists
// wherever it ran (bench_xmalloc t=2: a producer on CPU 1 refilling from
// CPU 0's lists while its consumer flushed to CPU 1's).
TEST_CASE("once a cache leaves the shared CPU slot on conflicts, the others leave at their next slow path", "[tcache]")
{
	setup("1M");
	std::atomic<bool> stop{ false };
	std::atomic<int> left{ 0 };
	bool still_shared[2] = { true, true };
	/* Slow paths on both threads at once, until the slot had conflicts
	 * enough for one of them (bounded: on one CPU they may seldom meet). */
	auto round = [] {
		std::vector<void *> v;
		for (int k = 0; k < 200; k++)
			v.push_back(tcache_alloc(48 + 16 * (size_t)(k % 8)));
		for (void *p : v)
			tcache_free(p);
		tcache_flush_self(); /* the next round refills */
	};
	auto churn = [&](int i) {
		round(); /* starts this thread's cache, in the slot */
		for (int r = 0; r < 20000 && !stop.load(); r++) {
			round();
			if (!tcache_self()->shared && left.fetch_add(1) == 0)
				stop.store(true);
		}
		stop.store(true);
		round(); /* slow paths after the other left, if it did */
		still_shared[i] = tcache_self()->shared;
	};
	std::thread a(churn, 0), b(churn, 1);
	a.join();
	b.join();
	if (left.load() == 0) {
		WARN("the two threads' slow paths never met in the shared slot");
		return;
	}
	CHECK(!still_shared[0]);
	CHECK(!still_shared[1]);
	bool fresh_shared = true;
	std::thread c([&] {
		/* Its first allocation starts its cache in the slot, and is a
		 * slow path: alone, it would have stayed. */
		tcache_free(tcache_alloc(64));
		tcache_flush_self();
		fresh_shared = tcache_self()->shared;
	});
	c.join();
	CHECK(!fresh_shared);
}

// The stats' resident count of metadata (meta.c): what the kernel holds
// resident of the metadata chunks, not the whole mapping, which it was (the
// central lists and transfer nodes of every CPU and each cache's slots, a few
// MiB, are mapped whole and written as they come into use). A new thread's
// cache writes its first pages: the count grows by them.
TEST_CASE("metadata counts as resident the pages written, not the whole mapping", "[tcache]")
{
	unit_init();
	in_new_thread([&] { tcache_free(tcache_alloc(64)); });
	void *base[64];
	size_t len[64];
	unsigned n = meta_chunk_ranges(base, len, 64);
	REQUIRE(n > 0);
	uint64_t mapped = 0, resident = 0;
	for (unsigned k = 0; k < n; k++) {
		std::vector<unsigned char> v(len[k] / EBB_PAGE_SIZE);
		REQUIRE(mincore(base[k], len[k], v.data()) == 0);
		for (unsigned char c : v)
			resident += c & 1;
		mapped += len[k];
	}
	INFO("mapped " << mapped << " resident pages " << resident);
	CHECK(meta_mapped_bytes() == mapped);
	CHECK(meta_resident_bytes() == resident * EBB_PAGE_SIZE);
	CHECK(meta_resident_bytes() < meta_mapped_bytes() / 2);
	// Two threads at once: the second cannot reuse the first's cache.
	uint64_t before = meta_resident_bytes();
	std::mutex m;
	std::condition_variable cv;
	int arrived = 0;
	auto both = [&] {
		tcache_free(tcache_alloc(64));
		std::unique_lock<std::mutex> l(m);
		if (++arrived == 2)
			cv.notify_all();
		cv.wait(l, [&] { return arrived == 2; });
	};
	std::thread a(both), b(both);
	a.join();
	b.join();
	CHECK(meta_resident_bytes() > before);
}
