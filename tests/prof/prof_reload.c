/* prof_reload.c: stacks through a library that replaced a dlclose'd one at
 * the same address (tests/prof/check_profile.py reload). Every allocation
 * is sampled (prof_sample=1):
 *
 *   1. LIB_A is loaded, 64 blocks are allocated from inside its
 *      reload_site (the own walker caches the rule of that frame) and freed
 *      again, and LIB_A is closed;
 *   2. LIB_B, whose reload_site returns at the same offset with another
 *      rule (prof_reload_lib.c), is loaded, normally where LIB_A was, and
 *      64 blocks are allocated through it and kept;
 *   3. the profile is written to OUT, and "same address" or "moved" is
 *      printed, so that the check knows whether the case was met.
 *
 *   prof_reload LIB_A LIB_B OUT */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>

#include "ebbmalloc.h"

typedef void (*site_fn)(void (*)(void));

static void *blocks[64];
static unsigned nblocks;

__attribute__((noinline, used)) void reload_alloc(void)
{
	blocks[nblocks++] = ebb_malloc(4096);
}

/* Calls reload_site of `path` 64 times; its load address into *base. */
static int reload_run(const char *path, uintptr_t *base)
{
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return -1;
	}
	site_fn site = (site_fn)dlsym(h, "reload_site");
	struct link_map *lm = NULL;
	if (site == NULL || dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0)
		return -1;
	*base = (uintptr_t)lm->l_addr;
	nblocks = 0;
	for (int i = 0; i < 64; i++)
		site(reload_alloc);
	return dlclose(h) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	uintptr_t a, b;
	if (reload_run(argv[1], &a) != 0)
		return 1;
	for (unsigned i = 0; i < nblocks; i++)
		ebb_free(blocks[i]);
	/* b's blocks stay live; b stays loaded (its mapping names the frames). */
	void *keep = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
	if (keep == NULL || reload_run(argv[2], &b) != 0)
		return 1;
	if (ebb_prof_dump(argv[3]) != 0) {
		perror("ebb_prof_dump");
		return 1;
	}
	printf("%s %#lx %#lx\n", a == b ? "same address" : "moved", (unsigned long)a, (unsigned long)b);
	return 0;
}
