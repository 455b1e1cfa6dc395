/* secure_helper.c: the program of api.secure_env, run as a setuid or setgid
 * binary (so the kernel sets AT_SECURE) with an EBB_OPTIONS its invoker
 * chose. Only the ebb_* names: the same in every build.
 *
 *   secure_helper options     prints "secure=S on_error=E interval=I decay=D",
 *                             allocates and frees for a while (a timeline row
 *                             would be due), exits 0
 *   secure_helper doublefree  frees a block twice (on_error=abort kills it)
 *   secure_helper solo        a program of one thread (api.safety.background_idle):
 *                             see solo() for its steps and exit codes
 *   secure_helper early       a threaded program that builds a large structure
 *                             (api.safety.background_start): see early()
 *   secure_helper bigfree     large blocks freed and moved by realloc
 *                             (api.safety.prompt_purge): see bigfree()
 *
 * Exit 77: the kernel did not set AT_SECURE although the test expected it. */
#include <ebbmalloc.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>
#include <unistd.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#include <sys/single_threaded.h>
#define HELPER_SINGLE_THREADED() (__libc_single_threaded != 0)
#else
#define HELPER_SINGLE_THREADED() 1
#endif

static long long option(const char *name)
{
	long long v = -1;
	ebb_option_get(name, &v);
	return v;
}

static long long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&t, NULL);
}

/* Threads named ebb-background, the allocator's. */
static int allocator_threads(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/task");
	if (d == NULL)
		return -1;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], comm[32] = { 0 };
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t got = read(fd, comm, sizeof comm - 1);
		close(fd);
		if (got > 0 && strncmp(comm, "ebb-background", 14) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static size_t dirty_bytes(void)
{
	ebb_stats_t s;
	ebb_stats_get(&s);
	return (size_t)s.dirty;
}

static size_t central_bytes(void)
{
	ebb_stats_t s;
	ebb_stats_get(&s);
	return (size_t)s.central;
}

/* A fresh process, never threaded: 3 MiB of large blocks freed leave pages
 * dirty (exit 3 if none: the case would test nothing), but under the 4 MiB
 * bound no allocator thread starts and the process stays single-threaded
 * (exit 4); its frees decay those pages in line once they are older than
 * decay_ms (exit 5 if they stay); the transfer batches 20 000 small blocks
 * leave in the central lists go home by its frees once a drain interval has
 * passed, still with no thread (exit 7 if they stay, 8 if a thread did it);
 * 64 MiB freed, past the bound, start the thread (exit 6 if it never
 * comes). Run with a short decay_ms. */
static int solo(void)
{
	enum { N = 12, BIG = 256 * 1024 };
	void *p[N];
	for (int i = 0; i < N; i++) {
		p[i] = ebb_malloc(BIG);
		if (p[i] == NULL)
			return 2;
		memset(p[i], 1, BIG);
	}
	for (int i = 0; i < N; i++)
		ebb_free(p[i]);
	size_t dirty = dirty_bytes();
	printf("dirty after the frees: %zu\n", dirty);
	if (dirty == 0)
		return 3;
	sleep_ms(300);
	int ours = allocator_threads();
	printf("allocator threads: %d, single-threaded: %d\n", ours, (int)HELPER_SINGLE_THREADED());
	if (ours != 0 || !HELPER_SINGLE_THREADED())
		return 4;
	/* Older than decay_ms now: the next frees purge them. */
	long long t0 = now_ms();
	size_t left = dirty;
	while (now_ms() - t0 < 3000 && (left = dirty_bytes()) > dirty / 2) {
		void *q = ebb_malloc(64 * 1024);
		memset(q, 2, 64 * 1024);
		ebb_free(q);
		sleep_ms(5);
	}
	printf("dirty after frees in line: %zu\n", left);
	if (left > dirty / 2)
		return 5;
	/* The thread's other rounds run in line as well (background.c,
	 * solo_tick): 20 000 blocks of 64 B freed leave batches in the central
	 * lists, which pin their spans, and the program's frees send them home
	 * once a drain interval has passed. */
	enum { M = 20000 };
	void **b = (void **)ebb_malloc(M * sizeof(void *));
	if (b == NULL)
		return 2;
	for (int i = 0; i < M; i++)
		if ((b[i] = ebb_malloc(64)) == NULL)
			return 2;
	for (int i = 0; i < M; i += 2)
		ebb_free(b[i]);
	for (int i = 1; i < M; i += 2)
		ebb_free(b[i]);
	ebb_free(b);
	size_t central = central_bytes(), now_central = central;
	t0 = now_ms();
	while (now_ms() - t0 < 3000 && (now_central = central_bytes()) > central / 4) {
		void *q = ebb_malloc(64 * 1024);
		memset(q, 4, 64 * 1024);
		ebb_free(q);
		sleep_ms(20);
	}
	printf("central after 20 000 frees: %zu, after frees in line: %zu\n", central, now_central);
	if (now_central > central / 4)
		return 7;
	if (allocator_threads() != 0)
		return 8;
	size_t total = 0, cap = 64u << 20, n = 0;
	void **v = (void **)ebb_malloc(cap / 1024 * sizeof(void *));
	if (v == NULL)
		return 2;
	for (size_t k = 1; total < cap; k = k % 64 + 1) {
		void *q = ebb_malloc(k * 1024);
		if (q == NULL)
			return 2;
		memset(q, 3, k * 1024);
		v[n++] = q;
		total += k * 1024;
	}
	for (size_t i = 0; i < n; i++)
		ebb_free(v[i]);
	ebb_free(v);
	t0 = now_ms();
	while (allocator_threads() == 0 && now_ms() - t0 < 5000)
		sleep_ms(20);
	ours = allocator_threads();
	printf("allocator threads after 64 MiB: %d\n", ours);
	return ours > 0 ? 0 : 6;
}

static int early_stop;

/* Threads of the process, from /proc/self/status, read without a malloc:
 * opendir's buffer is one, and its free would turn pages dirty, after which
 * a malloc creates the thread for that reason alone. */
static long threads_now(void)
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	const char *at = strstr(buf, "\nThreads:");
	return at != NULL ? atol(at + 9) : -1;
}

static void *early_sleeper(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&early_stop, __ATOMIC_ACQUIRE))
		sleep_ms(1);
	return NULL;
}

/* memreturn a's shape in a fresh process (the test program's own forked
 * children inherit its history: pages it made dirty count): with a second
 * thread, 48 MiB of 64-byte blocks allocated and none freed. A free may not
 * create the allocator's thread (background.c, maybe_start_at), so a first
 * burst made of frees alone found none and purged in the freeing thread;
 * past 32 MiB mapped a malloc now creates it, before any free (exit 4 if it
 * does not come within 5 s). Then the burst of frees, whose pages the
 * thread gives back (exit 5 if they stay dirty for 10 s). */
static int early(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, early_sleeper, NULL) != 0)
		return 2;
	if (threads_now() != 2)
		return 3;
	void *head = NULL;
	for (size_t i = 0; i < (48u << 20) / 64; i++) {
		void **p = (void **)ebb_malloc(64);
		if (p == NULL)
			return 2;
		*p = head;
		head = p;
	}
	long long t0 = now_ms();
	while (threads_now() != 3 && now_ms() - t0 < 5000)
		sleep_ms(10);
	long threads = threads_now();
	printf("threads before any free: %ld (allocator's: %d)\n", threads, allocator_threads());
	if (threads != 3)
		return 4;
	while (head != NULL) {
		void *next = *(void **)head;
		ebb_free(head);
		head = next;
	}
	t0 = now_ms();
	size_t dirty;
	while ((dirty = dirty_bytes()) >= (4u << 20) && now_ms() - t0 < 10000)
		sleep_ms(20);
	printf("dirty after the frees: %zu\n", dirty);
	__atomic_store_n(&early_stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	return dirty < (4u << 20) ? 0 : 5;
}

static uint64_t purged_bytes(void)
{
	ebb_stats_t s;
	ebb_stats_get(&s);
	return s.bytes_purged;
}

/* A small heap (the program's data: 64 blocks of 64 KiB, under the
 * prompt size) gives a freed block of 600 KiB back to the kernel in its
 * free (page_heap_free_large: exit 3 if nothing was purged), but not the
 * old block of a realloc that moved it (exit 5 if purged; exit 4 if the
 * realloc grew in place, which a guard block right of it should prevent):
 * a block grown by copying is most often grown again. Run with a long
 * decay_ms, so that no decay purges during the steps. */
static int bigfree(void)
{
	enum { DATA = 64, DATA_SIZE = 64 * 1024, BIG = 600 * 1024 };
	void *data[DATA];
	for (int i = 0; i < DATA; i++) {
		if ((data[i] = ebb_malloc(DATA_SIZE)) == NULL)
			return 2;
		memset(data[i], 1, DATA_SIZE);
	}
	char *a = (char *)ebb_malloc(BIG);
	if (a == NULL)
		return 2;
	memset(a, 2, BIG);
	uint64_t purged = purged_bytes();
	ebb_free(a);
	uint64_t after = purged_bytes();
	printf("a free of %d bytes purged %llu bytes\n", BIG, (unsigned long long)(after - purged));
	if (after - purged < BIG)
		return 3;
	char *b = (char *)ebb_malloc(BIG);
	void *guard = ebb_malloc(DATA_SIZE);
	if (b == NULL || guard == NULL)
		return 2;
	memset(b, 3, BIG);
	purged = purged_bytes();
	char *c = (char *)ebb_realloc(b, 2 * BIG);
	if (c == NULL)
		return 2;
	after = purged_bytes();
	printf("a realloc (%s) purged %llu bytes\n", c == b ? "in place" : "moved", (unsigned long long)(after - purged));
	if (c == b)
		return 4;
	if (c[BIG - 1] != 3)
		return 6;
	if (after != purged)
		return 5;
	ebb_free(c);
	ebb_free(guard);
	for (int i = 0; i < DATA; i++)
		ebb_free(data[i]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	int want_secure = atoi(argv[2]);
	int secure = getauxval(AT_SECURE) != 0;
	if (secure != want_secure)
		return 77;
	if (strcmp(argv[1], "options") == 0) {
		printf("secure=%d on_error=%lld interval=%lld decay=%lld\n", secure, option("on_error"),
		       option("stats_interval_ms"), option("decay_ms"));
		fflush(stdout);
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			void *p[64];
			for (int i = 0; i < 64; i++)
				p[i] = ebb_malloc((size_t)(i + 1) * 1024);
			for (int i = 0; i < 64; i++)
				ebb_free(p[i]);
			clock_gettime(CLOCK_MONOTONIC, &t);
		} while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 100);
		return 0;
	}
	if (strcmp(argv[1], "solo") == 0)
		return solo();
	if (strcmp(argv[1], "early") == 0)
		return early();
	if (strcmp(argv[1], "bigfree") == 0)
		return bigfree();
	if (strcmp(argv[1], "doublefree") == 0) {
		void *p = ebb_malloc(64);
		ebb_free(p);
		ebb_free(p);
		return 0; /* on_error=warn: reported, and the program goes on */
	}
	return 2;
}
