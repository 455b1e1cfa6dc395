/* test_prof_realloc_runs.cpp: realloc's profiler copy (core/api/api.c,
 * realloc_slow_prof) answers a page run from its first look. A live sample
 * of a class is answered from the profiler's cache of listed samples
 * (prof_realloc_cached) without looking at its span, and an unsampled page
 * run is resized or moved with the span realloc_run_span found (no second
 * look in block_info). (A sampled move to a small block is an inner
 * sample, not a page run: the sampled runs here are the moves past
 * EBB_SMALL_MAX, samples of no class.) Run by the ctest
 * api.prof_realloc_runs with EBB_OPTIONS=prof=1,prof_sample=65536: some
 * strings sampled, most not, through both entries (realloc, patched at
 * start-up, and ebb_realloc). */
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <vector>

#include "api_util.h"

namespace {

/* The byte at offset i of string k: differs between strings and along one. */
unsigned char prof_runs_byte(size_t k, size_t i)
{
	return (unsigned char)(k * 131 + i * 7 + (i >> 9));
}

} // namespace

TEST_CASE("strings grown through page runs with prof on keep every byte, sampled or not, and shrink back",
	  "[prof_realloc_runs]")
{
	const size_t strings = 24, top = 192 * 1024;
	for (int entry = 0; entry < 2; entry++) {
		/* realloc is glibc's in a build without the standard names
		 * (the TSan tree): its usable size is then glibc's too. */
		void *(*re)(void *, size_t) = entry == 0 ? realloc : ebb_realloc;
		size_t (*usable)(void *) = entry == 0 ? +[](void *p) { return malloc_usable_size(p); }
							: +[](void *p) { return ebb_malloc_usable_size(p); };
		std::vector<unsigned char *> s(strings, nullptr);
		std::vector<size_t> len(strings, 0);
		uint64_t rng = 0x9e3779b97f4a7c15ull + (uint64_t)entry;
		bool growing = true;
		while (growing) {
			growing = false;
			for (size_t k = 0; k < strings; k++) {
				if (len[k] >= top)
					continue;
				growing = true;
				rng = rng * 6364136223846793005ull + 1442695040888963407ull;
				size_t n = len[k] + 1 + (size_t)(rng >> 58); /* 1-64 bytes more */
				auto *q = static_cast<unsigned char *>(re(s[k], n));
				REQUIRE(q != nullptr);
				/* Only the new bytes are written: the old ones are
				 * checked where the string reaches a page boundary. */
				for (size_t i = len[k]; i < n; i++)
					q[i] = prof_runs_byte(k, i);
				if (len[k] / 4096 != n / 4096)
					for (size_t i = 0; i < n; i++)
						if (q[i] != prof_runs_byte(k, i))
							FAIL("string " << k << " byte " << i << " of " << n);
				s[k] = q;
				len[k] = n;
			}
		}
		for (size_t k = 0; k < strings; k++) {
			REQUIRE(usable(s[k]) >= len[k]);
			/* Shrunk below half into a class: moved, its prefix kept. */
			size_t n = 5000 + k;
			auto *q = static_cast<unsigned char *>(re(s[k], n));
			REQUIRE(q != nullptr);
			for (size_t i = 0; i < n; i++)
				REQUIRE(q[i] == prof_runs_byte(k, i));
			re(q, 0);
		}
	}
}
