/* options.h: the one table of runtime options.
 *
 * Set from EBB_OPTIONS at start-up ("name=value,name=value"; ignored in
 * setuid/setgid programs) and from ebb_option_set(). Values are read with options_get() by any thread at any
 * time (a relaxed load of one word); a change takes effect at the next point
 * the option is consulted. A wrong name or value prints a warning that names
 * it and changes nothing. */
#ifndef EBB_CORE_OPTIONS_H
#define EBB_CORE_OPTIONS_H

#include "core/base/config.h"

EBB_BEGIN_DECLS

enum option_kind {
	OPT_INT,    /* a number in [min, max] */
	OPT_BOOL,   /* 0/1, also true/false, on/off, yes/no */
	OPT_BYTES,  /* a size with an optional k/m/g suffix, in [min, max] */
	OPT_DIRTY,  /* a size (bytes) or a percentage of allocated bytes ("25%") */
	OPT_CHOICE, /* one of the words in `choices`, stored as its index */
	OPT_STRING, /* text of at most `max` bytes (no ',' from EBB_OPTIONS); the value
		     * is its length, the text is read with options_get_string() */
};

/* Longest value of an OPT_STRING option, with its terminating NUL. */
#define OPTIONS_STRING_MAX 256

/* X(ID, name, kind, default, min, max, choices, doc) */
#define EBB_OPTIONS_TABLE(X)                                                                      \
	X(DECAY_MS, decay_ms, OPT_INT, 500, -1, 3600000, NULL,                                     \
	  "ms a freed page stays resident before it is given back (0: at once, -1: never)")         \
	X(DIRTY_MAX, dirty_max, OPT_DIRTY, -26, -101, (1LL << 46), NULL,                         \
	  "most dirty bytes kept regardless of age: bytes (64M) or a share of allocated bytes "    \
	  "(25%, never below 128 MiB); the excess is purged at once")                               \
	X(UNMAP_DELAY_MS, unmap_delay_ms, OPT_INT, 5000, 0, 86400000, NULL,                       \
	  "ms a superblock stays entirely free before it is unmapped")                             \
	X(BACKGROUND_THREAD, background_thread, OPT_BOOL, 1, 0, 1, NULL,                          \
	  "decay on a timer thread; without it decay runs on allocation slow paths only")         \
	X(PURGE, purge, OPT_CHOICE, 0, 0, 1, "dontneed|free",                                     \
	  "how pages are given back: MADV_DONTNEED (RSS drops at once) or MADV_FREE (lazily)")    \
	X(TCACHE_MAX_BYTES, tcache_max_bytes, OPT_BYTES, 1 << 20, 0, 1LL << 30, NULL,             \
	  "bytes a thread cache may hold (0 disables thread caches)")                              \
	X(STATS_ON_EXIT, stats_on_exit, OPT_BOOL, 0, 0, 1, NULL,                                  \
	  "print ebb_stats_print() to stderr when the process exits")                              \
	X(ON_ERROR, on_error, OPT_CHOICE, 0, 0, 1, "abort|warn",                                  \
	  "after reporting a bad pointer or corruption: abort, or warn and leak the block")         \
	X(STATS_INTERVAL_MS, stats_interval_ms, OPT_INT, 0, 0, 3600000, NULL,                     \
	  "ms between rows of the CSV stats timeline written to stats_file (0: no timeline)")      \
	X(STATS_FILE, stats_file, OPT_STRING, 0, 0, OPTIONS_STRING_MAX - 1, NULL,                 \
	  "path of the CSV stats timeline; %p stands for the process id (empty: stderr)")          \
	X(PROF, prof, OPT_BOOL, 0, 0, 1, NULL,                                                    \
	  "sampled heap profiler (read from EBB_OPTIONS at start; docs/usage.md)")                  \
	X(PROF_SAMPLE, prof_sample, OPT_BYTES, 524288, 1, (1LL << 40), NULL,                      \
	  "mean bytes allocated between two samples of the heap profiler")                          \
	X(PROF_FILE, prof_file, OPT_STRING, 0, 0, OPTIONS_STRING_MAX - 1, NULL,                   \
	  "with prof: write the heap profile (pprof's heap_v2) here at exit; %p: the process id")   \
	X(PROF_LEAKS, prof_leaks, OPT_BOOL, 0, 0, 1, NULL,                                        \
	  "with prof: at exit, report the sampled blocks still live, by stack, on stderr")          \
	X(PROF_UNWIND, prof_unwind, OPT_CHOICE, 0, 0, 2, "auto|libunwind|libgcc",                 \
	  "with prof: the stack unwinder (auto: libunwind.so.8 if installed, else libgcc_s)")      \
	X(PROF_SEED, prof_seed, OPT_INT, 0, 0, (1LL << 62), NULL,                                 \
	  "with prof: 0 seeds each thread's sampling at random; N fixes the seeds (the same "      \
	  "sample points every run, for measuring)")

enum option_id {
#define EBB_OPTION_ENUM_(id, name, kind, def, min, max, choices, doc) OPT_##id,
	EBB_OPTIONS_TABLE(EBB_OPTION_ENUM_)
#undef EBB_OPTION_ENUM_
	OPT_COUNT
};

extern long long options_values[OPT_COUNT];

static inline long long options_get(enum option_id id)
{
	return __atomic_load_n(&options_values[id], __ATOMIC_RELAXED);
}

/* Reads EBB_OPTIONS; called once by init. Not in a process with AT_SECURE
 * (setuid, setgid, capabilities): there the environment is ignored. */
void options_init(void);
/* Parses and sets one option; false (after a warning) if name or value is
 * wrong. `quiet` suppresses the warning (the API reports through errno). */
bool options_set(const char *name, size_t name_len, const char *value, size_t value_len,
		 bool quiet);
bool options_lookup(const char *name, enum option_id *out);
/* Copies the text of OPT_STRING option `id` into buf (NUL-terminated, at most
 * cap - 1 bytes) and returns its full length. Any thread. */
size_t options_get_string(enum option_id id, char *buf, size_t cap);
/* The resolved dirty byte budget for `allocated` live bytes. */
size_t options_dirty_max_bytes(uint64_t allocated);
EBB_END_DECLS

#endif /* EBB_CORE_OPTIONS_H */
