/* meta.h: memory for the allocator's own structures (thread caches, central
 * lists), taken straight from the kernel and never from malloc.
 *
 * A bump allocator over 1 MiB chunks; what it hands out is never returned
 * (thread caches recycle their own blocks through tcache.c's free list), so
 * this stays tiny: it is sized by the number of CPUs and the peak number of
 * threads. Any thread; takes the meta lock. */
#ifndef EBB_CORE_META_H
#define EBB_CORE_META_H

#include "core/base/config.h"

EBB_BEGIN_DECLS

/* Zeroed memory of `size` bytes aligned to `align` (<= 4096), or NULL. */
void *meta_alloc(size_t size, size_t align);
/* Bytes mapped for metadata so far. */
uint64_t meta_mapped_bytes(void);
/* Bytes of that mapping resident in RAM, as the kernel says (a system call
 * per chunk: for the stats, not for allocation paths). Nothing here is ever
 * given back, so these are the pages written so far. */
uint64_t meta_resident_bytes(void);
/* For tests: the chunks mapped so far (up to max). */
unsigned meta_chunk_ranges(void **base, size_t *len, unsigned max);

void meta_prefork(void);
void meta_postfork_parent(void);
void meta_postfork_child(void);

EBB_END_DECLS

#endif /* EBB_CORE_META_H */
