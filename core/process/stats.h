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

#include "core/base/config.h"
#include "ebbmalloc.h"

EBB_BEGIN_DECLS

typedef struct stats_tcache {
	uint64_t bytes, threads, refills, flushes;
} stats_tcache_t;

/* Fills *out; the thread-cache figures come from the caller (tcache/ sits
 * above core/). Takes each central and page-heap lock briefly. */
void stats_collect(struct ebb_stats *out, const stats_tcache_t *tc);
/* Fills *out (include/ebbmalloc.h) from one snapshot of the same counters;
 * the thread-cache figures come from the caller, as for stats_collect. */
void stats_mallinfo(struct ebb_mallinfo *out, const stats_tcache_t *tc);
/* Prints *s, the kernel's RSS next to it, and the per-class table below. */
void stats_print(FILE *f, const struct ebb_stats *s);

/* The thread-cache figures for core/ callers that cannot ask tcache/ (the
 * timeline): api.c registers tcache_stats() here at start-up; until then
 * they read as zero. Any thread, no allocator lock held. */
typedef void (*stats_tcache_source_t)(uint64_t *bytes, uint64_t *threads, uint64_t *refills,
				      uint64_t *flushes);
void stats_set_tcache_source(stats_tcache_source_t fn);
void stats_collect_all(struct ebb_stats *out);

/* One row of the per-class table: the figures of central_stats() turned
 * into bytes. live counts blocks out of their spans and not on a central
 * transfer stack: held by the program or sitting in a thread cache (thread
 * caches are not counted per class). Invariant per class:
 *   span_bytes == (live + transfer) * size + free_bytes + tail bytes. */
typedef struct stats_class_row {
	unsigned cls;
	uint64_t size, spans, span_bytes;
	uint64_t live, live_bytes;   /* blocks (and their bytes) out of spans */
	uint64_t transfer_bytes;     /* free blocks on central transfer stacks */
	uint64_t free_bytes;         /* free blocks inside the class's spans; the
				      * fragmentation is free_bytes / span_bytes */
} stats_class_row_t;

/* Fills rows[] with the classes that have at least one span, in size order;
 * returns how many. Takes each central lock briefly. */
unsigned stats_classes(stats_class_row_t rows[EBB_NUM_CLASSES]);

EBB_END_DECLS

#endif /* EBB_CORE_STATS_H */
