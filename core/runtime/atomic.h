/* atomic.h: the atomic operations and the lock ebbmalloc uses, named for their
 * memory order.
 *
 * Production builds use Concurrency Kit (ck_pr_*, ck_spinlock_fas). Under
 * ThreadSanitizer the same names map to the compiler's __atomic builtins:
 * even with CK_USE_CC_BUILTINS=1, CK emulates fetch-and-store with a plain
 * load plus CAS and unlocks with a fence followed by a volatile store, which
 * TSan reports as races on the lock word (checked: a four-thread counter under
 * ck_spinlock_fas reports at once). The builtins say the same thing in a form
 * TSan understands.
 *
 * Lock: a word that reads 0 (free), 1 (held) or 2 (held, and a thread may be
 * asleep on it). A waiter spins a little, then marks the word 2 and sleeps on
 * it (os_wait_u32); a release that finds 2 wakes one sleeper. So a thread
 * behind a preempted holder takes no CPU until the holder lets go, and runs
 * as soon as it does: with 64 threads on 2 cores a waiter that yielded
 * instead spent 1-134 ms of wall time per wait (means by run; each yield can
 * put it behind the other runnable threads), and with nothing else to run it
 * spun through the holder's whole time away (tests/test_lock.cpp).
 * Every lock has a rank (enum lock_rank); locks are only ever nested in rank
 * order, which is also the order fork takes them in (core/api/fork.c).
 *
 * Every acquire and release also counts, per thread, the allocator locks the
 * thread holds or is waiting for (lock_depth): a fork from a signal handler
 * reads it to tell whether the frame it interrupted holds a lock, which the
 * prefork handler must then not wait for (core/api/fork.c). One add to an
 * initial-exec TLS word per acquire and per release; the malloc/free fast
 * paths take no lock and do not touch it. */
#ifndef EBB_CORE_ATOMIC_H
#define EBB_CORE_ATOMIC_H

#include "core/base/config.h"
#include "core/base/util.h"
#include "os/os.h"

#if !EBB_TSAN
#include <ck_pr.h>
#include <spinlock/fas.h> /* only the lock we use: the others are not valid C++ */
#endif

EBB_BEGIN_DECLS

/* Lock ranks, lowest taken first. A thread holding a lock of rank r only
 * acquires (waits for) locks of rank > r; lock_try never waits, so it may
 * take any rank. Never two locks of one rank: a thread holds at most one
 * central list, one page heap, ... at a time, except the fork handlers,
 * which take every lock of a rank in array order (lock_bulk_enter). The
 * EBB_INVARIANTS build checks this at every acquire (lock_check.c). */
enum lock_rank {
	LOCK_RANK_NONE = 0,        /* not given a rank: an acquire aborts (EBB_INVARIANTS) */
	LOCK_RANK_TIMELINE = 1,    /* timeline.c: a row reads every stat under it */
	LOCK_RANK_TCACHE_LIST = 2, /* tcache.c: the list of live thread caches */
	LOCK_RANK_EXT = 3,         /* arena.c, pool.c: a shared arena's or pool's lock */
	LOCK_RANK_POOL_HANDLES = 4,/* pool.c: the pool the ebb_pool handles come from */
	LOCK_RANK_CENTRAL = 5,     /* central.c: one per (cpu, class) list */
	LOCK_RANK_PAGE_HEAP = 6,   /* page_heap.c: one per page heap */
	LOCK_RANK_META = 7,        /* meta.c: the metadata bump allocator */
	LOCK_RANK_OPTIONS = 8,     /* options.c: the string options' texts (a leaf) */
	LOCK_RANK_COUNT
};

/* EBB_INVARIANTS: what the lock adds to its word. The rank is set once
 * (EBB_LOCK_INITIALIZER_RANK, lock_init_rank) and kept by lock_init; holder
 * names the thread that holds the lock (lock_thread_self), 0 when free. */
#if EBB_INVARIANTS
#define EBB_LOCK_CHECK_FIELDS unsigned rank; uintptr_t holder;
#else
#define EBB_LOCK_CHECK_FIELDS
#endif

#if EBB_TSAN

typedef struct { unsigned int value; EBB_LOCK_CHECK_FIELDS } ebb_lock_t;
#if EBB_INVARIANTS
#define EBB_LOCK_INITIALIZER_RANK(r) {0, (r), 0}
#else
#define EBB_LOCK_INITIALIZER_RANK(r) {0}
#endif

static inline bool lock_try_raw(ebb_lock_t *l)
{
	unsigned int free_word = 0;
	return __atomic_compare_exchange_n(&l->value, &free_word, 1u, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}
/* Sets the word to v; returns what it held. */
static inline unsigned int lock_swap_raw(ebb_lock_t *l, unsigned int v)
{
	return __atomic_exchange_n(&l->value, v, __ATOMIC_ACQUIRE);
}
/* true if a waiter may be asleep on the word. */
static inline bool lock_release_raw(ebb_lock_t *l)
{
	return __atomic_exchange_n(&l->value, 0u, __ATOMIC_RELEASE) == 2;
}
static inline const uint32_t *lock_word(ebb_lock_t *l) { return &l->value; }
static inline bool lock_is_held(ebb_lock_t *l)
{
	return __atomic_load_n(&l->value, __ATOMIC_RELAXED) != 0;
}

static inline uint64_t atomic_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void atomic_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint64_t atomic_add_u64(uint64_t *p, uint64_t d) { return __atomic_fetch_add(p, d, __ATOMIC_RELAXED); }
static inline uint64_t atomic_sub_u64(uint64_t *p, uint64_t d) { return __atomic_fetch_sub(p, d, __ATOMIC_RELAXED); }
static inline uint32_t atomic_load_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint32_t atomic_load_u32_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void atomic_store_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void atomic_store_u32_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline bool atomic_cas_u32(uint32_t *p, uint32_t expect, uint32_t desired)
{
	return __atomic_compare_exchange_n(p, &expect, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline uint64_t atomic_load_u64_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
/* On failure *expect becomes the value found (a retry loop needs no reload). */
static inline bool atomic_cas_u64_value(uint64_t *p, uint64_t *expect, uint64_t desired)
{
	return __atomic_compare_exchange_n(p, expect, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline uint8_t atomic_load_u8(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void atomic_store_u8(uint8_t *p, uint8_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint16_t atomic_load_u16(const uint16_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void atomic_store_u16(uint16_t *p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint8_t atomic_peek_u8(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint16_t atomic_peek_u16(const uint16_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint32_t atomic_peek_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void atomic_store_u8_release(uint8_t *p, uint8_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint8_t atomic_load_u8_acquire(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void *atomic_load_ptr_acquire(void *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void atomic_store_ptr_release(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void atomic_spin_pause(void) { }

#else /* Concurrency Kit */

typedef struct { ck_spinlock_fas_t fas; EBB_LOCK_CHECK_FIELDS } ebb_lock_t;
#if EBB_INVARIANTS
#define EBB_LOCK_INITIALIZER_RANK(r) {CK_SPINLOCK_FAS_INITIALIZER, (r), 0}
#else
#define EBB_LOCK_INITIALIZER_RANK(r) {CK_SPINLOCK_FAS_INITIALIZER}
#endif

/* A compare-and-swap from free, not fas's exchange: an exchange to 1 would
 * overwrite a sleeper's 2, and the release would not wake it. */
static inline bool lock_try_raw(ebb_lock_t *l)
{
	bool ok = ck_pr_cas_uint(&l->fas.value, 0, 1);
	ck_pr_fence_lock();
	return ok;
}
static inline unsigned int lock_swap_raw(ebb_lock_t *l, unsigned int v)
{
	unsigned int old = ck_pr_fas_uint(&l->fas.value, v);
	ck_pr_fence_lock();
	return old;
}
static inline bool lock_release_raw(ebb_lock_t *l)
{
	ck_pr_fence_unlock();
	return ck_pr_fas_uint(&l->fas.value, 0) == 2;
}
static inline const uint32_t *lock_word(ebb_lock_t *l) { return &l->fas.value; }
static inline bool lock_is_held(ebb_lock_t *l) { return ck_pr_load_uint(&l->fas.value) != 0; }

static inline uint64_t atomic_load_u64(const uint64_t *p) { return ck_pr_load_64(p); }
static inline void atomic_store_u64(uint64_t *p, uint64_t v) { ck_pr_store_64(p, v); }
static inline uint64_t atomic_add_u64(uint64_t *p, uint64_t d) { return ck_pr_faa_64(p, d); }
static inline uint64_t atomic_sub_u64(uint64_t *p, uint64_t d) { return ck_pr_faa_64(p, (uint64_t)0 - d); }
static inline uint32_t atomic_load_u32(const uint32_t *p) { return ck_pr_load_32(p); }
static inline uint32_t atomic_load_u32_acquire(const uint32_t *p)
{
	uint32_t v = ck_pr_load_32(p);
	ck_pr_fence_acquire();
	return v;
}
static inline void atomic_store_u32(uint32_t *p, uint32_t v) { ck_pr_store_32(p, v); }
static inline void atomic_store_u32_release(uint32_t *p, uint32_t v)
{
	ck_pr_fence_release();
	ck_pr_store_32(p, v);
}
static inline bool atomic_cas_u32(uint32_t *p, uint32_t expect, uint32_t desired)
{
	return ck_pr_cas_32(p, expect, desired); /* full barrier on x86 */
}
static inline uint64_t atomic_load_u64_acquire(const uint64_t *p)
{
	uint64_t v = ck_pr_load_64(p);
	ck_pr_fence_acquire();
	return v;
}
/* On failure *expect becomes the value found (a retry loop needs no reload). */
static inline bool atomic_cas_u64_value(uint64_t *p, uint64_t *expect, uint64_t desired)
{
	return ck_pr_cas_64_value(p, *expect, desired, expect); /* full barrier on x86 */
}
static inline uint8_t atomic_load_u8(const uint8_t *p) { return ck_pr_load_8(p); }
static inline void atomic_store_u8(uint8_t *p, uint8_t v) { ck_pr_store_8(p, v); }
static inline uint16_t atomic_load_u16(const uint16_t *p) { return ck_pr_load_16(p); }
static inline void atomic_store_u16(uint16_t *p, uint16_t v) { ck_pr_store_16(p, v); }
/* The plain load, on purpose: see atomic_peek_u8 below. */
static inline uint8_t atomic_peek_u8(const uint8_t *p) { return *p; }
static inline uint16_t atomic_peek_u16(const uint16_t *p) { return *p; }
static inline uint32_t atomic_peek_u32(const uint32_t *p) { return *p; }
static inline void atomic_store_u8_release(uint8_t *p, uint8_t v)
{
	ck_pr_fence_release();
	ck_pr_store_8(p, v);
}
static inline uint8_t atomic_load_u8_acquire(const uint8_t *p)
{
	uint8_t v = ck_pr_load_8(p);
	ck_pr_fence_acquire();
	return v;
}
static inline void *atomic_load_ptr_acquire(void *const *p)
{
	void *v = ck_pr_load_ptr(p);
	ck_pr_fence_acquire();
	return v;
}
static inline void atomic_store_ptr_release(void **p, void *v)
{
	ck_pr_fence_release();
	ck_pr_store_ptr(p, v);
}
static inline void atomic_spin_pause(void) { ck_pr_stall(); }

#endif

/* atomic_peek_u8/u16/u32: the relaxed load of a page-table entry
 * (superblock.h's pmap) or a span field on the fast paths
 * that look a pointer up: free's, the one block test (core/blocks/block.h),
 * superblock_span_in (the pool's free, realloc of a page run), which a
 * lookup of a forged or stale pointer makes while the span's owner rewrites
 * the field with atomic_store_u8/u16/u32. Under TSan it is the relaxed builtin, as the
 * registry byte is (superblock.h). Elsewhere it is the plain load: on
 * x86-64 an aligned byte or halfword load is single-copy atomic, and a
 * relaxed load is the same mov, but gcc 12 -O2 folds neither the relaxed
 * builtin nor CK's asm load into its use (cmpb $1,(mem) becomes movzbl +
 * cmpb, the pagemap index gets an lea of its own: checked on a copy of
 * tcache_free), and the free fast path is counted by the instruction.
 * Each caller uses the value it read once (no second load to disagree
 * with the first). Everywhere off the fast paths: atomic_load_u8/u16. */

#define EBB_LOCK_INITIALIZER EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_NONE)

/* ---------------------------------------------------------------------------
 * The lock-order checker (EBB_INVARIANTS only; lock_check.c)
 * ------------------------------------------------------------------------- */
#if EBB_INVARIANTS
/* Per thread: how many locks of each rank it holds, and whether it is in a
 * fork handler's take-them-all loop (same rank allowed, in array order). */
extern __thread uint16_t lock_ranks_held[LOCK_RANK_COUNT] __attribute__((tls_model("initial-exec")));
extern __thread unsigned lock_bulk __attribute__((tls_model("initial-exec")));

/* Never 0; differs between live threads. */
static inline uintptr_t lock_thread_self(void)
{
	return (uintptr_t)&lock_bulk;
}

/* Before waiting for l: aborts, naming both ranks, if this thread holds a
 * lock of l's rank or above (or l itself). */
void lock_check_order(const ebb_lock_t *l);
/* The report and abort: `held` is the rank found held. */
EBB_NORETURN void lock_check_fail(const ebb_lock_t *l, unsigned held);

static inline void lock_check_took(ebb_lock_t *l)
{
	l->holder = lock_thread_self();
	if (l->rank != LOCK_RANK_NONE)
		lock_ranks_held[l->rank]++;
}

static inline void lock_check_gave(ebb_lock_t *l)
{
	if (l->holder == lock_thread_self() && l->rank != LOCK_RANK_NONE)
		lock_ranks_held[l->rank]--;
	l->holder = 0;
}

/* This thread holds l (the owner checks of span.h's table). */
static inline bool lock_held_by_self(const ebb_lock_t *l)
{
	return l->holder == lock_thread_self();
}
#endif

static inline void lock_init_rank(ebb_lock_t *l, enum lock_rank rank)
{
	*l = (ebb_lock_t)EBB_LOCK_INITIALIZER_RANK(rank);
	(void)rank;
}

/* Back to free (start-up, a fork child). The rank stays; a lock this thread
 * held counts as released (the fork child re-initializes the locks its
 * prefork took). */
static inline void lock_init(ebb_lock_t *l)
{
#if EBB_INVARIANTS
	lock_check_gave(l);
	lock_init_rank(l, (enum lock_rank)l->rank);
#else
	*l = (ebb_lock_t)EBB_LOCK_INITIALIZER;
#endif
}

/* Around a fork handler's loop that takes every lock of one rank, in array
 * order (the one place two locks of a rank are held). */
static inline void lock_bulk_enter(void)
{
#if EBB_INVARIANTS
	lock_bulk++;
#endif
}

static inline void lock_bulk_leave(void)
{
#if EBB_INVARIANTS
	lock_bulk--;
#endif
}

/* How many allocator locks this thread holds or is waiting for, plus the
 * lock-like states it holds with the lock dropped (a page heap's purge pass:
 * lock_depth_enter/leave). Defined in init.c (every build of core/ links it).
 *
 * Invariant, as a signal handler on this thread sees it: whenever the thread
 * is between the start of an acquire and the end of the matching release,
 * lock_depth > 0. So the count goes up before the lock word is touched and
 * down only after it is cleared; the signal fences keep the compiler from
 * moving the plain TLS update across the lock's atomic (a handler runs on the
 * same thread, so no CPU fence is needed). It may read > 0 a moment too long
 * (between the release and the decrement): the reader then only skips work,
 * it never waits for a lock it holds itself. */
extern __thread unsigned lock_depth __attribute__((tls_model("initial-exec")));

static inline void lock_depth_enter(void)
{
	lock_depth++;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

static inline void lock_depth_leave(void)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	lock_depth--;
}

/* Spin a little (the holder usually leaves within a few hundred cycles),
 * then sleep until a release wakes us. The word stays 2 while anyone may
 * sleep: a waiter that takes the lock by its exchange leaves it 2 (one
 * needless wake at worst), never 1. */
static EBB_NOINLINE void lock_acquire_slow(ebb_lock_t *l)
{
	for (int i = 0; i < 64; i++) {
		if (!lock_is_held(l) && lock_try_raw(l))
			return;
		atomic_spin_pause();
	}
	while (lock_swap_raw(l, 2) != 0)
		os_wait_u32(lock_word(l), 2);
}

static inline void lock_acquire(ebb_lock_t *l)
{
	lock_depth_enter();
#if EBB_INVARIANTS
	lock_check_order(l);
#endif
	if (EBB_UNLIKELY(!lock_try_raw(l)))
		lock_acquire_slow(l);
#if EBB_INVARIANTS
	lock_check_took(l);
#endif
}

/* Never waits, so it may take a lock of any rank. */
static inline bool lock_try(ebb_lock_t *l)
{
	lock_depth_enter();
	if (lock_try_raw(l)) {
#if EBB_INVARIANTS
		lock_check_took(l);
#endif
		return true;
	}
	lock_depth_leave();
	return false;
}

static inline void lock_release(ebb_lock_t *l)
{
#if EBB_INVARIANTS
	lock_check_gave(l);
#endif
	if (EBB_UNLIKELY(lock_release_raw(l)))
		os_wake_one(lock_word(l));
	lock_depth_leave();
}

EBB_END_DECLS

#endif /* EBB_CORE_ATOMIC_H */
