/* central_check.h: the central-list identities, checked in the
 * EBB_INVARIANTS build (central_check.c). Compiled out otherwise. */
#ifndef EBB_CORE_CENTRAL_CHECK_H
#define EBB_CORE_CENTRAL_CHECK_H

#include "core/blocks/central.h"

EBB_BEGIN_DECLS

#if EBB_INVARIANTS
/* Caller holds c's lock. Checks c's counters and transfer stack every time,
 * its partial list span by span every CENTRAL_CHECK_EVERY calls (per thread)
 * or when `walk`. Aborts with a report on the first identity that fails. */
void central_check(const central_t *c, bool walk);
#define CENTRAL_CHECK(c) central_check((c), false)
#else
#define CENTRAL_CHECK(c) ((void)0)
#endif

EBB_END_DECLS

#endif /* EBB_CORE_CENTRAL_CHECK_H */
