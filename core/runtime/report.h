/* report.h: messages to stderr that never allocate: warnings, the report of
 * a bad pointer or a corrupted structure, and failed internal checks.
 *
 * Formats: %s %.*s %c %d %u %zu %llu %lld %x %p (a small subset of printf,
 * implemented here so that reporting works inside the allocator's own slow
 * paths, where calling malloc would recurse). */
#ifndef EBB_CORE_REPORT_H
#define EBB_CORE_REPORT_H

#include <stdarg.h>

#include "core/base/config.h"
#include "core/base/util.h"

EBB_BEGIN_DECLS

size_t report_vformat(char *buf, size_t cap, const char *fmt, va_list ap);
size_t report_format(char *buf, size_t cap, const char *fmt, ...);

/* "ebbmalloc: warning: <message>\n" */
void report_warn(const char *fmt, ...);

/* "ebbmalloc: <func>(): <what> <ptr>: <reason>\n", then abort(), unless the
 * option on_error=warn is set: then the caller gets control back and must
 * leave the block alone (leak it). */
void report_bad_pointer(const char *func, const void *ptr, const char *reason);
/* Set by the options table whenever on_error is stored (true: warn). */
void report_set_warn_only(bool warn);

/* "ebbmalloc: <message>\n", then abort(), whatever on_error says: for the
 * failures after which the caller has no way to go on. */
EBB_NORETURN void report_fatal(const char *message);

/* Number of reports made under on_error=warn (tests read it). */
uint64_t report_count(void);

EBB_END_DECLS

#endif /* EBB_CORE_REPORT_H */
