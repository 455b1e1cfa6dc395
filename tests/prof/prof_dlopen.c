/* prof_dlopen.c: libebbmalloc.so dlopen()ed into a program not linked with
 * it (tests/prof/check_profile.py dlopen): dl_site keeps 16 MiB through the
 * prefixed API, then the profile is written to OUT.
 *
 *   prof_dlopen LIB OUT */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef void *(*malloc_fn)(size_t);
typedef int (*dump_fn)(const char *);

static malloc_fn dl_malloc;

__attribute__((noinline, used)) void dl_site(void **keep, size_t n, size_t size)
{
	for (size_t i = 0; i < n; i++) {
		keep[i] = dl_malloc(size);
		if (keep[i] != NULL)
			memset(keep[i], 1, 1);
	}
}

static void *keep[16384];

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	dl_malloc = (malloc_fn)dlsym(h, "ebb_malloc");
	dump_fn dump = (dump_fn)dlsym(h, "ebb_prof_dump");
	if (dl_malloc == NULL || dump == NULL)
		return 1;
	dl_site(keep, 16384, 1024); /* 16 MiB */
	if (dump(argv[2]) != 0) {
		perror("ebb_prof_dump");
		return 1;
	}
	return 0;
}
