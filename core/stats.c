/* stats.c: see stats.h. */
#include "core/stats.h"

#include <string.h>

#include "core/central.h"
#include "core/meta.h"
#include "core/page_heap.h"
#include "core/size_class.h"
#include "core/superblock.h"

void stats_collect(struct ebb_stats *out, const stats_tcache_t *tc)
{
	memset(out, 0, sizeof *out);
	superblock_totals_t sb;
	superblock_totals_get(&sb);
	page_heap_stats_t ph;
	memset(&ph, 0, sizeof ph);
	page_heap_stats_add(&ph);
	central_class_stats_t cs[EBB_NUM_CLASSES];
	memset(cs, 0, sizeof cs);
	uint64_t carved = 0, returned = 0;
	central_stats(cs, &carved, &returned);

	uint64_t used_bytes = 0, transfer_bytes = 0, span_free_bytes = 0, tail_bytes = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		const size_class_t *k = &size_classes[c];
		uint64_t capacity = cs[c].spans * k->blocks;
		used_bytes += cs[c].used_blocks * k->size;
		transfer_bytes += cs[c].transfer_blocks * k->size;
		span_free_bytes += (capacity - cs[c].used_blocks) * k->size;
		tail_bytes += cs[c].spans * (((uint64_t)k->pages << EBB_PAGE_SHIFT) - (uint64_t)k->blocks * k->size);
	}
	uint64_t meta = meta_mapped_bytes();
	out->mapped = sb.mapped_bytes + meta;
	out->metadata = sb.header_bytes + meta;
	out->tcache = tc->bytes;
	out->central = transfer_bytes + span_free_bytes;
	out->allocated = used_bytes - transfer_bytes - tc->bytes +
			 ((ph.large_pages + ph.huge_pages - ph.huge_slack_pages) << EBB_PAGE_SHIFT);
	out->waste = tail_bytes + (ph.huge_slack_pages << EBB_PAGE_SHIFT);
	out->dirty = ph.dirty_pages << EBB_PAGE_SHIFT;
	out->purged = ph.purged_pages << EBB_PAGE_SHIFT;
	/* Resident: metadata pages written, every page handed out as a span
	 * (counted from the moment it is handed out), dirty free pages. */
	out->resident = meta + (ph.meta_pages << EBB_PAGE_SHIFT) +
			((ph.central_pages + ph.large_pages + ph.huge_pages + ph.dirty_pages) << EBB_PAGE_SHIFT);
	out->threads = tc->threads;
	out->superblocks = sb.count;
	out->superblocks_mapped = sb.mapped_total;
	out->superblocks_unmapped = sb.unmapped_total;
	out->purges = ph.purges;
	out->madvise_calls = ph.madvise_calls;
	out->bytes_purged = ph.bytes_purged;
	out->tcache_refills = tc->refills;
	out->tcache_flushes = tc->flushes;
	out->spans_carved = carved;
	out->spans_returned = returned;
	out->large_allocs = ph.large_allocs;
}

void stats_print(FILE *f, const struct ebb_stats *s)
{
	fprintf(f, "ebbmalloc statistics\n");
#define EBB_STATS_PRINT_(name, kind, doc)                                                        \
	if (strcmp(#kind, "bytes") == 0)                                                        \
		fprintf(f, "  %-21s %15llu  %9.1f MiB  %s\n", #name, (unsigned long long)s->name, \
			(double)s->name / 1048576.0, doc);                                       \
	else                                                                                     \
		fprintf(f, "  %-21s %15llu  %13s  %s\n", #name, (unsigned long long)s->name, "", doc);
	EBB_STATS_FIELDS(EBB_STATS_PRINT_)
#undef EBB_STATS_PRINT_
}
