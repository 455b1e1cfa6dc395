/* child_util.h: running a piece of a test in a forked child, for death tests
 * (the allocator aborts on a bad pointer) and for tests that change process
 * state for good (fault injection, on_error=warn).
 *
 * The child's stderr goes to a pipe the parent reads in full; the child ends
 * with _exit(fn()) unless it dies first (125 if fn throws). Inside fn: no Catch2 macros (their
 * exceptions would unwind into a copy of the test runner); report failures
 * through the return value, a small number that names the check. */
#ifndef EBB_TESTS_CHILD_UTIL_H
#define EBB_TESTS_CHILD_UTIL_H

#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "ebbmalloc.h"

namespace apitest {

struct ChildResult {
	bool exited = false; /* by _exit: code holds the status */
	int code = -1;
	int signal = 0; /* the signal that killed it, if it did not exit */
	std::string err; /* everything it wrote to stderr */
};

/* Under the sanitizers the parent forks with its background thread
 * stopped, so that the child is the child of a single-threaded process:
 * - gcc 12's libasan holds none of its allocator's locks across fork, and a
 *   thread that starts or retires takes them (ASan sets up and tears down its
 *   per-thread cache); a child forked at that moment inherits the lock held
 *   and hangs at its first allocation. That was api.attack's timeout in CI (1
 *   run in 25 by hand, the child stuck in ASan's allocator lock while freeing
 *   a std::set).
 * - TSan ends a child of a multithreaded process that starts a thread (exit
 *   code 66), and the child's own test thread, or its free of a page run
 *   (which starts the background thread), would.
 * The child gets the parent's setting back before fn runs, so tests of the
 * background thread see it as configured. Unit tests, which link the core
 * without the public API, define EBB_CHILD_NO_PUBLIC_API and fork as they
 * are. */
#if (defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)) && !defined(EBB_CHILD_NO_PUBLIC_API)
inline bool child_fork_pause_background()
{
	long long on = 0;
	return ebb_option_get("background_thread", &on) == 0 && on != 0 &&
	       ebb_option_set("background_thread", "0") == 0;
}
inline void child_fork_resume_background() { ebb_option_set("background_thread", "1"); }
#else
inline bool child_fork_pause_background() { return false; }
inline void child_fork_resume_background() {}
#endif

template <class F> ChildResult run_child(F fn)
{
	ChildResult r;
	int fd[2];
	if (pipe(fd) != 0) return r;
	fflush(stdout);
	fflush(stderr);
	bool paused = child_fork_pause_background();
	pid_t pid = fork();
	if (paused) child_fork_resume_background();
	if (pid < 0) return r;
	if (pid == 0) {
		close(fd[0]);
		dup2(fd[1], 2);
		close(fd[1]);
		/* Catch2's handlers would report the abort as a test failure and
		 * run on inside the copy of the test runner. */
		for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE}) signal(sig, SIG_DFL);
		int rc = 125;
		try {
			rc = fn();
		} catch (const std::exception &e) { /* never back into the test runner's copy */
			fprintf(stderr, "exception in the child: %s\n", e.what());
		} catch (...) {
			fprintf(stderr, "exception in the child\n");
		}
		_exit(rc);
	}
	close(fd[1]);
	char buf[4096];
	ssize_t n;
	while ((n = read(fd[0], buf, sizeof buf)) > 0) r.err.append(buf, (size_t)n);
	close(fd[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	if (WIFEXITED(st)) {
		r.exited = true;
		r.code = WEXITSTATUS(st);
	} else if (WIFSIGNALED(st)) {
		r.signal = WTERMSIG(st);
	}
	return r;
}

/* The exact line the allocator writes for a bad pointer. It prints pointers
 * as 0x<hex>, NULL too (glibc's %p would say "(nil)"). */
inline std::string bad_pointer_line(const char *func, const void *p, const char *reason)
{
	char buf[512];
	snprintf(buf, sizeof buf, "ebbmalloc: %s(): invalid pointer 0x%" PRIxPTR ": %s\n", func, (uintptr_t)p,
		 reason);
	return buf;
}

/* The pair of runs of a bad-pointer test, r[0] with on_error=abort and r[1]
 * with on_error=warn: the first died of SIGABRT, the second went on and
 * exited 0. */
inline bool abort_and_warn_ok(const ChildResult &c, bool warn)
{
	return warn ? c.exited && c.code == 0 : c.signal == SIGABRT;
}

} // namespace apitest

#endif
