// test_prof_patch.cpp: os_tls_patch (os/os_prof.c), which writes a TLS
// variable's offset from the thread pointer into the heap profiler's
// patched instructions at start-up (core/process/prof.h: the countdown's
// subq, the cache pointer's movq). A wrong offset would make every thread
// count down or allocate from someone else's memory, so the patched code
// is run here, in two threads, and an instruction it does not know is left
// alone.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <vector>

#include "core/process/prof.h"
#include "os/os_prof.h"

#if defined(__x86_64__)
namespace {

constexpr int32_t kPlaceholder = 0x7e5a1f10;
thread_local long tls_word;

// A page holding `insn` (whose disp32 at offset 5 is kPlaceholder) then ret.
unsigned char *code_page(const unsigned char (&insn)[5])
{
	void *m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(m != MAP_FAILED);
	auto *c = static_cast<unsigned char *>(m);
	memcpy(c, insn, 5);
	memcpy(c + 5, &kPlaceholder, 4);
	c[9] = 0xc3; // ret
	return c;
}

} // namespace

TEST_CASE("os_tls_patch: a patched movq from fs loads each thread's own variable", "[prof]")
{
	static const unsigned char mov_rax[5] = {0x64, 0x48, 0x8b, 0x04, 0x25}; // movq %fs:disp32, %rax
	unsigned char *c = code_page(mov_rax);
	REQUIRE(os_tls_patch(c, kPlaceholder, &tls_word));
	auto load = reinterpret_cast<long (*)()>(c);
	tls_word = 42;
	CHECK(load() == 42);
	long other = -1;
	std::thread([&] {
		tls_word = 7;
		other = load();
	}).join();
	CHECK(other == 7);
	CHECK(load() == 42);
	munmap(c, 4096);
}

TEST_CASE("os_tls_patch: a patched subq from a register subtracts from this thread's variable", "[prof]")
{
	static const unsigned char sub_rdi[5] = {0x64, 0x48, 0x29, 0x3c, 0x25}; // subq %rdi, %fs:disp32
	unsigned char *c = code_page(sub_rdi);
	REQUIRE(os_tls_patch(c, kPlaceholder, &tls_word));
	auto sub = reinterpret_cast<void (*)(long)>(c);
	tls_word = 100;
	sub(30);
	CHECK(tls_word == 70);
	long other = -1;
	std::thread([&] {
		tls_word = 5;
		sub(2);
		other = tls_word;
	}).join();
	CHECK(other == 3);
	CHECK(tls_word == 70);
	munmap(c, 4096);
}

TEST_CASE("os_tls_patch leaves alone an instruction it does not know or another placeholder", "[prof]")
{
	static const unsigned char add_rdi[5] = {0x64, 0x48, 0x01, 0x3c, 0x25}; // addq %rdi, %fs:disp32
	static const unsigned char mov_rip[5] = {0x48, 0x8b, 0x05, 0x00, 0x00}; // no fs prefix
	static const unsigned char mov_rax[5] = {0x64, 0x48, 0x8b, 0x04, 0x25};
	for (const auto *insn : {&add_rdi, &mov_rip, &mov_rax}) {
		unsigned char *c = code_page(*insn);
		unsigned char before[10];
		memcpy(before, c, sizeof before);
		// The right form is refused too when its disp32 is not the
		// placeholder asked for (another patch site's, or patched already).
		CHECK_FALSE(os_tls_patch(c, insn == &mov_rax ? kPlaceholder + 8 : kPlaceholder, &tls_word));
		CHECK(memcmp(before, c, sizeof before) == 0);
		munmap(c, 4096);
	}
}

namespace {

// The permissions /proc/self/maps gives the mapping holding p ("r-xp" and
// the like), empty if none.
std::string perms_of(const void *p)
{
	std::string out;
	FILE *f = fopen("/proc/self/maps", "r");
	if (f == nullptr) return out;
	char line[512];
	auto a = reinterpret_cast<uintptr_t>(p);
	while (fgets(line, sizeof line, f) != nullptr) {
		unsigned long lo = 0, hi = 0;
		char perms[8] = {};
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && a >= lo && a < hi) {
			out = perms;
			break;
		}
	}
	fclose(f);
	return out;
}

} // namespace

TEST_CASE("os_code_write_begin/end: patches of two pages in one window run, and leave both pages not writable",
	  "[prof]")
{
	static const unsigned char mov_rax[5] = {0x64, 0x48, 0x8b, 0x04, 0x25}; // movq %fs:disp32, %rax
	void *m = mmap(nullptr, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(m != MAP_FAILED);
	auto *c = static_cast<unsigned char *>(m);
	// Two loads on the first page, one on the second; each "movq; ret".
	unsigned char *at[3] = {c, c + 64, c + 4096};
	for (unsigned char *x : at) {
		memcpy(x, mov_rax, 5);
		memcpy(x + 5, &kPlaceholder, 4);
		x[9] = 0xc3;
	}
	REQUIRE(mprotect(c, 2 * 4096, PROT_READ | PROT_EXEC) == 0);
	os_code_write_begin();
	// The first page, the second, then the first again: the window moves.
	bool ok = os_tls_patch(at[0], kPlaceholder, &tls_word) && os_tls_patch(at[2], kPlaceholder, &tls_word) &&
		  os_tls_patch(at[1], kPlaceholder, &tls_word);
	os_code_write_end();
	REQUIRE(ok);
	CHECK(perms_of(c) == "r-xp");
	CHECK(perms_of(c + 4096) == "r-xp");
	tls_word = 11;
	for (unsigned char *x : at)
		CHECK(reinterpret_cast<long (*)()>(x)() == 11);
	// Outside a window each write closes its page again.
	static const unsigned char sub_rdi[5] = {0x64, 0x48, 0x29, 0x3c, 0x25}; // subq %rdi, %fs:disp32
	unsigned char *d = code_page(sub_rdi);
	REQUIRE(mprotect(d, 4096, PROT_READ | PROT_EXEC) == 0);
	REQUIRE(os_tls_patch(d, kPlaceholder, &tls_word));
	CHECK(perms_of(d) == "r-xp");
	reinterpret_cast<void (*)(long)>(d)(4);
	CHECK(tls_word == 7);
	munmap(d, 4096);
	munmap(c, 2 * 4096);
}
#endif
