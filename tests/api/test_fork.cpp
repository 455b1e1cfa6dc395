/* test_fork.cpp: after fork() in a process whose other threads are busy
 * allocating, the child can allocate, reallocate and free (the short version;
 * stress/ has the long one). The child reports through its exit status only. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <pthread.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace apitest;

namespace {

/* Child side: no Catch, no stdio; exit status 0 when everything worked. */
int child_work(const Api *a)
{
	void *keep[64];
	size_t keep_n[64];
	for (int i = 0; i < 64; i++) {
		size_t n = (size_t)(i % 16) * 1000 + (size_t)(i == 63 ? 6 * MiB : i == 62 ? 300 * KiB : 1);
		keep[i] = a->malloc_(n);
		keep_n[i] = n;
		if (!keep[i]) return 10;
		fill(keep[i], n, (unsigned)i);
	}
	for (int round = 0; round < 200; round++) {
		void *p = a->malloc_((size_t)round * 37 + 1);
		if (!p) return 11;
		fill(p, (size_t)round * 37 + 1, 99);
		void *q = a->realloc_(p, (size_t)round * 500 + 3);
		if (!q) return 12;
		size_t keep_bytes = (size_t)round * 37 + 1 < (size_t)round * 500 + 3 ? (size_t)round * 37 + 1 : (size_t)round * 500 + 3;
		if (first_mismatch(q, keep_bytes, 99) != keep_bytes) return 13;
		a->free_(q);
		void *c = a->calloc_(10, (size_t)round + 1);
		if (!c || first_nonzero(c, 10 * ((size_t)round + 1)) != 10 * ((size_t)round + 1)) return 14;
		a->free_(c);
	}
	for (int i = 0; i < 64; i++) {
		if (first_mismatch(keep[i], keep_n[i], (unsigned)i) != keep_n[i]) return 15;
		a->free_(keep[i]);
	}
	/* the calls that take the allocator's global locks */
	ebb_trim();
	ebb_stats_t s;
	ebb_stats_get(&s);
	return 0;
}

#if EBB_TEST_THREADS_AFTER_FORK
void *child_thread(void *arg)
{
	return (void *)(intptr_t)child_work(static_cast<const Api *>(arg));
}
#endif

int child_main(const Api *a)
{
	alarm(30); /* a deadlock in the child ends as SIGALRM, not as a hung test */
#if !EBB_TEST_THREADS_AFTER_FORK
	/* Nor may ebbmalloc's background thread start here (api_util.h). */
	ebb_option_set("background_thread", "0");
#endif
	int rc = child_work(a);
	if (rc) return rc;
#if EBB_TEST_THREADS_AFTER_FORK /* see api_util.h */
	pthread_t t;
	if (pthread_create(&t, nullptr, child_thread, const_cast<Api *>(a)) != 0) return 20;
	void *res = nullptr;
	if (pthread_join(t, &res) != 0) return 21;
	if (res) return 22;
#endif
	return 0;
}

} // namespace

TEST_CASE("after fork in a multithreaded process the child can allocate and free", "[fork]")
{
	std::vector<const Api *> apis = all_apis();
	std::atomic<bool> stop{false};
	std::atomic<size_t> errors{0};
	std::vector<std::thread> busy;
	for (int id = 0; id < 2; id++)
		busy.emplace_back([&, id] {
			Rng rng(id + 5);
			std::vector<void *> held(256, nullptr);
			while (!stop.load(std::memory_order_relaxed)) {
				const Api *a = apis[rng.below(apis.size())];
				size_t k = rng.below(held.size());
				if (held[k]) ebb_free(held[k]);
				size_t n = rng.below(50) == 0 ? rng.log_size(5 * MiB) : rng.log_size(8 * KiB);
				held[k] = a->malloc_(n);
				if (!held[k]) errors++;
				else if (n) static_cast<char *>(held[k])[n - 1] = 1;
			}
			for (void *p : held) ebb_free(p);
		});

	for (int i = 0; i < 8; i++) {
		const Api *a = apis[(size_t)i % apis.size()];
		INFO("fork " << i << ", api " << a->name);
		pid_t pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) _exit(child_main(a));
		int status = 0;
		REQUIRE(waitpid(pid, &status, 0) == pid);
		if (WIFSIGNALED(status)) {
			FAIL_CHECK("child killed by signal " << WTERMSIG(status)
							   << (WTERMSIG(status) == SIGALRM ? " (deadlocked)" : ""));
		} else {
			CHECK(WIFEXITED(status));
			CHECK(WEXITSTATUS(status) == 0);
		}
		/* the parent goes on allocating too */
		void *p = a->malloc_(1000);
		CHECK(p != nullptr);
		a->free_(p);
	}
	stop = true;
	for (auto &t : busy) t.join();
	CHECK(errors == 0);
}
