/* startup_ctorlib.h: what the constructor of libapi_ctorlib (startup_ctorlib.c)
 * allocated while the program was being loaded, for test_startup.cpp. */
#ifndef EBB_TESTS_API_STARTUP_CTORLIB_H
#define EBB_TESTS_API_STARTUP_CTORLIB_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define API_CTOR_BLOCKS 12

struct api_ctor_record {
	int ran;                       /* the constructor ran */
	int errors;                    /* checks that failed inside it */
	int thread_ok;                 /* a thread started from it allocated fine */
	void *block[API_CTOR_BLOCKS];  /* kept for the test to check and free */
	size_t size[API_CTOR_BLOCKS];
	unsigned char fill[API_CTOR_BLOCKS];
	int from_malloc[API_CTOR_BLOCKS]; /* 1: standard name (free it with free) */
};

__attribute__((visibility("default"))) const struct api_ctor_record *api_ctorlib_record(void);

#ifdef __cplusplus
}
#endif

/* Allocates the blocks of *r (with the standard names too if use_std) and
 * runs a thread that allocates; used by the library's constructor and by the
 * test program's own. Defined here, static, so each has its own copy. */
#include <ebbmalloc.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifndef EBB_TEST_OVERRIDE
#define EBB_TEST_OVERRIDE 0
#endif

static inline void *api_ctor_thread(void *arg)
{
	int *ok = (int *)arg;
	int good = 1;
	for (int i = 0; i < 100; i++) {
		size_t n = (size_t)i * 997 + 1;
		unsigned char *p = (unsigned char *)ebb_malloc(n);
		if (!p) {
			good = 0;
			continue;
		}
		memset(p, i, n);
		if (p[0] != (unsigned char)i || p[n - 1] != (unsigned char)i) good = 0;
		ebb_free(p);
#if EBB_TEST_OVERRIDE
		p = (unsigned char *)malloc(n);
		if (!p) good = 0;
		free(p);
#endif
	}
	*ok = good;
	return NULL;
}

static inline void api_ctor_keep(struct api_ctor_record *r, int i, void *p, size_t n, int from_malloc)
{
	r->block[i] = p;
	r->size[i] = n;
	r->fill[i] = (unsigned char)(0x30 + i);
	r->from_malloc[i] = from_malloc;
	if (!p) {
		r->errors++;
		return;
	}
	if (ebb_malloc_usable_size(p) < n) r->errors++;
	memset(p, r->fill[i], n);
}

static inline void api_ctor_allocate(struct api_ctor_record *r, int use_std)
{
	int i = 0;
	void *p = NULL;
	(void)use_std;
	/* the standard names first: in EBB_OVERRIDE builds malloc(24) is the
	 * first allocation of the constructor */
#if EBB_TEST_OVERRIDE
	if (use_std) {
		api_ctor_keep(r, i++, malloc(24), 24, 1);
		api_ctor_keep(r, i++, calloc(3, 1000), 3000, 1);
		api_ctor_keep(r, i++, realloc(NULL, 70000), 70000, 1);
		p = NULL;
		if (posix_memalign(&p, 256, 1000) != 0) p = NULL;
		api_ctor_keep(r, i++, p, 1000, 1);
		api_ctor_keep(r, i++, aligned_alloc(1u << 20, 6u << 20), 6u << 20, 1);
	}
#endif
	api_ctor_keep(r, i++, ebb_malloc(1), 1, 0);
	api_ctor_keep(r, i++, ebb_malloc(5000), 5000, 0);
	api_ctor_keep(r, i++, ebb_calloc(100, 400), 40000, 0);
	api_ctor_keep(r, i++, ebb_aligned_alloc(4096, 300000), 300000, 0);
	api_ctor_keep(r, i++, ebb_realloc(NULL, 5u << 20), 5u << 20, 0);
	if (ebb_posix_memalign(&p, 64, 100) != 0) p = NULL;
	api_ctor_keep(r, i++, p, 100, 0);
	/* freed at once */
	for (int k = 0; k < 50; k++) {
		void *q = ebb_malloc((size_t)k * 300);
		if (!q) r->errors++;
		ebb_free(q);
	}
	pthread_t t;
	if (pthread_create(&t, NULL, api_ctor_thread, &r->thread_ok) != 0 || pthread_join(t, NULL) != 0)
		r->errors++;
	r->ran = 1;
}

#endif
