/* test_observe.cpp: what a user sees of the allocator without a debugger:
 * the per-size-class table of ebb_stats_print, the CSV stats timeline
 * (options stats_interval_ms and stats_file; in-process, from the
 * environment without a background thread, and the last row at exit), and
 * the defaults documented in docs/usage.md. Each tag runs as its own process
 * (tests/api/CMakeLists.txt). Only the ebb_* names are used. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace apitest;

namespace {

std::string read_file(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}


/* Complete lines only: the last one may still be being written. */
std::vector<std::string> lines_of(const std::string &text)
{
	std::vector<std::string> out;
	size_t start = 0;
	for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
		out.push_back(text.substr(start, nl - start));
	return out;
}

std::vector<std::string> split(const std::string &s, char sep)
{
	std::vector<std::string> out;
	std::string cur;
	std::istringstream in(s);
	while (std::getline(in, cur, sep))
		out.push_back(cur);
	return out;
}

/* ---- the per-class table ------------------------------------------------ */

struct ClassRow {
	unsigned cls = 0;
	uint64_t size = 0, spans = 0, span_bytes = 0, live = 0, live_bytes = 0, free_bytes = 0,
		 transfer = 0;
	double frag = 0;
};

/* Rows of the table under its header line, up to the "all" row. */
std::vector<ClassRow> class_rows(const std::string &text, ClassRow *total)
{
	std::vector<ClassRow> rows;
	bool in_table = false;
	for (const std::string &line : lines_of(text)) {
		std::istringstream in(line);
		std::string first;
		in >> first;
		if (first == "class") {
			in_table = true;
			continue;
		}
		if (!in_table)
			continue;
		ClassRow r;
		if (first == "all") {
			in >> r.spans >> r.span_bytes >> r.live >> r.live_bytes >> r.free_bytes >> r.transfer >>
				r.frag;
			if (total)
				*total = r;
			break;
		}
		r.cls = (unsigned)std::stoul(first);
		in >> r.size >> r.spans >> r.span_bytes >> r.live >> r.live_bytes >> r.free_bytes >> r.transfer >>
			r.frag;
		REQUIRE(!in.fail());
		rows.push_back(r);
	}
	REQUIRE(in_table);
	return rows;
}

const ClassRow *find_size(const std::vector<ClassRow> &rows, uint64_t size)
{
	for (const ClassRow &r : rows)
		if (r.size == size)
			return &r;
	return nullptr;
}

/* ---- the timeline ------------------------------------------------------- */

const char *const timeline_header =
	"t_ms,rss,resident,mapped,allocated,cached,dirty,purged,metadata,waste,"
	"tcache,central,threads,superblocks,bytes_purged,madvise_calls";
enum { T_MS, RSS, RESIDENT, MAPPED, ALLOCATED, CACHED, DIRTY, PURGED, METADATA, WASTE, TCACHE,
       CENTRAL, THREADS, SUPERBLOCKS, BYTES_PURGED, MADVISE_CALLS, COLUMNS };

using Row = std::vector<uint64_t>;

std::vector<Row> timeline_rows(const std::string &path)
{
	std::vector<std::string> lines = lines_of(read_file(path));
	REQUIRE(!lines.empty());
	CHECK(lines[0] == timeline_header);
	std::vector<Row> rows;
	for (size_t i = 1; i < lines.size(); i++) {
		std::vector<std::string> cells = split(lines[i], ',');
		INFO("line " << i + 1 << ": " << lines[i]);
		REQUIRE(cells.size() == COLUMNS);
		Row r;
		for (const std::string &c : cells) {
			REQUIRE(!c.empty());
			REQUIRE(c.find_first_not_of("0123456789") == std::string::npos);
			r.push_back(std::stoull(c));
		}
		rows.push_back(r);
	}
	return rows;
}

/* Checks that hold for every timeline: time never goes back, rows are never
 * closer than the interval (t_ms is truncated to whole ms: 1 ms of slack),
 * the byte columns are consistent. */
void check_rows(const std::vector<Row> &rows, uint64_t interval_ms)
{
	for (size_t i = 0; i < rows.size(); i++) {
		const Row &r = rows[i];
		INFO("row " << i << " t_ms " << r[T_MS]);
		CHECK(r[RSS] > 0);
		/* Resident counts the metadata pages written (mincore), not the
		 * whole mapping: a process whose only calls are ebb_* (a sanitizer
		 * build: the sanitizer owns malloc) and that holds nothing after
		 * ebb_trim has no small block, so no cache or central list
		 * written, and reads 0. */
		CHECK((r[RESIDENT] > 0 || r[ALLOCATED] == 0));
		/* Gauges are read layer by layer while the program allocates: one
		 * allocation in flight (at most 8 MiB here) may be seen half done. */
		CHECK(r[MAPPED] + 16 * MiB >= r[ALLOCATED]);
		CHECK(r[MAPPED] + 16 * MiB >= r[RESIDENT]);
		CHECK(r[CACHED] == r[TCACHE] + r[CENTRAL]);
		if (i > 0) {
			CHECK(r[T_MS] >= rows[i - 1][T_MS]);
			CHECK(r[BYTES_PURGED] >= rows[i - 1][BYTES_PURGED]);
			CHECK(r[MADVISE_CALLS] >= rows[i - 1][MADVISE_CALLS]);
		}
		/* The last row may be the exit row, written whenever the program ends. */
		if (i > 0 && i + 1 < rows.size())
			CHECK(r[T_MS] - rows[i - 1][T_MS] + 1 >= interval_ms);
	}
}

uint64_t median_gap(const std::vector<Row> &rows)
{
	std::vector<uint64_t> gaps;
	for (size_t i = 1; i < rows.size(); i++)
		gaps.push_back(rows[i][T_MS] - rows[i - 1][T_MS]);
	REQUIRE(!gaps.empty());
	std::sort(gaps.begin(), gaps.end());
	return gaps[gaps.size() / 2];
}

std::string temp_path(const char *what)
{
	const char *dir = getenv("TMPDIR");
	return std::string(dir && *dir ? dir : "/tmp") + "/ebb-observe-" + what + "-" +
	       std::to_string(getpid()) + ".csv";
}

void sleep_ms(int ms)
{
	std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

struct Blocks {
	std::vector<void *> v;
	void add(size_t n, size_t size)
	{
		for (size_t i = 0; i < n; i++) {
			void *p = ebb_malloc(size);
			REQUIRE(p != nullptr);
			memset(p, 0x5a, size);
			v.push_back(p);
		}
	}
	void clear()
	{
		for (void *p : v)
			ebb_free(p);
		v.clear();
	}
	~Blocks() { clear(); }
};

} // namespace

TEST_CASE("ebb_stats_print lists the classes in use with their live objects and fragmentation",
	  "[classes]")
{
	const int count = 777;
	Blocks b;
	b.add(count, 2500);
	const uint64_t size = ebb_malloc_usable_size(b.v[0]);
	REQUIRE(size >= 2500);
	/* Blocks cached by this thread or on transfer stacks go back to their
	 * spans, so every block still out of a span of the class is ours. */
	ebb_trim();
	std::string text = stats_print_text();
	INFO(text);
	CHECK(text.find("rss (kernel)") != std::string::npos);
	ClassRow total;
	std::vector<ClassRow> rows = class_rows(text, &total);
	const ClassRow *r = find_size(rows, size);
	REQUIRE(r != nullptr);
	CHECK(r->live == (uint64_t)count);
	CHECK(r->live_bytes == count * size);
	CHECK(r->transfer == 0);
	CHECK(r->span_bytes >= r->live_bytes + r->free_bytes);
	CHECK(r->span_bytes % 4096 == 0);
	CHECK(r->frag == Approx(100.0 * (double)r->free_bytes / (double)r->span_bytes).margin(0.06));
	const double frag_full = r->frag;
	/* No empty class is listed, and the total is the sum of the rows. */
	ClassRow sum;
	for (const ClassRow &x : rows) {
		CHECK(x.spans > 0);
		sum.spans += x.spans;
		sum.live += x.live;
		sum.span_bytes += x.span_bytes;
	}
	CHECK(total.spans == sum.spans);
	CHECK(total.live == sum.live);
	CHECK(total.span_bytes == sum.span_bytes);

	/* Free every other block: the spans stay, half empty, and the table
	 * says so. */
	std::vector<void *> keep;
	for (size_t i = 0; i < b.v.size(); i++) {
		if (i % 2)
			ebb_free(b.v[i]);
		else
			keep.push_back(b.v[i]);
	}
	b.v = keep;
	ebb_trim();
	text = stats_print_text();
	rows = class_rows(text, nullptr);
	r = find_size(rows, size);
	REQUIRE(r != nullptr);
	CHECK(r->live == (uint64_t)keep.size());
	CHECK(r->frag > frag_full + 30.0);

	/* All freed: the spans go back to the page heap and the class leaves
	 * the table. */
	b.clear();
	ebb_trim();
	text = stats_print_text();
	rows = class_rows(text, nullptr);
	r = find_size(rows, size);
	if (r != nullptr)
		CHECK(r->live == 0);
}

TEST_CASE("stats_file and stats_interval_ms write a CSV timeline while the program runs",
	  "[timeline]")
{
	const std::string path = temp_path("timeline");
	const uint64_t interval = 50;
	REQUIRE(ebb_option_set("stats_file", path.c_str()) == 0);
	long long len = -1;
	REQUIRE(ebb_option_get("stats_file", &len) == 0);
	CHECK(len == (long long)path.size());
	REQUIRE(ebb_option_set("stats_interval_ms", "50") == 0);

	/* Grow by 8 MiB eight times, then free it all and give it back. */
	std::vector<void *> big;
	for (int i = 0; i < 8; i++) {
		sleep_ms(110);
		void *p = ebb_malloc(8 * MiB);
		REQUIRE(p != nullptr);
		memset(p, 1, 8 * MiB);
		big.push_back(p);
	}
	sleep_ms(110);
	for (void *p : big)
		ebb_free(p);
	ebb_trim();
	sleep_ms(250);
	REQUIRE(ebb_option_set("stats_interval_ms", "0") == 0);
	sleep_ms(20); /* a row being written when the option changed */

	std::vector<Row> rows = timeline_rows(path);
	unlink(path.c_str());
	REQUIRE(rows.size() >= 10);
	check_rows(rows, interval);
	CHECK(median_gap(rows) <= 4 * interval);
	uint64_t peak = 0;
	size_t peak_at = 0;
	for (size_t i = 0; i < rows.size(); i++)
		if (rows[i][ALLOCATED] > peak) {
			peak = rows[i][ALLOCATED];
			peak_at = i;
		}
	CHECK(rows.front()[ALLOCATED] < 16 * MiB);
	CHECK(peak >= 64 * MiB);
	CHECK(rows.back()[ALLOCATED] + 48 * MiB < peak);
	CHECK(rows.back()[BYTES_PURGED] > rows.front()[BYTES_PURGED]);
	/* Allocated rises during the growth phase: at least five distinct steps. */
	unsigned rises = 0;
	for (size_t i = 1; i <= peak_at; i++)
		rises += rows[i][ALLOCATED] > rows[i - 1][ALLOCATED] + 4 * MiB;
	CHECK(rises >= 5);
	/* The kernel's RSS follows: 64 MiB touched shows in it. */
	uint64_t rss_peak = 0;
	for (const Row &r : rows)
		rss_peak = std::max(rss_peak, r[RSS]);
	CHECK(rss_peak >= rows.front()[RSS] + 56 * MiB);
}

/* Run with EBB_OPTIONS=background_thread=0,stats_interval_ms=50,
 * stats_file=<API_TEST_TIMELINE with %p> from the environment: rows come from
 * the allocation slow paths. */
TEST_CASE("without a background thread the timeline is written from allocation slow paths",
	  "[timeline_env]")
{
	const char *pattern = getenv("API_TEST_TIMELINE");
	REQUIRE(pattern != nullptr);
	long long bg = -1, interval = -1, len = -1;
	REQUIRE(ebb_option_get("background_thread", &bg) == 0);
	REQUIRE(ebb_option_get("stats_interval_ms", &interval) == 0);
	REQUIRE(ebb_option_get("stats_file", &len) == 0);
	CHECK(bg == 0);
	CHECK(interval == 50);
	CHECK(len == (long long)strlen(pattern));
	std::string path = pattern;
	size_t at = path.find("%p");
	REQUIRE(at != std::string::npos);
	path.replace(at, 2, std::to_string(getpid()));

	/* Phases of small-block churn (refills, flushes, spans coming and going)
	 * with pauses: a row is due after each pause. */
	for (int phase = 0; phase < 8; phase++) {
		Blocks b;
		b.add(20000, 200 + 100 * (size_t)(phase % 4));
		b.clear();
		sleep_ms(70);
	}
	std::vector<Row> rows = timeline_rows(path);
	unlink(path.c_str());
	REQUIRE(rows.size() >= 4);
	check_rows(rows, (uint64_t)interval);
}

TEST_CASE("the timeline ends with a row written at exit, to a file named for the pid",
	  "[timeline_exit]")
{
	const std::string pattern = temp_path("exit") + ".%p";
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		/* A long interval: the first row comes at once, the next at exit. */
		if (ebb_option_set("stats_file", pattern.c_str()) != 0 ||
		    ebb_option_set("stats_interval_ms", "100000") != 0)
			_exit(2);
		for (int i = 0; i < 8; i++) {
			void *p = ebb_malloc(4 * MiB);
			if (p == nullptr)
				_exit(3);
			memset(p, 1, 4 * MiB); /* never freed: the exit row shows it */
		}
		exit(0);
	}
	int status = 0;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	REQUIRE(WIFEXITED(status));
	REQUIRE(WEXITSTATUS(status) == 0);
	std::string path = pattern;
	path.replace(path.find("%p"), 2, std::to_string(pid));
	std::vector<Row> rows = timeline_rows(path);
	unlink(path.c_str());
	/* The first row when the child enabled the timeline (if a slow path or
	 * the background thread came by before exit), then the exit row. */
	REQUIRE(rows.size() >= 1);
	REQUIRE(rows.size() <= 2);
	check_rows(rows, 100000);
	if (rows.size() == 2)
		CHECK(rows[0][ALLOCATED] < rows[1][ALLOCATED]);
	CHECK(rows.back()[ALLOCATED] >= 32 * MiB);
}

/* docs/usage.md's options table: every option it names exists, and its
 * default column, set as a value, gives the library's actual default. Run
 * with EBB_OPTIONS empty (tests/api/CMakeLists.txt). */
TEST_CASE("docs/usage.md names real options with their real defaults", "[docs]")
{
	const char *doc = getenv("API_TEST_USAGE_MD");
	REQUIRE(doc != nullptr);
	std::string text = read_file(doc);
	REQUIRE(!text.empty());
	unsigned seen = 0;
	bool in_options = false;
	for (const std::string &line : lines_of(text)) {
		if (line.rfind("## ", 0) == 0)
			in_options = line == "## Options";
		/* | `name` | `default` | ... in the section "## Options" */
		if (!in_options || line.rfind("| `", 0) != 0)
			continue;
		std::vector<std::string> cells = split(line, '|');
		if (cells.size() < 4)
			continue;
		/* A default cell without backquotes stands for the empty string. */
		auto unquote = [](std::string c) {
			size_t a = c.find('`'), b = c.rfind('`');
			return a == std::string::npos || b == a ? std::string() : c.substr(a + 1, b - a - 1);
		};
		std::string name = unquote(cells[1]), def = unquote(cells[2]);
		if (name.empty() || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string::npos)
			continue;
		INFO("option " << name << ", documented default '" << def << "'");
		long long actual = -12345, parsed = -12345;
		REQUIRE(ebb_option_get(name.c_str(), &actual) == 0);
		REQUIRE(ebb_option_set(name.c_str(), def.c_str()) == 0);
		REQUIRE(ebb_option_get(name.c_str(), &parsed) == 0);
		CHECK(parsed == actual);
		seen++;
	}
	CHECK(seen >= 10);
}
