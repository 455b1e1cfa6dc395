// Large and huge blocks (core/pages/large.c) on the fake os: how sizes and
// alignments are rounded to pages, where a block stops coming from a
// superblock's page heap and gets a mapping of its own, large_usable,
// zero-filling of reused pages, the reason large_why_bad gives for each
// kind of wrong pointer, and page runs resized on several threads while a
// purge pass runs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include <sys/mman.h>

#include "core/pages/large.h"
#include "core/pages/page_heap.h"
#include "core/runtime/report.h"
#include "core/pages/superblock.h"
#include "tests/api/child_util.h"
#include "tests/support/unit.h"

namespace {

const size_t KiB = 1024, MiB = 1024 * KiB;
const size_t PAGE = EBB_PAGE_SIZE;
// The most pages one block may take from a superblock: all but its header.
const size_t MAX_PAGES = EBB_SB_PAGES - EBB_SB_HEADER_PAGES;

span_t *span_of(const void *p)
{
	superblock_t *sb;
	span_t *s = superblock_span_lookup(p, &sb);
	REQUIRE(s != nullptr);
	return s;
}

struct large_fixture {
	large_fixture()
	{
		unit_option("decay_ms", "-1"); // freed runs stay as they are
		unit_option("background_thread", "0");
		unit_option("dirty_max", "1G");
		os_fake_set_cpu(0);
	}
	void *alloc(size_t size, size_t align = 16, bool zero = false)
	{
		void *p = large_alloc(size, align, zero);
		REQUIRE(p != nullptr);
		return p;
	}
	void free(void *p) { large_free_checked(p, "free"); }
	// Leaves a dirty run of MAX_PAGES pages, every byte `fill`, on CPU 0's
	// heap and moves the thread to CPU 1. Returns the run's address; *h1_whole
	// says whether heap 1 already had a whole free superblock (which would
	// serve the next request before any other heap's dirty run).
	unsigned char *leave_dirty_run(unsigned char fill, bool *h1_whole)
	{
		const size_t size = MAX_PAGES * PAGE;
		void *p = alloc(size);
		REQUIRE(span_superblock(span_of(p))->heap == page_heap_get(0));
		std::memset(p, fill, size);
		*h1_whole = false;
		for (superblock_t *sb = page_heap_get(1)->superblocks; sb != nullptr; sb = sb->next)
			*h1_whole |= sb->free_pages == sb->usable_pages;
		free(p);
		os_fake_set_cpu(1);
		return static_cast<unsigned char *>(p);
	}
};

} // namespace

TEST_CASE_METHOD(large_fixture, "sizes round up to whole pages, large_usable says how many", "[large]")
{
	struct {
		size_t size, pages;
	} cases[] = {{0, 1}, {1, 1}, {32 * KiB + 1, 9}, {40000, 10}, {64 * KiB, 16}, {64 * KiB + 1, 17},
		     {MAX_PAGES * PAGE - 1, MAX_PAGES}, {MAX_PAGES * PAGE, MAX_PAGES}};
	for (auto &c : cases) {
		INFO("size " << c.size);
		void *p = alloc(c.size);
		span_t *s = span_of(p);
		CHECK((uintptr_t)p % PAGE == 0);
		CHECK(s->state == SPAN_LARGE);
		CHECK_FALSE(s->huge);
		CHECK(s->npages == c.pages);
		CHECK(large_usable(s) == c.pages * PAGE);
		CHECK(large_why_bad(p, true) == nullptr);
		free(p);
	}
}

TEST_CASE_METHOD(large_fixture, "above what a superblock holds, a block is huge: its own 4 MiB-aligned mapping", "[large]")
{
	for (size_t size : {MAX_PAGES * PAGE + 1, 4 * MiB, 9 * MiB + 5}) {
		INFO("size " << size);
		void *p = alloc(size);
		span_t *s = span_of(p);
		CHECK(s->huge);
		CHECK(s->state == SPAN_LARGE);
		CHECK((uintptr_t)p % EBB_SB_SIZE == 0);
		// whole 2 MiB units (huge.c: pieces of cached blocks move by PMD)
		CHECK(large_usable(s) == util_align_up(size, 2 * MiB));
		CHECK(large_usable(s) >= size);
		std::memset(p, 0xab, large_usable(s)); // all of it is there
		CHECK(large_why_bad(p, true) == nullptr);
		free(p);
	}
}

TEST_CASE_METHOD(large_fixture, "a huge block of an odd number of 2 MiB units is mapped with 4 MiB and trimmed", "[large]")
{
	// huge.c maps whole 4 MiB so that the kernel's next mapping lands
	// aligned, then gives the unit the block does not use back at once:
	// the page right after its end must not be mapped (msync fails with
	// ENOMEM there), else every such block holds 2 MiB of address space more
	// than it says.
	for (size_t size : {5 * MiB, 9 * MiB + 5}) {
		INFO("size " << size);
		char *p = static_cast<char *>(alloc(size));
		span_t *s = span_of(p);
		CHECK(large_usable(s) == util_align_up(size, 2 * MiB));
		std::memset(p, 0xab, large_usable(s));
		char *end = p + large_usable(s);
		errno = 0;
		CHECK(msync(end, PAGE, MS_ASYNC) == -1);
		CHECK(errno == ENOMEM);
		CHECK(large_why_bad(p, true) == nullptr);
		free(p);
	}
}

TEST_CASE_METHOD(large_fixture, "a thread moved to another CPU takes the dirty run it freed on the last one", "[large]")
{
	// page_heap.c, dirty_elsewhere: the heap of the new CPU has no dirty
	// run that fits, so the block comes from the heap it left, resident,
	// instead of a new superblock (or purged pages) faulted in again.
	page_heap_t *h0 = page_heap_get(0), *h1 = page_heap_get(1);
	REQUIRE(page_heap_count() > 1);
	const size_t size = MAX_PAGES * PAGE; // no run of heap 1 but a whole free superblock's holds it
	bool h1_has_one;
	void *p = leave_dirty_run(0xab, &h1_has_one);
	size_t h1_superblocks = h1->superblocks_count, h0_dirty = h0->dirty_pages;
	void *q = alloc(size);
	os_fake_set_cpu(0);
	CHECK(h1->superblocks_count == h1_superblocks); // nothing new mapped for heap 1
	if (!h1_has_one) {
		CHECK(q == p);
		CHECK(span_superblock(span_of(q))->heap == h0); // and it goes back there
		CHECK(h0->dirty_pages == h0_dirty - MAX_PAGES);
		CHECK(static_cast<unsigned char *>(q)[size - 1] == 0xab); // the same pages, not faulted in again
	}
	free(q);
	CHECK(h0->dirty_pages == h0_dirty);
}

TEST_CASE_METHOD(large_fixture, "a span of small blocks on another CPU takes the dirty run a large block left",
		 "[large]")
{
	// page_heap.c, dirty_elsewhere, for small blocks' spans too: a
	// single-threaded program that the scheduler moves reuses the pages it
	// freed on the last CPU for any size class instead of faulting in fresh
	// ones while they wait for decay (issue 14, peak RSS).
	page_heap_t *h0 = page_heap_get(0), *h1 = page_heap_get(1);
	REQUIRE(page_heap_count() > 1);
	const size_t size = MAX_PAGES * PAGE;
	bool h1_has_one;
	void *p = leave_dirty_run(0xcd, &h1_has_one);
	size_t h1_superblocks = h1->superblocks_count, h0_dirty = h0->dirty_pages;
	span_t *s = page_heap_alloc(h1, MAX_PAGES, 1, SPAN_CENTRAL);
	os_fake_set_cpu(0);
	REQUIRE(s != nullptr);
	CHECK(h1->superblocks_count == h1_superblocks);
	if (!h1_has_one) {
		CHECK(span_superblock(s)->heap == h0);
		CHECK(h0->dirty_pages == h0_dirty - MAX_PAGES);
		unsigned char *q = static_cast<unsigned char *>(superblock_page_addr(span_superblock(s), s->page));
		CHECK(q == p);
		CHECK(q[size - 1] == 0xcd); // resident pages reused, not fresh ones
	}
	page_heap_free(s);
	CHECK(h0->dirty_pages == h0_dirty);
}

TEST_CASE_METHOD(large_fixture, "alignments: page-aligned at least, and the asked power of two", "[large]")
{
	for (size_t align : {(size_t)16, (size_t)4096, 8 * KiB, 64 * KiB, 1 * MiB, 2 * MiB}) {
		for (size_t size : {(size_t)1, 40000 * (size_t)1, 3 * MiB}) {
			INFO("size " << size << " align " << align);
			void *p = alloc(size, align);
			CHECK((uintptr_t)p % (align > PAGE ? align : PAGE) == 0);
			span_t *s = span_of(p);
			CHECK(large_usable(s) >= size);
			CHECK(large_why_bad(p, true) == nullptr);
			free(p);
		}
	}
	// An alignment the superblock cannot give (size + alignment slack above
	// what it holds): a huge block, aligned as asked.
	void *p = alloc(100 * KiB, 8 * MiB);
	CHECK((uintptr_t)p % (8 * MiB) == 0);
	CHECK(span_of(p)->huge);
	free(p);
}

TEST_CASE_METHOD(large_fixture, "a small block aligned to 256 KiB or more is a huge block, reused whole with no new mapping",
		 "[large]")
{
	// large.c: a superblock has few places at such an alignment, and a
	// block over one of them takes it from every such request; a huge
	// block is 4 MiB aligned, cached whole when freed, and the next such
	// request takes it with the pages the last one touched.
	for (size_t align : {256 * KiB, 1 * MiB, 2 * MiB}) {
		INFO("align " << align);
		char *p = static_cast<char *>(alloc(100, align));
		CHECK((uintptr_t)p % align == 0);
		span_t *s = span_of(p);
		CHECK(s->huge);
		CHECK(large_usable(s) == 2 * MiB);
		CHECK(large_why_bad(p, true) == nullptr);
		p[0] = 1;
		free(p);
		uint64_t maps = os_fake_counts().maps;
		// Another size and alignment, both served by the cached block.
		char *q = static_cast<char *>(alloc(40 * KiB, 512 * KiB));
		CHECK(q == p);
		CHECK(os_fake_counts().maps == maps);
		CHECK(span_of(q)->huge);
		free(q);
	}
	// Below 256 KiB, a page run of a superblock as before.
	void *r = alloc(100, 128 * KiB);
	CHECK((uintptr_t)r % (128 * KiB) == 0);
	CHECK_FALSE(span_of(r)->huge);
	free(r);
}

TEST_CASE_METHOD(large_fixture, "past 1024 live huge blocks, a small aligned block is a page run again", "[large]")
{
	// The bound keeps a program with very many small aligned blocks from
	// running out of kernel mappings (two per huge block).
	std::vector<void *> v;
	size_t huge = 0;
	for (int i = 0; i < 1100; i++) {
		void *p = alloc(64, 256 * KiB);
		CHECK((uintptr_t)p % (256 * KiB) == 0);
		huge += span_of(p)->huge;
		v.push_back(p);
	}
	CHECK(huge > 0);
	CHECK(huge <= 1024);
	CHECK_FALSE(span_of(v.back())->huge);
	CHECK(page_heap_get(0)->huge_live <= 1024);
	for (void *p : v)
		free(p);
	// The next test starts without a thousand cached blocks.
	page_heap_decay(page_heap_get(0), os_fake_now(), true);
	page_heap_release(page_heap_get(0), os_fake_now(), true);
	CHECK(page_heap_get(0)->huge_count == 0);
}

TEST_CASE_METHOD(large_fixture, "requests above EBB_MAX_REQUEST fail with ENOMEM without trying", "[large]")
{
	auto before = os_fake_counts().maps;
	for (auto sa : {std::pair<size_t, size_t>{EBB_MAX_REQUEST + 1, 16}, {SIZE_MAX, 16},
			{PAGE, EBB_MAX_REQUEST * 2}}) {
		errno = 0;
		CHECK(large_alloc(sa.first, sa.second, false) == nullptr);
		CHECK(errno == ENOMEM);
	}
	CHECK(os_fake_counts().maps == before);
}

TEST_CASE_METHOD(large_fixture, "zero = true gives zeroed bytes also from reused, dirty pages", "[large]")
{
	const size_t size = 20 * PAGE;
	std::vector<void *> dirty;
	for (int i = 0; i < 4; i++) {
		void *p = alloc(size);
		std::memset(p, 0x5a, size);
		dirty.push_back(p);
	}
	for (void *p : dirty)
		free(p);
	for (int i = 0; i < 4; i++) {
		unsigned char *p = (unsigned char *)alloc(size, 16, true);
		size_t nonzero = 0;
		for (size_t j = 0; j < size; j++)
			nonzero += p[j] != 0;
		CHECK(nonzero == 0);
		dirty[i] = p;
	}
	for (void *p : dirty)
		free(p);
}

TEST_CASE_METHOD(large_fixture, "large_why_bad names what is wrong with each kind of pointer", "[large]")
{
	int on_stack = 0;
	CHECK(std::string(large_why_bad(&on_stack, true)) == "not allocated by ebbmalloc");
	CHECK(std::string(large_why_bad(nullptr, false)) == "not allocated by ebbmalloc");

	// Interior pointers of a page run: the next page, a misaligned byte.
	char *p = (char *)alloc(10 * PAGE);
	CHECK(large_why_bad(p, false) == nullptr);
	CHECK(std::string(large_why_bad(p + PAGE, true)) == "not the start of a block");
	CHECK(std::string(large_why_bad(p + 16, true)) == "not the start of a block");
	CHECK(std::string(large_why_bad(p + 10 * PAGE - 1, false)) == "not the start of a block");
	free(p);

	// Interior pointers of a huge block: in its first 4 MiB slot, the span
	// says so; in a later slot, the registry does.
	char *h = (char *)alloc(9 * MiB);
	CHECK(std::string(large_why_bad(h + PAGE, true)) == "not the start of a block");
	CHECK(std::string(large_why_bad(h + EBB_SB_SIZE, true)) == "not the start of a block (inside a huge block)");
	CHECK(std::string(large_why_bad(h + 2 * EBB_SB_SIZE + 16, true)) ==
	      "not the start of a block (inside a huge block)");
	free(h);
}

TEST_CASE_METHOD(large_fixture, "a freed run: double free while it starts there, then not a block start", "[large]")
{
	// Two blocks side by side in one superblock (a is left of b), so that b's
	// freed run keeps its own start: a is allocated, nothing merges into b.
	std::vector<char *> held;
	char *a = nullptr, *b = nullptr;
	for (int i = 0; i < 16 && b == nullptr; i++) {
		char *q = (char *)alloc(8 * PAGE);
		for (char *o : held) {
			if (q == o + 8 * PAGE) {
				a = o;
				b = q;
			} else if (o == q + 8 * PAGE) {
				a = q;
				b = o;
			}
		}
		held.push_back(q);
	}
	REQUIRE(b != nullptr);

	free(b);
	CHECK(std::string(large_why_bad(b, true)) == "double free (the block is already free)");
	CHECK(std::string(large_why_bad(b, false)) == "the block was freed");
	CHECK(std::string(large_why_bad(b + PAGE, true)) ==
	      "not an allocated block (already freed, or not a block start)");
	CHECK(large_why_bad(a, true) == nullptr);

	// a freed too: the free run now starts at a (or left of it), b is inside.
	free(a);
	CHECK(std::string(large_why_bad(b, true)) ==
	      "not an allocated block (already freed, or not a block start)");
	for (char *q : held)
		if (q != a && q != b)
			free(q);
}

TEST_CASE_METHOD(large_fixture, "large_free_checked of a wrong pointer reports it and frees nothing", "[large]")
{
	char *p = (char *)alloc(6 * PAGE);
	auto r = apitest::run_child([p] {
		unit_option("on_error", "warn");
		uint64_t before = report_count();
		large_free_checked(p + PAGE, "realloc"); // reported, not freed
		large_free_checked(p, "free");           // freed
		return report_count() == before + 1 ? 0 : 1;
	});
	REQUIRE(r.exited);
	CHECK(r.code == 0);
	CHECK(r.err == apitest::bad_pointer_line("realloc", p + PAGE, "not the start of a block"));

	auto d = apitest::run_child([p] {
		large_free_checked(p + 16, "free"); // on_error=abort
		return 3;
	});
	CHECK(d.signal == SIGABRT);
	CHECK(d.err == apitest::bad_pointer_line("free", p + 16, "not the start of a block"));
	CHECK(large_why_bad(p, true) == nullptr); // the parent's block is untouched
	free(p);
}

TEST_CASE_METHOD(large_fixture, "huge_resize grows a block made of two mappings by moving it, contents kept", "[large]")
{
	// A block assembled from a cached block's pages (huge.c: huge_fill,
	// huge_assemble) is several mappings of the kernel side by side. mremap
	// grows none of them (EFAULT) but moves them at their size (Linux 6.17
	// and later): huge_resize's move must be at the old size, else it
	// failed after mapping, cutting and unmapping the new home.
	const size_t P = 2 * MiB / PAGE;
	superblock_t *b = huge_create(page_heap_get(0), 2 * P, EBB_SB_SIZE);
	superblock_t *c = huge_create(page_heap_get(0), P, EBB_SB_SIZE);
	REQUIRE(b != nullptr);
	REQUIRE(c != nullptr);
	unsigned char *bd = (unsigned char *)b + EBB_SB_SIZE;
	std::memset(bd, 0x5a, P * PAGE);
	std::memset((char *)c + EBB_SB_SIZE, 0xa5, P * PAGE);
	// c's pages replace b's second half: b is two mappings now (touched
	// pages of different origins do not merge), c is gone.
	REQUIRE(huge_give_tail(c, P, bd + P * PAGE));
	// A mapping right after b, so that it cannot grow in place
	// (huge_grow_after) and must move. (If one is there already, so much
	// the better.)
	unsigned char *after = bd + 2 * P * PAGE;
	void *m = mmap(after, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	bool placed = m == (void *)after;
	superblock_t *nb = huge_resize(b, 3 * P);
	if (placed)
		munmap(after, PAGE);
	if (nb == nullptr) {
		// The kernel moves several mappings in one mremap only from 6.17.
		std::FILE *f = std::fopen("/proc/sys/kernel/osrelease", "r");
		unsigned major = 0, minor = 0;
		if (f != nullptr) {
			if (std::fscanf(f, "%u.%u", &major, &minor) != 2)
				major = 0;
			std::fclose(f);
		}
		REQUIRE((major < 6 || (major == 6 && minor < 17)));
		superblock_destroy(b);
		WARN("skipped: this kernel does not move several mappings in one mremap");
		return;
	}
	CHECK(nb->spans[0].npages == 3 * P);
	CHECK((nb != b || !placed));
	unsigned char *nd = (unsigned char *)nb + EBB_SB_SIZE;
	CHECK(nd[0] == 0x5a);
	CHECK(nd[P * PAGE - 1] == 0x5a);
	CHECK(nd[P * PAGE] == 0xa5);
	CHECK(nd[2 * P * PAGE - 1] == 0xa5);
	CHECK(nd[2 * P * PAGE] == 0); // the grown part: fresh pages
	std::memset(nd + 2 * P * PAGE, 1, P * PAGE);
	CHECK(superblock_destroy(nb));
}

// realloc of a page run (core/api/api.c: large_resize) on several threads while
// a purge pass runs, as the background thread's does: a block grows into the
// free run right of it (which the pass may have out, BUSY, or just listed
// back, merged), shrinks and gives its tail back, or moves; every step writes
// the block's tag over its new pages and checks what it kept. A race between
// resize and purge on a descriptor or a boundary tag is the TSan build's to
// report (label unit: CI runs this under TSan); here the contents, the moves
// and the page counts must add up. All threads take heap 0 (the fake CPU is
// one for the process), so neighbours are other threads' blocks.
TEST_CASE_METHOD(large_fixture, "large blocks (page runs) resized in place on several threads while a purge pass runs", "[large]")
{
	const unsigned threads = 3, blocks = 6, steps = 2500;
	const size_t min_pages = 9, max_pages = 160; // 36-640 KiB: page runs, not huge
	page_heap_stats_t base{};
	page_heap_stats_add(&base);
	uint64_t purges0 = os_fake_counts().purges;

	std::atomic<bool> done{false};
	std::atomic<unsigned> bad{0};
	std::atomic<uint64_t> grown_in_place{0}, shrunk{0}, moved{0};
	auto tag_ok = [](const unsigned char *p, size_t bytes, unsigned char tag) {
		// First word and last byte of every page: what a move or an overlap
		// with another block would change.
		for (size_t off = 0; off < bytes; off += PAGE)
			if (p[off] != tag || p[std::min(off + PAGE, bytes) - 1] != tag)
				return false;
		return true;
	};
	auto worker = [&](unsigned id) {
		uint64_t x = 0x9E3779B97F4A7C15ull * (id + 1);
		auto rnd = [&x] {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			return x;
		};
		unsigned char *p[blocks] = {};
		size_t len[blocks] = {};
		for (unsigned i = 0; i < steps && bad == 0; i++) {
			unsigned k = (unsigned)(rnd() % blocks);
			unsigned char tag = (unsigned char)(id * blocks + k + 1);
			// Mostly steps of a few pages (a growing buffer), now and
			// then a jump anywhere in the range.
			size_t pages = len[k] / PAGE;
			size_t want = rnd() % 4 == 0 || pages == 0 ? min_pages + rnd() % (max_pages - min_pages)
								   : pages + rnd() % 9 - 4;
			want = std::max(min_pages, std::min(max_pages, want)) * PAGE - rnd() % 64;
			if (p[k] == nullptr) {
				p[k] = (unsigned char *)large_alloc(want, 16, false);
				if (p[k] == nullptr) {
					bad = 1;
					break;
				}
				memset(p[k], tag, want);
				len[k] = want;
				continue;
			}
			superblock_t *sb;
			span_t *s = superblock_span_lookup(p[k], &sb);
			if (s == nullptr || s->state != SPAN_LARGE || s->huge) {
				bad = 2;
				break;
			}
			size_t old_usable = large_usable(s);
			unsigned char *q = (unsigned char *)large_resize(p[k], s, want);
			if (q != nullptr) {
				if (q != p[k]) {
					bad = 3;
					break;
				}
				if (util_pages(want) * PAGE > old_usable)
					grown_in_place++;
				else if (util_pages(want) * PAGE < old_usable)
					shrunk++;
			} else {
				// What realloc does when the pages right of it are taken.
				q = (unsigned char *)large_alloc(want, 16, false);
				if (q == nullptr) {
					bad = 4;
					break;
				}
				memcpy(q, p[k], std::min(len[k], want));
				large_free_checked(p[k], "realloc");
				moved++;
			}
			if (!tag_ok(q, std::min(len[k], want), tag)) {
				bad = 5;
				break;
			}
			if (want > len[k])
				memset(q + len[k], tag, want - len[k]);
			p[k] = q;
			len[k] = want;
			if (rnd() % 16 == 0) {
				large_free_checked(q, "free");
				p[k] = nullptr;
				len[k] = 0;
			}
		}
		for (unsigned k = 0; k < blocks; k++)
			if (p[k] != nullptr)
				large_free_checked(p[k], "free");
	};
	// The background thread's page-heap steps: purge every dirty run, unmap
	// what stays free, over and over.
	std::thread purger([&] {
		while (!done) {
			page_heap_decay(page_heap_get(0), os_fake_now(), true);
			page_heap_release(page_heap_get(0), os_fake_now(), true);
			std::this_thread::yield();
		}
	});
	std::vector<std::thread> ts;
	for (unsigned t = 0; t < threads; t++)
		ts.emplace_back(worker, t);
	for (std::thread &t : ts)
		t.join();
	done = true;
	purger.join();

	CHECK(bad == 0);
	INFO("grown in place " << grown_in_place << ", shrunk " << shrunk << ", moved " << moved);
	CHECK(grown_in_place > 0);
	CHECK(shrunk > 0);
	CHECK(moved > 0);
	CHECK(os_fake_counts().purges > purges0);
	page_heap_stats_t end{};
	page_heap_stats_add(&end);
	CHECK(end.large_pages == base.large_pages);
}

TEST_CASE_METHOD(large_fixture, "sizes near SIZE_MAX: large_alloc_mapped gives ENOMEM, large_resize leaves the block",
		 "[large]")
{
	// util_pages wraps past SIZE_MAX - PAGE + 1 (to 0 pages): unchecked,
	// a mapped block of a few pages, or a block "resized" to nothing.
	void *run = alloc(20 * PAGE);
	void *huge = alloc(9 * MiB);
	std::memset(run, 0x11, 20 * PAGE);
	std::memset(huge, 0x22, 9 * MiB);
	span_t *rs = span_of(run), *hs = span_of(huge);
	size_t run_pages = rs->npages, huge_pages = hs->npages;
	auto before = os_fake_counts().maps;
	for (size_t size : {SIZE_MAX, SIZE_MAX - PAGE + 1, SIZE_MAX - PAGE, EBB_MAX_REQUEST + 1}) {
		INFO("size " << size);
		errno = 0;
		CHECK(large_alloc_mapped(size) == nullptr);
		CHECK(errno == ENOMEM);
		CHECK(large_resize(run, rs, size) == nullptr);
		CHECK(large_resize(huge, hs, size) == nullptr);
		CHECK(rs->npages == run_pages);
		CHECK(hs->npages == huge_pages);
		CHECK(rs->state == SPAN_LARGE);
		CHECK(hs->state == SPAN_LARGE);
	}
	CHECK(os_fake_counts().maps == before);
	CHECK(((unsigned char *)run)[20 * PAGE - 1] == 0x11);
	CHECK(((unsigned char *)huge)[9 * MiB - 1] == 0x22);
	free(run);
	free(huge);
}

TEST_CASE_METHOD(large_fixture, "cached huge blocks are handed out once: live blocks never overlap, contents stay",
		 "[large]")
{
	// Freed huge blocks stay cached (dirty); the next requests take one
	// whole, split one, or are made of the pages of several (huge.c). Each
	// round frees some blocks and asks for others of other sizes; every
	// live block is filled with its own byte and must keep it, and no two
	// live blocks may share a page.
	struct blk {
		unsigned char *p;
		size_t size;
		unsigned char tag;
	};
	std::vector<blk> live;
	unsigned char tag = 1;
	uint64_t x = 12345;
	auto next = [&x] {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		return x >> 33;
	};
	auto take = [&](size_t size) {
		unsigned char *p = (unsigned char *)alloc(size);
		std::memset(p, tag, size);
		live.push_back({p, size, tag});
		tag = tag == 255 ? 1 : tag + 1;
	};
	for (size_t mib : {5, 9, 13, 7, 21, 6})
		take(mib * MiB);
	for (int round = 0; round < 12; round++) {
		INFO("round " << round);
		// free about half, in a scrambled order
		for (size_t i = live.size(); i-- > 0;)
			if (next() % 2 == 0) {
				free(live[i].p);
				live.erase(live.begin() + (long)i);
			}
		for (int k = 0; k < 3; k++)
			take((size_t)(4 * MiB + (next() % (24 * MiB))));
		std::vector<blk> sorted = live;
		std::sort(sorted.begin(), sorted.end(), [](const blk &a, const blk &b) { return a.p < b.p; });
		for (size_t i = 0; i + 1 < sorted.size(); i++)
			CHECK(sorted[i].p + sorted[i].size <= sorted[i + 1].p);
		for (const blk &b : live) {
			size_t bad = 0;
			for (size_t j = 0; j < b.size; j += PAGE / 2)
				bad += b.p[j] != b.tag;
			bad += b.p[b.size - 1] != b.tag;
			CHECK(bad == 0);
		}
	}
	for (const blk &b : live)
		free(b.p);
	page_heap_release(page_heap_get(0), os_fake_now(), true);
}

namespace {
std::atomic<int> mark_hook_calls;
void *mark_hook_p;
bool mark_hook_keep;
bool mark_hook(void *p, span_t *)
{
	mark_hook_calls++;
	mark_hook_p = p;
	return mark_hook_keep;
}
} // namespace

// The heap profiler's sampled mark (span.h: u.large.sampled), which
// large_free_checked tests before it calls the profiler's hook: a page run
// comes out of the page heap unmarked, a free of an unmarked run never
// calls the hook, a marked one's does (and a hook that takes the block
// leaves it allocated), and a pointer into a marked block that is not its
// start is reported before the mark is looked at.
TEST_CASE_METHOD(large_fixture, "the sampled mark: only a marked page run's free reaches the free hook", "[large]")
{
	mark_hook_calls = 0;
	large_set_free_hook(mark_hook);
	char *a = (char *)alloc(8 * PAGE);
	char *b = (char *)alloc(8 * PAGE);
	CHECK(span_of(a)->u.large.sampled == 0);
	CHECK(span_of(b)->u.large.sampled == 0);
	free(b);
	CHECK(mark_hook_calls == 0);

	span_of(a)->u.large.sampled = 1;
	auto forged = apitest::run_child([a] {
		large_free_checked(a + PAGE, "free"); // on_error=abort: reported before the hook
		return mark_hook_calls.load() == 0 ? 3 : 4;
	});
	CHECK(forged.signal == SIGABRT);
	CHECK(forged.err == apitest::bad_pointer_line("free", a + PAGE, "not the start of a block"));

	mark_hook_keep = true; // the hook takes it: the run stays allocated
	free(a);
	CHECK(mark_hook_calls == 1);
	CHECK(mark_hook_p == a);
	CHECK(large_why_bad(a, true) == nullptr);

	mark_hook_keep = false; // the hook lets go (and clears the mark, as prof_unlink does)
	span_of(a)->u.large.sampled = 0;
	free(a);
	CHECK(mark_hook_calls == 1);
	CHECK(large_why_bad(a, true) != nullptr);

	// The same pages handed out again: unmarked (alloc_count zeroes the union).
	b = (char *)alloc(8 * PAGE); // b's or a's run, freed above
	char *c = (char *)alloc(8 * PAGE);
	CHECK(span_of(b)->u.large.sampled == 0);
	CHECK(span_of(c)->u.large.sampled == 0);
	free(b);
	free(c);
	CHECK(mark_hook_calls == 1);
	large_set_free_hook(nullptr);
}

TEST_CASE_METHOD(large_fixture, "a request made of cached blocks grows the largest in place where the space after it is free",
		 "[large]")
{
	// huge.c, huge_assemble: the donor that gives all its pages and has
	// free address space after it becomes the block; its pages stay where
	// they are and only the other donors' move in after them.
	const size_t P = 2 * MiB / PAGE;
	page_heap_t *h = page_heap_get(0);
	unsigned char *x = (unsigned char *)alloc(28 * MiB);
	unsigned char *z = (unsigned char *)alloc(4 * MiB);
	// Shrunk to 12 MiB: the 16 MiB cut off move into a cached block of
	// their own (taken again at once), and leave the space after x free.
	REQUIRE(large_resize(x, span_of(x), 12 * MiB) == x);
	REQUIRE(span_of(x)->npages == 6 * P);
	unsigned char *t = (unsigned char *)alloc(16 * MiB);
	CHECK(span_of(t)->npages == 8 * P);
	std::memset(x, 0x33, 12 * MiB);
	std::memset(z, 0x22, 4 * MiB);
	free(x);
	free(z);
	size_t huge_count = h->huge_count;

	// 16 MiB: x gives its 12, z its 4, moved in after x's.
	unsigned char *y = (unsigned char *)alloc(16 * MiB);
	CHECK(y == x);
	span_t *s = span_of(y);
	CHECK(s->npages == 8 * P);
	CHECK(s->state == SPAN_LARGE);
	CHECK(y[0] == 0x33);
	CHECK(y[12 * MiB - 1] == 0x33);
	CHECK(y[12 * MiB] == 0x22);
	CHECK(y[16 * MiB - 1] == 0x22);
	CHECK(h->huge_count == huge_count - 1); // z is gone, no block was made
	CHECK(registry_get(z) == REG_NONE);
	CHECK(registry_get(y + 12 * MiB) == REG_HUGE_CONT);
	CHECK(large_why_bad(y, true) == nullptr);
	std::memset(y, 0x44, 16 * MiB);
	free(y);
	free(t);
	page_heap_release(h, os_fake_now(), true);
}

TEST_CASE_METHOD(large_fixture, "a huge request with nothing cached takes the pages of an entirely free superblock",
		 "[large]")
{
	// huge.c, huge_fill_sb: a superblock whose runs are all free and
	// dirty moves whole (4 MiB, its header pages too) into the new huge
	// block instead of fresh pages, and is no longer its heap's.
	page_heap_t *h = page_heap_get(0);
	page_heap_release(h, os_fake_now(), true); // no cached huge block, no free superblock
	unsigned char *r = (unsigned char *)alloc(MAX_PAGES * PAGE);
	superblock_t *sb = span_superblock(span_of(r));
	REQUIRE(sb->heap == h);
	std::memset(r, 0x77, MAX_PAGES * PAGE);
	free(r);
	REQUIRE(sb->free_pages == sb->usable_pages);
	size_t count = h->superblocks_count;
	unsigned char *sbp = (unsigned char *)sb;

	unsigned char *y = (unsigned char *)alloc(8 * MiB);
	span_t *s = span_of(y);
	CHECK(s->zeroed == 0);
	CHECK(h->superblocks_count == count - 1);
	CHECK(registry_get(sbp) == REG_NONE);
	CHECK(y[EBB_SB_HEADER_PAGES * PAGE] == 0x77);
	CHECK(y[4 * MiB - 1] == 0x77);
	CHECK(large_why_bad(y, true) == nullptr);
	std::memset(y, 0x45, 8 * MiB);
	free(y);

	// The same with calloc's zero: whatever moved in reads as zero.
	page_heap_release(h, os_fake_now(), true);
	r = (unsigned char *)alloc(MAX_PAGES * PAGE);
	std::memset(r, 0x78, MAX_PAGES * PAGE);
	free(r);
	unsigned char *z = (unsigned char *)alloc(8 * MiB, 16, true);
	size_t bad = 0;
	for (size_t i = 0; i < 8 * MiB; i += 512)
		bad += z[i] != 0;
	CHECK(bad == 0);
	free(z);
	page_heap_release(h, os_fake_now(), true);
}
