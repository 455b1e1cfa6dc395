/* os_linux.c: the Linux implementation of os.h. Only os/ makes system calls,
 * includes <sys/mman.h> or uses pthreads: this file, os_prof.c (the heap
 * profiler's system side) and os_resident.c (mincore, shared with the unit
 * tests' fake). */
#define _GNU_SOURCE
#include "os/os.h"
#include "os/os_futex.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/auxv.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#include <sys/single_threaded.h>
#define OS_HAVE_SINGLE_THREADED 1
#endif
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------
 * Raw system calls. glibc's open, read, write, close, poll and getrandom are
 * pthread cancellation points: a thread cancelled inside one while the
 * allocator holds a lock would end with the lock held, and the next fork or
 * timeline row would wait for it forever. syscall() is not a cancellation
 * point. Each returns the result, or -1 with errno set.
 * ------------------------------------------------------------------------- */
static int os_sys_open(const char *path, int flags, unsigned mode)
{
	long r;
	do
		r = syscall(SYS_openat, AT_FDCWD, path, flags, mode);
	while (r < 0 && errno == EINTR);
	return (int)r;
}

static ssize_t os_sys_read(int fd, void *buf, size_t len)
{
	return (ssize_t)syscall(SYS_read, fd, buf, len);
}

static ssize_t os_sys_write(int fd, const void *buf, size_t len)
{
	return (ssize_t)syscall(SYS_write, fd, buf, len);
}

static void os_sys_close(int fd)
{
	syscall(SYS_close, fd);
}

/* ---------------------------------------------------------------------------
 * Fault injection. Counters are process-wide; a test arms them, the next
 * matching call fails with ENOMEM as if the kernel had refused.
 * ------------------------------------------------------------------------- */
static struct {
	uint64_t nth;      /* 0: off; else the call that fails, counted down */
	uint32_t ppm;      /* probability of failure per call, in millionths */
	uint64_t rng;
} os_faults[OS_FAULT_KINDS];

void os_fault_set(enum os_fault_kind kind, uint64_t nth, uint32_t ppm)
{
	__atomic_store_n(&os_faults[kind].nth, nth, __ATOMIC_RELAXED);
	__atomic_store_n(&os_faults[kind].ppm, ppm, __ATOMIC_RELAXED);
	__atomic_store_n(&os_faults[kind].rng, 0x9e3779b97f4a7c15ull ^ nth ^ ppm, __ATOMIC_RELAXED);
}

static bool os_fault_hit(enum os_fault_kind kind)
{
	uint64_t nth = __atomic_load_n(&os_faults[kind].nth, __ATOMIC_RELAXED);
	uint32_t ppm = __atomic_load_n(&os_faults[kind].ppm, __ATOMIC_RELAXED);
	if (EBB_LIKELY(nth == 0 && ppm == 0))
		return false;
	if (nth != 0) {
		uint64_t left = __atomic_sub_fetch(&os_faults[kind].nth, 1, __ATOMIC_RELAXED);
		if (left == 0) {
			errno = ENOMEM;
			return true;
		}
		if (left > nth) /* raced below zero: disarm */
			__atomic_store_n(&os_faults[kind].nth, 0, __ATOMIC_RELAXED);
	}
	if (ppm != 0) {
		/* xorshift; races between threads only perturb the sequence. */
		uint64_t x = __atomic_load_n(&os_faults[kind].rng, __ATOMIC_RELAXED);
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		__atomic_store_n(&os_faults[kind].rng, x, __ATOMIC_RELAXED);
		if (x % 1000000u < ppm) {
			errno = ENOMEM;
			return true;
		}
	}
	return false;
}

/* ---------------------------------------------------------------------------
 * Memory
 * ------------------------------------------------------------------------- */
/* AddressSanitizer builds: a fresh mapping may land where a thread stack
 * was (glibc unmaps cached stacks without telling ASan, and a forked child
 * keeps the parent's threads in ASan's registry), and would inherit that
 * stack's stale red zones: clear them. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define OS_MAPPED(p, size) ASAN_UNPOISON_MEMORY_REGION((p), (size))
#else
#define OS_MAPPED(p, size) ((void)0)
#endif

static void *os_mmap_raw(void *hint, size_t size)
{
	void *p = mmap(hint, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	OS_MAPPED(p, size);
	return p;
}

void *os_map(size_t size)
{
	if (os_fault_hit(OS_FAULT_MAP))
		return NULL;
	return os_mmap_raw(NULL, size);
}

void *os_map_aligned(size_t size, size_t align)
{
	if (os_fault_hit(OS_FAULT_MAP))
		return NULL;
	/* Most of the time the kernel places consecutive mappings next to each
	 * other, so try the exact size first and keep it when it happens to be
	 * aligned; otherwise over-map and trim both ends. */
	void *p = os_mmap_raw(NULL, size);
	if (p == NULL)
		return NULL;
	if (((uintptr_t)p & (align - 1)) == 0)
		return p;
	munmap(p, size);
	if (size + align < size) {
		errno = ENOMEM;
		return NULL;
	}
	char *raw = os_mmap_raw(NULL, size + align);
	if (raw == NULL)
		return NULL;
	char *aligned = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	size_t front = (size_t)(aligned - raw);
	size_t back = align - front;
	if (front)
		munmap(raw, front);
	if (back)
		munmap(aligned + size, back);
	return aligned;
}

bool os_unmap(void *p, size_t size)
{
	if (os_fault_hit(OS_FAULT_UNMAP))
		return false;
	return munmap(p, size) == 0;
}

bool os_purge(void *p, size_t size, bool lazy)
{
	if (os_fault_hit(OS_FAULT_PURGE))
		return false;
	if (lazy && madvise(p, size, MADV_FREE) == 0)
		return true;
	return madvise(p, size, MADV_DONTNEED) == 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Set once a kernel rejected the advice as unknown (EINVAL before 5.14):
 * a racing first call asks twice, which is harmless. */
static bool os_populate_off;

void os_populate(void *p, size_t size)
{
	if (__atomic_load_n(&os_populate_off, __ATOMIC_RELAXED) || size == 0)
		return;
	int saved = errno;
	if (madvise(p, size, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
		__atomic_store_n(&os_populate_off, true, __ATOMIC_RELAXED);
	errno = saved;
}

/* process_madvise(2) on the calling process: the pidfd sentinel for "this
 * thread group" (Linux 6.15), so there is no descriptor to keep open, to lose
 * to a program that closes every descriptor, or to carry into a forked
 * child. Since Linux 6.13 it takes any advice for the caller's own mm. */
#ifndef PIDFD_SELF_THREAD_GROUP
#define PIDFD_SELF_THREAD_GROUP (-10001)
#endif
#define OS_IOV_MAX 1024 /* UIO_MAXIOV */

static ssize_t os_sys_process_madvise(const struct iovec *iov, size_t n, int advice)
{
#ifdef SYS_process_madvise
	return (ssize_t)syscall(SYS_process_madvise, PIDFD_SELF_THREAD_GROUP, iov, n, advice, 0u);
#else
	(void)iov;
	(void)n;
	(void)advice;
	errno = ENOSYS;
	return -1;
#endif
}

/* Whether process_madvise takes `advice` here, per advice: 0 not asked yet,
 * 1 yes, -1 no. Racing probes store the same answer. */
static int os_vec_ok[2];

/* Asks once, on a page of its own: the call must cover the whole page and,
 * for MADV_DONTNEED, the page must read back as zero. An older kernel
 * refuses the advice or the sentinel (EINVAL, EBADF), a sandbox the system
 * call (ENOSYS, EPERM): each means one madvise per range. */
static bool os_vec_probe(bool lazy)
{
	int *slot = &os_vec_ok[lazy];
	int v = __atomic_load_n(slot, __ATOMIC_RELAXED);
	if (v != 0)
		return v > 0;
	int saved = errno;
	bool ok = false;
	size_t page = os_page_size();
	char *p = os_mmap_raw(NULL, page);
	if (p != NULL) {
		p[0] = 1;
		struct iovec iov = { p, page };
		ok = os_sys_process_madvise(&iov, 1, lazy ? MADV_FREE : MADV_DONTNEED) == (ssize_t)page &&
		     (lazy || __atomic_load_n(p, __ATOMIC_RELAXED) == 0);
		munmap(p, page);
	}
	errno = saved;
	__atomic_store_n(slot, ok ? 1 : -1, __ATOMIC_RELAXED);
	return ok;
}

/* os_purge without fault injection. */
static bool os_purge_one(void *p, size_t size, bool lazy)
{
	if (lazy && madvise(p, size, MADV_FREE) == 0)
		return true;
	return madvise(p, size, MADV_DONTNEED) == 0;
}

size_t os_purge_vec(const os_range_t *r, size_t n, bool lazy)
{
	/* Fault injection as n calls of os_purge: the first range hit and
	 * those after it are not given back. */
	size_t want = n;
	for (size_t i = 0; i < n; i++)
		if (os_fault_hit(OS_FAULT_PURGE)) {
			want = i;
			break;
		}
	size_t i = 0;
	if (want > 1 && os_vec_probe(lazy)) {
		struct iovec iov[OS_PURGE_VEC];
		while (i < want) {
			size_t k = 0;
			size_t bytes = 0;
			while (k < OS_PURGE_VEC && i + k < want) {
				iov[k].iov_base = r[i + k].p;
				iov[k].iov_len = r[i + k].size;
				bytes += r[i + k].size;
				k++;
			}
			ssize_t got = os_sys_process_madvise(iov, k, lazy ? MADV_FREE : MADV_DONTNEED);
			if (got == (ssize_t)bytes) {
				i += k;
				continue;
			}
			/* Partly done (or not at all): skip the ranges it covered,
			 * finish the one it stopped in with madvise, and go on
			 * range by range from there. */
			size_t done = got > 0 ? (size_t)got : 0;
			while (done >= r[i].size) {
				done -= r[i].size;
				i++;
			}
			if (done > 0) {
				if (!os_purge_one((char *)r[i].p + done, r[i].size - done, lazy))
					return i;
				i++;
			}
			break;
		}
	}
	for (; i < want; i++)
		if (!os_purge_one(r[i].p, r[i].size, lazy))
			return i;
	return want;
}

bool os_remap_inplace(void *p, size_t old_size, size_t new_size)
{
	if (new_size > old_size && os_fault_hit(OS_FAULT_MAP))
		return false;
	if (mremap(p, old_size, new_size, 0) == MAP_FAILED)
		return false;
	if (new_size > old_size)
		OS_MAPPED((char *)p + old_size, new_size - old_size);
	return true;
}

bool os_map_at(void *p, size_t size)
{
	if (os_fault_hit(OS_FAULT_MAP))
		return false;
	void *got = mmap(p, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	if (got == MAP_FAILED)
		return false;
	/* A kernel before 4.17 takes the address as a hint only: what it
	 * placed elsewhere is not what was asked. */
	if (got != p) {
		munmap(got, size);
		return false;
	}
	OS_MAPPED(p, size);
	return true;
}

bool os_remap_to(void *p, size_t old_size, size_t new_size, void *to)
{
	if (os_fault_hit(OS_FAULT_MAP))
		return false;
	return mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, to) != MAP_FAILED;
}

/* ---------------------------------------------------------------------------
 * Machine
 * ------------------------------------------------------------------------- */
/* From the auxiliary vector, not sysconf: sysconf's switch reads a jump
 * table in libc's .rodata, and that one read maps a 64 KiB fault-around
 * window of it (16 pages) into a process that may touch no other. A program
 * that mallocs and frees once and exits: VmHWM 1 500 -> 1 436 KiB (medians
 * of 15 interleaved pairs, 14 lower, one equal; glibc alone 1 108). */
size_t os_page_size(void)
{
	unsigned long page = getauxval(AT_PAGESZ);
	return page != 0 ? (size_t)page : (size_t)sysconf(_SC_PAGESIZE);
}

/* Reads a small file into buf with plain syscalls (no stdio: it allocates). */
static ssize_t os_read_small_file(const char *path, char *buf, size_t cap)
{
	int fd = os_sys_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	ssize_t n = os_sys_read(fd, buf, cap - 1);
	os_sys_close(fd);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

bool os_thp_always(void)
{
	/* 0 not read yet, 1 always (or unknown), -1 madvise or never. Racing
	 * readers store the same answer. */
	static int cached;
	int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
	if (v == 0) {
		char buf[128];
		int saved = errno;
		ssize_t n = os_read_small_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf);
		errno = saved;
		v = n > 0 && strstr(buf, "[always]") == NULL ? -1 : 1;
		__atomic_store_n(&cached, v, __ATOMIC_RELAXED);
	}
	return v > 0;
}

unsigned os_cpu_count(void)
{
	static unsigned cached;
	unsigned n = __atomic_load_n(&cached, __ATOMIC_RELAXED);
	if (n)
		return n;
	/* "possible" CPUs bound every id sched_getcpu can return, also for CPUs
	 * hot-plugged later. Format: ranges like "0-3,8-11". */
	char buf[256];
	unsigned maxid = 0;
	bool found = false;
	if (os_read_small_file("/sys/devices/system/cpu/possible", buf, sizeof buf) > 0) {
		for (const char *s = buf; *s; s++) {
			if (*s >= '0' && *s <= '9') {
				unsigned v = 0;
				while (*s >= '0' && *s <= '9')
					v = v * 10 + (unsigned)(*s++ - '0');
				if (v > maxid || !found)
					maxid = v;
				found = true;
				s--;
			}
		}
	}
	if (found) {
		n = maxid + 1;
	} else {
		cpu_set_t set;
		n = 1;
		if (sched_getaffinity(0, sizeof set, &set) == 0)
			n = (unsigned)CPU_COUNT(&set);
	}
	if (n == 0)
		n = 1;
	__atomic_store_n(&cached, n, __ATOMIC_RELAXED);
	return n;
}

/* The calling thread's slot + 1 (0: none). */
static __thread unsigned os_cpu_slot __attribute__((tls_model("initial-exec")));

void os_cpu_slot_set(int slot)
{
	os_cpu_slot = slot < 0 ? 0u : (unsigned)slot + 1u;
}

unsigned os_cpu_id(void)
{
	unsigned slot = os_cpu_slot;
	if (slot != 0)
		return slot - 1;
	int cpu = sched_getcpu();
	if (EBB_UNLIKELY(cpu < 0))
		return 0;
	unsigned n = os_cpu_count();
	return (unsigned)cpu < n ? (unsigned)cpu : (unsigned)cpu % n;
}

uint64_t os_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

os_cpu_use_t os_cpu_use(bool thread_only)
{
	os_cpu_use_t u = { 0, 0 };
	struct rusage ru;
	if (getrusage(thread_only ? RUSAGE_THREAD : RUSAGE_SELF, &ru) != 0)
		return u;
	uint64_t us = (uint64_t)ru.ru_utime.tv_sec * 1000000ull + (uint64_t)ru.ru_utime.tv_usec +
		      (uint64_t)ru.ru_stime.tv_sec * 1000000ull + (uint64_t)ru.ru_stime.tv_usec;
	u.cpu_ns = us * 1000ull;
	u.preempted = (uint64_t)ru.ru_nivcsw;
	return u;
}

bool os_single_threaded(void)
{
#ifdef OS_HAVE_SINGLE_THREADED
	return __atomic_load_n(&__libc_single_threaded, __ATOMIC_RELAXED) != 0;
#else
	return false;
#endif
}

unsigned os_thread_count(void)
{
	char buf[1024];
	if (os_read_small_file("/proc/self/stat", buf, sizeof buf) <= 0)
		return 0;
	/* The command name may hold spaces and parentheses; fields after the last
	 * ')' are: state(3) ... num_threads(20). */
	char *s = strrchr(buf, ')');
	if (s == NULL)
		return 0;
	int field = 2;
	for (; *s && field < 20; s++)
		if (*s == ' ')
			field++;
	unsigned v = 0;
	while (*s >= '0' && *s <= '9')
		v = v * 10 + (unsigned)(*s++ - '0');
	return v;
}

uint64_t os_random(void)
{
	uint64_t v = 0;
	if (syscall(SYS_getrandom, &v, sizeof v, GRND_NONBLOCK) == (long)sizeof v && v != 0)
		return v;
	v = os_now_ns() ^ ((uint64_t)(uintptr_t)&v << 16) ^ (uint64_t)getpid();
	v ^= v >> 33;
	v *= 0xff51afd7ed558ccdull;
	v ^= v >> 33;
	return v | 1;
}

/* ---------------------------------------------------------------------------
 * Threads
 * ------------------------------------------------------------------------- */
void os_yield(void)
{
	sched_yield();
}

void os_wait_u32(const uint32_t *word, uint32_t expect)
{
	os_futex_call(word, FUTEX_WAIT_PRIVATE, expect);
}

void os_wake_one(const uint32_t *word)
{
	os_futex_call(word, FUTEX_WAKE_PRIVATE, 1);
}

bool os_thread_start(void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	pthread_t tid;
	if (pthread_attr_init(&attr) != 0)
		return false;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	/* The new thread must not take signals meant for the program. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&tid, &attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return rc == 0;
}

unsigned os_thread_id(void)
{
	return (unsigned)syscall(SYS_gettid);
}

bool os_thread_alive(unsigned tid)
{
	/* Signal 0 checks only that the thread exists. A thread id is reused
	 * only after the thread is gone, and then at the end of the id space. */
	return syscall(SYS_tgkill, getpid(), (pid_t)tid, 0) == 0 || errno != ESRCH;
}

void os_thread_name(const char *name)
{
	prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

static pthread_key_t os_exit_key;

bool os_thread_exit_hook(void (*fn)(void *))
{
	return pthread_key_create(&os_exit_key, fn) == 0;
}

bool os_thread_exit_set(void *value)
{
	return pthread_setspecific(os_exit_key, value) == 0;
}

bool os_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	return pthread_atfork(prepare, parent, child) == 0;
}

/* The event is one futex word, not a mutex and condition variable: a free
 * that wakes the parked background thread makes one atomic exchange and, only
 * if the thread sleeps, one FUTEX_WAKE; no pthread call and no lock that a
 * forked child would have to set up again. States: 0 nothing pending, 1
 * signalled, 2 the waiter sleeps (or is about to). One waiter. */
static uint32_t os_event_word;

void os_event_init(void)
{
	__atomic_store_n(&os_event_word, 0, __ATOMIC_RELAXED);
}

void os_event_wait(uint64_t timeout_ns)
{
	uint32_t idle = 0;
	/* A signal that came first is consumed here (the CAS fails on 1). One
	 * that comes between the CAS and the futex call changes the word to 1,
	 * and the kernel then returns at once (the word no longer reads 2). */
	if (__atomic_compare_exchange_n(&os_event_word, &idle, 2, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		struct timespec ts = {(time_t)(timeout_ns / 1000000000ull), (long)(timeout_ns % 1000000000ull)};
		os_futex_wait_rel(&os_event_word, 2, timeout_ns == UINT64_MAX ? NULL : &ts);
	}
	__atomic_exchange_n(&os_event_word, 0, __ATOMIC_ACQ_REL);
}

void os_event_signal(void)
{
	if (__atomic_exchange_n(&os_event_word, 1, __ATOMIC_ACQ_REL) == 2)
		os_futex_call(&os_event_word, FUTEX_WAKE_PRIVATE, 1);
}

/* glibc exports these (GLIBC_2.2.5, GLIBC_2.32) though no header declares
 * them for programs. Weak: NULL where the C library has no such symbol. */
extern void _IO_list_lock(void) __attribute__((weak));
extern void _IO_list_unlock(void) __attribute__((weak));
extern char __libc_single_threaded __attribute__((weak));

bool os_stdio_list_lock(void)
{
	/* glibc's fork (2.36, checked in its code) reads __libc_single_threaded
	 * as it starts and takes, and in the child resets, the list lock only
	 * when it is false. 2.36 never sets it back to true, so this later read
	 * agrees unless another prefork handler starts a thread. */
	if (_IO_list_lock == NULL || _IO_list_unlock == NULL || &__libc_single_threaded == NULL ||
	    __atomic_load_n(&__libc_single_threaded, __ATOMIC_RELAXED))
		return false;
	_IO_list_lock();
	return true;
}

void os_stdio_list_unlock(void)
{
	_IO_list_unlock();
}

/* ---------------------------------------------------------------------------
 * Process
 * ------------------------------------------------------------------------- */
void os_write_err(const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = os_sys_write(STDERR_FILENO, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

const char *os_getenv(const char *name)
{
	return getenv(name);
}

bool os_secure(void)
{
	return getauxval(AT_SECURE) != 0;
}

void os_abort(void)
{
	abort();
}

/* ---------------------------------------------------------------------------
 * Files (the stats timeline): plain syscalls, no stdio, nothing allocated.
 * ------------------------------------------------------------------------- */
int os_file_create(const char *path)
{
	/* O_NONBLOCK: opening a FIFO must not wait for a reader (and a FIFO is
	 * refused anyway); O_NOFOLLOW: a link planted under the name must not
	 * redirect the rows onto another file. */
	const int flags = O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	int fd = os_sys_open(path, flags | O_CREAT | O_EXCL, 0644);
	if (fd >= 0 || errno != EEXIST)
		return fd;
	/* It exists. Look before opening, so that no device is ever opened
	 * (opening some has effects); check again after, on what was opened. */
	struct stat st;
	if (fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return -1;
	if (S_ISLNK(st.st_mode)) {
		errno = ELOOP;
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		return -1;
	}
	fd = os_sys_open(path, flags | O_APPEND, 0);
	if (fd < 0)
		return -1;
	int err = 0;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
		err = EINVAL; /* swapped for something else since fstatat */
	else if (st.st_uid != geteuid() || st.st_nlink != 1 || st.st_size != 0)
		err = EEXIST; /* someone else's, a hard link, or holds data */
	if (err) {
		os_sys_close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

bool os_file_write(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = os_sys_write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf += n;
		len -= (size_t)n;
	}
	return true;
}

bool os_file_ready(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLOUT, .revents = 0};
	struct timespec zero = {0, 0};
	long r = syscall(SYS_ppoll, &p, 1, &zero, NULL, (size_t)(_NSIG / 8));
	return r == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP | POLLNVAL));
}

void os_file_close(int fd)
{
	os_sys_close(fd);
}

uint64_t os_rss_bytes(void)
{
	/* statm: size resident shared text lib data dt, in pages. */
	char buf[256];
	if (os_read_small_file("/proc/self/statm", buf, sizeof buf) <= 0)
		return 0;
	const char *s = buf;
	while (*s && *s != ' ')
		s++;
	while (*s == ' ')
		s++;
	uint64_t pages = 0;
	while (*s >= '0' && *s <= '9')
		pages = pages * 10 + (uint64_t)(*s++ - '0');
	return pages * (uint64_t)os_page_size();
}

unsigned os_pid(void)
{
	return (unsigned)getpid();
}
