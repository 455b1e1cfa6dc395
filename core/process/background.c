/* background.c: the decay thread (see background.h). */
#include "core/process/background.h"

#include "core/runtime/atomic.h"
#include "core/blocks/central.h"
#include "core/runtime/options.h"
#include "core/pages/page_heap.h"
#include "core/pages/superblock.h"
#include "core/process/timeline.h"
#include "os/os.h"

enum { BG_OFF = 0, BG_STARTING = 1, BG_RUNNING = 2 };

/* OFF -> STARTING (a starter won the CAS) -> RUNNING (before the thread
 * exists) -> OFF (the thread leaves: option off, or alone in the process).
 * Idle, the thread does not leave: it parks (bg_parked), so that no later
 * free has to create a thread (see maybe_start_at for where one is created). */
static uint32_t bg_state;
/* 1: the running thread found nothing to do for PARK_IDLE_NS and waits on
 * the event with no tick (bg_park); whoever brings it work swaps it to 0 and
 * signals the event (bg_wake_parked). */
static uint32_t bg_parked;
/* 1 once a free has turned pages dirty (background_on_dirty), for good. */
static uint32_t bg_ever_dirty;
static void bg_wake_parked(void);
static void maybe_start_at(uint64_t now, bool wanted, bool create);
static uint32_t bg_enabled;       /* start-up is over (background_enable) */
static uint32_t bg_kicked;
static uint32_t bg_tid;           /* kernel id of the last thread started; 0: none */
static uint32_t bg_left_tid;      /* kernel id of the last thread that left (bg_leave) */
static uint64_t bg_failed_ns;     /* last failed start; retried a second later */
static uint64_t bg_last_drain_ns; /* last central drain */
static uint64_t bg_last_trim_ns;  /* last trim request to the thread caches */
static uint64_t bg_last_look_ns;  /* last look at the central lists before decay */
static uint32_t bg_drain_kept;    /* the last drain left batches in lists in use (atomic:
				   * ebb_trim ticks too) */
static uint64_t bg_trim_epoch;
static uint64_t bg_frees;         /* dirty hook calls while the thread runs (a free into a
				   * page heap); a change tells a burst of frees goes on */
static uint32_t bg_wind_down;     /* an exit found the heaps wound down: purge them all */
/* The burst hold's looks (decay.h, "The burst hold"): the thread's own. */
static decay_burst_t bg_burst;
/* Until when the thread's rounds unmap the superblocks a burst's purge left
 * entirely purged (bg_after_burst_release); 0: no burst since the window
 * closed or the thread parked. The thread's own. */
static uint64_t bg_after_burst_ns;

/* Bounds of the sleep between ticks. */
#define TICK_MIN_NS 1000000ull       /* 1 ms */
#define TICK_MAX_NS 1000000000ull    /* 1 s: idle checks, unmap delays */
/* Central lists unused for a whole drain interval give their transfer
 * batches back to their spans (so that spans can empty and decay); thread
 * caches are asked to trim once per trim interval. */
#define DRAIN_INTERVAL_NS 250000000ull
#define TRIM_INTERVAL_NS 1000000000ull
/* The central lists are looked at for use by the program (central_purge.c,
 * "When") at most this often outside a drain tick. */
#define LOOK_INTERVAL_NS 50000000ull
/* The thread parks after this long with nothing to do and nothing left to
 * give back (bg_quiet): it gives back what only waited for time and then
 * sleeps until work comes, without the once-a-second tick. */
#define PARK_IDLE_NS 1000000000ull
/* A parked thread still wakes now and then to see whether it is the last
 * thread of the process (background_main): first after PARK_CHECK_MIN_NS,
 * then twice as long each time, up to PARK_CHECK_MAX_NS. An exit that
 * leaves few threads wakes it at once (background_thread_exited). */
#define PARK_CHECK_MIN_NS 4000000000ull  /* 4 s */
#define PARK_CHECK_MAX_NS 32000000000ull /* 32 s */
/* How long turning the option off waits for the thread to be gone. */
#define STOP_WAIT_NS 2000000000ull

/* An overrun of the dirty budget found during a burst of frees waits for
 * the burst to end (see background_overrun_waits); these bound the wait. */
#define OVERRUN_QUIET_NS 2000000ull  /* 2 ms without a free: the burst is over */
#define OVERRUN_CAP_NS 100000000ull  /* 100 ms: purged then, burst or not */
#define OVERRUN_HARD_FACTOR 4        /* dirty pages >= 4 x the budget: purged at once */

bool background_overrun_waits(uint64_t held_ns, uint64_t quiet_ns, size_t excess, size_t dirty)
{
	if (excess == 0 || excess > dirty)
		return false;
	/* budget = dirty - excess; dirty >= HARD x budget, written without a
	 * product that could overflow. */
	size_t budget = dirty - excess;
	if (budget == 0 || dirty / OVERRUN_HARD_FACTOR >= budget)
		return false;
	return held_ns < OVERRUN_CAP_NS && quiet_ns < OVERRUN_QUIET_NS;
}

/* The dirty budget is overrun: while frees into the page heaps keep coming
 * (a program freeing a large structure), the purge waits until they stop,
 * so that it neither takes a CPU from the freeing threads nor interrupts
 * them with the TLB shootdowns of each madvise, and then purges the whole
 * excess in one pass, in the fewest calls. Bounded by
 * background_overrun_waits: the program's memory still goes back within
 * OVERRUN_CAP_NS of the overrun. bg_kicked stays set meanwhile, so that the
 * freeing threads do not signal the event on every free. Returns the time. */
static uint64_t bg_hold_overrun(uint64_t now)
{
	if (page_heap_dirty_excess_pages() == 0 || options_get(OPT_DECAY_MS) < 0)
		return now;
	atomic_store_u32(&bg_kicked, 1);
	uint64_t start = now, quiet_since = now;
	uint64_t seen = atomic_load_u64(&bg_frees);
	while (options_get(OPT_BACKGROUND_THREAD) && atomic_load_u32(&bg_state) == BG_RUNNING) {
		uint64_t frees = atomic_load_u64(&bg_frees);
		if (frees != seen) {
			seen = frees;
			quiet_since = now;
		}
		if (!background_overrun_waits(util_elapsed(now, start), util_elapsed(now, quiet_since),
					      page_heap_dirty_excess_pages(), page_heap_dirty_total()))
			break;
		os_event_wait(OVERRUN_QUIET_NS / 2);
		now = os_now_ns();
	}
	return now;
}

/* A program that has never had a second thread keeps its single thread
 * while it holds few dirty pages: its frees decay them in line
 * (page_heap_maybe_decay, once per epoch), as with background_thread=0. A
 * thread of ours would make it multi-threaded for good: glibc then takes a
 * lock in every stdio call (postgres --single reads its script with getc),
 * each purge from our thread interrupts the program's CPU to flush its TLB,
 * and the process pays the thread's creation and wake-ups. Every process
 * of postgres initdb started one (postgres -V on a buffer freed as glibc
 * read its locale aliases), none reaches 4 MiB dirty, and initdb's CPU time
 * was 1.08 of background_thread=0's. Past
 * BG_SOLO_DIRTY_PAGES the thread starts as before, so what a quiet program
 * may keep is bounded by that (memory-return.md, "The timer"). */
#define BG_SOLO_DIRTY_PAGES ((size_t)(4u << 20) >> EBB_PAGE_SHIFT) /* 4 MiB */
/* A threaded process whose mappings reach this much gets the thread at its
 * next malloc slow path even before a free (maybe_start_at): a heap this
 * size is worth a parked thread, and its first burst of frees then costs
 * the freeing thread no purge. */
#define BG_EARLY_MAPPED ((uint64_t)32 << 20) /* 32 MiB */

bool background_solo_wants_thread(bool single_threaded, size_t dirty_pages)
{
	return !single_threaded || dirty_pages >= BG_SOLO_DIRTY_PAGES;
}

bool background_running(void)
{
	return atomic_load_u32(&bg_state) == BG_RUNNING;
}

uint64_t background_trim_epoch(void)
{
	return atomic_load_u64(&bg_trim_epoch);
}

/* How many thread caches of exited threads the pool keeps warm (tcache.c,
 * "The pool"), as tcache.c last set it under its list lock. Only this
 * thread's epoch hook flushes them, so the thread does not park while one
 * is left (bg_quiet): parked, it would leave their blocks cached until some
 * other thread starts or exits. The tick calls the hook only while one is
 * left (or under `all`): a process that never had one never runs the
 * pool's code, which lies past the text window its start-up faults in
 * (layout.ld; api.text_rss). */
static uint32_t bg_warm_caches;

void background_note_warm(uint32_t caches)
{
	atomic_store_u32(&bg_warm_caches, caches);
}

static void (*bg_epoch_hook)(bool all);

void background_set_epoch_hook(void (*fn)(bool all))
{
	__atomic_store_n(&bg_epoch_hook, fn, __ATOMIC_RELEASE);
}

/* Decay of every heap in use (page_heap_decay); under `all` every dirty run
 * goes, whatever its age (ebb_trim, a thread's exit when the heaps are wound
 * down); under `held` (the thread's tick during a burst of frees) only the
 * dirty pages above the hold's cap. Heaps never used (page_heap_peek: NULL)
 * hold nothing. */
static size_t decay_heaps(uint64_t now, bool all, bool held)
{
	size_t work = 0;
	unsigned n = page_heap_count_all();
	for (unsigned i = 0; i < n; i++) {
		page_heap_t *h = page_heap_peek(i);
		if (h == NULL)
			continue;
		work += held ? page_heap_decay_held(h, now, EBB_BURST_MAX_PAGES) : page_heap_decay(h, now, all);
	}
	return work;
}

/* background_tick, and the thread's own round (held: during a burst of
 * frees, decay_heaps).
 * Inlined into both: background_tick keeps its place in the first text
 * window (layout.ld). */
EBB_INLINE size_t bg_tick(uint64_t now, bool all, bool held)
{
	/* A look at the central lists before decay, whose purge of a burst's
	 * pages may hold this thread for a second on a loaded machine: the
	 * lists the burst's frees changed count as idle from here, not from
	 * the drain tick after that purge. At most every LOOK_INTERVAL_NS
	 * (it takes each list's lock; decay ticks come every few ms). */
	if (!all && util_elapsed(now, atomic_load_u64(&bg_last_look_ns)) >= LOOK_INTERVAL_NS) {
		atomic_store_u64(&bg_last_look_ns, now);
		central_purge_observe();
	}
	size_t work = decay_heaps(now, all, held && !all);
	unsigned n = page_heap_count_all();
	uint64_t last = atomic_load_u64(&bg_last_drain_ns);
	if (all || util_elapsed(now, last) >= DRAIN_INTERVAL_NS) {
		atomic_store_u64(&bg_last_drain_ns, now);
		bool kept;
		/* Free pages inside spans that keep a live block: of lists whose
		 * spans sat unchanged for decay_ms, or, for ebb_trim, of every
		 * list. After the drain in both cases, which the look just before
		 * it keeps from counting as use of the lists (central_purge.c,
		 * "When"): the pages of the batches it sends home go back with
		 * their spans'. */
		if (!all)
			central_purge_observe();
		work += central_drain(!all, &kept);
		work += central_purge_tick(all);
		atomic_store_u32(&bg_drain_kept, kept);
		if (all || util_elapsed(now, atomic_load_u64(&bg_last_trim_ns)) >= TRIM_INTERVAL_NS) {
			atomic_store_u64(&bg_last_trim_ns, now);
			atomic_add_u64(&bg_trim_epoch, 1);
			void (*hook)(bool) = __atomic_load_n(&bg_epoch_hook, __ATOMIC_ACQUIRE);
			if (hook != NULL && (all || atomic_load_u32(&bg_warm_caches) != 0))
				hook(all);
		}
		/* Blocks drained from central lists may have emptied spans. */
		if (all)
			work += decay_heaps(now, true, false);
	}
	for (unsigned i = 0; i < n; i++) {
		page_heap_t *h = page_heap_peek(i);
		if (h != NULL)
			work += page_heap_release(h, now, all);
	}
	return work;
}

size_t background_tick(uint64_t now, bool all)
{
	return bg_tick(now, all, false);
}

/* The end of a thread is often the end of a phase: workers that freed their
 * working sets and leave. What they freed then waits in transfer batches,
 * which pin the spans of nearly every block they hold (a batch of a random
 * free order has a block in most spans of its class), and in dirty runs kept
 * for decay_ms; a program that goes on to use memory of another kind
 * (buffers it maps, one large block) holds both at its peak. bench/latency
 * kept 8.7 MiB (one thread) and 29 MiB (four) after its threads were joined,
 * all of which ebb_trim gave back; glibc trims the thread's arena at its
 * exit.
 *
 * Only the exit that leaves at most one thread with a cache acts: while
 * others run, the batches are their traffic. Then the batches go back to
 * their spans, and the dirty runs are purged only when in use is down to an
 * eighth of the most the heaps held, so a program that still holds its data
 * purges nothing. The drain visits every list of every CPU (about a million
 * instructions on this machine's 2, more on 64): at most one exit in
 * EXIT_WIND_DOWN_NS does it, so a program that runs its tasks one at a time
 * in new threads (std::async in a loop) pays it at most ten times a second,
 * not once a task. */
#define EXIT_WIND_DOWN_NS 100000000ull /* 100 ms */
static uint64_t bg_last_exit_ns;       /* last exit that drained */

void background_thread_exited(uint64_t now, uint64_t threads_left)
{
	/* A thread's end runs outside glibc's locks: a place to create the
	 * thread that frees before it could not (maybe_start_at). An end that
	 * leaves few threads wakes a parked thread, which then looks within a
	 * second whether it is the last one (a main that called pthread_exit). */
	maybe_start_at(now, false, true);
	if (threads_left <= 2)
		bg_wake_parked();
	if (threads_left > 1)
		return;
	uint64_t last = atomic_load_u64(&bg_last_exit_ns);
	if (last != 0 && util_elapsed(now, last) < EXIT_WIND_DOWN_NS)
		return;
	if (!atomic_cas_u64_value(&bg_last_exit_ns, &last, now))
		return;
	central_drain(false, NULL);
	if (options_get(OPT_DECAY_MS) < 0 || !page_heap_wound_down())
		return;
	/* The purge (10-60 ms for bench/large's 140 MiB) goes to the thread
	 * when one runs, so that the exiting thread, which a join waits for,
	 * does not pay it; the pages come back as soon as the thread wakes,
	 * before a program that goes on after the join touches much. A program
	 * that exits right after the join leaves them to the kernel, as
	 * tcmalloc does with all of its pages. Without the thread the exit
	 * purges them itself. */
	if (background_running()) {
		atomic_store_u32(&bg_wind_down, 1);
		background_kick();
		return;
	}
	decay_heaps(now, true, false);
}

/* The purge an exit handed over (background_thread_exited), if the heaps are
 * still wound down: a program that allocated again in between keeps them. */
static size_t bg_wind_down_purge(uint64_t now)
{
	if (atomic_load_u32(&bg_wind_down) == 0 || !atomic_cas_u32(&bg_wind_down, 1, 0))
		return 0;
	if (options_get(OPT_DECAY_MS) < 0 || !page_heap_wound_down())
		return 0;
	return decay_heaps(now, true, false);
}

/* After a burst of frees (a structure torn down), the purge leaves
 * superblocks entirely free and purged whose two fixed header pages stayed
 * resident until the thread parked, a second after its last work (memreturn
 * a: 5 MiB at 20 M blocks, 12 MiB at 50 M, at +2 s): they go in the round
 * whose purge empties them. Only those with no dirty page
 * (page_heap_release_purged: no page a program comes back for stays), and
 * only for AFTER_BURST_DECAYS x decay_ms after the burst's last round, long
 * enough for the curve to purge what the budget kept, or until no dirty page
 * is left; then unmap_delay_ms rules again (a steady server that once
 * overran the budget does not walk its superblocks at every round). */
#define AFTER_BURST_DECAYS 2
#define AFTER_BURST_MIN_NS 100000000ull /* 100 ms: decay_ms 0 or -1 */

static void bg_after_burst_open(uint64_t now)
{
	long long ms = options_get(OPT_DECAY_MS);
	uint64_t window = ms > 0 ? (uint64_t)ms * 1000000ull * AFTER_BURST_DECAYS : 0;
	bg_after_burst_ns = now + (window > AFTER_BURST_MIN_NS ? window : AFTER_BURST_MIN_NS);
}

static size_t bg_after_burst_release(uint64_t now)
{
	size_t work = 0;
	unsigned n = page_heap_count_all();
	for (unsigned i = 0; i < n; i++) {
		page_heap_t *h = page_heap_peek(i);
		if (h != NULL)
			work += page_heap_release_purged(h, now);
	}
	if (page_heap_dirty_total() == 0 || now >= bg_after_burst_ns)
		bg_after_burst_ns = 0;
	return work;
}

/* The thread's look for the burst hold (decay.h, "The burst hold"), at the
 * top of each round; a look that cannot judge (a probe) is taken again
 * EBB_BURST_LOOK_NS later, at most BG_BURST_PROBES times. bg_kicked stays
 * set while a hold goes on or a probe waits, so that the freeing threads do
 * not signal the event at every free (background_on_dirty). Sets *held;
 * returns the time. */
#define BG_BURST_PROBES 2 /* a look after a gap, then a first fall */

static uint64_t bg_burst_look(uint64_t now, bool *held)
{
	long long ms = options_get(OPT_DECAY_MS);
	uint64_t interval = ms < 0 ? UINT64_MAX : (uint64_t)ms * 1000000ull;
	for (unsigned probes = 0;; probes++) {
		os_cpu_use_t all = os_cpu_use(false), self = os_cpu_use(true);
		enum decay_burst_verdict v =
			decay_burst_look(&bg_burst, now, atomic_load_u64(&bg_frees), page_heap_inuse_total(),
					 page_heap_dirty_total(), util_elapsed(all.preempted, self.preempted), interval);
		*held = v == DECAY_BURST_HOLD;
		if (v != DECAY_BURST_PROBE || probes == BG_BURST_PROBES)
			break;
		atomic_store_u32(&bg_kicked, 1);
		for (uint64_t start = now; util_elapsed(now, start) < EBB_BURST_LOOK_NS;) {
			if (!options_get(OPT_BACKGROUND_THREAD) || atomic_load_u32(&bg_state) != BG_RUNNING)
				return now;
			os_event_wait(EBB_BURST_LOOK_NS - util_elapsed(now, start));
			now = os_now_ns();
		}
	}
	if (*held)
		atomic_store_u32(&bg_kicked, 1);
	return now;
}

static uint64_t next_wait(uint64_t now)
{
	uint64_t wait = TICK_MAX_NS;
	unsigned n = page_heap_count_all();
	for (unsigned i = 0; i < n; i++) {
		page_heap_t *h = page_heap_peek(i);
		uint64_t d = h != NULL ? page_heap_next_due(h, now) : UINT64_MAX;
		if (d < wait)
			wait = d;
	}
	/* Batches kept by lists in use are drained once those go idle; lists
	 * whose spans hold free pages are purged once they have been idle.
	 * Both wait for the next drain tick, due one interval after the last
	 * one, not after this tick: a tick for decay in between would push it
	 * back by up to a whole interval. */
	if (atomic_load_u32(&bg_drain_kept) || central_purge_pending()) {
		uint64_t since = util_elapsed(now, atomic_load_u64(&bg_last_drain_ns));
		uint64_t due = since >= DRAIN_INTERVAL_NS ? 0 : DRAIN_INTERVAL_NS - since;
		if (wait > due)
			wait = due;
	}
	return wait < TICK_MIN_NS ? TICK_MIN_NS : wait;
}

/* Nothing is left for the thread to give back, as far as the cheap gauges
 * tell: no dirty page that decay will purge, no transfer batch kept by a
 * busy list at the last drain, no list whose spans' free pages wait to be
 * purged, no timeline to write, no kick pending. */
static bool bg_quiet(void)
{
	return (page_heap_dirty_total() == 0 || options_get(OPT_DECAY_MS) < 0) &&
	       !atomic_load_u32(&bg_drain_kept) && !central_purge_pending() && !timeline_enabled() &&
	       !atomic_load_u32(&bg_kicked) && atomic_load_u32(&bg_warm_caches) == 0;
}

/* The thread has been quiet for PARK_IDLE_NS: give back what only waited
 * for time (transfer batches of idle lists; superblocks and cached huge
 * blocks entirely free, whose pages decay has already purged, are unmapped
 * now rather than after unmap_delay_ms, since the thread will not tick to do
 * it), then mark it parked. Returns false if work came in meanwhile and the
 * thread goes on ticking.
 *
 * No lost wake-up: a free that makes pages dirty does so under its page
 * heap's lock, then (background_on_dirty) reads bg_parked and wakes the
 * thread if it is 1. Here bg_parked goes to 1 first, then every heap is
 * looked at under its lock (page_heap_next_due). Either that look comes
 * after the free's critical section and sees the dirty pages (the thread
 * unparks itself), or the free's section comes after the look, so after the
 * store of 1, and the free sees it and signals the event, which the wait
 * then finds set. A heap the look skips as never used was set up after the
 * fence of page_heap_setup_fence, so after the store, and so were the frees
 * into it. A waker that swapped bg_parked to 0 first has signalled: the
 * next wait returns at once, one tick early. */
static bool bg_park(uint64_t now)
{
	bool kept;
	if (central_drain(true, &kept) != 0 || kept || !bg_quiet())
		return false;
	unsigned n = page_heap_count_all();
	for (unsigned i = 0; i < n; i++) {
		page_heap_t *h = page_heap_peek(i);
		if (h != NULL)
			page_heap_release(h, now, true);
	}
	atomic_store_u32(&bg_parked, 1);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	page_heap_setup_fence();
	bool work = !bg_quiet();
	for (unsigned i = 0; i < n && !work; i++) {
		page_heap_t *h = page_heap_peek(i);
		work = h != NULL && page_heap_next_due(h, now) != UINT64_MAX;
	}
	if (work) {
		atomic_store_u32(&bg_parked, 0);
		return false;
	}
	return true;
}

/* Parked: sleeps until bg_wake_parked (work), the option's change or a stop
 * (both signal the event), or the next check whether this is the last
 * thread of the process. Returns false if it is: the thread ends. */
static bool bg_park_wait(void)
{
	uint64_t wait = PARK_CHECK_MIN_NS;
	while (atomic_load_u32(&bg_parked) && options_get(OPT_BACKGROUND_THREAD) &&
	       atomic_load_u32(&bg_state) == BG_RUNNING) {
		os_event_wait(wait);
		if (!atomic_load_u32(&bg_parked))
			break;
		if (os_thread_count() == 1) {
			atomic_store_u32(&bg_parked, 0);
			return false;
		}
		wait = wait >= PARK_CHECK_MAX_NS / 2 ? PARK_CHECK_MAX_NS : wait * 2;
	}
	atomic_store_u32(&bg_parked, 0);
	return true;
}

/* Whoever brings a parked thread work (a free that left pages dirty, a warm
 * cache, the exit that may leave it alone) takes it out of its park: one
 * swap, and one futex wake (os_event_signal), safe on any free. */
static void bg_wake_parked(void)
{
	if (atomic_load_u32(&bg_parked) && atomic_cas_u32(&bg_parked, 1, 0))
		os_event_signal();
}

/* The thread's last touch of shared state: a release that background_stop
 * acquires, so that everything the thread did happens before what the
 * stopper does next, such as a fork whose child sets the event up again. */
static void *bg_leave(unsigned me)
{
	atomic_store_u32_release(&bg_left_tid, me);
	return NULL;
}

static void *background_main(void *arg)
{
	(void)arg;
	os_thread_name("ebb-background");
	unsigned me = os_thread_id();
	atomic_store_u32(&bg_tid, me);
	uint64_t alone_checked_ns = 0;
	uint64_t busy_ns = os_now_ns(); /* last tick with work, or not quiet */
	decay_clock_close();
	while (options_get(OPT_BACKGROUND_THREAD) && atomic_load_u32(&bg_state) == BG_RUNNING) {
		bool held;
		uint64_t now = bg_burst_look(os_now_ns(), &held);
		if (!held) {
			now = bg_hold_overrun(now);
			atomic_store_u32(&bg_kicked, 0);
		}
		/* The other threads' CPU time: this thread's own purges are no
		 * sign that the program is working. */
		os_cpu_use_t all = os_cpu_use(false), self = os_cpu_use(true);
		decay_clock_tick(now, util_elapsed(all.cpu_ns, self.cpu_ns), util_elapsed(all.preempted, self.preempted),
				 page_heap_reuse_pages() > 0);
		/* A burst: held, or one the hold did not catch (it ended before
		 * two looks saw it fall) whose excess over the budget this round
		 * purges at once. */
		bool burst = held || page_heap_dirty_excess_pages() > 0;
		size_t work = bg_wind_down_purge(now);
		work += bg_tick(now, false, held);
		if (burst)
			bg_after_burst_open(now);
		if (bg_after_burst_ns != 0 && !held)
			work += bg_after_burst_release(now);
		timeline_poll(os_now_ns());
		if (work != 0 || !bg_quiet()) {
			busy_ns = now;
		} else if (util_elapsed(now, busy_ns) >= PARK_IDLE_NS && bg_park(now)) {
			bg_after_burst_ns = 0; /* the park unmapped them all */
			if (!bg_park_wait())
				break; /* the last thread of the process */
			busy_ns = os_now_ns();
			continue;
		}
		uint64_t wait = next_wait(now);
		if (held && wait > EBB_BURST_LOOK_NS)
			wait = EBB_BURST_LOOK_NS;
		/* Quiet: wake when the idle time is up, to park. */
		uint64_t idle = util_elapsed(now, busy_ns);
		if (idle < PARK_IDLE_NS && wait > PARK_IDLE_NS - idle && bg_quiet())
			wait = PARK_IDLE_NS - idle + TICK_MIN_NS;
		/* No decay due within the longest tick: if this is the last thread of
		 * the process (main called pthread_exit and every other thread has
		 * ended), end too, so the process can exit; a timeline alone does not
		 * keep it alive. Checked at most once per longest tick (it reads
		 * /proc), since timeline rows may wake the thread more often. */
		if (wait >= TICK_MAX_NS && util_elapsed(now, alone_checked_ns) >= TICK_MAX_NS) {
			alone_checked_ns = now;
			if (os_thread_count() == 1)
				break;
		}
		/* Sleep until the next row when it comes before the next decay. */
		uint64_t row = timeline_wait_ns(os_now_ns());
		if (row < wait)
			wait = row < TICK_MIN_NS ? TICK_MIN_NS : row;
		os_event_wait(wait);
	}
	atomic_store_u32_release(&bg_state, BG_OFF);
	return bg_leave(me);
}

void background_enable(void)
{
	/* The first trim epoch comes a trim interval after start-up, not at the
	 * first tick: an epoch makes every thread cache trim all its bins at
	 * its next refill or flush (tcache.c, slow_event), and a cache a few
	 * milliseconds old has had no time to be idle. (A short process, such
	 * as python3 started for a moment, trimmed its bins and ran the trim's
	 * code, outside the text window it faults in: api.text_rss.) */
	atomic_store_u64(&bg_last_trim_ns, os_now_ns());
	atomic_store_u32_release(&bg_enabled, 1);
}

bool background_on_dirty(uint64_t now)
{
	if (EBB_UNLIKELY(!atomic_load_u32(&bg_ever_dirty)))
		atomic_store_u32(&bg_ever_dirty, 1);
	maybe_start_at(now, false, false);
	if (!background_running())
		return false;
	/* Lossy on a race between two freeing threads, and that is fine: the
	 * count still changes, which is all the thread looks at. */
	atomic_store_u64(&bg_frees, atomic_load_u64(&bg_frees) + 1);
	if (page_heap_dirty_excess_pages() > 0)
		background_kick();
	return true;
}

/* The thread's rounds for a process the solo rule keeps without one, run
 * by the program's own thread from here (no allocator lock is held) at
 * most once in DRAIN_INTERVAL_NS: the frees decay the page heaps in line
 * already, but without this nothing would send transfer batches home,
 * give back the free pages inside spans of lists left unchanged for
 * decay_ms, move the trim epoch or unmap empty superblocks. The last
 * tick's time is claimed first, so a tick that frees (and comes back here)
 * does not run another. */
static uint64_t bg_solo_tick_ns;

static void solo_tick(uint64_t now)
{
	uint64_t last = atomic_load_u64(&bg_solo_tick_ns);
	if (util_elapsed(now, last) < DRAIN_INTERVAL_NS || !atomic_cas_u64_value(&bg_solo_tick_ns, &last, now))
		return;
	background_tick(now, false);
}

/* Whether a slow path that finds no thread has work for one: pages for
 * decay to purge, rows to write, or what the caller wants (a warm cache). */
static bool bg_has_work(bool wanted, size_t dirty)
{
	return wanted || timeline_enabled() || (dirty != 0 && options_get(OPT_DECAY_MS) >= 0);
}

/* Where the thread is created. pthread_create takes glibc's stack-cache lock
 * (allocate_stack), and glibc frees thread TLS while it holds that lock
 * (_dl_deallocate_tls from __nptl_deallocate_stack and __nptl_free_stacks:
 * pthread_join, pthread_detach, a detached thread's end): a free there that
 * created the thread waited for itself for ever (docs/reliability.md). glibc
 * (2.36) calls malloc under none of the locks pthread_create takes (the
 * stack-cache lock; the default-attribute lock only without attributes; the
 * TLS lock is recursive), so a thread may be created only from `create`
 * callers: a thread cache's refill (a malloc), a thread's exit (a key
 * destructor, which glibc runs holding nothing), an ebb_* call. A free (the
 * page heap's dirty hook, a flush) creates one only while the process has
 * never had a second thread (os_single_threaded: then no thread's TLS has
 * been freed, nor can be); otherwise, until a malloc or an exit does, the
 * free decays in line and runs the thread's rounds itself (solo_tick), as
 * for a single-threaded program. Once created the thread never leaves on
 * idleness (bg_park), so after the first start no free needs a creation.
 *
 * now: the caller's os_now_ns reading, or 0 if it has none (read here when
 * needed). The page heap's hook has one: a flush that empties spans gives
 * them back with one clock read, not two (bench/fastpath's reverse batch,
 * single-threaded, reaches solo_tick at every span list freed).
 * wanted: start it even without dirty pages (background_start_for_pool). */
static void maybe_start_at(uint64_t now, bool wanted, bool create)
{
	uint32_t state = atomic_load_u32(&bg_state);
	if (EBB_LIKELY(state != BG_OFF)) {
		if (EBB_UNLIKELY(atomic_load_u32(&bg_parked)) && bg_has_work(wanted, page_heap_dirty_total()))
			bg_wake_parked();
		return;
	}
	if (!atomic_load_u32_acquire(&bg_enabled))
		return;
	/* No background thread (turned off, or not started yet): timeline rows
	 * come from here, the slow paths' hook. */
	if (timeline_enabled())
		timeline_poll(now != 0 ? now : (now = os_now_ns()));
	if (!options_get(OPT_BACKGROUND_THREAD))
		return;
	/* Only when there is work for it, or soon will be: a small program
	 * that never frees never gets a thread. A threaded one whose frees
	 * have turned pages dirty gets it at the next place that may create it
	 * even if those pages are gone by then (decayed in line): its next
	 * burst of frees, which cannot create it, may be followed by no malloc
	 * at all (workers that free their data and wait), and it then finds
	 * the thread to wake. A threaded one whose heap has grown past
	 * BG_EARLY_MAPPED gets it before its first free: otherwise a first
	 * burst made of frees alone (a structure built and then torn down)
	 * finds no thread and decays in the freeing thread, which takes the
	 * purge's whole cost in the burst (memreturn a: 1.13 s of frees
	 * against 0.16-0.21 s with the thread). */
	size_t dirty = page_heap_dirty_total();
	bool single = os_single_threaded();
	if (create && !single && (atomic_load_u32(&bg_ever_dirty) || superblock_mapped_bytes() >= BG_EARLY_MAPPED))
		wanted = true;
	if (!bg_has_work(wanted, dirty))
		return;
	bool timeline = timeline_enabled();
	if ((!create && !single) || (!timeline && !background_solo_wants_thread(single, dirty))) {
		solo_tick(now != 0 ? now : os_now_ns());
		return;
	}
	if (now == 0)
		now = os_now_ns();
	uint64_t failed = atomic_load_u64(&bg_failed_ns);
	if (failed && util_elapsed(now, failed) < TICK_MAX_NS)
		return;
	if (!atomic_cas_u32(&bg_state, BG_OFF, BG_STARTING))
		return;
	/* RUNNING before the thread exists, so that its loop sees it; the
	 * thread may allocate while pthread_create sets it up, and that is
	 * fine: no allocator lock is held here. */
	atomic_store_u32(&bg_parked, 0);
	atomic_store_u32(&bg_state, BG_RUNNING);
	if (!os_thread_start(background_main, NULL)) {
		atomic_store_u64(&bg_failed_ns, now);
		atomic_store_u32(&bg_state, BG_OFF);
	}
}

void background_maybe_start(void)
{
	maybe_start_at(0, false, true);
}

void background_poll(void)
{
	maybe_start_at(0, false, false);
}

void background_start_for_pool(void)
{
	/* No lost wake-up against bg_park: its store of bg_parked, a full
	 * fence, then bg_quiet's read of bg_warm_caches; here the count's store
	 * (by the caller), a full fence, then maybe_start_at's read of
	 * bg_parked. Either the parking thread sees the warm cache and stays
	 * up, or this sees it parked and wakes it. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	maybe_start_at(0, true, true);
}

void background_kick(void)
{
	if (atomic_load_u32(&bg_kicked) == 0 && atomic_cas_u32(&bg_kicked, 0, 1)) {
		/* Out of its park too (bg_park reads bg_kicked after its store
		 * of bg_parked: the same pairing as bg_wake_parked's). */
		atomic_store_u32(&bg_parked, 0);
		os_event_signal();
	}
}

/* Turned off: the thread is gone (not only told to go) when this returns,
 * so that a program can make itself single-threaded, e.g. before
 * unshare(CLONE_NEWUSER). Bounded: a thread blocked in the kernel is not
 * waited for longer than STOP_WAIT_NS. */
static void background_stop(void)
{
	uint64_t start = os_now_ns();
	while (atomic_load_u32_acquire(&bg_state) != BG_OFF) {
		if (util_elapsed(os_now_ns(), start) >= STOP_WAIT_NS)
			return;
		os_event_signal();
		os_yield();
	}
	/* First its last touch (bg_leave), then gone from the kernel too. */
	unsigned tid = atomic_load_u32(&bg_tid);
	while (tid != 0 && atomic_load_u32_acquire(&bg_left_tid) != tid &&
	       util_elapsed(os_now_ns(), start) < STOP_WAIT_NS)
		os_yield();
	while (tid != 0 && os_thread_alive(tid) && util_elapsed(os_now_ns(), start) < STOP_WAIT_NS)
		os_yield();
}

void background_option_changed(void)
{
	if (!options_get(OPT_BACKGROUND_THREAD))
		background_stop();
	else if (background_running())
		os_event_signal(); /* re-reads the option at once */
	else
		background_maybe_start(); /* turned on, or a timeline row is due */
}

void background_prefork(void)
{
}

void background_postfork_parent(void)
{
}

void background_postfork_child(void)
{
	/* The thread does not exist in the child; the next slow path that may
	 * create it and has work for it starts a new one (maybe_start_at). */
	os_event_init();
	atomic_store_u32(&bg_state, BG_OFF);
	atomic_store_u32(&bg_parked, 0);
	atomic_store_u32(&bg_kicked, 0);
	atomic_store_u32(&bg_wind_down, 0);
	atomic_store_u32(&bg_tid, 0);
	atomic_store_u32(&bg_left_tid, 0);
	atomic_store_u64(&bg_failed_ns, 0);
	bg_burst = (decay_burst_t){ 0 };
	bg_after_burst_ns = 0;
}
