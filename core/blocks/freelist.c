/* freelist.c: the two reports of a damaged free list (freelist.h), in the
 * words every caller uses. */
#include "core/blocks/freelist.h"

#include "core/runtime/report.h"

void freelist_corrupt(const char *func, const void *block)
{
	report_bad_pointer(func, block,
			   "corrupted free-list link (a write into a freed block, or a double free)");
}

void freelist_lost_mark(const char *func, const void *block)
{
	report_bad_pointer(func, block,
			   "double free (the block was freed twice and is about to be handed out again), "
			   "or a write into it after it was freed");
}
