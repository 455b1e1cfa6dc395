/* span_check.h: span.h's ownership table as a checker, for the
 * EBB_INVARIANTS build (span_check.c). Every write of a span's state goes
 * through SPAN_SET_STATE; release builds make it the plain store. */
#ifndef EBB_CORE_SPAN_CHECK_H
#define EBB_CORE_SPAN_CHECK_H

#include "core/pages/span.h"
#include "core/runtime/atomic.h"

EBB_BEGIN_DECLS

#if EBB_INVARIANTS
/* Aborts with a report unless span.h's table lets s go from its current
 * state to `to`, and, when `lock` is not NULL, this thread holds it (the
 * page heap's lock for every state write, span.h; NULL: the writer owns the
 * span alone, e.g. a superblock not yet published). */
void span_check_transition(const span_t *s, unsigned to, const ebb_lock_t *lock);
#define SPAN_SET_STATE(s, to, lock) \
	(span_check_transition((s), (to), (lock)), (void)((s)->state = (uint8_t)(to)))
#else
#define SPAN_SET_STATE(s, to, lock) ((void)((s)->state = (uint8_t)(to)))
#endif

EBB_END_DECLS

#endif /* EBB_CORE_SPAN_CHECK_H */
