// The decay curve, driven by a virtual clock: how many dirty pages may stay.
#include <catch2/catch.hpp>

#include "core/pages/decay.h"

static const uint64_t MS = 1000000ull;

TEST_CASE("decay 0 purges everything at once, -1 never", "[decay]")
{
	decay_t d;
	decay_init(&d, 0, 0);
	REQUIRE(decay_pages_to_purge(&d, 5, 1000) == 1000);
	decay_init(&d, UINT64_MAX, 0);
	REQUIRE(decay_pages_to_purge(&d, 10000 * MS, 1000) == 0);
	REQUIRE(decay_next_due(&d, 0, 1000) == UINT64_MAX);
}

TEST_CASE("a burst of frees is given back gradually and completely within one interval", "[decay]")
{
	const uint64_t interval = 500 * MS, epoch = interval / EBB_DECAY_EPOCHS;
	decay_t d;
	decay_init(&d, interval, 0);
	size_t dirty = 100000;
	// Freed during the first epoch: nothing goes yet.
	REQUIRE(decay_pages_to_purge(&d, epoch / 2, dirty) == 0);
	size_t purged_total = 0, largest_step = 0;
	uint64_t t = epoch / 2;
	int epochs_to_empty = -1;
	for (int i = 1; i <= EBB_DECAY_EPOCHS + 2; i++) {
		t += epoch;
		size_t p = decay_pages_to_purge(&d, t, dirty);
		REQUIRE(p <= dirty);
		dirty -= p;
		decay_note_removed(&d, p);
		purged_total += p;
		largest_step = p > largest_step ? p : largest_step;
		if (dirty == 0 && epochs_to_empty < 0)
			epochs_to_empty = i;
	}
	REQUIRE(dirty == 0);
	REQUIRE(purged_total == 100000);
	// All of it within the interval plus the epoch it was freed in.
	REQUIRE(epochs_to_empty >= 1);
	REQUIRE(epochs_to_empty <= EBB_DECAY_EPOCHS + 1);
	// Smooth: the steepest epoch of 1 - smoothstep over 16 steps is ~9.4%.
	REQUIRE(largest_step <= 100000 / 10);
}

TEST_CASE("pages dirtied recently are kept while older ones go", "[decay]")
{
	const uint64_t interval = 160 * MS, epoch = interval / EBB_DECAY_EPOCHS;
	decay_t d;
	decay_init(&d, interval, 0);
	size_t dirty = 1000; // old burst
	uint64_t t = 0;
	for (int i = 0; i < EBB_DECAY_EPOCHS + 1; i++) {
		t += epoch;
		size_t p = decay_pages_to_purge(&d, t, dirty);
		dirty -= p;
		decay_note_removed(&d, p);
	}
	REQUIRE(dirty == 0);
	dirty = 500; // fresh frees
	t += epoch / 3;
	REQUIRE(decay_pages_to_purge(&d, t, dirty) == 0);
	t += epoch;
	size_t p = decay_pages_to_purge(&d, t, dirty);
	REQUIRE(p < 50);
}

TEST_CASE("reused dirty pages are not counted as new", "[decay]")
{
	const uint64_t interval = 160 * MS, epoch = interval / EBB_DECAY_EPOCHS;
	decay_t d;
	decay_init(&d, interval, 0);
	size_t dirty = 1000;
	REQUIRE(decay_pages_to_purge(&d, epoch + 1, dirty) <= 20);
	// The program takes 900 pages back: only 100 remain dirty.
	dirty -= 900;
	decay_note_removed(&d, 900);
	size_t p = decay_pages_to_purge(&d, 2 * epoch + 1, dirty);
	REQUIRE(p <= dirty);
}

TEST_CASE("next due is the end of the running epoch while pages are dirty", "[decay]")
{
	decay_t d;
	decay_init(&d, 160 * MS, 0);
	REQUIRE(decay_next_due(&d, 0, 0) == UINT64_MAX);
	REQUIRE(decay_next_due(&d, 3 * MS, 10) == 7 * MS);
}

// The idle clock (decay.h): the background thread ticks it every `step` with
// the CPU time and preemptions of the program's other threads so far. Runs
// the curve over `wall` ns of such ticks from `t` (purging what it asks, as
// a decay pass does) and returns the pages still dirty.
namespace {
struct idle_run {
	decay_t d;
	uint64_t t = 1000 * MS, cpu = 0, preempted = 0;
	size_t dirty;

	explicit idle_run(size_t pages, uint64_t interval = 500 * MS) : dirty(pages)
	{
		decay_clock_reset();
		decay_init(&d, interval, t);
		decay_clock_tick(t, cpu, preempted, true);
	}
	~idle_run() { decay_clock_reset(); }

	// cpu_per_step: CPU time the program uses per step; preempt: one
	// preemption per step.
	size_t run(uint64_t wall, uint64_t step, uint64_t cpu_per_step, bool preempt, bool cycling = true)
	{
		for (uint64_t end = t + wall; t < end;) {
			t += step;
			cpu += cpu_per_step;
			preempted += preempt;
			decay_clock_tick(t, cpu, preempted, cycling);
			size_t p = decay_pages_to_purge(&d, t, dirty);
			REQUIRE(p <= dirty);
			dirty -= p;
			decay_note_removed(&d, p);
		}
		return dirty;
	}
};
} // namespace

TEST_CASE("a parked program's pages go back within decay_ms, as on the wall clock", "[decay]")
{
	idle_run r(1000);
	// No CPU time, no preemption: idle, whatever the program did before.
	REQUIRE(r.run(500 * MS + 40 * MS, 10 * MS, 0, false) == 0);
	REQUIRE(decay_clock_now(r.t) == r.t);
}

TEST_CASE("a window the program spends working does not age the runs it freed just before", "[decay]")
{
	idle_run r(1000);
	// 1 s of wall time at 5% of a CPU (a loaded machine), no allocation:
	// 125 ms of idle time (1/8 of the wall), so the curve keeps most.
	size_t left = r.run(1000 * MS, 10 * MS, MS / 2, false);
	REQUIRE(left >= 750);
	REQUIRE(decay_clock_busy());
	REQUIRE(decay_clock_now(r.t) == r.t - 875 * MS);
	// Parked from here on: the rest of one decay_ms of idle time returns all.
	REQUIRE(r.run(375 * MS + 40 * MS, 10 * MS, 0, false) == 0);
}

TEST_CASE("a starved program that waits for a CPU through whole windows is still working", "[decay]")
{
	idle_run r(1000);
	// Preempted every 100 ms, no CPU time in between: each preemption holds
	// the windows after it busy for EBB_DECAY_BUSY_HOLD_NS.
	for (int i = 0; i < 10; i++) {
		r.run(10 * MS, 10 * MS, 0, true);
		r.run(90 * MS, 10 * MS, 0, false);
	}
	REQUIRE(r.dirty >= 750);
	REQUIRE(decay_clock_now(r.t) == r.t - 875 * MS);
}

TEST_CASE("a program with a CPU to spare, or not cycling, ages its runs on the wall clock", "[decay]")
{
	{
		idle_run r(1000);
		REQUIRE(r.run(540 * MS, 10 * MS, 10 * MS, false) == 0);
		REQUIRE(decay_clock_now(r.t) == r.t);
	}
	{
		idle_run r(1000);
		REQUIRE(r.run(540 * MS, 10 * MS, MS / 2, true, false) == 0);
		REQUIRE(!decay_clock_busy());
	}
}

TEST_CASE("a program that keeps working without allocating gets its pages back within the bound", "[decay]")
{
	const uint64_t interval = 500 * MS;
	idle_run r(1000, interval);
	// The least idle time a busy window counts is 1/EBB_DECAY_BUSY_SLOW of it.
	REQUIRE(r.run(EBB_DECAY_BUSY_SLOW * (interval + 40 * MS), 10 * MS, MS / 2, false) == 0);
	// The background thread sleeps that much longer between ticks meanwhile.
	REQUIRE(decay_next_due(&r.d, r.t, 10) <= EBB_DECAY_BUSY_SLOW * (interval / EBB_DECAY_EPOCHS));
}

// A dirty budget overrun found during a burst of frees (background.c,
// bg_hold_overrun): the thread polls the rule every millisecond, and purges
// when it says to stop waiting. Frees arrive every `gap` until `burst_end`;
// returns when the purge starts, on a virtual clock from the overrun.
#include "core/process/background.h"

static uint64_t overrun_purge_at(uint64_t gap, uint64_t burst_end, size_t excess, size_t dirty)
{
	uint64_t last_free = 0;
	for (uint64_t t = 0;; t += MS) {
		while (last_free + gap <= t && last_free + gap <= burst_end)
			last_free += gap;
		if (!background_overrun_waits(t, t - last_free, excess, dirty))
			return t;
	}
}

TEST_CASE("an overrun during a run of frees is purged when the frees stop, within the cap", "[decay][background]")
{
	const size_t budget = 32768, dirty = budget + budget / 2; // 1.5 x the budget
	// Frees every 0.2 ms for 40 ms: purged 2 ms after the last one, not before.
	uint64_t at = overrun_purge_at(MS / 5, 40 * MS, dirty - budget, dirty);
	REQUIRE(at >= 40 * MS);
	REQUIRE(at <= 43 * MS);
	// Frees that never stop: purged at the cap (100 ms), not later.
	at = overrun_purge_at(MS / 5, UINT64_MAX / 2, dirty - budget, dirty);
	REQUIRE(at == 100 * MS);
	// No free after the overrun: purged within the quiet time.
	REQUIRE(overrun_purge_at(MS, 0, dirty - budget, dirty) <= 2 * MS);
}

TEST_CASE("a large overrun is purged at once, and no overrun waits for nothing", "[decay][background]")
{
	const size_t budget = 32768;
	// Dirty pages at 4 x the budget: no wait, frees or not.
	REQUIRE(!background_overrun_waits(0, 0, 3 * budget, 4 * budget));
	REQUIRE(!background_overrun_waits(0, 0, 10 * budget, 11 * budget));
	REQUIRE(overrun_purge_at(MS / 5, 40 * MS, 3 * budget, 4 * budget) == 0);
	// Just under it: waits for the burst.
	REQUIRE(background_overrun_waits(0, 0, 3 * budget - 1, 4 * budget - 1));
	// No excess, or nonsense gauges (a budget of 0): nothing to wait for.
	REQUIRE(!background_overrun_waits(0, 0, 0, budget));
	REQUIRE(!background_overrun_waits(0, 0, budget, budget));
	REQUIRE(!background_overrun_waits(0, 0, 2 * budget, budget));
}

TEST_CASE("a program of one thread gets the thread only past the dirty bound, a threaded one at once",
	  "[decay][background]")
{
	const size_t bound = (4u << 20) / EBB_PAGE_SIZE; // BG_SOLO_DIRTY_PAGES, 4 MiB
	REQUIRE(!background_solo_wants_thread(true, 1));
	REQUIRE(!background_solo_wants_thread(true, bound - 1));
	REQUIRE(background_solo_wants_thread(true, bound));
	REQUIRE(background_solo_wants_thread(true, 100 * bound));
	// A threaded program (or one the C library cannot say of): every dirty page.
	REQUIRE(background_solo_wants_thread(false, 1));
	REQUIRE(background_solo_wants_thread(false, bound - 1));
}
