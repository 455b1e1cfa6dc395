/* test_background_start.cpp: the background thread is never created from a
 * free that glibc makes while it holds a lock pthread_create takes.
 *
 * glibc 2.36 frees a thread's dynamic TLS blocks (those of dlopen()ed
 * libraries, malloc'ed at the thread's first access) in _dl_deallocate_tls,
 * and for a thread that ran on a stack the program gave it
 * (pthread_attr_setstack) it does so in pthread_join, inside
 * __nptl_deallocate_stack, holding its stack-cache lock (dl_stack_cache_lock,
 * not recursive). pthread_create takes that lock first thing
 * (allocate_stack, get_cached_stack). A free there that turned pages dirty
 * and created the allocator's thread waited for itself for ever. The case
 * runs in a forked child that the test kills after 60 s: an alarm would not
 * do, since the allocator blocks every signal around pthread_create
 * (os_thread_start), so a hung child never takes it.
 *
 * Round 0: no allocator thread yet (the child of a fork has none) and no
 * dirty page, so that the TLS block's free is what turns pages dirty.
 * Round 1: the thread ran and has been idle for 2.5 s (it used to end after
 * 1 s idle, so that the next such free created a new one; it now parks). */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace apitest;

namespace {

typedef void (*touch_fn)(void);

struct Worker {
	touch_fn touch;
	int ready = 0; /* set by the worker once its TLS block is allocated */
	int go = 0;    /* set by the test once the dirty pages are purged */
};

void *worker_main(void *arg)
{
	Worker *w = static_cast<Worker *>(arg);
	w->touch(); /* glibc mallocs the 1 MiB block here */
	__atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&w->go, __ATOMIC_ACQUIRE)) usleep(1000);
	return nullptr;
}

/* 32 large blocks of 1 MiB (page runs), written, then freed: dirty pages. */
void dirty_pages()
{
	void *blocks[32];
	for (void *&p : blocks) {
		p = ebb_malloc(1 * MiB);
		if (p != nullptr) memset(p, 1, 1 * MiB);
	}
	for (void *p : blocks) ebb_free(p);
}

void *short_thread(void *)
{
	void *p = ebb_malloc(100);
	ebb_free(p);
	return nullptr;
}

/* Threads of this process (/proc/self/status), read without allocating;
 * 0 if unknown. Besides the test's own, only the allocator's thread runs. */
long threads_now()
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0) return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	const char *at = strstr(buf, "\nThreads:");
	return at != nullptr ? atol(at + 9) : 0;
}

/* One thread on a stack of ours touches the library's TLS; the dirty pages
 * are purged; the join frees the TLS block under glibc's stack-cache lock.
 * 0, or a small number naming the step that failed. */
int join_frees_tls(touch_fn touch)
{
	const size_t stack_size = 1 * MiB;
	void *stack = mmap(nullptr, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED) return 1;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	if (pthread_attr_setstack(&attr, stack, stack_size) != 0) return 2;
	Worker w;
	w.touch = touch;
	pthread_t t;
	if (pthread_create(&t, &attr, worker_main, &w) != 0) return 3;
	pthread_attr_destroy(&attr);
	while (!__atomic_load_n(&w.ready, __ATOMIC_ACQUIRE)) usleep(1000);
	ebb_trim();
	ebb_stats_t s;
	ebb_stats_get(&s);
	if (s.dirty != 0) return 4; /* the TLS block's free must be what makes pages dirty */
	__atomic_store_n(&w.go, 1, __ATOMIC_RELEASE);
	uint64_t purged0 = s.bytes_purged;
	if (pthread_join(t, nullptr) != 0) return 5; /* hung here before the fix */
	/* The block went back to the page heap: dirty, or purged in line. */
	ebb_stats_get(&s);
	if (s.dirty == 0 && s.bytes_purged == purged0) return 6;
	munmap(stack, stack_size);
	return 0;
}

/* Runs fn in a forked child; its exit code, or -1 if it did not end
 * within limit_s (then it is killed), -2 if it died of a signal. */
template <class F> int run_child_bounded(F fn, double limit_s)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) return -3;
	if (pid == 0) {
		int rc = 125;
		try {
			rc = fn();
		} catch (...) {
		}
		_exit(rc);
	}
	double t0 = now_ms();
	int status = 0;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid) break;
		if (r < 0) return -3;
		if (now_ms() - t0 > limit_s * 1000) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		usleep(20000);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
}

} // namespace

TEST_CASE("a free glibc makes under its stack-cache lock never creates the background thread",
	  "[background_start]")
{
	if (!EBB_TEST_OVERRIDE) {
		WARN("the library does not replace malloc here: glibc's frees do not reach it");
		return;
	}
	int rc = run_child_bounded([]() -> int {
		void *lib = dlopen(EBB_BIGTLS_LIB, RTLD_NOW);
		if (lib == nullptr) return 10;
		touch_fn touch = reinterpret_cast<touch_fn>(dlsym(lib, "bigtls_touch"));
		if (touch == nullptr) return 11;
		/* Round 0: no thread yet. */
		if (threads_now() != 1) return 12;
		int rc = join_frees_tls(touch);
		if (rc != 0) return 20 + rc;
		/* Round 1: the thread runs (a thread's end creates it when pages
		 * are dirty), then stays idle well past its idle time. */
		dirty_pages();
		pthread_t t;
		if (pthread_create(&t, nullptr, short_thread, nullptr) != 0 || pthread_join(t, nullptr) != 0)
			return 13;
		double t0 = now_ms();
		while (threads_now() != 2) {
			if (now_ms() - t0 > 2000) return 14;
			usleep(10000);
		}
		ebb_trim();
		usleep(2500000);
		rc = join_frees_tls(touch);
		if (rc != 0) return 30 + rc;
		return 0;
	}, 60);
	INFO("child: " << (rc == -1 ? "hung (killed after 60 s)" : rc == -2 ? "killed by a signal" : "exit code")
			<< " " << rc);
	CHECK(rc == 0);
}

/* memreturn a's shape: a threaded process builds a large structure and then
 * frees all of it, with no malloc in between. Its frees may not create the
 * thread (the case above), so the thread must already run when the burst
 * starts; before, the burst found none and purged in the freeing thread
 * (1.13 s of frees against 0.2 s). Run in a fresh exec: a forked child of
 * this program inherits the pages it made dirty. Steps and exit codes are
 * secure_helper's early(). */
TEST_CASE("a threaded process with a large heap has the background thread before its first free",
	  "[background_start]")
{
	int rc = run_child_bounded([]() -> int {
		char mode[] = "early", secure[] = "0";
		char *argv[] = {const_cast<char *>(EBB_SECURE_HELPER), mode, secure, nullptr};
		char *envp[] = {nullptr};
		execve(EBB_SECURE_HELPER, argv, envp);
		return 127;
	}, 60);
	INFO("helper: " << (rc == -1 ? "hung (killed after 60 s)" : rc == -2 ? "killed by a signal" : "exit code")
			 << " " << rc);
	CHECK(rc == 0);
}
