/* os_fake.h: controls of the test double of os.h (os_fake.c), linked into
 * the unit tests instead of os_linux.c. Memory is real (mmap), so the page
 * heap and central lists work on real superblocks; time, the CPU id and the
 * CPU count are whatever the test says; every map, purge and unmap is
 * counted. */
#ifndef EBB_TESTS_OS_FAKE_H
#define EBB_TESTS_OS_FAKE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct os_fake_counts {
	uint64_t maps, unmaps, purges, purged_bytes, failed;
} os_fake_counts_t;

void os_fake_set_now(uint64_t ns);
void os_fake_advance(uint64_t ns);
uint64_t os_fake_now(void);
void os_fake_set_cpu(unsigned cpu);
os_fake_counts_t os_fake_counts(void);
/* What os_thp_always answers (default 0: the machine's setting is not read). */
void os_fake_set_thp_always(int on);
/* Whether the pages at p read back as zero and are not resident (mincore). */
int os_fake_resident(const void *p);

#ifdef __cplusplus
}
#endif
#endif
