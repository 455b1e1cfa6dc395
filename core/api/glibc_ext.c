/* glibc_ext.c: glibc's malloc extensions (<malloc.h>) answered by
 * ebbmalloc, so that a program preloading us never reads glibc's empty heap:
 * malloc_trim, mallinfo2, mallinfo, malloc_stats, malloc_info and mallopt.
 *
 * Without these names a preloaded program's call binds to glibc's own
 * functions, which describe glibc's arena (untouched: every block is ours)
 * and print zeros, or set knobs that nothing reads. Built only with
 * EBB_OVERRIDE: the prefixed build must leave the host's names alone.
 *
 * Nothing here is on a hot path, and nothing here holds an allocator lock
 * while it writes: the figures are collected first (stats.c takes each lock
 * briefly), then printed, and stdio may call malloc while it prints. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/process/stats.h"
#include "ebbmalloc.h"

#if EBB_OVERRIDE

/* glibc's malloc_trim(pad): gives memory back; 1 if any was released. */
EBB_API int malloc_trim(size_t pad)
{
	(void)pad;
	return ebb_trim();
}

/* glibc's mallinfo2() and the older mallinfo() with int fields, which glibc
 * truncates and we clamp: ebbmalloc's figures, not glibc's empty heap. */
EBB_API struct mallinfo2 mallinfo2(void)
{
	struct ebb_mallinfo m;
	ebb_mallinfo(&m);
	struct mallinfo2 r = {
		.arena = m.arena, .ordblks = m.ordblks, .smblks = m.smblks, .hblks = m.hblks,
		.hblkhd = m.hblkhd, .usmblks = m.usmblks, .fsmblks = m.fsmblks,
		.uordblks = m.uordblks, .fordblks = m.fordblks, .keepcost = m.keepcost,
	};
	return r;
}

static int clamp_int(size_t v)
{
	return v > INT_MAX ? INT_MAX : (int)v;
}

EBB_API struct mallinfo mallinfo(void)
{
	struct mallinfo2 m = mallinfo2();
	struct mallinfo r = {
		.arena = clamp_int(m.arena), .ordblks = clamp_int(m.ordblks),
		.smblks = clamp_int(m.smblks), .hblks = clamp_int(m.hblks),
		.hblkhd = clamp_int(m.hblkhd), .usmblks = clamp_int(m.usmblks),
		.fsmblks = clamp_int(m.fsmblks), .uordblks = clamp_int(m.uordblks),
		.fordblks = clamp_int(m.fordblks), .keepcost = clamp_int(m.keepcost),
	};
	return r;
}

/* glibc's malloc_stats(): its summary lines on stderr (a script that greps
 * "in use bytes" finds ebbmalloc's figures), then ebbmalloc's own report,
 * which says where the rest is (ebb_stats_print, docs/usage.md). There is
 * one heap, so no per-arena section. */
EBB_API void malloc_stats(void)
{
	struct mallinfo2 m = mallinfo2();
	fprintf(stderr, "Total (incl. mmap):\n");
	fprintf(stderr, "system bytes     = %10zu\n", m.arena + m.hblkhd);
	fprintf(stderr, "in use bytes     = %10zu\n", m.uordblks + m.hblkhd);
	fprintf(stderr, "mmap regions     = %10zu\n", m.hblks);
	fprintf(stderr, "mmap bytes       = %10zu\n", m.hblkhd);
	ebb_stats_print(stderr);
}

/* malloc_info's totals, the heap's and then the whole process's (which
 * adds the huge blocks as glibc's mmapped chunks). Mapped bytes are
 * mallinfo2's arena + hblkhd, as malloc_stats' "system bytes". */
static void info_totals(FILE *fp, const struct mallinfo2 *m, size_t free_blocks, bool whole)
{
	size_t mapped = m->arena + m->hblkhd;
	fprintf(fp, "<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
	fprintf(fp, "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n", free_blocks, m->fordblks);
	if (whole)
		fprintf(fp, "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n", m->hblks, m->hblkhd);
	fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n", mapped);
	fprintf(fp, "<aspace type=\"total\" size=\"%zu\"/>\n", mapped);
}

/* glibc's malloc_info(options, fp): the same XML elements, so that a tool
 * that reads glibc's finds ebbmalloc's figures in them. One heap; <sizes>
 * lists the free blocks of each size class that has spans (from: one more
 * than the class below, to: the class size; blocks in thread caches are not
 * counted per class, they are in the totals); "rest" is every free byte
 * (thread caches, central lists, free pages, as mallinfo2's fordblks);
 * "mmap" the huge blocks, which are glibc's mmapped chunks in mallinfo2.
 * glibc accepts no option: any other value fails with EINVAL. */
EBB_API int malloc_info(int options, FILE *fp)
{
	if (options != 0 || fp == NULL) {
		errno = EINVAL;
		return -1;
	}
	stats_class_row_t rows[EBB_NUM_CLASSES];
	struct mallinfo2 m = mallinfo2();

	fprintf(fp, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n");
	size_t free_blocks = 0;
	unsigned n = stats_classes(rows);
	uint64_t below = 0;
	for (unsigned i = 0; i < n; i++) {
		const stats_class_row_t *r = &rows[i];
		uint64_t count = r->size ? r->free_bytes / r->size : 0;
		free_blocks += count;
		if (count != 0)
			fprintf(fp, "  <size from=\"%llu\" to=\"%llu\" total=\"%llu\" count=\"%llu\"/>\n",
				(unsigned long long)below + 1, (unsigned long long)r->size,
				(unsigned long long)r->free_bytes, (unsigned long long)count);
		below = r->size;
	}
	fprintf(fp, "</sizes>\n");
	info_totals(fp, &m, free_blocks, false);
	fprintf(fp, "</heap>\n");
	info_totals(fp, &m, free_blocks, true);
	fprintf(fp, "</malloc>\n");
	return 0;
}

/* glibc's mallopt(param, value): every parameter is accepted and ignored,
 * and the answer is glibc's (1, or 0 for an M_MXFAST glibc would refuse), so
 * that a program tuning glibc (M_ARENA_MAX and M_TRIM_THRESHOLD are common
 * in services) runs unchanged. None of glibc's knobs has a meaning here:
 * ebbmalloc's own are EBB_OPTIONS and ebb_option_set (docs/usage.md maps
 * them). M_CHECK_ACTION and M_PERTURB are ignored on purpose: a call in the
 * program must not turn off the report and abort on a double free (only
 * on_error=warn does, in the environment or ebb_option_set). */
EBB_API int mallopt(int param, int value)
{
	if (param == M_MXFAST && (value < 0 || (size_t)value > 80 * sizeof(size_t) / 4))
		return 0;
	return 1;
}

#endif /* EBB_OVERRIDE */
