/* test_metadata_guard.cpp: an overflow from the block before a 4 MiB boundary
 * into the header that starts there (issue 11, item 5).
 *
 * A superblock's header, and a huge block's (one slot below its data), start
 * at a 4 MiB boundary, and a 16-byte block can end exactly there: the first
 * span a fresh superblock hands out is its last page, and the kernel maps new
 * superblocks just below the previous ones. Each case runs in a forked child
 * that arranges that layout for real (16-byte blocks until one ends where a
 * header of ours begins), overflows the block by 8, 16 or 64 bytes of garbage,
 * or by 80 bytes that leave the red zone zero, keep the magic and forge the
 * owner pointer to a fake page heap in the program's own memory (what an
 * attacker who knows the layout of core/pages/superblock.h writes), and then frees
 * the neighbour and calls ebb_trim(). The child must die of SIGABRT after one
 * report that names the header's address: never SIGSEGV, never a hang (an
 * alarm ends it), never a normal exit. The same corruptions written straight
 * through the header's address (sb = p & ~(4 MiB - 1)) run too, as the
 * deterministic twin of the arranged overflow. */
#include "api_util.h"
#include "child_util.h"

#include <catch2/catch.hpp>

#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>
#include <unordered_set>
#include <vector>

using namespace apitest;

namespace {

constexpr uintptr_t kSlot = 4 * MiB;
/* core/pages/superblock.h: the red zone, then the magic, then the owner pointer. */
constexpr size_t kGuard = 64, kMagicOff = 64, kHeapOff = 72;

/* A fake page heap in the program's memory, for the forged owner pointer. */
alignas(64) char g_fake_heap[16384];

enum class Target { Superblock, Huge };
enum class How { Overflow, Direct };
struct Payload {
	const char *name;
	size_t garbage; /* bytes of garbage; 0: the forged header prefix */
};
const Payload kPayloads[] = {{"8 bytes of garbage", 8}, {"16 bytes of garbage", 16},
			     {"64 bytes of garbage", 64}, {"a forged owner pointer", 0}};

/* Writes the payload at hdr (the first byte past the overflowed block). */
void corrupt(char *hdr, const Payload &pl)
{
	if (pl.garbage) {
		for (size_t i = 0; i < pl.garbage; i++)
			hdr[i] = (char)(0xA5 ^ (i * 37));
		return;
	}
	char forged[kHeapOff + 8];
	memset(forged, 0, kGuard);
	memcpy(forged + kMagicOff, hdr + kMagicOff, 8); /* the real magic */
	void *fake = g_fake_heap;
	memcpy(forged + kHeapOff, &fake, sizeof fake);
	memcpy(hdr, forged, sizeof forged);
}

uintptr_t slot_of(const void *p) { return (uintptr_t)p / kSlot; }

/* The child: arranges a 16-byte block that ends at a header of ours (or, for
 * How::Direct, takes any block and its header), writes the payload, frees the
 * neighbour and trims. Prints the header's address first; returns only if
 * nothing caught the corruption (or 90 if the layout could not be made). */
int child(Target target, How how, const Payload &pl)
{
	alarm(30);
	const size_t kMaxBlocks = 3u << 20; /* 48 MiB of 16-byte blocks at most */
	std::vector<void *> held;
	held.reserve(kMaxBlocks);
	std::unordered_set<uintptr_t> slots;
	void *huge = nullptr;
	char *hdr = nullptr, *block = nullptr;
	if (target == Target::Huge) {
		huge = ebb_malloc(5 * MiB);
		if (huge == nullptr || (uintptr_t)huge % kSlot != 0) return 91;
		hdr = (char *)huge - kSlot;
	}
	if (how == How::Direct) {
		block = (char *)ebb_malloc(16);
		held.push_back(block);
		if (target == Target::Superblock) hdr = (char *)((uintptr_t)block & ~(kSlot - 1));
	} else {
		std::vector<char *> ends; /* blocks that end at a 4 MiB boundary */
		for (size_t i = 0; i < kMaxBlocks && block == nullptr; i++) {
			char *p = (char *)ebb_malloc(16);
			if (p == nullptr) return 92;
			held.push_back(p);
			slots.insert(slot_of(p));
			if ((uintptr_t)(p + 16) % kSlot != 0) continue;
			if (target == Target::Huge) {
				if (p + 16 == hdr) block = p;
			} else {
				ends.push_back(p);
			}
			if (target == Target::Superblock && (i & 4095) == 0) {
				for (char *e : ends)
					if (slots.count(slot_of(e + 16))) {
						block = e;
						break;
					}
			}
		}
		if (target == Target::Superblock && block == nullptr)
			for (char *e : ends)
				if (slots.count(slot_of(e + 16))) {
					block = e;
					break;
				}
		if (block == nullptr) return 90;
		hdr = block + 16;
	}
	fprintf(stderr, "target header 0x%" PRIxPTR "\n", (uintptr_t)hdr);
	if (how == How::Overflow)
		corrupt(block + 16, pl); /* the program's bug: writing past its block */
	else
		corrupt(hdr, pl);
	if (target == Target::Huge) {
		ebb_free(huge);
	} else {
		for (void *p : held)
			if (slot_of(p) == slot_of(hdr)) ebb_free(p);
	}
	ebb_trim();
	return 0;
}

/* The address the child names on its first line. */
std::string target_of(const std::string &err)
{
	const char *tag = "target header ";
	size_t at = err.find(tag);
	if (at == std::string::npos) return "";
	size_t end = err.find('\n', at);
	return err.substr(at + strlen(tag), end - at - strlen(tag));
}

void check_caught(Target target, How how)
{
	for (const Payload &pl : kPayloads) {
		INFO((target == Target::Huge ? "huge block header, " : "superblock header, ")
		     << (how == How::Overflow ? "overflow of the block before it: " : "written directly: ") << pl.name);
		ChildResult r = run_child([&] { return child(target, how, pl); });
		INFO("child stderr:\n" << r.err);
		REQUIRE_FALSE((r.exited && r.code == 90)); /* the layout could not be arranged */
		CHECK_FALSE(r.exited);
		CHECK(r.signal == SIGABRT);
		std::string addr = target_of(r.err);
		REQUIRE(addr.size() > 2);
		std::string expect = "ebbmalloc: allocator metadata overwritten (a buffer overflow from the block "
				     "before it?): superblock header " + addr + ": ";
		CHECK(r.err.find(expect) != std::string::npos);
		/* one report, then abort */
		size_t first = r.err.find("ebbmalloc: ");
		CHECK((first != std::string::npos && r.err.find("ebbmalloc: ", first + 1) == std::string::npos));
	}
}

} // namespace

TEST_CASE("an overflow into the next superblock's header is reported and aborts", "[metadata_guard]")
{
	check_caught(Target::Superblock, How::Overflow);
}

TEST_CASE("an overflow into a huge block's header is reported when the huge block is freed", "[metadata_guard]")
{
	check_caught(Target::Huge, How::Overflow);
}

TEST_CASE("a superblock or huge header overwritten through its address is reported and aborts", "[metadata_guard]")
{
	check_caught(Target::Superblock, How::Direct);
	check_caught(Target::Huge, How::Direct);
}

TEST_CASE("a forged list link in a cached huge block's header is caught before the unlink writes through it",
	  "[metadata_guard]")
{
	/* Everything up to the links kept as it was (red zone, magic, owner,
	 * sizes): only the prev link of the freed huge block, which sits in the
	 * heap's cache, now points into the program's memory, the classic unlink
	 * write. The trim's release pass (or a reuse) would unlink it. */
	constexpr size_t kPrevOff = 120; /* core/pages/superblock.h: next at 112, prev at 120 */
	ChildResult r = run_child([] {
		alarm(30);
		char *huge = (char *)ebb_malloc(5 * MiB);
		if (huge == nullptr) return 91;
		char *hdr = huge - kSlot;
		fprintf(stderr, "target header 0x%" PRIxPTR "\n", (uintptr_t)hdr);
		ebb_free(huge);
		void *fake = g_fake_heap + 64;
		memcpy(hdr + kPrevOff, &fake, sizeof fake);
		ebb_trim();
		void *again = ebb_malloc(5 * MiB);
		ebb_free(again);
		return 0;
	});
	INFO("child stderr:\n" << r.err);
	CHECK(r.signal == SIGABRT);
	std::string addr = target_of(r.err);
	REQUIRE(addr.size() > 2);
	CHECK(r.err.find("superblock header " + addr + ": a list link in it points outside our superblocks") !=
	      std::string::npos);
}

TEST_CASE("an overflow that stops short of a header changes nothing", "[metadata_guard]")
{
	/* The control: the same search and an overflow that stays inside the
	 * block (16 bytes written into a 16-byte block), then the same frees and
	 * trim: the child exits normally and the allocator works. */
	ChildResult r = run_child([] {
		alarm(30);
		void *huge = ebb_malloc(5 * MiB);
		char *p = (char *)ebb_malloc(16);
		memset(p, 0xA5, 16);
		ebb_free(p);
		ebb_free(huge);
		ebb_trim();
		void *q = ebb_malloc(100);
		ebb_free(q);
		return 0;
	});
	INFO("child stderr:\n" << r.err);
	CHECK(r.exited);
	CHECK(r.code == 0);
}
