// The page heap, on its own heap instance with the fake os: splitting,
// coalescing, dirty-before-purged reuse, decay, superblock release, failures.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include <sys/mman.h>

#include "core/pages/page_heap.h"
#include "core/process/background.h"
#include "tests/api/child_util.h"
#include "tests/support/unit.h"

namespace {

const uint64_t MS = 1000000ull;

struct run_view {
	unsigned page, npages;
	int state;
	bool operator==(const run_view &o) const { return page == o.page && npages == o.npages && state == o.state; }
};

// The spans of a superblock, first page to last, as their descriptors say.
std::vector<run_view> runs_of(superblock_t *sb)
{
	std::vector<run_view> v;
	unsigned end = sb->first_page + sb->usable_pages;
	for (unsigned p = sb->first_page; p < end;) {
		span_t *s = superblock_span_at(sb, p);
		REQUIRE(s->page == p);
		REQUIRE(s->npages > 0);
		v.push_back({p, s->npages, s->state});
		p += s->npages;
	}
	return v;
}

struct heap_fixture {
	page_heap_t heap;
	heap_fixture()
	{
		unit_option("decay_ms", "-1");
		unit_option("background_thread", "0");
		unit_option("dirty_max", "1G");
		unit_option("unmap_delay_ms", "1000");
		page_heap_init(&heap, 0, os_fake_now());
	}
	span_t *alloc(size_t pages, size_t align_pages = 1)
	{
		span_t *s = page_heap_alloc(&heap, pages, align_pages, SPAN_LARGE);
		REQUIRE(s != nullptr);
		superblock_map_span(span_superblock(s), s->page, s->npages, 0);
		return s;
	}
	~heap_fixture()
	{
		// Give everything back so the next test starts from nothing.
		page_heap_release(&heap, os_fake_now(), true);
	}
};

} // namespace

TEST_CASE_METHOD(heap_fixture, "a fresh superblock is one purged run, allocation splits its end", "[page_heap]")
{
	span_t *a = alloc(10);
	superblock_t *sb = span_superblock(a);
	REQUIRE(heap.superblocks_count == 1);
	unsigned first = sb->first_page, usable = sb->usable_pages;
	REQUIRE(a->state == SPAN_LARGE);
	REQUIRE(a->zeroed == 1); /* fresh from mmap */
	REQUIRE(a->page == first + usable - 10);
	span_t *b = alloc(5);
	REQUIRE(b->page + 5 == a->page);
	std::vector<run_view> expect = {{first, usable - 15, SPAN_FREE_PURGED}, {b->page, 5, SPAN_LARGE},
					{a->page, 10, SPAN_LARGE}};
	REQUIRE(runs_of(sb) == expect);
	REQUIRE(heap.purged_pages == usable - 15);
	REQUIRE(heap.large_pages == 15);
	page_heap_free(a);
	page_heap_free(b);
}

// Issue 13: while no heap has dirty pages, a span of small blocks takes the
// tail of the smallest purged run that fits (alloc_grow_tail), as the full
// search did: the same pages, tags, zeroed flag and counts.
TEST_CASE_METHOD(heap_fixture, "a growing program's spans of small blocks split the smallest purged run's end",
		 "[page_heap]")
{
	unit_option("decay_ms", "100");
	page_heap_init(&heap, 0, os_fake_now());
	span_t *a = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	REQUIRE(a != nullptr);
	superblock_t *sb = span_superblock(a);
	unsigned first = sb->first_page, usable = sb->usable_pages;
	CHECK(a->page == first + usable - 1);
	std::vector<span_t *> spans = {a};
	for (int i = 1; i < 40; i++) {
		span_t *s = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
		REQUIRE(s != nullptr);
		CHECK(s->page + 1 == spans.back()->page);
		CHECK(s->state == SPAN_CENTRAL);
		CHECK(s->npages == 1);
		CHECK(s->zeroed == 1);
		CHECK(pmap_load(sb, s->page) == pmap_entry(s->page, 0));
		spans.push_back(s);
	}
	CHECK(heap.central_pages == 40);
	CHECK(heap.purged_pages == usable - 40);
	CHECK(heap.dirty_pages == 0);
	// The front run's last tag names its first page.
	CHECK(pmap_load(sb, first + usable - 41) == pmap_entry(first, 0));

	// A purged hole of 3 pages among the spans: the smallest run that fits
	// a 2-page span, taken at its end, before the long run.
	unsigned hole = spans[10]->page; // spans[10..12] are pages hole-2..hole
	page_heap_free(spans[10]);
	page_heap_free(spans[11]);
	page_heap_free(spans[12]);
	os_fake_advance(120 * MS);
	page_heap_decay(&heap, os_fake_now(), false);
	REQUIRE(heap.dirty_pages == 0);
	std::vector<run_view> before = runs_of(sb);
	span_t *t = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL);
	REQUIRE(t != nullptr);
	CHECK(t->page == hole - 1);
	CHECK(t->npages == 2);
	std::vector<run_view> after = runs_of(sb);
	CHECK(after.size() == before.size() + 1);
	span_t *left = superblock_span_at(sb, hole - 2);
	CHECK(left->page == hole - 2);
	CHECK(left->npages == 1);
	CHECK(left->state == SPAN_FREE_PURGED);
	CHECK(pmap_load(sb, hole - 2) == pmap_entry(hole - 2, 0));
	CHECK(heap.purged_pages == usable - 40 + 1);
	page_heap_free(t);
	for (size_t i = 0; i < spans.size(); i++)
		if (i < 10 || i > 12)
			page_heap_free(spans[i]);
}

// Issue 13: page_heap_alloc_n cuts n spans from the run's tail at once,
// the pages single cuts would have taken, the returned one the highest and
// the rest linked from its `next` down, each set up and counted as a single
// cut's; outside growth (a pending span fits) it hands out that one alone.
TEST_CASE_METHOD(heap_fixture, "a growing program's cut of several spans is what as many single cuts take",
		 "[page_heap]")
{
	page_heap_init(&heap, 0, os_fake_now());
	span_t *first_one = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	REQUIRE(first_one != nullptr);
	superblock_t *sb = span_superblock(first_one);
	unsigned first = sb->first_page, usable = sb->usable_pages;
	REQUIRE(first_one->page == first + usable - 1);

	span_t *top = page_heap_alloc_n(&heap, 1, 8);
	REQUIRE(top != nullptr);
	span_t *rest = top->next;
	REQUIRE(rest != nullptr);
	CHECK(top->page == first + usable - 2);
	std::vector<span_t *> cut = {top};
	for (span_t *s = rest; s != nullptr; s = s->next)
		cut.push_back(s);
	REQUIRE(cut.size() == 8);
	for (size_t i = 0; i < cut.size(); i++) {
		span_t *s = cut[i];
		INFO("span " << i);
		CHECK(s->page + 2 + i == first + usable); // the highest first
		CHECK(s->npages == 1);
		CHECK(s->state == SPAN_CENTRAL);
		CHECK(s->zeroed == 1); // fresh from mmap: reads zero
		CHECK(s->used == 0);
		CHECK(s->cls == 0);
		CHECK(s->in_partial == 0);
		CHECK(superblock_span_at(sb, s->page) == s);
		CHECK(pmap_load(sb, s->page) == pmap_entry(s->page, 0)); // no class yet
	}
	CHECK(heap.central_pages == 9);
	CHECK(heap.purged_pages == usable - 9);
	CHECK(heap.dirty_pages == 0);
	// The front run's last tag names its first page.
	CHECK(pmap_load(sb, first + usable - 10) == pmap_entry(first, 0));
	std::vector<run_view> expect = {{first, usable - 9, SPAN_FREE_PURGED}};
	for (unsigned p = first + usable - 9; p < first + usable; p++)
		expect.push_back({p, 1, SPAN_CENTRAL});
	CHECK(runs_of(sb) == expect);

	// Spans of two pages, four at once: eight pages from the tail on.
	span_t *two = page_heap_alloc_n(&heap, 2, 4);
	REQUIRE(two != nullptr);
	span_t *rest2 = two->next;
	CHECK(two->page == first + usable - 11);
	CHECK(two->npages == 2);
	unsigned n2 = 0;
	unsigned at = two->page;
	for (span_t *s = rest2; s != nullptr; s = s->next, n2++) {
		CHECK(s->npages == 2);
		CHECK(s->page + 2u == at);
		at = s->page;
	}
	CHECK(n2 == 3);
	CHECK(heap.central_pages == 17);

	// A span freed whole waits on the pending stack: a cut of the same
	// size takes it alone.
	page_heap_free(cut[3]);
	span_t *again = page_heap_alloc_n(&heap, 1, 8);
	CHECK(again == cut[3]);
	CHECK(again->next == nullptr);

	page_heap_free(two);
	for (span_t *s = rest2, *next; s != nullptr; s = next) {
		next = s->next;
		page_heap_free(s);
	}
	for (span_t *s : cut)
		page_heap_free(s);
	page_heap_free(first_one);
	CHECK(heap.central_pages == 0);
}

TEST_CASE_METHOD(heap_fixture, "freed spans coalesce with dirty neighbours left, right and both", "[page_heap]")
{
	span_t *a = alloc(4), *b = alloc(4), *c = alloc(4), *d = alloc(4);
	superblock_t *sb = span_superblock(a);
	unsigned pa = a->page, pb = b->page, pc = c->page, pd = d->page;
	REQUIRE(pd + 4 == pc);
	REQUIRE(pc + 4 == pb);
	REQUIRE(pb + 4 == pa);

	page_heap_free(a); // right end of the superblock: no right neighbour
	page_heap_free(c); // between b and d: no free neighbour
	REQUIRE(heap.dirty_pages == 8);
	REQUIRE(superblock_span_at(sb, pa)->state == SPAN_FREE_DIRTY);
	REQUIRE(superblock_span_at(sb, pc)->state == SPAN_FREE_DIRTY);

	page_heap_free(b); // both neighbours dirty: one run c..a
	REQUIRE(superblock_span_at(sb, pc)->state == SPAN_FREE_DIRTY);
	REQUIRE(superblock_span_at(sb, pc)->npages == 12);
	REQUIRE(superblock_span_at(sb, pb)->state == SPAN_NONE);
	REQUIRE(superblock_span_at(sb, pa)->state == SPAN_NONE);

	page_heap_free(d); // right neighbour dirty; left is purged: kinds never merge
	REQUIRE(superblock_span_at(sb, pd)->state == SPAN_FREE_DIRTY);
	REQUIRE(superblock_span_at(sb, pd)->npages == 16);
	REQUIRE(superblock_span_at(sb, sb->first_page)->state == SPAN_FREE_PURGED);
	REQUIRE(heap.dirty_pages == 16);
	// Boundary tags name the first page at both ends.
	REQUIRE(pmap_load(sb, pd) == pmap_entry(pd, 0));
	REQUIRE(pmap_load(sb, pd + 15) == pmap_entry(pd, 0));
}

// page_heap_free_spans frees a flush's emptied spans in one call: each goes
// back to its own heap (the lock it holds changes with the heap), merged and
// counted as page_heap_free would, and the list is walked to its end although
// each free relinks the span it frees (its `next` is a free run's list link).
TEST_CASE_METHOD(heap_fixture, "a list of emptied spans goes back to their heaps in one call", "[page_heap]")
{
	page_heap_t other;
	page_heap_init(&other, 1, os_fake_now());
	span_t *a = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL), *b = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL);
	span_t *guard = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	span_t *c = page_heap_alloc(&other, 3, 1, SPAN_CENTRAL), *d = page_heap_alloc(&heap, 5, 1, SPAN_CENTRAL);
	REQUIRE((a && b && guard && c && d));
	REQUIRE(span_superblock(c) != span_superblock(a));
	unsigned pb = b->page;
	REQUIRE(pb + 2 == a->page);
	REQUIRE(heap.central_pages == 10);
	REQUIRE(other.central_pages == 3);
	// a, then the other heap, then back: b merges with a, d is a run of its own.
	a->next = c;
	c->next = b;
	b->next = d;
	d->next = nullptr;
	page_heap_free_spans(a);
	// Freed whole, so pending (page_heap.c), each on its own heap's stack.
	REQUIRE(heap.pending == d);
	REQUIRE(d->next == b);
	REQUIRE(b->next == a);
	REQUIRE(other.pending == c);
	REQUIRE(c->next == nullptr);
	REQUIRE(d->state == SPAN_FREE_DIRTY);
	REQUIRE(c->state == SPAN_FREE_DIRTY);
	CHECK(heap.central_pages == 1);
	CHECK(heap.dirty_pages == 9);
	CHECK(other.central_pages == 0);
	CHECK(other.dirty_pages == 3);
	lock_acquire(&heap.lock);
	page_heap_pending_drain(&heap, 0);
	lock_release(&heap.lock);
	superblock_t *sb = span_superblock(b);
	REQUIRE(superblock_span_at(sb, pb)->state == SPAN_FREE_DIRTY);
	REQUIRE(superblock_span_at(sb, pb)->npages == 4);
	CHECK(heap.dirty_pages == 9);
	CHECK(span_superblock(c)->free_pages == span_superblock(c)->usable_pages);
	page_heap_free(guard);
	page_heap_release(&other, os_fake_now(), true);
	CHECK(other.superblocks_count == 0);
}

// A CENTRAL span freed whole waits pending (page_heap.c): what it must never
// do is serve a request of another page count or kind as it is, be handed
// out twice, or hide its pages from a request, a resize, decay or trim.
TEST_CASE_METHOD(heap_fixture, "a pending span serves only the next carve of its page count", "[page_heap]")
{
	span_t *guard = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	span_t *a = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL), *b = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL);
	REQUIRE((guard && a && b));
	superblock_t *sb = span_superblock(a);
	unsigned pa = a->page, pb = b->page, free_before = sb->free_pages;
	REQUIRE(pb + 2 == pa);
	page_heap_free(a);
	page_heap_free(b); // left of a: pending, the two not merged
	REQUIRE(heap.pending == b);
	CHECK(heap.pending_pages == 4);
	CHECK(a->state == SPAN_FREE_DIRTY);
	CHECK(b->npages == 2);
	CHECK(heap.dirty_pages == 4); // counted dirty and free as any run
	CHECK(sb->free_pages == free_before + 4);
	CHECK(heap.central_pages == 1);

	SECTION("the same page count takes the newest, once")
	{
		span_t *t = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL);
		REQUIRE(t == b);
		CHECK(t->state == SPAN_CENTRAL);
		// Taken as it waited (pending_take rewrites neither its place nor
		// its tags): they must be a fresh span's, with no pending link left.
		CHECK(t->page == pb);
		CHECK(t->npages == 2);
		CHECK(t->huge == 0);
		CHECK(pmap_load(sb, pb) == pmap_entry(pb, 0));
		CHECK(pmap_load(sb, pb + 1) == pmap_entry(pb, 0));
		CHECK(t->next == nullptr);
		CHECK(t->prev == nullptr);
		CHECK(t->u.central.free_head == nullptr);
		CHECK((t->used | t->cls | t->in_partial | t->zeroed) == 0);
		CHECK(heap.central_pages == 3);
		CHECK(heap.dirty_pages == 2);
		CHECK(sb->free_pages == free_before + 2);
		CHECK(heap.pending == a);
		span_t *u = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL);
		REQUIRE(u == a);
		CHECK(heap.pending == nullptr);
		span_t *v = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL);
		REQUIRE(v != nullptr);
		CHECK(v->page != pa);
		CHECK(v->page != pb);
		CHECK(heap.dirty_pages == 0);
		page_heap_free(v);
		page_heap_free(u);
		page_heap_free(t);
	}
	for (bool large : {false, true})
	SECTION(large ? "a large block merges them first" : "another page count merges them first")
	{
		span_t *t = page_heap_alloc(&heap, 4, 1, large ? SPAN_LARGE : SPAN_CENTRAL);
		REQUIRE(t != nullptr);
		CHECK(heap.pending == nullptr);
		CHECK(heap.pending_pages == 0);
		CHECK(t->page == pb); // the merged run of b and a, not fresh pages
		CHECK(t->npages == 4);
		CHECK(heap.dirty_pages == 0);
		if (large)
			superblock_map_span(sb, t->page, t->npages, 0);
		page_heap_free(t);
	}
	SECTION("a large block left of them grows into them")
	{
		span_t *c = page_heap_alloc(&heap, 4, 1, SPAN_LARGE); // takes b and a merged
		REQUIRE(c->page == pb);
		superblock_map_span(sb, c->page, c->npages, 0);
		span_t *d = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
		REQUIRE(d->page + 1u == pb);
		span_t *e = page_heap_alloc(&heap, 1, 1, SPAN_LARGE);
		REQUIRE(e->page + 1 == d->page);
		superblock_map_span(sb, e->page, e->npages, 0);
		page_heap_free(d); // pending, between e and c
		REQUIRE(heap.pending == d);
		page_heap_free(c); // a LARGE span is merged at once: not with d
		REQUIRE(heap.pending == d);
		REQUIRE(c->npages == 4);
		REQUIRE(page_heap_resize(e, 6)); // d merged with the run right of it first
		CHECK(heap.pending == nullptr);
		CHECK(e->npages == 6);
		CHECK(heap.dirty_pages == 0);
		page_heap_free(e);
	}
	SECTION("decay and trim give them back")
	{
		REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == 4);
		CHECK(heap.pending == nullptr);
		CHECK(heap.dirty_pages == 0);
		page_heap_free(guard);
		guard = nullptr;
		CHECK(page_heap_release(&heap, os_fake_now(), true) == 1);
		CHECK(heap.superblocks_count == 0);
	}
	SECTION("a release pass that unmaps their superblock merges them first")
	{
		page_heap_free(guard);
		guard = nullptr;
		REQUIRE(heap.pending != nullptr);
		CHECK(page_heap_release(&heap, os_fake_now(), true) == 1);
		CHECK(heap.pending == nullptr);
		CHECK(heap.superblocks_count == 0);
		CHECK(heap.dirty_pages == 0);
	}
	if (guard != nullptr)
		page_heap_free(guard);
}

TEST_CASE_METHOD(heap_fixture, "a dirty run merges with a left neighbour freed later", "[page_heap]")
{
	span_t *a = alloc(3), *b = alloc(3), *guard = alloc(1);
	unsigned pb = b->page;
	page_heap_free(b);
	page_heap_free(a); // a is right of b: merges leftwards into b's run
	REQUIRE(superblock_span_at(span_superblock(b), pb)->npages == 6);
	REQUIRE(superblock_span_at(span_superblock(b), pb)->state == SPAN_FREE_DIRTY);
	page_heap_free(guard);
}

TEST_CASE_METHOD(heap_fixture, "allocation prefers dirty runs, the most recently freed first", "[page_heap]")
{
	span_t *a = alloc(4), *g1 = alloc(1), *b = alloc(4), *g2 = alloc(1);
	void *addr_a = span_start(span_superblock(a), a), *addr_b = span_start(span_superblock(b), b);
	page_heap_free(a);
	page_heap_free(b);
	span_t *x = alloc(4);
	REQUIRE(span_start(span_superblock(x), x) == addr_b); // LIFO
	REQUIRE(x->zeroed == 0);                               // dirty: not known zero
	span_t *y = alloc(4);
	REQUIRE(span_start(span_superblock(y), y) == addr_a);
	span_t *z = alloc(4); // no dirty run left: from the purged run
	REQUIRE(z->zeroed == 1);
	for (span_t *s : {x, y, z, g1, g2})
		page_heap_free(s);
}

// The summary bitmap agrees with the lists' bitmap, word by word, and each
// bit of that with its list (page_heap.h: nonempty, nonempty_words).
static void require_bitmaps_agree(const page_heap_t &h)
{
	for (unsigned k = 0; k < 2; k++) {
		uint64_t words = 0;
		for (unsigned w = 0; w < EBB_RUN_WORDS; w++)
			if (h.nonempty[k][w] != 0)
				words |= 1ull << w;
		REQUIRE(h.nonempty_words[k] == words);
		REQUIRE((h.nonempty[k][0] & 1) == 0); // no run has 0 pages
		for (unsigned i = 1; i < EBB_RUN_LISTS; i++)
			REQUIRE(((h.nonempty[k][i >> 6] >> (i & 63)) & 1) == (h.runs[page_heap_run_slot(i)][k] != nullptr));
	}
}

// The newest dirty run takes in a span freed right of it without leaving
// the LRU head (page_heap_run_free_coalesced's `kept`): the dirty count
// grows by the span's pages only, the run's age is the free's, the size
// lists and their bitmaps follow, and a run merged that is not the newest
// goes through the LRU as before.
TEST_CASE_METHOD(heap_fixture, "the newest dirty run grows in place by a span freed right of it", "[page_heap]")
{
	span_t *a = alloc(2), *b = alloc(2), *c = alloc(2), *g1 = alloc(1), *x = alloc(3), *g2 = alloc(1);
	superblock_t *sb = span_superblock(a);
	unsigned pa = a->page, pb = b->page, pc = c->page, px = x->page;
	REQUIRE(pc + 2 == pb);
	REQUIRE(pb + 2 == pa);
	page_heap_free(a);
	page_heap_free(c);
	REQUIRE(heap.lru_head == superblock_span_at(sb, pc));
	os_fake_advance(5 * MS);
	uint64_t t = os_fake_now();
	page_heap_free(b); // left c is the newest run: kept; right a merges too
	span_t *run = superblock_span_at(sb, pc);
	REQUIRE(run->state == SPAN_FREE_DIRTY);
	REQUIRE(run->npages == 6);
	REQUIRE(run->u.free.freed_ns == t);
	REQUIRE(superblock_span_at(sb, pb)->state == SPAN_NONE);
	REQUIRE(superblock_span_at(sb, pa)->state == SPAN_NONE);
	REQUIRE(heap.dirty_pages == 6);
	REQUIRE(heap.lru_head == run);
	REQUIRE(heap.lru_tail == run);
	REQUIRE(run->u.free.lru_prev == nullptr);
	REQUIRE(run->u.free.lru_next == nullptr);
	require_bitmaps_agree(heap);

	// Now the run is not the newest: a span freed right of it merges
	// through the LRU, and the merged run becomes the newest again.
	span_t *d = alloc(2); // the end of the run: pages pa..pa+1
	REQUIRE(d->page == pa);
	REQUIRE(heap.dirty_pages == 4);
	page_heap_free(x);
	REQUIRE(heap.lru_head == superblock_span_at(sb, px));
	page_heap_free(d);
	REQUIRE(run->npages == 6);
	REQUIRE(heap.dirty_pages == 9);
	REQUIRE(heap.lru_head == run);
	REQUIRE(heap.lru_tail == superblock_span_at(sb, px));
	require_bitmaps_agree(heap);
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == 9);
	REQUIRE(heap.dirty_pages == 0);
	page_heap_free(g1);
	page_heap_free(g2);
}

TEST_CASE_METHOD(heap_fixture, "a request takes the smallest dirty run that fits, in whatever bitmap word it is listed",
		 "[page_heap]")
{
	// Dirty runs of 3 pages (bitmap word 0) and 200 pages (word 3), kept
	// apart by live spans; the rest of the superblock is one purged run.
	span_t *a = alloc(3), *g1 = alloc(1), *c = alloc(200), *g2 = alloc(1);
	superblock_t *sb = span_superblock(a);
	unsigned pa = a->page, pc = c->page;
	page_heap_free(a);
	page_heap_free(c);
	require_bitmaps_agree(heap);
	REQUIRE(heap.nonempty_words[RUN_DIRTY] == ((1ull << 0) | (1ull << 3)));

	span_t *x = alloc(100); // past word 0's lists: the 200-page run, not the purged one
	REQUIRE(x->page == pc + 100);
	REQUIRE(x->zeroed == 0);
	require_bitmaps_agree(heap);
	REQUIRE(heap.nonempty_words[RUN_DIRTY] == ((1ull << 0) | (1ull << 1))); // 3 pages and 100 left
	span_t *y = alloc(2); // the 3-page run in word 0
	REQUIRE(y->page == pa + 1);
	span_t *z = alloc(100); // the rest of the 200: its word's bit goes
	REQUIRE(z->page == pc);
	require_bitmaps_agree(heap);
	REQUIRE(heap.nonempty_words[RUN_DIRTY] == 1ull); // the 1 page left of a's run
	span_t *w = alloc(50); // no dirty run fits: the purged run
	REQUIRE(w->zeroed == 1);
	REQUIRE(w->page + 50 == g2->page);
	require_bitmaps_agree(heap);
	for (span_t *s : {x, y, z, w, g1, g2})
		page_heap_free(s);
	require_bitmaps_agree(heap);
	std::vector<run_view> r = runs_of(sb); // the purged front, then one dirty run of all that was taken
	REQUIRE(r.size() == 2);
	REQUIRE(r[0].state == SPAN_FREE_PURGED);
	unsigned end = sb->first_page + sb->usable_pages;
	REQUIRE(r[1] == (run_view{w->page, end - w->page, SPAN_FREE_DIRTY}));
}

TEST_CASE_METHOD(heap_fixture, "aligned allocations start on the alignment", "[page_heap]")
{
	span_t *a = alloc(3, 64);
	void *p = span_start(span_superblock(a), a);
	REQUIRE(((uintptr_t)p & (64 * 4096 - 1)) == 0);
	span_t *b = alloc(1, 256); // 1 MiB
	REQUIRE(((uintptr_t)span_start(span_superblock(b), b) & (1024 * 1024 - 1)) == 0);
	page_heap_free(a);
	page_heap_free(b);
	REQUIRE(page_heap_alloc(&heap, 900, 256, SPAN_LARGE) == nullptr); // cannot fit
}

TEST_CASE_METHOD(heap_fixture, "a 2 MiB-aligned request takes a short run holding page 512, not a new superblock",
		 "[page_heap]")
{
	// Fill the superblock but for pages 500..539, which hold its one
	// 2 MiB-aligned start (page 512): 40 free pages, far fewer than the
	// 16 + 511 that would fit any placement.
	// (Allocation takes the end of a run.)
	span_t *right = alloc(EBB_SB_PAGES - 540);
	span_t *gap = alloc(40);
	span_t *left = alloc(500 - EBB_SB_HEADER_PAGES);
	superblock_t *sb = span_superblock(left);
	REQUIRE(span_superblock(gap) == sb);
	REQUIRE(span_superblock(right) == sb);
	REQUIRE(left->page == EBB_SB_HEADER_PAGES);
	page_heap_free(gap);
	os_fake_counts_t before = os_fake_counts();
	span_t *a = alloc(16, 512);
	REQUIRE(span_superblock(a) == sb);
	REQUIRE(a->page == 512);
	REQUIRE(os_fake_counts().maps == before.maps);
	page_heap_free(a);
	page_heap_free(left);
	page_heap_free(right);
}

TEST_CASE_METHOD(heap_fixture, "decay purges dirty runs, purged runs coalesce and read as zero", "[page_heap]")
{
	unit_option("decay_ms", "100");
	page_heap_init(&heap, 0, os_fake_now());
	// Let the windows of earlier cases' large blocks run out: their swing
	// and loop (page_heap_swing_pages, page_heap_looping) are process-wide
	// and would keep the curve from purging what this case frees.
	for (int i = 0; i < 6; i++) {
		os_fake_advance(60 * MS);
		page_heap_decay(&heap, os_fake_now(), false);
	}
	span_t *a = alloc(8), *b = alloc(8);
	// Touch descriptors in several header pages, as a busy superblock would.
	std::vector<span_t *> many;
	for (int i = 0; i < 200; i++)
		many.push_back(alloc(1));
	REQUIRE(span_superblock(a)->desc_touched != EBB_SB_FIXED_MASK);
	for (span_t *m : many)
		page_heap_free(m);
	char *pa = (char *)span_start(span_superblock(a), a);
	memset(pa, 0xab, 8 * 4096);
	REQUIRE(os_fake_resident(pa) == 1);
	os_fake_counts_t before = os_fake_counts();
	page_heap_free(a);
	page_heap_free(b);
	REQUIRE(heap.dirty_pages == 216);
	// Right after the free nothing is due.
	REQUIRE(page_heap_decay(&heap, os_fake_now(), false) == 0);
	// One interval and an epoch later, all of it.
	os_fake_advance(120 * MS);
	size_t purged = page_heap_decay(&heap, os_fake_now(), false);
	REQUIRE(purged == 216);
	REQUIRE(heap.dirty_pages == 0);
	REQUIRE(os_fake_counts().purges > before.purges);
	REQUIRE(os_fake_resident(pa) == 0);
	// Whole superblock free and purged: one run again.
	superblock_t *sb = span_superblock(a);
	std::vector<run_view> expect = {{sb->first_page, sb->usable_pages, SPAN_FREE_PURGED}};
	REQUIRE(runs_of(sb) == expect);
	REQUIRE(superblock_span_at(sb, sb->first_page)->zeroed == 1);
	// ... and its header is back to the fixed pages that map and describe it.
	REQUIRE(sb->desc_touched == EBB_SB_FIXED_MASK);
	REQUIRE(heap.meta_pages == EBB_SB_FIXED_PAGES);
	unit_option("decay_ms", "-1");
}

// A few dirty pages and no large request at all is no loop over a pool
// (page_heap_looping): with fewer than 8 dirty pages, "asked for an eighth
// of them" read as "asked for at least 0 pages", the curve purged nothing
// and the background thread, kept awake by the pages, never retired.
TEST_CASE_METHOD(heap_fixture, "decay purges the last few dirty pages when nothing asks for pages", "[page_heap]")
{
	unit_option("decay_ms", "100");
	page_heap_init(&heap, 0, os_fake_now());
	// Let the windows of earlier cases' requests run out.
	for (int i = 0; i < 6; i++) {
		os_fake_advance(60 * MS);
		page_heap_decay(&heap, os_fake_now(), false);
	}
	span_t *keep = page_heap_alloc(&heap, 4, 1, SPAN_CENTRAL);
	span_t *few = page_heap_alloc(&heap, 3, 1, SPAN_CENTRAL);
	REQUIRE(keep != nullptr);
	REQUIRE(few != nullptr);
	page_heap_free(few);
	REQUIRE(heap.dirty_pages == 3);
	REQUIRE_FALSE(page_heap_looping());
	size_t purged = 0;
	for (int i = 0; i < 8 && heap.dirty_pages > 0; i++) {
		os_fake_advance(60 * MS);
		purged += page_heap_decay(&heap, os_fake_now(), false);
	}
	CHECK(purged == 3);
	CHECK(heap.dirty_pages == 0);
	page_heap_free(keep);
	unit_option("decay_ms", "-1");
}

TEST_CASE_METHOD(heap_fixture, "one decay pass trims the headers of every superblock it purged, however many",
		 "[page_heap]")
{
	unit_option("decay_ms", "100");
	page_heap_init(&heap, 0, os_fake_now());
	// 80 superblocks, each with a descriptor on its last header page: a
	// one-page span (taken from the end of the free run), then the rest.
	const int n = 80;
	std::vector<span_t *> spans;
	std::vector<superblock_t *> sbs;
	for (int i = 0; i < n; i++) {
		span_t *last = alloc(1);
		superblock_t *sb = span_superblock(last);
		REQUIRE(sb->desc_touched != EBB_SB_FIXED_MASK);
		spans.push_back(last);
		spans.push_back(alloc(sb->usable_pages - 1));
		REQUIRE(span_superblock(spans.back()) == sb);
		sbs.push_back(sb);
	}
	for (span_t *s : spans)
		page_heap_free(s);
	os_fake_advance(120 * MS);
	REQUIRE(page_heap_decay(&heap, os_fake_now(), false) == (size_t)n * sbs[0]->usable_pages);
	for (superblock_t *sb : sbs)
		REQUIRE(sb->desc_touched == EBB_SB_FIXED_MASK);
	REQUIRE(heap.meta_pages == (size_t)n * EBB_SB_FIXED_PAGES);
	unit_option("decay_ms", "-1");
}

// Header page 2 holds the descriptors of pages 78..141. Lays sb out as a
// large span [17, 100) (its first descriptor on fixed page 1), a free run
// [100, 150) and a large span [150, 1024) (descriptor on page 3): page 2
// then describes only the inside of the first span and the run, and holds
// no descriptor but the run's. Returns the three in order.
static std::vector<span_t *> cold_layout(heap_fixture &f)
{
	span_t *b = f.alloc(874), *r = f.alloc(50), *a = f.alloc(83);
	superblock_t *sb = span_superblock(a);
	REQUIRE(span_superblock(b) == sb);
	REQUIRE(span_superblock(r) == sb);
	REQUIRE(a->page == 17);
	REQUIRE(r->page == 100);
	REQUIRE(b->page == 150);
	REQUIRE((((uintptr_t)superblock_span_at(sb, 100) - (uintptr_t)sb) >> 12) == 2);
	REQUIRE((((uintptr_t)superblock_span_at(sb, 78) - (uintptr_t)sb) >> 12) == 2);
	REQUIRE((((uintptr_t)superblock_span_at(sb, 142) - (uintptr_t)sb) >> 12) == 3);
	return {a, r, b};
}

TEST_CASE_METHOD(heap_fixture, "a header page left with only a purged run's descriptor is given back, the run "
			       "goes cold and is carved again whole", "[page_heap]")
{
	std::vector<span_t *> v = cold_layout(*this);
	superblock_t *sb = span_superblock(v[0]);
	char *hdr2 = (char *)sb + 2 * 4096;
	REQUIRE((sb->desc_touched & 4u) != 0);
	REQUIRE(os_fake_resident(hdr2) == 1);
	char *run = (char *)superblock_page_addr(sb, 100);
	memset(run, 0x5a, 50 * 4096);
	page_heap_free(v[1]);
	size_t meta = heap.meta_pages, maps = os_fake_counts().maps;
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == 50);
	// The page went back: the run's size is in the table, not on it.
	CHECK(os_fake_resident(hdr2) == 0);
	CHECK((sb->desc_touched & 4u) == 0);
	CHECK(heap.meta_pages == meta - 1);
	REQUIRE(sb->cold_n == 1);
	CHECK(sb->cold_page[0] == 100);
	CHECK(sb->cold_npages[0] == 50);
	CHECK(heap.cold_runs == 1);
	CHECK(heap.purged_pages == 50); // still counted as purged pages
	CHECK(superblock_span_at(sb, 100)->state == SPAN_NONE);
	// A pointer into it, forged or stale, is no span of ours (free reports
	// it): the first page, the inside and the last page.
	superblock_t *out = nullptr;
	CHECK(superblock_span_lookup(run, &out) == nullptr);
	CHECK(superblock_span_lookup(run + 20 * 4096 + 16, &out) == nullptr);
	CHECK(superblock_span_lookup(run + 49 * 4096, &out) == nullptr);
	// Nothing else is free: a request of its size is carved from it, not
	// from a new superblock, its descriptor written fresh, its pages zero.
	span_t *again = alloc(50);
	CHECK(os_fake_counts().maps == maps);
	REQUIRE(span_superblock(again) == sb);
	CHECK(again->page == 100);
	CHECK(again->npages == 50);
	CHECK(again->zeroed == 1);
	CHECK(sb->cold_n == 0);
	CHECK(heap.cold_runs == 0);
	CHECK(heap.purged_pages == 0);
	CHECK(os_fake_resident(hdr2) == 1);
	CHECK((sb->desc_touched & 4u) != 0);
	CHECK(heap.meta_pages == meta);
	char *p = (char *)span_start(sb, again);
	CHECK(p == run);
	for (size_t i = 0; i < 50 * 4096; i += 512)
		REQUIRE(p[i] == 0);
	memset(p, 0x33, 50 * 4096); // usable
	CHECK(superblock_span_lookup(p + 20 * 4096, &out) == again);
	// And the layout is as before the trim.
	std::vector<run_view> expect = {{17, 83, SPAN_LARGE}, {100, 50, SPAN_LARGE}, {150, 874, SPAN_LARGE}};
	CHECK(runs_of(sb) == expect);
	for (span_t *s : {v[0], again, v[2]})
		page_heap_free(s);
}

TEST_CASE_METHOD(heap_fixture, "a cold run is a run again before a neighbour's free merges beside it", "[page_heap]")
{
	std::vector<span_t *> v = cold_layout(*this);
	superblock_t *sb = span_superblock(v[0]);
	page_heap_free(v[1]);
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == 50);
	REQUIRE(sb->cold_n == 1);
	// The span left of it comes back dirty: the cold run is listed again
	// first, purged, and the two stay apart (different kinds).
	page_heap_free(v[0]);
	CHECK(sb->cold_n == 0);
	std::vector<run_view> expect = {{17, 83, SPAN_FREE_DIRTY}, {100, 50, SPAN_FREE_PURGED}, {150, 874, SPAN_LARGE}};
	CHECK(runs_of(sb) == expect);
	// Purged (all at once, as ebb_trim: the drop of large pages is a swing
	// to decay), all three merge into one run once the last span is back.
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == 83);
	page_heap_free(v[2]);
	page_heap_decay(&heap, os_fake_now(), true);
	expect = {{17, 1007, SPAN_FREE_PURGED}};
	CHECK(runs_of(sb) == expect);
	CHECK(sb->cold_n == 0);
	CHECK(heap.cold_runs == 0);
}

TEST_CASE_METHOD(heap_fixture, "a header page the kernel would not give back leaves its run listed", "[page_heap]")
{
	std::vector<span_t *> v = cold_layout(*this);
	superblock_t *sb = span_superblock(v[0]);
	page_heap_free(v[1]);
	// The run's purge is call 1, the header page's call 2.
	os_fault_set(OS_FAULT_PURGE, 2, 0);
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == 50);
	os_fault_set(OS_FAULT_PURGE, 0, 0);
	CHECK(sb->cold_n == 0);
	CHECK(heap.cold_runs == 0);
	CHECK((sb->desc_touched & 4u) != 0);
	std::vector<run_view> expect = {{17, 83, SPAN_LARGE}, {100, 50, SPAN_FREE_PURGED}, {150, 874, SPAN_LARGE}};
	CHECK(runs_of(sb) == expect);
	CHECK(heap.purged_pages == 50);
	span_t *again = alloc(50);
	CHECK(again->page == 100);
	for (span_t *s : {v[0], again, v[2]})
		page_heap_free(s);
}

// Header pages 2 and 3 (descriptors of pages 78..205) and 5 (270..333) with
// nothing left on them but NONE descriptors and a purged run's first, page 4
// (206..269) with a live span's: the trim gives back the two stretches [2, 4)
// and [5, 6), one call each, and a stretch the kernel refuses stays resident
// and counted, with the runs it describes listed (not cold).
TEST_CASE_METHOD(heap_fixture, "the header pages go back one call a stretch, and a refused stretch stays with its runs",
		 "[page_heap]")
{
	// refuse: which purge call of the decay pass fails (0: none). Calls 1 and
	// 2 are the two dirty runs, 3 the stretch [2, 4), 4 the stretch [5, 6).
	for (unsigned refuse : {0u, 3u, 4u}) {
		CAPTURE(refuse);
		span_t *x = alloc(724), *y = alloc(70), *z = alloc(80), *w = alloc(50);
		superblock_t *sb = span_superblock(x);
		REQUIRE(x->page == 300);
		REQUIRE(y->page == 230);
		REQUIRE(z->page == 150);
		REQUIRE(w->page == 100);
		const uint32_t touched = EBB_SB_FIXED_MASK | 1u << 2 | 1u << 3 | 1u << 4 | 1u << 5;
		REQUIRE(sb->desc_touched == touched);
		page_heap_free(w);
		page_heap_free(z);
		page_heap_free(x);
		size_t meta = heap.meta_pages;
		os_fake_counts_t before = os_fake_counts();
		os_fault_set(OS_FAULT_PURGE, refuse, 0);
		REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == 130 + 724);
		os_fault_set(OS_FAULT_PURGE, 0, 0);
		os_fake_counts_t after = os_fake_counts();
		CHECK(after.purges - before.purges == (refuse ? 3u : 4u));
		CHECK(after.failed - before.failed == (refuse ? 1u : 0u));
		bool out23 = refuse != 3, out5 = refuse != 4;
		for (unsigned b : {2u, 3u})
			CHECK(os_fake_resident((char *)sb + b * 4096) == !out23);
		CHECK(os_fake_resident((char *)sb + 4 * 4096) == 1);
		CHECK(os_fake_resident((char *)sb + 5 * 4096) == !out5);
		uint32_t gone = (out23 ? 1u << 2 | 1u << 3 : 0) | (out5 ? 1u << 5 : 0);
		CHECK(sb->desc_touched == (touched & ~gone));
		CHECK(heap.meta_pages == meta - (size_t)__builtin_popcount(gone));
		CHECK(heap.purged_pages == 213 + 724);
		// The run [300, 1024) is cold while its descriptor's page is out,
		// else listed.
		CHECK(sb->cold_n == (out5 ? 1 : 0));
		CHECK(heap.cold_runs == (out5 ? 1u : 0u));
		if (out5) {
			CHECK(sb->cold_page[0] == 300);
			CHECK(sb->cold_npages[0] == 724);
		} else {
			std::vector<run_view> expect = {
				{17, 213, SPAN_FREE_PURGED}, {230, 70, SPAN_LARGE}, {300, 724, SPAN_FREE_PURGED}};
			CHECK(runs_of(sb) == expect);
		}
		// Either way the run serves a request of its size, from the same
		// superblock, zeroed.
		size_t maps = os_fake_counts().maps;
		span_t *again = alloc(724);
		CHECK(os_fake_counts().maps == maps);
		CHECK(span_superblock(again) == sb);
		CHECK(again->page == 300);
		CHECK(again->zeroed == 1);
		CHECK(sb->cold_n == 0);
		CHECK(heap.cold_runs == 0);
		page_heap_free(again);
		page_heap_free(y);
		page_heap_release(&heap, os_fake_now(), true);
		REQUIRE(heap.superblocks_count == 0);
	}
}

TEST_CASE_METHOD(heap_fixture, "a superblock and a huge block munmap refuses stay, as one free run each", "[page_heap]")
{
	span_t *a = alloc(16);
	superblock_t *sb = span_superblock(a);
	size_t pages = 2048;
	span_t *h = page_heap_huge_alloc(&heap, pages, EBB_SB_SIZE, pages);
	REQUIRE(h != nullptr);
	superblock_t *hsb = span_superblock(h);
	page_heap_free(a);
	page_heap_huge_free(h);
	REQUIRE(heap.huge_count == 1);
	os_fake_advance(2000 * MS);
	// Both unmaps refused (the release unmaps the huge block first: it
	// takes the victims in reverse order of its walk).
	os_fault_set(OS_FAULT_UNMAP, 1, 1000000);
	REQUIRE(page_heap_release(&heap, os_fake_now(), false) == 0);
	os_fault_set(OS_FAULT_UNMAP, 0, 0);
	CHECK(superblock_registry[registry_index((uintptr_t)sb)] == REG_HEADER);
	CHECK(heap.superblocks_count == 1);
	CHECK(heap.superblocks == sb);
	std::vector<run_view> expect = {{17, 1007, SPAN_FREE_DIRTY}};
	CHECK(runs_of(sb) == expect);
	CHECK(heap.huge_count == 1);
	CHECK(heap.huge_cache == hsb);
	CHECK(hsb->spans[0].state == SPAN_FREE_DIRTY);
	CHECK(heap.dirty_pages == 1007 + pages);
	// Both serve requests again, and go at the next release.
	span_t *b = alloc(16);
	CHECK(span_superblock(b) == sb);
	page_heap_free(b);
	os_fake_advance(2000 * MS);
	CHECK(page_heap_release(&heap, os_fake_now(), false) == 2);
	CHECK(heap.superblocks_count == 0);
	CHECK(heap.huge_count == 0);
	CHECK(heap.dirty_pages == 0);
}

TEST_CASE_METHOD(heap_fixture, "an entirely free superblock is unmapped after the unmap delay", "[page_heap]")
{
	span_t *a = alloc(16);
	superblock_t *sb = span_superblock(a);
	REQUIRE(superblock_registry[registry_index((uintptr_t)sb)] == REG_HEADER);
	page_heap_free(a);
	REQUIRE(sb->free_pages == sb->usable_pages);
	REQUIRE(page_heap_release(&heap, os_fake_now(), false) == 0); // too early
	os_fake_advance(500 * MS);
	REQUIRE(page_heap_release(&heap, os_fake_now(), false) == 0);
	os_fake_advance(600 * MS);
	os_fake_counts_t before = os_fake_counts();
	REQUIRE(page_heap_release(&heap, os_fake_now(), false) == 1);
	REQUIRE(os_fake_counts().unmaps == before.unmaps + 1);
	REQUIRE(superblock_registry[registry_index((uintptr_t)sb)] == REG_NONE);
	REQUIRE(heap.superblocks_count == 0);
	REQUIRE(heap.dirty_pages == 0);
	REQUIRE(heap.purged_pages == 0);
}

TEST_CASE_METHOD(heap_fixture, "a superblock with a live span is never unmapped", "[page_heap]")
{
	span_t *a = alloc(1);
	os_fake_advance(5000 * MS);
	REQUIRE(page_heap_release(&heap, os_fake_now(), true) == 0);
	page_heap_free(a);
}

TEST_CASE_METHOD(heap_fixture, "a failed madvise keeps the run dirty and accounted for", "[page_heap]")
{
	span_t *a = alloc(4), *g = alloc(1), *b = alloc(4);
	page_heap_free(a);
	page_heap_free(b);
	REQUIRE(heap.dirty_pages == 8);
	os_fault_set(OS_FAULT_PURGE, 1, 0); // the next purge fails
	size_t purged = page_heap_decay(&heap, os_fake_now(), true);
	REQUIRE(purged == 4); // the second run went, the failed one stays
	REQUIRE(heap.dirty_pages == 4);
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == 4);
	REQUIRE(heap.dirty_pages == 0);
	page_heap_free(g);
}

TEST_CASE_METHOD(heap_fixture, "a failed mmap is ENOMEM and nothing else changes", "[page_heap]")
{
	os_fault_set(OS_FAULT_MAP, 1, 0);
	errno = 0;
	REQUIRE(page_heap_alloc(&heap, 4, 1, SPAN_LARGE) == nullptr);
	REQUIRE(errno == ENOMEM);
	REQUIRE(heap.superblocks_count == 0);
	span_t *a = alloc(4); // works again as soon as the kernel does
	page_heap_free(a);
}

TEST_CASE_METHOD(heap_fixture, "large spans grow into a free right neighbour and shrink in place", "[page_heap]")
{
	span_t *guard = alloc(2), *a = alloc(4);
	// a is left of guard; right of a is guard: cannot grow.
	REQUIRE_FALSE(page_heap_resize(a, 6));
	page_heap_free(guard);
	REQUIRE(page_heap_resize(a, 6));
	REQUIRE(a->npages == 6);
	REQUIRE(heap.large_pages == 6);
	REQUIRE(page_heap_resize(a, 2));
	REQUIRE(heap.large_pages == 2);
	REQUIRE(heap.dirty_pages == 4 + 0); // the cut tail, merged with the rest of guard's run
	page_heap_free(a);
}

TEST_CASE_METHOD(heap_fixture, "huge blocks are cached for reuse, then unmapped", "[page_heap]")
{
	size_t pages = 2048; // 8 MiB: more than a superblock holds, whole 2 MiB units
	span_t *h = page_heap_huge_alloc(&heap, pages, EBB_SB_SIZE, pages);
	REQUIRE(h != nullptr);
	REQUIRE(h->huge == 1);
	char *p = (char *)span_start(span_superblock(h), h);
	REQUIRE(((uintptr_t)p & (EBB_SB_SIZE - 1)) == 0);
	p[0] = 1;
	p[pages * 4096 - 1] = 2;
	superblock_t *sb;
	REQUIRE(superblock_span_lookup(p, &sb) == h);
	page_heap_huge_free(h);
	REQUIRE(heap.dirty_pages == pages);
	span_t *again = page_heap_huge_alloc(&heap, pages - 100, EBB_SB_SIZE, pages - 100);
	REQUIRE(again == h); // the cached mapping, no new mmap
	page_heap_huge_free(again);
	os_fake_advance(2000 * MS);
	REQUIRE(page_heap_release(&heap, os_fake_now(), false) == 1);
	REQUIRE(heap.dirty_pages == 0);
	REQUIRE(superblock_registry[registry_index((uintptr_t)p)] == REG_NONE);
}

namespace {

// First byte of each page of [p, p + pages) equals v.
bool pages_hold(const char *p, size_t pages, char v)
{
	for (size_t i = 0; i < pages; i++)
		if (p[i * 4096] != v)
			return false;
	return true;
}

char *huge_data(span_t *s)
{
	return (char *)span_start(span_superblock(s), s);
}

} // namespace

TEST_CASE_METHOD(heap_fixture, "a freed huge block serves requests of other sizes with its resident pages", "[page_heap]")
{
	// 16 MiB written, freed; then a 6 MiB and a 12 MiB request. Neither fits
	// the cached block closely, so each is made of its pages, moved by the
	// kernel: they keep what was written (not fresh zero pages), nothing is
	// purged, and what the first left over serves the second.
	span_t *a = page_heap_huge_alloc(&heap, 4096, EBB_SB_SIZE, 4096);
	REQUIRE(a != nullptr);
	memset(huge_data(a), 0x11, 4096 * 4096);
	page_heap_huge_free(a);
	REQUIRE(heap.dirty_pages == 4096);
	os_fake_counts_t before = os_fake_counts();

	span_t *c = page_heap_huge_alloc(&heap, 1536, EBB_SB_SIZE, 1536);
	REQUIRE(c != nullptr);
	CHECK(c->npages == 1536);
	CHECK_FALSE(c->zeroed);
	CHECK(pages_hold(huge_data(c), 1536, 0x11));
	CHECK(heap.dirty_pages == 4096 - 1536); // the rest stays cached, resident
	CHECK(heap.huge_cached == 1);

	span_t *d = page_heap_huge_alloc(&heap, 3072, EBB_SB_SIZE, 3072);
	REQUIRE(d != nullptr);
	// 2560 pages from what a left, moved to the front; 512 fresh ones after.
	CHECK(pages_hold(huge_data(d), 2560, 0x11));
	CHECK(pages_hold(huge_data(d) + 2560 * 4096, 512, 0));
	CHECK(heap.dirty_pages == 0);
	CHECK(heap.huge_cached == 0);
	CHECK(os_fake_counts().purges == before.purges);
	superblock_t *sb;
	CHECK(superblock_span_lookup(huge_data(c), &sb) == c);
	CHECK(superblock_span_lookup(huge_data(d), &sb) == d);
	page_heap_huge_free(c);
	page_heap_huge_free(d);
	CHECK(heap.dirty_pages == 1536 + 3072);
}

TEST_CASE_METHOD(heap_fixture, "a cached huge block up to twice the request keeps its front in place and caches its tail",
		 "[page_heap]")
{
	// huge.c, huge_split: 10 MiB cached, 6 MiB asked. Moving the 4 MiB tail
	// out costs less than moving the 6 MiB the program is about to write
	// into a new mapping: the block stays where it was, with what it held.
	span_t *a = page_heap_huge_alloc(&heap, 2560, EBB_SB_SIZE, 2560);
	REQUIRE(a != nullptr);
	char *at = huge_data(a);
	memset(at, 0x33, 2560 * 4096);
	page_heap_huge_free(a);
	os_fake_counts_t before = os_fake_counts();
	span_t *c = page_heap_huge_alloc(&heap, 1536, EBB_SB_SIZE, 1536);
	REQUIRE(c != nullptr);
	REQUIRE(huge_data(c) == at);
	CHECK(c->npages == 1536);
	CHECK_FALSE(c->zeroed);
	CHECK(pages_hold(at, 1536, 0x33));
	CHECK(heap.huge_cached == 1); // the tail, resident
	CHECK(heap.dirty_pages == 1024);
	CHECK(os_fake_counts().purges == before.purges);
	superblock_t *sb;
	CHECK(superblock_span_lookup(at, &sb) == c);
	CHECK(superblock_span_lookup(at + 1536 * 4096, &sb) == nullptr); // not c's any more
	// The tail serves the next request with its pages.
	span_t *d = page_heap_huge_alloc(&heap, 1024, EBB_SB_SIZE, 1024);
	REQUIRE(d != nullptr);
	CHECK(pages_hold(huge_data(d), 1024, 0x33));
	CHECK(heap.dirty_pages == 0);
	page_heap_huge_free(c);
	page_heap_huge_free(d);
}

namespace {

// Whether this kernel's mremap moves a range made of two mappings side by
// side at its size (Linux 6.17 and later; older ones fail with EFAULT).
bool kernel_moves_two_mappings()
{
	const size_t M = 2u << 20;
	char *a = (char *)mmap(nullptr, 4 * M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *b = (char *)mmap(nullptr, M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *to = (char *)mmap(nullptr, 2 * M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE((a != MAP_FAILED && b != MAP_FAILED && to != MAP_FAILED));
	a[0] = 1;
	b[0] = 2; // both touched: each has its own anon_vma, the two never merge
	munmap(a + 2 * M, 2 * M);
	bool two = mremap(b, M, M, MREMAP_MAYMOVE | MREMAP_FIXED, a + M) != MAP_FAILED;
	bool ok = two && mremap(a, 2 * M, 2 * M, MREMAP_MAYMOVE | MREMAP_FIXED, to) != MAP_FAILED;
	munmap(ok ? to : a, 2 * M);
	if (!ok)
		munmap(to, 2 * M);
	if (!two)
		munmap(b, M);
	return ok;
}

} // namespace

TEST_CASE_METHOD(heap_fixture, "a huge block made of two cached ones grows by realloc without a copy", "[page_heap]")
{
	// Assembled from the pages of an 8 MiB and a 4 MiB cached block, the
	// 12 MiB block is two mappings of the kernel, which mremap neither grows
	// in place nor moves while growing (EFAULT): huge_move_grow moves it at
	// its size to the front of a 16 MiB mapping instead of realloc copying.
	if (!kernel_moves_two_mappings()) {
		WARN("this kernel does not move a range of two mappings: nothing to test");
		return;
	}
	span_t *a = page_heap_huge_alloc(&heap, 2048, EBB_SB_SIZE, 2048);
	span_t *b = page_heap_huge_alloc(&heap, 1024, EBB_SB_SIZE, 1024);
	REQUIRE((a != nullptr && b != nullptr));
	memset(huge_data(a), 0x11, 2048 * 4096);
	memset(huge_data(b), 0x22, 1024 * 4096);
	page_heap_huge_free(a);
	page_heap_huge_free(b);
	span_t *c = page_heap_huge_alloc(&heap, 3072, EBB_SB_SIZE, 3072);
	REQUIRE(c != nullptr);
	REQUIRE(heap.huge_cached == 0); // made of both
	REQUIRE(pages_hold(huge_data(c), 2048, 0x11));
	REQUIRE(pages_hold(huge_data(c) + 2048 * 4096, 1024, 0x22));
	span_t *g = page_heap_huge_resize(c, 4096);
	REQUIRE(g != nullptr);
	CHECK(g->npages == 4096);
	CHECK(g->state == SPAN_LARGE);
	CHECK(pages_hold(huge_data(g), 2048, 0x11));
	CHECK(pages_hold(huge_data(g) + 2048 * 4096, 1024, 0x22));
	memset(huge_data(g) + 3072 * 4096, 0x44, 1024 * 4096); // all of it is there
	superblock_t *sb;
	CHECK(superblock_span_lookup(huge_data(g), &sb) == g);
	CHECK(superblock_span_lookup(huge_data(g) + 4095 * 4096, &sb) == nullptr); // interior: no block start
	page_heap_huge_free(g);
	CHECK(heap.dirty_pages == 4096);
}

TEST_CASE_METHOD(heap_fixture, "a loop of huge blocks of changing sizes reuses its pages and purges none", "[page_heap]")
{
	// What mimalloc-bench's malloc-large does: blocks of 5 to 25 MiB, each
	// written, a slot replaced at a time. Once the slots are full, every
	// request is served from the pages freed before it: no page is purged
	// and, in this order of sizes, none is fresh. The loop runs for 1.6 s
	// of decay_ms=500 with a dirty budget of 16 MiB, below the 20-40 MiB the
	// loop swings by: idle means idle, and these pages never are
	// (page_heap_swing_pages).
	unit_option("decay_ms", "500");
	unit_option("dirty_max", "16M");
	page_heap_decay_interval_changed(os_fake_now());
	const size_t sizes[] = {1280, 6400, 3072, 5120, 2048, 4608, 1792, 6144};
	const size_t n = sizeof sizes / sizeof sizes[0];
	span_t *slot[4] = {};
	os_fake_counts_t before = os_fake_counts();
	for (unsigned i = 0; i < 64; i++) {
		size_t want = sizes[i % n];
		span_t *s = page_heap_huge_alloc(&heap, want, EBB_SB_SIZE, want);
		REQUIRE(s != nullptr);
		if (i >= 32) { // four rounds of the sizes: the pool has reached the peak
			INFO("request " << i << " of " << want << " pages");
			CHECK(pages_hold(huge_data(s), s->npages, 0x5a));
		}
		memset(huge_data(s), 0x5a, s->npages * 4096);
		if (slot[i % 4])
			page_heap_huge_free(slot[i % 4]);
		slot[i % 4] = s;
		os_fake_advance(25 * MS);
		page_heap_decay(&heap, os_fake_now(), false);
	}
	CHECK(os_fake_counts().purges == before.purges);
	unit_option("dirty_max", "1G");
	for (span_t *s : slot)
		page_heap_huge_free(s);
}

TEST_CASE_METHOD(heap_fixture, "a loop's pool stays resident through a trough longer than decay_ms, and goes back when it stops",
		 "[page_heap]")
{
	// What bench/large's 64K-32M row does: eight 2 MiB blocks replaced one
	// at a time, then eight of 256 KiB for 1.5 s (three decay_ms), then 2 MiB
	// ones again. The trough uses an eighth of the peak (the drop is larger
	// than what is left: no swing) and the pool was freed long before, but
	// the loop keeps asking for pages: none of them is idle, and the climb
	// finds them resident. Once it stops, decay gives them back. (The dirty
	// budget, 1 GiB here, plays no part.)
	unit_option("decay_ms", "500");
	page_heap_init(&heap, 0, os_fake_now());
	auto pass = [&]() {
		os_fake_advance(25 * MS);
		page_heap_decay(&heap, os_fake_now(), false);
	};
	for (int i = 0; i < 80; i++) // two seconds without a request: no earlier test's counts
		pass();
	span_t *slot[8] = {};
	auto replace = [&](unsigned k, size_t pages) {
		span_t *s = alloc(pages);
		if (slot[k])
			page_heap_free(slot[k]);
		slot[k] = s;
	};
	for (unsigned i = 0; i < 32; i++) { // the top, four rounds
		replace(i % 8, 512);
		pass();
	}
	os_fake_counts_t before = os_fake_counts();
	size_t pool = heap.dirty_pages + heap.large_pages;
	for (unsigned i = 0; i < 120; i++) { // the trough, 1.5 s
		replace(i % 8, 64);
		replace((i + 4) % 8, 64);
		pass();
	}
	CHECK(os_fake_counts().purges == before.purges);
	CHECK(heap.dirty_pages + heap.large_pages == pool);
	for (unsigned i = 0; i < 16; i++) { // the climb: resident pages, no new superblock
		replace(i % 8, 512);
		CHECK_FALSE(slot[i % 8]->zeroed);
		pass();
	}
	CHECK(os_fake_counts().purges == before.purges);
	CHECK(os_fake_counts().maps == before.maps);
	for (span_t *&s : slot) {
		page_heap_free(s);
		s = nullptr;
	}
	for (int i = 0; i < 60 && heap.dirty_pages > 0; i++) // stopped: back within 1.5 s
		pass();
	CHECK(heap.dirty_pages == 0);
	unit_option("decay_ms", "-1");
}

// Waste at the peak (page_heap.c, resident_climb): a small heap, mostly
// small blocks' spans, where a large block takes fresh pages above the
// heap's highest mark while freed runs too small for it wait dirty, purges
// as many of them, oldest first, before it hands the fresh pages out; below
// the mark, for small blocks' spans, or in a heap of large blocks, nothing.
// Runs freed within PAGE_HEAP_OWED_MIN_AGE_NS are left dirty (and owed).
namespace {

struct climb_fixture : heap_fixture {
	std::vector<span_t *> live, holes;
	// aged: the holes are as old as a climb's purge takes.
	explicit climb_fixture(bool aged = true)
	{
		page_heap_climb_reset();
		// 60 spans of 4 pages in a row, then every other one freed: 30
		// dirty runs of 4 pages that cannot merge, so no 8-page request
		// fits any of them.
		for (int i = 0; i < 60; i++) {
			span_t *s = page_heap_alloc(&heap, 4, 1, SPAN_CENTRAL);
			REQUIRE(s != nullptr);
			memset(span_start(span_superblock(s), s), 0x5a, 4 * 4096);
			(i % 2 ? holes : live).push_back(s);
		}
		for (span_t *s : holes)
			page_heap_free(s);
		REQUIRE(heap.dirty_pages == 120);
		if (aged)
			os_fake_advance(PAGE_HEAP_OWED_MIN_AGE_NS);
	}
	span_t *take(size_t pages, uint8_t state)
	{
		span_t *s = page_heap_alloc(&heap, pages, 1, state);
		REQUIRE(s != nullptr);
		if (state != SPAN_CENTRAL)
			superblock_map_span(span_superblock(s), s->page, s->npages, 0);
		live.push_back(s);
		return s;
	}
	~climb_fixture()
	{
		for (span_t *s : live)
			page_heap_free(s);
	}
};

struct young_climb_fixture : climb_fixture {
	young_climb_fixture() : climb_fixture(false) {}
};

} // namespace

TEST_CASE_METHOD(climb_fixture, "a small heap climbing purges its oldest dirty runs before the fresh pages", "[page_heap]")
{
	char *oldest = (char *)span_start(span_superblock(holes[0]), holes[0]);
	char *newest = (char *)span_start(span_superblock(holes.back()), holes.back());
	os_fake_counts_t before = os_fake_counts();
	// A large block of 8 fresh pages above the mark: the two oldest holes go.
	take(8, SPAN_LARGE);
	REQUIRE(heap.dirty_pages == 112);
	REQUIRE(os_fake_counts().purges == before.purges + 2);
	REQUIRE(os_fake_resident(oldest) == 0);
	REQUIRE(os_fake_resident(newest) == 1);
	REQUIRE(page_heap_owed_pages() == 0);
	// Climbing on (large blocks still at most half of the pages in use):
	// every hole goes.
	for (int i = 0; i < 14; i++)
		take(8, SPAN_LARGE);
	REQUIRE(heap.dirty_pages == 0);
	REQUIRE(os_fake_resident(newest) == 0);
	REQUIRE(page_heap_owed_pages() == 0);
}

// bench/realloc string: strings moving between page runs free runs that the
// next string takes a moment later; purging them for a climb made each reuse
// a page fault and a climb of its own, half of that row's faults.
TEST_CASE_METHOD(young_climb_fixture, "a climb leaves runs freed a moment ago dirty, and purges them once they are old",
		 "[page_heap]")
{
	char *oldest = (char *)span_start(span_superblock(holes[0]), holes[0]);
	os_fake_counts_t before = os_fake_counts();
	// 8 fresh pages above the mark, owed to a purge, but every hole was
	// freed just now: nothing goes, the 8 pages stay owed.
	os_fake_advance(PAGE_HEAP_OWED_MIN_AGE_NS - 1);
	take(8, SPAN_LARGE);
	REQUIRE(heap.dirty_pages == 120);
	REQUIRE(os_fake_counts().purges == before.purges);
	REQUIRE(os_fake_resident(oldest) == 1);
	REQUIRE(page_heap_owed_pages() == 8);
	// Once they are old, the next climb pays both: the four oldest holes.
	os_fake_advance(1);
	take(8, SPAN_LARGE);
	REQUIRE(heap.dirty_pages == 104);
	REQUIRE(os_fake_resident(oldest) == 0);
	REQUIRE(os_fake_resident((char *)span_start(span_superblock(holes[4]), holes[4])) == 1);
	REQUIRE(page_heap_owed_pages() == 0);
}

TEST_CASE_METHOD(climb_fixture, "a climb below the mark or by small blocks or in a heap of large blocks purges nothing",
		 "[page_heap]")
{
	os_fake_counts_t before = os_fake_counts();
	SECTION("below the mark: the heap held this much before")
	{
		// The holes purged (the heap now holds 120 pages, its mark is
		// 240), then one span freed: 4 dirty pages next to purged ones.
		REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == 120);
		page_heap_free(live[0]);
		live.erase(live.begin());
		REQUIRE(heap.dirty_pages == 4);
		before = os_fake_counts();
		take(8, SPAN_LARGE); /* no 8-page dirty run: fresh, below the mark */
		REQUIRE(heap.dirty_pages == 4);
	}
	SECTION("small blocks' spans (a churn at its plateau comes back for its runs)")
	{
		for (int i = 0; i < 5; i++)
			take(8, SPAN_CENTRAL);
		REQUIRE(heap.dirty_pages == 120);
		// ... but they moved the mark: a large block now climbs from there.
		take(8, SPAN_LARGE);
		REQUIRE(heap.dirty_pages == 112);
		before.purges += 2;
	}
	SECTION("a heap mostly of large blocks (a loop over them comes back for its runs)")
	{
		take(200, SPAN_LARGE);
		take(8, SPAN_LARGE);
		REQUIRE(heap.dirty_pages == 120);
	}
	REQUIRE(os_fake_counts().purges == before.purges);
}

// The heaps of the table are set up at their first use (page_heap.c:
// page_heaps_ready): a process on few of many possible CPUs touches only
// the pages of the heaps it uses. Passes over every heap (the background
// thread's ticks, ebb_trim's, stats, a change of decay_ms) must neither set
// up nor lock the others.
namespace {

// The table's heaps that nothing has used yet in this process (all of them
// when the case runs alone, as ctest runs it).
std::vector<unsigned> unused_heaps()
{
	std::vector<unsigned> v;
	for (unsigned i = 0; i < page_heap_count(); i++)
		if (page_heap_peek(i) == nullptr)
			v.push_back(i);
	return v;
}

uint64_t decay_ns_of(long long ms)
{
	return ms < 0 ? UINT64_MAX : (uint64_t)ms * MS;
}

} // namespace

TEST_CASE("a heap of the table is set up at its first use, and passes over every heap set none up", "[page_heap]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "700");
	std::vector<unsigned> unused = unused_heaps();
	REQUIRE(page_heap_count() > 1);
	if (unused.size() < 2) {
		WARN("heaps used by earlier cases of this process; run the case alone");
		return;
	}
	page_heap_stats_t st{};
	page_heap_stats_add(&st);
	background_tick(os_fake_now(), false);
	background_tick(os_fake_now(), true); // what ebb_trim does
	unit_option("decay_ms", "900");
	init_option_changed(OPT_DECAY_MS); // as ebb_option_set does
	REQUIRE(unused_heaps() == unused);

	unsigned u = unused[0];
	os_fake_set_cpu(u);
	page_heap_t *h = page_heap_for_cpu(os_cpu_id());
	REQUIRE(h == page_heap_get(u));
	REQUIRE(page_heap_peek(u) == h);
	CHECK(h->index == u);
	CHECK(h->decay.interval_ns == decay_ns_of(900));
	span_t *s = page_heap_alloc(h, 3, 1, SPAN_LARGE);
	REQUIRE(s != nullptr);
	superblock_map_span(span_superblock(s), s->page, s->npages, 0);
	std::vector<unsigned> rest(unused.begin() + 1, unused.end());
	CHECK(unused_heaps() == rest);
	page_heap_stats_t mid{};
	page_heap_stats_add(&mid);
	CHECK(mid.large_pages == st.large_pages + 3);
	page_heap_free(s);
	CHECK(background_tick(os_fake_now(), true) > 0); // purged and unmapped
	CHECK(h->dirty_pages == 0);
	CHECK(unused_heaps() == rest);
	os_fake_set_cpu(0);
}

// First uses of every heap from several threads at once, against the
// background thread's passes, ebb_trim's, stats and decay_ms changes. Each
// round runs in a forked child of this (single-threaded) process, so that
// every round starts with the heaps this process has not used; the child's
// exit status names the check that failed. Under TSan too.
TEST_CASE("first uses of the heaps race the passes over every heap, ebb_trim and decay_ms changes", "[page_heap]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "1000");
	std::vector<unsigned> unused = unused_heaps();
	if (unused.size() < 2) {
		WARN("heaps used by earlier cases of this process; run the case alone");
		return;
	}
	const unsigned n = page_heap_count();
	for (int round = 0; round < 12; round++) {
		auto r = apitest::run_child([n, round] {
			const unsigned users = 4;
			std::atomic<unsigned> go{0}, users_done{0};
			std::atomic<int> bad{0};
			std::vector<std::thread> th;
			for (unsigned t = 0; t < users; t++)
				th.emplace_back([&, t] {
					go.fetch_add(1);
					while (go.load() < users + 2) {
					}
					for (unsigned k = 0; k < n; k++) {
						unsigned i = (t + k + (unsigned)round) % n;
						page_heap_t *h = page_heap_get(i);
						if (h != page_heap_peek(i) || h->index != i)
							bad.store(1);
						span_t *s = page_heap_alloc(h, 1 + t, 1, SPAN_LARGE);
						if (s == nullptr) {
							bad.store(2);
							continue;
						}
						superblock_map_span(span_superblock(s), s->page, s->npages, 0);
						page_heap_free(s);
					}
					users_done.fetch_add(1);
				});
			th.emplace_back([&] { // the background thread's passes and ebb_trim's
				go.fetch_add(1);
				while (go.load() < users + 2) {
				}
				for (unsigned i = 0; users_done.load() < users; i++) {
					background_tick(os_fake_now(), i % 2 == 1);
					page_heap_stats_t st{};
					page_heap_stats_add(&st);
				}
			});
			th.emplace_back([&] { // decay_ms changes, the last one while heaps are set up
				go.fetch_add(1);
				while (go.load() < users + 2) {
				}
				for (int i = 0; i <= 40; i++) { // as ebb_option_set does
					unit_option("decay_ms", i == 40 ? "1500" : i % 2 ? "2000" : "3000");
					init_option_changed(OPT_DECAY_MS);
				}
			});
			for (std::thread &x : th)
				x.join();
			if (bad.load() != 0)
				return 10 + bad.load();
			page_heap_stats_t st{};
			page_heap_stats_add(&st);
			if (st.large_pages != 0 || st.central_pages != 0)
				return 20;
			for (unsigned i = 0; i < n; i++) {
				page_heap_t *h = page_heap_peek(i);
				if (h == nullptr)
					return 30;
				if (h->decay.interval_ns != decay_ns_of(1500))
					return 31; // set up with the interval of before the last change
				lock_acquire(&h->lock); // free, and usable
				lock_release(&h->lock);
			}
			background_tick(os_fake_now(), true);
			for (unsigned i = 0; i < n; i++)
				if (page_heap_peek(i)->dirty_pages != 0 || page_heap_peek(i)->superblocks_count != 0)
					return 40;
			return 0;
		});
		INFO("round " << round << ": " << r.err);
		REQUIRE(r.exited);
		REQUIRE(r.code == 0);
	}
	CHECK(unused_heaps() == unused); // the children's heaps were theirs
}

// The heap profiler's sample runs come from a heap of their own
// (page_heap_prof), so that the CPUs' heaps hold what they would with prof
// off: it is none of theirs, its runs free back to it, and no CPU's heap
// takes its dirty runs; its dirty pages are resident like any (in the
// dirty total), and the passes over every heap (stats) cover it.
TEST_CASE("the profiler's heap is its own", "[page_heap]")
{
	unit_option("background_thread", "0");
	unit_option("decay_ms", "-1");
	page_heap_t *p = page_heap_prof();
	REQUIRE(page_heap_count_all() == page_heap_count() + 1);
	CHECK(p == page_heap_peek(page_heap_count()));
	for (unsigned cpu = 0; cpu < 2 * page_heap_count(); cpu++)
		CHECK(page_heap_for_cpu(cpu) != p);
	size_t dirty = page_heap_dirty_total();
	span_t *s = page_heap_alloc(p, 8, 1, SPAN_LARGE);
	REQUIRE(s != nullptr);
	superblock_t *sb = span_superblock(s);
	CHECK(sb->heap == p);
	superblock_map_span(sb, s->page, s->npages, 0);
	page_heap_free(s);
	CHECK(p->dirty_pages >= 8);
	CHECK(page_heap_dirty_total() == dirty + 8);
	// A CPU's heap takes no free run of the profiler's.
	page_heap_t *h = page_heap_for_cpu(0);
	span_t *t = page_heap_alloc(h, 8, 1, SPAN_LARGE);
	REQUIRE(t != nullptr);
	CHECK(span_superblock(t)->heap != p);
	superblock_map_span(span_superblock(t), t->page, t->npages, 0);
	page_heap_free(t);
	page_heap_stats_t st{};
	page_heap_stats_add(&st);
	CHECK(st.dirty_pages >= p->dirty_pages); // stats cover it
}

// initdb's backend frees blocks of 0.5-2 MiB that it does not ask for again,
// then peaks while its shared memory grows: such a block goes back to the
// kernel in its free while the heap is small. A program that keeps asking
// for blocks that size (more pages over half a decay_ms than it has in
// use) is cycling through them: their pages stay dirty for the next one.
TEST_CASE_METHOD(heap_fixture, "a small heap gives a freed block of 512 KiB back at once, unless it cycles through them",
		 "[page_heap]")
{
	unit_option("decay_ms", "1000");
	page_heap_climb_reset();
	// Two whole windows with no request: the counts of earlier tests go.
	for (int i = 0; i < 2; i++) {
		os_fake_advance(600 * MS);
		page_heap_inuse_window(decay_clock_now(os_fake_now()));
	}
	const size_t big = PAGE_HEAP_PROMPT_PAGES;
	// The program's own data: small blocks' spans of 4 * big pages.
	std::vector<span_t *> spans;
	for (int i = 0; i < 4; i++) {
		span_t *s = page_heap_alloc(&heap, big, 1, SPAN_CENTRAL);
		REQUIRE(s != nullptr);
		spans.push_back(s);
	}
	size_t dirty = heap.dirty_pages;
	os_fake_counts_t before = os_fake_counts();

	span_t *b = alloc(big);
	char *p = (char *)span_start(span_superblock(b), b);
	memset(p, 0x5a, big * 4096);
	page_heap_free_large(b);
	REQUIRE(os_fake_counts().purges == before.purges + 1);
	REQUIRE(os_fake_resident(p) == 0);
	REQUIRE(os_fake_resident(p + (big - 1) * 4096) == 0);
	REQUIRE(heap.dirty_pages == dirty);

	// One page fewer: an ordinary free, dirty until decay.
	span_t *c = alloc(big - 1);
	char *q = (char *)span_start(span_superblock(c), c);
	memset(q, 0x5a, (big - 1) * 4096);
	before = os_fake_counts();
	page_heap_free_large(c);
	REQUIRE(os_fake_counts().purges == before.purges);
	REQUIRE(heap.dirty_pages == dirty + big - 1);

	// Cycling: after the program asked for more such pages than it uses
	// (4 * big in spans, 1 block at a time), the frees keep them dirty.
	for (int i = 0; i < 5; i++) {
		span_t *d = alloc(big);
		memset(span_start(span_superblock(d), d), 0x5a, 4096);
		page_heap_free_large(d);
	}
	before = os_fake_counts();
	span_t *e = alloc(big);
	char *r = (char *)span_start(span_superblock(e), e);
	memset(r, 0x5a, big * 4096);
	page_heap_free_large(e);
	REQUIRE(os_fake_counts().purges == before.purges);
	REQUIRE(os_fake_resident(r) == 1);
	REQUIRE(heap.dirty_pages >= big);

	for (span_t *s : spans)
		page_heap_free(s);
	unit_option("decay_ms", "-1"); /* as every other test here leaves it */
}

// The burst hold (decay.h, "The burst hold"), as the background thread
// judges it: one look per round, every EBB_BURST_LOOK_NS while a hold may
// start or goes on, on a virtual clock.
namespace {
struct burst_looks {
	decay_burst_t b{};
	uint64_t t = 1000 * MS, frees = 0, inuse = 1u << 20; // 4 GiB in use
	size_t dirty = 1u << 16;
	uint64_t preempted = 0;
	const uint64_t interval = 500 * MS;
	decay_burst_verdict look(uint64_t gap, uint64_t new_frees, int64_t inuse_change)
	{
		t += gap;
		frees += new_frees;
		inuse += inuse_change;
		if (inuse_change < 0)
			dirty += (size_t)-inuse_change;
		return decay_burst_look(&b, t, frees, inuse, dirty, preempted, interval);
	}
};
const int64_t FALL = (int64_t)EBB_BURST_FALL_PAGES;
} // namespace

TEST_CASE("the burst hold starts while frees come and the pages in use keep falling, and ends with them",
	  "[page_heap][decay][background]")
{
	burst_looks l;
	REQUIRE(l.look(0, 0, 0) == DECAY_BURST_NONE); // the first look: nothing came
	// The burst's first look after a second's sleep cannot judge, nor can
	// its first fall: the thread looks again before it purges.
	REQUIRE(l.look(1000 * MS, 50, -4 * FALL) == DECAY_BURST_PROBE);
	REQUIRE(l.look(EBB_BURST_LOOK_NS, 50, -4 * FALL) == DECAY_BURST_PROBE);
	REQUIRE(l.look(EBB_BURST_LOOK_NS, 50, -4 * FALL) == DECAY_BURST_HOLD);
	for (int i = 0; i < 200; i++) // 0.8 s of frees
		REQUIRE(l.look(EBB_BURST_LOOK_NS, 50, -4 * FALL) == DECAY_BURST_HOLD);
	// The freeing thread off its CPU for 40 ms: still the same burst.
	for (int i = 0; i < 10; i++)
		REQUIRE(l.look(EBB_BURST_LOOK_NS, 0, 0) == DECAY_BURST_HOLD);
	REQUIRE(l.look(EBB_BURST_LOOK_NS, 50, -4 * FALL) == DECAY_BURST_HOLD);
	// The frees end: held for EBB_BURST_QUIET_NS more, then the usual rules.
	uint64_t end = l.t;
	decay_burst_verdict v;
	while ((v = l.look(EBB_BURST_LOOK_NS, 0, 0)) == DECAY_BURST_HOLD)
		REQUIRE(l.t - end <= EBB_BURST_QUIET_NS);
	REQUIRE(v == DECAY_BURST_NONE);
	REQUIRE(l.t - end <= EBB_BURST_QUIET_NS + EBB_BURST_LOOK_NS);

	// On a loaded machine: the program's threads preempted since the last
	// fall (a freeing thread waiting for a CPU) hold it longer.
	l.look(EBB_BURST_QUIET_NS, 0, 0);
	l.look(EBB_BURST_LOOK_NS, 50, -4 * FALL);
	REQUIRE(l.look(EBB_BURST_LOOK_NS, 50, -4 * FALL) == DECAY_BURST_HOLD);
	l.preempted += 3;
	end = l.t;
	while ((v = l.look(EBB_BURST_LOOK_NS, 0, 0)) == DECAY_BURST_HOLD)
		REQUIRE(l.t - end <= EBB_BURST_QUIET_PREEMPTED_NS);
	REQUIRE(l.t - end > EBB_BURST_QUIET_NS + EBB_BURST_LOOK_NS);
	REQUIRE(l.t - end <= EBB_BURST_QUIET_PREEMPTED_NS + EBB_BURST_LOOK_NS);
}

TEST_CASE("the burst hold lasts at most its cap, and holds nothing without decay", "[page_heap][decay][background]")
{
	burst_looks l;
	l.look(0, 0, 0);
	l.look(EBB_BURST_LOOK_NS, 50, -FALL);
	REQUIRE(l.look(EBB_BURST_LOOK_NS, 50, -FALL) == DECAY_BURST_HOLD);
	uint64_t start = l.t;
	decay_burst_verdict v;
	while ((v = l.look(EBB_BURST_LOOK_NS, 50, -FALL)) == DECAY_BURST_HOLD)
		REQUIRE(l.t - start < EBB_BURST_CAP_DECAYS * l.interval);
	// Then none while the same burst goes on, whatever its length...
	REQUIRE(v == DECAY_BURST_NONE);
	for (int i = 0; i < 100; i++)
		REQUIRE(l.look(EBB_BURST_LOOK_NS, 50, -FALL) == DECAY_BURST_NONE);
	// ... and the next burst, after a pause, is held again.
	l.look(EBB_BURST_QUIET_NS + MS, 0, 0);
	l.look(EBB_BURST_LOOK_NS, 50, -FALL);
	REQUIRE(l.look(EBB_BURST_LOOK_NS, 50, -FALL) == DECAY_BURST_HOLD);
	// decay_ms 0 (purge at once) or -1 (never): no hold, no probe.
	burst_looks z;
	for (uint64_t interval : {(uint64_t)0, UINT64_MAX}) {
		z.look(0, 0, 0);
		for (int i = 0; i < 10; i++) {
			z.t += EBB_BURST_LOOK_NS;
			z.frees += 50;
			z.inuse -= 4 * FALL;
			REQUIRE(decay_burst_look(&z.b, z.t, z.frees, z.inuse, z.dirty, 0, interval) == DECAY_BURST_NONE);
		}
	}
}

TEST_CASE("a steady server that frees and allocates alike is not held", "[page_heap][decay][background]")
{
	burst_looks l;
	l.look(0, 0, 0);
	// Ticks every 31 ms (an epoch of 500 ms), frees at every one, the
	// pages in use level, rising, or swinging by 4 MiB about a level: a
	// look that sees the swing's fall probes, and the next sees none.
	for (int i = 0; i < 100; i++) {
		REQUIRE(l.look(31 * MS, 1000, 0) == DECAY_BURST_NONE);
		REQUIRE(l.look(31 * MS, 1000, FALL / 2) == DECAY_BURST_NONE);
		REQUIRE(l.look(31 * MS, 1000, -FALL / 2) == DECAY_BURST_NONE);
		REQUIRE(l.look(31 * MS, 1000, 4 * FALL) == DECAY_BURST_NONE);
		REQUIRE(l.look(31 * MS, 1000, -4 * FALL) == DECAY_BURST_PROBE);
		REQUIRE(l.look(EBB_BURST_LOOK_NS, 1000, 4 * FALL) == DECAY_BURST_NONE);
	}
	// A fall without frees is no burst of frees (the count says what came).
	l.look(31 * MS, 0, -4 * FALL);
	REQUIRE(l.look(EBB_BURST_LOOK_NS, 0, -4 * FALL) == DECAY_BURST_NONE);
	// Nor does a hold, once on, go on with the swing: it needs a new low.
	l.look(31 * MS, 10, -FALL);
	REQUIRE(l.look(EBB_BURST_LOOK_NS, 10, -FALL) == DECAY_BURST_HOLD);
	decay_burst_verdict v = DECAY_BURST_HOLD;
	for (int i = 0; i < 40 && v == DECAY_BURST_HOLD; i++) {
		v = l.look(EBB_BURST_LOOK_NS, 10, 2 * FALL);
		if (v == DECAY_BURST_HOLD)
			v = l.look(EBB_BURST_LOOK_NS, 10, -2 * FALL);
	}
	REQUIRE(v == DECAY_BURST_NONE);
}

// What the thread's pass does while it holds, against what every other
// pass does on the same heap: the decay a free runs in line (and the tests'
// passes), ebb_trim's (all).
TEST_CASE_METHOD(heap_fixture, "a held pass purges only above the hold's cap, and no other pass holds", "[page_heap]")
{
	unit_option("decay_ms", "100");
	// Whole windows with no request: earlier tests' loops and swings go.
	for (int i = 0; i < 4; i++) {
		os_fake_advance(60 * MS);
		page_heap_inuse_window(decay_clock_now(os_fake_now()));
	}
	page_heap_init(&heap, 0, os_fake_now());
	// Eight runs of 64 pages, kept apart by spans in use.
	std::vector<span_t *> spans, apart;
	for (int i = 0; i < 8; i++) {
		spans.push_back(alloc(64));
		apart.push_back(alloc(1));
	}
	for (span_t *s : spans)
		page_heap_free(s);
	REQUIRE(heap.dirty_pages == 512);
	// All of it due, and the windows past these requests (no loop, no swing).
	for (int i = 0; i < 3; i++) {
		os_fake_advance(60 * MS);
		page_heap_inuse_window(decay_clock_now(os_fake_now()));
	}
	// The cap counts the dirty pages of every heap (other tests' too).
	size_t others = page_heap_dirty_total() - heap.dirty_pages;
	// Held, below the cap: nothing goes.
	REQUIRE(page_heap_decay_held(&heap, os_fake_now(), others + 1024) == 0);
	REQUIRE(page_heap_decay_held(&heap, os_fake_now(), others + 512) == 0);
	REQUIRE(heap.dirty_pages == 512);
	// Above it: the part above, the oldest runs first.
	REQUIRE(page_heap_decay_held(&heap, os_fake_now(), others + 448) == 64);
	REQUIRE(heap.dirty_pages == 448);
	// The pass with no hold (the one a free runs in line without the
	// background thread, page_heap_maybe_decay): what is due, all of it.
	REQUIRE(page_heap_decay(&heap, os_fake_now(), false) == 448);
	REQUIRE(heap.dirty_pages == 0);
	// ebb_trim's pass: everything at once.
	std::vector<span_t *> more;
	for (int i = 0; i < 4; i++)
		more.push_back(alloc(64));
	for (span_t *s : more)
		page_heap_free(s);
	REQUIRE(heap.dirty_pages >= 256);
	REQUIRE(page_heap_decay_held(&heap, os_fake_now(), others + 1024) == 0);
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) >= 256);
	REQUIRE(heap.dirty_pages == 0);
	for (span_t *s : apart)
		page_heap_free(s);
	unit_option("decay_ms", "-1");
}

TEST_CASE_METHOD(heap_fixture, "after a burst entirely free purged superblocks are unmapped at once and the others wait",
		 "[page_heap]")
{
	// Three superblocks: one entirely free and purged, one entirely free
	// and dirty, one with a live span; none has waited unmap_delay_ms.
	span_t *a = alloc(EBB_SB_USABLE_PAGES), *b = alloc(EBB_SB_USABLE_PAGES), *c = alloc(EBB_SB_USABLE_PAGES);
	superblock_t *sa = span_superblock(a), *sb = span_superblock(b), *sc = span_superblock(c);
	REQUIRE(sa != sb);
	REQUIRE(sb != sc);
	page_heap_free(a);
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == EBB_SB_USABLE_PAGES);
	page_heap_free(b);
	REQUIRE(heap.superblocks_count == 3);
	// The delay's rule alone unmaps nothing yet.
	REQUIRE(page_heap_release(&heap, os_fake_now(), false) == 0);
	os_fake_counts_t before = os_fake_counts();
	REQUIRE(page_heap_release_purged(&heap, os_fake_now()) == 1);
	CHECK(os_fake_counts().unmaps == before.unmaps + 1);
	CHECK(superblock_registry[registry_index((uintptr_t)sa)] == REG_NONE);
	CHECK(superblock_registry[registry_index((uintptr_t)sb)] == REG_HEADER);
	CHECK(superblock_registry[registry_index((uintptr_t)sc)] == REG_HEADER);
	CHECK(heap.superblocks_count == 2);
	CHECK(heap.dirty_pages == EBB_SB_USABLE_PAGES);
	CHECK(heap.purged_pages == 0);
	// The dirty one keeps its pages for a program that comes back...
	REQUIRE(page_heap_release_purged(&heap, os_fake_now()) == 0);
	// ...until decay purges them.
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == EBB_SB_USABLE_PAGES);
	REQUIRE(page_heap_release_purged(&heap, os_fake_now()) == 1);
	CHECK(superblock_registry[registry_index((uintptr_t)sb)] == REG_NONE);
	CHECK(heap.superblocks_count == 1);
	// A superblock with a live span never goes; once freed and purged it does.
	REQUIRE(page_heap_release_purged(&heap, os_fake_now()) == 0);
	page_heap_free(c);
	REQUIRE(page_heap_decay(&heap, os_fake_now(), true) == EBB_SB_USABLE_PAGES);
	REQUIRE(page_heap_release_purged(&heap, os_fake_now()) == 1);
	CHECK(heap.superblocks_count == 0);
	CHECK(heap.dirty_pages == 0);
	CHECK(heap.purged_pages == 0);
}

// A pending span waits for its own page count (page_heap.c, "Pending
// spans"): a CENTRAL request of another page count that a listed dirty run
// fits takes that run and leaves the pending spans as they are, and a
// request of a pending span's page count takes it from under a newer one
// of another count. One that no listed run fits still merges them.
TEST_CASE_METHOD(heap_fixture, "pending spans wait for their page count while a listed run serves another",
		 "[page_heap]")
{
	span_t *g0 = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	span_t *l = alloc(3); // LARGE: merged and listed when freed
	span_t *g1 = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	span_t *a = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL);
	span_t *g2 = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	span_t *c = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	span_t *g3 = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	REQUIRE((g0 && g1 && a && g2 && c && g3));
	unsigned pl = l->page, pa = a->page, pc = c->page;
	page_heap_free(l);
	page_heap_free(a);
	page_heap_free(c); // the pending stack: c (1 page) on a (2)
	REQUIRE(heap.pending == c);
	REQUIRE(heap.pending_pages == 3);
	REQUIRE(heap.dirty_pages == 6);

	span_t *t = page_heap_alloc(&heap, 3, 1, SPAN_CENTRAL);
	REQUIRE(t != nullptr);
	CHECK(t->page == pl); // the listed run, not a merge of the pending ones
	CHECK(heap.pending == c);
	CHECK(heap.pending_pages == 3);
	CHECK(heap.dirty_pages == 3);

	span_t *u = page_heap_alloc(&heap, 2, 1, SPAN_CENTRAL);
	REQUIRE(u != nullptr);
	CHECK(u->page == pa); // from under c
	CHECK(u->state == SPAN_CENTRAL);
	CHECK(u->next == nullptr);
	CHECK(heap.pending == c);
	CHECK(c->next == nullptr);
	CHECK(heap.pending_pages == 1);
	CHECK(heap.dirty_pages == 1);

	// No listed dirty run fits 4 pages: the pending span is merged first and
	// the request, finding no dirty run of 4, takes purged pages; c's page is
	// then a listed dirty run of its own.
	span_t *v = page_heap_alloc(&heap, 4, 1, SPAN_CENTRAL);
	REQUIRE(v != nullptr);
	CHECK(heap.pending == nullptr);
	CHECK(heap.pending_pages == 0);
	CHECK(heap.dirty_pages == 1);
	span_t *w = page_heap_alloc(&heap, 1, 1, SPAN_CENTRAL);
	REQUIRE(w != nullptr);
	CHECK(w->page == pc);
	CHECK(heap.dirty_pages == 0);
	for (span_t *s : { w, v, u, t, g3, g2, g1, g0 })
		page_heap_free(s);
}

// Each list index 1 .. EBB_SB_PAGES has a head of its own, and the heads a
// small process uses (short runs, and the longest: a fresh superblock's run
// as its tail is cut) sit on the heap's first page with its fields.
TEST_CASE("run list heads: one slot per page count, both ends on the heap's first page", "[page_heap]")
{
	std::vector<bool> taken(EBB_SB_PAGES, false);
	for (unsigned i = 1; i <= EBB_SB_PAGES; i++) {
		unsigned slot = page_heap_run_slot(i);
		REQUIRE(slot < EBB_SB_PAGES);
		REQUIRE(!taken[slot]);
		taken[slot] = true;
	}
	auto on_first_page = [](unsigned i) {
		return offsetof(page_heap_t, runs) + (page_heap_run_slot(i) + 1) * sizeof(((page_heap_t *)0)->runs[0]) <=
		       EBB_PAGE_SIZE;
	};
	for (unsigned i = 1; i <= EBB_RUN_FIRST_SHORT; i++)
		CHECK(on_first_page(i));
	for (unsigned i = EBB_SB_PAGES - 127; i <= EBB_SB_PAGES; i++)
		CHECK(on_first_page(i));
	CHECK(!on_first_page(EBB_SB_PAGES / 2));
}
