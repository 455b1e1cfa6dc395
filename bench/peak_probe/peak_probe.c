/* peak_probe.c: where a process' memory is at its peak RSS (issue 14).
 *
 * A diagnostic, not part of the library or of bench/run: preloaded after the
 * allocator, it starts a thread in each process whose command line contains
 * $PEAK_PROBE_MATCH (every process when unset) that reads the process' RSS
 * every millisecond and, at each new maximum (64 KiB above the last; see
 * PEAK_PROBE_STEP_KIB, _MIN_KIB and _KEEP below), writes
 * $PEAK_PROBE_DIR/peak.<pid> (default /tmp) anew with:
 * - RSS and the Anonymous pages of /proc/self/smaps_rollup (the heap's part;
 *   shared memory and file pages are not in it), and the largest Anonymous
 *   seen so far;
 * - one "map" line per mapping with resident pages (/proc/self/smaps: its
 *   Rss in KiB and its maps line), to tell superblocks (4 MiB, aligned),
 *   metadata chunks, thread stacks and the library's own pages apart;
 * - under ebbmalloc: every normal superblock's pages by span state, resident
 *   or not (mincore), the resident header pages, and per size class the
 *   resident pages of its spans against the blocks out of them (program and
 *   thread caches): the difference is free blocks that pin resident pages;
 *   then ebb_stats_print (the stats and the per-class table);
 * - under glibc: mallinfo2 (arena, mmapped, in use, free, top).
 * The walk reads superblock headers without their locks while the program
 * runs: a figure may be off by a span in flight. The probe's own thread
 * adds a thread cache and a few pages (small against a peak of megabytes).
 * Each snapshot is written to peak.<pid>.tmp and renamed over peak.<pid>: a
 * process that exits during a write (a benchmark of a fraction of a second
 * peaks at its end) leaves the previous whole snapshot, not an empty file.
 *
 * Build (from the repository root):
 *   gcc -shared -fPIC -O2 -I. -Iinclude -o /tmp/peak_probe.so bench/peak_probe/peak_probe.c -lpthread -ldl
 * Run: LD_PRELOAD="build/libebbmalloc.so /tmp/peak_probe.so" PEAK_PROBE_MATCH=--single ...
 * See README.md next to it for what it found in initdb and python3. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/blocks/central.h"
#include "core/pages/superblock.h"

#define MAX_CLASSES 128

static char out_path[256];
static long max_anon_kib;
/* $PEAK_PROBE_STEP_KIB: a new maximum this far above the last is written
 * (default 64); a larger step walks less often, so the probe's own work
 * moves a fast multithreaded benchmark's peak less. $PEAK_PROBE_KEEP=1
 * keeps every snapshot as peak.<pid>.<n> besides peak.<pid>, to follow the
 * way to the peak. $PEAK_PROBE_MIN_KIB: no snapshot below this RSS (the
 * walk and ebb_stats_print take milliseconds and stall the program's
 * threads on the way up; latency t=4's peak moved from 38 to 53 MiB with a
 * snapshot every 64 KiB). */
static long step_kib = 64;
static long min_kib;
static bool keep_all;
static unsigned snap_count;

static void rollup(long *rss, long *anon)
{
	char b[4096];
	int fd = open("/proc/self/smaps_rollup", O_RDONLY);
	int n = fd < 0 ? 0 : (int)read(fd, b, sizeof b - 1);
	if (fd >= 0)
		close(fd);
	b[n > 0 ? n : 0] = 0;
	char *p = strstr(b, "\nRss:");
	*rss = p ? atol(p + 5) : 0;
	p = strstr(b, "\nAnonymous:");
	*anon = p ? atol(p + 11) : 0;
}

static long resident_pages(void *p, size_t pages)
{
	unsigned char v[EBB_SB_PAGES];
	if (pages > EBB_SB_PAGES || mincore(p, pages << EBB_PAGE_SHIFT, v) != 0)
		return -1;
	long c = 0;
	for (size_t i = 0; i < pages; i++)
		c += v[i] & 1;
	return c;
}

static void walk_superblocks(FILE *f)
{
	static const char *names[] = { "none", "dirty", "purged", "busy", "central", "large", "arena", "pool" };
	long st_pages[8] = { 0 }, st_res[8] = { 0 }, hdr_res = 0, nsb = 0;
	long c_spans[MAX_CLASSES] = { 0 }, c_pages[MAX_CLASSES] = { 0 }, c_res[MAX_CLASSES] = { 0 },
	     c_used[MAX_CLASSES] = { 0 };
	FILE *m = fopen("/proc/self/maps", "r");
	char line[512];
	while (m && fgets(line, sizeof line, m)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx", &a, &b) != 2 || strstr(line, "rw-p") == NULL)
			continue;
		for (unsigned long s = (a + EBB_SB_SIZE - 1) & ~(EBB_SB_SIZE - 1); s + EBB_SB_SIZE <= b; s += EBB_SB_SIZE) {
			superblock_t *sb = (superblock_t *)s;
			if (sb->magic != EBB_SB_MAGIC || sb->huge)
				continue;
			nsb++;
			hdr_res += resident_pages(sb, EBB_SB_HEADER_PAGES);
			for (unsigned pg = sb->first_page; pg < (unsigned)sb->first_page + sb->usable_pages;) {
				span_t *sp = &sb->spans[pg - EBB_SB_HEADER_PAGES];
				unsigned n = sp->npages, st = sp->state;
				if (n == 0 || pg + n > EBB_SB_PAGES || st > 7) {
					fprintf(f, "walk: span in flight at superblock %#lx page %u\n", s, pg);
					break;
				}
				long r = resident_pages((char *)sb + ((size_t)pg << EBB_PAGE_SHIFT), n);
				st_pages[st] += n;
				st_res[st] += r;
				if (st == SPAN_FREE_DIRTY || st == SPAN_LARGE)
					fprintf(f, "run %s page %u pages %u resident %ld\n", names[st], pg, n, r);
				if (st == SPAN_CENTRAL && sp->cls < MAX_CLASSES) {
					c_spans[sp->cls]++;
					c_pages[sp->cls] += n;
					c_res[sp->cls] += r;
					/* bit 31 marks a full span (CENTRAL_USED_FULL), not a count */
					c_used[sp->cls] += sp->used & ~CENTRAL_USED_FULL;
				}
				pg += n;
			}
		}
	}
	if (m)
		fclose(m);
	fprintf(f, "superblocks %ld header_resident_pages %ld\n", nsb, hdr_res);
	for (int i = 0; i < 8; i++)
		if (st_pages[i])
			fprintf(f, "state %-8s pages %6ld resident %6ld\n", names[i], st_pages[i], st_res[i]);
	fprintf(f, "class spans pages resident_pages blocks_out\n");
	for (int c = 0; c < MAX_CLASSES; c++)
		if (c_pages[c])
			fprintf(f, "class %3d %4ld %5ld %5ld %6ld\n", c, c_spans[c], c_pages[c], c_res[c], c_used[c]);
}

/* A maps line starts with the mapping's address range; smaps' field lines
 * start with a field name. */
static bool maps_line(const char *l)
{
	return (l[0] >= '0' && l[0] <= '9') || (l[0] >= 'a' && l[0] <= 'f');
}

static void walk_mappings(FILE *f)
{
	FILE *sm = fopen("/proc/self/smaps", "r");
	char line[512], map[512] = "";
	while (sm && fgets(line, sizeof line, sm)) {
		if (maps_line(line))
			snprintf(map, sizeof map, "%s", line);
		else if (strncmp(line, "Rss:", 4) == 0 && atol(line + 4) > 0)
			fprintf(f, "map %6ld %s", atol(line + 4), map);
	}
	if (sm)
		fclose(sm);
}

static void snapshot(long rss, long anon)
{
	void (*ebb_print)(FILE *) = (void (*)(FILE *))dlsym(RTLD_DEFAULT, "ebb_stats_print");
	char tmp_path[sizeof out_path + 4];
	snprintf(tmp_path, sizeof tmp_path, "%s.tmp", out_path);
	FILE *f = fopen(tmp_path, "w");
	if (f == NULL)
		return;
	fprintf(f, "rss_kib %ld anon_kib %ld max_anon_kib %ld\n", rss, anon, max_anon_kib);
	walk_mappings(f);
	if (ebb_print) {
		walk_superblocks(f);
		ebb_print(f);
	} else {
		struct mallinfo2 mi = mallinfo2();
		fprintf(f, "glibc arena %zu mmapped %zu in_use %zu free %zu top %zu\n", mi.arena, mi.hblkhd,
			mi.uordblks, mi.fordblks, mi.keepcost);
	}
	if (fclose(f) != 0)
		return;
	if (keep_all) {
		char keep_path[sizeof out_path + 16];
		snprintf(keep_path, sizeof keep_path, "%s.%u", out_path, snap_count++);
		link(tmp_path, keep_path);
	}
	rename(tmp_path, out_path);
}

static void *probe(void *arg)
{
	(void)arg;
	long max_rss = 0;
	struct timespec ms = { 0, 1000000 };
	for (;;) {
		long rss, anon;
		rollup(&rss, &anon);
		if (anon > max_anon_kib)
			max_anon_kib = anon;
		if (rss > max_rss + step_kib && rss >= min_kib) {
			max_rss = rss;
			snapshot(rss, anon);
		}
		nanosleep(&ms, NULL);
	}
	return NULL;
}

__attribute__((constructor)) static void peak_probe_start(void)
{
	char cmd[1024] = { 0 };
	int fd = open("/proc/self/cmdline", O_RDONLY);
	int n = fd < 0 ? 0 : (int)read(fd, cmd, sizeof cmd - 1);
	if (fd >= 0)
		close(fd);
	for (int i = 0; i + 1 < n; i++)
		if (cmd[i] == 0)
			cmd[i] = ' ';
	const char *match = getenv("PEAK_PROBE_MATCH");
	/* Not the shell of a popen or system() whose command line names the match. */
	const char *sp = strchr(cmd, ' ');
	bool shell = sp && sp - cmd >= 2 && strncmp(sp - 2, "sh -c ", 6) == 0;
	if (n <= 0 || shell || (match && *match && strstr(cmd, match) == NULL))
		return;
	const char *dir = getenv("PEAK_PROBE_DIR");
	snprintf(out_path, sizeof out_path, "%s/peak.%d", dir && *dir ? dir : "/tmp", (int)getpid());
	const char *step = getenv("PEAK_PROBE_STEP_KIB");
	if (step && atol(step) > 0)
		step_kib = atol(step);
	const char *min = getenv("PEAK_PROBE_MIN_KIB");
	if (min && atol(min) > 0)
		min_kib = atol(min);
	const char *keep = getenv("PEAK_PROBE_KEEP");
	keep_all = keep && *keep == '1';
	pthread_t t;
	if (pthread_create(&t, NULL, probe, NULL) == 0)
		pthread_detach(t);
}
