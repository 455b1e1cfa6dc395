/* options.c: parsing and storing the options of the table in options.h. */
#include "core/runtime/options.h"

#include <string.h>

#include "core/runtime/atomic.h"
#include "core/runtime/report.h"
#include "os/os.h"

typedef struct option_desc {
	const char *name;
	enum option_kind kind;
	long long def, min, max;
	const char *choices; /* '|'-separated words for OPT_CHOICE */
	const char *doc;
} option_desc_t;

static const option_desc_t option_descs[OPT_COUNT] = {
#define EBB_OPTION_DESC_(id, name, kind, def, min, max, choices, doc) \
	{#name, kind, def, min, max, choices, doc},
	EBB_OPTIONS_TABLE(EBB_OPTION_DESC_)
#undef EBB_OPTION_DESC_
};

long long options_values[OPT_COUNT] = {
#define EBB_OPTION_DEFAULT_(id, name, kind, def, min, max, choices, doc) def,
	EBB_OPTIONS_TABLE(EBB_OPTION_DEFAULT_)
#undef EBB_OPTION_DEFAULT_
};

/* Texts of the OPT_STRING options; options_values holds their lengths. The
 * lock makes a reader's copy whole when another thread sets the option. */
static char options_strings[OPT_COUNT][OPTIONS_STRING_MAX] EBB_BIG_ZERO;
static ebb_lock_t options_strings_lock = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_OPTIONS);

size_t options_get_string(enum option_id id, char *buf, size_t cap)
{
	lock_acquire(&options_strings_lock);
	size_t len = strlen(options_strings[id]);
	if (cap > 0) {
		size_t n = len < cap - 1 ? len : cap - 1;
		memcpy(buf, options_strings[id], n);
		buf[n] = '\0';
	}
	lock_release(&options_strings_lock);
	return len;
}

/* Floor under a percentage dirty budget, so that programs that free and
 * reuse big blocks in phases do not purge (and re-fault) at every phase;
 * decay still gives these pages back within decay_ms. Measured: on
 * bench/large a 16 MiB floor cost 1.9x the page faults and half the
 * throughput of 64 MiB, for 11% lower peak RSS; on bench/aligned (blocks that
 * aligned_alloc rounds up to their alignment, mostly never touched, but
 * counted dirty once freed) 64 MiB purged 700 MB in 0.1 s and ran at half
 * the speed of 128 MiB, for 35 vs 70 MiB peak RSS (tcmalloc: 83 MiB). */
#define DIRTY_MAX_FLOOR ((size_t)128 << 20)

bool options_lookup(const char *name, enum option_id *out)
{
	size_t len = strlen(name);
	for (unsigned i = 0; i < OPT_COUNT; i++) {
		if (strlen(option_descs[i].name) == len && memcmp(option_descs[i].name, name, len) == 0) {
			*out = (enum option_id)i;
			return true;
		}
	}
	return false;
}

static bool word_eq(const char *a, size_t alen, const char *b)
{
	return strlen(b) == alen && memcmp(a, b, alen) == 0;
}

/* Parses an unsigned decimal number with an optional sign; false on junk or
 * overflow. *end receives the index after the digits. */
static bool parse_number(const char *v, size_t len, long long *out, size_t *end)
{
	size_t i = 0;
	bool neg = false;
	if (i < len && (v[i] == '-' || v[i] == '+'))
		neg = v[i++] == '-';
	if (i == len || v[i] < '0' || v[i] > '9')
		return false;
	unsigned long long x = 0;
	for (; i < len && v[i] >= '0' && v[i] <= '9'; i++) {
		if (x > (1ull << 62) / 10)
			return false;
		x = x * 10 + (unsigned)(v[i] - '0');
	}
	*out = neg ? -(long long)x : (long long)x;
	*end = i;
	return true;
}

static bool parse_bytes(const char *v, size_t len, long long *out)
{
	size_t end;
	long long x;
	if (!parse_number(v, len, &x, &end) || x < 0)
		return false;
	unsigned shift = 0;
	if (end < len) {
		switch (v[end] | 0x20) {
		case 'k': shift = 10; break;
		case 'm': shift = 20; break;
		case 'g': shift = 30; break;
		case 't': shift = 40; break;
		default: return false;
		}
		end++;
		if (end < len && (v[end] | 0x20) == 'i')
			end++;
		if (end < len && (v[end] | 0x20) == 'b')
			end++;
	}
	if (end != len || (shift && x > (1ll << (62 - shift))))
		return false;
	*out = x << shift;
	return true;
}

static bool parse_value(const option_desc_t *d, const char *v, size_t len, long long *out)
{
	size_t end;
	switch (d->kind) {
	case OPT_INT:
		return parse_number(v, len, out, &end) && end == len;
	case OPT_BOOL:
		if (word_eq(v, len, "1") || word_eq(v, len, "true") || word_eq(v, len, "on") ||
		    word_eq(v, len, "yes")) {
			*out = 1;
			return true;
		}
		if (word_eq(v, len, "0") || word_eq(v, len, "false") || word_eq(v, len, "off") ||
		    word_eq(v, len, "no")) {
			*out = 0;
			return true;
		}
		return false;
	case OPT_BYTES:
		return parse_bytes(v, len, out);
	case OPT_DIRTY:
		/* A share p% is stored as -(p + 1), bytes as themselves: every
		 * value says which it is, 0% (-1) included, which is a share (the
		 * 128 MiB floor) and not 0 bytes (purge at once). */
		if (len > 1 && v[len - 1] == '%') {
			if (!parse_number(v, len - 1, out, &end) || end != len - 1 || *out < 0 || *out > 100)
				return false;
			*out = -*out - 1;
			return true;
		}
		return parse_bytes(v, len, out);
	case OPT_CHOICE: {
		long long idx = 0;
		const char *w = d->choices;
		while (*w) {
			const char *bar = strchr(w, '|');
			size_t wl = bar ? (size_t)(bar - w) : strlen(w);
			if (wl == len && memcmp(w, v, len) == 0) {
				*out = idx;
				return true;
			}
			idx++;
			w += wl + (bar ? 1 : 0);
		}
		return false;
	}
	case OPT_STRING:
		/* A NUL inside would silently cut the text short. */
		if (memchr(v, '\0', len) != NULL)
			return false;
		*out = (long long)len;
		return true;
	}
	return false;
}

/* ---------------------------------------------------------------------------
 * Hidden options: fault injection (os_fault_set), for tests and stress runs.
 * Not in the table (not listed, not readable with ebb_option_get); they cost
 * the kernel paths one predictable branch when unset.
 *   fault_map | fault_purge | fault_unmap = off | always | <n> | <ppm>ppm
 * <n>: the n-th next call of that kind fails; <ppm>ppm: each call fails with
 * probability ppm / 1e6; always = 1000000ppm.
 * ------------------------------------------------------------------------- */
static bool fault_option_set(const char *name, size_t name_len, const char *v, size_t len)
{
	static const char *const kinds[OS_FAULT_KINDS] = {"fault_map", "fault_purge", "fault_unmap"};
	unsigned kind = 0;
	while (kind < OS_FAULT_KINDS && !word_eq(name, name_len, kinds[kind]))
		kind++;
	if (kind == OS_FAULT_KINDS)
		return false;
	long long x = 0;
	size_t end = 0;
	uint64_t nth = 0;
	uint32_t ppm = 0;
	if (word_eq(v, len, "always")) {
		ppm = 1000000;
	} else if (!word_eq(v, len, "off")) {
		if (!parse_number(v, len, &x, &end) || x < 0)
			return false;
		if (end == len)
			nth = (uint64_t)x;
		else if (len - end == 3 && memcmp(v + end, "ppm", 3) == 0 && x <= 1000000)
			ppm = (uint32_t)x;
		else
			return false;
	}
	os_fault_set((enum os_fault_kind)kind, nth, ppm);
	return true;
}

bool options_set(const char *name, size_t name_len, const char *value, size_t value_len, bool quiet)
{
	if (name_len > 6 && memcmp(name, "fault_", 6) == 0 &&
	    fault_option_set(name, name_len, value, value_len))
		return true;

	for (unsigned i = 0; i < OPT_COUNT; i++) {
		const option_desc_t *d = &option_descs[i];
		if (!word_eq(name, name_len, d->name))
			continue;
		long long v;
		if (!parse_value(d, value, value_len, &v) || v < d->min || v > d->max) {
			if (!quiet)
				report_warn("option %s: bad value '%.*s' ignored (%s)", d->name,
					    (int)value_len, value, d->doc);
			return false;
		}
		if (d->kind == OPT_STRING) {
			lock_acquire(&options_strings_lock);
			memcpy(options_strings[i], value, value_len);
			options_strings[i][value_len] = '\0';
			lock_release(&options_strings_lock);
		}
		__atomic_store_n(&options_values[i], v, __ATOMIC_RELAXED);
		if (i == OPT_ON_ERROR)
			report_set_warn_only(v != 0);
		return true;
	}
	if (!quiet)
		report_warn("unknown option '%.*s' ignored", (int)name_len, name);
	return false;
}

void options_init(void)
{
	/* A setuid or setgid program (or one with file capabilities) runs with
	 * rights its invoker lacks, under an environment the invoker wrote: the
	 * options must not let that user turn aborts into warnings or aim the
	 * timeline at a file only the program may write (glibc ignores its
	 * tunables there, jemalloc its MALLOC_CONF). Silently: stderr may be
	 * the invoker's too. The program itself can still call ebb_option_set. */
	if (os_secure())
		return;
	const char *env = os_getenv("EBB_OPTIONS");
	if (env == NULL)
		return;
	const char *s = env;
	while (*s) {
		const char *item = s;
		while (*s && *s != ',')
			s++;
		size_t item_len = (size_t)(s - item);
		if (*s == ',')
			s++;
		if (item_len == 0)
			continue;
		const char *eq = memchr(item, '=', item_len);
		if (eq == NULL) {
			report_warn("option '%.*s' has no '=value'; ignored", (int)item_len, item);
			continue;
		}
		options_set(item, (size_t)(eq - item), eq + 1, item_len - (size_t)(eq - item) - 1, false);
	}
}

size_t options_dirty_max_bytes(uint64_t allocated)
{
	long long v = options_get(OPT_DIRTY_MAX);
	if (v >= 0)
		return (size_t)v;
	size_t share = (size_t)(allocated / 100 * (uint64_t)(-v - 1));
	return share > DIRTY_MAX_FLOOR ? share : DIRTY_MAX_FLOOR;
}
