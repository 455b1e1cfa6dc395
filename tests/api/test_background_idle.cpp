/* test_background_idle.cpp: the background thread parks when nothing is
 * left to give back (no tick: it does not wake), the same thread comes back
 * to work when memory turns dirty, and a program that must be
 * single-threaded again turns it off at run time (issue 11, item 14). It
 * used to end when idle instead, and the next free created a new one: a
 * free that glibc makes holding its stack-cache lock then deadlocked in
 * pthread_create (test_background_start.cpp). Each case runs in a forked
 * child (a fresh process: no allocator thread yet), with an alarm against
 * hangs.
 *
 * The allocator's thread is told from the program's own by its name,
 * "ebb-background" (/proc/self/task/N/comm): under TSan the sanitizer has
 * threads of its own. */
#include "api_util.h"
#include "child_util.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace apitest;

namespace {


/* Reads a small file into buf with plain system calls: the polling loops
 * below must not allocate, or they would keep the allocator busy (a quiet
 * program is what is being tested). */
ssize_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return -1;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return n;
}

/* Threads of this process, and how many of them are the allocator's (tid:
 * the id of the last one seen, if not NULL). */
void count_tasks(unsigned *all, unsigned *ours, long *tid = nullptr)
{
	*all = *ours = 0;
	int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) return;
	alignas(8) char buf[4096];
	long n;
	while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
		for (long off = 0; off < n;) {
			struct linux_dirent64 {
				uint64_t ino;
				int64_t off;
				unsigned short reclen;
				unsigned char type;
				char name[];
			} *e = reinterpret_cast<linux_dirent64 *>(buf + off);
			off += e->reclen;
			if (e->name[0] == '.') continue;
			(*all)++;
			char path[64], comm[32];
			snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->name);
			if (read_small(path, comm, sizeof comm) > 0 && strncmp(comm, "ebb-background", 14) == 0) {
				(*ours)++;
				if (tid != nullptr) *tid = atol(e->name);
			}
		}
	}
	close(fd);
}

unsigned ours_now()
{
	unsigned all, ours;
	count_tasks(&all, &ours);
	return ours;
}

/* Waits until the allocator has `want` threads; the ms it took, -1 if not
 * within limit_ms. */
double wait_ours(unsigned want, double limit_ms)
{
	double t0 = now_ms();
	for (;;) {
		if (ours_now() == want) return now_ms() - t0;
		if (now_ms() - t0 > limit_ms) return -1;
		usleep(20000);
	}
}

/* How often thread tid has gone to sleep and been woken (its voluntary
 * context switches); -1 if unknown. */
long wakeups(long tid)
{
	char path[64], buf[2048];
	snprintf(path, sizeof path, "/proc/self/task/%ld/status", tid);
	if (read_small(path, buf, sizeof buf) <= 0) return -1;
	const char *at = strstr(buf, "\nvoluntary_ctxt_switches:");
	return at != nullptr ? atol(at + 26) : -1;
}

/* Waits until thread tid sleeps through a whole 1.5 s window (a thread that
 * still ticks wakes at least once a second); the ms it took, -1 if not
 * within limit_ms. */
double wait_parked(long tid, double limit_ms)
{
	double t0 = now_ms();
	while (now_ms() - t0 < limit_ms) {
		long before = wakeups(tid);
		usleep(1500000);
		long after = wakeups(tid);
		if (before < 0 || after < 0) return -1;
		if (after == before) return now_ms() - t0;
	}
	return -1;
}

/* What the process holds: the kernel's RSS, except under a sanitizer, whose
 * shadow memory for the burst stays resident (then the allocator's own
 * figure, which the memory tests check against the RSS). */
#if defined(__SANITIZE_ADDRESS__) || EBB_TEST_TSAN
#define HELD_WHAT "the allocator's resident bytes"
size_t held()
{
	ebb_stats_t s;
	ebb_stats_get(&s);
	return (size_t)s.resident;
}
#else
#define HELD_WHAT "RSS"
size_t held()
{
	char buf[128];
	unsigned long size = 0, res = 0;
	if (read_small("/proc/self/statm", buf, sizeof buf) <= 0 || sscanf(buf, "%lu %lu", &size, &res) != 2)
		return 0;
	return res * (size_t)sysconf(_SC_PAGESIZE);
}
#endif

/* 64 MiB in blocks of 1 to 64 KiB, touched, then freed. */
void burst()
{
	std::vector<void *> v;
	Rng rng(3);
	size_t total = 0;
	while (total < 64 * MiB) {
		size_t n = 1 * KiB + rng.below(64 * KiB);
		void *p = ebb_malloc(n);
		if (p == nullptr) break;
		memset(p, 1, n);
		v.push_back(p);
		total += n;
	}
	for (void *p : v) ebb_free(p);
}

long long option(const char *name)
{
	long long v = -1;
	ebb_option_get(name, &v);
	return v;
}

} // namespace

TEST_CASE("a quiet program's thread parks, the same thread wakes when memory turns dirty, and turned off it is gone",
	  "[background_idle]")
{
	/* Whether this kernel or container lets a single-threaded process
	 * enter a new user namespace at all (the allocator is not involved:
	 * the child has done nothing that starts its thread). */
	ChildResult probe = run_child([] { return unshare(CLONE_NEWUSER) == 0 ? 0 : 100 + (errno & 0x3f); });
	bool userns = probe.exited && probe.code == 0;
	if (!userns)
		WARN("unshare(CLONE_NEWUSER) is refused here even without the allocator (exit "
		     << probe.code << "): that part is skipped");

	const double decay = (double)option("decay_ms");
	REQUIRE(decay > 0);
	ChildResult c = run_child([&]() -> int {
		alarm(60);
		size_t rss0 = held();
		long first_tid = 0;
		for (int round = 0; round < 2; round++) {
			burst();
			/* Memory went dirty: the thread runs (created in round 0,
			 * woken from its park in round 1). */
			double up = wait_ours(1, 1000);
			if (up < 0) return 40 + round;
			unsigned all, ours;
			long tid = 0;
			count_tasks(&all, &ours, &tid);
			if (round == 0) first_tid = tid;
			else if (tid != first_tid) return 60; /* woken, not created again */
			double t_free = now_ms();
			/* Back within 16 MiB of the start within 2 x decay_ms + 1 s (the
			 * memory-return tests' bound, plus a second for the drain). */
			while (held() > rss0 + 16 * MiB) {
				if (now_ms() - t_free > 2 * decay + 1000) return 10 + round;
				usleep(10000);
			}
			/* It parks about a second after its last work: within
			 * decay_ms + 4 s of the frees it sleeps through 1.5 s. */
			double parked = wait_parked(tid, decay + 4000);
			if (parked < 0) return 20 + round;
			ebb_stats_t s;
			ebb_stats_get(&s);
			if (s.dirty != 0) return 30 + round;
			/* Parked, not gone. */
			if (ours_now() != 1) return 50 + round;
			char line[256];
			int len = snprintf(line, sizeof line, "round %d: thread %ld seen after %.0f ms, parked within %.0f ms "
					"after the memory was back (%.0f ms after the frees)\n",
				round, tid, up, parked, now_ms() - t_free);
			(void)!write(2, line, (size_t)len);
		}
		/* A program that must be single-threaded for the kernel turns the
		 * thread off: gone when the call returns. */
		if (ebb_option_set("background_thread", "0") != 0) return 70;
		unsigned all, ours;
		count_tasks(&all, &ours);
		if (ours != 0) return 71;
		if (userns && all == 1 && unshare(CLONE_NEWUSER) != 0) return 72;
		return 0;
	});
	INFO("exit " << c.code << ", signal " << c.signal << ": " << c.err);
	CHECK(c.signal == 0);
	CHECK((c.exited && c.code == 0));
	WARN(c.err);
}

TEST_CASE("background_thread=0 at run time: the thread is gone when ebb_option_set returns",
	  "[background_idle]")
{
	ChildResult c = run_child([]() -> int {
		alarm(30);
		burst();
		if (wait_ours(1, 1000) < 0) return 10;
		if (ebb_option_set("background_thread", "0") != 0) return 11;
		if (ours_now() != 0) return 12;
		/* Without the thread: memory goes back from the slow paths (the
		 * next burst) or at once with ebb_trim. */
		burst();
		usleep(100000);
		if (ours_now() != 0) return 13;
		ebb_trim();
		ebb_stats_t s;
		ebb_stats_get(&s);
		if (s.dirty != 0) return 14;
		/* On again: the next dirty memory starts it. */
		if (ebb_option_set("background_thread", "1") != 0) return 15;
		burst();
		if (wait_ours(1, 1000) < 0) return 16;
		return 0;
	});
	INFO("exit " << c.code << ", signal " << c.signal << ": " << c.err);
	CHECK(c.signal == 0);
	CHECK((c.exited && c.code == 0));
}

/* A process that never had a second thread (a fresh exec: this test program's
 * forked children inherit its threaded state) and leaves few pages dirty
 * keeps its one thread: the allocator's would make glibc lock every stdio
 * call for good and interrupt the program for each purge (initdb's short
 * processes each started one). Its frees decay the pages in line, and a
 * burst past the bound starts the thread as before. The steps and their exit
 * codes are secure_helper's solo(). */
TEST_CASE("a single-threaded program with few dirty pages gets no thread, its frees decay them",
	  "[background_idle]")
{
	std::string text;
	int status = run_fresh(EBB_SECURE_HELPER, "solo", "EBB_OPTIONS=decay_ms=100", &text);
	INFO("status " << status << ": " << text);
	CHECK(WIFEXITED(status));
	CHECK(WEXITSTATUS(status) == 0);
}
