/* vg_bugs.c: one deliberate memory bug per run (argv[1]), for memcheck to
 * catch through ebbmalloc's client requests (core/base/track.h). Run by
 * vg_run.sh with libebbmalloc.so preloaded; the program itself knows nothing
 * of ebbmalloc. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	/* Make sure the bug happens to one of ebbmalloc's blocks. */
	if (dlsym(RTLD_DEFAULT, "ebb_stats_get") == NULL) {
		fprintf(stderr, "vg_bugs: libebbmalloc is not preloaded\n");
		return 3;
	}
	const char *bug = argv[1];
	if (strcmp(bug, "uaf") == 0) {
		uint64_t *volatile p = malloc(256);
		memset(p, 1, 256);
		free(p);
		p[8] = 42; /* 64 bytes inside the freed block */
	} else if (strcmp(bug, "overflow") == 0) {
		char *volatile p = malloc(100);
		memset(p, 1, 100);
		p[100] = 1; /* one past the end: inside the 112-byte class, past the request */
		free(p);
	} else if (strcmp(bug, "uninit") == 0) {
		char *volatile p = malloc(64);
		if (p[10] == 3) /* never written */
			puts("three");
		free(p);
	} else if (strcmp(bug, "double_free") == 0) {
		char *volatile p = malloc(48);
		free(p);
		free(p);
	} else {
		return 2;
	}
	return 0;
}
