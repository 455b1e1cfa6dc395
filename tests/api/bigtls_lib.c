/* bigtls_lib.c: a library with 1 MiB of thread-local storage, for
 * test_background_start.cpp. dlopen()ed, its TLS is dynamic: glibc
 * mallocs each thread's block at the thread's first access
 * (__tls_get_addr) and frees it in _dl_deallocate_tls, which for a thread
 * on a stack of the program's own runs at pthread_join holding glibc's
 * stack-cache lock. 1 MiB is a large block of ebbmalloc's page heap: its
 * free turns pages dirty. */
#include <string.h>

#define BIGTLS_BYTES (1u << 20)

static __thread char bigtls_block[BIGTLS_BYTES];

void bigtls_touch(void);

void bigtls_touch(void)
{
	memset(bigtls_block, 1, sizeof bigtls_block);
}
