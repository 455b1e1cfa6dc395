/* decay.c: the smooth decay curve of decay.h. */
#include "core/pages/decay.h"

#include <string.h>

#define N EBB_DECAY_EPOCHS

/* The idle clock: idle time = wall time - clock_lag. clock_lag only grows,
 * at ticks (by what of each busy window was no idle time); clock_wall,
 * clock_cpu and clock_preempted are the last tick's readings, written by
 * the ticking thread only. Relaxed atomics: a reader between ticks sees the lag of the last
 * tick, so idle time may step back a little at a busy tick, which the curve
 * tolerates (an epoch that seems not yet due waits). */
static uint64_t clock_lag;
static uint64_t clock_wall;
static uint64_t clock_cpu;
static uint64_t clock_preempted;
static uint64_t clock_worked; /* the last tick whose window saw a preemption; 0: none */
static uint32_t clock_open; /* a window is open: clock_wall/clock_cpu are set */
static uint32_t clock_busy;

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

void decay_clock_tick(uint64_t wall, uint64_t cpu_ns, uint64_t preempted, bool cycling)
{
	bool open = LOAD(clock_open);
	uint64_t last = LOAD(clock_wall), last_cpu = LOAD(clock_cpu), last_pre = LOAD(clock_preempted);
	STORE(clock_wall, wall);
	STORE(clock_cpu, cpu_ns);
	STORE(clock_preempted, preempted);
	STORE(clock_open, 1u);
	if (!open || wall <= last)
		return;
	uint64_t w = wall - last;
	/* A forked child's counts start again from zero: nothing seen. */
	uint64_t used = cpu_ns > last_cpu ? cpu_ns - last_cpu : 0;
	bool was_preempted = preempted > last_pre;
	bool worked = used >= w / EBB_DECAY_BUSY_SHARE || was_preempted;
	/* A thread preempted may then wait for a CPU through whole windows (360
	 * ms seen with a load of 13 on 2 CPUs): no CPU time, no new preemption,
	 * and still not parked. Without preemption (a machine with CPUs to
	 * spare) a window without CPU time is idle at once. */
	if (was_preempted)
		STORE(clock_worked, wall);
	bool held = LOAD(clock_worked) != 0 && wall - LOAD(clock_worked) <= EBB_DECAY_BUSY_HOLD_NS;
	bool busy = cycling && w <= EBB_DECAY_BUSY_MAX_WINDOW_NS && (worked || held);
	STORE(clock_busy, (uint32_t)busy);
	if (!busy)
		return;
	/* A working program's idle time is the CPU time it used, between
	 * 1/EBB_DECAY_BUSY_SLOW of the window (starved) and all of it (on a
	 * machine with a CPU to spare: the wall clock, as without the rule). */
	uint64_t idle = used < w / EBB_DECAY_BUSY_SLOW ? w / EBB_DECAY_BUSY_SLOW : used < w ? used : w;
	STORE(clock_lag, LOAD(clock_lag) + (w - idle));
}

uint64_t decay_clock_now(uint64_t wall)
{
	uint64_t lag = LOAD(clock_lag);
	return wall > lag ? wall - lag : 0;
}

bool decay_clock_busy(void)
{
	return LOAD(clock_busy) != 0;
}

void decay_clock_close(void)
{
	STORE(clock_open, 0u);
}

void decay_clock_reset(void)
{
	STORE(clock_lag, 0);
	STORE(clock_wall, 0);
	STORE(clock_cpu, 0);
	STORE(clock_preempted, 0);
	STORE(clock_worked, 0);
	STORE(clock_open, 0u);
	STORE(clock_busy, 0u);
}

/* Weight of the backlog entry that is `age` complete epochs old (0 = the
 * newest complete epoch), scaled by N^3: 1 - smoothstep((age + 1) / N). */
static uint64_t weight(unsigned age)
{
	uint64_t x = age + 1;
	uint64_t n3 = (uint64_t)N * N * N;
	return n3 - 3 * x * x * N + 2 * x * x * x;
}

static void set_interval(decay_t *d, uint64_t interval_ns)
{
	d->interval_ns = interval_ns;
	if (interval_ns == 0 || interval_ns == UINT64_MAX)
		d->epoch_ns = UINT64_MAX;
	else
		d->epoch_ns = interval_ns / N ? interval_ns / N : 1;
}

void decay_init(decay_t *d, uint64_t interval_ns, uint64_t now)
{
	now = decay_clock_now(now);
	memset(d, 0, sizeof *d);
	set_interval(d, interval_ns);
	d->epoch_start = now;
}

void decay_set_interval(decay_t *d, uint64_t interval_ns, uint64_t now)
{
	set_interval(d, interval_ns);
	d->epoch_start = decay_clock_now(now);
}

/* Moves complete epochs into the backlog. */
static void advance(decay_t *d, uint64_t now, size_t dirty_pages)
{
	if (d->epoch_ns == UINT64_MAX || now < d->epoch_start + d->epoch_ns)
		return;
	uint64_t k = (now - d->epoch_start) / d->epoch_ns;
	size_t added = dirty_pages > d->epoch_base ? dirty_pages - d->epoch_base : 0;
	if (k >= N) {
		memset(d->backlog, 0, sizeof d->backlog);
	} else {
		memmove(d->backlog, d->backlog + k, (N - k) * sizeof d->backlog[0]);
		memset(d->backlog + (N - k), 0, k * sizeof d->backlog[0]);
	}
	/* The pages dirtied during the epoch that just ended; the epochs after it
	 * (if more than one passed) saw nothing new. */
	if (k <= N)
		d->backlog[N - k] = added;
	d->epoch_start += k * d->epoch_ns;
	d->epoch_base = dirty_pages;
}

size_t decay_pages_to_purge(decay_t *d, uint64_t now, size_t dirty_pages)
{
	if (d->interval_ns == 0)
		return dirty_pages;
	if (d->interval_ns == UINT64_MAX)
		return 0;
	now = decay_clock_now(now);
	advance(d, now, dirty_pages);
	uint64_t n3 = (uint64_t)N * N * N;
	unsigned __int128 limit = 0;
	for (unsigned i = 0; i < N; i++)
		limit += (unsigned __int128)d->backlog[i] * weight(N - 1 - i);
	limit /= n3;
	/* Pages dirtied in the running epoch all stay. */
	if (dirty_pages > d->epoch_base)
		limit += dirty_pages - d->epoch_base;
	return dirty_pages > limit ? dirty_pages - (size_t)limit : 0;
}

void decay_note_removed(decay_t *d, size_t pages)
{
	d->epoch_base = d->epoch_base > pages ? d->epoch_base - pages : 0;
}

uint64_t decay_next_due(const decay_t *d, uint64_t now, size_t dirty_pages)
{
	if (dirty_pages == 0 || d->interval_ns == UINT64_MAX)
		return UINT64_MAX;
	if (d->interval_ns == 0)
		return 0;
	now = decay_clock_now(now);
	uint64_t end = d->epoch_start + d->epoch_ns;
	uint64_t left = end > now ? end - now : 0;
	/* In wall time: idle time runs slow while the program is busy. */
	if (decay_clock_busy() && left <= UINT64_MAX / EBB_DECAY_BUSY_SLOW)
		left *= EBB_DECAY_BUSY_SLOW;
	return left;
}

enum decay_burst_verdict decay_burst_look(decay_burst_t *b, uint64_t now, uint64_t frees, uint64_t inuse_pages,
					  size_t dirty_pages, uint64_t preempted, uint64_t interval_ns)
{
	bool fresh = b->look_ns != 0 && now >= b->look_ns && now - b->look_ns <= EBB_BURST_STALE_NS;
	bool came = frees != b->look_frees;
	/* While a hold goes on, the fall is measured from its lowest point, so
	 * that pages in use that swing about a level (a server's requests
	 * coming and going) do not keep it on. */
	uint64_t from = b->since_ns != 0 ? b->low : b->look_inuse;
	bool fell = fresh && came && inuse_pages + EBB_BURST_FALL_PAGES <= from;
	b->look_ns = now;
	b->look_frees = frees;
	b->look_inuse = inuse_pages;
	b->falls = fell ? b->falls + 1 : 0;
	if (interval_ns == 0 || interval_ns == UINT64_MAX) {
		b->since_ns = 0;
		b->spent = false;
		return DECAY_BURST_NONE;
	}
	uint64_t quiet = preempted != b->fell_preempted ? EBB_BURST_QUIET_PREEMPTED_NS : EBB_BURST_QUIET_NS;
	if (fell) {
		b->fell_ns = now;
		b->low = inuse_pages;
		b->fell_preempted = preempted;
		if (b->since_ns == 0 && !b->spent && b->falls >= 2)
			b->since_ns = now;
	} else if ((b->since_ns != 0 || b->spent) && (now < b->fell_ns || now - b->fell_ns > quiet)) {
		/* The frees paused: the burst is over, and the next may hold. */
		b->since_ns = 0;
		b->spent = false;
	}
	uint64_t cap = interval_ns <= UINT64_MAX / EBB_BURST_CAP_DECAYS ? interval_ns * EBB_BURST_CAP_DECAYS : UINT64_MAX;
	if (b->since_ns != 0 && now - b->since_ns >= cap) {
		b->since_ns = 0;
		b->spent = true;
	}
	if (b->since_ns != 0)
		return DECAY_BURST_HOLD;
	/* A purge now would go by a look that cannot judge: one after a gap
	 * (frees came since), or the first fall, which a second in a row must
	 * confirm. Worth a few ms' wait while there is something to purge. */
	bool pending = (!fresh && came) || b->falls == 1;
	return pending && dirty_pages != 0 && !b->spent ? DECAY_BURST_PROBE : DECAY_BURST_NONE;
}
