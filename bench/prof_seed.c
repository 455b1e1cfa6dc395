/* bench/prof_seed.c: for bench/prof_overhead --fixed-seed only, preloaded
 * before libebbmalloc.so: getrandom(2) through syscall(3) (os_random)
 * returns fixed bytes, so that the profiler's per-thread seeds, and with
 * them its sample points, repeat from run to run and from build to build.
 * Two builds' callgrind totals then differ only by what changed (churn
 * 16B-32K: totals repeat to about 30 instructions, where fresh seeds move
 * the prof=1 side by 1%). Every other system call goes to the kernel as
 * syscall(3) would send it. x86-64 only. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/syscall.h>

long syscall(long n, ...)
{
	va_list ap;
	va_start(ap, n);
	long a[6];
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long); /* as glibc's: six registers, used or not */
	va_end(ap);
	if (n == SYS_getrandom) {
		static unsigned k = 11;
		unsigned char *b = (unsigned char *)a[0];
		for (size_t i = 0; i < (size_t)a[1]; i++) {
			k = k * 1103515245u + 12345u;
			b[i] = (unsigned char)(k >> 16);
		}
		return a[1];
	}
	long ret;
	register long r10 __asm__("r10") = a[3];
	register long r8 __asm__("r8") = a[4];
	register long r9 __asm__("r9") = a[5];
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a[0]), "S"(a[1]), "d"(a[2]), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	if (ret < 0 && ret > -4096) {
		errno = (int)-ret;
		return -1;
	}
	return ret;
}
