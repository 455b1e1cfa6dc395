// The checkers of the EBB_INVARIANTS build fire: each test breaks one rule
// on purpose in a forked child (lock order, a central list's counters, a
// thread cache's bounds) and asserts that the child died of SIGABRT with the
// checker's report naming what broke. In other builds the checkers do not
// exist and this file is empty.
#include <catch2/catch.hpp>

#include "core/base/config.h"

#if EBB_INVARIANTS

#include <vector>

#include "core/blocks/central.h"
#include "core/blocks/freelist.h"
#include "core/blocks/size_class.h"
#include "core/pages/page_heap.h"
#include "core/pages/span_check.h"
#include "core/pages/superblock.h"
#include "core/runtime/atomic.h"
#include "tcache/tcache.h"
#include "tests/api/child_util.h"
#include "tests/support/unit.h"

using apitest::run_child;

namespace {

bool died_saying(const apitest::ChildResult &r, const char *text)
{
	INFO("child stderr: " << r.err);
	return r.signal == SIGABRT && r.err.find(text) != std::string::npos;
}

// A cache laid out as tcache_create lays it out, every bin empty, max 0.
struct FakeCache {
	std::vector<void *> slots;
	tcache_t tc{};
	FakeCache()
	{
		size_t n = 1;
		for (unsigned c = 1; c < EBB_NUM_CLASSES; c++)
			n += size_classes[c].bin_cap;
		slots.resize(n);
		tc.slots = slots.data();
		void **s = tc.slots;
		for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
			s += size_classes[c].bin_cap;
			tc.top[c] = tc.empty[c] = tc.full[c] = s;
		}
	}
};

} // namespace

TEST_CASE("invariants: a lock taken below a held rank aborts naming both ranks", "[invariants]")
{
	auto r = run_child([] {
		static ebb_lock_t meta = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_META);
		static ebb_lock_t central = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_CENTRAL);
		lock_acquire(&central);
		lock_acquire(&meta); // in order: fine
		lock_release(&meta);
		lock_release(&central);
		lock_acquire(&meta);
		lock_acquire(&central); // out of order
		return 1;
	});
	CHECK(died_saying(r, "lock order: central list lock (rank 5)"));
	CHECK(died_saying(r, "acquired while holding a metadata lock (rank 7)"));
}

TEST_CASE("invariants: two locks of one rank abort, except in a fork handler's loop", "[invariants]")
{
	auto r = run_child([] {
		static ebb_lock_t a = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_PAGE_HEAP);
		static ebb_lock_t b = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_PAGE_HEAP);
		lock_bulk_enter();
		lock_acquire(&a);
		lock_acquire(&b); // allowed: taking every lock of the rank
		lock_bulk_leave();
		lock_release(&b);
		lock_release(&a);
		if (lock_ranks_held[LOCK_RANK_PAGE_HEAP] != 0)
			return 2;
		lock_acquire(&a);
		lock_acquire(&b);
		return 1;
	});
	CHECK(died_saying(r, "page heap lock (rank 6)"));
	CHECK(died_saying(r, "while holding a page heap lock (rank 6)"));
}

TEST_CASE("invariants: a lock without a rank aborts at its first acquire", "[invariants]")
{
	auto r = run_child([] {
		static ebb_lock_t l = EBB_LOCK_INITIALIZER;
		if (!lock_try(&l)) // a try never waits: not checked
			return 2;
		lock_release(&l);
		lock_acquire(&l);
		return 1;
	});
	CHECK(died_saying(r, "has no rank (0): give it one at init"));
}

TEST_CASE("invariants: a thread waiting for a lock it holds aborts", "[invariants]")
{
	auto r = run_child([] {
		static ebb_lock_t l = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_TCACHE_LIST);
		lock_acquire(&l);
		if (lock_try(&l) || !lock_held_by_self(&l)) // a try never waits
			return 2;
		lock_acquire(&l);
		return 1;
	});
	CHECK(died_saying(r, "thread-cache list lock (rank 2)"));
	CHECK(died_saying(r, "acquired again by the thread that holds it"));
}

TEST_CASE("invariants: a central list's used_blocks off by one aborts at the next unlock", "[invariants]")
{
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(64);
	auto r = run_child([cls] {
		void *b[4];
		if (central_refill(0, cls, 4, false, b) != 4)
			return 2;
		superblock_t *sb;
		span_t *s = superblock_span_lookup(b[0], &sb);
		central_t *home = s->u.central.home;
		lock_acquire(&home->lock);
		central_check(home, true); // whole: passes
		lock_release(&home->lock);
		home->used_blocks++; // a block counted that no span has out
		lock_acquire(&home->lock);
		central_check(home, true);
		return 1;
	});
	CHECK(died_saying(r, "used_blocks != sum of the spans' used"));
}

// A lazy carve's pages without class must be given back (their blocks
// withheld): a page of a partial span that lost its class otherwise would
// make free() reject blocks the span hands out.
TEST_CASE("invariants: a page of a central span without class that is not given back aborts", "[invariants]")
{
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(8192);
	auto r = run_child([cls] {
		void *b[1];
		if (central_refill(3, cls, 1, false, b) != 1)
			return 2;
		superblock_t *sb;
		span_t *s = superblock_span_lookup(b[0], &sb);
		central_t *home = s->u.central.home;
		lock_acquire(&home->lock);
		if (!s->in_partial)
			return 3;
		central_check(home, true); // whole: passes
		unsigned page = s->page;
		if (s->u.central.given_back & 1)
			return 4;
		pmap_set_class(sb, page, 0); // page 0 holds the block out: not given back
		central_check(home, true);
		return 1;
	});
	CHECK(died_saying(r, "a page without class is not given back"));
}

TEST_CASE("invariants: a span's free list off its counts aborts, the check wants the lock", "[invariants]")
{
	unit_option("background_thread", "0");
	unsigned cls = size_class_of(128);
	auto r = run_child([cls] {
		void *b[2];
		if (central_refill(0, cls, 2, false, b) != 2)
			return 2;
		superblock_t *sb;
		central_t *home = superblock_span_lookup(b[0], &sb)->u.central.home;
		lock_acquire(&home->lock);
		if (home->partial == nullptr)
			return 3;
		// A block dropped from the span's list with no count moved: the
		// list is one shorter than blocks - used - withheld - lost.
		span_t *s = home->partial;
		s->u.central.free_head = freelist_span_next(s->u.central.free_head);
		central_check(home, true);
		return 1;
	});
	CHECK(died_saying(r, "free list's length != blocks - used - withheld - lost per span"));
	auto r2 = run_child([cls] {
		void *b[1];
		if (central_refill(0, cls, 1, false, b) != 1)
			return 2;
		superblock_t *sb;
		central_check(superblock_span_lookup(b[0], &sb)->u.central.home, false);
		return 1;
	});
	CHECK(died_saying(r2, "checked without its lock"));
}

TEST_CASE("invariants: thread-cache bounds and budget are checked", "[invariants]")
{
	unit_init(); // the size classes
	FakeCache ok;
	tcache_check(&ok.tc, 0); // an empty cache passes
	tcache_check(&ok.tc, 5);
	auto r = run_child([] {
		FakeCache f;
		f.tc.budget = size_classes[3].size; // no bin has room for it
		tcache_check(&f.tc, 0);
		return 1;
	});
	CHECK(died_saying(r, "budget != sum of max * size"));
	auto r2 = run_child([] {
		FakeCache f;
		f.tc.top[7]--; // a block in a bin whose bound is 0
		tcache_check(&f.tc, 7);
		return 1;
	});
	CHECK(died_saying(r2, "bin 7: top outside [full, empty]"));
}

TEST_CASE("invariants: span state writes follow span.h's table, under the heap lock", "[invariants]")
{
	static ebb_lock_t heap = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_PAGE_HEAP);
	span_t s{};
	s.state = SPAN_FREE_DIRTY;
	lock_acquire(&heap);
	SPAN_SET_STATE(&s, SPAN_BUSY, &heap); // purge takes it out
	SPAN_SET_STATE(&s, SPAN_FREE_PURGED, &heap);
	SPAN_SET_STATE(&s, SPAN_CENTRAL, &heap); // alloc
	lock_release(&heap);
	CHECK(s.state == SPAN_CENTRAL);
	auto r = run_child([] {
		span_t c{};
		c.state = SPAN_CENTRAL;
		c.page = 7;
		lock_acquire(&heap);
		SPAN_SET_STATE(&c, SPAN_BUSY, &heap); // a CENTRAL span is never purged
		return 1;
	});
	CHECK(died_saying(r, "(page 7): state CENTRAL -> BUSY is not in span.h's table"));
	auto r2 = run_child([] {
		span_t f{};
		f.state = SPAN_FREE_DIRTY;
		SPAN_SET_STATE(&f, SPAN_LARGE, &heap); // not holding it
		return 1;
	});
	CHECK(died_saying(r2, "state FREE_DIRTY -> LARGE written without the page heap lock"));
}

TEST_CASE("invariants: page-heap counts that disagree with the runs abort", "[invariants]")
{
	unit_option("background_thread", "0");
	auto r = run_child([] {
		span_t *s = page_heap_alloc(page_heap_get(0), 3, 1, SPAN_LARGE);
		if (s == nullptr)
			return 2;
		superblock_t *sb = span_superblock(s);
		page_heap_t *h = sb->heap;
		lock_acquire(&h->lock);
		page_heap_check(h, sb); // passes
		sb->free_pages++; // a page counted free that no run holds
		page_heap_check(h, sb);
		return 1;
	});
	CHECK(died_saying(r, "free runs' pages != the superblock's free_pages"));
	auto r2 = run_child([] {
		span_t *s = page_heap_alloc(page_heap_get(0), 3, 1, SPAN_LARGE);
		if (s == nullptr)
			return 2;
		page_heap_t *h = span_superblock(s)->heap;
		lock_acquire(&h->lock);
		h->dirty_pages += 5;
		for (int i = 0; i < 64; i++) // the whole heap is checked every 64th call
			page_heap_check(h, nullptr);
		return 1;
	});
	CHECK(died_saying(r2, "dirty_pages != dirty runs + cached dirty huge blocks"));
}

#endif // EBB_INVARIANTS
