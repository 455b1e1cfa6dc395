/* init.h: process start-up and option changes (fork: core/api/fork.c).
 *
 * No constructor is needed: the first call of any entry point runs
 * init_slow() once (other threads wait for it). It is safe wherever that
 * first call comes from (the dynamic loader, dlsym/dlerror, pthread_create, a
 * library constructor, a thread-local destructor) because the first phase
 * calls nothing that allocates: options from getenv, the size classes, the
 * page heaps and central lists (memory from os_map), the thread-exit key.
 * The fork handlers (core/api/fork.c) and the exit-time stats printer, which
 * may allocate, are registered later, by api.c's library constructor, once
 * the allocator works. */
#ifndef EBB_CORE_INIT_H
#define EBB_CORE_INIT_H

#include "core/runtime/atomic.h"
#include "core/base/config.h"
#include "core/runtime/options.h"

EBB_BEGIN_DECLS

enum init_state { INIT_NONE = 0, INIT_RUNNING = 1, INIT_DONE = 2, INIT_FAILED = 3 };
extern uint32_t init_state;

bool init_slow(void);

/* Lets the layers react to an option changed at run time (ebb_option_set:
 * the options table itself calls nobody). Any thread. */
void init_option_changed(enum option_id id);

/* true once the allocator can serve requests. */
EBB_INLINE bool init_ensure(void)
{
	if (EBB_LIKELY(atomic_load_u32_acquire(&init_state) == INIT_DONE))
		return true;
	return init_slow();
}

EBB_END_DECLS

#endif /* EBB_CORE_INIT_H */
