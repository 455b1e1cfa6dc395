/* owner.h: the owner-or-lock rule of task arenas and pools, written once.
 *
 * A handle created without EBB_SHARED may be used by its creating thread
 * only, without a lock; one created with EBB_SHARED by any thread holding
 * its lock. Every handle embeds an owner_t; arena.c and pool.c each describe
 * their kind of handle once (owner_kind_t) and enter and leave through the
 * functions below, so neither calls into the other.
 *
 * Invariant: thread != 0 exactly when the handle lives and was created
 * without EBB_SHARED (or was adopted since); magic is the kind's magic
 * exactly while the handle lives. */
#ifndef EBB_CORE_EXT_OWNER_H
#define EBB_CORE_EXT_OWNER_H

#include "core/base/config.h"
#include "core/base/util.h"
#include "core/runtime/atomic.h"
#include "ebbmalloc.h"

EBB_BEGIN_DECLS

/* The calling thread's identity: its thread pointer (never 0), or where the
 * compiler cannot read it, the address of a thread-local byte. */
#if defined(__has_builtin)
#if __has_builtin(__builtin_thread_pointer)
#define EBB_OWNER_HAVE_TP 1
#endif
#endif
#if !defined(EBB_OWNER_HAVE_TP) && defined(__GNUC__) && !defined(__clang__) && \
	(defined(__x86_64__) || defined(__aarch64__))
#define EBB_OWNER_HAVE_TP 1
#endif

#if defined(EBB_OWNER_HAVE_TP)
EBB_INLINE uintptr_t owner_thread_self(void)
{
	return (uintptr_t)__builtin_thread_pointer();
}
#else
uintptr_t owner_thread_self(void);
#endif

/* The words of a handle the rule reads. thread is first: the owner's fast
 * paths compare it and nothing else. */
typedef struct owner {
	uintptr_t thread;      /* owner's thread pointer; 0 when EBB_SHARED or destroyed */
	uint64_t magic;        /* the kind's magic while the handle lives, else 0 */
	uint32_t flags;        /* EBB_SHARED or 0 */
	ebb_lock_t lock;       /* EBB_SHARED only */
} owner_t;

/* One kind of handle (arena, pool): what a live one holds, how to tell a
 * live one from any other address, and what to report. */
typedef struct owner_kind {
	uint64_t magic;
	/* h is a live handle of this kind, found through the registry and the
	 * pagemap before any word of h is read. */
	bool (*handle_ok)(const void *h);
	const char *not_one;   /* report: no live handle of this kind */
	const char *not_ours;  /* report: a live handle another thread owns */
} owner_kind_t;

/* Not the owner: a shared handle (lock it and return true), another
 * thread's handle (report, errno EPERM) or no handle at all (report, errno
 * EINVAL). o is h's owner_t, NULL when h is. The words of o are read: h must
 * be readable memory; what it holds is checked. */
bool owner_enter_slow(const void *h, owner_t *o, const owner_kind_t *kind, const char *func);

/* The owner passes with one compare; anyone else goes through
 * owner_enter_slow. True: the caller may use the handle until owner_leave. */
EBB_INLINE bool owner_enter(const void *h, owner_t *o, const owner_kind_t *kind, const char *func)
{
	if (EBB_LIKELY(o != NULL && o->thread == owner_thread_self()))
		return true;
	return owner_enter_slow(h, o, kind, func);
}

EBB_INLINE void owner_leave(owner_t *o)
{
	if (o->flags & EBB_SHARED)
		lock_release(&o->lock);
}

/* A new handle: owned by the caller unless EBB_SHARED. Written before the
 * handle is handed out. */
EBB_INLINE void owner_init(owner_t *o, const owner_kind_t *kind, uint32_t flags)
{
	lock_init_rank(&o->lock, LOCK_RANK_EXT);
	o->flags = flags;
	o->thread = (flags & EBB_SHARED) ? 0 : owner_thread_self();
	o->magic = kind->magic;
}

/* Destroy: no thread owns it, no check passes it (the caller has entered). */
EBB_INLINE void owner_clear(owner_t *o)
{
	o->magic = 0;
	o->thread = 0;
}

/* ebb_*_adopt: the caller becomes the owner of an owned handle; a shared one
 * stays shared. */
EBB_INLINE void owner_adopt(owner_t *o)
{
	if (!(o->flags & EBB_SHARED))
		o->thread = owner_thread_self();
}

EBB_END_DECLS

#endif /* EBB_CORE_EXT_OWNER_H */
