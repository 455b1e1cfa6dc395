/* test_fork_sole.cpp: fork in a process that has never had a second thread,
 * where core/api/fork.c takes none of the allocator's locks (issue 14: a
 * shell's forks paid a copy-on-write fault for each page holding one). Both
 * sides must stay whole: the parent's blocks, the child's use of them, the
 * calls that take every global lock (ebb_trim, ebb_stats_get), a thread and a
 * fork of the child's own, and a later fork once the parent has a thread.
 * The child reports through its exit status only. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <pthread.h>
#include <sys/single_threaded.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace apitest;

namespace {

constexpr int HELD = 48;

size_t held_size(int i)
{
	/* small classes, multi-page classes, page-heap blocks, a huge block */
	return i == HELD - 1 ? 5 * MiB : i == HELD - 2 ? 400 * KiB : (size_t)(i % 12) * 700 + 16 + (size_t)i;
}

int work(unsigned seed)
{
	void *keep[32];
	for (int i = 0; i < 32; i++) {
		size_t n = (size_t)(i * 97 + 1) * (i % 5 == 4 ? 40 : 1);
		keep[i] = ebb_malloc(n);
		if (!keep[i]) return 1;
		fill(keep[i], n, seed + (unsigned)i);
	}
	for (int i = 0; i < 32; i++) {
		size_t n = (size_t)(i * 97 + 1) * (i % 5 == 4 ? 40 : 1);
		void *q = ebb_realloc(keep[i], n * 2 + 5);
		if (!q || first_mismatch(q, n, seed + (unsigned)i) != n) return 2;
		ebb_free(q);
	}
	return 0;
}

void *thread_work(void *)
{
	return (void *)(intptr_t)work(7);
}

/* The child of a fork: the parent's blocks as they were, freed here in part,
 * and everything else working. */
int child(void **held, int round)
{
	alarm(30); /* a lock left taken ends as SIGALRM, not as a hung test */
	for (int i = 0; i < HELD; i++)
		if (first_mismatch(held[i], held_size(i), (unsigned)i) != held_size(i)) return 10;
	for (int i = round % 2; i < HELD; i += 2)
		ebb_free(held[i]);
	if (int rc = work(100 + (unsigned)round)) return 20 + rc;
	ebb_trim();
	ebb_stats_t s;
	ebb_stats_get(&s);
	if (s.threads != 1) return 30;
	pid_t g = fork(); /* the child is single-threaded too */
	if (g < 0) return 40;
	if (g == 0) _exit(work(200));
	int st = 0;
	if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 41;
#if EBB_TEST_THREADS_AFTER_FORK
	pthread_t t;
	void *res = nullptr;
	if (pthread_create(&t, nullptr, thread_work, nullptr) != 0) return 50;
	if (pthread_join(t, &res) != 0 || res != nullptr) return 51;
#endif
	for (int i = 1 - round % 2; i < HELD; i += 2)
		ebb_free(held[i]);
	return 0;
}

void fork_and_check(void **held, int round)
{
	INFO("round " << round);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) _exit(child(held, round));
	int status = 0;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	if (WIFSIGNALED(status))
		FAIL_CHECK("child killed by signal " << WTERMSIG(status));
	else
		CHECK(WEXITSTATUS(status) == 0);
	/* the parent's blocks are its own still, and it goes on allocating */
	for (int i = 0; i < HELD; i++)
		CHECK(first_mismatch(held[i], held_size(i), (unsigned)i) == held_size(i));
	CHECK(work((unsigned)round) == 0);
}

} // namespace

TEST_CASE("fork in a process that never had a second thread leaves parent and child whole", "[fork_sole]")
{
	/* No background thread either: the process must stay single-threaded
	 * until the last part, or the case tests the locking path instead. */
	REQUIRE(ebb_option_set("background_thread", "0") == 0);
	void *held[HELD];
	for (int i = 0; i < HELD; i++) {
		held[i] = ebb_malloc(held_size(i));
		REQUIRE(held[i] != nullptr);
		fill(held[i], held_size(i), (unsigned)i);
	}
	/* blocks in the thread cache and in central lists at the fork */
	REQUIRE(work(1) == 0);
	REQUIRE(__libc_single_threaded);
	for (int round = 0; round < 8; round++)
		fork_and_check(held, round);
	REQUIRE(__libc_single_threaded);

#if EBB_TEST_THREADS_AFTER_FORK
	/* Once a thread has existed, fork takes the locks again: the same must
	 * hold there. */
	pthread_t t;
	void *res = nullptr;
	REQUIRE(pthread_create(&t, nullptr, thread_work, nullptr) == 0);
	REQUIRE(pthread_join(t, &res) == 0);
	REQUIRE(res == nullptr);
	REQUIRE_FALSE(__libc_single_threaded);
	for (int round = 8; round < 10; round++)
		fork_and_check(held, round);
#endif
	for (int i = 0; i < HELD; i++)
		ebb_free(held[i]);
	ebb_option_set("background_thread", "1");
}
