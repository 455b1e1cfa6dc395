/* api_util.cpp: see api_util.h. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

namespace apitest {

static size_t ebb_usable(const void *p) { return ebb_malloc_usable_size(p); }

const Api &ebb_api()
{
	static const Api api = {
		"ebb_*",          ebb_malloc,      ebb_free,          ebb_calloc,
		ebb_realloc,      ebb_reallocarray, ebb_posix_memalign, ebb_aligned_alloc,
		ebb_memalign,     ebb_valloc,      ebb_pvalloc,       ebb_usable,
	};
	return api;
}

#if EBB_TEST_OVERRIDE
static size_t std_usable(const void *p) { return malloc_usable_size(const_cast<void *>(p)); }

const Api &std_api()
{
	static const Api api = {
		"malloc/free/...", malloc,       free,           calloc,   realloc,  reallocarray,
		posix_memalign,    aligned_alloc, memalign,      valloc,   pvalloc,  std_usable,
	};
	return api;
}
#endif

std::vector<const Api *> all_apis()
{
	std::vector<const Api *> v{&ebb_api()};
#if EBB_TEST_OVERRIDE
	v.push_back(&std_api());
#endif
	return v;
}

size_t page_size()
{
	static size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	return ps;
}

/* The pattern: a 4 KiB table made from the seed, repeated, with the first 8
 * bytes of every 4 KiB chunk mixed with the chunk's index. */
static const size_t kChunk = 4096;

static void make_table(unsigned seed, unsigned char *t, size_t n)
{
	uint32_t x = seed * 2654435761u + 0x9E3779B9u;
	for (size_t j = 0; j < n; j++) {
		x = x * 1664525u + 1013904223u;
		t[j] = (unsigned char)(x >> 24);
	}
}

static void mix_index(unsigned char *chunk, size_t avail, uint64_t k)
{
	uint64_t h = (k + 1) * 0x9E3779B97F4A7C15ull;
	for (size_t j = 0; j < 8 && j < avail; j++) chunk[j] ^= (unsigned char)(h >> (8 * j));
}

void fill(void *p, size_t n, unsigned seed)
{
	if (n == 0) return;
	unsigned char t[kChunk];
	size_t tn = n < kChunk ? n : kChunk;
	make_table(seed, t, tn);
	unsigned char *d = static_cast<unsigned char *>(p);
	for (size_t off = 0, k = 0; off < n; off += kChunk, k++) {
		size_t len = n - off < kChunk ? n - off : kChunk;
		memcpy(d + off, t, len);
		mix_index(d + off, len, k);
	}
}

size_t first_mismatch(const void *p, size_t n, unsigned seed)
{
	if (n == 0) return 0;
	unsigned char t[kChunk], c[kChunk];
	size_t tn = n < kChunk ? n : kChunk;
	make_table(seed, t, tn);
	const unsigned char *d = static_cast<const unsigned char *>(p);
	for (size_t off = 0, k = 0; off < n; off += kChunk, k++) {
		size_t len = n - off < kChunk ? n - off : kChunk;
		memcpy(c, t, len);
		mix_index(c, len, k);
		if (memcmp(d + off, c, len) != 0) {
			for (size_t j = 0; j < len; j++)
				if (d[off + j] != c[j]) return off + j;
		}
	}
	return n;
}

size_t first_nonzero(const void *p, size_t n)
{
	const unsigned char *d = static_cast<const unsigned char *>(p);
	static const unsigned char zero[kChunk] = {0};
	for (size_t off = 0; off < n; off += kChunk) {
		size_t len = n - off < kChunk ? n - off : kChunk;
		if (memcmp(d + off, zero, len) != 0) {
			for (size_t j = 0; j < len; j++)
				if (d[off + j]) return off + j;
		}
	}
	return n;
}

ebb_stats_t stats()
{
	ebb_stats_t s;
	memset(&s, 0, sizeof s);
	ebb_stats_get(&s);
	return s;
}

uint64_t stats_parts(const ebb_stats_t &s)
{
	return s.allocated + s.tcache + s.central + s.dirty + s.purged + s.metadata + s.waste;
}

std::string stats_print_text()
{
	FILE *f = tmpfile();
	REQUIRE(f != nullptr);
	ebb_stats_print(f);
	fflush(f);
	long len = ftell(f);
	REQUIRE(len > 0);
	rewind(f);
	std::string text((size_t)len, '\0');
	REQUIRE(fread(&text[0], 1, (size_t)len, f) == (size_t)len);
	fclose(f);
	return text;
}

std::string stats_str(const ebb_stats_t &s)
{
	std::string out;
	char line[128];
#define EBB_API_TEST_FMT_(name, kind, doc)                                                  \
	snprintf(line, sizeof line, "%s=%llu ", #name, (unsigned long long)s.name);             \
	out += line;
	EBB_STATS_FIELDS(EBB_API_TEST_FMT_)
#undef EBB_API_TEST_FMT_
	snprintf(line, sizeof line, "(sum of parts=%llu)", (unsigned long long)stats_parts(s));
	out += line;
	return out;
}

int run_fresh(const char *prog, const char *mode, const char *env, std::string *text)
{
	int out[2];
	REQUIRE(pipe(out) == 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(out[1], 2);
		close(out[0]);
		alarm(60);
		std::string e = env, m = mode;
		char secure[] = "0";
		char *argv[] = {const_cast<char *>(prog), &m[0], secure, nullptr};
		char *envp[] = {&e[0], nullptr};
		execve(prog, argv, envp);
		_exit(127);
	}
	close(out[1]);
	char buf[1024];
	ssize_t n;
	while ((n = read(out[0], buf, sizeof buf)) > 0) text->append(buf, (size_t)n);
	close(out[0]);
	int status = 0;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	return status;
}

} // namespace apitest
