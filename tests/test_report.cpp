// Report formatting (core/runtime/report.c): the allocation-free printf subset, and
// the exact lines of a warning, a bad-pointer report and a fatal error, with
// what follows each (abort, or going on under on_error=warn). Lines are read
// from the stderr of a forked child (tests/api/child_util.h).
//
// "Without malloc": test_unit is linked with --wrap for malloc, calloc and
// realloc (tests/CMakeLists.txt), so a call from the allocator's objects to
// any of them passes through the counters below; the reports must leave them
// at zero.
#include <catch2/catch.hpp>

#include <algorithm>
#include <climits>
#include <cstdarg>
#include <csignal>
#include <cstdint>
#include <string>

#include "core/runtime/report.h"
#include "tests/api/child_util.h"
#include "tests/support/unit.h"

extern "C" {
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);

static unsigned long report_test_allocs; // calls made while armed
static bool report_test_armed;

void *__wrap_malloc(size_t n)
{
	if (report_test_armed)
		report_test_allocs++;
	return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t size)
{
	if (report_test_armed)
		report_test_allocs++;
	return __real_calloc(n, size);
}
void *__wrap_realloc(void *p, size_t n)
{
	if (report_test_armed)
		report_test_allocs++;
	return __real_realloc(p, n);
}
}

namespace {

std::string fmt(const char *f, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, f);
	size_t n = report_vformat(buf, sizeof buf, f, ap);
	va_end(ap);
	REQUIRE(n == std::strlen(buf)); // the whole text fit
	return buf;
}

// Runs fn in a child with on_error set to `mode`, allocation calls counted:
// the child exits 0 if fn made none (fn's own result otherwise), 99 if it did.
template <class F> apitest::ChildResult reporting_child(const char *mode, F fn)
{
	unit_init();
	return apitest::run_child([&] {
		unit_option("on_error", mode);
		report_test_allocs = 0;
		report_test_armed = true;
		int rc = fn();
		report_test_armed = false;
		return rc != 0 ? rc : report_test_allocs != 0 ? 99 : 0;
	});
}

} // namespace

TEST_CASE("report_format: each conversion of the subset", "[report]")
{
	CHECK(fmt("plain text") == "plain text");
	CHECK(fmt("%s|%s", "abc", "") == "abc|");
	CHECK(fmt("%s", (const char *)nullptr) == "(null)");
	CHECK(fmt("%.*s|", 3, "abcdef") == "abc|");
	CHECK(fmt("%.*s|", 10, "ab") == "ab|");
	CHECK(fmt("%.*s|", 0, "ab") == "|");
	CHECK(fmt("%.*s|", -4, "ab") == "|");
	CHECK(fmt("%c%c", 'o', 'k') == "ok");
	CHECK(fmt("%d %d %d", 0, -17, 42) == "0 -17 42");
	CHECK(fmt("%d %d", INT_MIN, INT_MAX) == "-2147483648 2147483647");
	CHECK(fmt("%u", UINT_MAX) == "4294967295");
	CHECK(fmt("%x %x", 0u, 0xdeadbeefu) == "0 deadbeef");
	CHECK(fmt("%zu", SIZE_MAX) == "18446744073709551615");
	CHECK(fmt("%llu", ULLONG_MAX) == "18446744073709551615");
	CHECK(fmt("%lld %lld", LLONG_MIN, -1LL) == "-9223372036854775808 -1");
	CHECK(fmt("100%%") == "100%");
}

TEST_CASE("report_format: pointers are 0x and lower-case hex, NULL is 0x0", "[report]")
{
	CHECK(fmt("%p", (void *)nullptr) == "0x0");
	CHECK(fmt("%p", (void *)0x10) == "0x10");
	CHECK(fmt("%p", (void *)0x7fffdeadbeefULL) == "0x7fffdeadbeef");
	CHECK(fmt("%p", (void *)UINTPTR_MAX) == "0xffffffffffffffff");
}

TEST_CASE("report_format: an unknown conversion prints '?' and a trailing '%' ends the text", "[report]")
{
	CHECK(fmt("a%qb") == "a?b");
	CHECK(fmt("%ld|", 5L) == "?d|"); // not in the subset: the argument is not consumed
	CHECK(fmt("end%") == "end?");
}

TEST_CASE("report_format: a short buffer gets a NUL-terminated prefix and the full length", "[report]")
{
	char buf[8];
	CHECK(report_format(buf, sizeof buf, "%s-%d", "abcdefgh", 12345) == 14);
	CHECK(std::string(buf) == "abcdefg");
	CHECK(report_format(buf, 1, "xyz") == 3);
	CHECK(buf[0] == '\0');
	buf[0] = 'q';
	CHECK(report_format(buf, 0, "xyz") == 3); // cap 0: nothing written
	CHECK(buf[0] == 'q');
}

TEST_CASE("a bad pointer: one exact line, then abort under on_error=abort", "[report]")
{
	void *p = (void *)0x7f12345678f0ULL;
	auto r = reporting_child("abort", [p] {
		report_bad_pointer("free", p, "not allocated by ebbmalloc");
		return 3; // not reached
	});
	CHECK(r.signal == SIGABRT);
	CHECK(r.err == apitest::bad_pointer_line("free", p, "not allocated by ebbmalloc"));
	CHECK(r.err == "ebbmalloc: free(): invalid pointer 0x7f12345678f0: not allocated by ebbmalloc\n");
}

TEST_CASE("a bad pointer under on_error=warn: the same line, counted, and the caller goes on", "[report]")
{
	auto r = reporting_child("warn", [] {
		uint64_t before = report_count();
		report_bad_pointer("realloc", nullptr, "the block was freed");
		report_bad_pointer("ebb_free_sized", (void *)0xabc0, "size does not match");
		return report_count() == before + 2 ? 0 : 1;
	});
	REQUIRE(r.exited);
	CHECK(r.code == 0); // not 99: no allocation call
	CHECK(r.err == "ebbmalloc: realloc(): invalid pointer 0x0: the block was freed\n"
		       "ebbmalloc: ebb_free_sized(): invalid pointer 0xabc0: size does not match\n");
}

TEST_CASE("a report too long for its buffer is cut, and still ends its line", "[report]")
{
	std::string reason(300, 'r'), message(600, 'r');
	auto r = reporting_child("warn", [&] {
		report_bad_pointer("free", (void *)0x1000, reason.c_str());
		report_warn("%s", message.c_str());
		return 0;
	});
	REQUIRE(r.exited);
	CHECK(r.code == 0);
	size_t nl = r.err.find('\n');
	REQUIRE(nl != std::string::npos);
	std::string first = r.err.substr(0, nl + 1), second = r.err.substr(nl + 1);
	CHECK(first.compare(0, 45, "ebbmalloc: free(): invalid pointer 0x1000: rr") == 0);
	CHECK(first.size() == 255); // the 256-byte buffer less its NUL, the last byte the newline
	CHECK(second.compare(0, 22, "ebbmalloc: warning: rr") == 0);
	CHECK(second.size() == 511);
	CHECK(second.back() == '\n');
	CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 2);
}

TEST_CASE("warnings and fatal errors: their exact lines, a fatal error aborts even under warn", "[report]")
{
	auto w = reporting_child("abort", [] {
		report_warn("option %s: bad value '%.*s' ignored", "decay_ms", 3, "abcdef");
		report_warn("%zu pages at %p", (size_t)12, (void *)nullptr);
		return 0; // a warning never aborts
	});
	REQUIRE(w.exited);
	CHECK(w.code == 0);
	CHECK(w.err == "ebbmalloc: warning: option decay_ms: bad value 'abc' ignored\n"
		       "ebbmalloc: warning: 12 pages at 0x0\n");

	auto f = reporting_child("warn", [] {
		report_fatal("out of address space for the registry");
		return 3;
	});
	CHECK(f.signal == SIGABRT);
	CHECK(f.err == "ebbmalloc: out of address space for the registry\n");
}
