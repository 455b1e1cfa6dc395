// Option parsing (core/runtime/options.c) on the fake os: every value form each kind
// of option takes and refuses, range checks (a value out of [min, max] is
// refused, never clamped), unknown and hidden names, the string option,
// EBB_OPTIONS at start-up, and the warnings ebb_option_set() prints (it is
// options_set(..., quiet = false) plus errno).
//
// Each test puts back the values it changed, so the other unit tests see the
// settings they set themselves.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

#include "core/process/init.h"
#include "core/runtime/options.h"
#include "tests/api/child_util.h"
#include "tests/support/unit.h"

namespace {

bool set(const char *name, const std::string &value)
{
	unit_init();
	return options_set(name, std::strlen(name), value.data(), value.size(), true);
}

long long get(const char *name)
{
	enum option_id id;
	REQUIRE(options_lookup(name, &id));
	return options_get(id);
}

// Saves an option's value (and text) and puts it back at the end of the test,
// telling the layers as a set would.
struct keep_option {
	enum option_id id;
	long long saved;
	std::string text;
	explicit keep_option(const char *name)
	{
		REQUIRE(options_lookup(name, &id));
		saved = options_get(id);
		char buf[OPTIONS_STRING_MAX];
		options_get_string(id, buf, sizeof buf);
		text = buf;
	}
	~keep_option()
	{
		if (id == OPT_STATS_FILE)
			set("stats_file", text);
		__atomic_store_n(&options_values[id], saved, __ATOMIC_RELAXED);
		init_option_changed(id);
	}
};

// Each accepted text and the value it stores; then each refused text leaves
// the last accepted value in place.
void accepts(const char *name, std::initializer_list<std::pair<const char *, long long>> good)
{
	for (auto &g : good) {
		INFO(name << "=" << g.first);
		CHECK(set(name, g.first));
		CHECK(get(name) == g.second);
	}
}

void refuses(const char *name, std::initializer_list<const char *> bad)
{
	long long before = get(name);
	for (const char *b : bad) {
		INFO(name << "=" << b);
		CHECK_FALSE(set(name, b));
		CHECK(get(name) == before);
	}
}

} // namespace

TEST_CASE("integer options take signed decimals within [min, max] only", "[options]")
{
	keep_option k("decay_ms"); // OPT_INT, [-1, 3600000]
	accepts("decay_ms", {{"0", 0}, {"-1", -1}, {"3600000", 3600000}, {"+25", 25}, {"007", 7}});
	refuses("decay_ms", {"-2", "3600001", "", "-", "+", "abc", "12abc", "1k", " 5", "5 ", "1.5",
			     "0x10", "99999999999999999999", "4611686018427387904"});
	keep_option u("unmap_delay_ms"); // [0, 86400000]: -1 is below its min
	refuses("unmap_delay_ms", {"-1", "86400001"});
	accepts("unmap_delay_ms", {{"86400000", 86400000}});
}

TEST_CASE("boolean options take 1/0, true/false, on/off, yes/no, lower case", "[options]")
{
	keep_option k("stats_on_exit");
	accepts("stats_on_exit", {{"1", 1}, {"0", 0}, {"true", 1}, {"false", 0}, {"on", 1}, {"off", 0},
				  {"yes", 1}, {"no", 0}});
	refuses("stats_on_exit", {"2", "-1", "TRUE", "Yes", "y", "n", "", "truee", "01"});
}

TEST_CASE("byte options take k/m/g suffixes (with i and b) and refuse the rest", "[options]")
{
	keep_option k("tcache_max_bytes"); // OPT_BYTES, [0, 1 GiB]
	accepts("tcache_max_bytes", {{"0", 0},
				     {"4096", 4096},
				     {"64k", 64 << 10},
				     {"64K", 64 << 10},
				     {"64kb", 64 << 10},
				     {"64KiB", 64 << 10},
				     {"3m", 3 << 20},
				     {"3MB", 3 << 20},
				     {"1g", 1LL << 30},
				     {"1GiB", 1LL << 30},
				     {"1073741824", 1LL << 30}});
	refuses("tcache_max_bytes", {"1073741825", "2g", "1025m", "-1", "-1k", "1t", "1kx", "1kibb", "1ki b",
				     "k", "", "1 k", "1.5m", "4611686018427387904k"});
}

TEST_CASE("byte options take a t suffix: prof_sample reaches 1T, as docs/usage.md says", "[options]")
{
	keep_option k("prof_sample"); // OPT_BYTES, [1, 1 TiB]
	accepts("prof_sample", {{"1", 1},
				{"1t", 1LL << 40},
				{"1T", 1LL << 40},
				{"1TiB", 1LL << 40},
				{"1tb", 1LL << 40},
				{"1024g", 1LL << 40},
				{"1099511627776", 1LL << 40}});
	// Above the range, and too large to shift (2^22 T is 2^62 bytes).
	refuses("prof_sample", {"0", "2t", "1099511627777", "1025g", "4194305t", "99999999999t", "1tx", "t"});
}

TEST_CASE("dirty_max takes bytes or a share of allocated bytes, stored negated", "[options]")
{
	keep_option k("dirty_max"); // OPT_DIRTY, [-100, 2^46]
	accepts("dirty_max", {{"25%", -26}, {"100%", -101}, {"1%", -2}, {"0%", -1}, {"64M", 64LL << 20},
			      {"0", 0}, {"70368744177664", 1LL << 46}});
	refuses("dirty_max", {"101%", "-5%", "%", "1.5%", "25 %", "25%%", "x%", "70368744177665",
			      "65537g", "-1"});
}

TEST_CASE("the dirty budget: bytes as given, a share never below 128 MiB", "[options]")
{
	keep_option k("dirty_max");
	const uint64_t MiB = 1 << 20;
	REQUIRE(set("dirty_max", "64M"));
	CHECK(options_dirty_max_bytes(0) == 64 * MiB);
	CHECK(options_dirty_max_bytes(100000 * MiB) == 64 * MiB);
	REQUIRE(set("dirty_max", "25%"));
	CHECK(options_dirty_max_bytes(0) == 128 * MiB);
	CHECK(options_dirty_max_bytes(400 * MiB) == 128 * MiB);
	CHECK(options_dirty_max_bytes(1000 * MiB) == 250 * MiB);
	REQUIRE(set("dirty_max", "100%"));
	CHECK(options_dirty_max_bytes(4000 * MiB) == 4000 * MiB);
	REQUIRE(set("dirty_max", "0"));
	CHECK(options_dirty_max_bytes(4096 * MiB) == 0); // 0 bytes: purge every dirty page at once
}

// docs/usage.md promises a share "never below 128 MiB": "0%" is a share
// (stored as -1), not zero bytes (which purges at once).
TEST_CASE("dirty_max=0% is a share too: never below 128 MiB", "[options]")
{
	keep_option k("dirty_max");
	REQUIRE(set("dirty_max", "0%"));
	CHECK(options_dirty_max_bytes(0) == 128ull << 20);
	CHECK(options_dirty_max_bytes(4096ull << 20) == 128ull << 20);
	REQUIRE(set("dirty_max", "0"));
	CHECK(options_dirty_max_bytes(4096ull << 20) == 0);
}

TEST_CASE("choice options take exactly one of their words, stored as its index", "[options]")
{
	keep_option p("purge");
	accepts("purge", {{"free", 1}, {"dontneed", 0}});
	refuses("purge", {"Free", "FREE", "dont", "dontneedx", "", "dontneed|free", "|", "0", "1"});
	keep_option e("on_error");
	accepts("on_error", {{"warn", 1}, {"abort", 0}});
	refuses("on_error", {"ignore", "abort ", "warn,abort"});
}

TEST_CASE("the string option stores text of at most 255 bytes, its value is the length", "[options]")
{
	keep_option k("stats_file");
	enum option_id id;
	REQUIRE(options_lookup("stats_file", &id));
	char buf[OPTIONS_STRING_MAX];

	REQUIRE(set("stats_file", "/tmp/ebb.%p.csv"));
	CHECK(get("stats_file") == 15);
	CHECK(options_get_string(id, buf, sizeof buf) == 15);
	CHECK(std::string(buf) == "/tmp/ebb.%p.csv");
	// a short buffer gets a NUL-terminated prefix and the full length
	char small[5];
	CHECK(options_get_string(id, small, sizeof small) == 15);
	CHECK(std::string(small) == "/tmp");
	CHECK(options_get_string(id, nullptr, 0) == 15);

	std::string longest(OPTIONS_STRING_MAX - 1, 'x');
	CHECK(set("stats_file", longest));
	CHECK(get("stats_file") == OPTIONS_STRING_MAX - 1);
	CHECK(options_get_string(id, buf, sizeof buf) == longest.size());
	CHECK(std::string(buf) == longest);

	CHECK_FALSE(set("stats_file", longest + "y")); // too long: refused, the old text stays
	CHECK(get("stats_file") == OPTIONS_STRING_MAX - 1);
	CHECK_FALSE(set("stats_file", std::string("a\0b", 3))); // a NUL would cut it short
	CHECK(options_get_string(id, buf, sizeof buf) == longest.size());

	CHECK(set("stats_file", "")); // empty: stderr
	CHECK(get("stats_file") == 0);
	CHECK(options_get_string(id, buf, sizeof buf) == 0);
	CHECK(buf[0] == '\0');
}

TEST_CASE("names match exactly, unknown and hidden names are not options", "[options]")
{
	keep_option k("decay_ms");
	REQUIRE(set("decay_ms", "1234"));
	for (const char *name : {"no_such_option", "", "decay", "decay_ms_", "DECAY_MS", " decay_ms", "decay_ms "}) {
		INFO("name '" << name << "'");
		CHECK_FALSE(set(name, "5"));
		enum option_id id;
		CHECK_FALSE(options_lookup(name, &id));
	}
	CHECK(get("decay_ms") == 1234);
	// The name is a counted string: what follows name_len is not read.
	unit_init();
	CHECK(options_set("decay_msXYZ", 8, "77", 2, true));
	CHECK(get("decay_ms") == 77);

	// Every option of the table can be looked up by its own name, and its id is its row.
	const char *names[] = {
#define NAME_(id, name, kind, def, min, max, choices, doc) #name,
		EBB_OPTIONS_TABLE(NAME_)
#undef NAME_
	};
	for (unsigned i = 0; i < OPT_COUNT; i++) {
		enum option_id id;
		CHECK(options_lookup(names[i], &id));
		CHECK(id == (enum option_id)i);
	}
	// fault_* options are set through the same call but are not in the table.
	enum option_id id;
	CHECK_FALSE(options_lookup("fault_map", &id));
}

TEST_CASE("the hidden fault options take off, always, <n> and <ppm>ppm", "[options]")
{
	for (const char *name : {"fault_map", "fault_purge", "fault_unmap"}) {
		for (const char *v : {"always", "5", "0", "1000000ppm", "0ppm", "250000ppm"}) {
			INFO(name << "=" << v);
			CHECK(set(name, v));
			CHECK(set(name, "off")); // at once: the fake os would fail the next call
		}
		for (const char *v : {"1000001ppm", "-1", "5pp", "5ppmm", "ppm", "", "on", "Always"}) {
			INFO(name << "=" << v);
			CHECK_FALSE(set(name, v));
		}
	}
	CHECK_FALSE(set("fault_other", "off"));
	CHECK_FALSE(set("fault_", "off"));
}

// What ebb_option_set() prints: options_set with quiet = false, in a child
// so the warnings can be read from its stderr.
TEST_CASE("a refused name or value is named in one warning line, unless quiet", "[options]")
{
	unit_init();
	auto r = apitest::run_child([] {
		auto loud = [](const char *n, const char *v) {
			return options_set(n, std::strlen(n), v, std::strlen(v), false);
		};
		if (loud("decay_ms", "banana") || loud("no_such", "1") || loud("purge", "sometimes"))
			return 1;
		if (options_set("no_such_quiet", 13, "1", 1, true)) // quiet: no line
			return 2;
		if (!loud("decay_ms", "250")) // accepted: no line
			return 3;
		return 0;
	});
	REQUIRE(r.exited);
	CHECK(r.code == 0);
	CHECK(r.err == "ebbmalloc: warning: option decay_ms: bad value 'banana' ignored (ms a freed page "
		       "stays resident before it is given back (0: at once, -1: never))\n"
		       "ebbmalloc: warning: unknown option 'no_such' ignored\n"
		       "ebbmalloc: warning: option purge: bad value 'sometimes' ignored (how pages are given "
		       "back: MADV_DONTNEED (RSS drops at once) or MADV_FREE (lazily))\n");
}

// EBB_OPTIONS is read by options_init() (once, at start-up): items split at
// ',', empty items skipped, an item without '=' or with a bad name or value
// named and skipped, the good ones taken in order (the last one wins).
TEST_CASE("EBB_OPTIONS: comma-separated name=value items, bad ones skipped with a warning", "[options]")
{
	unit_init();
	auto r = apitest::run_child([] {
		setenv("EBB_OPTIONS",
		       ",decay_ms=777,,stats_on_exit=yes,noequals,bogus=1,purge=free,decay_ms=x,"
		       "stats_file=a=b,tcache_max_bytes=2k,tcache_max_bytes=3k,",
		       1);
		options_init();
		enum option_id id;
		auto val = [&](const char *n) { return options_lookup(n, &id) ? options_get(id) : -999; };
		if (val("decay_ms") != 777) return 1;
		if (val("stats_on_exit") != 1) return 2;
		if (val("purge") != 1) return 3;
		if (val("tcache_max_bytes") != 3072) return 4;
		char buf[16];
		options_lookup("stats_file", &id);
		if (options_get_string(id, buf, sizeof buf) != 3 || std::string(buf) != "a=b") return 5;
		return 0;
	});
	REQUIRE(r.exited);
	CHECK(r.code == 0);
	CHECK(r.err == "ebbmalloc: warning: option 'noequals' has no '=value'; ignored\n"
		       "ebbmalloc: warning: unknown option 'bogus' ignored\n"
		       "ebbmalloc: warning: option decay_ms: bad value 'x' ignored (ms a freed page stays "
		       "resident before it is given back (0: at once, -1: never))\n");
}
