/* report.c: allocation-free formatting and error reports. */
#include "core/runtime/report.h"

#include "core/runtime/atomic.h"
#include "os/os.h"

static uint64_t report_warned;

static size_t put_char(char *buf, size_t cap, size_t n, char c)
{
	if (n + 1 < cap)
		buf[n] = c;
	return n + 1;
}

static size_t put_str(char *buf, size_t cap, size_t n, const char *s, size_t max)
{
	if (s == NULL)
		s = "(null)";
	for (size_t i = 0; i < max && s[i]; i++)
		n = put_char(buf, cap, n, s[i]);
	return n;
}

static size_t put_unsigned(char *buf, size_t cap, size_t n, unsigned long long v, unsigned base)
{
	char tmp[24];
	size_t len = 0;
	do {
		unsigned d = (unsigned)(v % base);
		tmp[len++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v);
	while (len)
		n = put_char(buf, cap, n, tmp[--len]);
	return n;
}

size_t report_vformat(char *buf, size_t cap, const char *fmt, va_list ap)
{
	size_t n = 0;
	for (const char *f = fmt; *f; f++) {
		if (*f != '%') {
			n = put_char(buf, cap, n, *f);
			continue;
		}
		f++;
		if (*f == '%') {
			n = put_char(buf, cap, n, '%');
		} else if (*f == 's') {
			n = put_str(buf, cap, n, va_arg(ap, const char *), (size_t)-1);
		} else if (f[0] == '.' && f[1] == '*' && f[2] == 's') {
			int len = va_arg(ap, int);
			n = put_str(buf, cap, n, va_arg(ap, const char *), len < 0 ? 0 : (size_t)len);
			f += 2;
		} else if (*f == 'c') {
			n = put_char(buf, cap, n, (char)va_arg(ap, int));
		} else if (*f == 'd') {
			int v = va_arg(ap, int);
			if (v < 0)
				n = put_char(buf, cap, n, '-');
			n = put_unsigned(buf, cap, n, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v, 10);
		} else if (*f == 'u') {
			n = put_unsigned(buf, cap, n, va_arg(ap, unsigned), 10);
		} else if (*f == 'x') {
			n = put_unsigned(buf, cap, n, va_arg(ap, unsigned), 16);
		} else if (f[0] == 'z' && f[1] == 'u') {
			n = put_unsigned(buf, cap, n, va_arg(ap, size_t), 10);
			f++;
		} else if (f[0] == 'l' && f[1] == 'l' && f[2] == 'u') {
			n = put_unsigned(buf, cap, n, va_arg(ap, unsigned long long), 10);
			f += 2;
		} else if (f[0] == 'l' && f[1] == 'l' && f[2] == 'd') {
			long long v = va_arg(ap, long long);
			if (v < 0)
				n = put_char(buf, cap, n, '-');
			n = put_unsigned(buf, cap, n, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v, 10);
			f += 2;
		} else if (*f == 'p') {
			n = put_str(buf, cap, n, "0x", 2);
			n = put_unsigned(buf, cap, n, (uintptr_t)va_arg(ap, void *), 16);
		} else {
			n = put_char(buf, cap, n, '?');
			if (*f == '\0')
				break;
		}
	}
	if (cap)
		buf[n < cap ? n : cap - 1] = '\0';
	return n;
}

size_t report_format(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t n = report_vformat(buf, cap, fmt, ap);
	va_end(ap);
	return n;
}

/* Writes a formatted report of n bytes (its text ends in '\n') from a buffer
 * of cap bytes. A report cut short by the buffer still ends its line, so
 * that the next report or the program's own output starts a line of its own. */
static void report_write(char *buf, size_t n, size_t cap)
{
	if (n >= cap) {
		n = cap - 1;
		buf[n - 1] = '\n';
	}
	os_write_err(buf, n);
}

void report_warn(const char *fmt, ...)
{
	char buf[512];
	size_t n = report_format(buf, sizeof buf, "ebbmalloc: warning: ");
	va_list ap;
	va_start(ap, fmt);
	n += report_vformat(buf + n, sizeof buf - n - 1, fmt, ap);
	va_end(ap);
	if (n > sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	os_write_err(buf, n);
}

/* on_error: 0 abort (the default), 1 warn and go on. The options table sets
 * it (report_set_warn_only); this file reads no option itself, so that the
 * options can report their own errors through it. */
static uint32_t report_warn_only;

void report_set_warn_only(bool warn)
{
	atomic_store_u32(&report_warn_only, warn ? 1 : 0);
}

void report_bad_pointer(const char *func, const void *ptr, const char *reason)
{
	char buf[256];
	size_t n = report_format(buf, sizeof buf, "ebbmalloc: %s(): invalid pointer %p: %s\n",
				 func, ptr, reason);
	report_write(buf, n, sizeof buf);
	if (!atomic_load_u32(&report_warn_only))
		os_abort();
	atomic_add_u64(&report_warned, 1);
}

void report_fatal(const char *message)
{
	char buf[256];
	size_t n = report_format(buf, sizeof buf, "ebbmalloc: %s\n", message);
	report_write(buf, n, sizeof buf);
	os_abort();
}

uint64_t report_count(void)
{
	return atomic_load_u64(&report_warned);
}

void report_assert_failed(const char *file, int line, const char *cond)
{
	char buf[256];
	size_t n = report_format(buf, sizeof buf, "ebbmalloc: internal check failed at %s:%d: %s\n",
				 file, line, cond);
	report_write(buf, n, sizeof buf);
	os_abort();
}
