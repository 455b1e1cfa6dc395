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
