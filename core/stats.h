/* stats.h: assembling struct ebb_stats (include/ebbmalloc.h) from the
 * counters each layer keeps, and printing it.
 *
 * Nothing is counted on the fast paths. Each layer counts what it owns,
 * under the lock it already holds: the page heaps count pages by state, the
 * central lists count spans and the blocks out of them, thread caches count
 * their blocks at their slow-path events, superblock.c counts mappings. The
 * gauges are then derived so that they always add up:
 *
 *   mapped    = superblock and huge mappings + metadata chunks
 *   allocated = blocks out of spans - blocks in transfer batches - blocks in
 *               thread caches (small)  +  large and huge pages asked for
 *   waste     = span tails + huge pages beyond what was asked
 *   mapped    = allocated + tcache + central + dirty + purged + metadata + waste
 */
#ifndef EBB_CORE_STATS_H
#define EBB_CORE_STATS_H

#include <stdio.h>

#include "core/config.h"
#include "ebbmalloc.h"

EBB_BEGIN_DECLS

typedef struct stats_tcache {
	uint64_t bytes, threads, refills, flushes;
} stats_tcache_t;

/* Fills *out; the thread-cache figures come from the caller (tcache/ sits
 * above core/). Takes each central and page-heap lock briefly. */
void stats_collect(struct ebb_stats *out, const stats_tcache_t *tc);
void stats_print(FILE *f, const struct ebb_stats *s);

EBB_END_DECLS

#endif /* EBB_CORE_STATS_H */
