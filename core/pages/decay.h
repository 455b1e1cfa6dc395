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
 * the interval has passed. */
#ifndef EBB_CORE_DECAY_H
#define EBB_CORE_DECAY_H

#include "core/base/config.h"

EBB_BEGIN_DECLS

#define EBB_DECAY_EPOCHS 16

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

EBB_END_DECLS

#endif /* EBB_CORE_DECAY_H */
