/* decay.h: how many dirty pages may stay resident, as a function of time.
 *
 * Pure policy: no locks, no system calls; time and page counts are passed in,
 * so tests drive it with a virtual clock. One decay_t per page heap, used
 * under that heap's lock.
 *
 * The rule: a page that became dirty at time t may stay dirty with weight
 * w(now - t), where w falls smoothly from 1 (just freed) to 0 (freed
 * interval_ns ago or earlier) along 1 - smoothstep. Time is cut into
 * EBB_DECAY_EPOCHS epochs per interval; the pages that became dirty in each
 * recent epoch are remembered (the backlog). The limit is
 *     sum over epochs of backlog[e] * w(age of e)  +  pages dirtied this epoch
 * and everything above it should be purged, oldest first. So a burst of frees
 * is given back gradually over one interval (no latency spike, little
 * re-faulting if the memory is wanted again soon), and all of it is back once
 * the interval has passed.
 *
 * Time here is the idle clock (decay_clock_now), not the wall clock: every
 * `now` passed in is a wall time, translated. Idle means idle, not freed a
 * moment ago while the program kept working: a program that loops over large
 * blocks may write one for more than decay_ms of wall time on a loaded
 * machine without calling the allocator, and that is no idle time for the
 * runs it freed just before (they are what its next turn asks for). The
 * background thread ticks the clock (decay_clock_tick) with what the
 * process's other threads used of the CPUs since its last tick. A window
 * between two ticks is *busy* when they used at least 1/EBB_DECAY_BUSY_SHARE
 * of one CPU in it or were preempted in it (on a loaded machine a working
 * program may get less than that, but it is preempted; a parked one is not),
 * or ended at most EBB_DECAY_BUSY_HOLD_NS after one with a preemption, and
 * the program is cycling (it took dirty pages back for large blocks within
 * the last half to whole decay_ms: page_heap_reuse_pages). A busy window
 * counts as idle time the CPU time the program used in it (a program that
 * gets a tenth of a CPU takes ten times the wall time for a turn of its
 * loop), at least 1/EBB_DECAY_BUSY_SLOW and at most all of its wall time;
 * every other window (a parked program uses no CPU; a burst's frees take no
 * dirty pages back) counts in full. So a parked program gets its memory back
 * as before, and so does one with a whole CPU; one that keeps computing
 * without allocating stops cycling after at most decay_ms of idle time, at
 * most EBB_DECAY_BUSY_SLOW x decay_ms of wall time, and its pages are back
 * by then. Without a background thread the clock never ticks: wall time. */
#ifndef EBB_CORE_DECAY_H
#define EBB_CORE_DECAY_H

#include "core/base/config.h"

EBB_BEGIN_DECLS

#define EBB_DECAY_EPOCHS 16
/* A busy window counts the CPU time the program used in it, at least 1/N of
 * its wall time. */
#define EBB_DECAY_BUSY_SLOW 8
/* Busy: the other threads used at least 1/N of one CPU over the window. */
#define EBB_DECAY_BUSY_SHARE 32
/* A window with no sign of work this soon after one with a preemption is
 * busy too (a preempted thread waiting for a CPU all along shows none). */
#define EBB_DECAY_BUSY_HOLD_NS 500000000ull
/* A longer window (the thread slept or was away) is never counted busy. */
#define EBB_DECAY_BUSY_MAX_WINDOW_NS 1000000000ull

typedef struct decay {
	uint64_t interval_ns;  /* 0: purge at once; UINT64_MAX: never */
	uint64_t epoch_ns;     /* interval_ns / EBB_DECAY_EPOCHS */
	uint64_t epoch_start;  /* start of the current epoch */
	size_t epoch_base;     /* dirty pages at the start of the current epoch */
	size_t backlog[EBB_DECAY_EPOCHS]; /* [EPOCHS-1] is the newest complete epoch */
} decay_t;

void decay_init(decay_t *d, uint64_t interval_ns, uint64_t now);
/* Changes the interval, keeping the backlog. */
void decay_set_interval(decay_t *d, uint64_t interval_ns, uint64_t now);
/* Pages to purge now so that at most the limit stays dirty. */
size_t decay_pages_to_purge(decay_t *d, uint64_t now, size_t dirty_pages);
/* Tells the policy that `pages` were purged (or reused) so that they are not
 * counted again as newly dirtied. */
void decay_note_removed(decay_t *d, size_t pages);
/* When the next call could purge something if nothing else changes, as a
 * delay from now in ns (UINT64_MAX: nothing will come due). */
uint64_t decay_next_due(const decay_t *d, uint64_t now, size_t dirty_pages);

/* The idle clock (see the top): one per process. Ticked by one thread at a
 * time (the background thread); read by any, under any heap lock. cpu_ns and
 * preempted are the CPU time and the preemptions so far of the process's
 * threads other than the ticking one (os_cpu_use); cycling says the program
 * is cycling through large blocks now. */
void decay_clock_tick(uint64_t wall, uint64_t cpu_ns, uint64_t preempted, bool cycling);
/* The idle time at wall time `wall`. */
uint64_t decay_clock_now(uint64_t wall);
/* The window up to the last tick was busy. */
bool decay_clock_busy(void);
/* The next tick opens a window and judges none: a new ticking thread's
 * readings (its own CPU time is left out) do not continue the last one's. */
void decay_clock_close(void);
/* Back to the wall clock, with no window open (tests). */
void decay_clock_reset(void);

/* The burst hold. A program that frees a large structure (a tree of 50
 * million nodes, 6 GiB) turns its pages dirty over seconds, longer than
 * decay_ms, and beyond the dirty budget within milliseconds. Purging them
 * while the frees go on costs the freeing thread a CPU share and the TLB
 * shootdowns of every madvise (memreturn a, 50 M blocks: 2.4 s of CPU in
 * the frees, 1.7 s with this hold), and a burst of frees is no idle time.
 * So while one goes on, the background thread's decay passes purge nothing
 * (page_heap_decay_held), and once it ends the usual rules apply: the
 * excess over the dirty budget at once, the rest along the curve.
 *
 * A burst is judged by counts, not by the time since the last free (a
 * freeing thread may be off its CPU for tens of ms on a loaded machine):
 * a look *sees a fall* when, since the last look (at most EBB_BURST_STALE_NS
 * before), frees into the page heaps came (the dirty hook's count) and the
 * pages in use fell by at least EBB_BURST_FALL_PAGES. Two such looks in a
 * row start a hold. A steady server frees and allocates alike: its pages in
 * use do not fall, or swing about a level, and it is not held. The hold
 * lasts while looks keep seeing a fall below its lowest point so far, until
 * none did for EBB_BURST_QUIET_NS (EBB_BURST_QUIET_PREEMPTED_NS if the
 * program's threads were preempted since the last fall: a freeing thread
 * that waits for a CPU on a loaded machine frees nothing meanwhile), for at most
 * EBB_BURST_CAP_DECAYS x decay_ms (then no hold until the frees pause), and
 * never keeps more than EBB_BURST_MAX_PAGES dirty: pages a moment ago in
 * use, so the hold never lifts the process above its peak. A look after a
 * long gap (or the first), or a first fall, cannot judge: the thread looks
 * again EBB_BURST_LOOK_NS later before it purges (a probe). decay_ms 0 or
 * -1: no hold (purge at once; never purge anyway). Pure policy, as the rest
 * of this file: the background thread feeds it and is its only user. */
#define EBB_BURST_LOOK_NS 4000000ull    /* 4 ms: looks while a hold goes on, and a probe */
#define EBB_BURST_STALE_NS 100000000ull /* 100 ms */
#define EBB_BURST_QUIET_NS 50000000ull  /* 50 ms */
#define EBB_BURST_QUIET_PREEMPTED_NS 250000000ull /* 250 ms */
#define EBB_BURST_FALL_PAGES ((size_t)(1u << 20) >> EBB_PAGE_SHIFT) /* 1 MiB */
#define EBB_BURST_CAP_DECAYS 8
#define EBB_BURST_MAX_PAGES ((size_t)((uint64_t)8 << 30 >> EBB_PAGE_SHIFT)) /* 8 GiB */

typedef struct decay_burst {
	uint64_t look_ns;    /* last look; 0: none */
	uint64_t look_frees; /* the dirty hook's count then */
	uint64_t look_inuse; /* pages in use then */
	uint64_t since_ns;   /* the hold began; 0: no hold */
	uint64_t fell_ns;    /* last look that saw the fall go on */
	uint64_t low;        /* pages in use at that look */
	uint64_t fell_preempted; /* the program's preemptions then */
	unsigned falls;      /* looks in a row that saw a fall */
	bool spent;          /* a hold ended by its cap: none until the frees pause */
} decay_burst_t;

enum decay_burst_verdict {
	DECAY_BURST_NONE,  /* purge as the rules say */
	DECAY_BURST_PROBE, /* no trend to judge: look again EBB_BURST_LOOK_NS later */
	DECAY_BURST_HOLD   /* purge nothing below EBB_BURST_MAX_PAGES */
};

/* One look at time `now`: the dirty hook's count of frees, the pages in use
 * and the dirty pages of all heaps, the preemptions so far of the process's
 * threads other than the looking one (os_cpu_use); interval_ns: decay_ms in
 * ns (0 or UINT64_MAX: no hold). Updates b. */
enum decay_burst_verdict decay_burst_look(decay_burst_t *b, uint64_t now, uint64_t frees, uint64_t inuse_pages,
					  size_t dirty_pages, uint64_t preempted, uint64_t interval_ns);

EBB_END_DECLS

#endif /* EBB_CORE_DECAY_H */
