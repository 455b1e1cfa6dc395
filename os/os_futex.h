/* os_futex.h: the futex call behind os_wait_u32 and os_wake_one, shared by
 * os/os_linux.c and the tests' fake os layer (tests/support/os_fake.c),
 * whose lock tests measure what a real waiter costs.
 *
 * A raw system call: glibc's futex wrappers are cancellation points. errno
 * is kept: a wait that finds the word changed fails with EAGAIN (or EINTR),
 * and a lock taken inside free() must not change what the program reads in
 * errno (glibc promises free keeps it). */
#ifndef EBB_OS_FUTEX_H
#define EBB_OS_FUTEX_H

#include <errno.h>
#include <linux/futex.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline void os_futex_call(const uint32_t *word, int op, uint32_t val)
{
	int saved = errno;
	syscall(SYS_futex, word, op, val, NULL, NULL, 0);
	errno = saved;
}

/* A wait on *word while it reads expect, for at most *timeout (relative, on
 * the monotonic clock; NULL: no bound). The same errno rule. */
static inline void os_futex_wait_rel(const uint32_t *word, uint32_t expect, const struct timespec *timeout)
{
	int saved = errno;
	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expect, timeout, NULL, 0);
	errno = saved;
}

#endif /* EBB_OS_FUTEX_H */
