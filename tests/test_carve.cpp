// The lazy carve (core/blocks/central.c span_carve, central_purge.c): a span
// of several pages that reads as zero is carved only up to the blocks a
// refill needs; its other pages stay untouched, count as given back and have
// no page class until a refill carves them, a few pages at a time.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <vector>

#include <sys/resource.h>

#include "core/blocks/block.h"
#include "core/blocks/central.h"
#include "core/blocks/freelist.h"
#include "core/blocks/size_class.h"
#include "core/pages/page_heap.h"
#include "core/pages/superblock.h"
#include "core/process/background.h"
#include "core/runtime/report.h"
#include "tcache/tcache.h"
#include "tests/support/unit.h"

// A sanitizer's shadow memory faults in beside the allocator's pages.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

namespace {

std::vector<void *> take(unsigned cpu, unsigned cls, unsigned want)
{
	std::vector<void *> v(want);
	unsigned n = central_refill(cpu, cls, want, false, v.data());
	v.resize(n);
	return v;
}

uint64_t pages_out()
{
	uint64_t pages, calls, bytes;
	central_purge_stats(&pages, &calls, &bytes);
	return pages;
}

uint64_t low_bits(unsigned n)
{
	return n >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1;
}

// Carves spans of cls on cpu, one block at a time, until a block is the
// first of a span carved lazily from zeroed pages (the page heaps purged
// first, so the next carve gets purged or fresh pages); *held gets every
// block taken.
span_t *lazy_span(unsigned cpu, unsigned cls, std::vector<void *> *held)
{
	for (unsigned i = 0; i < page_heap_count(); i++)
		page_heap_decay(page_heap_get(i), os_fake_now(), true);
	const size_class_t &k = size_classes[cls];
	for (int tries = 0; tries < 64; tries++) {
		std::vector<void *> v = take(cpu, cls, 1);
		REQUIRE(v.size() == 1);
		held->push_back(v[0]);
		span_t *s = nullptr;
		const char *why;
		REQUIRE(block_lookup(v[0], &s, &why) == cls);
		superblock_t *sb = span_superblock(s);
		if (v[0] == span_start(sb, s) && s->u.central.withheld == k.blocks - 1)
			return s;
	}
	FAIL("no span of the class was carved lazily");
	return nullptr;
}

// Every test here: no background thread or decay to move pages under it,
// the 8 KiB class (16-page spans of 8 blocks), refilled on CPU slot 3,
// which no other test refills from; the transfer batches back in their
// spans first.
const unsigned cpu = 3;

unsigned carve_setup()
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	central_drain(false, nullptr);
	return size_class_of(8192);
}

// free() of p, a block start of class cls that is not out: reported, and
// whatever malloc then hands out of the class (returned) is not p. The
// thread cache refills from another CPU slot than the tests' own.
std::vector<void *> forged_free_refused(unsigned cls, void *p)
{
	const size_class_t &k = size_classes[cls];
	os_fake_set_cpu(0);
	uint64_t reports = report_count();
	tcache_free(p);
	CHECK(report_count() == reports + 1);
	std::vector<void *> mine;
	for (unsigned i = 0; i < 2 * k.blocks; i++) {
		void *q = tcache_alloc(k.size);
		REQUIRE(q != nullptr);
		CHECK(q != p);
		mine.push_back(q);
	}
	return mine;
}

// Gives back what a test took: `held` straight to the spans of cls on the
// tests' CPU slot, `mine` through the thread cache.
void give_back(unsigned cls, const std::vector<void *> &held, const std::vector<void *> &mine)
{
	for (void *b : held)
		central_flush(cpu, cls, (void **)&b, 1);
	for (void *q : mine)
		tcache_free(q);
	central_drain(false, nullptr);
	unit_option("on_error", "abort");
}

} // namespace

TEST_CASE("a lazy carve leaves a fresh span's other pages untouched and without class, carved a batch at a time",
	  "[central]")
{
	unsigned cls = carve_setup();
	unit_option("on_error", "warn");
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.size == 8192);
	REQUIRE(k.blocks == 8);
	REQUIRE(k.pages == 16);
	std::vector<void *> held;
	uint64_t out0 = pages_out();
	span_t *s = lazy_span(cpu, cls, &held);
	superblock_t *sb = span_superblock(s);
	char *base = (char *)span_start(sb, s);
	// Block 0 (pages 0 and 1) is out; pages 2..15 were never touched.
	CHECK(s->u.central.given_back == (low_bits(16) & ~low_bits(2)));
	CHECK(span_free_count(s) == 0);
	CHECK(pages_out() == out0 + 14);
	for (unsigned i = 0; i < 16; i++)
		CHECK(pmap_class(pmap_load(sb, s->page + i)) == (i < 2 ? cls : 0));
	span_t *t;
	const char *why;
	for (unsigned i = 1; i < 8; i++)
		CHECK(block_lookup(base + (size_t)i * k.size, &t, &why) == 0);

	// The next refill carves the next block only: pages 2 and 3.
	std::vector<void *> v = take(cpu, cls, 1);
	REQUIRE(v.size() == 1);
	CHECK(v[0] == base + k.size);
	held.push_back(v[0]);
	CHECK(s->u.central.given_back == (low_bits(16) & ~low_bits(4)));
	CHECK(s->u.central.withheld == 6);
	CHECK(pages_out() == out0 + 12);
	CHECK(pmap_class(pmap_load(sb, s->page + 3)) == cls);
	CHECK(pmap_class(pmap_load(sb, s->page + 4)) == 0);

	// A wild write into a block not carved yet: reported when its pages
	// are carved, and the block never handed out.
	char *wild = base + 2 * k.size;
	((uint64_t *)wild)[0] = 0x1234;
	uint64_t reports = report_count();
	v = take(cpu, cls, 1);
	REQUIRE(v.size() == 1);
	CHECK(report_count() == reports + 1);
	CHECK(v[0] == base + 3 * k.size);
	held.push_back(v[0]);

	// The rest in one refill: every block distinct, the span whole.
	v = take(cpu, cls, 8);
	REQUIRE(v.size() == 4);
	held.insert(held.end(), v.begin(), v.end());
	CHECK(s->u.central.given_back == 0);
	CHECK(s->u.central.withheld == 0);
	CHECK(pages_out() == out0);
	std::set<void *> distinct(held.begin(), held.end());
	CHECK(distinct.size() == held.size());
	CHECK(distinct.count(wild) == 0);
	for (void *b : held)
		central_flush(cpu, cls, &b, 1);
	central_drain(false, nullptr);
	unit_option("on_error", "abort");
}

// The attack a lazy carve must not open: free() of a block start that was
// never carved. The block reads zero; had free taken it into a bin, malloc
// would hand it out (its mark cleared, so it reads zero again) and the
// refill that carves its page would find it "untouched" and hand it out a
// second time. Its page has no class, so free rejects it, and a flush that
// carries it (a forged bin mark) is rejected too.
TEST_CASE("a forged free of a block the lazy carve has not carved is reported and the block handed out once",
	  "[central]")
{
	unsigned cls = carve_setup();
	unit_option("on_error", "warn");
	const size_class_t &k = size_classes[cls];
	std::vector<void *> held;
	span_t *s = lazy_span(cpu, cls, &held);
	char *base = (char *)span_start(span_superblock(s), s);
	char *p = base + 3 * k.size; // not carved
	REQUIRE(((uint64_t *)p)[0] == 0);
	REQUIRE(((uint64_t *)p)[1] == 0);

	uint64_t reports = report_count();
	std::vector<void *> mine = forged_free_refused(cls, p);
	// A flush of p with the bin mark a forger would write: rejected,
	// nothing linked through it.
	((uint64_t *)p)[1] = freelist_mark_of(p, freelist_mark);
	central_flush(cpu, cls, (void **)&p, 1);
	CHECK(report_count() == reports + 2);
	CHECK(((uint64_t *)p)[0] == 0);
	// The copy a bin would have handed out reads zero again.
	((uint64_t *)p)[1] = 0;
	// The rest of the span: p comes out exactly once.
	std::vector<void *> v = take(cpu, cls, 8);
	held.insert(held.end(), v.begin(), v.end());
	CHECK(std::count(held.begin(), held.end(), (void *)p) == 1);
	CHECK(std::count(mine.begin(), mine.end(), (void *)p) == 0);
	std::set<void *> distinct(held.begin(), held.end());
	CHECK(distinct.size() == held.size());
	CHECK(report_count() == reports + 2);
	give_back(cls, held, mine);
}

// Dirty pages are resident anyway: a span carved from them lists every
// block at once, as before.
TEST_CASE("a span carved from dirty pages is carved whole", "[central]")
{
	unsigned cls = carve_setup();
	const size_class_t &k = size_classes[cls];
	std::vector<void *> held;
	span_t *s = lazy_span(cpu, cls, &held);
	std::vector<void *> v = take(cpu, cls, 8);
	held.insert(held.end(), v.begin(), v.end());
	REQUIRE(s->used == (k.blocks | CENTRAL_USED_FULL)); // full: off the partial list
	// Every block of s back: s goes to the page heap, dirty.
	superblock_t *sb = span_superblock(s);
	unsigned page = s->page;
	std::vector<void *> rest;
	for (void *b : held) {
		span_t *t = nullptr;
		const char *why;
		if (block_lookup(b, &t, &why) == cls && t == s)
			central_flush(cpu, cls, &b, 1);
		else
			rest.push_back(b);
	}
	REQUIRE(pmap_class(pmap_load(sb, page)) == 0);
	// The next carve may take those pages again (the newest dirty run):
	// if it does, the span is carved whole.
	v = take(cpu, cls, 1);
	REQUIRE(v.size() == 1);
	span_t *n = nullptr;
	const char *why;
	REQUIRE(block_lookup(v[0], &n, &why) == cls);
	if (n->page == page && span_superblock(n) == sb) {
		CHECK(n->u.central.withheld == 0);
		CHECK(n->u.central.given_back == 0);
		CHECK(span_free_count(n) == k.blocks - 1u);
	}
	rest.push_back(v[0]);
	for (void *b : rest)
		central_flush(cpu, cls, &b, 1);
	central_drain(false, nullptr);
}

// A refill that carves pages given back (here: never touched) faults each
// block's page in once: its first touch is a write. Reading the block first
// (the check that it still reads zero) mapped the kernel's shared zero page,
// and writing the link then faulted a second time to replace it.
TEST_CASE("a refill faults the pages it carves lazily in once, not twice", "[central]")
{
	unsigned cls = carve_setup();
	const size_class_t &k = size_classes[cls];
	std::vector<void *> held;
	held.reserve(16);
	span_t *s = lazy_span(cpu, cls, &held);
	REQUIRE(s->u.central.withheld == k.blocks - 1u);
	void *got[8];
	unsigned n = 0;
	struct rusage before, after;
	getrusage(RUSAGE_THREAD, &before);
	// One block (its first of two pages touched) per refill.
	for (unsigned i = 1; i < k.blocks; i++)
		n += central_refill(cpu, cls, 1, false, got + n);
	getrusage(RUSAGE_THREAD, &after);
	REQUIRE(n == k.blocks - 1u);
	long faults = after.ru_minflt - before.ru_minflt;
	INFO("page faults: " << faults);
	// Under a sanitizer the first writes to a block fault in its shadow
	// pages too (TSan: 21 faults here), which says nothing of the pages'.
	if (!SANITIZED)
		CHECK(faults <= (long)k.blocks - 1 + 2);
	else
		WARN("sanitizer build: " << faults << " faults with the shadow's, not checked");
	held.insert(held.end(), got, got + n);
	for (void *b : held)
		central_flush(cpu, cls, &b, 1);
	central_drain(false, nullptr);
}

namespace {

page_heap_stats_t heap_stats()
{
	page_heap_stats_t st{};
	page_heap_stats_add(&st);
	return st;
}

// The free run of sb whose last page is `last` (its boundary tag).
const span_t *run_ending_at(superblock_t *sb, unsigned last)
{
	return superblock_span_at(sb, pmap_first(pmap_load(sb, last)));
}

} // namespace

// A lazily carved span that empties before its later pages were carved:
// those pages go back to the page heap purged and reading as zero (they
// were never touched), not dirty; the stats count them as not resident
// before and after, and the pages read zero when a span is carved on them
// again.
TEST_CASE("an emptied lazy span gives its never-carved pages back as purged pages that read zero",
	  "[central]")
{
	unsigned cls = carve_setup();
	const size_class_t &k = size_classes[cls];
	std::vector<void *> held;
	span_t *s = lazy_span(cpu, cls, &held);
	superblock_t *sb = span_superblock(s);
	unsigned page = s->page;
	char *base = (char *)span_start(sb, s);
	REQUIRE(s->u.central.given_back == (low_bits(16) & ~low_bits(2)));
	// The others lazy_span took first back (they are in other spans).
	void *first = held.back();
	held.pop_back();
	for (void *b : held)
		central_flush(cpu, cls, &b, 1);
	central_drain(false, nullptr);

	page_heap_stats_t before = heap_stats();
	uint64_t out0 = pages_out();
	central_flush(cpu, cls, &first, 1); // s empties and is retired
	page_heap_stats_t after = heap_stats();
	CHECK(pmap_class(pmap_load(sb, page)) == 0);
	CHECK(before.central_pages - after.central_pages == 16);
	CHECK(after.dirty_pages - before.dirty_pages == 2);
	CHECK(after.purged_pages - before.purged_pages == 14);
	CHECK(out0 - pages_out() == 14);
	// Resident (central - given back inside spans + dirty) did not change.
	CHECK((before.central_pages - out0 + before.dirty_pages) ==
	      (after.central_pages - pages_out() + after.dirty_pages));
	// Pages 0-1 (block 0, written) a dirty run, 2-15 a purged one that
	// reads zero; no two runs of one kind side by side.
	const span_t *d = run_ending_at(sb, page + 1);
	CHECK(d->state == SPAN_FREE_DIRTY);
	CHECK(d->page + d->npages == page + 2);
	const span_t *p = superblock_span_at(sb, page + 2);
	CHECK(p->state == SPAN_FREE_PURGED);
	CHECK(p->page == page + 2);
	CHECK(p->npages >= 14);
	CHECK(p->zeroed == 1);
	for (size_t i = 2 * EBB_PAGE_SIZE; i < 16 * EBB_PAGE_SIZE; i += sizeof(uint64_t))
		REQUIRE(*(const uint64_t *)(base + i) == 0);

	// The next span of the class takes the same pages (the newest dirty
	// run and the purged one right of it): the dirty pages carved, the
	// others left to the lazy carve again; every block of those reads zero
	// past the two words the allocator writes.
	std::vector<void *> again = take(cpu, cls, 1);
	REQUIRE(again.size() == 1);
	CHECK(again[0] == base);
	span_t *n = nullptr;
	const char *why;
	REQUIRE(block_lookup(again[0], &n, &why) == cls);
	CHECK(n->page == page);
	CHECK(n->u.central.given_back == (low_bits(16) & ~low_bits(2)));
	CHECK(n->u.central.withheld == k.blocks - 1u);
	CHECK(pmap_class(pmap_load(sb, page + 2)) == 0);
	std::vector<void *> v = take(cpu, cls, k.blocks - 1);
	again.insert(again.end(), v.begin(), v.end());
	for (void *b : v) {
		if ((char *)b < base || (char *)b >= base + 16 * EBB_PAGE_SIZE)
			continue;
		for (size_t i = 16; i < k.size; i += sizeof(uint64_t))
			REQUIRE(*(const uint64_t *)((char *)b + i) == 0);
	}
	for (void *b : again)
		central_flush(cpu, cls, &b, 1);
	central_drain(false, nullptr);
}

// Pages the purge pass gave back from inside a span held blocks of the
// program before: when the span empties they go back purged (not
// resident), but not as reading zero, so that a carve or a calloc on them
// writes them whole.
TEST_CASE("an emptied span's pages given back by the purge pass go back purged, not as zero", "[central]")
{
	unsigned cls = carve_setup();
	const size_class_t &k = size_classes[cls];
	std::vector<void *> held;
	span_t *s = lazy_span(cpu, cls, &held);
	superblock_t *sb = span_superblock(s);
	unsigned page = s->page;
	void *first = held.back();
	held.pop_back();
	for (void *b : held)
		central_flush(cpu, cls, &b, 1);
	std::vector<void *> v = take(cpu, cls, k.blocks);
	std::vector<void *> mine, rest;
	for (void *b : v) {
		span_t *t = nullptr;
		const char *why;
		(block_lookup(b, &t, &why) == cls && t == s ? mine : rest).push_back(b);
	}
	REQUIRE(mine.size() == k.blocks - 1u);
	REQUIRE(s->u.central.given_back == 0);
	for (void *b : rest)
		central_flush(cpu, cls, &b, 1);
	// Blocks 1-7 free (written by the program), block 0 out: the pass
	// gives back pages 2-15.
	for (void *b : mine) {
		memset((char *)b + 16, 0x5a, k.size - 16); // word 1 holds its bin mark
		central_flush(cpu, cls, &b, 1);
	}
	central_drain(false, nullptr);
	central_purge_tick(true);
	REQUIRE(s->u.central.given_back == (low_bits(16) & ~low_bits(2)));
	page_heap_stats_t before = heap_stats();
	central_flush(cpu, cls, &first, 1);
	page_heap_stats_t after = heap_stats();
	CHECK(after.dirty_pages - before.dirty_pages == 2);
	CHECK(after.purged_pages - before.purged_pages == 14);
	const span_t *p = superblock_span_at(sb, page + 2);
	CHECK(p->state == SPAN_FREE_PURGED);
	CHECK(p->page == page + 2);
	CHECK(p->zeroed == 0);
	central_drain(false, nullptr);
}

// A class whose blocks rarely start on a page boundary (2192 bytes: 13
// blocks on 7 pages, none but block 0 at a page start) is carved lazily
// too, up to the page boundary after the blocks wanted: the block across
// that boundary stays withheld, but starts on a page that has its class.
// It carries the span mark with a zero link, so a forged free of it is
// reported as a double free (were it taken into a bin, it would be handed
// out, read zero again and be relinked as well), and the refill that
// carves its pages takes it as untouched. Each refill faults in only the
// pages its blocks need, and every block comes out once.
TEST_CASE("a lazy carve of a class whose blocks cross page boundaries withholds the block across the cut",
	  "[central]")
{
	carve_setup();
	unsigned cls = size_class_of(2192);
	unit_option("on_error", "warn");
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.size == 2192);
	REQUIRE(k.pages == 7);
	REQUIRE(k.blocks == 13);
	std::vector<void *> held;
	uint64_t out0 = pages_out();
	span_t *s = lazy_span(cpu, cls, &held);
	superblock_t *sb = span_superblock(s);
	char *base = (char *)span_start(sb, s);
	// Block 0 is out; block 1 (pages 0-1) and the rest withheld, pages 1-6
	// never touched and without class.
	CHECK(s->u.central.given_back == (low_bits(7) & ~low_bits(1)));
	CHECK(s->u.central.withheld == 12);
	CHECK(span_free_count(s) == 0);
	CHECK(pages_out() == out0 + 6);
	CHECK(pmap_class(pmap_load(sb, s->page)) == cls);
	for (unsigned i = 1; i < 7; i++)
		CHECK(pmap_class(pmap_load(sb, s->page + i)) == 0);
	char *across = base + k.size; // block 1: starts on page 0
	CHECK(((uint64_t *)across)[0] == 0);
	CHECK(((uint64_t *)across)[1] == freelist_span_mark_of(across, freelist_mark));

	uint64_t reports = report_count();
	std::vector<void *> mine = forged_free_refused(cls, across);

	// The next refill carves page 1: block 1 out, block 2 (page 1 only)
	// listed, block 3 (pages 1-2) the next one across a cut, marked.
	std::vector<void *> v = take(cpu, cls, 1);
	REQUIRE(v.size() == 1);
	CHECK(v[0] == across);
	held.push_back(v[0]);
	CHECK(s->u.central.given_back == (low_bits(7) & ~low_bits(2)));
	CHECK(s->u.central.withheld == 10);
	CHECK(span_free_count(s) == 1);
	CHECK(pmap_class(pmap_load(sb, s->page + 1)) == cls);
	CHECK(pmap_class(pmap_load(sb, s->page + 2)) == 0);
	char *next = base + 3 * k.size;
	CHECK(((uint64_t *)next)[1] == freelist_span_mark_of(next, freelist_mark));

	// The rest: every block distinct, none of them handed out twice.
	v = take(cpu, cls, k.blocks);
	REQUIRE(v.size() == 11);
	held.insert(held.end(), v.begin(), v.end());
	CHECK(s->u.central.given_back == 0);
	CHECK(s->u.central.withheld == 0);
	CHECK(pages_out() == out0);
	CHECK(report_count() == reports + 1);
	std::set<void *> distinct(held.begin(), held.end());
	CHECK(distinct.size() == held.size());
	for (void *q : mine)
		CHECK(distinct.count(q) == 0);
	give_back(cls, held, mine);
}

// Scattered survivors whose freed blocks wait in transfer batches when the
// program goes idle (memreturn d): the background ticks send the batches
// home (central_drain, once the list has been idle a whole interval) and
// give back the free pages inside the spans decay_ms after the frees. The
// drain's own change of the list is no use by the program: before the look
// ahead of it (central_purge_observe) the wait started again at the drain,
// and the pages went back two drain intervals later (at 1 s here, not 500 ms).
TEST_CASE("the free pages inside spans go back decay_ms after the frees, the drain of their batches "
	  "restarting no wait",
	  "[central]")
{
	const uint64_t ms = 1000000;
	unit_option("background_thread", "0");
	unit_option("decay_ms", "500");
	central_drain(false, nullptr);
	unsigned cls = size_class_of(2048);
	const size_class_t &k = size_classes[cls];
	REQUIRE(k.pages >= 2);
	REQUIRE(k.blocks <= 64);
	// Earlier changes seen and settled.
	for (int i = 0; i < 8; i++) {
		os_fake_advance(250 * ms);
		background_tick(os_fake_now(), false);
	}
	std::vector<void *> kept, freed;
	for (unsigned i = 0; kept.size() + freed.size() < 16u * k.blocks; i++) {
		std::vector<void *> v = take(cpu, cls, k.batch);
		REQUIRE(!v.empty());
		for (void *b : v)
			((kept.size() + freed.size()) % 8 == 7 ? kept : freed).push_back(b);
	}
	// Freed a batch at a time: whole batches wait on the transfer stack.
	for (size_t i = 0; i + k.batch <= freed.size(); i += k.batch)
		central_flush(cpu, cls, freed.data() + i, k.batch);
	for (size_t i = freed.size() - freed.size() % k.batch; i < freed.size(); i++)
		central_flush(cpu, cls, &freed[i], 1);
	auto waiting = [&] {
		central_class_stats_t st[EBB_NUM_CLASSES] = {};
		uint64_t carved = 0, returned = 0;
		central_stats(st, &carved, &returned);
		return st[cls].transfer_blocks;
	};
	REQUIRE(waiting() > 0);
	uint64_t out0 = pages_out();
	// The frees' change seen; the list was busy, its batches stay.
	os_fake_advance(250 * ms);
	background_tick(os_fake_now(), false);
	CHECK(pages_out() == out0);
	// Idle a whole interval: the batches go home; 250 ms is not decay_ms.
	os_fake_advance(250 * ms);
	background_tick(os_fake_now(), false);
	CHECK(waiting() == 0);
	CHECK(pages_out() == out0);
	// decay_ms after the frees: the pages that only freed blocks touch
	// (three of every four pages of a 2 KiB class's span that keeps every
	// eighth block) go back.
	os_fake_advance(250 * ms);
	background_tick(os_fake_now(), false);
	CHECK(pages_out() - out0 >= 16u * k.pages / 2);
	for (void *b : kept)
		central_flush(cpu, cls, &b, 1);
	central_drain(false, nullptr);
}
