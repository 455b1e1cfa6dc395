/* prof_sites.c: programs with known allocation sites for the heap profiler
 * tests (tests/prof/check_profile.py runs them and reads what pprof says).
 *
 *   prof_sites two_sites OUT   site_a keeps 90 MiB, site_b 10 MiB live (plus
 *                              churn freed at once); writes the profile to OUT
 *   prof_sites leak            leak_here keeps 8 MiB at exit, churn frees all
 *                              (run with prof_leaks=1)
 *   prof_sites fork OUT        parent_site 6 MiB, then fork: the child adds
 *                              child_site 12 MiB and writes OUT.child, the parent
 *                              writes OUT.parent after the child ended
 *   prof_sites realloc OUT     grow_site keeps 30 MiB of blocks grown by realloc
 *                              from 1 KiB to 64 KiB (each step moves them);
 *                              shrink_site had 20 MiB of 64 KiB blocks and
 *                              shrank each to 16 B; site_b keeps 10 MiB
 *   prof_sites double_free     frees a sampled block twice (run with
 *                              prof_sample=1): must die by SIGABRT with a
 *                              report naming the address it printed
 *   prof_sites threads OUT     4 threads allocate and free at random, while
 *                              the main thread writes profiles (TSan)
 *   prof_sites sample_aside    (run with prof_sample=1) a fresh sample run of a
 *                              small block leaves a page-run block the free
 *                              pages right of it: the block grows in place
 *   prof_sites sample_realloc  (run with prof_sample=1) a sampled small block
 *                              moves on a realloc past its class's size, as
 *                              the small block would, though its page run
 *                              holds the new size
 *   prof_sites inner_forged    (run with prof_sample=1) frees a pointer 16
 *                              bytes into a sampled small block: must die by
 *                              SIGABRT with a report naming it
 *   prof_sites kept_sizes      (run with prof_sample=1) sample blocks freed at
 *                              one size serve samples of every other size up
 *                              to 32 KiB without the page heap (stats
 *                              large_allocs stays put), never two at once
 *   prof_sites free_paths OUT  blocks from every allocating entry point, freed
 *                              through every freeing one (run with
 *                              prof_sample=1): profiles OUT.0 before, OUT.1
 *                              with them live, OUT.2 after they were freed
 *   prof_sites inner_paths OUT (run with prof_sample=1) sampled small blocks
 *                              (the profiler's inner samples) left through
 *                              a realloc that moves them, one that keeps
 *                              them, another thread's free and ebb_free,
 *                              each with malloc_usable_size of an unsampled
 *                              block: profiles OUT.0 before, OUT.1 with them
 *                              live, OUT.2 after they were freed
 *   prof_sites small           2 threads each allocate, read, write and free
 *                              4 MiB in 64-byte blocks, one at a time (about 8
 *                              samples a thread at the default rate): the
 *                              profiler's own page faults (check_profile.py
 *                              own_faults compares prof=1 with prof=0)
 *   prof_sites patched         4 threads malloc and calloc blocks of 24 B to
 *                              32 KiB (the sizes above 1 KiB take the
 *                              variants' mid path): each calloc'ed block reads
 *                              zero, and each block keeps its thread's bytes
 *                              until freed (a patched load with another
 *                              thread's cache would share blocks)
 *   prof_sites huge_moved OUT  (run with prof_sample=1) a huge block grown by
 *                              realloc until it moves, freed, then blocks of
 *                              another site made and freed at its old address:
 *                              OUT.0 before, OUT.1 with it live, OUT.2 after
 *
 * Built with -O2 -fomit-frame-pointer on purpose: the stacks must come out
 * through DWARF call-frame information, as for distro binaries. Allocates
 * through malloc/free when the library overrides them, else through
 * ebb_malloc/ebb_free (the sanitizer builds). */
#define _GNU_SOURCE /* sched_getcpu, sched_setaffinity (sample_aside) */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ebbmalloc.h"

#if PROF_TEST_OVERRIDE
#define T_MALLOC malloc
#define T_FREE free
#else
#define T_MALLOC ebb_malloc
#define T_FREE ebb_free
#endif
#if PROF_TEST_OVERRIDE
#define T_POSIX_MEMALIGN posix_memalign
#else
#define T_POSIX_MEMALIGN ebb_posix_memalign
#endif

#define NOINLINE __attribute__((noinline, used)) /* exported too (-rdynamic): dladdr names them */

static uint64_t rng = 88172645463325252ull;

static size_t next_size(void)
{
	/* Sizes from 16 B to 64 KiB, small ones more often, as programs do. */
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	unsigned shift = 4 + (unsigned)(rng % 13); /* 16 B .. 64 KiB */
	return ((size_t)1 << shift) + (size_t)(rng >> 40) % ((size_t)1 << shift);
}

typedef struct keep {
	void **ptrs;
	size_t n, cap;
} keep_t;

static void keep_push(keep_t *k, void *p)
{
	if (k->n == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 1024;
		k->ptrs = realloc(k->ptrs, k->cap * sizeof(void *));
		if (k->ptrs == NULL)
			abort();
	}
	k->ptrs[k->n++] = p;
}

static void *checked(void *p)
{
	if (p == NULL) {
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
	memset(p, 1, 1);
	return p;
}

/* Allocates `bytes` in blocks of varied sizes, all kept. */
NOINLINE void site_a(keep_t *k, size_t bytes)
{
	for (size_t done = 0; done < bytes;) {
		size_t n = next_size();
		keep_push(k, checked(T_MALLOC(n)));
		done += n;
	}
}

NOINLINE void site_b(keep_t *k, size_t bytes)
{
	for (size_t done = 0; done < bytes;) {
		size_t n = next_size();
		keep_push(k, checked(T_MALLOC(n)));
		done += n;
	}
}

/* Allocates and frees at once: sampled in the totals, never live. */
/* same_leaf: one allocating function reached from two callers whose
 * frames are alike, so that the allocation's return address and stack
 * pointer are the same from either: only the frames further out tell the
 * two stacks apart (the profiler's replayed stacks must look at them). */
/* same_leaf through posix_memalign, which stores the block after its call
 * of the profiler: its frame is walked and cut off (prof_stack_take). */
static int leaf_memalign;

NOINLINE void same_leaf(keep_t *k, size_t n, int tag)
{
	void *q = NULL;
	if (leaf_memalign && T_POSIX_MEMALIGN(&q, 64, n) != 0)
		abort();
	char *p = checked(leaf_memalign ? q : T_MALLOC(n));
	p[0] = (char)tag;
	keep_push(k, p);
}

static volatile int leaf_calls; /* after the call: no tail call, a frame each */

NOINLINE void leaf_via_a(keep_t *k, size_t n)
{
	same_leaf(k, n, 'a');
	leaf_calls++;
}

NOINLINE void leaf_via_b(keep_t *k, size_t n)
{
	same_leaf(k, n, 'b');
	leaf_calls++;
}

/* in_signal: allocations made in a signal handler, whose stacks pass
 * through the kernel's signal frame, which the own walker leaves to
 * libgcc's unwinder (loaded then, the first time one is needed). */
static keep_t signal_keep;

NOINLINE void signal_site(void)
{
	keep_push(&signal_keep, checked(T_MALLOC(5000)));
}

static void on_signal(int sig)
{
	(void)sig;
	signal_site();
	leaf_calls++;
}

NOINLINE void churn(size_t bytes)
{
	for (size_t done = 0; done < bytes;) {
		size_t n = next_size();
		T_FREE(checked(T_MALLOC(n)));
		done += n;
	}
}

NOINLINE void leak_here(keep_t *k, size_t bytes)
{
	for (size_t done = 0; done < bytes; done += 1024)
		keep_push(k, checked(T_MALLOC(1024)));
}

NOINLINE void parent_site(keep_t *k, size_t bytes)
{
	for (size_t done = 0; done < bytes; done += 4096)
		keep_push(k, checked(T_MALLOC(4096)));
}

NOINLINE void child_site(keep_t *k, size_t bytes)
{
	for (size_t done = 0; done < bytes; done += 2048)
		keep_push(k, checked(T_MALLOC(2048)));
}

#if PROF_TEST_OVERRIDE
#define T_REALLOC realloc
#define T_CALLOC calloc
#else
#define T_REALLOC ebb_realloc
#define T_CALLOC ebb_calloc
#endif

/* Resident pages of this process (/proc/self/statm's second field). */
static long statm_resident_pages(void)
{
	long size = 0, resident = -1;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f != NULL) {
		if (fscanf(f, "%ld %ld", &size, &resident) != 2)
			resident = -1;
		fclose(f);
	}
	return resident;
}

/* Blocks of 64 KiB reached by doubling from 1 KiB: every step moves (a new
 * size class, then a page run), so each is an allocation of its new size. */
NOINLINE void grow_site(keep_t *k, size_t bytes)
{
	for (size_t done = 0; done < bytes; done += 64 << 10) {
		char *p = checked(T_MALLOC(1024));
		for (size_t n = 2048; n <= (64 << 10); n *= 2) {
			p = checked(T_REALLOC(p, n));
			memset(p + n / 2, 2, n / 2);
		}
		keep_push(k, p);
	}
}

/* 64 KiB blocks shrunk to 16 B: what stays live here is 16 B a block. */
NOINLINE void shrink_site(keep_t *k, size_t bytes)
{
	for (size_t done = 0; done < bytes; done += 64 << 10)
		keep_push(k, checked(T_MALLOC(64 << 10)));
	for (size_t i = 0; i < k->n; i++)
		k->ptrs[i] = checked(T_REALLOC(k->ptrs[i], 16));
}

static int dump(const char *path);

#if PROF_TEST_OVERRIDE
/* Exported by the library; C23 and C++ names that glibc 2.36's headers do
 * not declare to a C program. */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);
void *_Znwm(size_t n);         /* operator new(size_t) */
void _ZdlPv(void *p);          /* operator delete(void *) */
void _ZdlPvm(void *p, size_t); /* operator delete(void *, size_t) */
#define F_CALLOC calloc
#define F_ALIGNED aligned_alloc
#define F_MEMALIGN posix_memalign
#define F_FREE_SIZED free_sized
#define F_FREE_ALIGNED free_aligned_sized
#define F_NEW _Znwm
#define F_DELETE _ZdlPv
#define F_DELETE_SIZED _ZdlPvm
#else
#define F_CALLOC ebb_calloc
#define F_ALIGNED ebb_aligned_alloc
#define F_MEMALIGN ebb_posix_memalign
#define F_FREE_SIZED ebb_free_sized
#define F_FREE_ALIGNED ebb_free_aligned_sized
#define F_NEW ebb_malloc
#define F_DELETE ebb_free
#define F_DELETE_SIZED ebb_free_sized
#endif

#define PATHS 7
#define PATH_BLOCKS 8

/* Blocks of each allocating entry point, then freed through each freeing
 * one: a sampled block must leave the profile whichever way it goes (free
 * has no sampling variant: the profiler sees sampled blocks where page runs
 * are freed). Nothing here prints between the dumps (stdio allocates). */
NOINLINE int free_paths(const char *out)
{
	char path[4096];
	void *p[PATHS][PATH_BLOCKS];
	snprintf(path, sizeof path, "%s.0", out);
	if (dump(path))
		return 1;
	for (int i = 0; i < PATH_BLOCKS; i++) {
		p[0][i] = checked(T_MALLOC(3000 + i));
		p[1][i] = checked(F_CALLOC(3, 1000 + i));
		p[2][i] = checked(T_REALLOC(NULL, 5000 + i));
		p[3][i] = checked(F_ALIGNED(64, 4096));
		p[4][i] = checked(F_NEW(6000 + i));
		p[5][i] = checked(F_NEW(9000 + i));
		if (F_MEMALIGN(&p[6][i], 4096, 2000 + i) != 0)
			return 1;
	}
	snprintf(path, sizeof path, "%s.1", out);
	if (dump(path))
		return 1;
	for (int i = 0; i < PATH_BLOCKS; i++) {
		T_FREE(p[0][i]);
		F_FREE_SIZED(p[1][i], 3 * (1000 + i));
		if (T_REALLOC(p[2][i], 0) != NULL)
			return 1;
		F_FREE_ALIGNED(p[3][i], 64, 4096);
		F_DELETE(p[4][i]);
		F_DELETE_SIZED(p[5][i], 9000 + i);
		T_FREE(p[6][i]);
	}
	snprintf(path, sizeof path, "%s.2", out);
	return dump(path);
}

/* inner_paths' other thread: frees the blocks whose array it reads from
 * pipe fds[0], then writes a byte to fds[1]. Started before the first
 * profile and joined after the last: its start's allocations in libc (its
 * TLS), sampled too, stay out of the counts compared. */
static int inner_fds[2][2];

static void *free_all_thread(void *arg)
{
	(void)arg;
	void **p;
	if (read(inner_fds[0][0], &p, sizeof p) != sizeof p)
		return NULL;
	for (int i = 0; i < PATH_BLOCKS; i++)
		T_FREE(p[i]);
	char done = 1;
	if (write(inner_fds[1][1], &done, 1) != 1)
		abort();
	return NULL;
}

/* Sampled small blocks (inner samples, core/process/prof.h) through the
 * paths free_paths does not take: each must leave the profile exactly once
 * (a second drop would wrap the live count). The usable size of each is
 * at least what was asked. Nothing here prints between the dumps. */
NOINLINE int inner_paths(const char *out)
{
	char path[4096];
	void *a[PATH_BLOCKS], *b[PATH_BLOCKS], *c[PATH_BLOCKS], *d[PATH_BLOCKS];
	pthread_t t;
	if (pipe(inner_fds[0]) != 0 || pipe(inner_fds[1]) != 0 || pthread_create(&t, NULL, free_all_thread, NULL) != 0)
		return 5;
	snprintf(path, sizeof path, "%s.0", out);
	if (dump(path))
		return 1;
	for (int i = 0; i < PATH_BLOCKS; i++) {
		a[i] = checked(T_MALLOC(200 + i));
		b[i] = checked(T_MALLOC(300 + i));
		c[i] = checked(T_MALLOC(400 + i));
		d[i] = checked(T_MALLOC(500 + i));
		if (((uintptr_t)c[i] & (4096 - 1)) == 0) /* a page run, not an inner sample */
			return 6;
		if (ebb_malloc_usable_size(a[i]) < 200 + (size_t)i || ebb_malloc_usable_size(d[i]) < 500 + (size_t)i)
			return 2;
		memset(a[i], 'a', 200 + i);
		/* Moves (past its class): the new block is another sample. */
		a[i] = checked(T_REALLOC(a[i], 20000));
		if (((char *)a[i])[199 + i] != 'a')
			return 3;
		/* Stays (its class holds it). */
		if (T_REALLOC(b[i], 290) != b[i])
			return 4;
	}
	snprintf(path, sizeof path, "%s.1", out);
	if (dump(path))
		return 1;
	void **cp = c;
	char done;
	if (write(inner_fds[0][1], &cp, sizeof cp) != sizeof cp || read(inner_fds[1][0], &done, 1) != 1)
		return 5;
	for (int i = 0; i < PATH_BLOCKS; i++) {
		T_FREE(a[i]);
		T_FREE(b[i]);
		ebb_free(d[i]);
	}
	snprintf(path, sizeof path, "%s.2", out);
	int rc = dump(path);
	return pthread_join(t, NULL) != 0 ? 5 : rc;
}

#define MiB ((size_t)1 << 20)

/* A sampled huge block that realloc moves (mremap to a new address, no
 * free between) must take its sample along: else its old address stays
 * listed, live for good, and a later block there is taken for it. Nothing
 * here prints between the dumps. */
NOINLINE void *huge_grow_site(size_t n)
{
	return T_MALLOC(n);
}

NOINLINE void *huge_other_site(size_t n)
{
	return T_MALLOC(n);
}

NOINLINE int huge_moved(const char *out)
{
	char path[4096];
	snprintf(path, sizeof path, "%s.0", out);
	if (dump(path))
		return 1;
	size_t n = 3 * MiB;
	char *p = checked(huge_grow_site(n));
	p[0] = 1;
	int moves = 0;
	for (int i = 0; i < 64 && moves < 3; i++) {
		char *q = checked(T_REALLOC(p, n + MiB));
		if (q[0] != 1)
			return 1;
		if (q != p)
			moves++;
		p = q;
		n += MiB;
	}
	if (moves == 0) {
		fprintf(stderr, "the block never moved\n");
		return 77;
	}
	snprintf(path, sizeof path, "%s.1", out);
	if (dump(path))
		return 1;
	T_FREE(p);
	/* Blocks of another site at and around the old addresses, freed: one
	 * taken for the moved sample would leave the other listed. */
	void *o[16];
	for (int i = 0; i < 16; i++)
		o[i] = checked(huge_other_site(n - (size_t)(i % 4) * MiB));
	for (int i = 0; i < 16; i++)
		T_FREE(o[i]);
	snprintf(path, sizeof path, "%s.2", out);
	return dump(path);
}

static void free_all(keep_t *k)
{
	for (size_t i = 0; i < k->n; i++)
		T_FREE(k->ptrs[i]);
	k->n = 0;
}

static int dump(const char *path)
{
	if (ebb_prof_dump(path) != 0) {
		perror("ebb_prof_dump");
		return 1;
	}
	return 0;
}

#define MiB ((size_t)1 << 20)

static void *thread_main(void *arg)
{
	uint64_t x = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
	void *slots[256] = {0};
	for (int i = 0; i < 200000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		unsigned s = (unsigned)(x % 256);
		if (slots[s]) {
			T_FREE(slots[s]);
			slots[s] = NULL;
		} else {
			slots[s] = checked(T_MALLOC(16 + (size_t)(x >> 32) % 8192));
		}
	}
	for (int s = 0; s < 256; s++)
		T_FREE(slots[s]);
	return NULL;
}

/* prof_sites patched: exit status 1 if a calloc'ed block was not zero, 2 if
 * a block lost its thread's bytes while held. */
static void *patched_worker(void *arg)
{
	static const size_t sizes[] = {24, 1000, 1025, 2048, 5000, 8192, 20000, 32768};
	unsigned char tag = (unsigned char)(uintptr_t)arg;
	struct {
		unsigned char *p;
		size_t n;
	} held[64] = {{0}};
	uintptr_t bad = 0;
	for (int i = 0; i < 40000 && bad == 0; i++) {
		int h = i % 64;
		if (held[h].p != NULL) {
			for (size_t k = 0; k < held[h].n; k += 97)
				if (held[h].p[k] != tag)
					bad = 2;
			T_FREE(held[h].p);
		}
		size_t n = sizes[(i * 7 + tag) % 8];
		unsigned char *p = (i & 1) ? T_CALLOC(1, n) : T_MALLOC(n);
		if (p == NULL)
			abort();
		if (i & 1)
			for (size_t k = 0; k < n; k++)
				if (p[k] != 0)
					bad = 1;
		memset(p, tag, n);
		held[h].p = p;
		held[h].n = n;
	}
	for (int h = 0; h < 64; h++)
		T_FREE(held[h].p);
	return (void *)bad;
}

/* One block at a time, read before it is written (as bench cache-thrash
 * does), so that a sample block's first page is met by a read. */
static NOINLINE void *small_worker(void *arg)
{
	(void)arg;
	for (int i = 0; i < 65536; i++) {
		volatile char *p = T_MALLOC(64);
		if (p == NULL)
			abort();
		char c = p[0];
		p[0] = (char)(c + 1);
		T_FREE((void *)p);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	keep_t a = {0}, b = {0};
	if (argc >= 3 && strcmp(argv[1], "two_sites") == 0) {
		site_a(&a, 90 * MiB);
		churn(50 * MiB);
		site_b(&b, 10 * MiB);
		churn(50 * MiB);
		return dump(argv[2]);
	}
	if (argc >= 3 && strcmp(argv[1], "same_leaf") == 0) {
		/* 3 000 blocks of 1 000 bytes through a, 1 000 through b, in turns;
		 * with a third argument, by posix_memalign. */
		leaf_memalign = argc >= 4;
		for (int i = 0; i < 4000; i++) {
			if (i % 4 != 3)
				leaf_via_a(&a, 1000);
			else
				leaf_via_b(&a, 1000);
		}
		return dump(argv[2]);
	}
	if (argc >= 3 && strcmp(argv[1], "in_signal") == 0) {
		/* 200 blocks of 5 000 bytes from the handler. */
		signal(SIGUSR1, on_signal);
		for (int i = 0; i < 200; i++)
			raise(SIGUSR1);
		return dump(argv[2]);
	}
	if (argc >= 3 && strcmp(argv[1], "realloc") == 0) {
		keep_t c = {0};
		grow_site(&a, 30 * MiB);
		shrink_site(&c, 20 * MiB);
		site_b(&b, 10 * MiB);
		return dump(argv[2]);
	}
	if (argc >= 5 && strcmp(argv[1], "rate") == 0) {
		/* COUNT blocks of SIZE bytes, each freed at once: the profile's
		 * sampled-since-start count is what the draws made of them. */
		size_t size = strtoul(argv[2], NULL, 0);
		long count = strtol(argv[3], NULL, 0);
		for (long i = 0; i < count; i++) {
			char *p = checked(T_MALLOC(size));
			p[0] = (char)i;
			T_FREE(p);
		}
		return dump(argv[4]);
	}
	if (argc >= 3 && strcmp(argv[1], "huge") == 0) {
		/* Requests of sizes no block holds, 2^63 bytes and more among
		 * them (which wrap a signed countdown), through each entry point
		 * that ticks; each must fail with ENOMEM, and 20 000 blocks of
		 * 256 B after each are sampled as usual: a dump per round
		 * (PATH.0 ..), the checker compares their counts. */
		static const size_t sizes[] = {SIZE_MAX, ((size_t)3 << 62), (size_t)1 << 63, ((size_t)1 << 46) + 1};
		char path[4096];
		int round = 0;
		for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
			for (int how = 0; how < 5; how++) {
				size_t n = sizes[i];
				void *q = NULL;
				errno = 0;
				int rc = 0;
				switch (how) {
				case 0: q = T_MALLOC(n); break;
				case 1: rc = T_POSIX_MEMALIGN(&q, 4096, n); break;
				case 2: q = ebb_aligned_alloc(64, n); break;
				case 3: q = ebb_memalign(1 << 20, n); break;
				case 4: q = T_CALLOC(1, n); break;
				}
				if (q != NULL || (how == 1 ? rc : errno) != ENOMEM) {
					fprintf(stderr, "size %zu entry %d: %p, error %d\n", n, how, q,
						how == 1 ? rc : errno);
					return 2;
				}
				for (int k = 0; k < 20000; k++) {
					char *b = checked(T_MALLOC(256));
					b[0] = (char)k;
					T_FREE(b);
				}
				snprintf(path, sizeof path, "%s.%d", argv[2], round++);
				if (dump(path) != 0)
					return 1;
			}
		return 0;
	}
	if (argc >= 4 && strcmp(argv[1], "sizes") == 0) {
		/* A block of each SIZE, from one site, all live at the dump. */
		for (int i = 3; i < argc; i++) {
			char *p = checked(T_MALLOC(strtoul(argv[i], NULL, 0)));
			p[0] = (char)i;
		}
		return dump(argv[2]);
	}
	if (argc >= 2 && strcmp(argv[1], "small") == 0) {
		pthread_t t[2];
		for (int i = 0; i < 2; i++)
			if (pthread_create(&t[i], NULL, small_worker, NULL) != 0)
				return 1;
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "double_free") == 0) {
		/* The first free keeps the block for the next sample: the second
		 * must still be caught, and the block never handed out twice. */
		char *p = checked(T_MALLOC(3000));
		printf("block %p\n", (void *)p);
		fflush(stdout);
		T_FREE(p);
		T_FREE(p);
		char *q = checked(T_MALLOC(3000)), *r = checked(T_MALLOC(3000));
		printf("survived: %p %p\n", (void *)q, (void *)r);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "inner_forged") == 0) {
		/* A pointer inside a sampled small block (an inner sample's
		 * block) that is not the sample's: reported as bad, not taken
		 * for the sample, which stays live and is freed after. */
		char *p = checked(T_MALLOC(3000));
		printf("block %p\n", (void *)(p + 16));
		fflush(stdout);
		T_FREE(p + 16);
		T_FREE(p);
		printf("survived\n");
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "kept_sizes") == 0) {
		/* Every allocation is sampled: 8 live sample blocks of 32 KiB
		 * (page runs: above the inner samples' sizes), freed (kept),
		 * then rounds of 8 of other sizes, runs of several sizes among
		 * inner samples. Each round must be served by the kept runs (a
		 * sample taking the page heap for a size not kept split its
		 * dirty runs: prof.c), and the 8 blocks live at once must not
		 * overlap. */
		static const size_t sizes[] = {16, 32760, 3000, 32753, 9000, 32768, 25000, 32767};
		enum { N = 8 };
		char *b[N];
		printf("kept_sizes\n"); /* stdout's buffer before the counts */
		fflush(stdout);
		for (int i = 0; i < N; i++)
			b[i] = checked(T_MALLOC(32768));
		for (int i = 0; i < N; i++)
			T_FREE(b[i]);
		ebb_stats_t st;
		ebb_stats_get(&st);
		uint64_t before = st.large_allocs;
		for (int round = 0; round < 64; round++) {
			for (int i = 0; i < N; i++) {
				size_t n = sizes[(unsigned)(i + round) % N];
				b[i] = checked(T_MALLOC(n));
				memset(b[i], 'a' + i, n);
			}
			for (int i = 0; i < N; i++) {
				size_t n = sizes[(unsigned)(i + round) % N];
				if (b[i][0] != 'a' + i || b[i][n - 1] != 'a' + i) {
					printf("round %d: block %d (%p) was overwritten\n", round, i, (void *)b[i]);
					return 1;
				}
			}
			for (int i = 0; i < N; i++)
				T_FREE(b[i]);
		}
		ebb_stats_get(&st);
		printf("large_allocs before %llu after %llu\n", (unsigned long long)before,
		       (unsigned long long)st.large_allocs);
		return st.large_allocs == before ? 0 : 1;
	}
	if (argc >= 2 && strcmp(argv[1], "patched") == 0) {
		pthread_t t[4];
		for (uintptr_t i = 0; i < 4; i++)
			if (pthread_create(&t[i], NULL, patched_worker, (void *)(i + 1)) != 0)
				abort();
		uintptr_t worst = 0;
		for (int i = 0; i < 4; i++) {
			void *r;
			pthread_join(t[i], &r);
			if ((uintptr_t)r > worst)
				worst = (uintptr_t)r;
		}
		printf("4 threads, 160 000 blocks of 24 B-32 KiB: %s\n",
		       worst == 0 ? "every calloc zero, no block shared" : "FAILED");
		return (int)worst;
	}
	if (argc >= 2 && strcmp(argv[1], "large_clock") == 0) {
		/* Large blocks that are all sampled (8 MiB at the default rate:
		 * sampled but for a chance of e^-16) still count as the
		 * thread's large allocations (tcache.c big_bins_release): a bin
		 * of 8 KiB blocks left idle over them goes back to its spans,
		 * as it does without the profiler. */
		enum { N = 24 };
		void *b[N];
		for (int round = 0; round < 8; round++) /* the class earns its bin */
			T_FREE(checked(T_MALLOC(8192)));
		ebb_stats_t st;
		ebb_stats_get(&st);
		uint64_t before = st.tcache;
		for (int i = 0; i < N; i++)
			b[i] = checked(T_MALLOC(8192));
		for (int i = 0; i < N; i++)
			T_FREE(b[i]);
		ebb_stats_get(&st);
		uint64_t cached = st.tcache;
		for (int i = 0; i < 8; i++) /* two looks (every 4th), idle over 3 */
			T_FREE(T_MALLOC((size_t)8 << 20));
		ebb_stats_get(&st);
		printf("8 KiB blocks cached: %llu bytes after their frees, %llu more than before them; "
		       "%llu after 8 large allocations\n",
		       (unsigned long long)cached, (unsigned long long)(cached - before),
		       (unsigned long long)st.tcache);
		/* The frees cached at least two blocks; all of them went. */
		if (cached < before + 2 * 8192)
			return 2;
		return st.tcache <= before ? 0 : 1;
	}
	if (argc >= 2 && strcmp(argv[1], "sample_aside") == 0) {
		/* Every block sampled: a small block's sample is a fresh page run
		 * of 8 pages (32 KiB) once no freed one is kept. It must not take
		 * the free pages right of a page-run block, which that block grows
		 * into: here a hole of 9 pages right of a, where the page heap
		 * took the end of the smallest free run that fits (the hole) and
		 * left a 1 page to grow into, so that a moved and was copied. One
		 * CPU: the page heaps are per CPU. */
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(sched_getcpu(), &set);
		sched_setaffinity(0, sizeof set, &set);
		enum { LIVE = 20 }; /* more than the profiler keeps (PROF_KEEP) */
		void *live[LIVE];
		for (int i = 0; i < LIVE; i++)
			live[i] = checked(T_MALLOC(100));
		/* Each run takes the end of the free run it comes from: a, the
		 * hole and c left to right. */
		char *c = checked(T_MALLOC(64 << 10));
		char *hole = checked(T_MALLOC(36 << 10));
		char *a = checked(T_MALLOC(64 << 10));
		int placed = a + (64 << 10) == hole && hole + (36 << 10) == c;
		T_FREE(hole);
		char *s = checked(T_MALLOC(100));
		memset(a, 7, 64 << 10);
		char *a2 = T_REALLOC(a, 72 << 10);
		int moved = a2 != a;
		printf("runs placed a, hole, c: %s; sample %p (hole %p); a grown to 72 KiB %s\n", placed ? "yes" : "no",
		       (void *)s, (void *)hole, moved ? "MOVED" : "in place");
		if (a2 == NULL || a2[0] != 7 || a2[(64 << 10) - 1] != 7)
			return 3;
		T_FREE(a2);
		T_FREE(c);
		T_FREE(s);
		for (int i = 0; i < LIVE; i++)
			T_FREE(live[i]);
		if (!placed)
			return 2;
		return moved ? 1 : 0;
	}
	if (argc >= 2 && strcmp(argv[1], "sample_realloc") == 0) {
		/* Every block sampled: a sample of a small block is a page run
		 * of 32 KiB, resized as the small block it stands for (its
		 * class: 8295 bytes are a block of 8704), so realloc moves it
		 * where the small block would move, also when its run would
		 * hold the size (realloc's fast path answers page runs from
		 * their pmap entry): with prof=0 the heaps see those moves. */
		char *p = checked(T_MALLOC(8295));
		memset(p, 5, 8295);
		char *q = T_REALLOC(p, 12442); /* past 8704: moves */
		int first = q != p;
		char *r = q != NULL ? T_REALLOC(q, 18663) : NULL; /* past its class (13 312): moves */
		int second = r != q;
		printf("8295 -> 12442 %s, -> 18663 %s\n", first ? "moved" : "IN PLACE", second ? "moved" : "IN PLACE");
		if (r == NULL || r[0] != 5 || r[8294] != 5)
			return 3;
		T_FREE(r);
		return first && second ? 0 : 1;
	}
	if (argc >= 2 && strcmp(argv[1], "big_calloc") == 0) {
		/* A sampled calloc of 256 MiB reads zero and costs only the
		 * pages read here, not all of them: the sample's zeroing must
		 * leave pages that read as zero alone (a memset of the whole
		 * block would fault every one in). */
		size_t size = (size_t)256 << 20;
		long before = statm_resident_pages();
		unsigned char *p = T_CALLOC(1, size); /* not checked(): it writes */
		if (p == NULL)
			return 3;
		for (size_t off = 0; off < size; off += (size_t)1 << 20)
			if (p[off] != 0 || p[off + 4095] != 0)
				return 1;
		long grew = statm_resident_pages() - before;
		printf("resident pages grew by %ld for a 256 MiB calloc\n", grew);
		T_FREE(p);
		return grew < 16384 ? 0 : 2; /* under 64 MiB of 256 */
	}
	if (argc >= 2 && strcmp(argv[1], "realloc_kept") == 0) {
		/* The same with realloc as the second free, to a size the block
		 * would hold in place (the page run's fast path must not answer
		 * a kept block). */
		char *p = checked(T_MALLOC(3000));
		printf("block %p\n", (void *)p);
		fflush(stdout);
		T_FREE(p);
		p = T_REALLOC(p, 4000);
		char *q = checked(T_MALLOC(3000)), *r = checked(T_MALLOC(3000));
		printf("survived: %p %p %p\n", (void *)p, (void *)q, (void *)r);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "leak") == 0) {
		keep_t noise = {0};
		leak_here(&a, 8 * MiB);
		site_b(&noise, 8 * MiB);
		free_all(&noise);
		free(noise.ptrs);
		return 0; /* a is never freed: the leak */
	}
	if (argc >= 3 && strcmp(argv[1], "fork") == 0) {
		char path[4096];
		parent_site(&a, 6 * MiB);
		fflush(NULL);
		pid_t pid = fork();
		if (pid < 0)
			return 1;
		if (pid == 0) {
			child_site(&b, 12 * MiB);
			snprintf(path, sizeof path, "%s.child", argv[2]);
			_exit(dump(path));
		}
		int st;
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "child failed (status %d)\n", st);
			return 1;
		}
		snprintf(path, sizeof path, "%s.parent", argv[2]);
		return dump(path);
	}
	if (argc >= 3 && strcmp(argv[1], "threads") == 0) {
		pthread_t t[4];
		for (uintptr_t i = 0; i < 4; i++)
			if (pthread_create(&t[i], NULL, thread_main, (void *)(i + 1)) != 0)
				return 1;
		int rc = 0;
		for (int i = 0; i < 5; i++)
			rc |= dump(argv[2]);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		return rc | dump(argv[2]);
	}
	if (argc >= 3 && strcmp(argv[1], "inner_paths") == 0)
		return inner_paths(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "free_paths") == 0)
		return free_paths(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "huge_moved") == 0)
		return huge_moved(argv[2]);
	fprintf(stderr, "usage: prof_sites two_sites|same_leaf|in_signal|realloc|small|double_free|realloc_kept|leak|fork|threads|free_paths|huge_moved [OUT]\n");
	return 2;
}
