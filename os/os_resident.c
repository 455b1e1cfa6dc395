/* os_resident.c: which pages of a mapping the kernel holds resident
 * (mincore). Kept apart from os_linux.c so that the unit tests' fake os/
 * (tests/support/os_fake.c) uses the real call as well: the stats'
 * resident count of the metadata (core/runtime/meta.c) is tested against
 * the kernel's own answer. */
#define _GNU_SOURCE
#include "os/os.h"

#include <sys/mman.h>

size_t os_resident_pages(const void *p, size_t len)
{
	/* In pieces of 1024 pages, so the vector stays on the stack. */
	enum { PAGE_SHIFT = 12, PIECE = 1024 };
	unsigned char v[PIECE];
	size_t pages = len >> PAGE_SHIFT, n = 0;
	const char *q = p;
	for (size_t at = 0; at < pages;) {
		size_t k = pages - at < PIECE ? pages - at : PIECE;
		if (mincore((void *)(q + (at << PAGE_SHIFT)), k << PAGE_SHIFT, v) != 0)
			return (size_t)-1;
		for (size_t i = 0; i < k; i++)
			n += v[i] & 1;
		at += k;
	}
	return n;
}
