/* fork.h: what happens to the allocator at fork(); the whole story is in
 * fork.c and docs/architecture.md ("Start-up, TLS and fork").
 *
 * The handlers are registered once, from api.c's library constructor (not
 * from the first malloc, which may come from inside pthread_atfork itself,
 * holding the lock registration needs). api.c hands in the thread caches'
 * handlers because tcache/ sits above core/ and core/ never calls up. */
#ifndef EBB_CORE_FORK_H
#define EBB_CORE_FORK_H

#include "core/base/config.h"

EBB_BEGIN_DECLS

/* Registers the fork handlers; `tcache_*` are the thread caches' own, run in
 * their rank (after the background thread's, before the pools'). Call once,
 * after init_ensure() succeeded. false if pthread_atfork failed. */
bool fork_register(void (*tcache_prefork)(void), void (*tcache_parent)(void), void (*tcache_child)(void));

EBB_END_DECLS

#endif /* EBB_CORE_FORK_H */
