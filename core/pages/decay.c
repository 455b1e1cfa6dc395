/* decay.c: the smooth decay curve of decay.h. */
#include "core/pages/decay.h"

#include <string.h>

#define N EBB_DECAY_EPOCHS

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
	memset(d, 0, sizeof *d);
	set_interval(d, interval_ns);
	d->epoch_start = now;
}

void decay_set_interval(decay_t *d, uint64_t interval_ns, uint64_t now)
{
	set_interval(d, interval_ns);
	d->epoch_start = now;
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
	uint64_t end = d->epoch_start + d->epoch_ns;
	return end > now ? end - now : 0;
}
