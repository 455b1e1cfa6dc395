/* tcache_check.h: the thread-cache identities, checked on the slow paths in
 * the EBB_INVARIANTS build (tcache_check.c). Compiled out otherwise. */
#ifndef EBB_TCACHE_CHECK_H
#define EBB_TCACHE_CHECK_H

#include "tcache/tcache.h"

EBB_BEGIN_DECLS

#if EBB_INVARIANTS
/* Checks bin cls (its slots too), and
 * every bin's bounds and the byte budget every TCACHE_CHECK_EVERY calls (per
 * thread) or when cls == 0. Aborts with a report on the first that fails. */
void tcache_check(const tcache_t *tc, unsigned cls);
#define TCACHE_CHECK(tc, cls) tcache_check((tc), (cls))
#else
#define TCACHE_CHECK(tc, cls) ((void)0)
#endif

EBB_END_DECLS

#endif /* EBB_TCACHE_CHECK_H */
