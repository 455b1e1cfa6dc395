/* os.h: everything ebbmalloc asks of the kernel, and nothing else.
 *
 * os_linux.c is the only file that makes system calls or uses pthreads; the
 * unit tests link tests/support/os_fake.c instead, which implements the same
 * contract with a virtual clock and counters. No function here allocates with
 * malloc, so all of them are safe inside the allocator's own slow paths.
 *
 * Errors: functions that can fail return NULL/false and leave errno as the
 * kernel set it; callers turn that into ENOMEM for the user.
 *
 * Cancellation: none of them is a pthread cancellation point (file and
 * stderr I/O are raw system calls), so a thread that pthread_cancel()
 * targets never ends inside the allocator with one of its locks held
 * (os_event_wait, a raw futex wait, is none either). */
#ifndef EBB_OS_OS_H
#define EBB_OS_OS_H

#include "core/base/config.h"
#include "core/base/util.h"

EBB_BEGIN_DECLS

/* ---- memory ------------------------------------------------------------- */

/* Fresh zero-filled read-write memory, page aligned, or NULL. */
void *os_map(size_t size);
/* Like os_map, aligned to `align` (a power of two >= the page size). */
void *os_map_aligned(size_t size, size_t align);
/* Gives [p, p+size) back entirely. false if the kernel refused. */
bool os_unmap(void *p, size_t size);
/* Gives the physical pages behind [p, p+size) back; the range stays mapped.
 * lazy=false: MADV_DONTNEED, RSS drops at once and the pages read back as
 * zero. lazy=true: MADV_FREE, the kernel reclaims under pressure only and the
 * old contents may survive. false if the kernel refused (nothing changed). */
bool os_purge(void *p, size_t size, bool lazy);
/* One range of os_purge_vec. */
typedef struct os_range {
	void *p;
	size_t size;
} os_range_t;
/* os_purge of r[0..n) in order, in as few system calls as the kernel allows:
 * one process_madvise(2) per 64 ranges where the kernel takes the advice
 * for the calling process (Linux 6.13 and later; probed once per advice),
 * else one madvise per range. A burst's purge gives back thousands of runs
 * of a few pages, and on a virtual machine each call costs 20-50 us a page
 * however little it covers. Returns how many leading ranges were given back:
 * n, or the index of the first range the kernel refused. That range may be
 * partly given back (its pages then hold either their old contents or
 * zeroes); the ranges after it are untouched. Counts as n calls of os_purge
 * for fault injection. */
size_t os_purge_vec(const os_range_t *r, size_t n, bool lazy);
/* Ranges os_purge_vec hands the kernel in one call, so what a purge pass
 * gathers before it calls: a pass gives back a few pages of each of many
 * runs, and a call for 64 ranges costs about what one for a single range
 * does. */
#define OS_PURGE_VEC 64
/* Faults in [p, p+size) (page aligned) for writing in one system call
 * (MADV_POPULATE_WRITE, Linux 5.14), for memory the caller is about to
 * write page by page: on the virtual machine the benchmarks run on a
 * first-touch fault costs 8-20 us, the call about 7 us plus 1 us a page
 * (64 MiB at once: 1.2 us a page). A hint: if the kernel refuses, the
 * writes fault as before; a kernel without the advice is asked once.
 * errno is kept. */
void os_populate(void *p, size_t size);
/* Grows or shrinks the mapping [p, p+old) to `new_size` without moving it.
 * false if the neighbouring range is not free. */
bool os_remap_inplace(void *p, size_t old_size, size_t new_size);
/* Fresh zero-filled read-write memory at exactly [p, p+size) (page
 * aligned), only if nothing is mapped anywhere in it: false otherwise, and
 * whatever is there stays. Where the range follows a mapping of the same
 * kind the kernel merges the two into one. */
bool os_map_at(void *p, size_t size);
/* Moves the pages of [p, p+old) to [to, to+new_size), which the caller has
 * reserved with os_map_aligned; no copying. false on failure (nothing moved). */
bool os_remap_to(void *p, size_t old_size, size_t new_size, void *to);

/* Whether the kernel backs any anonymous mapping with transparent huge
 * pages at its first touch (THP "always", or unknown): then a range that
 * must stay small once touched (a header) cannot share a 2 MiB-aligned
 * stretch of one mapping with untouched address space. Read once. */
bool os_thp_always(void);

/* ---- machine ------------------------------------------------------------ */

size_t os_page_size(void);
/* Number of possible CPU ids (ids are below it); at least 1. */
unsigned os_cpu_count(void);
/* The CPU this thread ran on a moment ago (rseq-backed sched_getcpu). Only a
 * hint: the thread may migrate right after. Always < os_cpu_count(). */
unsigned os_cpu_id(void);
/* Gives the calling thread a CPU slot (slot < os_cpu_count()): os_cpu_id
 * returns it wherever the thread runs; -1 takes it back. Which thread gets
 * which slot is the thread caches' rule (tcache.c, tcache_shared_enter). */
void os_cpu_slot_set(int slot);
/* Monotonic clock in nanoseconds. */
uint64_t os_now_ns(void);
/* What the process (every thread, ended ones too) or the calling thread alone
 * has used of the CPUs so far: CPU time, and how often a thread was
 * preempted (it was running and wanted to go on: a busy thread on a loaded
 * machine, never one that sleeps). Zeros if unknown. A real system call: for
 * the background thread's tick only, never a fast path. */
typedef struct os_cpu_use {
	uint64_t cpu_ns;
	uint64_t preempted;
} os_cpu_use_t;
os_cpu_use_t os_cpu_use(bool thread_only);
/* Threads in this process, from /proc/self/stat; 0 if unknown. */
unsigned os_thread_count(void);
/* The process has never had a second thread (glibc's __libc_single_threaded:
 * false from the first pthread_create on, for good). A load, no system call;
 * false where the C library does not say. */
bool os_single_threaded(void);
/* A random 64-bit value from the kernel (getrandom), or a mix of the clock and
 * addresses if that fails. */
uint64_t os_random(void);

/* ---- threads ------------------------------------------------------------ */

void os_yield(void);
/* Sleeps while *word reads expect (a futex wait, private to the process):
 * returns at once if it reads otherwise, when os_wake_one wakes it, or for no
 * reason; the caller tests again. Not a cancellation point; errno is kept. */
void os_wait_u32(const uint32_t *word, uint32_t expect);
/* Wakes one thread sleeping in os_wait_u32 on word, if there is one. */
void os_wake_one(const uint32_t *word);
/* Starts a detached thread running fn(arg). false on failure. */
bool os_thread_start(void *(*fn)(void *), void *arg);
/* The kernel's id of the calling thread (gettid). */
unsigned os_thread_id(void);
/* Whether thread `tid` of this process still exists (it may be exiting). */
bool os_thread_alive(unsigned tid);
/* Names the calling thread (at most 15 characters; ps, top, /proc). */
void os_thread_name(const char *name);
/* Registers fn to run at the exit of every thread that called os_thread_exit_set
 * with a non-NULL value (a pthread key destructor). Call once. */
bool os_thread_exit_hook(void (*fn)(void *));
/* Arms the exit hook for this thread with `value` (NULL disarms). */
bool os_thread_exit_set(void *value);
/* pthread_atfork. */
bool os_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));

/* A wake-up event for the background thread: wait sleeps until signalled or
 * until timeout_ns passes (UINT64_MAX: no bound), or for no reason; a signal
 * sent while nobody waits makes the next wait return at once. One waiter.
 * signal is one atomic exchange, plus one futex wake if the waiter sleeps:
 * no lock and no pthread call, so any free may call it. Re-initialized in a
 * forked child. */
void os_event_init(void);
void os_event_wait(uint64_t timeout_ns);
void os_event_signal(void);

/* libc's stdio list lock (glibc's _IO_list_lock, held by fflush(NULL),
 * fopen, fclose; recursive), for the prefork handler to take before the
 * allocator's locks, in the order glibc's fork takes them (core/api/fork.c).
 * Taken only where glibc's fork is known to take it too and to reset it in
 * the child: the functions exist (weak references, so a static or non-glibc
 * program links without them) and the process is multithreaded
 * (__libc_single_threaded is false; glibc's fork skips the lock otherwise).
 * true if it was taken: then release it with os_stdio_list_unlock in the
 * parent, and not at all in the child (glibc re-initialized it). */
bool os_stdio_list_lock(void);
void os_stdio_list_unlock(void);

/* ---- process ------------------------------------------------------------ */

/* Writes to stderr without buffering or allocating. */
void os_write_err(const char *buf, size_t len);
const char *os_getenv(const char *name);
/* Whether the process runs with privileges its invoker lacks (AT_SECURE:
 * setuid, setgid, file capabilities): then the environment is not to be
 * trusted, and options are not read from it. */
bool os_secure(void);
EBB_NORETURN void os_abort(void);

/* ---- files (the stats timeline) ----------------------------------------- */

/* Opens `path` for the timeline and returns a descriptor >= 0, or -1 with
 * errno set. Never follows a symbolic link in the last component
 * (ELOOP), never opens anything but a regular file (EINVAL: a FIFO, a
 * device), never blocks, never truncates: a new file is created (mode
 * 0644, O_EXCL); an existing one is taken only if it is empty, owned by
 * the process's effective user and has one link, and is written in append
 * mode (else EEXIST). Close-on-exec. */
int os_file_create(const char *path);
/* Writes all of buf[0, len) to fd, retrying short writes and EINTR; false on
 * any other error (the rest is dropped). */
bool os_file_write(int fd, const char *buf, size_t len);
/* Whether fd takes a write now without blocking (poll, no wait): a pipe or
 * terminal behind stderr may be full or stopped. */
bool os_file_ready(int fd);
void os_file_close(int fd);
/* Resident set size of the whole process in bytes as the kernel counts it
 * (/proc/self/statm: every mapping, not only the allocator's); 0 if unknown. */
uint64_t os_rss_bytes(void);
/* How many 4 KiB pages of [p, p + len) (page aligned) are resident (mincore), or
 * (size_t)-1 if unknown. */
size_t os_resident_pages(const void *p, size_t len);
/* The calling process's id. */
unsigned os_pid(void);

/* ---- fault injection (tests) -------------------------------------------- */

/* Makes the calls of one kind fail: the nth next call (nth >= 1; 0 = never)
 * and/or each call with probability ppm/1e6. Kinds: OS_FAULT_MAP (os_map,
 * os_map_aligned, remaps), OS_FAULT_PURGE, OS_FAULT_UNMAP. Used by tests and by
 * the hidden option fault_*. */
enum os_fault_kind { OS_FAULT_MAP, OS_FAULT_PURGE, OS_FAULT_UNMAP, OS_FAULT_KINDS };
void os_fault_set(enum os_fault_kind kind, uint64_t nth, uint32_t ppm);

EBB_END_DECLS

#endif /* EBB_OS_OS_H */
