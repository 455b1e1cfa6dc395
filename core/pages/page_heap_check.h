/* page_heap_check.h: the page-heap identities, checked under the heap's lock
 * in the EBB_INVARIANTS build (page_heap_check.c). Compiled out otherwise. */
#ifndef EBB_CORE_PAGE_HEAP_CHECK_H
#define EBB_CORE_PAGE_HEAP_CHECK_H

#include "core/pages/page_heap.h"

EBB_BEGIN_DECLS

#if EBB_INVARIANTS
/* Caller holds h's lock. Checks superblock sb (if not NULL) every time, and
 * the whole heap every PAGE_HEAP_CHECK_EVERY calls (per thread). Aborts with
 * a report on the first identity that fails. */
void page_heap_check(page_heap_t *h, superblock_t *sb);
#define PAGE_HEAP_CHECK(h, sb) page_heap_check((h), (sb))
#else
#define PAGE_HEAP_CHECK(h, sb) ((void)0)
#endif

EBB_END_DECLS

#endif /* EBB_CORE_PAGE_HEAP_CHECK_H */
