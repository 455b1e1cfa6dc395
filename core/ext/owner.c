/* owner.c: the slow side of the owner-or-lock rule (see owner.h). */
#include "core/ext/owner.h"

#include <errno.h>

#include "core/runtime/report.h"

#ifndef EBB_OWNER_HAVE_TP
static __thread char owner_thread_tag;

uintptr_t owner_thread_self(void)
{
	return (uintptr_t)&owner_thread_tag;
}
#endif

/* The shared check reads magic and flags before the lock is held: both are
 * written once before the handle is handed out, and a handle destroyed under
 * a caller's feet is a use after free the caller owns. */
EBB_NOINLINE bool owner_enter_slow(const void *h, owner_t *o, const owner_kind_t *kind, const char *func)
{
	if (EBB_LIKELY(o != NULL && o->magic == kind->magic && (o->flags & EBB_SHARED))) {
		lock_acquire(&o->lock);
		return true;
	}
	if (h == NULL || !kind->handle_ok(h)) {
		report_bad_pointer(func, h, kind->not_one);
		errno = EINVAL;
		return false;
	}
	report_bad_pointer(func, h, kind->not_ours);
	errno = EPERM;
	return false;
}
