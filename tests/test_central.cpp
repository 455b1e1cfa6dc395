// Central lists: batches, transfer stacks, spans going home and back to the
// page heap, CPU migration (fake CPU ids), corrupted frees.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <set>
#include <vector>

#include "core/blocks/block.h"
#include "core/blocks/central.h"
#include "core/blocks/freelist.h"
#include "core/runtime/report.h"
#include "core/blocks/size_class.h"
#include "core/pages/page_heap.h"
#include "core/pages/superblock.h"
#include "core/process/background.h"
#include "core/process/stats.h"
#include "os/os.h"
#include "tests/support/unit.h"

namespace {

// Refills into a vector (blocks keep their bin marks, as in a bin).
std::vector<void *> refill(unsigned cpu, unsigned cls, unsigned want, bool use_transfer)
{
	std::vector<void *> v(want);
	unsigned n = central_refill(cpu, cls, want, use_transfer, v.data());
	v.resize(n);
	return v;
}

/* central_flush borrows the array's slots while it runs (central.h): a copy. */
void flush(unsigned cpu, unsigned cls, std::vector<void *> v)
{
	central_flush(cpu, cls, v.data(), (unsigned)v.size());
}

central_class_stats_t class_stats(unsigned cls)
{
	central_class_stats_t cs[EBB_NUM_CLASSES] = {};
	uint64_t carved = 0, returned = 0;
	central_stats(cs, &carved, &returned);
	return cs[cls];
}

// Spans in the stashes of cls's lists (central_t), read under their locks.
uint64_t stashed(unsigned cls)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < central_list_count(); i++) {
		central_t *c = central_list_at(i);
		if (c == nullptr || c->cls != cls)
			continue;
		lock_acquire(&c->lock);
		n += c->nstash;
		lock_release(&c->lock);
	}
	return n;
}

// Spans of cls homed in its lists but those of the stashes: the spans
// carved (a carve while the page heap grows may stash more).
uint64_t carved_spans(unsigned cls)
{
	return class_stats(cls).spans - stashed(cls);
}

// Takes blocks of cls on CPU 5 one at a time (into *held) until the span the
// last one came from heads its list's partial spans with between min_free
// and max_free free blocks on its list; returns that span.
span_t *partial_head_with(unsigned cls, uint32_t min_free, uint32_t max_free, std::vector<void *> *held)
{
	span_t *s = nullptr;
	const char *why;
	for (int i = 0; i < 2000; i++) {
		std::vector<void *> one = refill(5, cls, 1, false);
		REQUIRE(one.size() == 1);
		held->push_back(one[0]);
		REQUIRE(block_lookup(one[0], &s, &why) == cls);
		if (span_free_count(s) >= min_free && span_free_count(s) <= max_free &&
		    s->u.central.home->partial == s)
			break;
	}
	return s;
}

// on_error=warn (a case's bad blocks are reported, then looked at; a case
// sets it back), and no background thread or decay, which could move its
// blocks, spans or pages.
void warn_without_timers()
{
	unit_option("on_error", "warn");
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
}

// Fills cls's transfer stack on cpu with whole batches refilled there, so
// that the next flush goes to the spans (the stack keeps those blocks).
void fill_transfer_stack(unsigned cpu, unsigned cls)
{
	const size_class_t &k = size_classes[cls];
	std::vector<void *> fill;
	while (fill.size() < (size_t)k.transfer_cap * k.batch) {
		std::vector<void *> got = refill(cpu, cls, k.batch, false);
		REQUIRE(!got.empty());
		fill.insert(fill.end(), got.begin(), got.end());
	}
	for (size_t i = 0; i < fill.size(); i += k.batch)
		flush(cpu, cls, std::vector<void *>(fill.begin() + i, fill.begin() + std::min(fill.size(), i + k.batch)));
	REQUIRE(class_stats(cls).transfer_blocks == (uint64_t)k.transfer_cap * k.batch);
}

} // namespace

TEST_CASE("a refill is one batch of distinct, aligned blocks of the class", "[central]")
{
	unit_option("decay_ms", "-1");
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(100);
	const size_class_t &k = size_classes[cls];
	os_fake_set_cpu(0);
	std::vector<void *> v = refill(0, cls, k.batch, true);
	unsigned n = (unsigned)v.size();
	REQUIRE(n == k.batch);
	std::set<void *> distinct(v.begin(), v.end());
	REQUIRE(distinct.size() == n);
	for (void *b : v) {
		REQUIRE(((uintptr_t)b & 15) == 0);
		REQUIRE(pmap_class(pmap_load(superblock_of(b), superblock_page_index(b))) == cls);
	}
	REQUIRE(class_stats(cls).used_blocks >= n);
	flush(0, cls, v);
	central_drain(false, nullptr);
}

// The page map holds a page's class and its span's first page in one word,
// written whole (superblock.h): every page of a carved span names the span's
// first page, its boundary tags included (rewritten by the owner with its
// class), the pages with carved blocks carry the class and the block test
// finds the span from that one word; once the span is back in the page heap,
// none of its pages has a class, and every free run's tags name the run with
// class 0.
TEST_CASE("a span's pmap words name its first page and class, and no class once it is free", "[central]")
{
	unit_option("decay_ms", "-1");
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(8192);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages >= 2);
	os_fake_set_cpu(0);
	std::vector<void *> v = refill(0, cls, 1, false);
	REQUIRE(v.size() == 1);
	superblock_t *sb = superblock_of(v[0]);
	span_t *s = nullptr;
	const char *why = nullptr;
	REQUIRE(block_lookup(v[0], &s, &why) == cls);
	unsigned first = s->page, n = s->npages;
	REQUIRE(pmap_load(sb, superblock_page_index(v[0])) == pmap_entry(first, cls));
	REQUIRE(pmap_load(sb, first) == pmap_entry(first, cls));
	for (unsigned i = 0; i < n; i++) {
		uint32_t e = pmap_load(sb, first + i);
		CHECK(pmap_first(e) == first);
		CHECK((pmap_class(e) == cls || pmap_class(e) == 0));
		CHECK(pmap_span_offset(e) == (uint32_t)first << EBB_PAGE_SHIFT);
	}
	flush(0, cls, v);
	central_drain(false, nullptr);
	for (unsigned i = 0; i < n; i++)
		CHECK(pmap_class(pmap_load(sb, first + i)) == 0);
	unsigned end = (unsigned)sb->first_page + sb->usable_pages;
	for (unsigned page = sb->first_page; page < end;) {
		span_t *r = superblock_span_at(sb, page);
		REQUIRE(r->npages >= 1);
		if (r->state == SPAN_FREE_DIRTY || r->state == SPAN_FREE_PURGED) {
			CHECK(pmap_load(sb, page) == pmap_entry(page, 0));
			CHECK(pmap_load(sb, page + r->npages - 1) == pmap_entry(page, 0));
		}
		page += r->npages;
	}
}

// The fast path's offset ((uint32_t)p - e without its class) is the exact
// one, p minus the span's first byte, for every class byte and first page,
// with the superblock's address bits in the entry (pmap_entry_in) or not.
TEST_CASE("the offset from a pmap word is p's offset from its span's first page", "[central]")
{
	for (unsigned cls = 0; cls <= EBB_PMAP_CLASS_MASK; cls++)
		for (unsigned first = EBB_SB_HEADER_PAGES; first < EBB_SB_PAGES; first += 7) {
			uint32_t e = pmap_entry(first, cls);
			REQUIRE(pmap_class(e) == cls);
			REQUIRE(pmap_first(e) == first);
			uintptr_t in_sb = ((uintptr_t)first << EBB_PAGE_SHIFT) + cls * 4099u % EBB_PAGE_SIZE;
			REQUIRE(block_offset_in(e, in_sb) == in_sb - ((uintptr_t)first << EBB_PAGE_SHIFT));
			for (uintptr_t slot : {(uintptr_t)1, (uintptr_t)0x3ff, (uintptr_t)0x1234567, (uintptr_t)0x1ffffff}) {
				const superblock_t *sb = (const superblock_t *)(slot << EBB_SB_SHIFT);
				uint32_t raw = pmap_entry_in(sb, first, cls);
				REQUIRE(pmap_class(raw) == cls);
				REQUIRE(pmap_first(raw) == first);
				REQUIRE(pmap_span_offset(raw) == (uint32_t)first << EBB_PAGE_SHIFT);
				REQUIRE(block_offset_in(raw, (uintptr_t)sb + in_sb) ==
					in_sb - ((uintptr_t)first << EBB_PAGE_SHIFT));
			}
		}
}

TEST_CASE("flushed batches come back from the transfer stack, newest first", "[central]")
{
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(48);
	const size_class_t &k = size_classes[cls];
	std::vector<void *> batch = refill(1, cls, k.batch, true);
	REQUIRE(batch.size() == k.batch);
	// The carve put the span's other whole batches on the stack already.
	uint64_t carved = class_stats(cls).transfer_blocks;
	flush(1, cls, batch);
	REQUIRE(class_stats(cls).transfer_blocks == carved + k.batch);
	std::vector<void *> again = refill(1, cls, k.batch, true);
	REQUIRE(again == batch);
	REQUIRE(class_stats(cls).transfer_blocks == carved);
	flush(1, cls, again);
	central_drain(false, nullptr);
}

TEST_CASE("a refill of several batches takes as many ready batches as it asks for, and no more", "[central]")
{
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(48);
	const size_class_t &k = size_classes[cls];
	std::vector<void *> blocks = refill(7, cls, 5 * k.batch, false);
	REQUIRE(blocks.size() == 5 * k.batch);
	central_drain(false, nullptr); // the carve's batches back to their spans
	REQUIRE(class_stats(cls).transfer_blocks == 0);
	std::vector<void *> three(blocks.begin(), blocks.begin() + 3 * k.batch);
	flush(7, cls, three);
	REQUIRE(class_stats(cls).transfer_blocks == 3 * k.batch);
	// Asks for four: gets the three ready, all of them, each once.
	std::vector<void *> got = refill(7, cls, 4 * k.batch, true);
	REQUIRE(got.size() == 3 * k.batch);
	REQUIRE(std::set<void *>(got.begin(), got.end()) == std::set<void *>(three.begin(), three.end()));
	REQUIRE(class_stats(cls).transfer_blocks == 0);
	// Five ready, two asked for (and a part of a batch): two, three stay.
	flush(7, cls, blocks);
	REQUIRE(class_stats(cls).transfer_blocks == 5 * k.batch);
	std::vector<void *> two = refill(7, cls, 2 * k.batch + k.batch / 2, true);
	REQUIRE(two.size() == 2 * k.batch);
	REQUIRE(class_stats(cls).transfer_blocks == 3 * k.batch);
	flush(7, cls, two);
	central_drain(false, nullptr);
}

// A refill that must carve after a flush brought blocks of its class back
// to the list takes a quarter of what it asked for (central_refill: a class
// in steady use carves only for a crest of what its threads hold); the next
// carve, with no flush between, takes a whole batch again, as every carve of
// a class that only grows does.
TEST_CASE("a carve after a flush to the list takes a quarter, the next carve a whole batch", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	unsigned cls = size_class_of(320); // one-page spans of 12 blocks, batches of 32
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.batch % k.blocks != 0);
	const unsigned cpu = 15;
	central_drain(false, nullptr); // no batch anywhere, no list marked
	const uint64_t used0 = class_stats(cls).used_blocks;
	std::vector<void *> held;
	auto take = [&](unsigned want) {
		std::vector<void *> v = refill(cpu, cls, want, true);
		held.insert(held.end(), v.begin(), v.end());
		return v.size();
	};
	// The list's partial spans used up: refills until one carves, which
	// takes a whole batch (no flush since the drain); then the rest of its
	// last span.
	for (int i = 0;; i++) {
		REQUIRE(i < 1000);
		uint64_t spans = carved_spans(cls);
		size_t n = take(k.batch);
		if (carved_spans(cls) > spans) {
			CHECK(n == k.batch);
			break;
		}
	}
	uint64_t spans = carved_spans(cls);
	CHECK(take(k.batch) < k.batch);
	CHECK(carved_spans(cls) == spans);
	// A whole batch back (onto the transfer stack) and taken again.
	std::vector<void *> one(held.end() - k.batch, held.end());
	held.resize(held.size() - k.batch);
	flush(cpu, cls, one);
	CHECK(take(k.batch) == k.batch);
	CHECK(carved_spans(cls) == spans);
	// Nothing free: the carve takes a quarter, from one new span.
	CHECK(take(k.batch) == (size_t)(k.batch + 3) / 4);
	CHECK(carved_spans(cls) == spans + 1);
	// The rest of that span, then a whole batch carved.
	CHECK(take(k.batch) == (size_t)(k.blocks - (k.batch + 3) / 4));
	spans = carved_spans(cls);
	CHECK(take(k.batch) == k.batch);
	CHECK(carved_spans(cls) > spans);
	for (size_t i = 0; i < held.size(); i += k.batch)
		flush(cpu, cls, std::vector<void *>(held.begin() + i, held.begin() + std::min(held.size(), i + k.batch)));
	central_drain(false, nullptr);
	CHECK(class_stats(cls).used_blocks == used0);
}

TEST_CASE("when every block is back, the span goes back to the page heap", "[central]")
{
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(4000);
	const size_class_t &k = size_classes[cls];
	central_drain(false, nullptr);
	uint64_t spans_before = carved_spans(cls);
	// Take a whole span's worth of blocks.
	std::vector<void *> all;
	while (all.size() < k.blocks) {
		std::vector<void *> got = refill(2, cls, k.blocks - (unsigned)all.size(), false);
		REQUIRE(!got.empty());
		all.insert(all.end(), got.begin(), got.end());
	}
	REQUIRE(carved_spans(cls) >= spans_before + 1);
	// Give them back one at a time, bypassing the transfer stack.
	for (void *b : all)
		central_flush(2, cls, &b, 1);
	REQUIRE(carved_spans(cls) == spans_before);
	REQUIRE(class_stats(cls).used_blocks == 0);
}

// A one-page class tells the blocks of a run (consecutive in a flush, one
// span) by the page: release_blocks_in compares a block's address with the
// run's first block, not with its page's start. A block at a low offset of
// the next page is closer to that first block than a page (B + 0 - (A + 64)
// < 4096): it must still open a run of its own span, or its span's count
// and the other's would go wrong (a span retired with a block out).
TEST_CASE("blocks of adjacent one-page spans flushed alternately each go home to their own span", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	unsigned cls = size_class_of(32);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages == 1);
	central_drain(false, nullptr);
	// Refill until two whole spans on adjacent pages are out.
	std::vector<void *> all;
	uintptr_t a = 0;
	for (int round = 0; round < 256 && a == 0; round++) {
		std::vector<void *> got = refill(4, cls, k.batch, true);
		REQUIRE(!got.empty());
		all.insert(all.end(), got.begin(), got.end());
		std::sort(all.begin(), all.end());
		// all[i .. i + 2 * blocks) is two whole adjacent spans when it
		// starts a page and ends one page further at the last block.
		for (size_t i = 0; i + 2 * k.blocks <= all.size() && a == 0; i++) {
			uintptr_t p = (uintptr_t)all[i];
			if ((p & (EBB_PAGE_SIZE - 1)) == 0 &&
			    (uintptr_t)all[i + 2 * k.blocks - 1] == p + EBB_PAGE_SIZE + (k.blocks - 1) * (uintptr_t)k.size)
				a = p;
		}
	}
	REQUIRE(a != 0);
	uintptr_t b = a + EBB_PAGE_SIZE;
	std::vector<void *> rest;
	for (void *p : all)
		if ((uintptr_t)p < a || (uintptr_t)p >= b + EBB_PAGE_SIZE)
			rest.push_back(p);
	flush(4, cls, rest);
	central_drain(false, nullptr);
	uint64_t spans = carved_spans(cls);
	uint64_t used = class_stats(cls).used_blocks;
	REQUIRE(used == 2 * k.blocks);
	// Pairs (A's block i + 1, B's block i): in one flush of two (below a
	// batch: straight to the spans), B's block lies less than a page after
	// A's. A's block 0 and B's last block go alone.
	uint64_t reports = report_count();
	for (unsigned i = 0; i + 1 < k.blocks; i++) {
		void *pair[2] = { (void *)(a + (i + 1) * (uintptr_t)k.size), (void *)(b + i * (uintptr_t)k.size) };
		central_flush(4, cls, pair, 2);
		REQUIRE(class_stats(cls).used_blocks == used - 2 * (i + 1));
		REQUIRE(carved_spans(cls) == spans);
	}
	void *first = (void *)a, *last = (void *)(b + (k.blocks - 1) * (uintptr_t)k.size);
	central_flush(4, cls, &first, 1);
	REQUIRE(carved_spans(cls) == spans - 1);
	central_flush(4, cls, &last, 1);
	REQUIRE(carved_spans(cls) == spans - 2);
	REQUIRE(class_stats(cls).used_blocks == 0);
	REQUIRE(report_count() == reports);
}

TEST_CASE("blocks flushed on another CPU go home to their span's list", "[central]")
{
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(256);
	const size_class_t &k = size_classes[cls];
	central_drain(false, nullptr);
	std::vector<void *> v = refill(0, cls, k.batch, true);
	REQUIRE(v.size() == k.batch);
	uint64_t spans = class_stats(cls).spans;
	REQUIRE(spans >= 1);
	// The thread migrated: it frees on CPU 3. The batch waits on CPU 3's
	// transfer stack (besides the batches the carve left on CPU 0's),
	// still counted as used by its home span.
	uint64_t carved = class_stats(cls).transfer_blocks;
	flush(3, cls, v);
	REQUIRE(class_stats(cls).transfer_blocks == carved + k.batch);
	// Draining returns the blocks to their home (CPU 0): the span empties.
	// What stays homed is the stash of the cut the carve took (if the
	// page heap was growing then): spans never carved.
	central_drain(false, nullptr);
	REQUIRE(class_stats(cls).used_blocks == 0);
	REQUIRE(class_stats(cls).spans == stashed(cls));
}

// Oversubscription (issue 13): a thread that holds a list's span lock may be
// preempted for a whole time slice. The transfer path takes no lock
// (central.h): a consumer's flush of a whole batch and a producer's refill
// that takes it must both finish while another thread holds the list's lock.
// If either waited for it, the holder would give it up only after its 10 s
// timeout, and the test fails on that (rather than hanging).
TEST_CASE("a flushed batch reaches a refill while another thread holds the list's lock", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	unsigned cls = size_class_of(160);
	const size_class_t &k = size_classes[cls];
	const unsigned cpu = 2;
	std::vector<void *> batch = refill(cpu, cls, k.batch, false);
	REQUIRE(batch.size() == k.batch);
	// The carve's other batches back to their spans: the stack has room.
	central_drain(false, nullptr);
	REQUIRE(class_stats(cls).transfer_blocks == 0);
	central_t *c = central_list_at((cpu % os_cpu_count()) * EBB_NUM_CLASSES + cls);
	REQUIRE(c != nullptr);
	std::atomic<int> stage{0}; // 1: lock held; 2: the main thread is done
	std::atomic<bool> timed_out{false};
	std::thread holder([&] {
		lock_acquire(&c->lock);
		stage.store(1);
		auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
		while (stage.load() != 2) {
			if (std::chrono::steady_clock::now() > until) {
				timed_out.store(true);
				break;
			}
			std::this_thread::sleep_for(std::chrono::milliseconds(1));
		}
		lock_release(&c->lock);
	});
	while (stage.load() != 1)
		std::this_thread::yield();
	flush(cpu, cls, batch);
	std::vector<void *> again = refill(cpu, cls, k.batch, true);
	stage.store(2);
	holder.join();
	REQUIRE_FALSE(timed_out.load());
	REQUIRE(again == batch);
	flush(cpu, cls, again);
	central_drain(false, nullptr);
	REQUIRE(class_stats(cls).used_blocks == 0);
}

// Only a class of several pages: release_blocks_in makes the block-start test
// for those alone. An address in a flush was tested by free as a block start
// of a page of its class (tests/api/test_hardening.cpp: interior pointers
// abort there), and a one-page class lays out its page the same way every
// time, so its page class, tested again, stands for the rest (next test).
TEST_CASE("a pointer into the middle of a block is reported, not freed", "[central]")
{
	unit_option("on_error", "warn");
	unsigned cls = size_class_of(4000);
	REQUIRE(size_classes[cls].pages > 1);
	std::vector<void *> v = refill(0, cls, 2, false);
	REQUIRE(v.size() == 2);
	uint64_t reports = report_count();
	void *interior = (char *)v[0] + 16;
	central_flush(0, cls, &interior, 1);
	REQUIRE(report_count() == reports + 1);
	flush(0, cls, v);
	unit_option("on_error", "abort");
}

// A one-page class (no block-start test when a block goes home): an address
// whose page is no longer of the class, as a stale copy of a block freed
// twice after its span went back to the page heap, or a block of another
// class, is reported by its page class and never written.
TEST_CASE("a flushed address whose page has left the class is reported, not written", "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(64), other = size_class_of(48);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages == 1);
	central_drain(false, nullptr);
	// A whole span out (refills of whole batches, from the carve and the
	// batches it left on the transfer stack), then back one block at a
	// time: the span leaves the class.
	std::vector<void *> held, mine;
	for (int tries = 0; tries < 8 && mine.empty(); tries++) {
		std::vector<void *> got = refill(2, cls, k.batch, true);
		REQUIRE(!got.empty());
		held.insert(held.end(), got.begin(), got.end());
		span_t *s = nullptr, *t = nullptr;
		const char *why;
		REQUIRE(block_lookup(got.back(), &s, &why) == cls);
		std::vector<void *> in;
		for (void *b : held)
			if (block_lookup(b, &t, &why) == cls && t == s)
				in.push_back(b);
		if (in.size() == k.blocks)
			mine = in;
	}
	REQUIRE(mine.size() == k.blocks);
	for (void *b : mine)
		central_flush(2, cls, &b, 1);
	void *stale = mine[0];
	REQUIRE(pmap_class(pmap_load(superblock_of(stale), superblock_page_index(stale))) != cls);
	// The stale copy, with the bin mark a forger would give it.
	((uint64_t *)stale)[1] = freelist_mark_of(stale, freelist_mark);
	((void **)stale)[0] = nullptr;
	std::vector<void *> w = refill(2, other, 1, false);
	REQUIRE(w.size() == 1);
	void *wrong = w[0]; // a block of another class, with its bin mark
	uint64_t reports = report_count();
	uint64_t used = class_stats(cls).used_blocks;
	std::vector<void *> bad{stale, wrong};
	flush(2, cls, bad);
	REQUIRE(report_count() == reports + 2);
	REQUIRE(class_stats(cls).used_blocks == used);
	REQUIRE(((void **)stale)[0] == nullptr); // no link written
	REQUIRE(((uint64_t *)wrong)[1] == freelist_mark_of(wrong, freelist_mark));
	flush(2, other, w);
	for (void *b : held)
		if (std::find(mine.begin(), mine.end(), b) == mine.end())
			central_flush(2, cls, &b, 1);
	REQUIRE(report_count() == reports + 2);
	unit_option("on_error", "abort");
}

// A span's free list is linked through its blocks: a link overwritten with
// anything but a block start of the span (inside a block, in the span's
// tail, below the span, on the next page) is reported when a refill reaches
// it, and never followed; the block holding it is handed out (it is free).
TEST_CASE("a free-list link that is not a block start of its span is reported, not followed", "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(48);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.blocks * k.size < EBB_PAGE_SIZE); // a tail to point into
	for (int target = 0; target < 5; target++) {
		// The next refill takes two from one span's list (the head
		// of the partial list).
		std::vector<void *> v;
		span_t *s = partial_head_with(cls, 2, UINT32_MAX, &v);
		REQUIRE(span_free_count(s) >= 2);
		char *base = (char *)superblock_of(s) + ((size_t)s->page << EBB_PAGE_SHIFT);
		void *b = s->u.central.free_head;
		void *forged[5] = { (char *)b + 16, base + (size_t)k.blocks * k.size, base - k.size,
				    base + EBB_PAGE_SIZE, base + 3 * (size_t)k.size + 8 };
		void *keep = ((void **)b)[0];
		REQUIRE(keep != forged[target]);
		((void **)b)[0] = forged[target]; // the span mark stays
		// Inside the span's page, the target gets a span mark too (as
		// from a forger who read the key): only the link test is left.
		if (target == 0 || target == 1 || target == 4)
			((uint64_t *)forged[target])[1] = freelist_span_mark_of(forged[target], freelist_mark);
		uint64_t reports = report_count();
		std::vector<void *> got = refill(5, cls, 2, false);
		CHECK(report_count() == reports + 1);
		REQUIRE(got.size() == 1);
		CHECK(got[0] == b);
		// The list was dropped (leaked): the span has nothing to give.
		CHECK(span_free_count(s) == 0);
		v.push_back(got[0]);
		flush(5, cls, v);
	}
	unit_option("on_error", "abort");
}

// Spans take their blocks in central.c's span_take_in, unrolled by four,
// with one of two link tests: the mask for power-of-two classes in spans
// aligned to their bytes (the link and mark tests share one difference from
// the span's start), the multiply for the others (48, 80 and 192 bytes
// here; one-page spans, which withhold no blocks to relink after the drop).
// A bad link or a lost mark at every position of the
// unrolled loop (each of a four, odd and even counts, the last link) is
// reported, the blocks before it handed out, nothing after it. The links
// below the span (a block's size and a page below, the latter with every
// bit under the page right, and NULL) are rejected, with the mask by the
// difference's wrap alone; one to the span's end is past its last block (in
// the unused tail where the span has one).
TEST_CASE("a span list, either link test: a bad link or a lost mark at any position is reported, not followed",
	  "[central]")
{
	warn_without_timers();
	for (size_t size : { (size_t)16, (size_t)32, (size_t)64, (size_t)48, (size_t)80, (size_t)192 }) {
		unsigned cls = size_class_of(size);
		const size_class_t &k = size_classes[cls];
		REQUIRE(k.size == size);
		REQUIRE(k.pages == 1);
		for (int mode = 0; mode < 6; mode++) {
			for (unsigned j = 0; j < 4; j++) {
				for (unsigned extra = 0; extra < 3; extra++) {
					// The head of the partial list holds j + 4 or
					// more blocks.
					std::vector<void *> v;
					span_t *s = partial_head_with(cls, j + 4, UINT32_MAX, &v);
					REQUIRE(span_free_count(s) >= j + 4);
					char *base = (char *)superblock_of(s) + ((size_t)s->page << EBB_PAGE_SHIFT);
					std::vector<void *> list;
					void *b = s->u.central.free_head;
					for (unsigned i = 0; i <= j; i++) {
						list.push_back(b);
						b = ((void **)b)[0];
					}
					void *at = list[j];
					unsigned want = j + 1 + extra; // extra 0: at's link is the last one read
					unsigned expect = j + 1;
					if (mode == 3) {
						((uint64_t *)at)[1] = 0; // the mark lost: at is not handed out
						expect = j;
					} else {
						// A link to a non-block start (given a span mark:
						// only the link test is left), the end of the
						// span's blocks, below it, the same offset a page
						// below, NULL.
						void *forged = mode == 0   ? (void *)((char *)at + k.size / 2)
							     : mode == 1 ? (void *)(base + (size_t)k.blocks * k.size)
							     : mode == 2 ? (void *)(base - k.size)
							     : mode == 4 ? (void *)((char *)at - EBB_PAGE_SIZE)
									 : nullptr;
						if (mode == 0 && k.size >= 32) // inside at
							((uint64_t *)forged)[1] = freelist_span_mark_of(forged, freelist_mark);
						((void **)at)[0] = forged;
					}
					INFO("size " << size << ", mode " << mode << ", position " << j << ", extra "
						     << extra);
					uint64_t reports = report_count();
					std::vector<void *> got = refill(5, cls, want, false);
					CHECK(report_count() == reports + 1);
					// The refill goes on to other spans (or a new one) for
					// the rest: none of s's.
					REQUIRE(got.size() >= expect);
					for (unsigned i = 0; i < got.size(); i++) {
						span_t *g = nullptr;
						const char *why;
						REQUIRE(block_lookup(got[i], &g, &why) == cls);
						if (i < expect)
							CHECK(got[i] == list[i]);
						else
							CHECK(g != s);
						CHECK(((void **)got[i])[0] == nullptr);
						CHECK(((uint64_t *)got[i])[1] == freelist_mark_of(got[i], freelist_mark));
					}
					CHECK(span_free_count(s) == 0); // the rest dropped (leaked)
					v.insert(v.end(), got.begin(), got.end());
					flush(5, cls, v);
				}
			}
		}
	}
	unit_option("on_error", "abort");
}

// The same loop on intact lists: every count from 1 to 9 (or the list's
// length) takes the list's blocks in order, each with its bin mark and no
// link, and leaves the rest as it was.
TEST_CASE("a power-of-two class's span list hands out its blocks in order, any count", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	unsigned cls = size_class_of(32);
	for (unsigned want = 1; want <= 9; want++) {
		std::vector<void *> v;
		span_t *s = partial_head_with(cls, 2, 40, &v);
		uint32_t avail = span_free_count(s);
		std::vector<void *> list;
		for (void *b = s->u.central.free_head; b != EBB_LIST_END; b = ((void **)b)[0])
			list.push_back(b);
		REQUIRE(list.size() == avail);
		unsigned n = want < avail ? want : avail;
		uint32_t used = s->used;
		std::vector<void *> got(want);
		// Straight from this span: refill_from may go on to the next one.
		unsigned m = central_refill(5, cls, n, false, got.data());
		REQUIRE(m == n);
		for (unsigned i = 0; i < n; i++) {
			CHECK(got[i] == list[i]);
			CHECK(((void **)got[i])[0] == nullptr);
			CHECK(((uint64_t *)got[i])[1] == freelist_mark_of(got[i], freelist_mark));
		}
		CHECK(span_free_count(s) == avail - n);
		// A span left without free or withheld blocks is off the
		// partial list, and marked so in `used`.
		CHECK(s->used == ((used + n) | (span_free_count(s) == 0 && s->u.central.withheld == 0
						       ? CENTRAL_USED_FULL : 0u)));
		if (n < avail)
			CHECK(s->u.central.free_head == list[n]);
		got.resize(n);
		v.insert(v.end(), got.begin(), got.end());
		flush(5, cls, v);
	}
}

TEST_CASE("refilled blocks carry their bin mark and no link, a block flushed twice is reported once",
	  "[central]")
{
	unit_option("on_error", "warn");
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(64);
	std::vector<void *> v = refill(0, cls, 4, false);
	REQUIRE(v.size() == 4);
	for (void *b : v) {
		REQUIRE(((void **)b)[0] == nullptr);
		REQUIRE(((uint64_t *)b)[1] == freelist_mark_of(b, freelist_mark));
	}
	uint64_t used = class_stats(cls).used_blocks;
	uint64_t reports = report_count();
	// The same block twice in one flush (a double free that reached the
	// central list): the first goes home, the second lost its bin mark.
	std::vector<void *> twice{v[0], v[0]};
	flush(0, cls, twice);
	REQUIRE(report_count() == reports + 1);
	REQUIRE(class_stats(cls).used_blocks == used - 1);
	std::vector<void *> rest(v.begin() + 1, v.end());
	flush(0, cls, rest);
	unit_option("on_error", "abort");
}

// Flushes blocks of class cls in parts of fewer than a batch, so that each
// goes straight back to its span (no transfer stack).
static void flush_to_spans(unsigned cls, const std::vector<void *> &blocks)
{
	size_t part_max = size_classes[cls].batch - 1;
	for (size_t i = 0; i < blocks.size(); i += part_max) {
		std::vector<void *> part(blocks.begin() + i, blocks.begin() + std::min(blocks.size(), i + part_max));
		flush(0, cls, part);
	}
}

// A class whose span holds 3 or more blocks but fewer than a batch (so a
// flush of a span's blocks goes straight to the span), and one span of it
// with every block out here: refills whole spans' worth until one is.
// *held gets every block refilled, *span that span; returns its blocks.
// Sets on_error=warn and turns off the timers (warn_without_timers).
static std::vector<void *> span_all_out(unsigned *cls_out, std::vector<void *> *held, span_t **span)
{
	warn_without_timers();
	unsigned cls = 0;
	for (unsigned c = EBB_NUM_CLASSES - 1; c > 0 && cls == 0; c--)
		if (size_classes[c].blocks >= 3 && size_classes[c].blocks < size_classes[c].batch)
			cls = c;
	REQUIRE(cls != 0);
	*cls_out = cls;
	const size_class_t &k = size_classes[cls];
	std::vector<void *> mine;
	for (int tries = 0; tries < 8 && mine.empty(); tries++) {
		std::vector<void *> v = refill(0, cls, k.blocks, false);
		REQUIRE(!v.empty());
		held->insert(held->end(), v.begin(), v.end());
		span_t *s = nullptr, *t = nullptr;
		const char *why;
		REQUIRE(block_lookup(v.back(), &s, &why) == cls);
		std::vector<void *> in;
		for (void *b : *held)
			if (block_lookup(b, &t, &why) == cls && t == s)
				in.push_back(b);
		if (in.size() == k.blocks && s->used == (k.blocks | CENTRAL_USED_FULL)) {
			mine = in;
			*span = s;
		}
	}
	REQUIRE(mine.size() == k.blocks);
	return mine;
}

// The blocks of `held` that are not in `mine`.
static std::vector<void *> blocks_not_in(const std::vector<void *> &held, const std::vector<void *> &mine)
{
	std::vector<void *> rest;
	for (void *b : held)
		if (std::find(mine.begin(), mine.end(), b) == mine.end())
			rest.push_back(b);
	return rest;
}

// A run of blocks of one span that holds more than the span has out (a
// double free whose blocks kept their bin marks, as a forged mark would) is
// caught once per run: the block past the count is reported and dropped, the
// others go home, and the span, all of its blocks back, leaves the list.
TEST_CASE("a run of more blocks than its span has out: the block past the count is dropped", "[central]")
{
	unsigned cls;
	std::vector<void *> held;
	span_t *s = nullptr;
	std::vector<void *> mine = span_all_out(&cls, &held, &s);
	const size_class_t &k = size_classes[cls];
	std::vector<void *> others = blocks_not_in(held, mine);
	uint64_t used = class_stats(cls).used_blocks;
	uint64_t reports = report_count();
	void *x = mine.back();
	std::vector<void *> back(mine.begin(), mine.end() - 1);
	flush(0, cls, back); // fewer than a batch: straight to the span
	REQUIRE(class_stats(cls).used_blocks == used - (k.blocks - 1));
	// y is on the span's free list; give it the bin mark a block in a bin
	// carries, and flush it after x, the span's one block out.
	void *y = mine.front();
	((uint64_t *)y)[1] = freelist_mark_of(y, freelist_mark);
	std::vector<void *> run{x, y};
	flush(0, cls, run);
	REQUIRE(report_count() == reports + 1);
	REQUIRE(class_stats(cls).used_blocks == used - k.blocks);
	REQUIRE(((uint64_t *)y)[1] == freelist_mark_of(y, freelist_mark));
	REQUIRE(((void **)y)[0] == nullptr);
	flush_to_spans(cls, others);
	REQUIRE(report_count() == reports + 1);
	unit_option("on_error", "abort");
}

// A span full with fewer blocks out than it has (a corrupt link dropped the
// rest of its list: lost) carries CENTRAL_USED_FULL in `used`; a run of more
// blocks than it has out (the dropped ones freed again with a forged bin
// mark) must still be caught by the one signed test of the run's close, its
// blocks past the count reported and dropped, and the span retired.
TEST_CASE("a run of more blocks than a full span has out: the blocks past the count are dropped", "[central]")
{
	unsigned cls;
	std::vector<void *> held;
	span_t *s = nullptr;
	std::vector<void *> mine = span_all_out(&cls, &held, &s);
	const size_class_t &k = size_classes[cls];
	const unsigned B = k.blocks;
	std::vector<void *> others = blocks_not_in(held, mine);
	uint64_t reports = report_count();
	std::vector<void *> back(mine.begin(), mine.end() - 1);
	flush(0, cls, back); // mine[B - 2] heads the list, linked to mine[B - 3]
	REQUIRE(s->in_partial);
	REQUIRE(s->used == 1);
	((void **)mine[B - 2])[0] = (void *)(uintptr_t)0x10; // a write after free
	std::vector<void *> got = refill(0, cls, 1, false);
	REQUIRE(got.size() == 1);
	REQUIRE(got[0] == mine[B - 2]);
	REQUIRE(report_count() == reports + 1);
	// The rest of the list dropped (lost): full, with 2 blocks out.
	REQUIRE(!s->in_partial);
	REQUIRE(s->u.central.lost == B - 2);
	REQUIRE(span_free_count(s) == 0);
	REQUIRE(s->used == (2u | CENTRAL_USED_FULL));
	central_class_stats_t before = class_stats(cls);
	std::vector<void *> run{mine[B - 1], mine[B - 2]};
	for (unsigned i = 0; i + 2 < B; i++) {
		((uint64_t *)mine[i])[1] = freelist_mark_of(mine[i], freelist_mark);
		run.push_back(mine[i]);
	}
	flush(0, cls, run);
	REQUIRE(report_count() == reports + 1 + (B - 2));
	for (unsigned i = 0; i + 2 < B; i++) {
		CHECK(((uint64_t *)mine[i])[1] == freelist_mark_of(mine[i], freelist_mark));
		CHECK(((void **)mine[i])[0] == nullptr);
	}
	central_class_stats_t after = class_stats(cls);
	CHECK(after.used_blocks == before.used_blocks - 2);
	CHECK(after.spans == before.spans - 1);
	flush_to_spans(cls, others);
	REQUIRE(report_count() == reports + 1 + (B - 2));
	unit_option("on_error", "abort");
}

// A flush whose every block of one span lost its mark (a write after free,
// reported and dropped under on_error=warn) brings nothing back to that span:
// a span with all its blocks out must then stay off the partial list, where a
// refill would find a span without a free block.
TEST_CASE("a run whose blocks all lost their mark leaves a full span off the partial list", "[central]")
{
	unsigned cls;
	std::vector<void *> held;
	span_t *s = nullptr;
	std::vector<void *> mine = span_all_out(&cls, &held, &s);
	const size_class_t &k = size_classes[cls];
	REQUIRE(!s->in_partial);
	uint64_t reports = report_count();
	void *x = mine.back();
	((uint64_t *)x)[1] = 0x4141414141414141ull; // its bin mark overwritten
	std::vector<void *> run{x};
	flush(0, cls, run);
	REQUIRE(report_count() == reports + 1);
	CHECK(!s->in_partial);
	CHECK(span_free_count(s) == 0);
	CHECK(s->used == (k.blocks | CENTRAL_USED_FULL));
	// Everything else goes home; x stays dropped (its span keeps it out).
	std::vector<void *> rest;
	for (void *b : held)
		if (b != x)
			rest.push_back(b);
	flush_to_spans(cls, rest);
	REQUIRE(report_count() == reports + 1);
	unit_option("on_error", "abort");
}

// Many threads flushing and refilling the same lists at once, on lists they
// pick at random (as migrating threads do): the lock-free transfer stacks,
// steals from other CPUs' stacks and returns to spans all race. Every block a
// refill hands out must be out nowhere else (the ownership set) and carry its
// bin mark; when all is back, the class's counts are what they were.
TEST_CASE("concurrent flushes and refills hand no block out twice and balance the counts", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	unsigned cls = size_class_of(64);
	const size_class_t &k = size_classes[cls];
	central_drain(false, nullptr);
	central_class_stats_t before = class_stats(cls);
	uint64_t stashed_before = stashed(cls);
	uint64_t reports = report_count();

	std::mutex owners_lock;
	std::set<void *> owners;
	std::atomic<unsigned> twice{0}, unmarked{0}, empty{0};
	const unsigned threads = 4, rounds = 20000;
	auto worker = [&](unsigned seed) {
		std::vector<void *> held;
		uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
		auto rnd = [&x] { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x; };
		for (unsigned r = 0; r < rounds; r++) {
			unsigned cpu = (unsigned)(rnd() % 4);
			if (held.size() < 4u * k.batch && rnd() % 3 != 0) {
				bool whole = rnd() % 4 != 0;
				unsigned want = whole ? k.batch : 1 + (unsigned)(rnd() % k.batch);
				std::vector<void *> got = refill(cpu, cls, want, whole);
				if (got.empty())
					empty++;
				std::lock_guard<std::mutex> g(owners_lock);
				for (void *b : got) {
					if (!freelist_mark_kept(b, freelist_mark_of(b, freelist_mark)))
						unmarked++;
					if (!owners.insert(b).second)
						twice++;
					held.push_back(b);
				}
			} else if (!held.empty()) {
				// A whole batch (transfer stack) or a few blocks (spans),
				// from the middle of what this thread holds.
				unsigned n = rnd() % 2 ? std::min<unsigned>(k.batch, (unsigned)held.size())
						       : 1 + (unsigned)(rnd() % held.size());
				std::vector<void *> out(held.end() - n, held.end());
				held.resize(held.size() - n);
				{
					std::lock_guard<std::mutex> g(owners_lock);
					for (void *b : out)
						owners.erase(b);
				}
				flush(cpu, cls, out);
			}
		}
		std::lock_guard<std::mutex> g(owners_lock);
		for (void *b : held)
			owners.erase(b);
		flush(0, cls, held);
	};
	std::vector<std::thread> ts;
	for (unsigned t = 0; t < threads; t++)
		ts.emplace_back(worker, t + 1);
	for (std::thread &t : ts)
		t.join();
	CHECK(twice == 0);
	CHECK(unmarked == 0);
	CHECK(empty == 0);
	CHECK(owners.empty());
	CHECK(report_count() == reports);
	central_drain(false, nullptr);
	central_class_stats_t after = class_stats(cls);
	CHECK(after.transfer_blocks == 0);
	CHECK(after.used_blocks == before.used_blocks);
	// Every span carved went back; a carve may have left a stash (spans
	// never carved).
	CHECK(after.spans - stashed(cls) == before.spans - stashed_before);
}

// The transfer stacks alone, hammered: threads pop a whole batch from one
// list and push it straight back, millions of times, so that a thread is
// often preempted between reading a head and its CAS. Word 2 of every block
// (the program's part) carries the id of the thread holding it, set with an
// atomic exchange that must find 0: a batch popped twice (an ABA the head's
// generation failed to stop) shows as a block taken while held.
TEST_CASE("transfer stacks under contention never hand one batch to two threads", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	unsigned cls = size_class_of(64);
	const size_class_t &k = size_classes[cls];
	const unsigned cpu = 5, threads = 4, iterations = 200000;
	central_drain(false, nullptr);
	// Seed the list with transfer_cap batches whose tag words are clear
	// (the batches the carves put on the stack meanwhile go to their spans
	// first, so that only the seed's fill it).
	std::vector<std::vector<void *>> seed;
	for (unsigned i = 0; i < k.transfer_cap; i++) {
		std::vector<void *> v = refill(cpu, cls, k.batch, true);
		REQUIRE(v.size() == k.batch);
		for (void *b : v)
			__atomic_store_n(&((uint64_t *)b)[2], 0, __ATOMIC_RELAXED);
		seed.push_back(v);
	}
	central_drain(false, nullptr);
	for (auto &v : seed)
		flush(cpu, cls, v);
	REQUIRE(class_stats(cls).transfer_blocks == (uint64_t)k.transfer_cap * k.batch);

	std::atomic<unsigned> twice{0}, missed{0};
	auto worker = [&](uint64_t id) {
		std::vector<void *> v(k.batch);
		for (unsigned r = 0; r < iterations; r++) {
			if (central_refill(cpu, cls, k.batch, true, v.data()) != k.batch) {
				missed++;
				return;
			}
			for (void *b : v)
				if (__atomic_exchange_n(&((uint64_t *)b)[2], id, __ATOMIC_RELAXED) != 0)
					twice++;
			for (void *b : v)
				__atomic_store_n(&((uint64_t *)b)[2], 0, __ATOMIC_RELAXED);
			central_flush(cpu, cls, v.data(), k.batch);
		}
	};
	std::vector<std::thread> ts;
	for (unsigned t = 0; t < threads; t++)
		ts.emplace_back(worker, t + 1);
	for (std::thread &t : ts)
		t.join();
	CHECK(twice == 0);
	CHECK(missed == 0);
	CHECK(class_stats(cls).transfer_blocks == (uint64_t)k.transfer_cap * k.batch);
	central_drain(false, nullptr);
	CHECK(class_stats(cls).transfer_blocks == 0);
}

// A new span's blocks beyond the refill's batch: whole batches wait on the
// transfer stack (bin marks, no link), counted as out of the span; the next
// refills take them; all of them are the span's, each handed out once, and
// the span goes back when they are all flushed and drained.
TEST_CASE("a carve puts the new span's other whole batches on the transfer stack", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	unsigned cls = size_class_of(32);
	const size_class_t &k = size_classes[cls];
	const unsigned cpu = 6;
	central_drain(false, nullptr);
	REQUIRE(class_stats(cls).transfer_blocks == 0);
	uint64_t used0 = class_stats(cls).used_blocks, spans0 = carved_spans(cls);
	const unsigned nodes = std::min<unsigned>((k.blocks - k.batch) / k.batch, k.transfer_cap);
	REQUIRE(nodes >= 1);
	std::set<void *> seen;
	std::vector<void *> all;
	for (unsigned i = 0; i <= nodes; i++) {
		std::vector<void *> v = refill(cpu, cls, k.batch, true);
		REQUIRE(v.size() == k.batch);
		for (void *b : v) {
			REQUIRE(seen.insert(b).second);
			REQUIRE(((void **)b)[0] == nullptr);
			REQUIRE(((uint64_t *)b)[1] == freelist_mark_of(b, freelist_mark));
		}
		all.insert(all.end(), v.begin(), v.end());
		if (i == 0) {
			CHECK(class_stats(cls).transfer_blocks == (uint64_t)nodes * k.batch);
			CHECK(class_stats(cls).used_blocks == used0 + (uint64_t)(nodes + 1) * k.batch);
			CHECK(carved_spans(cls) == spans0 + 1);
		}
	}
	// Every block came from that one span.
	superblock_t *sb = superblock_of(all[0]);
	unsigned first = pmap_first(pmap_load(sb, superblock_page_index(all[0])));
	for (void *b : all) {
		REQUIRE(superblock_of(b) == sb);
		REQUIRE(pmap_first(pmap_load(sb, superblock_page_index(b))) == first);
	}
	CHECK(class_stats(cls).transfer_blocks == 0);
	CHECK(carved_spans(cls) == spans0 + 1);
	for (size_t i = 0; i < all.size(); i += k.batch)
		flush(cpu, cls, std::vector<void *>(all.begin() + i, all.begin() + i + k.batch));
	central_drain(false, nullptr);
	CHECK(class_stats(cls).used_blocks == used0);
	CHECK(carved_spans(cls) == spans0);
}

// A carve hands the first blocks of a new span straight to the refill
// (central.c carve_out: an odd one alone, then two at a time, their
// addresses and marks formed as one vector on x86-64): each block once, in
// address order from the span's start, its link word cleared and its bin
// mark set, though the span's pages held another life's words; the rest of
// the span goes to the next refills, none of them twice.
TEST_CASE("a carve hands out each block of a recycled span once, its link cleared and its mark set",
	  "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	const unsigned cpu = 15;
	for (size_t bytes : { (size_t)32, (size_t)48, (size_t)256 }) {
		unsigned cls = size_class_of(bytes);
		const size_class_t &k = size_classes[cls];
		for (unsigned want : { 1u, 2u, 3u, 4u, 5u, 7u, 16u, 31u }) {
			if (want > k.blocks)
				continue;
			central_drain(false, nullptr);
			// Old words in every block of the spans the carves below
			// may take again: all-ones, but for the bin mark a flush
			// checks (as a bin's blocks carry it).
			std::vector<void *> old = refill(cpu, cls, k.blocks, false);
			for (void *b : old) {
				memset(b, 0xff, k.size);
				((uint64_t *)b)[1] = freelist_mark_of(b, freelist_mark);
			}
			for (void *b : old)
				central_flush(cpu, cls, &b, 1);
			// Refills of `want` until one carves (the partial spans
			// emptied first: a refill that carves takes nothing else).
			std::vector<void *> held, v;
			uint64_t carved0 = 0, carved = 0, returned = 0;
			central_class_stats_t cs[EBB_NUM_CLASSES];
			central_stats(cs, &carved0, &returned);
			for (;;) {
				v = refill(cpu, cls, want, false);
				REQUIRE(v.size() == want);
				central_stats(cs, &carved, &returned);
				if (carved != carved0)
					break;
				held.insert(held.end(), v.begin(), v.end());
			}
			span_t *s = nullptr;
			const char *why;
			REQUIRE(block_lookup(v[0], &s, &why) == cls);
			REQUIRE(v[0] == span_start(span_superblock(s), s));
			std::set<void *> seen;
			for (unsigned i = 0; i < want; i++) {
				span_t *t = nullptr;
				REQUIRE(v[i] == (char *)v[0] + (size_t)i * k.size);
				REQUIRE(block_lookup(v[i], &t, &why) == cls);
				REQUIRE(t == s);
				REQUIRE(((void **)v[i])[0] == nullptr);
				REQUIRE(((uint64_t *)v[i])[1] == freelist_mark_of(v[i], freelist_mark));
				REQUIRE(seen.insert(v[i]).second);
			}
			// The span's other blocks, from its list: each once.
			held.insert(held.end(), v.begin(), v.end());
			while (seen.size() < k.blocks) {
				std::vector<void *> r = refill(cpu, cls, 1, false);
				REQUIRE(r.size() == 1);
				held.push_back(r[0]);
				span_t *t = nullptr;
				REQUIRE(block_lookup(r[0], &t, &why) == cls);
				if (t != s)
					break; // s is out whole: a new span serves
				REQUIRE(seen.insert(r[0]).second);
			}
			CHECK(seen.size() == k.blocks);
			for (void *b : held)
				central_flush(cpu, cls, &b, 1);
		}
	}
	central_drain(false, nullptr);
}

// Refills whole batches of class cls on cpu until one span has every block
// out in *held (a one-page class of more blocks than a batch: its carve and
// the batches it leaves on the transfer stack); returns that span's blocks
// in address order.
static std::vector<void *> one_span_out(unsigned cpu, unsigned cls, std::vector<void *> *held)
{
	const size_class_t &k = size_classes[cls];
	for (int tries = 0; tries < 64; tries++) {
		// Short when a span an earlier case of this process left partly
		// out (test_unit run as one process, not one case per process as
		// ctest runs it) serves the refill: that span never comes out
		// whole, a later carve does.
		std::vector<void *> got = refill(cpu, cls, k.batch, true);
		REQUIRE(!got.empty());
		REQUIRE(got.size() <= k.batch);
		held->insert(held->end(), got.begin(), got.end());
		span_t *s = nullptr, *t = nullptr;
		const char *why;
		REQUIRE(block_lookup(got.back(), &s, &why) == cls);
		std::vector<void *> in;
		for (void *b : *held)
			if (block_lookup(b, &t, &why) == cls && t == s)
				in.push_back(b);
		if (in.size() == k.blocks) {
			std::sort(in.begin(), in.end());
			return in;
		}
	}
	FAIL("no span of the class came out whole");
	return {};
}

// Refills one block at a time until n are out: none twice, never `a` or `b`.
static std::vector<void *> refill_each_once(unsigned cpu, unsigned cls, size_t n, const void *a, const void *b)
{
	std::set<void *> out;
	while (out.size() < n) {
		std::vector<void *> got = refill(cpu, cls, 1, false);
		REQUIRE(got.size() == 1);
		REQUIRE(out.insert(got[0]).second);
		REQUIRE(got[0] != a);
		REQUIRE(got[0] != b);
	}
	return std::vector<void *>(out.begin(), out.end());
}

// After a drain: one span of cls with every block out on cpu (its blocks,
// in address order, returned; *s the span; *held every block refilled),
// `others` blocks of other spans out in *t (s is full), and the transfer
// stack full, so that the next flush goes to the spans whole.
static std::vector<void *> span_out_before_flush(unsigned cpu, unsigned cls, unsigned others,
						  std::vector<void *> *held, span_t **s, std::vector<void *> *t)
{
	central_drain(false, nullptr);
	std::vector<void *> mine = one_span_out(cpu, cls, held);
	const char *why;
	REQUIRE(block_lookup(mine[0], s, &why) == cls);
	*t = refill(cpu, cls, others, false);
	REQUIRE(t->size() == others);
	fill_transfer_stack(cpu, cls);
	return mine;
}

// A flush goes home under a home's lock held for at most 128 blocks
// (RELEASE_CHUNK): a run longer than that (a whole span of 16-byte blocks,
// 256, flushed in one piece while the transfer stack is full) is closed at
// the chunk's end, the lock dropped and taken again, and the run opened
// again on the same span; every block comes home once and the span, all
// back, leaves. A span of 32-byte blocks (128) goes home in one hold, its
// last block in a window of its own.
TEST_CASE("a run longer than one hold of the lock comes home whole, in either order", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	for (size_t size : { (size_t)16, (size_t)32 })
	for (int reverse = 0; reverse < 2; reverse++) {
		unsigned cls = size_class_of(size);
		const size_class_t &k = size_classes[cls];
		REQUIRE(k.pages == 1);
		REQUIRE(k.blocks >= 128);
		const unsigned cpu = 7;
		central_drain(false, nullptr);
		REQUIRE(class_stats(cls).transfer_blocks == 0);
		std::vector<void *> held;
		std::vector<void *> mine = one_span_out(cpu, cls, &held);
		std::vector<void *> others;
		for (void *b : held)
			if (!std::binary_search(mine.begin(), mine.end(), b))
				others.push_back(b);
		// Fill the list's transfer stack, so that the next flush goes
		// to the spans: whole batches of other spans' blocks.
		while (others.size() < (size_t)k.transfer_cap * k.batch) {
			std::vector<void *> got = refill(cpu, cls, k.batch, true);
			REQUIRE(got.size() == k.batch);
			others.insert(others.end(), got.begin(), got.end());
		}
		// The last carve may have left batches of its span on the stack.
		while (class_stats(cls).transfer_blocks != 0) {
			std::vector<void *> got = refill(cpu, cls, k.batch, true);
			REQUIRE(got.size() == k.batch);
			others.insert(others.end(), got.begin(), got.end());
		}
		for (unsigned i = 0; i < k.transfer_cap; i++)
			flush(cpu, cls, std::vector<void *>(others.begin() + i * k.batch,
							    others.begin() + (i + 1) * k.batch));
		REQUIRE(class_stats(cls).transfer_blocks == (uint64_t)k.transfer_cap * k.batch);
		uint64_t used = class_stats(cls).used_blocks, spans = carved_spans(cls);
		uint64_t reports = report_count();
		if (reverse)
			std::reverse(mine.begin(), mine.end());
		flush(cpu, cls, mine);
		CHECK(report_count() == reports);
		CHECK(class_stats(cls).transfer_blocks == (uint64_t)k.transfer_cap * k.batch);
		CHECK(class_stats(cls).used_blocks == used - k.blocks);
		CHECK(carved_spans(cls) == spans - 1);
		flush(cpu, cls, std::vector<void *>(others.begin() + k.transfer_cap * k.batch, others.end()));
		central_drain(false, nullptr);
		CHECK(class_stats(cls).used_blocks == 0);
	}
}

// One-page class, a span with every block out (its free list empty): a
// flush whose block there lost its mark (a write after free) is reported
// and dropped, and the window's end after it is an end, not a block of the
// run (release_fast tests a block's page against the run's; a reference
// taken from the span's empty list once made the window's end look like
// one, and read address 8: api.attack item 2, found in work on issue 13).
TEST_CASE("a one-page span with every block out: a flushed block without its mark is reported, nothing read past it",
	  "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(32);
	REQUIRE(size_classes[cls].pages == 1);
	central_drain(false, nullptr);
	std::vector<void *> held;
	std::vector<void *> mine = one_span_out(0, cls, &held);
	span_t *s = nullptr;
	const char *why;
	REQUIRE(block_lookup(mine.back(), &s, &why) == cls);
	REQUIRE(span_free_count(s) == 0);
	uint64_t reports = report_count();
	void *x = mine.back();
	((uint64_t *)x)[1] = 0x4141414141414141ull; // its bin mark overwritten
	flush(0, cls, std::vector<void *>{x});
	REQUIRE(report_count() == reports + 1);
	CHECK(span_free_count(s) == 0);
	// Two blocks: the bad one last, then the window's end.
	void *y = mine.front();
	((uint64_t *)y)[1] = 0x4141414141414141ull;
	flush(0, cls, std::vector<void *>{mine[1], y});
	REQUIRE(report_count() == reports + 2);
	CHECK(span_free_count(s) == 1);
	std::vector<void *> rest;
	for (void *b : held)
		if (b != x && b != y && b != mine[1])
			rest.push_back(b);
	flush_to_spans(cls, rest);
	REQUIRE(report_count() == reports + 2);
	unit_option("on_error", "abort");
}

// A run with more blocks than its span had out that ends at a window's end
// (release_window closes it at the sentinel, RELEASE_CLOSE) is closed once:
// the next window opens with no run, so it neither takes the run from
// `used` again nor reports the run's blocks, which are home by then.
TEST_CASE("an overfreed run that ends at a window's end is closed once", "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(32);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages == 1);
	REQUIRE(k.blocks == 128); // a window's worth of blocks (RELEASE_CHUNK)
	const unsigned cpu = 10;
	std::vector<void *> held, t;
	span_t *s = nullptr;
	std::vector<void *> mine = span_out_before_flush(cpu, cls, 2, &held, &s, &t);
	flush(cpu, cls, std::vector<void *>{mine[0]});
	((uint64_t *)mine[0])[1] = freelist_mark_of(mine[0], freelist_mark); // freed again, forged
	// t[0] opens the first run before any window; the window is v[1..128]:
	// s's 127 blocks out, then mine[0]; t[1] is the last block's window.
	std::vector<void *> v{t[0]};
	v.insert(v.end(), mine.begin() + 1, mine.end());
	v.push_back(mine[0]);
	v.push_back(t[1]);
	uint64_t used = class_stats(cls).used_blocks;
	uint64_t reports = report_count();
	flush(cpu, cls, v);
	CHECK(report_count() == reports + 1);
	CHECK(class_stats(cls).used_blocks == used - (k.blocks + 1));
	CHECK(((uint64_t *)mine[0])[1] == freelist_mark_of(mine[0], freelist_mark));
	CHECK(((void **)mine[0])[0] == nullptr);
	CHECK(s->state != SPAN_CENTRAL); // all its blocks home: retired
	flush_to_spans(cls, blocks_not_in(held, mine));
	central_drain(false, nullptr);
	CHECK(report_count() == reports + 1);
	unit_option("on_error", "abort");
}

// A block that fails the lookup in the middle of a span's run (a block of
// another class; an address inside a block for a class of several pages)
// is reported and skipped; the run goes on, and the span's other blocks
// come home (the span, all of them back, leaves), the bad one untouched.
TEST_CASE("a bad address in the middle of a run is reported and the run goes on", "[central]")
{
	warn_without_timers();
	SECTION("a block of another class, one-page class")
	{
		unsigned cls = size_class_of(32), other = size_class_of(48);
		const size_class_t &k = size_classes[cls];
		central_drain(false, nullptr);
		std::vector<void *> held;
		std::vector<void *> mine = one_span_out(8, cls, &held);
		std::vector<void *> w = refill(8, other, 1, false);
		REQUIRE(w.size() == 1);
		uint64_t used = class_stats(cls).used_blocks, spans = carved_spans(cls);
		uint64_t reports = report_count();
		// Parts below a batch, straight to the span; w third in the first.
		size_t part_max = k.batch - 1;
		for (size_t i = 0; i < mine.size(); i += part_max - (i == 0)) {
			size_t n = std::min(mine.size() - i, part_max - (i == 0));
			std::vector<void *> part(mine.begin() + i, mine.begin() + i + n);
			if (i == 0)
				part.insert(part.begin() + 2, w[0]);
			flush(8, cls, part);
			if (i == 0) {
				CHECK(report_count() == reports + 1);
				CHECK(class_stats(cls).used_blocks == used - n);
			}
		}
		CHECK(report_count() == reports + 1);
		CHECK(class_stats(cls).used_blocks == used - k.blocks);
		CHECK(carved_spans(cls) == spans - 1);
		CHECK(((void **)w[0])[0] == nullptr);
		CHECK(((uint64_t *)w[0])[1] == freelist_mark_of(w[0], freelist_mark));
		flush(8, other, w);
		std::vector<void *> others;
		for (void *b : held)
			if (!std::binary_search(mine.begin(), mine.end(), b))
				others.push_back(b);
		flush(8, cls, others);
		central_drain(false, nullptr);
	}
	SECTION("an address inside a block, class of several pages")
	{
		unsigned cls;
		std::vector<void *> held;
		span_t *s = nullptr;
		std::vector<void *> mine = span_all_out(&cls, &held, &s);
		const size_class_t &k = size_classes[cls];
		REQUIRE(k.pages > 1);
		uint64_t used = class_stats(cls).used_blocks, spans = carved_spans(cls);
		uint64_t reports = report_count();
		std::vector<void *> run(mine);
		run.insert(run.begin() + 1, (char *)mine[0] + 16);
		flush_to_spans(cls, run);
		CHECK(report_count() == reports + 1);
		CHECK(class_stats(cls).used_blocks == used - k.blocks);
		CHECK(carved_spans(cls) == spans - 1);
		std::vector<void *> others;
		for (void *b : held)
			if (std::find(mine.begin(), mine.end(), b) == mine.end())
				others.push_back(b);
		flush_to_spans(cls, others);
		CHECK(report_count() == reports + 1);
	}
	unit_option("on_error", "abort");
}

// A list (one class of one CPU slot) is written the first time a refill or
// flush uses it, not at start-up and not with the other classes of its slot.
// Run alone (one ctest per case), the lists start unused: threads of the
// same slot race to set up the same list, each with a whole batch to hand
// out, while another thread runs the passes over every list (drain, stats,
// purge, the fork handlers), which must see a list either unused (NULL: no
// lock taken) or whole, never half set up.
TEST_CASE("a central list is set up by its first use, once, while passes run", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	unsigned cls = size_class_of(48);
	const size_class_t &k = size_classes[cls];
	unsigned slots = central_list_count() / EBB_NUM_CLASSES;
	REQUIRE(slots >= 1);
	unsigned unused = 0; /* a slot above the two this test uses, not set up yet */
	for (unsigned sl = slots; sl-- > 2 && unused == 0;)
		if (central_list_at(sl * EBB_NUM_CLASSES + cls) == nullptr)
			unused = sl;
	std::atomic<bool> stop{false};
	std::atomic<unsigned> bad_cls{0};
	std::thread pass([&] {
		while (!stop.load()) {
			for (unsigned i = 0; i < central_list_count(); i++) {
				central_t *c = central_list_at(i);
				if (c != nullptr && c->cls != i % EBB_NUM_CLASSES)
					bad_cls++;
			}
			central_drain(false, nullptr);
			class_stats(cls);
			central_purge_tick(true);
			central_prefork();
			central_postfork_parent();
		}
	});
	const unsigned threads = 4;
	std::vector<std::vector<void *>> got(threads);
	std::vector<std::thread> ts;
	for (unsigned t = 0; t < threads; t++)
		ts.emplace_back([&, t] {
			// Two threads on each of the first two slots (or all on one).
			got[t] = refill(t % 2 % slots, cls, k.batch, true);
		});
	for (std::thread &t : ts)
		t.join();
	stop = true;
	pass.join();
	CHECK(bad_cls == 0);
	// Each gets blocks (a short batch when a peer's new span left fewer on
	// the partial list), none twice.
	std::set<void *> all;
	size_t total = 0;
	for (unsigned t = 0; t < threads; t++) {
		CHECK(!got[t].empty());
		total += got[t].size();
		all.insert(got[t].begin(), got[t].end());
	}
	CHECK(all.size() == total);
	// The lists used are set up, with their class and their own nodes; the
	// other classes of their slots are not (no test here used the largest
	// class).
	for (unsigned s = 0; s < (slots < 2 ? slots : 2); s++) {
		central_t *l = central_list_at(s * EBB_NUM_CLASSES + cls);
		REQUIRE(l != nullptr);
		CHECK(l->cls == cls);
		CHECK(l->node_base != nullptr);
		CHECK(central_list_at(s * EBB_NUM_CLASSES + EBB_NUM_CLASSES - 1) == nullptr);
	}
	// The lists of a slot take their nodes from the slot's one array: a
	// list of the next class, set up later by a refill, has the same.
	{
		std::vector<void *> one = refill(0, cls + 1, 1, false);
		REQUIRE(one.size() == 1);
		central_t *next = central_list_at(cls + 1);
		REQUIRE(next != nullptr);
		CHECK(next->node_base == central_list_at(cls)->node_base);
		flush(0, cls + 1, one);
	}
	// Lists of different slots never share transfer nodes.
	if (slots >= 2)
		CHECK(central_list_at(cls)->node_base != central_list_at(EBB_NUM_CLASSES + cls)->node_base);
	// A slot no test used stays unset (the passes did not set it up), and
	// a flush there sets it up like a refill.
	if (unused != 0) {
		CHECK(central_list_at(unused * EBB_NUM_CLASSES + cls) == nullptr);
		flush(unused, cls, got[0]);
		CHECK(central_list_at(unused * EBB_NUM_CLASSES + cls) != nullptr);
		got[0].clear();
	}
	for (unsigned t = 0; t < threads; t++)
		flush(t % 2 % slots, cls, got[t]);
	central_drain(false, nullptr);
	CHECK(class_stats(cls).transfer_blocks == 0);
}

// release_to_spans walks a flush in windows of at most 128 blocks, each ended
// by a sentinel written in place of the block after it (put back after the
// window) and the flush's last block in a window of its own. Bad addresses
// at the edges of the windows (the sentinel's place, the block before it,
// the last block) are reported and skipped as anywhere else, every good
// block comes home, and the caller's array is left as it was.
TEST_CASE("a flush of several windows: bad blocks at their edges are reported, the array is left whole",
	  "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(32), other = size_class_of(48);
	const size_class_t &k = size_classes[cls];
	const unsigned cpu = 9;
	central_drain(false, nullptr);
	std::vector<void *> good;
	while (good.size() < 400) {
		std::vector<void *> got = refill(cpu, cls, k.batch, false);
		REQUIRE(!got.empty());
		good.insert(good.end(), got.begin(), got.end());
	}
	fill_transfer_stack(cpu, cls);
	std::vector<void *> w = refill(cpu, other, 1, false);
	REQUIRE(w.size() == 1);
	uint64_t used = class_stats(cls).used_blocks;
	uint64_t reports = report_count();
	std::vector<void *> v(good);
	// v[0] opens the first run before any window: the first window is
	// v[1..128], its sentinel in v[129]'s place.
	v.insert(v.begin() + 128, w[0]); // the first window's last block
	v.insert(v.begin() + 257, w[0]); // the second window's sentinel place
	v.push_back(good[0]);            // the last block: freed twice
	const std::vector<void *> before(v);
	flush(cpu, cls, v);
	CHECK(v == before);
	CHECK(report_count() == reports + 3);
	CHECK(class_stats(cls).used_blocks == used - good.size());
	CHECK(((uint64_t *)w[0])[1] == freelist_mark_of(w[0], freelist_mark));
	flush(cpu, other, w);
	central_drain(false, nullptr);
	unit_option("on_error", "abort");
}

// central_flush_spare (a thread cache's bin flush) lends the slot after the
// blocks as well, so the flush's last block ends a window like any other
// instead of going through one of its own. Counts at and around the window
// size (RELEASE_CHUNK, 128) end there or one past; the lent slot and the
// array hold what they held, every block comes home once, and a last block
// freed twice or not of the class, right before the lent slot, is reported
// and dropped.
TEST_CASE("a flush that lends the slot after its blocks: every count, bad last blocks, the slot left as it was",
	  "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(32), other = size_class_of(48);
	const size_class_t &k = size_classes[cls];
	const unsigned cpu = 10;
	central_drain(false, nullptr);
	fill_transfer_stack(cpu, cls);
	std::vector<void *> w = refill(cpu, other, 1, false);
	REQUIRE(w.size() == 1);
	void *const lent = (void *)&w; // what a bin's next slot holds: not a block of the flush
	for (unsigned n : { 1u, 2u, 127u, 128u, 129u, 130u, 256u, 257u, 300u })
	for (int bad = 0; bad < 3; bad++) {
		if (bad && n < 2)
			continue;
		std::vector<void *> good;
		while (good.size() < n) {
			std::vector<void *> got = refill(cpu, cls, std::min<unsigned>(k.batch, n - (unsigned)good.size()), false);
			REQUIRE(!got.empty());
			good.insert(good.end(), got.begin(), got.end());
		}
		uint64_t used = class_stats(cls).used_blocks;
		uint64_t reports = report_count();
		std::vector<void *> v(good);
		if (bad == 1)
			v.back() = good[0]; // good[0] freed twice, the last copy last
		else if (bad == 2)
			v.back() = w[0]; // a block of another class
		// Every other block by pages, so runs open and close throughout.
		std::stable_partition(v.begin(), v.end() - 1, [&](void *b) { return ((uintptr_t)b >> 12) & 1; });
		v.push_back(lent);
		const std::vector<void *> before(v);
		central_flush_spare(cpu, cls, v.data(), n);
		CHECK(v == before);
		CHECK(report_count() == reports + (bad ? 1 : 0));
		CHECK(class_stats(cls).used_blocks == used - (bad ? n - 1 : n));
		if (bad == 2)
			CHECK(((uint64_t *)w[0])[1] == freelist_mark_of(w[0], freelist_mark));
		if (bad) { // good[n - 1] was left out: it goes home now
			flush(cpu, cls, { good[n - 1] });
			CHECK(class_stats(cls).used_blocks == used - n);
		}
	}
	flush(cpu, other, w);
	central_drain(false, nullptr);
	unit_option("on_error", "abort");
}

// Sets on_error=warn without timers (which sets the allocator up), drains
// the lists, and refills eight spans' worth of 32-byte blocks (a one-page
// class) on cpu, a batch at a time, or one block less with below_batch;
// then fills cpu's transfer stack (flushes go to the spans). Returns the
// blocks in address order.
// got cut where the page changes: each run of blocks in a row on one page.
static std::vector<std::vector<void *>> runs_by_page(const std::vector<void *> &got)
{
	std::vector<std::vector<void *>> runs;
	for (void *b : got) {
		if (runs.empty() || ((uintptr_t)b >> EBB_PAGE_SHIFT) != ((uintptr_t)runs.back()[0] >> EBB_PAGE_SHIFT))
			runs.emplace_back();
		runs.back().push_back(b);
	}
	return runs;
}

static std::vector<void *> refill_eight_spans_of_32(unsigned cpu, bool below_batch)
{
	warn_without_timers();
	unsigned cls = size_class_of(32);
	REQUIRE(size_classes[cls].pages == 1);
	const unsigned want = size_classes[cls].batch - (below_batch ? 1 : 0);
	central_drain(false, nullptr);
	std::vector<void *> got;
	while (got.size() < 8u * size_classes[cls].blocks) {
		std::vector<void *> b = refill(cpu, cls, want, false);
		REQUIRE(!b.empty());
		got.insert(got.end(), b.begin(), b.end());
	}
	fill_transfer_stack(cpu, cls);
	std::sort(got.begin(), got.end());
	return got;
}

// A flush in random order puts nearly every block in a run of its own
// (release_fast tests a one-page class's block against its run's head):
// blocks dealt round-robin over many pages, so that no two in a row share
// one, with a block listed twice (its second copy, a run of one, carries
// the span mark by then) and a block whose mark was overwritten (a run of
// one as well) among them. Both are reported and dropped; every other
// block comes home once, and a refill of all of them hands none out twice.
TEST_CASE("a flush of one-block runs: a block listed twice and a forged one are reported, the rest come home",
	  "[central]")
{
	const unsigned cpu = 11;
	std::vector<void *> got = refill_eight_spans_of_32(cpu, false);
	unsigned cls = size_class_of(32);
	const size_class_t &k = size_classes[cls];
	// Round-robin over the pages the blocks lie on.
	std::vector<std::vector<void *>> pages = runs_by_page(got);
	REQUIRE(pages.size() >= 4);
	std::vector<void *> v;
	for (size_t i = 0; v.size() < got.size(); i++)
		for (auto &p : pages)
			if (i < p.size())
				v.push_back(p[i]);
	void *twice = v[10], *forged = v[77];
	REQUIRE(((uintptr_t)v[99] ^ (uintptr_t)twice) >= EBB_PAGE_SIZE);
	REQUIRE(((uintptr_t)v[101] ^ (uintptr_t)twice) >= EBB_PAGE_SIZE);
	v.insert(v.begin() + 100, twice); // a run of one: its page's block lies elsewhere
	((uint64_t *)forged)[1] = 0x4141414141414141ull;
	uint64_t used = class_stats(cls).used_blocks;
	uint64_t reports = report_count();
	flush(cpu, cls, v);
	CHECK(report_count() == reports + 2);
	CHECK(class_stats(cls).used_blocks == used - (got.size() - 1));
	CHECK(((uint64_t *)forged)[1] == 0x4141414141414141ull);
	// Every block that came home is handed out once; the forged one never.
	std::set<void *> out;
	for (size_t want = got.size() - 1; out.size() < want;) {
		std::vector<void *> b = refill(cpu, cls, k.batch, false);
		REQUIRE(!b.empty());
		for (void *p : b) {
			REQUIRE(out.insert(p).second);
			REQUIRE(p != forged);
		}
	}
	std::vector<void *> back(out.begin(), out.end());
	flush_to_spans(cls, back);
	central_drain(false, nullptr);
	unit_option("on_error", "abort");
}

// release_window takes a one-page class's window whose first blocks lie on
// four pages in a row block by block (release_fast_in's scatter form), which
// closes the run at every block and opens it again, on the same span too.
// Blocks of several full spans: flushed dealt over the spans (the scatter
// form is chosen) with whole stretches of one span's blocks in a row after
// them, in windows of the flush, every span's blocks but one; then a flush
// whose window opens scattered, with each span's last block and, after its
// span's last, a block already home given a forged bin mark (a double free
// that kept its mark). Every block comes home once (the counts balance, the
// spans all go back to the page heap), the forged one is reported and
// dropped with its bin mark and no link, and nothing else is reported.
TEST_CASE("a flush taken block by block, runs within it: every block home once, an overfreed one dropped",
	  "[central]")
{
	const unsigned cpu = 14;
	// Below a batch: a carve then puts none of its span on the transfer
	// stack, so the spans end up with every block out.
	std::vector<void *> got = refill_eight_spans_of_32(cpu, true);
	unsigned cls = size_class_of(32);
	const size_class_t &k = size_classes[cls];
	std::vector<std::vector<void *>> pages, partial;
	for (auto &run : runs_by_page(got))
		(run.size() == k.blocks ? pages : partial).push_back(run);
	REQUIRE(pages.size() >= 5);
	std::vector<void *> all, last;
	for (auto &p : pages) {
		last.push_back(p.back());
		p.pop_back();
		all.insert(all.end(), p.begin(), p.end());
	}
	// The first half of every span's blocks dealt over the spans, then the
	// rest span by span, in address order.
	std::vector<void *> v;
	for (size_t i = 0; i < k.blocks / 2; i++)
		for (auto &p : pages)
			v.push_back(p[i]);
	for (auto &p : pages)
		v.insert(v.end(), p.begin() + k.blocks / 2, p.end());
	REQUIRE(v.size() == all.size());
	const uint64_t spans = carved_spans(cls);
	const uint64_t used = class_stats(cls).used_blocks;
	const uint64_t reports = report_count();
	flush(cpu, cls, v);
	CHECK(report_count() == reports);
	CHECK(class_stats(cls).used_blocks == used - v.size());
	CHECK(carved_spans(cls) == spans);
	// y is home on the first span's list; its bin mark is forged. The window
	// after the flush's first block: last[1], y, last[2], last[3] (four
	// pages in a row); y comes after its span's last block.
	void *y = pages[0][3];
	((uint64_t *)y)[1] = freelist_mark_of(y, freelist_mark);
	std::vector<void *> w{ last[0], last[1], y };
	w.insert(w.end(), last.begin() + 2, last.end());
	REQUIRE(w.size() < k.batch);
	flush(cpu, cls, w);
	CHECK(report_count() == reports + 1);
	CHECK(class_stats(cls).used_blocks == used - v.size() - last.size());
	CHECK(carved_spans(cls) == spans - pages.size());
	CHECK(((uint64_t *)y)[1] == freelist_mark_of(y, freelist_mark));
	CHECK(((void **)y)[0] == nullptr);
	for (auto &p : partial)
		flush_to_spans(cls, p);
	central_drain(false, nullptr);
	unit_option("on_error", "abort");
}

// A refill of fewer blocks than a batch (a big class's bin before it grows,
// or no thread cache) never pops a transfer batch whole: a carve for it must
// not fill transfer nodes from the new span, or those blocks would wait
// there, the span never emptying (python3's 16-30 KiB classes at its peak:
// spans all free, every block in a batch).
TEST_CASE("a carve for fewer blocks than a batch puts none of the span on the transfer stack", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	// 17 KiB (the class just above 16 KiB): 8 blocks, batches of 3 (16 KiB
	// spans hold 4 blocks, one batch, since size_class.c's SPAN_FEW_BLOCKS).
	unsigned cls = size_class_of(17000);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.blocks >= 2u * k.batch); // the old carve filled a node here
	const unsigned cpu = 12;
	central_drain(false, nullptr);
	central_class_stats_t s0 = class_stats(cls);
	std::vector<void *> v = refill(cpu, cls, 1, false);
	REQUIRE(v.size() == 1);
	central_class_stats_t s1 = class_stats(cls);
	CHECK(s1.spans == s0.spans + 1);
	CHECK(s1.transfer_blocks == s0.transfer_blocks);
	CHECK(s1.used_blocks == s0.used_blocks + 1);
	// The one block back: the span is all free and leaves.
	central_flush(cpu, cls, v.data(), 1);
	CHECK(carved_spans(cls) == s0.spans);
	CHECK(class_stats(cls).used_blocks == s0.used_blocks);
}

// Blocks that wait in a transfer batch serve a refill of fewer than a batch
// before a new span is carved: one of the batch's blocks is handed out (with
// its bin mark), the rest go back to their span.
TEST_CASE("a refill of fewer blocks than a batch takes a waiting batch before it carves a span", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	unsigned cls = size_class_of(8192);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.blocks == k.batch); // one batch empties a span: no partial span left
	const unsigned cpu = 13;
	central_drain(false, nullptr);
	central_class_stats_t s0 = class_stats(cls);
	std::vector<void *> all = refill(cpu, cls, k.batch, true);
	REQUIRE(all.size() == k.batch);
	REQUIRE(carved_spans(cls) == s0.spans + 1);
	flush(cpu, cls, all); // onto the transfer stack, whole
	REQUIRE(class_stats(cls).transfer_blocks == s0.transfer_blocks + k.batch);
	uint64_t reports = report_count();
	std::vector<void *> w = refill(cpu, cls, 1, false);
	REQUIRE(w.size() == 1);
	CHECK(std::find(all.begin(), all.end(), w[0]) != all.end());
	CHECK(((uint64_t *)w[0])[1] == freelist_mark_of(w[0], freelist_mark));
	central_class_stats_t s1 = class_stats(cls);
	CHECK(s1.spans == s0.spans + 1); // no new span
	CHECK(s1.transfer_blocks == s0.transfer_blocks);
	CHECK(s1.used_blocks == s0.used_blocks + 1);
	CHECK(report_count() == reports);
	// The others are on the span's list: a second single refill takes one of
	// them, and both back empty the span.
	std::vector<void *> w2 = refill(cpu, cls, 1, false);
	REQUIRE(w2.size() == 1);
	CHECK(w2[0] != w[0]);
	CHECK(std::find(all.begin(), all.end(), w2[0]) != all.end());
	CHECK(carved_spans(cls) == s0.spans + 1);
	central_flush(cpu, cls, w.data(), 1);
	central_flush(cpu, cls, w2.data(), 1);
	CHECK(carved_spans(cls) == s0.spans);
	CHECK(class_stats(cls).used_blocks == s0.used_blocks);
}

namespace {
std::atomic<unsigned> dirty_hook_calls{0};
bool counting_dirty_hook(uint64_t)
{
	dirty_hook_calls++;
	return true; // as if a background thread decays: nothing in line
}
} // namespace

// The page heap's dirty hook may start the background thread, and
// pthread_create allocates on the calling thread (glibc: the new thread's
// DTV). A refill writes into the caller's bin before the bin knows it holds
// the blocks (tcache_refill), so a nested malloc there refilled the same
// slots and one block was handed out twice (larson t=32, preloaded: always a
// 288-byte block, glibc's DTV). So a refill that splits a batch and gives a
// whole span back to the page heap must do it without the hook; a flush
// afterwards calls it as before.
TEST_CASE("a refill that splits a batch and empties a span calls no page-heap hook", "[central]")
{
	unit_init();
	unsigned cls = size_class_of(256);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages == 1);
	REQUIRE(2u * k.blocks == k.batch); // a batch: two whole spans
	const unsigned cpu = 3;
	central_drain(false, nullptr);
	// No partial span on the list, so that the refill below splits the batch:
	// take what partial spans hold (given back at the end).
	std::vector<void *> held;
	for (central_t *c = central_list_at(cpu * EBB_NUM_CLASSES + cls); c != nullptr && c->partial != nullptr;) {
		unsigned n = span_free_count(c->partial);
		REQUIRE(n > 0);
		std::vector<void *> v = refill(cpu, cls, n, false);
		REQUIRE(v.size() == n);
		held.insert(held.end(), v.begin(), v.end());
	}
	std::vector<void *> all = refill(cpu, cls, k.batch, true); // two new spans
	REQUIRE(all.size() == k.batch);
	span_t *first = nullptr;
	const char *why;
	std::vector<void *> batch, second;
	for (void *b : all) {
		span_t *s = nullptr;
		REQUIRE(block_lookup(b, &s, &why) == cls);
		if (first == nullptr)
			first = s;
		(s == first ? batch : second).push_back(b);
	}
	REQUIRE(batch.size() == k.blocks);
	REQUIRE(second.size() == k.blocks);
	batch.insert(batch.end(), second.begin(), second.end()); // the first span's blocks, then the second's
	central_class_stats_t s0 = class_stats(cls);
	flush(cpu, cls, batch); // onto the transfer stack, whole
	REQUIRE(class_stats(cls).transfer_blocks == s0.transfer_blocks + k.batch);

	page_heap_set_dirty_hook(counting_dirty_hook);
	dirty_hook_calls = 0;
	uint64_t reports = report_count();
	// A bin's first refill (fewer than a batch): the first span's blocks out,
	// the second span's back home, where it empties and leaves.
	std::vector<void *> w = refill(cpu, cls, k.blocks, true);
	CHECK(dirty_hook_calls == 0);
	REQUIRE(w.size() == k.blocks);
	CHECK(std::equal(w.begin(), w.end(), batch.begin()));
	central_class_stats_t s1 = class_stats(cls);
	CHECK(s1.spans == s0.spans - 1);
	CHECK(s1.transfer_blocks == s0.transfer_blocks);
	// Outside a refill the hook is called: the first span empties here.
	central_flush(cpu, cls, w.data(), (unsigned)w.size());
	CHECK(dirty_hook_calls == 1);
	CHECK(class_stats(cls).spans == s0.spans - 2);
	CHECK(report_count() == reports);
	page_heap_set_dirty_hook(background_on_dirty);
	if (!held.empty())
		central_flush(cpu, cls, held.data(), (unsigned)held.size());
}

// release_fast_in walks a flush two blocks a step (RELEASE_STEP made twice,
// the block and its run's head trading registers): a bad block must be
// reported and the run left whole whichever of the two copies meets it, and
// whether it would extend a run (blocks in address order) or open one
// (blocks dealt over their spans, as a random flush is), in a one-page class
// and in one of several pages. Each case flushes a part below a batch
// (straight to the spans) with one bad block at position pos: its mark
// overwritten, the same block listed twice in a row, or a block of another
// class. Every other block comes home once, the forged one never, and a
// refill of them all hands none out twice.
TEST_CASE("a bad block met by either copy of the unrolled return, in a run or opening one, is reported, the rest come home once",
	  "[central]")
{
	warn_without_timers();
	unsigned pages_cls = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES && pages_cls == 0; c++)
		if (size_classes[c].pages >= 2 && size_classes[c].batch >= 8 && size_classes[c].blocks >= 8)
			pages_cls = c;
	REQUIRE(pages_cls != 0);
	const unsigned cpu = 13;
	std::vector<void *> w = refill(cpu, size_class_of(16), 1, false);
	REQUIRE(w.size() == 1);
	for (unsigned cls : { size_class_of(32), pages_cls }) {
		const size_class_t &k = size_classes[cls];
		const unsigned part = k.batch - 2; /* with a copy added: still below a batch */
		for (int order = 0; order < 2; order++) {
			for (unsigned pos = 0; pos < 6; pos++) {
				for (int kind = 0; kind < 3; kind++) {
					central_drain(false, nullptr);
					std::vector<void *> got;
					while (got.size() < 4u * k.blocks + part) {
						std::vector<void *> b = refill(cpu, cls, k.batch, false);
						REQUIRE(!b.empty());
						got.insert(got.end(), b.begin(), b.end());
					}
					std::sort(got.begin(), got.end());
					std::vector<void *> v;
					if (order == 0) {
						v = got;
					} else {
						std::vector<std::vector<void *>> spans;
						span_t *last = nullptr;
						for (void *b : got) {
							span_t *s = nullptr;
							const char *why = nullptr;
							REQUIRE(block_lookup(b, &s, &why) == cls);
							if (s != last)
								spans.emplace_back();
							last = s;
							spans.back().push_back(b);
						}
						REQUIRE(spans.size() >= 4);
						for (size_t i = 0; v.size() < got.size(); i++)
							for (auto &sp : spans)
								if (i < sp.size())
									v.push_back(sp[i]);
					}
					std::vector<void *> head(v.begin(), v.begin() + part), rest(v.begin() + part, v.end());
					void *bad = head[pos];
					if (kind == 0)
						((uint64_t *)bad)[1] = 0x4141414141414141ull;
					else if (kind == 1)
						head.insert(head.begin() + pos + 1, bad);
					else
						head.insert(head.begin() + pos, w[0]);
					uint64_t used = class_stats(cls).used_blocks;
					uint64_t reports = report_count();
					flush(cpu, cls, head);
					INFO("class " << cls << " order " << order << " pos " << pos << " kind " << kind);
					CHECK(report_count() == reports + 1);
					CHECK(class_stats(cls).used_blocks == used - (part - (kind == 0)));
					for (size_t i = 0; i < rest.size(); i += part)
						flush(cpu, cls, std::vector<void *>(rest.begin() + i,
										     rest.begin() + std::min(rest.size(), i + part)));
					CHECK(report_count() == reports + 1);
					CHECK(class_stats(cls).used_blocks == used - (got.size() - (kind == 0)));
					CHECK(((uint64_t *)w[0])[1] == freelist_mark_of(w[0], freelist_mark));
					// Every block that came home is handed out once; the forged
					// one never.
					std::set<void *> out;
					size_t want = got.size() - (kind == 0);
					while (out.size() < want) {
						std::vector<void *> b =
							refill(cpu, cls, (unsigned)std::min<size_t>(k.batch, want - out.size()), false);
						REQUIRE(!b.empty());
						for (void *p : b) {
							REQUIRE(out.insert(p).second);
							REQUIRE((kind != 0 || p != bad));
						}
					}
					CHECK(out.size() == want);
					std::vector<void *> back(out.begin(), out.end());
					if (kind == 0) {
						((uint64_t *)bad)[1] = freelist_mark_of(bad, freelist_mark);
						back.push_back(bad);
					}
					for (size_t i = 0; i < back.size(); i += part)
						flush(cpu, cls, std::vector<void *>(back.begin() + i,
										     back.begin() + std::min(back.size(), i + part)));
					CHECK(report_count() == reports + 1);
					CHECK(class_stats(cls).used_blocks == used - got.size());
				}
			}
		}
	}
	flush(cpu, size_class_of(16), w);
	central_drain(false, nullptr);
	unit_option("on_error", "abort");
}

// A flush over a large working set meets another superblock at nearly every
// block; the return reads the new one's registry slot inside its fast loop
// (release_fast_in), for a one-page class and one of several pages alike.
// Blocks of two superblocks alternating one by one (the scatter form: four
// blocks of four spans open the window) or two by two (the run form), with
// an address in no superblock of ours (a static array) and a block whose
// mark was overwritten right after a switch: both reported, every other
// block comes home once (the counts balance), and a refill of them all
// hands none out twice.
TEST_CASE("a flush alternating between superblocks reads each one's registry slot, and reports an address in none",
	  "[central]")
{
	/* 576: two pages a span and a batch of 21 (1 KiB's, 12, is below the
	 * 16 this case needs). */
	for (size_t size : { (size_t)512, (size_t)576 })
	for (int pairs = 1; pairs <= 2; pairs++) {
		warn_without_timers();
		unsigned cls = size_class_of(size);
		const size_class_t &k = size_classes[cls];
		REQUIRE(k.pages == (size == 512 ? 1 : 2));
		REQUIRE(k.batch >= 16);
		const unsigned cpu = 14;
		central_drain(false, nullptr);
		std::vector<void *> got;
		std::vector<std::vector<void *>> by_sb;
		std::vector<uintptr_t> sbs;
		while (sbs.size() < 2 || by_sb[0].size() < 40 || by_sb[1].size() < 40) {
			REQUIRE(got.size() < 100000);
			std::vector<void *> b = refill(cpu, cls, k.batch, false);
			REQUIRE(!b.empty());
			for (void *p : b) {
				got.push_back(p);
				uintptr_t sb = (uintptr_t)superblock_of(p);
				size_t i = std::find(sbs.begin(), sbs.end(), sb) - sbs.begin();
				if (i == sbs.size()) {
					sbs.push_back(sb);
					by_sb.emplace_back();
				}
				by_sb[i].push_back(p);
			}
		}
		static uint64_t foreign[8] __attribute__((aligned(64)));
		std::vector<void *> v;
		for (size_t i = 0; i < 20; i += pairs)
			for (size_t sb = 0; sb < 2; sb++)
				for (int j = 0; j < pairs; j++)
					v.push_back(by_sb[sb][i + j]);
		void *lost = v[pairs == 1 ? 7 : 8]; /* right after a switch */
		REQUIRE(superblock_of(lost) != superblock_of(v[pairs == 1 ? 6 : 7]));
		((uint64_t *)lost)[1] = 0x4141414141414141ull;
		v.insert(v.begin() + 12, (void *)foreign);
		REQUIRE(v.size() < k.batch * 2u);
		uint64_t used = class_stats(cls).used_blocks;
		uint64_t reports = report_count();
		/* In parts below a batch: straight to the spans. */
		for (size_t i = 0; i < v.size(); i += k.batch - 1)
			flush(cpu, cls, std::vector<void *>(v.begin() + i, v.begin() + std::min(v.size(), i + k.batch - 1)));
		CHECK(report_count() == reports + 2);
		CHECK(class_stats(cls).used_blocks == used - 39);
		CHECK(foreign[0] == 0);
		CHECK(foreign[1] == 0);
		// The rest of the blocks home, then all of them out again: none twice,
		// the lost one never.
		std::vector<void *> rest;
		for (void *p : got)
			if (std::find(v.begin(), v.end(), p) == v.end())
				rest.push_back(p);
		for (size_t i = 0; i < rest.size(); i += k.batch - 1)
			flush(cpu, cls, std::vector<void *>(rest.begin() + i, rest.begin() + std::min(rest.size(), i + k.batch - 1)));
		CHECK(class_stats(cls).used_blocks == used - (got.size() - 1));
		std::set<void *> out;
		size_t want = got.size() - 1;
		while (out.size() < want) {
			std::vector<void *> b = refill(cpu, cls, (unsigned)std::min<size_t>(k.batch, want - out.size()), false);
			REQUIRE(!b.empty());
			for (void *p : b) {
				REQUIRE(out.insert(p).second);
				REQUIRE(p != lost);
			}
		}
		((uint64_t *)lost)[1] = freelist_mark_of(lost, freelist_mark);
		std::vector<void *> back(out.begin(), out.end());
		back.push_back(lost);
		for (size_t i = 0; i < back.size(); i += k.batch - 1)
			flush(cpu, cls, std::vector<void *>(back.begin() + i, back.begin() + std::min(back.size(), i + k.batch - 1)));
		CHECK(report_count() == reports + 2);
		CHECK(class_stats(cls).used_blocks == used - got.size());
		central_drain(false, nullptr);
		unit_option("on_error", "abort");
	}
}

// A window that opens with a whole one-page span in address order, every
// block of it out (a reverse-order flush of a batch carved in order), is
// taken without a link written (release_whole_span): each block's mark is
// tested and turned into its span mark once, and the span leaves at once.
// A block listed twice (after the span, or in place of the next block) or
// one with a forged mark cuts the fast form: the blocks before it go home
// as a run, the bad one is reported and dropped, the rest come home, and no
// block is handed out twice (the forged one never). A span not all out (a
// block of it home already, listed again) takes the run form: the same
// blocks come home and the same one is reported.
TEST_CASE("a whole span flushed in address order leaves unlinked, a block listed twice or forged is reported",
	  "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(32);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages == 1);
	REQUIRE(k.blocks == 128); // one window's worth (RELEASE_CHUNK)
	const unsigned cpu = 12;
	for (int mode = 0; mode < 5; mode++) {
		std::vector<void *> held, t;
		span_t *s = nullptr;
		std::vector<void *> mine = span_out_before_flush(cpu, cls, 1, &held, &s, &t);
		std::vector<void *> v = mine;
		void *bad = nullptr, *missing = nullptr;
		if (mode == 1) { // mine[5] listed again after the span
			bad = mine[5];
			v.push_back(bad);
		} else if (mode == 2) { // mine[63] in place of mine[64], which stays out
			bad = mine[63];
			missing = mine[64];
			v[64] = bad;
		} else if (mode == 3) { // mine[100]'s bin mark forged
			bad = mine[100];
			((uint64_t *)bad)[1] = 0x4141414141414141ull;
		} else if (mode == 4) { // mine[5] home already: s is not all out
			bad = mine[5];
			flush(cpu, cls, std::vector<void *>{bad});
			REQUIRE(span_free_count(s) == 1);
		}
		v.push_back(t[0]); // the last block: a window of its own
		uint64_t used = class_stats(cls).used_blocks;
		uint64_t reports = report_count();
		flush(cpu, cls, v);
		CHECK(report_count() == reports + (mode != 0));
		uint64_t home = k.blocks + 1 - (mode >= 2);
		CHECK(class_stats(cls).used_blocks == used - home);
		if (mode <= 1 || mode == 4) {
			CHECK(s->state != SPAN_CENTRAL); // all home: retired
			// No link written, but where the span was not all out
			// (the blocks went home as runs).
			CHECK((((void **)mine[7])[0] == nullptr) == (mode != 4));
			CHECK(((uint64_t *)mine[7])[1] == freelist_span_mark_of(mine[7], freelist_mark));
		} else {
			REQUIRE(s->state == SPAN_CENTRAL);
			const size_t back_n = (size_t)k.blocks - 1;
			CHECK(span_free_count(s) == back_n);
			if (mode == 3)
				CHECK(((uint64_t *)bad)[1] == 0x4141414141414141ull);
			// Every block on s's list is handed out once; the forged
			// one and the one still out never.
			std::vector<void *> back = refill_each_once(cpu, cls, back_n, missing, mode == 3 ? bad : nullptr);
			CHECK(span_free_count(s) == 0);
			if (missing)
				back.push_back(missing);
			flush_to_spans(cls, back);
			if (mode == 2)
				CHECK(s->state != SPAN_CENTRAL); // all home
			else
				CHECK(s->used == 1); // the forged block, dropped, stays counted out
		}
		CHECK(report_count() == reports + (mode != 0));
		flush_to_spans(cls, blocks_not_in(held, mine));
		central_drain(false, nullptr);
	}
	unit_option("on_error", "abort");
}

// A window holds two whole one-page spans of 64-byte blocks (64 each, the
// window 128): release_whole_span takes the second after the first in the
// same call, both retired with no link written. A forged bin mark in the
// second cuts its fast form there: the blocks before it go home as a run,
// the forged one is reported and dropped with its mark as it was, the rest
// come home, and a refill of the second span's blocks hands each out once
// and the forged one never.
TEST_CASE("two whole spans in one window both leave unlinked, a forged block in the second is reported",
	  "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(64);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages == 1);
	REQUIRE(k.blocks == 64); // two spans a window (RELEASE_CHUNK)
	const unsigned cpu = 13;
	for (int mode = 0; mode < 2; mode++) {
		central_drain(false, nullptr);
		std::vector<void *> held;
		std::vector<void *> a = one_span_out(cpu, cls, &held);
		std::vector<void *> b = one_span_out(cpu, cls, &held);
		span_t *sa = nullptr, *sb = nullptr;
		const char *why;
		REQUIRE(block_lookup(a[0], &sa, &why) == cls);
		REQUIRE(block_lookup(b[0], &sb, &why) == cls);
		REQUIRE(sa != sb);
		std::vector<void *> t = refill(cpu, cls, 1, false);
		REQUIRE(t.size() == 1);
		fill_transfer_stack(cpu, cls);
		std::vector<void *> v = a;
		v.insert(v.end(), b.begin(), b.end());
		void *forged = b[40];
		if (mode == 1)
			((uint64_t *)forged)[1] = 0x4141414141414141ull;
		v.push_back(t[0]); // the last block: a window of its own
		uint64_t used = class_stats(cls).used_blocks;
		uint64_t reports = report_count();
		flush(cpu, cls, v);
		CHECK(report_count() == reports + mode);
		CHECK(class_stats(cls).used_blocks == used - (2 * k.blocks + 1 - mode));
		CHECK(sa->state != SPAN_CENTRAL);
		CHECK(((void **)a[7])[0] == nullptr);
		CHECK(((uint64_t *)a[7])[1] == freelist_span_mark_of(a[7], freelist_mark));
		if (mode == 0) {
			CHECK(sb->state != SPAN_CENTRAL);
			CHECK(((void **)b[7])[0] == nullptr);
			CHECK(((uint64_t *)b[50])[1] == freelist_span_mark_of(b[50], freelist_mark));
		} else {
			REQUIRE(sb->state == SPAN_CENTRAL);
			const size_t back_n = (size_t)k.blocks - 1;
			CHECK(span_free_count(sb) == back_n);
			CHECK(((uint64_t *)forged)[1] == 0x4141414141414141ull);
			std::vector<void *> out = refill_each_once(cpu, cls, back_n, forged, nullptr);
			CHECK(span_free_count(sb) == 0);
			flush_to_spans(cls, out);
			CHECK(sb->used == 1); // the forged block, dropped, stays counted out
		}
		CHECK(report_count() == reports + mode);
		std::vector<void *> mine = a;
		mine.insert(mine.end(), b.begin(), b.end());
		flush_to_spans(cls, blocks_not_in(held, mine));
		central_drain(false, nullptr);
	}
	unit_option("on_error", "abort");
}

// The stats identity (a quiescent heap: no thread cache holds anything).
static void check_stats_identity()
{
	struct ebb_stats st;
	stats_tcache_t none = {0, 0, 0, 0};
	stats_collect(&st, &none);
	CHECK(st.mapped == st.allocated + st.tcache + st.central + st.dirty + st.purged + st.metadata + st.waste);
}

// One block of cls refilled on cpu and kept in *held: its span, or nullptr
// if the refill gave none.
static span_t *take_block(unsigned cpu, unsigned cls, std::vector<void *> *held)
{
	std::vector<void *> one = refill(cpu, cls, 1, false);
	if (one.size() != 1)
		return nullptr;
	held->push_back(one[0]);
	span_t *s = nullptr;
	const char *why;
	REQUIRE(block_lookup(one[0], &s, &why) == cls);
	return s;
}

// Blocks of a one-page class cls taken on cpu (into *held) until a carve
// stashes its cut's other 7 spans (the list may hold partial spans from
// earlier cases first), from a heap with no dirty page and no stash: the
// list.
static central_t *fill_stash(unsigned cpu, unsigned cls, std::vector<void *> *held)
{
	background_tick(os_now_ns(), true); // ebb_trim's pass
	REQUIRE(stashed(cls) == 0);
	span_t *s = take_block(cpu, cls, held);
	REQUIRE(s != nullptr);
	central_t *c = s->u.central.home;
	for (int i = 0; i < 100000 && c->nstash == 0; i++)
		REQUIRE(take_block(cpu, cls, held) != nullptr);
	REQUIRE(c->nstash == 7);
	return c;
}

// Issue 13: while the program grows, a carve for a one-page class takes a
// cut of several spans from the page heap (page_heap_alloc_n) and stashes
// those it does not carve: homed and counted in `spans`, their blocks free,
// their pages untouched and counted as given back (not resident), without
// class. Refills carve them in the order single cuts would have handed them
// out (the highest address first); the purge pass of an idle list and
// ebb_trim give them back whole, as purged runs that read zero.
TEST_CASE("a growing one-page class stashes its cut's other spans, carves them in order, gives them back whole",
	  "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(80);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages == 1);
	const unsigned cpu = 6;
	auto identity = check_stats_identity;
	auto pages_out = [] {
		uint64_t out, calls, bytes;
		central_purge_stats(&out, &calls, &bytes);
		return out;
	};
	// ebb_trim's pass: no dirty page anywhere, no stash, so the page heaps
	// grow from purged runs.
	auto trim = [] { background_tick(os_now_ns(), true); };
	std::vector<void *> held;
	const char *why;
	auto take_one = [&] {
		span_t *s = take_block(cpu, cls, &held);
		REQUIRE(s != nullptr);
		return s;
	};
	central_t *c = fill_stash(cpu, cls, &held);
	span_t *carved = nullptr; // the span the stashing carve took: the block taken last
	REQUIRE(block_lookup(held.back(), &carved, &why) == cls);
	identity();
	uint64_t out0 = pages_out();
	CHECK(out0 >= 7);
	// The stash: right below the span carved, from the highest down, each
	// homed here and untouched, its pages without class.
	superblock_t *sb = span_superblock(carved);
	std::vector<span_t *> stash;
	lock_acquire(&c->lock);
	for (span_t *s = c->stash; s != nullptr; s = s->next)
		stash.push_back(s);
	lock_release(&c->lock);
	REQUIRE(stash.size() == 7);
	for (size_t i = 0; i < stash.size(); i++) {
		span_t *s = stash[i];
		INFO("stashed span " << i);
		CHECK(span_superblock(s) == sb);
		CHECK(s->page + 1 + i == carved->page);
		CHECK(s->state == SPAN_CENTRAL);
		CHECK(s->u.central.home == c);
		CHECK(s->cls == cls);
		CHECK(s->used == 0);
		CHECK(s->in_partial == 0);
		CHECK(s->zeroed == 1);
		CHECK(s->u.central.withheld == k.blocks);
		CHECK(s->u.central.given_back == 1);
		CHECK(pmap_class(pmap_load(sb, s->page)) == 0);
		span_t *found;
		CHECK(block_lookup(span_start(sb, s), &found, &why) == 0); // free() rejects it
	}
	// Carved in that order: each carve pops the next one.
	for (size_t i = 0; i < 3; i++) {
		span_t *s = nullptr;
		for (unsigned j = 0; j < k.blocks && c->nstash == 7 - i; j++)
			s = take_one();
		REQUIRE(c->nstash == 6 - i);
		CHECK(s == stash[i]);
		CHECK(pmap_class(pmap_load(sb, s->page)) == cls);
		CHECK(pages_out() == out0 - 1 - i);
	}
	identity();
	// The purge pass of an idle list gives the rest back whole: purged runs
	// that read zero.
	unit_option("decay_ms", "0");
	uint64_t spans = class_stats(cls).spans;
	central_purge_tick(false); // the list changed since the last look
	central_purge_tick(false); // unchanged for decay_ms (0) since
	unit_option("decay_ms", "-1");
	CHECK(c->nstash == 0);
	CHECK(class_stats(cls).spans == spans - 4);
	CHECK(pages_out() == out0 - 7);
	for (size_t i = 3; i < stash.size(); i++) {
		// The run that holds its page (merged with its purged neighbours).
		span_t *run = nullptr;
		for (unsigned p = sb->first_page; p <= stash[i]->page; p += run->npages)
			run = superblock_span_at(sb, p);
		INFO("stashed span " << i);
		CHECK(run->page + run->npages > stash[i]->page);
		CHECK(run->state == SPAN_FREE_PURGED);
		CHECK(run->zeroed == 1);
		CHECK(pmap_class(pmap_load(sb, stash[i]->page)) == 0);
	}
	identity();
	// Filled again, ebb_trim's pass empties it as well.
	trim();
	for (int i = 0; i < 100000 && c->nstash == 0; i++)
		take_one();
	REQUIRE(c->nstash != 0);
	identity();
	trim();
	CHECK(c->nstash == 0);
	identity();
	flush(cpu, cls, held);
	central_drain(false, nullptr);
	identity();
}

// Out of memory with a stash held: a carve that the page heaps cannot serve
// (every heap's runs taken, no mapping allowed) gives every list's stash
// back and takes its span from those pages, wherever their heap is
// (central.c, carve_oom), instead of failing with ENOMEM while a stash of
// another class keeps untouched pages.
TEST_CASE("a carve with no memory left takes its span from another class's stash", "[central]")
{
	warn_without_timers();
	unsigned a_cls = size_class_of(80), b_cls = size_class_of(112);
	REQUIRE(a_cls != b_cls);
	REQUIRE(size_classes[a_cls].pages == 1);
	REQUIRE(size_classes[b_cls].pages == 1);
	const unsigned cpu = 6;
	std::vector<void *> held_a, held_b;
	central_t *a = fill_stash(cpu, a_cls, &held_a); // and no stash elsewhere
	REQUIRE(stashed(b_cls) == 0);
	std::set<span_t *> stash;
	lock_acquire(&a->lock);
	for (span_t *t = a->stash; t != nullptr; t = t->next)
		stash.insert(t);
	lock_release(&a->lock);

	// No new mapping from here on, and every page the heaps hold taken.
	os_fault_set(OS_FAULT_MAP, 0, 1000000);
	std::vector<span_t *> taken;
	for (unsigned i = 0; i < page_heap_count(); i++) {
		page_heap_t *h = page_heap_peek(i);
		if (h == nullptr)
			continue;
		for (size_t pages = 1024; pages >= 1; pages /= 2)
			while (span_t *t = page_heap_alloc(h, pages, 1, SPAN_LARGE))
				taken.push_back(t);
	}
	REQUIRE(a->nstash == 7); // the stash is not the page heaps'

	// Class b takes blocks until a carve has to find pages: its span is one
	// of a's stash, and every stash went back.
	span_t *got = nullptr;
	errno = 0;
	for (int i = 0; i < 100000 && got == nullptr; i++) {
		span_t *t = take_block(cpu, b_cls, &held_b);
		REQUIRE(t != nullptr); // never ENOMEM while a stash holds pages
		if (stash.count(t) != 0)
			got = t;
	}
	os_fault_set(OS_FAULT_MAP, 0, 0);
	REQUIRE(got != nullptr);
	CHECK(a->nstash == 0);
	CHECK(stashed(a_cls) == 0);
	CHECK(got->state == SPAN_CENTRAL);
	CHECK(got->cls == b_cls);

	for (span_t *t : taken)
		page_heap_free(t);
	flush(cpu, a_cls, held_a);
	flush(cpu, b_cls, held_b);
	central_drain(false, nullptr);
	check_stats_identity();
}

// The stash serves growth only: once a heap holds dirty pages that fit, a
// carve takes those (as it would with no stash) and the stash stays as it
// is, untouched (bench request's peak rose 7% when fresh stashed pages were
// faulted in beside dirty ones).
TEST_CASE("a carve takes dirty pages before its list's stash", "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(80);
	REQUIRE(size_classes[cls].pages == 1);
	const unsigned cpu = 6;
	std::vector<void *> held;
	central_t *c = fill_stash(cpu, cls, &held);
	span_t *next = c->stash;
	REQUIRE(page_heap_growing(1));

	// Dirty pages: a run taken and given back (dirty, not purged: decay off).
	page_heap_t *h = page_heap_for_cpu(cpu);
	span_t *run = page_heap_alloc(h, 4, 1, SPAN_LARGE);
	REQUIRE(run != nullptr);
	page_heap_free(run);
	REQUIRE_FALSE(page_heap_growing(1));

	// Blocks until the next carve: its span is not the stash's.
	span_t *first = nullptr;
	size_t before = held.size();
	for (int i = 0; i < 100000; i++) {
		span_t *s = take_block(cpu, cls, &held);
		REQUIRE(s != nullptr);
		if (s->u.central.home == c && s->used == 1 && held.size() > before + 1) {
			first = s;
			break;
		}
	}
	REQUIRE(first != nullptr);
	CHECK(first != next);
	CHECK(c->nstash == 7);
	CHECK(c->stash == next);

	background_tick(os_now_ns(), true); // ebb_trim's pass: the stash goes back
	CHECK(c->nstash == 0);
	flush(cpu, cls, held);
	central_drain(false, nullptr);
}

// Issue 13 (larson t=2): a thread cache's first refills
// (central_refill_fresh) take a new span while the page heaps hold dirty
// pages that fit, not the blocks of the list's partial spans or transfer
// batches, whose lines other threads' live blocks share; with no dirty page
// (a growing heap) they take what the list holds, as central_refill does.
TEST_CASE("a first refill takes a new span from dirty pages, else the list's batch", "[central]")
{
	warn_without_timers();
	unsigned cls = size_class_of(48);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages == 1);
	REQUIRE(k.blocks > 4);
	const unsigned cpu = 5;
	background_tick(os_now_ns(), true); // ebb_trim's pass: no dirty page, no batch
	std::vector<void *> held;
	span_t *part = take_block(cpu, cls, &held);
	REQUIRE(part != nullptr);
	central_t *c = part->u.central.home;
	// One batch on the list's transfer stack.
	std::vector<void *> batch = refill(cpu, cls, k.batch, false);
	REQUIRE(batch.size() == k.batch);
	unsigned full0 = TRANSFER_COUNT(atomic_load_u64(&c->full));
	flush(cpu, cls, batch);
	REQUIRE(TRANSFER_COUNT(atomic_load_u64(&c->full)) == full0 + 1);
	auto partial_spans = [&] {
		std::vector<std::pair<span_t *, uint32_t>> v;
		lock_acquire(&c->lock);
		for (span_t *s = c->partial; s != nullptr; s = s->next)
			v.emplace_back(s, s->used);
		lock_release(&c->lock);
		return v;
	};
	auto partial0 = partial_spans();
	REQUIRE_FALSE(partial0.empty());
	const char *why;

	// No dirty page: the batch, as central_refill would hand it out.
	REQUIRE(page_heap_growing(1));
	std::vector<void *> got(k.batch);
	REQUIRE(central_refill_fresh(cpu, cls, k.batch, got.data()) == k.batch);
	CHECK(TRANSFER_COUNT(atomic_load_u64(&c->full)) == full0);
	CHECK(std::set<void *>(got.begin(), got.end()) == std::set<void *>(batch.begin(), batch.end()));
	flush(cpu, cls, got);
	REQUIRE(TRANSFER_COUNT(atomic_load_u64(&c->full)) == full0 + 1);

	// Dirty pages: a run taken and given back (dirty, not purged: decay off).
	page_heap_t *h = page_heap_for_cpu(cpu);
	span_t *run = page_heap_alloc(h, 4, 1, SPAN_LARGE);
	REQUIRE(run != nullptr);
	page_heap_free(run);
	REQUIRE_FALSE(page_heap_growing(1));
	std::vector<void *> fresh(4);
	REQUIRE(central_refill_fresh(cpu, cls, 4, fresh.data()) == 4);
	span_t *s = nullptr;
	REQUIRE(block_lookup(fresh[0], &s, &why) == cls);
	for (void *p : fresh) {
		span_t *t = nullptr;
		CHECK(block_lookup(p, &t, &why) == cls);
		CHECK(t == s);
	}
	CHECK(s->used == 4); // a new span: only these blocks out
	CHECK(s->u.central.home == c);
	for (auto &ps : partial0)
		CHECK(ps.first != s);
	CHECK(TRANSFER_COUNT(atomic_load_u64(&c->full)) == full0 + 1); // the batch waits
	// The partial spans gave nothing.
	auto partial1 = partial_spans();
	for (auto &ps : partial0) {
		auto at = std::find_if(partial1.begin(), partial1.end(), [&](auto &q) { return q.first == ps.first; });
		REQUIRE(at != partial1.end());
		CHECK(at->second == ps.second);
	}
	held.insert(held.end(), fresh.begin(), fresh.end());
	flush(cpu, cls, held);
	central_drain(false, nullptr);
	check_stats_identity();
}

// Transfer nodes: the lists of a slot take each new node from the slot's
// one array, the next one, whatever their classes' batch sizes (central.h,
// central_node_at): nodes made by different lists are distinct and do not
// overlap, and they lie side by side in the order they were made.
TEST_CASE("the transfer nodes a slot's lists make are the slot's next, never shared", "[central]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	const size_t sizes[] = { 16, 48, 256, 1024, 4096, 32768 };
	std::vector<unsigned> nodes;
	for (size_t size : sizes) {
		unsigned cls = size_class_of(size);
		const size_class_t &k = size_classes[cls];
		// Three batches, flushed: each becomes a full node of the list.
		std::vector<void *> blocks = refill(0, cls, 3u * k.batch, false);
		REQUIRE(blocks.size() == 3u * k.batch);
		central_t *c = central_list_at(cls);
		REQUIRE(c != nullptr);
		flush(0, cls, blocks);
		CHECK(TRANSFER_COUNT(atomic_load_u64(&c->full)) >= 3u);
		for (unsigned top = TRANSFER_TOP(atomic_load_u64(&c->full)); top != 0;
		     top = central_node_at(c, top - 1)->next) {
			uintptr_t a = (uintptr_t)central_node_at(c, top - 1);
			CHECK(a % alignof(transfer_node_t) == 0);
			CHECK(a >= (uintptr_t)c->node_base);
			nodes.push_back(top - 1);
		}
		if (cls != size_class_of(16))
			CHECK(c->node_base == central_list_at(size_class_of(16))->node_base);
	}
	std::sort(nodes.begin(), nodes.end());
	CHECK(std::adjacent_find(nodes.begin(), nodes.end()) == nodes.end());
	// Side by side: the nodes made so far are the slot's first ones.
	uint32_t made = *(uint32_t *)(central_list_at(size_class_of(16))->node_base - EBB_CACHELINE);
	CHECK(nodes.back() < made);
	central_drain(false, nullptr);
}
