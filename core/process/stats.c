/* stats.c: see stats.h. */
#include "core/process/stats.h"

#include <string.h>

#include "core/blocks/central.h"
#include "core/runtime/meta.h"
#include "core/pages/page_heap.h"
#include "core/blocks/size_class.h"
#include "core/pages/superblock.h"
#include "os/os.h"

static stats_tcache_source_t stats_tcache_source;

void stats_set_tcache_source(stats_tcache_source_t fn)
{
	__atomic_store_n(&stats_tcache_source, fn, __ATOMIC_RELEASE);
}

void stats_collect_all(struct ebb_stats *out)
{
	stats_tcache_t tc = {0, 0, 0, 0};
	stats_tcache_source_t fn = __atomic_load_n(&stats_tcache_source, __ATOMIC_ACQUIRE);
	if (fn != NULL)
		fn(&tc.bytes, &tc.threads, &tc.refills, &tc.flushes);
	stats_collect(out, &tc);
}

unsigned stats_classes(stats_class_row_t rows[EBB_NUM_CLASSES])
{
	central_class_stats_t cs[EBB_NUM_CLASSES];
	memset(cs, 0, sizeof cs);
	uint64_t carved = 0, returned = 0;
	central_stats(cs, &carved, &returned);
	unsigned n = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		if (cs[c].spans == 0)
			continue;
		const size_class_t *k = &size_classes[c];
		stats_class_row_t *r = &rows[n++];
		r->cls = c;
		r->size = k->size;
		r->spans = cs[c].spans;
		r->span_bytes = cs[c].spans * ((uint64_t)k->pages << EBB_PAGE_SHIFT);
		r->live = cs[c].used_blocks - cs[c].transfer_blocks;
		r->live_bytes = r->live * k->size;
		r->transfer_bytes = cs[c].transfer_blocks * k->size;
		r->free_bytes = (cs[c].spans * k->blocks - cs[c].used_blocks) * k->size;
	}
	return n;
}

static size_t sub_or_zero(uint64_t a, uint64_t b)
{
	return a > b ? (size_t)(a - b) : 0;
}

/* stats_collect, also handing back the page-heap figures it used. */
static void collect(struct ebb_stats *out, const stats_tcache_t *tc, page_heap_stats_t *ph_out)
{
	memset(out, 0, sizeof *out);
	superblock_totals_t sb;
	superblock_totals_get(&sb);
	page_heap_stats_t ph;
	memset(&ph, 0, sizeof ph);
	page_heap_stats_add(&ph);
	*ph_out = ph;
	central_class_stats_t cs[EBB_NUM_CLASSES];
	memset(cs, 0, sizeof cs);
	uint64_t carved = 0, returned = 0;
	central_stats(cs, &carved, &returned);

	uint64_t used_bytes = 0, transfer_bytes = 0, span_free_bytes = 0, tail_bytes = 0;
	uint64_t rounding_max = 0;
	for (unsigned c = 1; c < EBB_NUM_CLASSES; c++) {
		const size_class_t *k = &size_classes[c];
		uint64_t capacity = cs[c].spans * k->blocks;
		/* A block of class c was asked for with more than the class
		 * below holds (at least 1 byte for class 1): its rounding is at
		 * most the gap between the two. */
		uint64_t below = c > 1 ? size_classes[c - 1].size : 0;
		rounding_max += (cs[c].used_blocks - cs[c].transfer_blocks) * (k->size - below - 1);
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
	/* The lists are read one after another without a common lock, and other
	 * threads' cache bytes are as of their last slow-path event, so while
	 * blocks move (the background thread draining transfer batches, say)
	 * the small-block part can come out below zero for a moment (seen once
	 * at the end of memreturn b: 2^64 bytes printed). It reads zero then. */
	out->allocated = sub_or_zero(used_bytes, transfer_bytes + tc->bytes) +
			 ((ph.large_pages + ph.huge_pages - ph.huge_slack_pages) << EBB_PAGE_SHIFT);
	out->waste = tail_bytes + (ph.huge_slack_pages << EBB_PAGE_SHIFT);
	out->rounding_max = rounding_max;
	out->dirty = ph.dirty_pages << EBB_PAGE_SHIFT;
	out->purged = ph.purged_pages << EBB_PAGE_SHIFT;
	/* Resident: metadata pages written, every page handed out as a span
	 * (counted from the moment it is handed out), dirty free pages. */
	out->resident = meta_resident_bytes() + (ph.meta_pages << EBB_PAGE_SHIFT) +
			((ph.central_pages + ph.large_pages + ph.huge_pages + ph.dirty_pages) << EBB_PAGE_SHIFT);
	out->threads = tc->threads;
	out->superblocks = sb.count;
	out->superblocks_mapped = sb.mapped_total;
	out->superblocks_unmapped = sb.unmapped_total;
	/* Pages given back from inside spans that keep a live block are counted
	 * in central_pages, but are not resident (core/blocks/central_purge.c). */
	uint64_t in_spans_pages, in_spans_calls, in_spans_bytes;
	central_purge_stats(&in_spans_pages, &in_spans_calls, &in_spans_bytes);
	out->resident -= in_spans_pages << EBB_PAGE_SHIFT;
	out->purges = ph.purges;
	out->madvise_calls = ph.madvise_calls + in_spans_calls;
	out->bytes_purged = ph.bytes_purged + in_spans_bytes;
	out->tcache_refills = tc->refills;
	out->tcache_flushes = tc->flushes;
	out->spans_carved = carved;
	out->spans_returned = returned;
	out->large_allocs = ph.large_allocs;
}

void stats_collect(struct ebb_stats *out, const stats_tcache_t *tc)
{
	page_heap_stats_t ph;
	collect(out, tc, &ph);
}

/* glibc's fields (docs/usage.md, "mallinfo"): what it keeps in its sbrk
 * arena is here everything but the live huge blocks, which are its mmapped
 * chunks. Derived from one snapshot, so the identities of stats.h carry
 * over: arena = uordblks + fordblks + metadata + span tails. */
void stats_mallinfo(struct ebb_mallinfo *out, const stats_tcache_t *tc)
{
	struct ebb_stats s;
	page_heap_stats_t ph;
	collect(&s, tc, &ph);
	uint64_t huge = ph.huge_pages << EBB_PAGE_SHIFT;
	uint64_t huge_asked = (ph.huge_pages - ph.huge_slack_pages) << EBB_PAGE_SHIFT;
	memset(out, 0, sizeof *out);
	out->arena = sub_or_zero(s.mapped, huge);
	out->hblks = (size_t)ph.huge_blocks;
	out->hblkhd = (size_t)huge;
	out->fsmblks = (size_t)s.tcache;
	out->uordblks = sub_or_zero(s.allocated, huge_asked);
	out->fordblks = (size_t)(s.tcache + s.central + s.dirty + s.purged);
	out->keepcost = (size_t)s.dirty;
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
	uint64_t rss = os_rss_bytes();
	fprintf(f, "  %-21s %15llu  %9.1f MiB  %s\n", "rss (kernel)", (unsigned long long)rss,
		(double)rss / 1048576.0, "the whole process as the kernel counts it (/proc/self/statm)");

	/* Where the small-block bytes are: a class with many spans but few live
	 * objects (high frag) holds RSS that only frees of its blocks release. */
	stats_class_row_t rows[EBB_NUM_CLASSES];
	unsigned n = stats_classes(rows);
	fprintf(f, "size classes with spans (live: out of spans, in use or in thread caches; "
		   "frag: free bytes in the class's spans / span bytes)\n");
	fprintf(f, "  %5s %7s %9s %12s %12s %12s %12s %12s %6s\n", "class", "size", "spans",
		"span_bytes", "live", "live_bytes", "free_bytes", "transfer", "frag%");
	stats_class_row_t t;
	memset(&t, 0, sizeof t);
	for (unsigned i = 0; i < n; i++) {
		const stats_class_row_t *r = &rows[i];
		fprintf(f, "  %5u %7llu %9llu %12llu %12llu %12llu %12llu %12llu %6.1f\n", r->cls,
			(unsigned long long)r->size, (unsigned long long)r->spans,
			(unsigned long long)r->span_bytes, (unsigned long long)r->live,
			(unsigned long long)r->live_bytes, (unsigned long long)r->free_bytes,
			(unsigned long long)r->transfer_bytes,
			(double)r->free_bytes * 100.0 / (double)r->span_bytes);
		t.spans += r->spans;
		t.span_bytes += r->span_bytes;
		t.live += r->live;
		t.live_bytes += r->live_bytes;
		t.free_bytes += r->free_bytes;
		t.transfer_bytes += r->transfer_bytes;
	}
	fprintf(f, "  %5s %7s %9llu %12llu %12llu %12llu %12llu %12llu %6.1f\n", "all", "",
		(unsigned long long)t.spans, (unsigned long long)t.span_bytes,
		(unsigned long long)t.live, (unsigned long long)t.live_bytes,
		(unsigned long long)t.free_bytes, (unsigned long long)t.transfer_bytes,
		t.span_bytes ? (double)t.free_bytes * 100.0 / (double)t.span_bytes : 0.0);
}
