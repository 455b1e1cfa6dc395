/* fuzz_api.c: a libFuzzer target for the prefixed API. The input is read as
 * a program of API calls against 32 slots: malloc, calloc, realloc,
 * reallocarray, the aligned calls, frees of every kind, in any order, some of
 * them on a second thread. A shadow model keeps, per slot, the size asked
 * for, the alignment promised and a seed; every block is checked against it
 * before it is touched (contents, alignment, usable size >= size, calloc's
 * zeros) and refilled after. Impossible requests must fail with the right
 * errno. The shadow is the oracle: any mismatch abort()s, which libFuzzer
 * reports as a crash with the input that caused it; ASan and UBSan watch the
 * allocator itself.
 *
 * Each input ends by freeing every slot, so inputs are independent (the
 * allocator's own state carries over, as in a long-running program). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ebbmalloc.h"

#define SLOTS 32
#define MAX_LIVE_BYTES ((size_t)96 << 20) /* keeps a run far from the RSS limit */
#define CHECK_EDGE 4096                   /* bytes checked at each end of a big block */

typedef struct slot {
	unsigned char *p;
	size_t size;  /* bytes asked for */
	size_t align; /* alignment promised */
	uint32_t seed;
} slot_t;

static slot_t slots[SLOTS];
static size_t live_bytes;

#define FAIL(...)                                                 \
	do {                                                      \
		fprintf(stderr, "fuzz_api: " __VA_ARGS__);        \
		fputc('\n', stderr);                              \
		abort();                                          \
	} while (0)

/* ---- the input ------------------------------------------------------- */
typedef struct input {
	const uint8_t *d;
	size_t n, i;
} input_t;

static unsigned take(input_t *in)
{
	return in->i < in->n ? in->d[in->i++] : 0;
}

/* A size: mostly small, sometimes page runs, rarely huge blocks (the
 * first byte's top bits choose the range). */
static size_t take_size(input_t *in)
{
	unsigned a = take(in), b = take(in);
	switch (a >> 6) {
	case 0: return b & 63;                                   /* 0 .. 63 */
	case 1: return ((size_t)(a & 63) << 8 | b) & 0x3fff;      /* .. 16 KiB */
	case 2: return ((size_t)(a & 63) << 11 | (size_t)b << 3) + 16384; /* .. 145 KiB */
	default:
		if ((a & 0x38) != 0x38)
			return ((size_t)(a & 7) << 15 | (size_t)b << 7) + 32768; /* .. 288 KiB */
		return (size_t)(a & 7) << 20 | (size_t)b << 12 | take(in); /* .. 8 MiB */
	}
}

static size_t take_align(input_t *in)
{
	return (size_t)1 << (take(in) % 22); /* 1 B .. 2 MiB */
}

/* ---- the shadow ------------------------------------------------------ */
static unsigned char pattern(uint32_t seed, size_t i)
{
	uint32_t x = seed ^ (uint32_t)(i >> 6) * 0x9e3779b9u;
	return (unsigned char)((x >> 11) + i);
}

static void fill_range(const slot_t *s, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		s->p[i] = pattern(s->seed, i);
}

static void fill(const slot_t *s)
{
	if (s->size <= 2 * CHECK_EDGE) {
		fill_range(s, 0, s->size);
	} else {
		fill_range(s, 0, CHECK_EDGE);
		fill_range(s, s->size - CHECK_EDGE, s->size);
	}
}

static void check_range(const slot_t *s, size_t from, size_t to, const char *when)
{
	for (size_t i = from; i < to; i++)
		if (s->p[i] != pattern(s->seed, i))
			FAIL("%s: block %p (size %zu) byte %zu is %#x, expected %#x", when, (void *)s->p, s->size, i,
			     s->p[i], pattern(s->seed, i));
}

/* Checks the first `upto` bytes the shadow knows (both ends of big blocks). */
static void check(const slot_t *s, size_t upto, const char *when)
{
	if (upto > s->size)
		upto = s->size;
	if (s->size <= 2 * CHECK_EDGE) {
		check_range(s, 0, upto, when);
		return;
	}
	check_range(s, 0, upto < CHECK_EDGE ? upto : CHECK_EDGE, when);
	if (upto > s->size - CHECK_EDGE)
		check_range(s, s->size - CHECK_EDGE, upto, when);
}

static void check_fresh(const void *p, size_t size, size_t align, const char *call)
{
	if (((uintptr_t)p & 15) != 0 || ((uintptr_t)p & (align - 1)) != 0)
		FAIL("%s(size %zu, align %zu) returned %p: misaligned", call, size, align, p);
	size_t u = ebb_malloc_usable_size(p);
	if (u < size)
		FAIL("%s(size %zu) returned %p with usable size %zu", call, size, p, u);
}

static void adopt(slot_t *s, void *p, size_t size, size_t align, uint32_t seed)
{
	s->p = p;
	s->size = size;
	s->align = align < 16 ? 16 : align;
	s->seed = seed;
	live_bytes += size;
	fill(s);
}

static void forget(slot_t *s)
{
	live_bytes -= s->size;
	memset(s, 0, sizeof *s);
}

/* ---- the second thread: runs one call at a time, synchronously, so that a
 * run is reproducible; its thread cache is its own. ----------------------- */
enum remote_op { R_NONE, R_FREE, R_REALLOC, R_MALLOC };
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	enum remote_op op;
	void *p;
	size_t size;
	void *result;
	int err;
	bool done;
} remote = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, R_NONE, NULL, 0, NULL, 0, false};

static void *remote_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&remote.lock);
	for (;;) {
		while (remote.op == R_NONE)
			pthread_cond_wait(&remote.cv, &remote.lock);
		errno = 0;
		switch (remote.op) {
		case R_FREE: ebb_free(remote.p); break;
		case R_REALLOC: remote.result = ebb_realloc(remote.p, remote.size); break;
		case R_MALLOC: remote.result = ebb_malloc(remote.size); break;
		default: break;
		}
		remote.err = errno;
		remote.op = R_NONE;
		remote.done = true;
		pthread_cond_broadcast(&remote.cv);
	}
	return NULL;
}

static void *run_remote(enum remote_op op, void *p, size_t size, int *err)
{
	static bool started;
	pthread_mutex_lock(&remote.lock);
	if (!started) {
		pthread_t tid;
		if (pthread_create(&tid, NULL, remote_main, NULL) != 0)
			FAIL("cannot start the second thread");
		pthread_detach(tid);
		started = true;
	}
	remote.op = op;
	remote.p = p;
	remote.size = size;
	remote.result = NULL;
	remote.done = false;
	pthread_cond_broadcast(&remote.cv);
	while (!remote.done)
		pthread_cond_wait(&remote.cv, &remote.lock);
	void *r = remote.result;
	*err = remote.err;
	pthread_mutex_unlock(&remote.lock);
	return r;
}

/* ---- the calls ------------------------------------------------------- */
static void do_alloc(slot_t *s, input_t *in, unsigned kind, uint32_t seed)
{
	size_t size = take_size(in), align = 16;
	if (live_bytes + size > MAX_LIVE_BYTES)
		return;
	void *p = NULL;
	const char *call = "malloc";
	errno = 0;
	switch (kind % 9) {
	case 0: p = ebb_malloc(size); break;
	case 1: {
		size_t elem = (size_t)1 << (take(in) % 5);
		size = (size + elem - 1) / elem * elem;
		p = ebb_calloc(size / elem, elem);
		call = "calloc";
		/* every byte of small blocks; of big ones both ends and one
		 * word in each page */
		for (size_t i = 0; p != NULL && i < size; i++) {
			if (((unsigned char *)p)[i] != 0)
				FAIL("calloc(%zu): byte %zu is not zero", size, i);
			if (i == CHECK_EDGE && size > 3 * CHECK_EDGE) {
				for (; i + CHECK_EDGE < size - CHECK_EDGE; i += 4096)
					if (((unsigned char *)p)[i] != 0)
						FAIL("calloc(%zu): byte %zu is not zero", size, i);
				i = size - CHECK_EDGE - 1;
			}
		}
		break;
	}
	case 2: p = ebb_realloc(NULL, size); call = "realloc(NULL)"; break;
	case 3: {
		align = take_align(in);
		if (align < sizeof(void *))
			align = sizeof(void *);
		int rc = ebb_posix_memalign(&p, align, size);
		if (rc != 0)
			FAIL("posix_memalign(%zu, %zu) returned %d", align, size, rc);
		call = "posix_memalign";
		break;
	}
	case 4: align = take_align(in); p = ebb_aligned_alloc(align, size); call = "aligned_alloc"; break;
	case 5: align = take_align(in); p = ebb_memalign(align, size); call = "memalign"; break;
	case 6: align = 4096; p = ebb_valloc(size); call = "valloc"; break;
	case 7: align = 4096; size = size ? (size + 4095) & ~(size_t)4095 : 4096; p = ebb_pvalloc(size);
		call = "pvalloc"; break;
	default: {
		int err;
		p = run_remote(R_MALLOC, NULL, size, &err); /* made there, used and freed here */
		errno = err;
		call = "malloc (second thread)";
	}
	}
	if (p == NULL)
		FAIL("%s(%zu) returned NULL (errno %d)", call, size, errno);
	check_fresh(p, size, align, call);
	adopt(s, p, size, align, seed);
}

static void do_realloc(slot_t *s, input_t *in, bool remote_thread, bool array)
{
	size_t size = take_size(in);
	if (live_bytes + size > MAX_LIVE_BYTES + s->size)
		return;
	check(s, s->size, "before realloc");
	void *q;
	int err = 0;
	errno = 0;
	if (remote_thread)
		q = run_remote(R_REALLOC, s->p, size, &err);
	else if (array && size % 8 == 0)
		q = ebb_reallocarray(s->p, size / 8, 8);
	else
		q = ebb_realloc(s->p, size);
	if (size == 0) { /* freed */
		if (q != NULL)
			FAIL("realloc(p, 0) returned %p, expected NULL", q);
		forget(s);
		return;
	}
	if (q == NULL)
		FAIL("realloc(%p, %zu) returned NULL (errno %d)", (void *)s->p, size, remote_thread ? err : errno);
	check_fresh(q, size, 16, "realloc");
	size_t keep = s->size < size ? s->size : size;
	slot_t moved = *s;
	moved.p = q;
	check(&moved, keep, "after realloc");
	live_bytes += size - s->size;
	s->p = q;
	/* The kept bytes carry the old pattern; the new tail gets the same
	 * seed's pattern, so the whole block stays checkable. */
	size_t old = s->size;
	s->size = size;
	s->align = 16;
	if (size > 2 * CHECK_EDGE)
		fill(s); /* the tail window moved */
	else if (old > 2 * CHECK_EDGE)
		fill_range(s, 0, size); /* the middle was never written */
	else if (size > old)
		fill_range(s, old, size);
}

static void do_free(slot_t *s, unsigned how)
{
	check(s, s->size, "before free");
	int err;
	switch (how % 5) {
	case 0: ebb_free(s->p); break;
	case 1: ebb_free_sized(s->p, s->size); break;
	case 2: ebb_free_aligned_sized(s->p, s->align, s->size); break;
	case 3: run_remote(R_FREE, s->p, 0, &err); break;
	default:
		if (ebb_realloc(s->p, 0) != NULL)
			FAIL("realloc(p, 0) did not return NULL");
	}
	forget(s);
}

/* Requests that must fail, with the errno the contract names. */
static void do_impossible(input_t *in)
{
	size_t huge = SIZE_MAX - (take(in) << 12);
	void *p;
	errno = 0;
	if ((p = ebb_malloc(huge)) != NULL || errno != ENOMEM)
		FAIL("malloc(%zu) returned %p, errno %d", huge, p, errno);
	errno = 0;
	if ((p = ebb_calloc(huge / 2 + 2, 3)) != NULL || errno != ENOMEM)
		FAIL("calloc overflow returned %p, errno %d", p, errno);
	errno = 0;
	if ((p = ebb_aligned_alloc(48, 64)) != NULL || errno != EINVAL)
		FAIL("aligned_alloc(48) returned %p, errno %d", p, errno);
	if (ebb_posix_memalign(&p, 24, 64) != EINVAL)
		FAIL("posix_memalign(24) did not return EINVAL");
	slot_t *s = &slots[take(in) % SLOTS];
	if (s->p != NULL) {
		errno = 0;
		if ((p = ebb_realloc(s->p, huge)) != NULL || errno != ENOMEM)
			FAIL("realloc(p, %zu) returned %p, errno %d", huge, p, errno);
		check(s, s->size, "after a failed realloc");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	input_t in = {data, size, 0};
	uint32_t serial = 0;
	while (in.i < in.n) {
		unsigned op = take(&in);
		slot_t *s = &slots[take(&in) % SLOTS];
		serial++;
		switch (op % 16) {
		case 0: case 1: case 2: case 3: case 4: case 5:
			if (s->p == NULL)
				do_alloc(s, &in, op / 16, serial * 2654435761u);
			else
				do_free(s, op / 16);
			break;
		case 6: case 7: case 8:
			if (s->p != NULL)
				do_realloc(s, &in, (op / 16) % 4 == 3, (op / 16) % 4 == 2);
			else
				do_alloc(s, &in, op / 16, serial * 2654435761u);
			break;
		case 9: case 10:
			if (s->p != NULL)
				check(s, s->size, "check");
			break;
		case 11:
			if (s->p != NULL && ebb_malloc_usable_size(s->p) < s->size)
				FAIL("usable size of %p dropped below %zu", (void *)s->p, s->size);
			break;
		case 12: {
			/* swap two slots: blocks get freed in another order */
			slot_t *t = &slots[take(&in) % SLOTS], tmp = *s;
			*s = *t;
			*t = tmp;
			break;
		}
		case 13:
			do_impossible(&in);
			break;
		case 14:
			if (take(&in) == 0x7f)
				ebb_trim();
			break;
		default:
			if (s->p != NULL)
				do_free(s, 3); /* on the second thread */
			break;
		}
	}
	for (unsigned i = 0; i < SLOTS; i++)
		if (slots[i].p != NULL)
			do_free(&slots[i], i);
	if (live_bytes != 0)
		FAIL("shadow bookkeeping: %zu live bytes after freeing everything", live_bytes);
	return 0;
}
