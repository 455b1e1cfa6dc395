/* os_fake.c: the test double of os.h (see os_fake.h). The CPU count is fixed
 * at 4 so that tests exercise several page heaps and central lists even on a
 * 2-core machine. */
#define _GNU_SOURCE
#include "os/os.h"
#include "os/os_futex.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tests/support/os_fake.h"

#define FAKE_CPUS 4

static uint64_t fake_now = 1000000000ull;
static unsigned fake_cpu;
static os_fake_counts_t counts;
static struct { uint64_t nth; uint32_t ppm; uint64_t rng; } faults[OS_FAULT_KINDS];

void os_fake_set_now(uint64_t ns) { __atomic_store_n(&fake_now, ns, __ATOMIC_RELAXED); }
void os_fake_advance(uint64_t ns) { __atomic_add_fetch(&fake_now, ns, __ATOMIC_RELAXED); }
uint64_t os_fake_now(void) { return __atomic_load_n(&fake_now, __ATOMIC_RELAXED); }
void os_fake_set_cpu(unsigned cpu) { __atomic_store_n(&fake_cpu, cpu, __ATOMIC_RELAXED); }

os_fake_counts_t os_fake_counts(void)
{
	os_fake_counts_t c;
	c.maps = __atomic_load_n(&counts.maps, __ATOMIC_RELAXED);
	c.unmaps = __atomic_load_n(&counts.unmaps, __ATOMIC_RELAXED);
	c.purges = __atomic_load_n(&counts.purges, __ATOMIC_RELAXED);
	c.purged_bytes = __atomic_load_n(&counts.purged_bytes, __ATOMIC_RELAXED);
	c.failed = __atomic_load_n(&counts.failed, __ATOMIC_RELAXED);
	return c;
}

int os_fake_resident(const void *p)
{
	unsigned char v = 0;
	if (mincore((void *)((uintptr_t)p & ~(uintptr_t)4095), 4096, &v) != 0)
		return -1;
	return v & 1;
}

void os_fault_set(enum os_fault_kind kind, uint64_t nth, uint32_t ppm)
{
	faults[kind].nth = nth;
	faults[kind].ppm = ppm;
	faults[kind].rng = 88172645463325252ull;
}

static int fault_hit(enum os_fault_kind kind)
{
	if (faults[kind].nth && --faults[kind].nth == 0)
		goto fail;
	if (faults[kind].ppm) {
		uint64_t x = faults[kind].rng;
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		faults[kind].rng = x;
		if (x % 1000000u < faults[kind].ppm)
			goto fail;
	}
	return 0;
fail:
	__atomic_add_fetch(&counts.failed, 1, __ATOMIC_RELAXED);
	errno = ENOMEM;
	return 1;
}

void *os_map(size_t size)
{
	if (fault_hit(OS_FAULT_MAP))
		return NULL;
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	__atomic_add_fetch(&counts.maps, 1, __ATOMIC_RELAXED);
	return p;
}

void *os_map_aligned(size_t size, size_t align)
{
	if (fault_hit(OS_FAULT_MAP))
		return NULL;
	char *raw = mmap(NULL, size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	char *p = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	if (p > raw)
		munmap(raw, (size_t)(p - raw));
	if (raw + size + align > p + size)
		munmap(p + size, (size_t)(raw + size + align - (p + size)));
	__atomic_add_fetch(&counts.maps, 1, __ATOMIC_RELAXED);
	return p;
}

bool os_unmap(void *p, size_t size)
{
	if (fault_hit(OS_FAULT_UNMAP))
		return false;
	__atomic_add_fetch(&counts.unmaps, 1, __ATOMIC_RELAXED);
	return munmap(p, size) == 0;
}

bool os_purge(void *p, size_t size, bool lazy)
{
	if (fault_hit(OS_FAULT_PURGE))
		return false;
	__atomic_add_fetch(&counts.purges, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&counts.purged_bytes, size, __ATOMIC_RELAXED);
	return madvise(p, size, lazy ? MADV_FREE : MADV_DONTNEED) == 0;
}

/* As the real one: the pages read the same before and after. */
void os_populate(void *p, size_t size)
{
	int saved = errno;
	(void)madvise(p, size, 23 /* MADV_POPULATE_WRITE */);
	errno = saved;
}

/* Counted as n calls of os_purge (the real one makes fewer system calls,
 * the ranges are what the tests count). */
size_t os_purge_vec(const os_range_t *r, size_t n, bool lazy)
{
	for (size_t i = 0; i < n; i++)
		if (!os_purge(r[i].p, r[i].size, lazy))
			return i;
	return n;
}

bool os_remap_inplace(void *p, size_t old_size, size_t new_size)
{
	if (new_size > old_size && fault_hit(OS_FAULT_MAP))
		return false;
	return mremap(p, old_size, new_size, 0) != MAP_FAILED;
}

bool os_map_at(void *p, size_t size)
{
	if (fault_hit(OS_FAULT_MAP))
		return false;
	void *got = mmap(p, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	return got == p;
}

bool os_remap_to(void *p, size_t old_size, size_t new_size, void *to)
{
	if (fault_hit(OS_FAULT_MAP))
		return false;
	return mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, to) != MAP_FAILED;
}

static int fake_thp_always;
void os_fake_set_thp_always(int on) { __atomic_store_n(&fake_thp_always, on, __ATOMIC_RELAXED); }
bool os_thp_always(void) { return __atomic_load_n(&fake_thp_always, __ATOMIC_RELAXED) != 0; }

size_t os_page_size(void) { return 4096; }
unsigned os_cpu_count(void) { return FAKE_CPUS; }
unsigned os_cpu_id(void) { return __atomic_load_n(&fake_cpu, __ATOMIC_RELAXED) % FAKE_CPUS; }
/* The tests set the CPU themselves (fake_cpu): a thread's slot is ignored. */
void os_cpu_slot_set(int slot) { (void)slot; }
uint64_t os_now_ns(void) { return os_fake_now(); }
os_cpu_use_t os_cpu_use(bool thread_only) { (void)thread_only; return (os_cpu_use_t){ 0, 0 }; }
unsigned os_thread_count(void) { return 2; }
bool os_single_threaded(void) { return false; } /* the rules of a threaded program */
/* Deterministic, but a new value each call (splitmix64 of a counter). */
uint64_t os_random(void)
{
	static uint64_t n;
	uint64_t z = (n += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
void os_yield(void) { sched_yield(); }
/* The real futex: tests of the lock measure what a waiter costs. */
void os_wait_u32(const uint32_t *word, uint32_t expect) { os_futex_call(word, FUTEX_WAIT_PRIVATE, expect); }
void os_wake_one(const uint32_t *word) { os_futex_call(word, FUTEX_WAKE_PRIVATE, 1); }

bool os_thread_start(void *(*fn)(void *), void *arg)
{
	(void)fn;
	(void)arg;
	return false; /* unit tests drive decay themselves */
}

unsigned os_thread_id(void) { return 1; }
bool os_thread_alive(unsigned tid) { (void)tid; return false; }
void os_thread_name(const char *name) { (void)name; }

static pthread_key_t fake_key;
bool os_thread_exit_hook(void (*fn)(void *)) { return pthread_key_create(&fake_key, fn) == 0; }
bool os_thread_exit_set(void *value) { return pthread_setspecific(fake_key, value) == 0; }
bool os_atfork(void (*a)(void), void (*b)(void), void (*c)(void)) { return pthread_atfork(a, b, c) == 0; }
void os_event_init(void) {}
void os_event_wait(uint64_t timeout_ns) { (void)timeout_ns; }
void os_event_signal(void) {}
void os_write_err(const char *buf, size_t len) { (void)!write(2, buf, len); }
const char *os_getenv(const char *name) { return getenv(name); }
bool os_secure(void) { return false; }
void os_abort(void) { abort(); }

/* Files are real (a test can read back what the timeline wrote); RSS is
 * unknown to the fake. */
#include <fcntl.h>
int os_file_create(const char *path) { return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); }
bool os_file_write(int fd, const char *buf, size_t len) { return write(fd, buf, len) == (ssize_t)len; }
bool os_file_ready(int fd) { (void)fd; return true; }
void os_file_close(int fd) { close(fd); }
uint64_t os_rss_bytes(void) { return 0; }

unsigned os_pid(void) { return (unsigned)getpid(); }
