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

#include <string>

using namespace apitest;

TEST_CASE("a freed 600 KiB block goes back at once in a small heap, a realloc's old block does not",
	  "[prompt_purge]")
{
	std::string text;
	int status = run_fresh(EBB_SECURE_HELPER, "bigfree", "EBB_OPTIONS=decay_ms=60000", &text);
	INFO("status " << status << ": " << text);
	CHECK(WIFEXITED(status));
	CHECK(WEXITSTATUS(status) == 0);
}
