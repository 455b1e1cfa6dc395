/* fork.c: what happens to the allocator at fork().
 *
 * The common case. The prefork handler takes libc's stdio list lock, then
 * every allocator lock in rank order (the background thread's, the
 * thread-cache list, pool handles, central lists, page heaps once no purge
 * pass is out, metadata), so that no structure is half-updated when the
 * child is cloned. The parent handler releases them in reverse; the child handler
 * re-initializes them, drops the other threads' caches, and can allocate at
 * once, also from new threads.
 *
 * Why the stdio list lock, and first (glibc bug 19431). glibc's fork runs
 * the prefork handlers, then takes the stdio list lock, then its own malloc
 * locks: that order is needed because fflush(NULL) holds the list lock
 * while it waits for each FILE's lock, and a FILE's lock is held across
 * malloc by getline, the first buffer allocation, and so on. A prefork
 * handler that takes the allocator's locks and returns inverts it: fork
 * holds them and waits for the list lock, fflush(NULL) holds that and waits
 * for a FILE, whose owner waits in malloc for a lock fork holds. Taking the
 * list lock here, before ours, gives fork glibc's own order: list lock, then
 * every malloc lock. glibc then takes the list lock again (it is
 * recursive), releases it once in the parent before our parent handler,
 * which releases it for good; in the child it has re-initialized it before
 * the child handlers run, so the child handler leaves it alone.
 * os_stdio_list_lock takes it only when glibc's fork takes and resets it
 * too (see os.h): in a single-threaded process, without those symbols (a
 * non-glibc libc) the order is moot or unknown, and nothing changes.
 * The other locks glibc 2.36's fork takes after the handlers do not invert
 * with ours: the NSS configuration lock (never held across malloc) and the
 * atfork lock (held around the handlers themselves; pthread_atfork holds it
 * across its malloc, which is our order too). Newer glibc also takes the
 * popen list lock there, which popen holds across malloc; it is not
 * exported, so a program that forks while another thread is in popen can
 * still deadlock on those versions (docs/reliability.md).
 *
 * A process that has never had a second thread (os_single_threaded) takes
 * no lock at all: no other thread can hold one or be half-way through a
 * structure, and this one holds none (lock_depth is 0). What the locks
 * would buy costs a fault on each page that holds one, twice a fork: the
 * parent's release and the child's re-initialization write pages the fork
 * has just made copy-on-write. A shell forks for every $(...) and pipe:
 * bash with 40 command substitutions, 10 -> 3 faults per fork in the parent
 * and 29 -> 24 in the child (issue 14). The child still runs the handlers
 * that forget threads and passes (thread caches, the purge pass, the
 * background thread, the timeline's file). The flag is read as this
 * handler runs: a prefork handler that runs after this one and starts a
 * thread, which could then take an allocator lock before the fork, is not
 * supported (glibc's own fork would not reset its stdio list lock either).
 *
 * Fork from a signal handler. The handler may have interrupted this very
 * thread inside the allocator, holding a lock (or a page heap's purge pass)
 * that only the interrupted frame will give back: the prefork handler would
 * wait for itself forever. lock_depth (atomic.h) counts what this thread
 * holds or is acquiring; when it is not zero the prefork handler takes
 * nothing, and its parent and child handlers do nothing. The parent goes on
 * as if nothing happened. The child has the allocator in whatever state the
 * interrupted frame and the other threads left it: like the child of any
 * fork from a signal handler, it may call only async-signal-safe functions
 * (_exit, execve, ...), and a malloc there may wait forever. When the
 * handler interrupted the thread outside the allocator, the fork is a
 * common one and the child's allocator is fully usable.
 *
 * What each prefork did is kept per thread, as a stack: handlers run in
 * LIFO order per thread, and a fork in a signal handler may interrupt this
 * thread's own fork between its prefork and postfork. */
#include "core/api/fork.h"

#include "core/runtime/atomic.h"
#include "core/process/background.h"
#include "core/process/timeline.h"
#include "core/blocks/central.h"
#include "core/process/init.h"
#include "core/runtime/meta.h"
#include "core/pages/page_heap.h"
#include "core/ext/pool.h"
#include "os/os.h"

/* Set once by fork_register, before the handlers can run. */
static void (*fork_tcache_prefork)(void);
static void (*fork_tcache_parent)(void);
static void (*fork_tcache_child)(void);

enum {
	FORK_TOOK_LOCKS = 1u, /* every allocator lock */
	FORK_TOOK_STDIO = 2u, /* libc's stdio list lock */
	FORK_SOLE = 4u,       /* no lock: the process has only this thread */
	FORK_FRAME_BITS = 3,
	FORK_LEVELS_MAX = 10, /* deeper nesting than this takes nothing (fits 32 bits) */
};

/* Level i's FORK_TOOK_* bits at bit FORK_FRAME_BITS * i; fork_level levels
 * are pushed. Touched only by this thread's fork handlers, which a signal
 * handler's fork may interrupt anywhere: a push counts the level before it
 * fills its slot, a pop empties its slot before it uncounts the level, so
 * a nested fork always works one level above a slot in use and leaves it
 * as it found it. */
static __thread uint32_t fork_frames;
static __thread unsigned fork_level;

#define FORK_SLOT(level) (((1u << FORK_FRAME_BITS) - 1) << (FORK_FRAME_BITS * (level)))

static void fork_push(unsigned took)
{
	unsigned level = fork_level;
	fork_level = level + 1;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (level < FORK_LEVELS_MAX)
		fork_frames |= (uint32_t)took << (FORK_FRAME_BITS * level);
}

static unsigned fork_pop(void)
{
	if (fork_level == 0)
		return 0; /* a handler without its prefork: nothing was taken */
	unsigned level = fork_level - 1, took = 0;
	if (level < FORK_LEVELS_MAX) {
		took = (fork_frames & FORK_SLOT(level)) >> (FORK_FRAME_BITS * level);
		fork_frames &= ~FORK_SLOT(level);
	}
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	fork_level = level;
	return took;
}

static void fork_prefork(void)
{
	unsigned took = 0;
	/* lock_depth first: a fork that interrupted init_slow sees INIT_RUNNING
	 * and takes nothing either way. */
	if (lock_depth != 0 || fork_level >= FORK_LEVELS_MAX ||
	    atomic_load_u32_acquire(&init_state) != INIT_DONE) {
		/* takes nothing */
	} else if (os_single_threaded()) {
		took |= FORK_SOLE;
	} else {
		if (os_stdio_list_lock())
			took |= FORK_TOOK_STDIO;
		background_prefork();
		timeline_prefork();
		fork_tcache_prefork();
		pool_prefork();
		central_prefork();
		page_heap_prefork();
		meta_prefork();
		took |= FORK_TOOK_LOCKS;
	}
	fork_push(took);
}

static void fork_postfork_parent(void)
{
	unsigned took = fork_pop();
	if (took & FORK_TOOK_LOCKS) {
		meta_postfork_parent();
		page_heap_postfork_parent();
		central_postfork_parent();
		pool_postfork_parent();
		fork_tcache_parent();
		timeline_postfork_parent();
		background_postfork_parent();
	}
	if (took & FORK_TOOK_STDIO)
		os_stdio_list_unlock();
}

static void fork_postfork_child(void)
{
	unsigned took = fork_pop();
	if (took & FORK_SOLE) {
		/* Every lock is free (fork_prefork): only the state that names
		 * threads or passes that do not exist in the child, and no page
		 * written that holds only a lock. */
		central_purge_postfork_child();
		fork_tcache_child();
		timeline_postfork_child();
		background_postfork_child();
	}
	if (took & FORK_TOOK_LOCKS) {
		meta_postfork_child();
		page_heap_postfork_child();
		central_postfork_child();
		pool_postfork_child();
		fork_tcache_child();
		timeline_postfork_child();
		background_postfork_child();
		/* The locks prefork counted were re-initialized, not released;
		 * prefork ran with lock_depth == 0. */
		lock_depth = 0;
	}
	/* FORK_TOOK_STDIO: glibc re-initialized the list lock before the child
	 * handlers ran; unlocking it again would break its count. */
}

bool fork_register(void (*tcache_prefork)(void), void (*tcache_parent)(void), void (*tcache_child)(void))
{
	fork_tcache_prefork = tcache_prefork;
	fork_tcache_parent = tcache_parent;
	fork_tcache_child = tcache_child;
	return os_atfork(fork_prefork, fork_postfork_parent, fork_postfork_child);
}
