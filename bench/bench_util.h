/*
 * bench_util.h: the few helpers every benchmark program shares: a clock, a
 * PRNG, RSS readings, command-line options, thread start-up and the result
 * line that bench/run parses.
 *
 * The programs measure whichever malloc the process resolves (glibc, or the
 * library in LD_PRELOAD), so nothing here may depend on a particular
 * allocator. Helpers that run while a benchmark is being measured never call
 * malloc themselves: RSS is read with open/read into stack buffers, and the
 * option parser and result printer only touch static storage.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define BU_UNUSED __attribute__((unused))
#define BU_NOINLINE __attribute__((noinline))
#define BU_CACHE_LINE 64

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */
static BU_UNUSED __attribute__((noreturn, format(printf, 1, 2))) void bu_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("error: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* Benchmarks check what they get back; an allocator that returns NULL or a
 * misaligned block must fail the run loudly rather than produce a number. */
#define BU_CHECK(cond, ...)                     \
	do {                                    \
		if (!(cond))                    \
			bu_die(__VA_ARGS__);    \
	} while (0)

/* ------------------------------------------------------------------------
 * Time
 * ---------------------------------------------------------------------- */
static BU_UNUSED inline uint64_t bu_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The calling thread's CPU time: what an operation cost, unlike the wall
 * clock not moved by time the thread waited for a CPU (rows with more
 * threads than CPUs report it beside their rate). */
static BU_UNUSED inline uint64_t bu_thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static BU_UNUSED void bu_sleep_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

/* ------------------------------------------------------------------------
 * PRNG: splitmix64. Fast, one word of state per thread, and each thread is
 * seeded from (seed, thread index) so runs are repeatable for a given seed.
 * ---------------------------------------------------------------------- */
typedef struct {
	uint64_t s;
} bu_rng;

static BU_UNUSED inline uint64_t bu_rng_next(bu_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static BU_UNUSED inline bu_rng bu_rng_make(uint64_t seed, uint64_t stream)
{
	bu_rng r = { seed * 0x2545f4914f6cdd1dull + stream * 0x9e3779b97f4a7c15ull + 1 };
	(void)bu_rng_next(&r);
	return r;
}

/* Uniform in [0, n): multiply-high instead of %, no division on the hot path. */
static BU_UNUSED inline uint64_t bu_rng_below(bu_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)bu_rng_next(r) * n) >> 64);
}

/* Uniform in [lo, hi]. */
static BU_UNUSED inline size_t bu_rng_range(bu_rng *r, size_t lo, size_t hi)
{
	return lo + (size_t)bu_rng_below(r, (uint64_t)(hi - lo) + 1);
}

static BU_UNUSED inline double bu_rng_unit(bu_rng *r)
{
	return (double)(bu_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/*
 * Sizes in [lo, hi] spread evenly over powers of two: as many requests between
 * 16 and 32 bytes as between 512 and 1024. Real programs ask for many small
 * blocks and few big ones; a uniform draw would make almost every request a
 * big one.
 */
static BU_UNUSED inline size_t bu_rng_size_log(bu_rng *r, size_t lo, size_t hi)
{
	if (lo >= hi)
		return lo;
	/* Octaves [2^b, 2^(b+1)) from lo's to (hi - 1)'s: with hi itself, a
	 * power-of-two hi would get an octave of one size all to itself. */
	int lo_bits = 63 - __builtin_clzll((unsigned long long)lo);
	int hi_bits = 63 - __builtin_clzll((unsigned long long)(hi - 1));
	if (hi_bits < lo_bits)
		hi_bits = lo_bits;
	int b = lo_bits + (int)bu_rng_below(r, (uint64_t)(hi_bits - lo_bits + 1));
	size_t a = (size_t)1 << b;
	size_t z = (b == 63) ? SIZE_MAX : ((size_t)1 << (b + 1)) - 1;
	if (a < lo)
		a = lo;
	if (z > hi || b == hi_bits)
		z = hi;
	return bu_rng_range(r, a, z);
}

/* ------------------------------------------------------------------------
 * Memory: RSS from /proc, read without allocating.
 * ---------------------------------------------------------------------- */
static BU_UNUSED size_t bu_read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	size_t n = 0;
	while (n + 1 < cap) {
		ssize_t k = read(fd, buf + n, cap - 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	buf[n] = '\0';
	return n;
}

static BU_UNUSED long bu_page_kib(void)
{
	static long kib;
	if (!kib)
		kib = sysconf(_SC_PAGESIZE) / 1024;
	return kib;
}

/* Current resident set in KiB (second field of /proc/self/statm). */
static BU_UNUSED uint64_t bu_rss_kib(void)
{
	char buf[128];
	if (!bu_read_file("/proc/self/statm", buf, sizeof buf))
		return 0;
	unsigned long long size = 0, resident = 0;
	if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
		return 0;
	return (uint64_t)resident * (uint64_t)bu_page_kib();
}

/* A "Key:   1234 kB" line of /proc/self/status. */
static BU_UNUSED uint64_t bu_status_kib(const char *key)
{
	char buf[4096];
	if (!bu_read_file("/proc/self/status", buf, sizeof buf))
		return 0;
	size_t klen = strlen(key);
	for (char *line = buf; line && *line; line = strchr(line, '\n')) {
		if (*line == '\n')
			line++;
		if (strncmp(line, key, klen) == 0 && line[klen] == ':')
			return strtoull(line + klen + 1, NULL, 10);
	}
	return 0;
}

/*
 * Peak RSS of this process image. VmHWM rather than getrusage(): after exec
 * ru_maxrss still carries the high-water mark of the process that forked us
 * (the runner, a shell), which would swamp a small benchmark.
 */
static BU_UNUSED uint64_t bu_peak_rss_kib(void)
{
	return bu_status_kib("VmHWM");
}

/* Memory for the benchmark's own bookkeeping (sample buffers, pointer tables)
 * that must not come from, or disturb, the allocator under test. */
static BU_UNUSED void *bu_map(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	BU_CHECK(p != MAP_FAILED, "mmap of %zu bytes failed", bytes);
	return p;
}

static BU_UNUSED void bu_unmap(void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes);
}

/*
 * Writes one byte per page and the last byte, so a block counts in RSS as it
 * would in a program that uses it, at a cost that does not grow with the byte
 * count the way memset would.
 */
static BU_UNUSED inline void bu_touch(void *p, size_t size, unsigned char v)
{
	volatile unsigned char *c = (volatile unsigned char *)p;
	if (!size)
		return;
	for (size_t i = 0; i < size; i += 4096)
		c[i] = v;
	c[size - 1] = v;
}

/* Keeps the compiler from proving a block unused and dropping malloc/free. */
static BU_UNUSED inline void bu_escape(void *p)
{
	__asm__ volatile("" : : "g"(p) : "memory");
}

/* ------------------------------------------------------------------------
 * Options: --name=value or --name value; counts take k/m/g (10^3, 10^6,
 * 10^9), sizes take K/M/G or k/m/g (KiB, MiB, GiB).
 * ---------------------------------------------------------------------- */
enum bu_opt_kind { BU_COUNT, BU_SIZE, BU_DOUBLE, BU_STRING };

typedef struct {
	const char *name;
	enum bu_opt_kind kind;
	void *ptr; /* uint64_t for COUNT/SIZE, double, const char * */
	const char *help;
} bu_opt;

static BU_UNUSED int bu_parse_number(const char *s, enum bu_opt_kind kind, uint64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return -1;
	double mul = 1;
	if (*end) {
		int bin = kind == BU_SIZE;
		switch (*end) {
		case 'k': case 'K': mul = bin ? 1024.0 : 1e3; break;
		case 'm': case 'M': mul = bin ? 1048576.0 : 1e6; break;
		case 'g': case 'G': mul = bin ? 1073741824.0 : 1e9; break;
		default: return -1;
		}
		end++;
		if (*end == 'i' || *end == 'B')
			end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
		if (*end)
			return -1;
	}
	*out = (uint64_t)(v * mul + 0.5);
	return 0;
}

static BU_UNUSED void bu_print_opt_value(FILE *f, const bu_opt *o)
{
	switch (o->kind) {
	case BU_COUNT:
	case BU_SIZE: fprintf(f, "%" PRIu64, *(uint64_t *)o->ptr); break;
	case BU_DOUBLE: fprintf(f, "%g", *(double *)o->ptr); break;
	case BU_STRING: fprintf(f, "%s", *(const char **)o->ptr ? *(const char **)o->ptr : ""); break;
	}
}

static BU_UNUSED void bu_usage(FILE *f, const char *prog, const char *about, const bu_opt *opts)
{
	fprintf(f, "usage: %s [--option=value ...]\n\n%s\n\noptions (default in brackets):\n", prog, about);
	for (const bu_opt *o = opts; o->name; o++) {
		fprintf(f, "  --%-14s %s [", o->name, o->help);
		bu_print_opt_value(f, o);
		fprintf(f, "]\n");
	}
	fprintf(f, "  --%-14s %s\n", "help", "this text");
	fprintf(f, "\nCounts accept k/m/g (thousand, million, billion); sizes accept K/M/G (KiB, MiB, GiB).\n");
}

static BU_UNUSED void bu_parse_args(int argc, char **argv, const char *about, const bu_opt *opts)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			bu_usage(stdout, argv[0], about, opts);
			exit(0);
		}
		if (strncmp(a, "--", 2) != 0)
			bu_die("unexpected argument '%s' (try --help)", a);
		a += 2;
		const char *eq = strchr(a, '=');
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
		const bu_opt *o = opts;
		while (o->name && !(strlen(o->name) == len && !strncmp(o->name, a, len)))
			o++;
		if (!o->name)
			bu_die("unknown option '--%.*s' (try --help)", (int)len, a);
		const char *val = eq ? eq + 1 : NULL;
		if (!val) {
			if (i + 1 >= argc)
				bu_die("option --%s needs a value", o->name);
			val = argv[++i];
		}
		switch (o->kind) {
		case BU_COUNT:
		case BU_SIZE:
			if (bu_parse_number(val, o->kind, (uint64_t *)o->ptr))
				bu_die("bad value '%s' for --%s", val, o->name);
			break;
		case BU_DOUBLE: {
			char *end;
			*(double *)o->ptr = strtod(val, &end);
			if (end == val || *end)
				bu_die("bad value '%s' for --%s", val, o->name);
			break;
		}
		case BU_STRING: *(const char **)o->ptr = val; break;
		}
	}
}

/* ------------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------- */
typedef void *(*bu_thread_fn)(void *);

/* Starts n threads on fn(arg + i * stride) and joins them. */
static BU_UNUSED void bu_run_threads(size_t n, bu_thread_fn fn, void *args, size_t stride)
{
	pthread_t tids[n ? n : 1];
	for (size_t i = 0; i < n; i++) {
		int e = pthread_create(&tids[i], NULL, fn, (char *)args + i * stride);
		BU_CHECK(e == 0, "pthread_create: %s", strerror(e));
	}
	for (size_t i = 0; i < n; i++)
		pthread_join(tids[i], NULL);
}

/*
 * A start line for threads: every worker parks here until all have been
 * created, so thread creation is not part of the timed work and no thread
 * gets a head start. Spins with sched_yield because the machine may have
 * fewer cores than threads.
 */
typedef struct {
	atomic_size_t arrived;
	size_t expected;
	uint64_t start_ns; /* when the last thread arrived: the timed start */
} bu_gate;

static BU_UNUSED void bu_gate_wait(bu_gate *g)
{
	if (atomic_fetch_add(&g->arrived, 1) + 1 == g->expected)
		g->start_ns = bu_now_ns();
	while (atomic_load(&g->arrived) < g->expected)
		sched_yield();
}

/* ------------------------------------------------------------------------
 * Results: one line "result: key=value ..." that bench/run parses; every
 * program ends with it. Human-readable lines before it start with '#'.
 * ---------------------------------------------------------------------- */
static char bu_result_buf[4096];
static size_t bu_result_len;

static BU_UNUSED __attribute__((format(printf, 2, 3))) void bu_result(const char *key, const char *fmt, ...)
{
	if (bu_result_len + 1 >= sizeof bu_result_buf)
		return;
	int n = snprintf(bu_result_buf + bu_result_len, sizeof bu_result_buf - bu_result_len, " %s=", key);
	if (n < 0)
		return;
	bu_result_len += (size_t)n;
	if (bu_result_len >= sizeof bu_result_buf) {
		bu_result_len = sizeof bu_result_buf - 1;
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	n = vsnprintf(bu_result_buf + bu_result_len, sizeof bu_result_buf - bu_result_len, fmt, ap);
	va_end(ap);
	if (n > 0)
		bu_result_len += (size_t)n;
	if (bu_result_len >= sizeof bu_result_buf)
		bu_result_len = sizeof bu_result_buf - 1;
}

/* Adds peak RSS and prints the line. */
static BU_UNUSED void bu_result_print(const char *bench)
{
	bu_result("peak_rss_kib", "%" PRIu64, bu_peak_rss_kib());
	printf("result: bench=%s%s\n", bench, bu_result_buf);
	fflush(stdout);
	bu_result_len = 0;
	bu_result_buf[0] = '\0';
}

/* Reports the common pair: seconds for the fixed work and its rate. */
static BU_UNUSED void bu_result_rate(const char *bench, uint64_t ops, uint64_t ns)
{
	double s = (double)ns / 1e9;
	printf("# %s: %" PRIu64 " ops in %.3f s = %.3f Mops/s, peak RSS %.1f MiB\n", bench, ops, s,
	       s > 0 ? (double)ops / s / 1e6 : 0.0, (double)bu_peak_rss_kib() / 1024.0);
	bu_result("ops", "%" PRIu64, ops);
	bu_result("seconds", "%.6f", s);
	bu_result("ops_per_sec", "%.1f", s > 0 ? (double)ops / s : 0.0);
}

#endif /* BENCH_UTIL_H */
