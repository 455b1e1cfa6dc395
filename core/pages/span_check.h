/* span_check.h: span.h's ownership table as a checker, for the
 * EBB_INVARIANTS build (span_check.c). Every write of a span's state goes
 * through SPAN_SET_STATE; release builds make it the relaxed store.
 *
 * A descriptor has one writer at a time (span.h), but not one reader: the
 * lookup of a pointer (superblock_span_in, span_start, large_why_bad, the
 * huge header's check) reads state, page, npages and huge of whatever
 * descriptor the pagemap names, with no lock, while that span's owner may
 * rewrite them: a forged or stale pointer into a run the page heap is
 * merging or purging. So those four fields are written with relaxed stores
 * (SPAN_SET_STATE, span_set_*) and the lookups read them with relaxed loads
 * (span_load_*): the value read may be stale, never torn, and every lookup
 * checks what it read against the rest (bounds, state, start) before it
 * uses it. Readers that own the span or hold its heap's lock read them
 * plainly. */
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
	(span_check_transition((s), (to), (lock)), atomic_store_u8(&(s)->state, (uint8_t)(to)))
#else
#define SPAN_SET_STATE(s, to, lock) atomic_store_u8(&(s)->state, (uint8_t)(to))
#endif

EBB_INLINE void span_set_page(span_t *s, unsigned page) { atomic_store_u16(&s->page, (uint16_t)page); }
EBB_INLINE void span_set_npages(span_t *s, size_t n) { atomic_store_u32(&s->npages, (uint32_t)n); }
EBB_INLINE void span_set_huge(span_t *s, unsigned huge) { atomic_store_u8(&s->huge, (uint8_t)huge); }

EBB_INLINE unsigned span_load_state(const span_t *s) { return atomic_load_u8(&s->state); }
EBB_INLINE unsigned span_load_page(const span_t *s) { return atomic_load_u16(&s->page); }
EBB_INLINE size_t span_load_npages(const span_t *s) { return atomic_load_u32(&s->npages); }
EBB_INLINE bool span_load_huge(const span_t *s) { return atomic_load_u8(&s->huge) != 0; }

EBB_END_DECLS

#endif /* EBB_CORE_SPAN_CHECK_H */
