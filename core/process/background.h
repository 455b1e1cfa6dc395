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
 * itself), but from a later slow path that holds no allocator lock and only
 * when there is work: pages turned dirty (a span back to the page heap), or
 * a timeline. A program that never frees memory never gets the thread, nor
 * does one that has never had a second thread while its dirty pages are few
 * (background_solo_wants_thread).
 *
 * Retirement: the thread ends after RETIRE_IDLE_NS (1 s) with nothing to do
 * and nothing left to give back (no dirty pages for decay, no transfer batch
 * kept, no timeline), after unmapping every entirely free superblock at
 * once, so a quiet program is single-threaded again for the kernel
 * (unshare(CLONE_NEWUSER) works; glibc's fast paths do not come back: its
 * __libc_single_threaded stays false after the first thread, which is why
 * background_solo_wants_thread waits before the first one). The next free that makes
 * pages dirty starts a new one (see bg_retire for why none is missed).
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
/* Starts the thread if the option asks for it and it is not running; cheap
 * when there is nothing to do. Call with no allocator lock held. */
void background_maybe_start(void);
/* The same, whether or not pages are dirty: a thread cache just went warm
 * into the pool (tcache.c), which only the thread's epoch hook flushes. From
 * a thread's exit, a safe place to create a thread: the exit's flush used to
 * start it there, and without it the first dirty page came in some later
 * free, one of them glibc's, made inside pthread_create with its stack-cache
 * lock held, so that starting the thread there deadlocked
 * (stress.larson_preload hung about once in 70 runs). */
void background_start_for_pool(void);
/* The pool's count of warm caches, set by tcache.c under its list lock at
 * each change: the thread does not retire while it is not 0 (bg_quiet). */
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
