/* secure_helper.c: the program of api.secure_env, run as a setuid or setgid
 * binary (so the kernel sets AT_SECURE) with an EBB_OPTIONS its invoker
 * chose. Only the ebb_* names: the same in every build.
 *
 *   secure_helper options     prints "secure=S on_error=E interval=I decay=D",
 *                             allocates and frees for a while (a timeline row
 *                             would be due), exits 0
 *   secure_helper doublefree  frees a block twice (on_error=abort kills it)
 *
 * Exit 77: the kernel did not set AT_SECURE although the test expected it. */
#include <ebbmalloc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>

static long long option(const char *name)
{
	long long v = -1;
	ebb_option_get(name, &v);
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	int want_secure = atoi(argv[2]);
	int secure = getauxval(AT_SECURE) != 0;
	if (secure != want_secure)
		return 77;
	if (strcmp(argv[1], "options") == 0) {
		printf("secure=%d on_error=%lld interval=%lld decay=%lld\n", secure, option("on_error"),
		       option("stats_interval_ms"), option("decay_ms"));
		fflush(stdout);
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			void *p[64];
			for (int i = 0; i < 64; i++)
				p[i] = ebb_malloc((size_t)(i + 1) * 1024);
			for (int i = 0; i < 64; i++)
				ebb_free(p[i]);
			clock_gettime(CLOCK_MONOTONIC, &t);
		} while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 100);
		return 0;
	}
	if (strcmp(argv[1], "doublefree") == 0) {
		void *p = ebb_malloc(64);
		ebb_free(p);
		ebb_free(p);
		return 0; /* on_error=warn: reported, and the program goes on */
	}
	return 2;
}
