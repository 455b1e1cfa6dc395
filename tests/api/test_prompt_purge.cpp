/* test_prompt_purge.cpp: a small heap gives a freed large block back to the
 * kernel in its free (page_heap_free_large: initdb's peak held two 1 MiB
 * blocks it had just freed), but not the old block of a realloc that moved:
 * a block grown by copying is most often grown again, and purging it cost
 * bench realloc vector 8.8% more page faults. The steps and their exit codes
 * are secure_helper's bigfree(), run in a fresh exec (a forked child of
 * this program inherits its heap) with a long decay_ms, so that only the
 * frees themselves purge. */
#include "api_util.h"

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <string>

TEST_CASE("a freed 600 KiB block goes back at once in a small heap, a realloc's old block does not",
	  "[prompt_purge]")
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
		char env[] = "EBB_OPTIONS=decay_ms=60000";
		char mode[] = "bigfree", secure[] = "0";
		char *argv[] = {const_cast<char *>(EBB_SECURE_HELPER), mode, secure, nullptr};
		char *envp[] = {env, nullptr};
		execve(EBB_SECURE_HELPER, argv, envp);
		_exit(127);
	}
	close(out[1]);
	std::string text;
	char buf[1024];
	ssize_t n;
	while ((n = read(out[0], buf, sizeof buf)) > 0) text.append(buf, (size_t)n);
	close(out[0]);
	int status = 0;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	INFO("status " << status << ": " << text);
	CHECK(WIFEXITED(status));
	CHECK(WEXITSTATUS(status) == 0);
}
