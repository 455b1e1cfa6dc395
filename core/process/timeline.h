/* timeline.h: the CSV stats timeline (options stats_interval_ms, stats_file).
 *
 * Every stats_interval_ms the allocator appends one row to stats_file: the
 * time, the kernel's RSS of the process, and the byte gauges of struct
 * ebb_stats, so that a run can be plotted afterwards (bench/plot_timeline.sh).
 * The file is opened at the first row, with a header line; "%p" in its name
 * is replaced by the process id, so that children which inherit EBB_OPTIONS
 * write their own files. An empty stats_file means stderr.
 *
 * Which files (os_file_create): a new one, created with O_EXCL, or an
 * existing empty regular file of the process's effective user with one
 * link, appended to. Never a symbolic link (O_NOFOLLOW), a FIFO or a device,
 * never truncated: anything else is refused with a warning naming it. In a
 * setuid/setgid process EBB_OPTIONS is not read at all (options.h).
 *
 * Who writes: the background thread, which wakes for the next row as it
 * wakes for decay (background.c). Without it (background_thread=0, or the
 * thread could not start), rows are written from allocation slow paths
 * (background_maybe_start), so a program that stops allocating writes no
 * rows until it allocates again. A last row is written when the process
 * exits normally. One writer at a time: whoever claims the row first writes
 * it, others skip.
 *
 * Never a hang: opening does not block (O_NONBLOCK, regular files only);
 * rows for stderr are dropped when it cannot take them at once (a full pipe,
 * a stopped terminal); no cancellation point runs under tl_lock (os/ I/O is
 * raw system calls), and nobody waits for tl_lock unboundedly (writers
 * lock_try, the exit row gives up after a second, fork does not take it).
 *
 * Nothing here allocates: rows are formatted into a fixed buffer and written
 * with os_file_write. A forked child keeps writing only if the path has
 * "%p" (to its own file); otherwise the parent's file stays the parent's. */
#ifndef EBB_CORE_TIMELINE_H
#define EBB_CORE_TIMELINE_H

#include "core/base/config.h"

EBB_BEGIN_DECLS

/* Whether stats_interval_ms is set (one relaxed load). */
bool timeline_enabled(void);
/* Writes a row if one is due at `now`. Any thread, no allocator lock held
 * (it collects stats, which takes the central and page-heap locks). */
void timeline_poll(uint64_t now);
/* Nanoseconds from `now` until the next row is due: 0 if it is due now,
 * UINT64_MAX if the timeline is off or finished. */
uint64_t timeline_wait_ns(uint64_t now);
/* Writes the last row and closes the file (process exit); no row after it. */
/* Called once by start-up after the allocator works; before it, the exit
 * row is not written (there is nothing to read the stats of). */
void timeline_enable(void);
void timeline_finish(void);

/* Fork: no row is half-written when the child is cloned. */
void timeline_prefork(void);
void timeline_postfork_parent(void);
void timeline_postfork_child(void);

EBB_END_DECLS

#endif /* EBB_CORE_TIMELINE_H */
