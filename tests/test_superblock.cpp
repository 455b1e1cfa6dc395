// Superblocks, the registry and pointer lookup; huge blocks.
#include <catch2/catch.hpp>
#include <sys/mman.h>

#include "core/pages/page_heap.h"
#include "core/pages/superblock.h"
#include "tests/support/unit.h"

TEST_CASE("lookup tells our spans from foreign, header and freed pointers", "[superblock]")
{
	unit_option("decay_ms", "-1");
	unit_option("background_thread", "0");
	page_heap_t heap;
	page_heap_init(&heap, 1, os_fake_now());
	span_t *s = page_heap_alloc(&heap, 3, 1, SPAN_LARGE);
	REQUIRE(s != nullptr);
	superblock_t *sb = span_superblock(s);
	superblock_map_span(sb, s->page, s->npages, 0);
	char *p = (char *)span_start(sb, s);
	superblock_t *out = nullptr;

	REQUIRE(superblock_span_lookup(p, &out) == s);
	REQUIRE(out == sb);
	REQUIRE(superblock_span_lookup(p + 3 * 4096 - 1, &out) == s); // interior: same span
	int on_stack = 0;
	REQUIRE(superblock_span_lookup(&on_stack, &out) == nullptr);
	REQUIRE(superblock_span_lookup((void *)16, &out) == nullptr);
	REQUIRE(superblock_span_lookup(sb, &out) == nullptr);                  // the header
	REQUIRE(superblock_span_lookup((char *)sb + 8 * 4096, &out) == nullptr); // still header
	REQUIRE(sizeof(superblock_t) <= (size_t)sb->first_page * 4096);

	page_heap_free(s);
	span_t *after = superblock_span_lookup(p, &out);
	REQUIRE((after == nullptr || after->state == SPAN_FREE_DIRTY));
	page_heap_release(&heap, os_fake_now(), true);
	REQUIRE(superblock_span_lookup(p, &out) == nullptr);
}

TEST_CASE("huge blocks: data 4 MiB aligned, registered slot by slot, resized without copying", "[superblock]")
{
	page_heap_t heap;
	page_heap_init(&heap, 2, os_fake_now());
	size_t pages = 3000;
	superblock_t *sb = huge_create(&heap, pages, EBB_SB_SIZE);
	REQUIRE(sb != nullptr);
	char *data = (char *)sb + EBB_SB_SIZE;
	REQUIRE(superblock_registry[registry_index((uintptr_t)sb)] == REG_HEADER);
	REQUIRE(superblock_registry[registry_index((uintptr_t)data)] == REG_HUGE);
	REQUIRE(superblock_registry[registry_index((uintptr_t)data + EBB_SB_SIZE)] == REG_HUGE_CONT);
	superblock_t *out;
	REQUIRE(superblock_span_lookup(data, &out) == &sb->spans[0]);
	REQUIRE(superblock_span_lookup(data + EBB_SB_SIZE, &out) == nullptr);
	for (size_t i = 0; i < pages * 4096; i += 4096)
		data[i] = (char)(i >> 12);

	superblock_t *big = huge_resize(sb, 9000);
	REQUIRE(big != nullptr);
	char *bdata = (char *)big + EBB_SB_SIZE;
	for (size_t i = 0; i < pages * 4096; i += 4096)
		REQUIRE(bdata[i] == (char)(i >> 12));
	REQUIRE(big->spans[0].npages == 9000);
	superblock_t *small = huge_resize(big, 1500);
	REQUIRE(small == big);
	REQUIRE(superblock_registry[registry_index((uintptr_t)bdata + 2 * EBB_SB_SIZE)] == REG_NONE);
	REQUIRE(superblock_destroy(small));
	REQUIRE(superblock_registry[registry_index((uintptr_t)bdata)] == REG_NONE);
}

TEST_CASE("huge blocks honour alignments above 4 MiB", "[superblock]")
{
	page_heap_t heap;
	page_heap_init(&heap, 3, os_fake_now());
	superblock_t *sb = huge_create(&heap, 100, (size_t)16 << 20);
	REQUIRE(sb != nullptr);
	uintptr_t data = (uintptr_t)sb + EBB_SB_SIZE;
	REQUIRE((data & ((16u << 20) - 1)) == 0);
	superblock_t *out;
	REQUIRE(superblock_span_lookup((void *)data, &out) == &sb->spans[0]);
	REQUIRE(superblock_destroy(sb));
}

// registry_slot's range test is a signed multiply's overflow (superblock.h):
// every user address gets p >> 22, every other one none or a slot of the
// never-written upper half, so a tagged, non-canonical or kernel-half address
// of a registered superblock is never ours.
TEST_CASE("the registry slot of user, tagged, non-canonical and kernel-half addresses", "[superblock]")
{
	unit_option("decay_ms", "-1");
	unit_option("background_thread", "0");
	page_heap_t heap;
	page_heap_init(&heap, 1, os_fake_now());
	span_t *s = page_heap_alloc(&heap, 1, 1, SPAN_LARGE);
	REQUIRE(s != nullptr);
	uintptr_t p = (uintptr_t)span_start(span_superblock(s), s);
	size_t slot = 0;
	REQUIRE(registry_slot((void *)p, &slot));
	REQUIRE(slot == p >> EBB_SB_SHIFT);
	REQUIRE(registry_get((void *)p) == REG_HEADER);
	const uintptr_t user_top = ((uintptr_t)1 << EBB_ADDR_BITS) - 1;
	for (uintptr_t q : {(uintptr_t)0, (uintptr_t)16, user_top, user_top & ~(EBB_SB_SIZE - 1)}) {
		REQUIRE(registry_slot((void *)q, &slot));
		CHECK(slot == q >> EBB_SB_SHIFT);
		CHECK(slot < EBB_REGISTRY_ENTRIES);
	}
	// p with its high bits changed: outside the user address space.
	for (uintptr_t high : {(uintptr_t)1 << 47, (uintptr_t)1 << 48, (uintptr_t)1 << 56, (uintptr_t)1 << 63,
			       (uintptr_t)0x7fff << 48, (uintptr_t)0xffff << 48, ~(uintptr_t)0 << 47,
			       (uintptr_t)0xff << 56}) {
		void *q = (void *)(p | high);
		INFO("address " << q);
		CHECK(registry_get(q) == REG_NONE);
		if (registry_slot(q, &slot)) { // the kernel half: a slot no superblock has
			CHECK(slot >= EBB_REGISTRY_ENTRIES);
			CHECK(slot < EBB_REGISTRY_READ_ENTRIES);
			CHECK(registry_at(slot) == REG_NONE);
		}
	}
	page_heap_free(s);
	page_heap_release(&heap, os_fake_now(), true);
}

// Whether the page at p is mapped (mincore fails with ENOMEM on a hole).
static bool page_mapped(const void *p)
{
	unsigned char v;
	return mincore((void *)((uintptr_t)p & ~(uintptr_t)4095), 4096, &v) == 0;
}

TEST_CASE("a huge block's header slot stays mapped whole, and goes with the block", "[superblock]")
{
	// huge_map keeps the slot past the header pages mapped (no munmap of
	// that hole per mapping); so every path that lets a block's header
	// go must unmap the whole slot, else 4 MiB of address space leak per
	// huge block: destroy, a donor that gives all its pages, and a moving
	// resize.
	page_heap_t heap;
	page_heap_init(&heap, 4, os_fake_now());
	const size_t P = 512; // 2 MiB
	superblock_t *a = huge_create(&heap, 2 * P, EBB_SB_SIZE);
	superblock_t *b = huge_create(&heap, P, EBB_SB_SIZE);
	REQUIRE(a != nullptr);
	REQUIRE(b != nullptr);
	char *as = (char *)a, *bs = (char *)b;
	REQUIRE(page_mapped(as + EBB_SB_SIZE / 2));
	REQUIRE(page_mapped(as + EBB_SB_SIZE - 4096));
	std::memset(bs + EBB_SB_SIZE, 0x3c, P * 4096);

	// b gives all its pages to a's second half: b's slot is kept whole as
	// a spare (not ours to look up), and the drain unmaps it whole.
	huge_spare_drain();
	REQUIRE(huge_give_tail(b, P, as + EBB_SB_SIZE + P * 4096));
	CHECK(page_mapped(bs));
	CHECK(superblock_registry[registry_index((uintptr_t)bs)] == REG_NONE);
	CHECK(!page_mapped(bs + EBB_SB_SIZE));
	CHECK(as[EBB_SB_SIZE + P * 4096] == 0x3c);
	huge_spare_drain();
	CHECK(!page_mapped(bs));
	CHECK(!page_mapped(bs + EBB_SB_SIZE / 2));
	CHECK(!page_mapped(bs + EBB_SB_SIZE - 4096));
	CHECK(!page_mapped(bs + EBB_SB_SIZE));

	// A resize that cannot grow a in place moves it (or, where the kernel
	// cannot move two mappings at once, fails and leaves it): either way
	// no slot is left behind.
	superblock_t *c = huge_create(&heap, P, EBB_SB_SIZE); // likely right above or below a
	REQUIRE(c != nullptr);
	superblock_t *n = huge_resize(a, 8 * P);
	if (n != nullptr && n != a) {
		huge_spare_drain(); // a's slot was kept spare
		CHECK(!page_mapped(as));
		CHECK(!page_mapped(as + EBB_SB_SIZE / 2));
		a = n;
		as = (char *)n;
	}
	REQUIRE(page_mapped(as + EBB_SB_SIZE / 2));
	char *cs = (char *)c;
	REQUIRE(superblock_destroy(c));
	CHECK(!page_mapped(cs));
	CHECK(!page_mapped(cs + EBB_SB_SIZE / 2));
	CHECK(!page_mapped(cs + EBB_SB_SIZE));
	size_t npages = a->spans[0].npages;
	REQUIRE(superblock_destroy(a));
	CHECK(!page_mapped(as));
	CHECK(!page_mapped(as + EBB_SB_SIZE / 2));
	CHECK(!page_mapped(as + EBB_SB_SIZE + (npages - 1) * 4096));
}

TEST_CASE("a slot whose block gave all its pages grows into the next huge block in place, or goes", "[superblock]")
{
	page_heap_t heap;
	page_heap_init(&heap, 6, os_fake_now());
	const size_t P = 512; // 2 MiB
	huge_spare_drain();
	REQUIRE(huge_create_spare(&heap, P, EBB_SB_SIZE) == nullptr); // none spare

	superblock_t *to = huge_create(&heap, 4 * P, EBB_SB_SIZE);
	superblock_t *b = huge_create(&heap, P, EBB_SB_SIZE);
	REQUIRE(to != nullptr);
	REQUIRE(b != nullptr);
	char *bs = (char *)b;
	b->next = (superblock_t *)0x1234; // a stale header field the reuse must not keep
	std::memset(bs + EBB_SB_SIZE, 0x5a, P * 4096);
	REQUIRE(huge_give_tail(b, P, (char *)to + EBB_SB_SIZE));
	CHECK(((char *)to)[EBB_SB_SIZE] == 0x5a);
	// While spare, b's old pointers are nobody's: a free of them is
	// reported as foreign.
	superblock_t *none;
	CHECK(superblock_span_lookup(bs + EBB_SB_SIZE, &none) == nullptr);
	CHECK(registry_get(bs + EBB_SB_SIZE) == REG_NONE);
	CHECK(registry_get(bs) == REG_NONE);

	// Reused where b's data was: one mapping at the same place, a fresh
	// header, registered, its pages zero (not b's).
	superblock_t *r = huge_create_spare(&heap, P, EBB_SB_SIZE);
	REQUIRE(r == b);
	CHECK(r->next == nullptr);
	CHECK(r->huge == 1);
	CHECK(r->spans[0].npages == P);
	CHECK(r->spans[0].state == SPAN_LARGE);
	CHECK(r->map_size == (size_t)EBB_SB_HEADER_PAGES * 4096 + P * 4096);
	char *rd = bs + EBB_SB_SIZE;
	CHECK(superblock_registry[registry_index((uintptr_t)bs)] == REG_HEADER);
	CHECK(superblock_registry[registry_index((uintptr_t)rd)] == REG_HUGE);
	superblock_t *out;
	CHECK(superblock_span_lookup(rd, &out) == &r->spans[0]);
	CHECK(rd[0] == 0);
	CHECK(rd[P * 4096 - 1] == 0);
	REQUIRE(huge_create_spare(&heap, P, EBB_SB_SIZE) == nullptr); // taken once

	// A slot whose old data's place is taken by another mapping cannot
	// grow: it is unmapped, the other mapping stays, nothing is made.
	superblock_t *c = huge_create(&heap, P, EBB_SB_SIZE);
	REQUIRE(c != nullptr);
	char *cs = (char *)c;
	REQUIRE(huge_give_tail(c, P, (char *)to + EBB_SB_SIZE + P * 4096));
	char *at = cs + EBB_SB_SIZE;
	void *m = mmap(at, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	REQUIRE(m == (void *)at);
	at[0] = 0x61;
	CHECK(huge_create_spare(&heap, P, EBB_SB_SIZE) == nullptr);
	CHECK(!page_mapped(cs));
	CHECK(page_mapped(at));
	CHECK(at[0] == 0x61);
	munmap(at, 4096);

	// Alignment: a slot whose data would not be aligned as asked stays.
	superblock_t *d = huge_create(&heap, P, EBB_SB_SIZE);
	REQUIRE(d != nullptr);
	char *ds = (char *)d;
	REQUIRE(huge_give_tail(d, P, (char *)to + EBB_SB_SIZE + 2 * P * 4096));
	size_t big = (size_t)1 << 40; // no slot's data is aligned to 1 TiB here
	if (((uintptr_t)ds + EBB_SB_SIZE) % big != 0)
		CHECK(huge_create_spare(&heap, P, big) == nullptr);
	CHECK(page_mapped(ds));
	huge_spare_drain();
	CHECK(!page_mapped(ds));
	REQUIRE(superblock_destroy(r));
	REQUIRE(superblock_destroy(to));
}

TEST_CASE("where THP backs first touches, a huge block's slot keeps no hole, and its unmaps spare a mapping placed there",
	  "[superblock]")
{
	// With THP "always" huge_map gives back the slot past the header
	// pages (the header's first write would make a 2 MiB page resident),
	// and the kernel may place any mapping there: the unmaps of the
	// header (destroy, a donor giving all, a moving resize) must not take
	// it along.
	os_fake_set_thp_always(1);
	page_heap_t heap;
	page_heap_init(&heap, 5, os_fake_now());
	const size_t P = 512;
	superblock_t *a = huge_create(&heap, P, EBB_SB_SIZE);
	superblock_t *b = huge_create(&heap, P, EBB_SB_SIZE);
	superblock_t *c = huge_create(&heap, 2 * P, EBB_SB_SIZE);
	REQUIRE(a != nullptr);
	REQUIRE(b != nullptr);
	REQUIRE(c != nullptr);
	char *slots[2] = { (char *)a, (char *)b };
	char *foreign[2];
	for (int i = 0; i < 2; i++) {
		char *at = slots[i] + EBB_SB_SIZE / 2;
		REQUIRE(page_mapped(slots[i]));
		REQUIRE(!page_mapped(at));
		void *m = mmap(at, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			       -1, 0);
		REQUIRE(m == (void *)at);
		foreign[i] = at;
		foreign[i][0] = (char)(0x70 + i);
	}
	// b gives all its pages to c's second half; a is destroyed.
	REQUIRE(huge_give_tail(b, P, (char *)c + EBB_SB_SIZE + P * 4096));
	REQUIRE(superblock_destroy(a));
	for (int i = 0; i < 2; i++) {
		CHECK(!page_mapped(slots[i]));
		REQUIRE(page_mapped(foreign[i]));
		CHECK(foreign[i][0] == (char)(0x70 + i));
		munmap(foreign[i], 4096);
	}
	REQUIRE(superblock_destroy(c));
	os_fake_set_thp_always(0);
}

TEST_CASE("spare huge slots stay through a release pass that lets no huge block go, and go at a trim of all", "[superblock]")
{
	page_heap_t heap;
	page_heap_init(&heap, 6, os_fake_now());
	const size_t P = 512; // 2 MiB
	huge_spare_drain();
	superblock_t *to = huge_create(&heap, 2 * P, EBB_SB_SIZE);
	superblock_t *b = huge_create(&heap, P, EBB_SB_SIZE);
	REQUIRE(to != nullptr);
	REQUIRE(b != nullptr);
	char *bs = (char *)b;
	REQUIRE(huge_give_tail(b, P, (char *)to + EBB_SB_SIZE));
	REQUIRE(page_mapped(bs)); // kept spare

	// A pass that releases nothing: a huge block may still come soon.
	page_heap_release(&heap, os_fake_now(), false);
	CHECK(page_mapped(bs));
	// A trim of everything (ebb_trim, the idle purge of all): the spare goes.
	page_heap_release(&heap, os_fake_now(), true);
	CHECK(!page_mapped(bs));
	CHECK(huge_create_spare(&heap, P, EBB_SB_SIZE) == nullptr);
	REQUIRE(superblock_destroy(to));
}

// A heap for huge blocks and no spare slot to start from.
struct huge_spare_fixture {
	page_heap_t heap;
	const size_t P = 512; // 2 MiB
	huge_spare_fixture()
	{
		page_heap_init(&heap, 6, os_fake_now());
		huge_spare_drain();
	}
};

TEST_CASE_METHOD(huge_spare_fixture,
		 "a spare slot whose data's place the registry knows is ours goes without a grow, and the next spare serves",
		 "[superblock]")
{
	superblock_t *to = huge_create(&heap, 4 * P, EBB_SB_SIZE);
	superblock_t *a = huge_create(&heap, P, EBB_SB_SIZE);
	superblock_t *b = huge_create(&heap, P, EBB_SB_SIZE);
	REQUIRE(to != nullptr);
	REQUIRE(a != nullptr);
	REQUIRE(b != nullptr);
	char *as = (char *)a, *bs = (char *)b;
	REQUIRE(huge_give_tail(a, P, (char *)to + EBB_SB_SIZE)); // a's slot spare first
	REQUIRE(huge_give_tail(b, P, (char *)to + EBB_SB_SIZE + P * 4096));
	REQUIRE(page_mapped(as));
	REQUIRE(page_mapped(bs));
	// The registry says a's old data slot is ours (as it would be had a
	// superblock been mapped there). The space is in fact free, so the
	// kernel would grow a's slot: that it goes shows the registry was
	// asked instead, and that one refused slot no longer ends the search.
	uint8_t *e = &superblock_registry[registry_index((uintptr_t)as + EBB_SB_SIZE)];
	REQUIRE(*e == REG_NONE);
	*e = REG_HEADER;
	superblock_t *r = huge_create_spare(&heap, P, EBB_SB_SIZE);
	*e = REG_NONE;
	CHECK(r == b);
	CHECK(!page_mapped(as));
	CHECK(!page_mapped(as + EBB_SB_SIZE));
	REQUIRE(r != nullptr);
	CHECK(r->spans[0].npages == P);
	CHECK(registry_get(bs + EBB_SB_SIZE) == REG_HUGE);
	CHECK(huge_create_spare(&heap, P, EBB_SB_SIZE) == nullptr); // none left
	REQUIRE(superblock_destroy(r));
	REQUIRE(superblock_destroy(to));
}

TEST_CASE_METHOD(huge_spare_fixture,
		 "a huge block grows where it is into free address space, made of one mapping or several, and only there",
		 "[superblock]")
{
	// b's own 16 MiB, shrunk to 4: the 12 MiB after it are free (nothing
	// else maps in this process meanwhile).
	superblock_t *b = huge_create(&heap, 8 * P, EBB_SB_SIZE);
	REQUIRE(b != nullptr);
	REQUIRE(huge_resize(b, 2 * P) == b);
	superblock_t *c = huge_create(&heap, P, EBB_SB_SIZE);
	REQUIRE(c != nullptr);
	unsigned char *bd = (unsigned char *)b + EBB_SB_SIZE;
	std::memset(bd, 0x5a, 2 * P * 4096);
	std::memset((char *)c + EBB_SB_SIZE, 0xa5, P * 4096);
	// c's pages replace b's second half: b is two mappings (mremap grows
	// neither in place).
	REQUIRE(huge_give_tail(c, P, bd + P * 4096));
	huge_spare_drain();
	REQUIRE(!page_mapped(bd + 2 * P * 4096));

	REQUIRE(huge_grow_after(b, 6 * P));
	CHECK(b->spans[0].npages == 6 * P);
	CHECK(b->map_size == (size_t)EBB_SB_HEADER_PAGES * 4096 + 6 * P * 4096);
	CHECK(bd[0] == 0x5a);
	CHECK(bd[P * 4096 - 1] == 0x5a);
	CHECK(bd[P * 4096] == 0xa5);
	CHECK(bd[2 * P * 4096 - 1] == 0xa5);
	CHECK(bd[2 * P * 4096] == 0); // fresh
	std::memset(bd + 2 * P * 4096, 1, 4 * P * 4096);
	CHECK(registry_get(bd) == REG_HUGE);
	CHECK(registry_get(bd + 4 * P * 4096) == REG_HUGE_CONT);
	CHECK(registry_get(bd + 6 * P * 4096) == REG_NONE);
	superblock_t *out;
	CHECK(superblock_span_lookup(bd, &out) == &b->spans[0]);

	// Where the registry says the slot after it is ours: nothing mapped.
	unsigned char *end = bd + 6 * P * 4096;
	uint8_t *e = &superblock_registry[registry_index((uintptr_t)end)];
	*e = REG_HEADER;
	CHECK_FALSE(huge_grow_after(b, 8 * P));
	*e = REG_NONE;
	CHECK(!page_mapped(end));
	// Where another mapping is, the kernel refuses, and it stays.
	unsigned char *at = end + 3 * 1024 * 1024;
	void *m = mmap(at, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	REQUIRE(m == (void *)at);
	at[0] = 0x61;
	CHECK_FALSE(huge_grow_after(b, 8 * P));
	CHECK(b->spans[0].npages == 6 * P);
	CHECK(!page_mapped(end));
	CHECK(at[0] == 0x61);
	munmap(at, 4096);
	// Not smaller, nor the same.
	CHECK_FALSE(huge_grow_after(b, 6 * P));
	CHECK_FALSE(huge_grow_after(b, 2 * P));

	REQUIRE(huge_grow_after(b, 8 * P));
	CHECK(end[0] == 0);
	CHECK(bd[6 * P * 4096 - 1] == 1);
	REQUIRE(superblock_destroy(b));
	CHECK(!page_mapped(bd));
	CHECK(!page_mapped(end));
	CHECK(!page_mapped(bd + 8 * P * 4096 - 4096));
}
