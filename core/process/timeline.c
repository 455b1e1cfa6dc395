/* timeline.c: the CSV stats timeline (see timeline.h). */
#include "core/process/timeline.h"

#include <errno.h>
#include <string.h>

#include "core/runtime/atomic.h"
#include "core/runtime/options.h"
#include "core/runtime/report.h"
#include "core/process/stats.h"
#include "os/os.h"

/* The writer's lock: held by whoever writes a row. Nobody waits for it:
 * row writers take it with lock_try (a second candidate skips), the exit row
 * waits a bounded time, and fork does not take it (the child rebuilds every
 * field below from scratch). So a writer that blocks in the kernel, or a
 * signal handler that interrupted one, holds up no other thread and no fork.
 * Held around stats collection, so it ranks below the tcache-list, central
 * and page-heap locks; options_get_string's lock nests inside it. */
static ebb_lock_t tl_lock = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_TIMELINE);
static uint64_t tl_next_ns; /* when the next row is due; 0: at once */
static uint32_t tl_enabled; /* start-up is over (timeline_enable): stats can be read */
static uint32_t tl_done;    /* the exit row is written: nothing after it */

/* Under tl_lock only. */
#define TL_NONE (-1)
#define TL_STDERR (-2)
static int tl_fd = TL_NONE;                  /* TL_NONE: not open (yet, or failed);
					      * atomic: a forked child reads it */
static bool tl_opened;                       /* tl_path was tried (opened or failed) */
static bool tl_forked;                       /* a forked child: write only with "%p" */
static bool tl_write_failed;                 /* warned once about a failed write */
static char tl_path[OPTIONS_STRING_MAX];     /* stats_file as it was when tried */
static uint64_t tl_start_ns;                 /* t_ms = 0 */

/* The columns, in order. cached = tcache + central (free blocks the
 * allocator keeps for reuse); the rest are the fields of struct ebb_stats
 * of the same name. */
static const char tl_header[] =
	"t_ms,rss,resident,mapped,allocated,cached,dirty,purged,metadata,waste,"
	"tcache,central,threads,superblocks,bytes_purged,madvise_calls\n";

bool timeline_enabled(void)
{
	return options_get(OPT_STATS_INTERVAL_MS) > 0;
}

/* path with "%p" replaced by the process id and "%%" by "%"; false if the
 * result does not fit. */
static bool tl_expand(const char *path, char *out, size_t cap)
{
	size_t n = 0;
	for (const char *s = path; *s; s++) {
		char num[16];
		const char *piece = s;
		size_t len = 1;
		if (s[0] == '%' && s[1] == 'p') {
			len = report_format(num, sizeof num, "%u", os_pid());
			piece = num;
			s++;
		} else if (s[0] == '%' && s[1] == '%') {
			s++;
		}
		if (n + len >= cap)
			return false;
		memcpy(out + n, piece, len);
		n += len;
	}
	out[n] = '\0';
	return true;
}

/* The descriptor is forgotten before it is closed: a child forked in
 * between then leaks its copy (close-on-exec) rather than closing a number
 * the program may have reused. */
static void tl_close(void)
{
	int fd = __atomic_exchange_n(&tl_fd, TL_NONE, __ATOMIC_RELAXED);
	if (fd >= 0)
		os_file_close(fd);
}

static void tl_write(const char *buf, size_t len)
{
	if (tl_fd == TL_STDERR) {
		/* stderr may be a pipe nobody reads or a stopped terminal: a
		 * row that cannot go out at once is dropped, never waited for
		 * (the writer may be a malloc caller). */
		if (os_file_ready(2))
			os_write_err(buf, len);
	} else if (tl_fd >= 0 && !os_file_write(tl_fd, buf, len) && !tl_write_failed) {
		tl_write_failed = true;
		report_warn("stats_file %s: write failed (errno %d); rows are being lost", tl_path,
			    errno);
	}
}

/* Opens the file named by stats_file when it is not the one open. Caller
 * holds tl_lock. false: no file to write to. */
static bool tl_ensure_open(uint64_t now)
{
	char want[OPTIONS_STRING_MAX];
	options_get_string(OPT_STATS_FILE, want, sizeof want);
	if (tl_opened && strcmp(want, tl_path) == 0)
		return tl_fd != TL_NONE;
	tl_close();
	memcpy(tl_path, want, sizeof tl_path);
	tl_opened = true;
	tl_write_failed = false;
	if (want[0] == '\0') {
		if (tl_forked)
			return false; /* the parent's stderr rows are the parent's */
		__atomic_store_n(&tl_fd, TL_STDERR, __ATOMIC_RELAXED);
	} else {
		char path[OPTIONS_STRING_MAX + 16];
		if (tl_forked && strstr(want, "%p") == NULL)
			return false; /* the file is the parent's */
		if (!tl_expand(want, path, sizeof path)) {
			report_warn("stats_file %s: name too long; no stats timeline", want);
			return false;
		}
		int fd = os_file_create(path);
		if (fd < 0) {
			int err = errno;
			const char *why = err == EEXIST ? "exists and is not an empty file of this user "
							  "(never overwritten)"
					  : err == ELOOP  ? "is a symbolic link (never followed)"
					  : err == EINVAL ? "is not a regular file"
							  : "cannot be created";
			report_warn("stats_file %s: %s (errno %d); no stats timeline", path, why, err);
			return false;
		}
		__atomic_store_n(&tl_fd, fd, __ATOMIC_RELAXED);
	}
	tl_start_ns = now;
	tl_write(tl_header, sizeof tl_header - 1);
	return true;
}

/* Caller holds tl_lock. Returns the row's time. */
static uint64_t tl_write_row(void)
{
	uint64_t now = os_now_ns(); /* read under the lock: rows are in time order */
	if (!tl_ensure_open(now))
		return now;
	struct ebb_stats s;
	stats_collect_all(&s);
	uint64_t rss = os_rss_bytes();
	char row[512];
	size_t n = report_format(row, sizeof row,
				 "%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu\n",
				 (unsigned long long)(util_elapsed(now, tl_start_ns) / 1000000u),
				 (unsigned long long)rss, (unsigned long long)s.resident,
				 (unsigned long long)s.mapped, (unsigned long long)s.allocated,
				 (unsigned long long)(s.tcache + s.central), (unsigned long long)s.dirty,
				 (unsigned long long)s.purged, (unsigned long long)s.metadata,
				 (unsigned long long)s.waste, (unsigned long long)s.tcache,
				 (unsigned long long)s.central, (unsigned long long)s.threads,
				 (unsigned long long)s.superblocks, (unsigned long long)s.bytes_purged,
				 (unsigned long long)s.madvise_calls);
	tl_write(row, n < sizeof row ? n : sizeof row - 1);
	return now;
}

void timeline_poll(uint64_t now)
{
	long long ms = options_get(OPT_STATS_INTERVAL_MS);
	if (ms <= 0 || atomic_load_u32(&tl_done))
		return;
	uint64_t next = atomic_load_u64(&tl_next_ns);
	if (next != 0 && now < next)
		return;
	if (!lock_try(&tl_lock))
		return; /* another thread is writing this row */
	next = atomic_load_u64(&tl_next_ns);
	if (atomic_load_u32(&tl_done) || (next != 0 && now < next)) {
		lock_release(&tl_lock);
		return;
	}
	/* Rows are at least an interval apart: the next is due an interval
	 * after this one was taken. A late row (no slow path for a while
	 * without the background thread) delays the ones after it rather
	 * than bunching them up to catch up. */
	uint64_t taken = tl_write_row();
	atomic_store_u64(&tl_next_ns, taken + (uint64_t)ms * 1000000u);
	lock_release(&tl_lock);
}

uint64_t timeline_wait_ns(uint64_t now)
{
	if (!timeline_enabled() || atomic_load_u32(&tl_done))
		return UINT64_MAX;
	uint64_t next = atomic_load_u64(&tl_next_ns);
	return next > now ? next - now : 0;
}

/* How long the exit row waits for a writer that holds tl_lock. */
#define TL_FINISH_WAIT_NS 1000000000ull

void timeline_enable(void)
{
	atomic_store_u32_release(&tl_enabled, 1);
}

void timeline_finish(void)
{
	if (!atomic_load_u32_acquire(&tl_enabled) || atomic_load_u32(&tl_done))
		return;
	/* Bounded: the holder may be blocked in the kernel, or be the frame a
	 * signal handler that called exit() interrupted. Then no last row.
	 * The clock is read only once the lock is found taken: a process
	 * that never read it pays three page faults for the first read
	 * (libc's code, the vDSO's data pages), at every exit. */
	uint64_t start = 0;
	while (!lock_try(&tl_lock)) {
		if (start == 0)
			start = os_now_ns();
		else if (util_elapsed(os_now_ns(), start) >= TL_FINISH_WAIT_NS) {
			atomic_store_u32(&tl_done, 1);
			return;
		}
		os_yield();
	}
	if (!atomic_load_u32(&tl_done)) {
		atomic_store_u32(&tl_done, 1);
		if (timeline_enabled())
			tl_write_row();
		tl_close();
	}
	lock_release(&tl_lock);
}

/* At exit (after main returns or exit()), so the file ends with the state
 * the program left behind. Not after _exit() or a crash. */
__attribute__((destructor)) static void timeline_destructor(void)
{
	timeline_finish();
}

/* Fork does not wait for a row being written (see tl_lock). */
void timeline_prefork(void)
{
}

void timeline_postfork_parent(void)
{
}

void timeline_postfork_child(void)
{
	/* The child's copy of the descriptor points into the parent's file: let
	 * go of it; the next row reopens, for the child's pid, if the name has
	 * "%p" (tl_ensure_open refuses otherwise). A row the parent was
	 * writing at the fork is simply not the child's: every field is reset
	 * here, and tl_path is rewritten before it is read again. */
	tl_close();
	tl_forked = true;
	tl_opened = false;
	atomic_store_u64(&tl_next_ns, 0);
	lock_init(&tl_lock);
}
