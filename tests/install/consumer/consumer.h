/* consumer.h: the checks both consumers (C and C++) make that malloc is
 * ebbmalloc's: a malloc'd block is known to ebb_malloc_usable_size with the
 * block size of its class, and a large malloc and free move ebb_stats_get's
 * `allocated`. Prints what it checked; exits non-zero on the first failure. */
#ifndef EBB_CONSUMER_H
#define EBB_CONSUMER_H

#include <ebbmalloc.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONSUMER_CHECK(cond)                                                  \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "consumer: check failed: %s\n", #cond); \
			exit(1);                                              \
		}                                                             \
	} while (0)

static void consumer_check_malloc(const char *who)
{
	/* 100 bytes: the class is 112 bytes (16-byte steps); glibc would say 104. */
	void *volatile small = malloc(100);
	CONSUMER_CHECK(small != NULL);
	size_t usable = ebb_malloc_usable_size(small);
	CONSUMER_CHECK(usable == 112);
	CONSUMER_CHECK(malloc_usable_size(small) == usable);
	free(small);

	const size_t big = (size_t)24 << 20;
	ebb_stats_t before, during, after;
	ebb_stats_get(&before);
	char *volatile p = (char *)malloc(big);
	CONSUMER_CHECK(p != NULL);
	memset(p, 7, big);
	ebb_stats_get(&during);
	free(p);
	ebb_stats_get(&after);
	CONSUMER_CHECK(during.allocated >= before.allocated + big);
	CONSUMER_CHECK(after.allocated + big <= during.allocated + (1 << 20)); /* small blocks come and go */

	long long decay = -1;
	CONSUMER_CHECK(ebb_option_get("decay_ms", &decay) == 0 && decay == 500);
	printf("%s: malloc is ebbmalloc's (usable_size(malloc(100)) = %zu, a %zu MiB block moved "
	       "allocated by %llu MiB), version %d.%d\n",
	       who, usable, big >> 20,
	       (unsigned long long)((during.allocated - before.allocated) >> 20), EBB_VERSION_MAJOR,
	       EBB_VERSION_MINOR);
}

#endif
