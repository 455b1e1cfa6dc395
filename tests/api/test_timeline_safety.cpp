/* test_timeline_safety.cpp: the stats timeline never blocks or wedges the
 * program (issue 11, item 13). Each case runs in a forked child with an
 * alarm, so that a hang ends as SIGALRM, not as a hung test.
 *
 * - stats_file names a FIFO, with no reader or with a reader that never
 *   reads: with and without the background thread, a program that
 *   allocates for a while finishes at once; the FIFO is refused by name.
 * - stderr (empty stats_file) is a full pipe nobody reads: rows are dropped,
 *   malloc does not wait.
 * - background_thread=0, rows every millisecond written from the allocating
 *   thread's slow paths; the thread is cancelled (pthread_cancel) at random
 *   moments, then the process forks in a loop: no fork hangs. Before the
 *   fix the cancellation took effect inside write() with the timeline's
 *   lock held, and the next fork spun on it forever. */
#include "api_util.h"
#include "child_util.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

using namespace apitest;

namespace {


/* Large blocks: every free goes back to the page heap, whose slow path
 * writes a due row when no background thread runs. */
void churn(double ms)
{
	double end = now_ms() + ms;
	while (now_ms() < end) {
		void *p[16];
		for (int i = 0; i < 16; i++) {
			p[i] = ebb_malloc(40 * KiB + (size_t)i * 8 * KiB);
			if (p[i]) static_cast<char *>(p[i])[0] = 1;
		}
		for (int i = 0; i < 16; i++) ebb_free(p[i]);
	}
}

std::string temp_dir()
{
	const char *t = getenv("TMPDIR");
	return t && *t ? t : "/tmp";
}

int timeline(const char *file, const char *bg)
{
	if (ebb_option_set("background_thread", bg) != 0 || ebb_option_set("stats_file", file) != 0 ||
	    ebb_option_set("stats_interval_ms", "1") != 0)
		return 2;
	return 0;
}

} // namespace

TEST_CASE("a stats_file that is a FIFO neither blocks malloc nor the background thread", "[timeline_safety]")
{
	for (const char *bg : {"0", "1"})
		for (bool reader : {false, true}) {
			INFO("background_thread=" << bg << (reader ? ", a reader that never reads" : ", no reader"));
			double t0 = now_ms();
			/* A forked child writes only to a name with %p (its own). */
			ChildResult c = run_child([&] {
				alarm(10);
				std::string fifo = temp_dir() + "/ebb-fifo." + std::to_string(getpid());
				unlink(fifo.c_str());
				if (mkfifo(fifo.c_str(), 0600) != 0) return 3;
				if (reader && open(fifo.c_str(), O_RDONLY | O_NONBLOCK) < 0) return 4;
				int rc = timeline((temp_dir() + "/ebb-fifo.%p").c_str(), bg);
				if (rc == 0) churn(300);
				unlink(fifo.c_str());
				return rc;
			});
			double took = now_ms() - t0;
			INFO(c.err);
			CHECK(c.signal == 0);
			CHECK((c.exited && c.code == 0));
			CHECK(took < 5000);
			CHECK(c.err.find("is not a regular file") != std::string::npos);
		}
}

/* In this process, not a child: a forked child writes no rows to stderr
 * (they are the parent's). stderr is put back afterwards. */
TEST_CASE("timeline rows to a stderr pipe nobody reads are dropped, never waited for", "[timeline_stderr]")
{
	int saved = dup(2);
	REQUIRE(saved >= 0);
	int p[2];
	REQUIRE(pipe(p) == 0);
	/* Fill the pipe, then make it the (blocking) stderr. */
	int fl = fcntl(p[1], F_GETFL);
	fcntl(p[1], F_SETFL, fl | O_NONBLOCK);
	char junk[4096] = {0};
	while (write(p[1], junk, sizeof junk) > 0) {
	}
	fcntl(p[1], F_SETFL, fl);
	alarm(20); /* a blocked write: SIGALRM */
	double t0 = now_ms();
	for (const char *bg : {"0", "1"}) {
		dup2(p[1], 2);
		int rc = timeline("", bg);
		churn(300);
		ebb_option_set("stats_interval_ms", "0");
		dup2(saved, 2);
		INFO("background_thread=" << bg);
		CHECK(rc == 0);
	}
	alarm(0);
	CHECK(now_ms() - t0 < 5000);
	close(p[0]);
	close(p[1]);
	close(saved);
}

namespace {

void *cancel_victim(void *)
{
	/* Cancellation points only here, every 20 ms; in between, rows are
	 * due every millisecond and written from this thread's slow paths. */
	for (;;) {
		churn(20);
		pthread_testcancel();
	}
	return nullptr;
}

} // namespace

/* Its own process (tag [timeline_cancel]): it turns the timeline on for
 * good and starts threads, which a forked child could not do under TSan. */
TEST_CASE("a thread cancelled while the timeline writes from its slow paths does not wedge fork",
	  "[timeline_cancel]")
{
	const std::string file = temp_dir() + "/ebb-cancel-" + std::to_string(getpid()) + ".csv";
	unlink(file.c_str());
	REQUIRE(timeline(file.c_str(), "0") == 0);
	unsigned seed = 7;
	for (int round = 0; round < 12; round++) {
		INFO("round " << round);
		pthread_t th;
		REQUIRE(pthread_create(&th, nullptr, cancel_victim, nullptr) == 0);
		seed = seed * 1103515245u + 12345u;
		usleep(3000 + (seed >> 8) % 25000);
		REQUIRE(pthread_cancel(th) == 0);
		REQUIRE(pthread_join(th, nullptr) == 0);
		for (int f = 0; f < 10; f++) {
			alarm(10); /* a fork that spins on a lock ends the test with SIGALRM */
			pid_t pid = fork();
			REQUIRE(pid >= 0);
			if (pid == 0) {
				void *p = ebb_malloc(100);
				ebb_free(p);
				_exit(p != nullptr ? 0 : 1);
			}
			int st = 0;
			REQUIRE(waitpid(pid, &st, 0) == pid);
			CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 0));
			alarm(0);
		}
	}
	/* Rows still come: the lock was not left held by a cancelled thread. */
	struct stat before, after;
	REQUIRE(stat(file.c_str(), &before) == 0);
	churn(50);
	REQUIRE(stat(file.c_str(), &after) == 0);
	CHECK(after.st_size > before.st_size);
	REQUIRE(ebb_option_set("stats_interval_ms", "0") == 0);
	unlink(file.c_str());
}
