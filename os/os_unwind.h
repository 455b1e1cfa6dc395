/* os_unwind.h: the heap profiler's own stack walker for x86-64 Linux (used
 * by os_unwind in os_prof.c when prof_unwind=auto).
 *
 * It follows the same DWARF call-frame information (.eh_frame, found
 * through .eh_frame_hdr) as libgcc's and libunwind's unwinders, so it walks
 * code built without frame pointers, but it only needs three registers
 * (rsp, rbp, the return address) and keeps, per return address, the rule
 * that gives the caller's frame from this one (CFA = rsp or rbp + N, the
 * return address at CFA - 8, rbp saved at CFA - 8k or left alone) in a
 * small process-wide cache: after the first samples a frame costs a table
 * lookup and two loads, where libgcc searches the FDE and interprets its
 * CFI program at every frame of every stack.
 *
 * Anything it does not understand (a CFA defined by an expression, a signal
 * frame, a stack it cannot bound, a rule that would read outside the
 * stack) makes it give up on the whole stack: the caller then takes it with
 * libgcc's unwinder, so the stacks are those libgcc gives. It never
 * allocates: the object of an address comes from glibc's _dl_find_object
 * (lock-free), the cache is one 64-bit word per entry. Its one lock is
 * ld.so's, for one dl_iterate_phdr callback that reads the count of
 * dlclose'd objects, so that rules do not outlive their object: once in a
 * stack that passes through an object other than the program, libc, ld.so
 * and the allocator, or that needs a new rule.
 * A build with -DEBB_UNWIND_CHECK takes every stack with libgcc's too and
 * prints any difference (os_prof.c). */
#ifndef EBB_OS_OS_UNWIND_H
#define EBB_OS_OS_UNWIND_H

#include "core/base/config.h"

EBB_BEGIN_DECLS

/* What a walk of os_unwind_from read, so that the same stack can be known
 * again without walking it (os_unwind_replay): the walk is a function of
 * its start (pc, cfa, and rbp if used) and of the stack words it read (the
 * return addresses and saved rbp values), with rules cached per return
 * address that never change for the objects that are never unloaded.
 * n == OS_UNWIND_REC_NONE: not replayable (a rule of an object that could
 * be unloaded, more reads than fit). */
#define OS_UNWIND_REC_MAX 32
#define OS_UNWIND_REC_NONE 0xffffffffu
typedef struct os_unwind_rec {
	uintptr_t top; /* the stack's top (all reads are below it) */
	uintptr_t rbp; /* the start's rbp, if rbp_used */
	bool rbp_used;
	unsigned n;
	uintptr_t at[OS_UNWIND_REC_MAX], val[OS_UNWIND_REC_MAX];
} os_unwind_rec_t;

/* Makes the walker usable: false if it cannot run here (not x86-64, a libc
 * without _dl_find_object). Call once, where dlsym may allocate. */
bool os_unwind_own_load(void);

/* Walks the stack from the frame whose return address is `pc`, whose CFA
 * (the stack pointer before the call that made the frame below it) is
 * `cfa` and in which rbp held `rbp`: stores pc and the return addresses
 * outwards into out, at most max, innermost first. Returns how many, or 0
 * when it gave up (the caller takes the stack another way). */
unsigned os_unwind_own(void **out, unsigned max, uintptr_t pc, uintptr_t cfa, uintptr_t rbp, os_unwind_rec_t *rec);
/* os_unwind_replay's reads: whether every stack word rec names still holds
 * what the walk read. Outside the sanitizers' view (the words are other
 * frames' saved registers and return addresses). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define OS_UNWIND_NO_SANITIZE __attribute__((no_sanitize("address", "thread")))
#else
#define OS_UNWIND_NO_SANITIZE
#endif
static inline OS_UNWIND_NO_SANITIZE bool os_unwind_rec_reads_same(const os_unwind_rec_t *rec)
{
	for (unsigned i = 0; i < rec->n; i++)
		if (*(const uintptr_t *)rec->at[i] != rec->val[i])
			return false;
	return true;
}

/* os_unwind_replay for a record whose stack top is not the calling
 * thread's pointer (the main thread's stack, another thread's record). */
bool os_unwind_replay_other(const os_unwind_rec_t *rec, uintptr_t cfa);

/* Whether a walk from (the same pc and) cfa, rbp would read what rec says
 * a former one read, on the calling thread's stack: it would then give
 * the same frames. The top of this thread's stack is the walk's (a
 * thread's own: the thread pointer, tested first; else the main
 * thread's): every word the walk read, at or above the same cfa and below
 * top, is inside this thread's stack now, whoever walked it (a thread's
 * stack is reused for the next one). In line (the profiler's every
 * replayed sample: about 6 instructions of call and saved registers). A
 * record exists only where the own walker ran (os_unwind_own). */
static inline OS_UNWIND_NO_SANITIZE bool os_unwind_replay(const os_unwind_rec_t *rec, uintptr_t cfa,
							   uintptr_t rbp)
{
	if (rec->n == OS_UNWIND_REC_NONE || (rec->rbp_used && rec->rbp != rbp))
		return false;
#if defined(__x86_64__)
	uintptr_t tp;
	__asm__("mov %%fs:0, %0" : "=r"(tp));
	if (rec->top != tp)
		return os_unwind_replay_other(rec, cfa);
	return os_unwind_rec_reads_same(rec);
#else
	(void)cfa;
	return false;
#endif
}

EBB_END_DECLS

#endif /* EBB_OS_OS_UNWIND_H */
