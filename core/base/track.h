/* track.h: telling a memory checker (valgrind's memcheck) what ebbmalloc's
 * blocks are, through valgrind's client requests. Built only with the CMake
 * option EBB_VALGRIND=ON (which needs <valgrind/valgrind.h>); otherwise every
 * macro here compiles to nothing, so the normal build pays nothing.
 *
 * What memcheck is told, from the entry points (core/api/api.c; core/api/cxx_new.cpp
 * calls them in this build) and, for TRACK_CARVED, the span carver:
 * - TRACK_ALLOC(p, size, zeroed): p now holds a block of `size` bytes (the
 *   size asked for), undefined unless `zeroed`; TRACK_NOACCESS marks the
 *   rest of the block (the class's slack) so that a write past the size asked
 *   for is reported.
 * - TRACK_FREE(p): the block is gone: memcheck reports any later access,
 *   except to its first 16 bytes, which ebbmalloc itself uses while the
 *   block is free (word 1: the double-free mark; word 0: the span free
 *   list's link while the block is on its span's list), read and written by
 *   thread exit and the background thread, outside any entry point. A write
 *   there is caught by ebbmalloc instead (core/blocks/freelist.h): a lost
 *   mark is reported when the block is handed out again, and a span link is
 *   checked before it is followed.
 * - realloc, in place or not, is a TRACK_FREE of the old block and a
 *   TRACK_ALLOC of the new one with the kept bytes TRACK_DEFINED:
 *   VALGRIND_RESIZEINPLACE_BLOCK would need the size memcheck was told at
 *   allocation, which ebbmalloc does not keep.
 * - TRACK_CARVED(p): a block carved from a span that was never handed out
 *   (core/blocks/central.c): its first 16 bytes are ebbmalloc's, as above, even if
 *   memcheck last saw them inside a freed large block.
 * - TRACK_QUIET_BEGIN/END: around the allocator's own work inside an entry
 *   point (it reads and writes free blocks, which memcheck was told are not
 *   addressable); memcheck's errors are suspended there, for this thread.
 *
 * Not tracked: memory that is accessible to the program but was never handed
 * out (fresh superblock pages), so an overflow into never-used memory or
 * into a live neighbour goes unseen; and malloc_usable_size() does not widen
 * the block, so a program that writes up to the usable size is reported.
 * docs/reliability.md has the full list. */
#ifndef EBB_CORE_TRACK_H
#define EBB_CORE_TRACK_H

#include "core/base/config.h"

#ifndef EBB_VALGRIND
#define EBB_VALGRIND 0
#endif

#if EBB_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>

/* Bytes at the start of a free block that ebbmalloc keeps using. */
#define TRACK_FREE_HEAD 16

#define TRACK_ALLOC(p, size, zeroed)                                                         \
	do {                                                                                 \
		if ((p) != NULL)                                                             \
			VALGRIND_MALLOCLIKE_BLOCK((p), (size) ? (size) : 1, 0, (zeroed));    \
	} while (0)
#define TRACK_FREE(p)                                                                        \
	do {                                                                                 \
		if ((p) != NULL) {                                                           \
			VALGRIND_FREELIKE_BLOCK((p), 0);                                     \
			VALGRIND_MAKE_MEM_DEFINED((p), TRACK_FREE_HEAD);                     \
		}                                                                            \
	} while (0)
/* Contents moved from a tracked block into a new one (realloc): defined,
 * since ebbmalloc's copy ran while memcheck's errors were suspended. */
#define TRACK_DEFINED(p, size) VALGRIND_MAKE_MEM_DEFINED((p), (size))
/* The slack between the size asked for and the block's end. */
#define TRACK_NOACCESS(p, size) VALGRIND_MAKE_MEM_NOACCESS((p), (size))
/* A block carved from a fresh span: its first words are ebbmalloc's now. */
#define TRACK_CARVED(p) VALGRIND_MAKE_MEM_DEFINED((p), TRACK_FREE_HEAD)
#define TRACK_QUIET_BEGIN() VALGRIND_DISABLE_ERROR_REPORTING
#define TRACK_QUIET_END() VALGRIND_ENABLE_ERROR_REPORTING

#else

#define TRACK_ALLOC(p, size, zeroed) ((void)0)
#define TRACK_FREE(p) ((void)0)
#define TRACK_DEFINED(p, size) ((void)0)
#define TRACK_NOACCESS(p, size) ((void)0)
#define TRACK_CARVED(p) ((void)0)
#define TRACK_QUIET_BEGIN() ((void)0)
#define TRACK_QUIET_END() ((void)0)

#endif

#endif /* EBB_CORE_TRACK_H */
