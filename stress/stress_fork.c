/*
 * stress_fork: fork while other threads allocate.
 *
 * --threads workers allocate, realloc, check and free continuously and hand
 * blocks to each other and to main through shared slots. Main forks --forks
 * times; before each fork it takes a few blocks out of the slots (made by
 * workers). Each child:
 *   - checks those inherited blocks and frees them (blocks made by threads
 *     that do not exist in the child),
 *   - allocates small, large, huge, aligned and calloc blocks, reallocs and
 *     frees them with contents checked,
 *   - starts --child-threads threads that do the same (0 under TSan, which
 *     does not allow threads after a multithreaded fork),
 *   - calls ebb_trim() and exits 0 with _exit.
 * The parent waits for each child with a timeout: a child that does not exit
 * in --timeout seconds is hung (an allocator lock inherited held); its tasks'
 * states are printed, it is killed and counted as a failure, as is a child
 * that exits non-zero or dies of a signal. The run fails if any child failed.
 */
#include "stress_util.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static uint64_t opt_forks = 200;
static uint64_t opt_threads = 8;
static uint64_t opt_child_threads = ST_TSAN ? 0 : 2;
static uint64_t opt_child_ops = 100;
static double opt_timeout = 30;
static size_t opt_max_size = 8 * ST_MIB;
static uint64_t opt_local = 32;
static uint64_t opt_slots = 64;
static uint64_t opt_take = 6;
static uint64_t opt_worker_nice = 10;

static st_xchg X;
static atomic_int stop_flag;
static atomic_uint_fast64_t worker_ops, worker_trims;

static enum st_kind pick_kind(st_rng *r)
{
	unsigned v = (unsigned)st_below(r, 100);
	return v < 50 ? ST_K_MALLOC : v < 65 ? ST_K_CALLOC : v < 80 ? ST_K_MEMALIGN : v < 90 ? ST_K_POSIX_MEMALIGN
	                                                                                      : ST_K_ALIGNED_ALLOC;
}

static void alloc_random(st_block *b, st_rng *r, uint64_t serial, size_t max_size)
{
	enum st_kind k = pick_kind(r);
	size_t size = st_pick_size(r, max_size), align = 0;
	if (k == ST_K_MEMALIGN || k == ST_K_POSIX_MEMALIGN || k == ST_K_ALIGNED_ALLOC) {
		align = st_pick_align(r, ST_MIB);
		if (align > 64 * ST_KIB && size > 256 * ST_KIB)
			size = st_logrange(r, 1, 256 * ST_KIB);
	}
	st_block_alloc(b, r, k, size, align, serial, false);
}

static void *worker(void *arg)
{
	int tid = (int)(intptr_t)arg;
	st_tid = tid;
	st_rng r;
	st_rng_init(&r, st_seed, (uint64_t)tid + 1);
	/* Workers run at a lower priority, so that main and its children (which
	 * inherit main's) are not starved by 8 busy threads on 2 cores; the
	 * workers still take every cycle left over. */
	if (opt_worker_nice)
		(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), (int)opt_worker_nice);
	uint32_t local[256];
	for (uint64_t i = 0; i < opt_local; i++)
		local[i] = (uint32_t)(opt_slots + (uint64_t)tid * opt_local + i);
	uint64_t ops = 0;
	while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
		st_op = ++ops;
		st_tick();
		size_t i = (size_t)st_below(&r, opt_local);
		st_block *b = &X.desc[local[i]];
		unsigned v = (unsigned)st_below(&r, 1000);
		if (!b->p) {
			alloc_random(b, &r, ((uint64_t)(tid + 1) << 40) | ops, opt_max_size);
		} else if (v < 400) {
			st_block_free(b, &r, "free by a worker");
		} else if (v < 550) {
			st_block_check(b, "before realloc");
			st_block_realloc(b, st_pick_size(&r, opt_max_size), st_chance(&r, 200), "realloc by a worker");
		} else if (v < 998) {
			local[i] = st_xchg_swap(&X, (size_t)st_below(&r, opt_slots), local[i]);
			st_block *nb = &X.desc[local[i]];
			if (nb->p)
				st_block_check(nb, "block received by a worker");
		} else {
			(void)ebb_trim();
			atomic_fetch_add_explicit(&worker_trims, 1, memory_order_relaxed);
		}
	}
	for (uint64_t i = 0; i < opt_local; i++)
		if (X.desc[local[i]].p)
			st_block_free(&X.desc[local[i]], &r, "final free by a worker");
	atomic_fetch_add_explicit(&worker_ops, ops, memory_order_relaxed);
	return NULL;
}

/* ---- the child ---- */

static uint64_t child_iter;

static void child_work(st_rng *r, uint64_t ops, int who)
{
	st_block held[16];
	memset(held, 0, sizeof held);
	for (uint64_t j = 0; j < ops; j++) {
		st_op = j;
		st_block *b = &held[st_below(r, 16)];
		if (!b->p) {
			/* a huge block now and then, whatever the size table says */
			if (st_chance(r, 5)) {
				size_t size = st_range(r, 4 * ST_MIB, opt_max_size > 4 * ST_MIB ? opt_max_size : 4 * ST_MIB);
				st_block_alloc(b, r, ST_K_MALLOC, size, 0, ((uint64_t)(who + 1) << 40) | j, false);
			} else {
				alloc_random(b, r, ((uint64_t)(who + 1) << 40) | j, opt_max_size);
			}
		} else if (st_chance(r, 150)) {
			st_block_check(b, "before realloc in a child");
			st_block_realloc(b, st_pick_size(r, opt_max_size), false, "realloc in a forked child");
		} else {
			st_block_free(b, r, "free in a forked child");
		}
	}
	for (int i = 0; i < 16; i++)
		if (held[i].p)
			st_block_free(&held[i], r, "final free in a forked child");
}

static void *child_thread(void *arg)
{
	int who = (int)(intptr_t)arg;
	st_tid = who;
	st_rng r;
	st_rng_init(&r, st_seed, 0xc41d000000ull + child_iter * 64 + (uint64_t)who);
	child_work(&r, opt_child_ops / 2, who);
	return NULL;
}

static ST_NORETURN void child_main(st_block *inherited, size_t n)
{
	st_tid = 900; /* marks messages from a child */
	st_rng r;
	st_rng_init(&r, st_seed, 0xc41d000000ull + child_iter * 64);
	/* blocks made by worker threads that do not exist here */
	for (size_t i = 0; i < n; i++)
		if (inherited[i].p)
			st_block_free(&inherited[i], &r, "free in a child of a block made by a parent thread");
	child_work(&r, opt_child_ops, 900);
	pthread_t th[16];
	uint64_t nt = opt_child_threads < 16 ? opt_child_threads : 16;
	for (uint64_t t = 0; t < nt; t++) {
		int rc = pthread_create(&th[t], NULL, child_thread, (void *)(intptr_t)(901 + t));
		if (rc != 0)
			ST_FAIL("pthread_create in a forked child failed: %s", strerror(rc));
	}
	for (uint64_t t = 0; t < nt; t++)
		pthread_join(th[t], NULL);
	(void)ebb_trim();
	void *p = ebb_malloc(100);
	ST_CHECK(p != NULL, "malloc after trim in a child returned NULL");
	ebb_free(p);
	_exit(0);
}

/* ---- the parent ---- */

/* Waits for pid up to opt_timeout seconds. Returns true if the child exited
 * 0; reports and returns false otherwise (killing it if it hung). */
static bool wait_child(pid_t pid, uint64_t iter)
{
	double t0 = st_now();
	double nap = 0.2;
	int status;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			ST_FAIL("waitpid(%d) failed: %s", (int)pid, strerror(errno));
		if (st_now() - t0 > opt_timeout) {
			fprintf(stderr, "%s: FAIL: child %" PRIu64 " (pid %d) has not exited after %.0f s: hung; its tasks:\n",
			        st_prog, iter, (int)pid, opt_timeout);
			st_dump_tasks(pid);
			st_gdb_backtrace(pid);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
			}
			return false;
		}
		st_sleep_ms(nap);
		if (nap < 5)
			nap *= 2;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return true;
	if (WIFEXITED(status))
		fprintf(stderr, "%s: FAIL: child %" PRIu64 " (pid %d) exited with status %d\n", st_prog, iter, (int)pid,
		        WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		fprintf(stderr, "%s: FAIL: child %" PRIu64 " (pid %d) was killed by signal %d (%s)%s\n", st_prog, iter,
		        (int)pid, WTERMSIG(status), strsignal(WTERMSIG(status)),
		        WTERMSIG(status) == SIGABRT ? ", see its message above" : "");
	else
		fprintf(stderr, "%s: FAIL: child %" PRIu64 " (pid %d): status %#x\n", st_prog, iter, (int)pid, status);
	return false;
}

int main(int argc, char **argv)
{
	static const st_opt opts[] = {
		{"forks", ST_OPT_COUNT, &opt_forks, "number of forks"},
		{"threads", ST_OPT_COUNT, &opt_threads, "worker threads allocating during the forks"},
		{"child-threads", ST_OPT_COUNT, &opt_child_threads, "threads each child starts (at most 16)"},
		{"child-ops", ST_OPT_COUNT, &opt_child_ops, "allocations in each child"},
		{"timeout", ST_OPT_DOUBLE, &opt_timeout, "seconds a child may take before it counts as hung"},
		{"max-size", ST_OPT_SIZE, &opt_max_size, "largest request"},
		{"take", ST_OPT_COUNT, &opt_take, "blocks main takes from the workers before each fork"},
		{"worker-nice", ST_OPT_COUNT, &opt_worker_nice, "nice value of the worker threads (0: same as main)"},
	};
	st_parse_args(argc, argv, "stress_fork", "Fork repeatedly while other threads allocate.", opts,
	              sizeof opts / sizeof opts[0]);
	if (opt_threads < 1 || opt_threads > 64 || opt_take > 64 || opt_max_size < 16) {
		fprintf(stderr, "stress_fork: bad arguments (try --help)\n");
		return 2;
	}
	st_print_config(argc, argv);
	st_xchg_init(&X, opt_slots, opt_threads * opt_local + opt_take);
	uint32_t mine[64];
	for (uint64_t i = 0; i < opt_take; i++)
		mine[i] = (uint32_t)(opt_slots + opt_threads * opt_local + i);

	st_watchdog_start();
	pthread_t th[64];
	for (uint64_t t = 0; t < opt_threads; t++)
		st_thread_create(&th[t], worker, (void *)(intptr_t)t);
	st_sleep_ms(100); /* let the workers fill the slots */

	st_rng r;
	st_rng_init(&r, st_seed, 0);
	double t0 = st_now();
	uint64_t failures = 0, inherited_total = 0;
	double fork_time = 0;
	for (uint64_t i = 0; i < opt_forks; i++) {
		child_iter = i;
		/* take a few workers' blocks: the child frees its copies */
		st_block held[64];
		size_t nheld = 0;
		for (uint64_t k = 0; k < opt_take; k++) {
			mine[k] = st_xchg_swap(&X, (size_t)st_below(&r, opt_slots), mine[k]);
			st_block *b = &X.desc[mine[k]];
			if (b->p) {
				st_block_check(b, "block taken by main before fork");
				held[nheld++] = *b;
				memset(b, 0, sizeof *b);
			}
		}
		inherited_total += nheld;
		fflush(stdout);
		fflush(stderr);
		double tf = st_now();
		pid_t pid = fork();
		if (pid < 0)
			ST_FAIL("fork %" PRIu64 " failed: %s", i, strerror(errno));
		if (pid == 0)
			child_main(held, nheld);
		fork_time += st_now() - tf;
		/* the parent frees its own copies */
		for (size_t k = 0; k < nheld; k++)
			st_block_free(&held[k], &r, "free by main of a block taken before fork");
		if (!wait_child(pid, i))
			failures++;
		st_tick();
		if ((i + 1) % 50 == 0)
			printf("%s: %" PRIu64 " forks, %.1f s, %" PRIu64 " failed\n", st_prog, i + 1, st_now() - t0, failures);
		st_sleep_ms((double)st_below(&r, 3000) / 1000.0);
	}
	double elapsed = st_now() - t0;
	atomic_store_explicit(&stop_flag, 1, memory_order_relaxed);
	for (uint64_t t = 0; t < opt_threads; t++)
		st_thread_join(th[t]);
	for (uint64_t s = 0; s < opt_slots; s++) {
		st_block *b = &X.desc[atomic_load(&X.slot[s])];
		if (b->p)
			st_block_free(b, &r, "drain of the slots");
	}
	st_watchdog_end();
	st_xchg_destroy(&X);

	st_log("%" PRIu64 " forks in %.1f s (%.1f ms each, of which fork() %.1f ms) with %" PRIu64 " threads allocating (%" PRIu64
	       " operations, %" PRIu64 " trims); children freed %" PRIu64 " inherited blocks, used %" PRIu64
	       " threads each; %" PRIu64 " children failed",
	       opt_forks, elapsed, elapsed * 1000.0 / (double)(opt_forks ? opt_forks : 1),
	       fork_time * 1000.0 / (double)(opt_forks ? opt_forks : 1), opt_threads,
	       (uint64_t)atomic_load(&worker_ops), (uint64_t)atomic_load(&worker_trims), inherited_total,
	       opt_child_threads, failures);
	if (failures) {
		fprintf(stderr, "%s: FAIL: %" PRIu64 " of %" PRIu64 " children failed (seed %" PRIu64 ")\n", st_prog,
		        failures, opt_forks, st_seed);
		return 1;
	}
	st_log("PASS");
	return 0;
}
