/* owner.h: the identity of the calling thread, for the owner check of task
 * arenas and pools (a handle created without EBB_SHARED may be used by its
 * creating thread only, without a lock). Shared by arena.c and pool.c, so
 * neither calls into the other. */
#ifndef EBB_CORE_EXT_OWNER_H
#define EBB_CORE_EXT_OWNER_H

#include "core/base/config.h"
#include "core/base/util.h"

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

EBB_END_DECLS

#endif /* EBB_CORE_EXT_OWNER_H */
