/* background.h: the thread that gives memory back while the program is idle.
 *
 * Every tick it runs decay on each page heap (purging dirty runs along the
 * decay curve and above the dirty budget), returns idle central batches to
 * their spans, asks thread caches to trim, and unmaps superblocks that have
 * been empty for unmap_delay_ms. It sleeps until the next heap has work due
 * (at most a second), until the next row of the stats timeline is due
 * (timeline.h), or until a free overruns the dirty budget and kicks it; an
 * overrun during a burst of frees is purged once the burst ends (at most
 * 100 ms later; at once if the dirty pages reach 4 times the budget).
 *
 * Start-up: never from the first malloc (which may run under a lock that
 * pthread_create needs, e.g. inside the dynamic loader or pthread_create
 * itself), nor from any free (glibc frees thread TLS holding its stack-cache
 * lock, which pthread_create takes), but from a later malloc slow path, a
 * thread's exit or an ebb_* call, holding no allocator lock, and only when
 * there is work: dirty pages, or a timeline. A program that never frees
 * memory never gets the thread, nor does one that has never had a second
 * thread while its dirty pages are few (background_solo_wants_thread).
 *
 * Parking: the thread does not end when idle. After PARK_IDLE_NS (1 s)
 * with nothing to do and nothing left to give back (no dirty pages for
 * decay, no transfer batch kept, no timeline, no warm cache) it unmaps
 * every entirely free superblock at once and sleeps on its event without a
 * tick; a free that leaves dirty pages wakes it with one futex wake (no
 * pthread call; see bg_park for why none is missed). It still looks now and
 * then (4 s, doubling to 32 s, or at once after an exit that leaves few
 * threads) whether it is the last thread of the process. A program that
 * must be single-threaded for the kernel (unshare(CLONE_NEWUSER)) turns the
 * option off at run time.
 *
 * It is re-created lazily in a forked child, can be turned off
 * (background_thread=0: decay then runs on allocation slow paths; turning
 * it off at run time returns once the thread is gone), names itself
 * "ebb-background", and exits when it is the last thread of the process,
 * so it never keeps a process alive after main() called pthread_exit(). */
#ifndef EBB_CORE_BACKGROUND_H
#define EBB_CORE_BACKGROUND_H

#include "core/base/config.h"

EBB_BEGIN_DECLS

bool background_running(void);
/* Whether a free that left dirty_pages dirty may start the thread, as far as
 * the process's threads go: always once it has had a second thread; while
 * it has one (single_threaded), only past a bound of dirty pages, below
 * which its frees decay in line. */
bool background_solo_wants_thread(bool single_threaded, size_t dirty_pages);
/* Starts the thread if the option asks for it, there is work for it and it
 * is not running, or wakes it from its park; cheap when there is nothing to
 * do. Creates a thread (pthread_create), so call it only where glibc holds
 * none of its locks: a malloc slow path, a thread's exit, an ebb_* call;
 * never on a free (background.c, maybe_start_at). No allocator lock held. */
void background_maybe_start(void);
/* The same for any slow path, frees included: never creates the thread
 * (runs its rounds in line instead while there is none), only wakes it. */
void background_poll(void);
/* background_maybe_start, whether or not pages are dirty: a thread cache just
 * went warm into the pool (tcache.c), which only the thread's epoch hook
 * flushes. From a thread's exit. */
void background_start_for_pool(void);
/* The pool's count of warm caches, set by tcache.c under its list lock at
 * each change: the thread does not park while it is not 0 (bg_quiet). */
void background_note_warm(uint32_t caches);
/* The page heap's dirty hook (page_heap_set_dirty_hook; now: the caller's
 * os_now_ns reading): starts the thread
 * if there is work for it; true if it runs (and was kicked if the dirty
 * budget is overrun), false if the caller must decay in line. */
bool background_on_dirty(uint64_t now);
/* Called once by start-up after the allocator works: until then no thread is
 * started and no timeline row is written from the slow paths. */
void background_enable(void);
/* Wakes the thread now (a free overran the dirty budget). */
void background_kick(void);
/* The rule for a dirty budget overrun (background.c, bg_hold_overrun):
 * true while the purge of `excess` (of `dirty` pages) keeps waiting for a
 * burst of frees to end, `held_ns` after the overrun was found and
 * `quiet_ns` after the last free into a page heap. It waits while frees
 * come at least every 2 ms, for at most 100 ms, and not at all once the
 * dirty pages are 4 times the budget. */
bool background_overrun_waits(uint64_t held_ns, uint64_t quiet_ns, size_t excess, size_t dirty);
/* Runs one tick's work on the calling thread (ebb_trim, tests). */
size_t background_tick(uint64_t now, bool all);
/* A thread cache was given back by an exiting thread (tcache.c), which
 * leaves threads_left caches in use. When that is at most one, and no exit
 * did this in the last 100 ms: sends every transfer batch to its spans and,
 * if that leaves the heaps wound down (page_heap_wound_down) and decay_ms is
 * not -1, has every dirty run purged at once: by the background thread when
 * it runs (woken for it; it purges if the heaps are still wound down), else
 * here. Call with no allocator lock held. */
void background_thread_exited(uint64_t now, uint64_t threads_left);
/* Raised about once a second while the thread runs (and by ebb_trim): each
 * thread cache trims its bins at its next slow path when it sees a new value. */
uint64_t background_trim_epoch(void);
/* Called by background_tick right after it raised the trim epoch, with its
 * `all` (ebb_trim): the thread caches flush the caches of exited threads
 * they keep warm (tcache.c, "The pool"). Set once, by the first cache. */
void background_set_epoch_hook(void (*fn)(bool all));
void background_option_changed(void);

void background_prefork(void);
void background_postfork_parent(void);
void background_postfork_child(void);

EBB_END_DECLS

#endif /* EBB_CORE_BACKGROUND_H */
