/* os_prof.h: what the heap profiler (core/process/prof.c) and its entry
 * points (core/api/api.c) ask of the system, beside os.h: redirecting an
 * entry point to its sampling variant, a stack unwinder that reads DWARF
 * call-frame information, symbol names for the leak report, and the profile
 * file. Nothing here allocates. */
#ifndef EBB_OS_OS_PROF_H
#define EBB_OS_OS_PROF_H

#include "core/base/config.h"
#include "os/os_unwind.h" /* os_unwind_rec_t, os_unwind_replay */

EBB_BEGIN_DECLS

/* Between these two, os_code_redirect and os_tls_patch leave the code
 * page they wrote writable (and executable) until a write to another page
 * or os_code_write_end: start-up's writes, all in one page (prof.h,
 * PROF_PATCHED), then make it writable and back once instead of once each
 * (each mprotect pair splits and merges the mapping and flushes the TLB:
 * 16 pairs were about 0.17 ms a process on this VM, one 0.03 ms). Same
 * rules as those: start-up, no other thread. */
void os_code_write_begin(void);
void os_code_write_end(void);

/* Makes every call of the function at `from` run `to` instead (same
 * signature), by writing a jump over its first instruction. Only while no
 * other thread can be running `from` (start-up). false if it cannot (not
 * x86-64, too far, the kernel refused write access to the code). */
bool os_code_redirect(void *from, void *to);

/* Writes into the instruction at `insn`, `subq %reg, %fs:disp32` or
 * `movq %fs:disp32, %reg` whose disp32 is `placeholder`, the offset of the
 * calling thread's `var` (an initial-exec TLS variable of this library)
 * from the thread pointer, so that it subtracts from or loads every
 * thread's var. The offset is the same in
 * every thread. Only while no thread can run the instruction (start-up);
 * false if it cannot (not that instruction, not x86-64, no write access
 * to the code). */
bool os_tls_patch(void *insn, int32_t placeholder, void *var);

struct os_plt_target {
	const char *name;
	void *from, *to;
};

/* For each of the n targets: points the PLT slots (R_X86_64_JUMP_SLOT) of
 * `name` in the objects loaded now, other than this library, at `to`,
 * where `from` is what name resolves to (it is checked: a program that
 * defines name itself is left alone) and each slot holds `from` or its
 * object's own lazy-binding stub. Their calls then skip the jump
 * os_code_redirect wrote over from's entry (one instruction a call);
 * objects loaded later, calls through other slots and function pointers
 * still take it. One pass over each object's slots for all the names (a
 * postgres process loads about 40 libraries: a pass a name was 260 000
 * instructions). Start-up only, like os_code_redirect. Returns the slots
 * written. n is at most OS_PLT_TARGETS_MAX. */
#define OS_PLT_TARGETS_MAX 4
unsigned os_plt_redirect(const struct os_plt_target *targets, unsigned n);

/* Loads the unwinders. `which` 0 (auto): the own walker (os_unwind.h,
 * x86-64 with glibc 2.35 or later; about 250 instructions a stack once its
 * rule cache is warm) with libgcc_s's _Unwind_Backtrace for the stacks it
 * gives up on (dlopen'ed by os_unwind the first time, from the sampling
 * thread: the caller must not sample its allocations). `which` 1: libunwind's unw_backtrace alone (libunwind.so.8,
 * which caches each frame's unwinding rule per thread, about 650
 * instructions a stack). `which` 2: libgcc's alone (each frame's DWARF
 * rules read anew, 9 000-13 000 instructions a stack). Without the own
 * walker, 0 loads both libraries: each thread then takes its first stacks
 * with libgcc and moves to libunwind once it took enough to pay for
 * libunwind's per-thread cache (os_prof.c says why). All follow the DWARF
 * call-frame information. Call once, from a context where dlopen may
 * allocate (a library constructor). Returns the name of what is used, or
 * NULL: stacks are then empty. */
const char *os_unwind_load(unsigned which);
/* Return addresses of the calling thread's stack, innermost first (the
 * first may be inside os_unwind itself), at most `max`; returns how many.
 * Takes no lock of the allocator. The own walker and libgcc allocate
 * nothing (both find each frame's information with glibc's
 * _dl_find_object); libunwind maps its per-thread cache itself, but registering it (pthread_setspecific) may
 * call calloc once per thread, which the caller must not sample. 0 before
 * os_unwind_load succeeded. */
unsigned os_unwind(void **out, unsigned max);
/* The same from a frame the caller names: the frame whose return address
 * is `pc`, whose CFA (the stack pointer once pc is returned to) is `cfa`,
 * with rbp holding `rbp` there; pc is the first address stored. Only the
 * own walker does this (the frames inside the allocator are then never
 * walked): 0 without it or when it gives up, and the caller takes the
 * stack with os_unwind. */
unsigned os_unwind_from(void **out, unsigned max, void *pc, uintptr_t cfa, uintptr_t rbp, os_unwind_rec_t *rec);

/* "name+0xoff (object)" of the code at `addr` into buf (NUL-terminated),
 * from the dynamic symbol tables (dladdr: only exported names, else the
 * object alone). Never allocates. */
void os_prof_symbol(const void *addr, char *buf, size_t cap);

/* Opens `path` to write a profile: created (0644) or truncated; never
 * through a symbolic link in the last component, never a FIFO or device.
 * A descriptor, or -1 with errno set. */
int os_prof_file_open(const char *path);
/* Appends the contents of `src` (a /proc file, read in pieces) to fd.
 * false on any error. */
bool os_prof_file_copy(int fd, const char *src);

EBB_END_DECLS

#endif /* EBB_OS_OS_PROF_H */
