/* test_fork_hang.cpp: fork() must not hang in two odd but legal programs
 * (core/api/fork.c, docs/reliability.md "Fork").
 *
 *   [fork_stdio]   one thread forks in a loop while others hold FILE locks
 *                  across malloc (getline, flockfile) and another calls
 *                  fflush(NULL) in a loop: the lock order of glibc bug 19431.
 *   [fork_signal]  a signal handler forks on the thread it interrupted, over
 *                  and over, while that thread mallocs, frees and trims: the
 *                  parent must go on.
 *
 * A hang must fail the test in seconds, never hang CI: each scenario runs in
 * a child process of its own (its own process group, so its children go
 * too) that the test kills when it overruns its time limit; every child of
 * a scenario that could block arms alarm() first. The scenarios report
 * through their exit status only (no Catch2 in a child). */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace apitest;

namespace {

/* The names a real program calls: the standard ones where ebbmalloc
 * defines them, else (sanitizer builds) the ebb_* ones. */
const Api &program_api()
{
#if EBB_TEST_OVERRIDE
	return std_api();
#else
	return ebb_api();
#endif
}

struct Bounded {
	bool hung = false;   /* killed at the time limit */
	bool exited = false; /* else killed by `signal` */
	int code = -1;
	int signal = 0;
	double seconds = 0;
};

/* Runs fn() in a child process with its own process group and returns how
 * it ended; after limit_s seconds the whole group is killed and the run
 * counts as hung. */
template <class F> Bounded run_bounded(double limit_s, F fn)
{
	Bounded r;
	fflush(stdout);
	fflush(stderr);
	auto t0 = std::chrono::steady_clock::now();
	pid_t pid = fork();
	if (pid < 0) return r;
	if (pid == 0) {
		setpgid(0, 0);
		for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE}) signal(sig, SIG_DFL);
		int rc = 125;
		try {
			rc = fn();
		} catch (...) {
		}
		_exit(rc);
	}
	setpgid(pid, pid); /* whichever side runs first; the same group */
	int st = 0;
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
		if (w == pid) break;
		if (w < 0 && errno != EINTR) return r;
		if (r.seconds > limit_s) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			r.hung = true;
			return r;
		}
		usleep(10000);
	}
	if (WIFEXITED(st)) {
		r.exited = true;
		r.code = WEXITSTATUS(st);
	} else if (WIFSIGNALED(st)) {
		r.signal = WTERMSIG(st);
	}
	return r;
}

void check_bounded(const Bounded &r, double limit_s)
{
	INFO("after " << r.seconds << " s");
	if (r.hung) FAIL("hung: still running after " << limit_s << " s (deadlock), killed");
	if (!r.exited) FAIL("killed by signal " << r.signal << (r.signal == SIGALRM ? " (a child deadlocked)" : ""));
	CHECK(r.code == 0);
}

double elapsed_since(std::chrono::steady_clock::time_point t0)
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/* TSan ends a child of a multithreaded fork that starts a thread: keep
 * ebbmalloc's background thread from starting in such a child. */
void no_thread_under_tsan()
{
#if EBB_TEST_TSAN
	ebb_option_set("background_thread", "0");
#endif
}

/* A child forked by a scenario: a malloc and a free, then _exit. alarm()
 * first, so that a child that inherited a held lock dies instead of
 * spinning for ever (an alarm is not inherited across fork). */
[[noreturn]] void child_malloc_and_exit(const Api *a)
{
	alarm(10);
	no_thread_under_tsan();
	void *p = a->malloc_(1000);
	if (p) static_cast<char *>(p)[999] = 1;
	a->free_(p);
	_exit(p ? 0 : 1);
}

/* ---------------------------------------------------------------------------
 * [fork_stdio]
 * ------------------------------------------------------------------------- */

constexpr double STDIO_RUN_S = 3.0;

int stdio_scenario()
{
	const Api *a = &program_api();
	char path[] = "/tmp/ebb_fork_stdio_XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0) return 2;
	/* Lines up to 64 KiB: getline grows its buffer through many size
	 * classes and into large blocks, so its mallocs miss the thread cache
	 * and take allocator locks while the FILE lock is held. */
	{
		Rng rng(11);
		std::vector<char> line;
		for (int i = 0; i < 256; i++) {
			size_t n = rng.log_size(64 * KiB) + 1;
			line.assign(n, (char)('a' + i % 26));
			line[n - 1] = '\n';
			if (write(fd, line.data(), n) != (ssize_t)n) return 3;
		}
	}
	close(fd);
	/* Every FILE opened before the threads start, then the name removed. */
	FILE *files[3];
	for (FILE *&f : files)
		if ((f = fopen(path, "r")) == nullptr) return 4;
	unlink(path);

	std::atomic<bool> stop{false};
	std::atomic<long> lines{0}, locked_allocs{0}, flushes{0}, forks{0}, bad_children{0}, failures{0};
	std::vector<std::thread> threads;

#if EBB_TEST_OVERRIDE
	/* Readers: getline holds the FILE lock while it mallocs and reallocs
	 * (through the standard names, so through ebbmalloc). */
	for (int r = 0; r < 2; r++)
		threads.emplace_back([&, r] {
			FILE *f = files[r];
			while (!stop.load(std::memory_order_relaxed)) {
				char *buf = nullptr;
				size_t cap = 0;
				ssize_t n = getline(&buf, &cap, f);
				free(buf);
				if (n < 0) rewind(f);
				else lines++;
				sched_yield(); /* FILE locks are not fair: let fflush in */
			}
		});
#endif
	/* The same lock pattern spelled out, in every build (sanitizer builds
	 * too, where getline does not use ebbmalloc): a FILE lock held across
	 * allocations of sizes that miss the thread cache. */
	threads.emplace_back([&] {
		FILE *f = files[2];
		Rng rng(12);
		while (!stop.load(std::memory_order_relaxed)) {
			flockfile(f);
			for (int k = 0; k < 8; k++) {
				size_t n = rng.log_size(256 * KiB) + 1;
				void *p = a->malloc_(n);
				if (!p) {
					failures++;
					continue;
				}
				static_cast<char *>(p)[n - 1] = 1;
				a->free_(p);
				locked_allocs++;
			}
			funlockfile(f);
			sched_yield();
		}
	});
	/* fflush(NULL): holds the stdio list lock while it takes each FILE's. */
	threads.emplace_back([&] {
		while (!stop.load(std::memory_order_relaxed)) {
			fflush(nullptr);
			flushes++;
			sched_yield(); /* nor is the list lock: let fork in */
		}
	});
	/* The forker. */
	threads.emplace_back([&] {
		while (!stop.load(std::memory_order_relaxed)) {
			pid_t pid = fork();
			if (pid == 0) child_malloc_and_exit(a);
			if (pid < 0) {
				failures++;
				continue;
			}
			int st = 0;
			if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) bad_children++;
			forks++;
		}
	});

	auto t0 = std::chrono::steady_clock::now();
	while (elapsed_since(t0) < STDIO_RUN_S) usleep(20000);
	stop = true;
	for (auto &t : threads) t.join();
	for (FILE *f : files) fclose(f);

	fprintf(stderr, "fork_stdio: %ld forks, %ld getline lines, %ld allocations under flockfile, %ld fflush(NULL)\n",
		forks.load(), lines.load(), locked_allocs.load(), flushes.load());
	if (failures) return 5;
	if (bad_children) return 6;
	if (forks < 10 || flushes < 10 || locked_allocs < 10) return 7; /* the race did not run */
	return 0;
}

} // namespace

TEST_CASE("fork does not deadlock against getline and fflush(NULL) (glibc bug 19431's lock order)", "[fork_stdio]")
{
	const double limit = STDIO_RUN_S + 30;
	Bounded r = run_bounded(limit, stdio_scenario);
	check_bounded(r, limit);
}

/* ---------------------------------------------------------------------------
 * [fork_signal]
 * ------------------------------------------------------------------------- */

namespace {

constexpr double SIGNAL_RUN_S = 2.0;
constexpr long SIGNAL_FORKS_MAX = 2000;
/* Fewer forks than this and the test tested nothing. On a loaded machine
 * the timer's signals come less often than on an idle one (42 forks in
 * 2.1 s once, at load 10), so the run goes on past SIGNAL_RUN_S, up to
 * SIGNAL_RUN_MAX_S, until it has this many. */
constexpr long SIGNAL_FORKS_MIN = 50;
constexpr double SIGNAL_RUN_MAX_S = 10.0;

/* Written by the handler only, read by the thread it interrupts. */
volatile sig_atomic_t sig_forks, sig_bad_children, sig_fork_failures;
/* A one-shot timer the handler re-arms after each fork, so that the thread
 * always runs a while between two handlers (a periodic one shorter than a
 * fork would keep it in the handler and starve the code under test). */
timer_t sig_timer;
const struct itimerspec sig_next = {{0, 0}, {0, 300000}};

/* fork() on the thread that was interrupted (perhaps inside malloc, holding
 * an allocator lock). The child only _exits: the child of a fork from a
 * signal handler may call async-signal-safe functions only. */
void on_timer(int)
{
	int saved = errno;
	pid_t pid = fork();
	if (pid == 0) _exit(0);
	if (pid < 0) {
		sig_fork_failures = sig_fork_failures + 1;
	} else {
		int st = 0;
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			sig_bad_children = sig_bad_children + 1;
		sig_forks = sig_forks + 1;
	}
	timer_settime(sig_timer, 0, &sig_next, nullptr);
	errno = saved;
}

int signal_scenario()
{
	const Api *a = &program_api();
	/* Another thread allocating too: the process is multithreaded, as most
	 * are, and the allocator's locks are contended. It never takes the
	 * signal. */
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
	std::atomic<bool> stop{false};
	std::thread other([&] {
		Rng rng(21);
		std::vector<void *> held(64, nullptr);
		while (!stop.load(std::memory_order_relaxed)) {
			size_t k = rng.below(held.size());
			a->free_(held[k]);
			held[k] = a->malloc_(rng.log_size(512 * KiB) + 1);
		}
		for (void *p : held) a->free_(p);
	});
	pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_timer;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, nullptr) != 0) return 2;
	/* A timer whose signal goes to this thread only. */
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGUSR1;
	sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	if (timer_create(CLOCK_MONOTONIC, &sev, &sig_timer) != 0) return 3;
	if (timer_settime(sig_timer, 0, &sig_next, nullptr) != 0) return 4;

	/* Sizes from 16 bytes to 2 MiB (most miss the thread cache: central
	 * lists, page heaps, large blocks), reallocs, and ebb_trim, which holds
	 * every lock in turn and purges with a page heap's pass out. */
	static const size_t sizes[] = {16, 200, 3000, 24000, 70000, 300000, 2 * MiB, 48, 900, 9000};
	const size_t nsizes = sizeof sizes / sizeof sizes[0];
	void *ring[32] = {};
	long failures = 0;
	auto t0 = std::chrono::steady_clock::now();
	auto running = [&] {
		double s = elapsed_since(t0);
		return sig_forks < SIGNAL_FORKS_MAX && s < SIGNAL_RUN_MAX_S &&
		       (s < SIGNAL_RUN_S || sig_forks < SIGNAL_FORKS_MIN);
	};
	for (unsigned long i = 0; running(); i++) {
		size_t k = i % 32, n = sizes[(i * 7) % nsizes];
		a->free_(ring[k]);
		ring[k] = a->malloc_(n);
		if (!ring[k]) {
			failures++;
			continue;
		}
		static_cast<char *>(ring[k])[n - 1] = 1;
		if (i % 3 == 0) {
			void *q = a->realloc_(ring[k], sizes[(i * 5 + 3) % nsizes]);
			if (q) ring[k] = q;
			else failures++;
		}
		if (i % 64 == 0) ebb_trim();
	}
	signal(SIGUSR1, SIG_IGN); /* the handler re-arms the timer: stop it first */
	timer_delete(sig_timer);
	for (void *p : ring) a->free_(p);
	stop = true;
	other.join();

	long forks = sig_forks, bad = sig_bad_children, fork_failures = sig_fork_failures;
	fprintf(stderr, "fork_signal: %ld forks from the signal handler (%ld failed), %.1f s\n", forks,
		fork_failures, elapsed_since(t0));
	if (failures) return 5;
	if (bad) return 6;
	if (forks < SIGNAL_FORKS_MIN) return 7; /* the handler hardly ran: the test tested nothing */

	/* Every level the handlers pushed was popped and every lock released:
	 * a common fork now gives a child whose allocator works, from new
	 * threads too (not under TSan, which forbids threads after a
	 * multithreaded fork). */
	pid_t pid = fork();
	if (pid == 0) {
		alarm(10);
		no_thread_under_tsan();
		void *p = a->malloc_(100000);
		a->free_(p);
		ebb_trim();
#if !EBB_TEST_TSAN
		std::thread t([a] { a->free_(a->malloc_(5000)); });
		t.join();
#endif
		_exit(p ? 0 : 1);
	}
	if (pid < 0) return 8;
	int st = 0;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 9;
	void *p = a->malloc_(1 * MiB);
	if (!p) return 10;
	a->free_(p);
	ebb_trim();
	return 0;
}

} // namespace

TEST_CASE("fork from a signal handler that interrupted malloc: the parent goes on", "[fork_signal]")
{
	const double limit = SIGNAL_RUN_MAX_S + 30;
	Bounded r = run_bounded(limit, signal_scenario);
	check_bounded(r, limit);
}
