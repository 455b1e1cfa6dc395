/* os_prof.c: the system side of the heap profiler (see os_prof.h). */
#define _GNU_SOURCE
#include "os/os_prof.h"

#include <dlfcn.h>
#include <link.h>
#ifdef EBB_UNWIND_CHECK
#include <stdio.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <unwind.h>

#include "core/base/util.h"
#include "os/os_unwind.h"

/* ---------------------------------------------------------------------------
 * Writing into the library's code (x86-64 only): a redirected entry point
 * and the patched countdowns. The pages are made writable for the moment
 * and stay executable (the writer may run on the same page).
 * ------------------------------------------------------------------------- */
#if defined(__x86_64__)
/* The pages os_code_write_begin's window left writable (len 0: none).
 * Start-up only, one thread: no lock. */
static uintptr_t code_open_first;
static size_t code_open_len;
static bool code_batch;

static bool code_write(void *at, const void *bytes, size_t n)
{
	uintptr_t first = (uintptr_t)at & ~(uintptr_t)(EBB_PAGE_SIZE - 1);
	size_t len = util_align_up((uintptr_t)at + n - first, EBB_PAGE_SIZE);
	if (code_open_len != 0 && first >= code_open_first && first + len <= code_open_first + code_open_len) {
		memcpy(at, bytes, n);
		return true;
	}
	if (code_open_len != 0) { /* another page than the window's */
		mprotect((void *)code_open_first, code_open_len, PROT_READ | PROT_EXEC);
		code_open_len = 0;
	}
	if (mprotect((void *)first, len, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
		return false;
	memcpy(at, bytes, n);
	if (code_batch) {
		code_open_first = first;
		code_open_len = len;
	} else
		mprotect((void *)first, len, PROT_READ | PROT_EXEC);
	return true;
}
#endif

void os_code_write_begin(void)
{
#if defined(__x86_64__)
	code_batch = true;
#endif
}

void os_code_write_end(void)
{
#if defined(__x86_64__)
	if (code_open_len != 0)
		mprotect((void *)code_open_first, code_open_len, PROT_READ | PROT_EXEC);
	code_open_len = 0;
	code_batch = false;
#endif
}

/* A 5-byte `jmp rel32` over the first bytes of `from`. */
bool os_code_redirect(void *from, void *to)
{
#if defined(__x86_64__)
	intptr_t rel = (intptr_t)to - ((intptr_t)from + 5);
	if (rel != (intptr_t)(int32_t)rel)
		return false;
	unsigned char jmp[5] = {0xe9};
	int32_t rel32 = (int32_t)rel;
	memcpy(jmp + 1, &rel32, 4);
	return code_write(from, jmp, sizeof jmp);
#else
	(void)from;
	(void)to;
	return false;
#endif
}

#if defined(__x86_64__)
struct plt_job {
	const struct os_plt_target *t;
	size_t len[OS_PLT_TARGETS_MAX];
	uint64_t first[4]; /* bit c: some name starts with byte c */
	unsigned n, written;
};

/* Whether a lies in one of info's loaded segments (exec: executable ones
 * alone). */
static bool plt_inside(const struct dl_phdr_info *info, uintptr_t a, bool exec)
{
	for (unsigned i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || (exec && !(ph->p_flags & PF_X)))
			continue;
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		if (a >= lo && a - lo < ph->p_memsz)
			return true;
	}
	return false;
}

/* The slots of one object inside its RELRO segment (read-only once ld.so
 * relocated it), written together by plt_relro_store: one writable window
 * over the pages they span instead of one mprotect pair a slot. A pair a
 * slot was 138 mprotect calls in `postgres -V` (42 objects), and the
 * redirect about 1.4 ms of its 1.6 ms more CPU than prof=0 on the VM the
 * benchmarks run on (each call splits and merges the mapping and flushes
 * the TLB). The pages between two slots lie in the same segment, so the
 * window gives back read-only exactly what was read-only. At most one slot
 * a name in an object. */
struct plt_relro {
	uintptr_t *slot[OS_PLT_TARGETS_MAX];
	uintptr_t val[OS_PLT_TARGETS_MAX];
	unsigned n;
};

static unsigned plt_relro_store(const struct plt_relro *r)
{
	if (r->n == 0)
		return 0;
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	for (unsigned i = 0; i < r->n; i++) {
		uintptr_t a = (uintptr_t)r->slot[i];
		lo = a < lo ? a : lo;
		hi = a > hi ? a : hi;
	}
	lo &= ~(uintptr_t)(EBB_PAGE_SIZE - 1);
	size_t len = (hi - lo) / EBB_PAGE_SIZE * EBB_PAGE_SIZE + EBB_PAGE_SIZE;
	if (mprotect((void *)lo, len, PROT_READ | PROT_WRITE) != 0)
		return 0;
	for (unsigned i = 0; i < r->n; i++)
		*r->slot[i] = r->val[i];
	mprotect((void *)lo, len, PROT_READ);
	return r->n;
}

static int plt_object(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct plt_job *j = arg;
	(void)size;
	uintptr_t base = info->dlpi_addr, relro = 0, relro_end = 0;
	const ElfW(Dyn) *dyn = NULL;
	/* this library: its own calls are not through a PLT slot of a name */
	if (plt_inside(info, (uintptr_t)j->t[0].from, false))
		return 0;
	for (unsigned i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_DYNAMIC)
			dyn = (const ElfW(Dyn) *)(base + ph->p_vaddr);
		else if (ph->p_type == PT_GNU_RELRO) {
			relro = (base + ph->p_vaddr) & ~(uintptr_t)(EBB_PAGE_SIZE - 1);
			relro_end = base + ph->p_vaddr + ph->p_memsz;
		}
	}
	if (dyn == NULL)
		return 0;
	uintptr_t jmprel = 0, pltsz = 0, pltrel = 0, symtab = 0, strtab = 0, strsz = 0;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		switch (dyn->d_tag) {
		case DT_JMPREL: jmprel = dyn->d_un.d_ptr; break;
		case DT_PLTRELSZ: pltsz = dyn->d_un.d_val; break;
		case DT_PLTREL: pltrel = dyn->d_un.d_val; break;
		case DT_SYMTAB: symtab = dyn->d_un.d_ptr; break;
		case DT_STRTAB: strtab = dyn->d_un.d_ptr; break;
		case DT_STRSZ: strsz = dyn->d_un.d_val; break;
		}
	}
	if (jmprel == 0 || symtab == 0 || strtab == 0 || pltrel != DT_RELA)
		return 0;
	/* ld.so relocates these addresses in place where the dynamic section
	 * is writable, and leaves them offsets where it is not (the vdso). */
	if (jmprel < base)
		jmprel += base;
	if (symtab < base)
		symtab += base;
	if (strtab < base)
		strtab += base;
	const ElfW(Rela) *rel = (const ElfW(Rela) *)jmprel;
	const ElfW(Sym) *sym = (const ElfW(Sym) *)symtab;
	struct plt_relro ro;
	ro.n = 0;
	for (size_t i = 0; i < pltsz / sizeof *rel; i++) {
		if (ELF64_R_TYPE(rel[i].r_info) != R_X86_64_JUMP_SLOT)
			continue;
		size_t name = sym[ELF64_R_SYM(rel[i].r_info)].st_name;
		if (name >= strsz)
			continue;
		const char *s = (const char *)strtab + name;
		/* The first byte before memcmp: most names differ there, and
		 * the call for each of every object's slots was about 10 000
		 * instructions at each prof=1 start-up. */
		unsigned char c = (unsigned char)s[0];
		if (!(j->first[c >> 6] >> (c & 63) & 1))
			continue;
		for (unsigned k = 0; k < j->n; k++) {
			const struct os_plt_target *t = &j->t[k];
			if (s[0] != t->name[0] || name + j->len[k] >= strsz ||
			    memcmp(s, t->name, j->len[k] + 1) != 0)
				continue;
			uintptr_t *slot = (uintptr_t *)(base + rel[i].r_offset);
			uintptr_t now = *slot;
			/* Bound to name's definition already, or to be bound at
			 * the first call (the object's PLT stub): anything else
			 * was bound elsewhere on purpose (RTLD_DEEPBIND, a local
			 * definition). */
			if (now != (uintptr_t)t->from && !plt_inside(info, now, true))
				break;
			if ((uintptr_t)slot < relro || (uintptr_t)slot >= relro_end) {
				*slot = (uintptr_t)t->to;
				j->written++;
			} else if (ro.n < OS_PLT_TARGETS_MAX) {
				ro.slot[ro.n] = slot;
				ro.val[ro.n++] = (uintptr_t)t->to;
			}
			break;
		}
	}
	j->written += plt_relro_store(&ro);
	return 0;
}
#endif

unsigned os_plt_redirect(const struct os_plt_target *targets, unsigned n)
{
#if defined(__x86_64__)
	struct os_plt_target kept[OS_PLT_TARGETS_MAX];
	struct plt_job j = {kept, {0}, {0}, 0, 0};
	for (unsigned k = 0; k < n && k < OS_PLT_TARGETS_MAX; k++) {
		if (dlsym(RTLD_DEFAULT, targets[k].name) != targets[k].from)
			continue;
		unsigned char c = (unsigned char)targets[k].name[0];
		j.first[c >> 6] |= (uint64_t)1 << (c & 63);
		j.len[j.n] = strlen(targets[k].name);
		kept[j.n++] = targets[k];
	}
	if (j.n > 0)
		dl_iterate_phdr(plt_object, &j);
	return j.written;
#else
	(void)targets;
	(void)n;
	return 0;
#endif
}

bool os_tls_patch(void *insn, int32_t placeholder, void *var)
{
#if defined(__x86_64__)
	unsigned char *c = insn;
	int32_t disp;
	memcpy(&disp, c + 5, 4);
	/* fs prefix, REX.W, SUB r/m64 r64 or MOV r64 r/m64, ModRM mod 00 r/m
	 * 100 (SIB), SIB with neither base nor index: an absolute disp32 from
	 * fs. */
	if (c[0] != 0x64 || (c[1] & 0xf8) != 0x48 || (c[2] != 0x29 && c[2] != 0x8b) || (c[3] & 0xc7) != 0x04 ||
	    c[4] != 0x25 ||
	    disp != placeholder)
		return false;
	uintptr_t tp;
	__asm__("mov %%fs:0, %0" : "=r"(tp));
	intptr_t off = (intptr_t)((uintptr_t)var - tp);
	if (off != (intptr_t)(int32_t)off)
		return false;
	int32_t v = (int32_t)off;
	return code_write(c + 5, &v, sizeof v);
#else
	(void)insn;
	(void)placeholder;
	(void)var;
	return false;
#endif
}

/* ---------------------------------------------------------------------------
 * The unwinders: the own walker (os_unwind.c), libunwind's or libgcc's,
 * all following the DWARF call-frame information (.eh_frame) every object
 * carries for exceptions, so they walk code built without frame pointers
 * (Debian's -O2 binaries and libraries) as well as code built with them.
 * The libraries are loaded with dlopen when prof is on, so that a process
 * that never profiles maps neither.
 * ------------------------------------------------------------------------- */
typedef int (*unw_trace_fn)(void **, int);
typedef _Unwind_Reason_Code (*unw_backtrace_fn)(_Unwind_Trace_Fn, void *);
typedef _Unwind_Ptr (*unw_getip_fn)(struct _Unwind_Context *);
static unw_trace_fn unw_trace;         /* libunwind's unw_backtrace, if loaded */
static unw_backtrace_fn unw_backtrace; /* else libgcc's */
static unw_getip_fn unw_getip;

/* Without the own walker, with both loaded (auto), a thread unwinds with
 * libgcc's for its first UNW_SWITCH stacks and with libunwind's after. libunwind's first stack in
 * a thread maps and fills a frame cache of its own (256 KiB: some 12 000
 * instructions and 64 page faults, unmapped again at thread exit), which
 * pays off only in a thread that takes many samples; libgcc's costs about
 * 10 000 instructions more a stack and nothing per thread. A program that
 * starts threads all the time (bench larson, xmalloc) ran 1.9 and 1.2
 * times slower with prof=1 and libunwind alone, 1.06 and 1.04 with libgcc. */
#define UNW_SWITCH 64
static __thread unsigned unw_stacks __attribute__((tls_model("initial-exec")));

/* auto (0) with the own walker (os_unwind.c): libgcc's takes only the
 * stacks the walker gives up on, and libunwind is not loaded. */
static bool unw_own;

/* libgcc_s's _Unwind_Backtrace (with the own walker: loaded the first
 * time a stack needs it, unw_gcc_tried). */
static uint32_t unw_gcc_tried;

static unw_backtrace_fn unw_gcc_load(void)
{
	void *h = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NODELETE);
	unw_getip_fn getip = h ? (unw_getip_fn)dlsym(h, "_Unwind_GetIP") : NULL;
	unw_backtrace_fn bt = h ? (unw_backtrace_fn)dlsym(h, "_Unwind_Backtrace") : NULL;
	if (getip == NULL || bt == NULL)
		return NULL;
	__atomic_store_n(&unw_getip, getip, __ATOMIC_RELAXED);
	__atomic_store_n(&unw_backtrace, bt, __ATOMIC_RELEASE);
	return bt;
}

const char *os_unwind_load(unsigned which)
{
	const char *name = NULL;
	if (which == 0 && os_unwind_own_load()) {
		/* libgcc_s is loaded when the walker first gives up on a stack
		 * (os_unwind), not here: most programs never need it, and its
		 * dlopen cost every process about 82 000 instructions and a
		 * millisecond at start-up (bench churn 16B-32K: 0.16% of the
		 * run). A check build compares every stack with libgcc's. */
#ifdef EBB_UNWIND_CHECK
		__atomic_store_n(&unw_gcc_tried, 1, __ATOMIC_RELAXED);
		unw_gcc_load();
#endif
		__atomic_store_n(&unw_own, true, __ATOMIC_RELEASE);
		return "own, libgcc for the rest";
	}
	/* Under a sanitizer auto skips libunwind: its thread-exit destructor
	 * locks a mutex after TSan has torn the thread down (it crashes
	 * there). prof_unwind=libunwind still loads it. */
	if (which == 1 || (which == 0 && !EBB_TSAN && !EBB_ASAN)) {
		void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_NODELETE);
		unw_trace_fn t = h ? (unw_trace_fn)dlsym(h, "unw_backtrace") : NULL;
		if (t != NULL) {
			__atomic_store_n(&unw_trace, t, __ATOMIC_RELEASE);
			name = "libunwind";
		}
		if (which == 1)
			return name;
	}
	void *h = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NODELETE);
	if (h == NULL)
		return name;
	unw_getip_fn getip = (unw_getip_fn)dlsym(h, "_Unwind_GetIP");
	unw_backtrace_fn bt = (unw_backtrace_fn)dlsym(h, "_Unwind_Backtrace");
	if (getip == NULL || bt == NULL)
		return name;
	__atomic_store_n(&unw_getip, getip, __ATOMIC_RELAXED);
	__atomic_store_n(&unw_backtrace, bt, __ATOMIC_RELEASE);
	return name != NULL ? "libgcc, then libunwind" : "libgcc";
}

struct unw_walk {
	void **out;
	unsigned n, max;
	unw_getip_fn getip;
};

static _Unwind_Reason_Code unw_frame(struct _Unwind_Context *ctx, void *arg)
{
	struct unw_walk *w = arg;
	if (w->n == w->max)
		return _URC_END_OF_STACK;
	_Unwind_Ptr ip = w->getip(ctx);
	if (ip == 0)
		return _URC_END_OF_STACK;
	w->out[w->n++] = (void *)ip;
	return _URC_NO_REASON;
}

#ifdef EBB_UNWIND_CHECK
/* A checking build (-DEBB_UNWIND_CHECK): every stack the own walker takes
 * is taken again with libgcc's and any difference is printed. libgcc's
 * first frame is this function's own. */
static EBB_NOINLINE void unw_check(void *const *own, unsigned n, unsigned max)
{
	void *gcc[80];
	struct unw_walk w = {gcc, 0, 80, unw_getip};
	unw_backtrace(unw_frame, &w);
	static unsigned long stacks, diffs, gaveup;
	stacks++;
	bool same = n + 2 == w.n || (n == max && w.n >= n + 2);
	for (unsigned i = 0; same && i < n; i++)
		same = own[i] == gcc[i + 2];
	if (n == 0)
		gaveup++;
	if (!same && n != 0) {
		char buf[256];
		diffs++;
		dprintf(2, "unwind check: differ (own %u, libgcc %u frames)\n", n, w.n - 2);
		for (unsigned i = 0; i < 24 && (i < n || i + 2 < w.n); i++) {
			os_prof_symbol(i < n ? own[i] : NULL, buf, sizeof buf);
			dprintf(2, "  own %p %-50.50s", i < n ? own[i] : NULL, buf);
			os_prof_symbol(i + 2 < w.n ? gcc[i + 2] : NULL, buf, sizeof buf);
			dprintf(2, " gcc %p %s\n", i + 2 < w.n ? gcc[i + 2] : NULL, buf);
		}
	}
	if ((stacks & (stacks - 1)) == 0)
		dprintf(2, "unwind check: %lu stacks, %lu differ, %lu given up\n", stacks, diffs, gaveup);
}

/* The same for os_unwind_from: libgcc's stack from own[0] on. */
static EBB_NOINLINE void unw_check_from(void *const *own, unsigned n, unsigned max)
{
	void *gcc[80];
	struct unw_walk w = {gcc, 0, 80, unw_getip};
	unw_backtrace(unw_frame, &w);
	unsigned k = 0;
	while (k < w.n && gcc[k] != own[0])
		k++;
	bool same = k + n == w.n || (n == max && w.n >= k + n);
	for (unsigned i = 0; same && i < n; i++)
		same = own[i] == gcc[k + i];
	if (!same)
		dprintf(2, "unwind check (from a frame): differ (own %u, libgcc %u frames from the first)\n", n,
			w.n - k);
}
#endif

unsigned os_unwind_from(void **out, unsigned max, void *pc, uintptr_t cfa, uintptr_t rbp, os_unwind_rec_t *rec)
{
	if (!__atomic_load_n(&unw_own, __ATOMIC_ACQUIRE))
		return 0;
	unsigned n = os_unwind_own(out, max, (uintptr_t)pc, cfa, rbp, rec);
#ifdef EBB_UNWIND_CHECK
	if (n != 0)
		unw_check_from(out, n, max);
#endif
	return n;
}

EBB_NOINLINE unsigned os_unwind(void **out, unsigned max)
{
	if (__atomic_load_n(&unw_own, __ATOMIC_ACQUIRE)) {
		/* __builtin_frame_address gives this function a frame pointer:
		 * fp[0] is the caller's rbp, fp[1] the return address, and the
		 * caller's stack pointer before the call is fp + 2. */
		uintptr_t *fp = __builtin_frame_address(0);
		if (fp[1] == (uintptr_t)__builtin_return_address(0)) {
			unsigned n = os_unwind_own(out, max, fp[1], (uintptr_t)(fp + 2), fp[0], NULL);
#ifdef EBB_UNWIND_CHECK
			unw_check(out, n, max);
#endif
			if (n != 0)
				return n;
		}
	}
	unw_trace_fn t = __atomic_load_n(&unw_trace, __ATOMIC_ACQUIRE);
	unw_backtrace_fn bt = __atomic_load_n(&unw_backtrace, __ATOMIC_ACQUIRE);
	/* The own walker gave up: libgcc's, loaded by the first thread that
	 * gets here (the caller samples nothing meanwhile: dlopen allocates);
	 * another thread at the same moment goes without this once. */
	if (bt == NULL && __atomic_load_n(&unw_own, __ATOMIC_ACQUIRE) &&
	    __atomic_exchange_n(&unw_gcc_tried, 1, __ATOMIC_ACQ_REL) == 0)
		bt = unw_gcc_load();
	/* A tail call (unw_backtrace returns a count, never below 0): this
	 * frame is not on the stack libunwind walks. */
	if (t != NULL && (bt == NULL || unw_stacks >= UNW_SWITCH))
		return (unsigned)t(out, (int)max);
	if (bt == NULL)
		return 0;
	unw_stacks++;
	struct unw_walk w = {out, 0, max, __atomic_load_n(&unw_getip, __ATOMIC_RELAXED)};
	bt(unw_frame, &w);
	return w.n;
}

/* ---------------------------------------------------------------------------
 * Symbols and files
 * ------------------------------------------------------------------------- */
static size_t put_str(char *buf, size_t at, size_t cap, const char *s)
{
	while (*s && at + 1 < cap)
		buf[at++] = *s++;
	return at;
}

static size_t put_hex(char *buf, size_t at, size_t cap, uintptr_t v)
{
	char tmp[2 + 16];
	int n = 0;
	do
		tmp[n++] = "0123456789abcdef"[v & 15];
	while ((v >>= 4) != 0);
	at = put_str(buf, at, cap, "0x");
	while (n > 0 && at + 1 < cap)
		buf[at++] = tmp[--n];
	return at;
}

void os_prof_symbol(const void *addr, char *buf, size_t cap)
{
	Dl_info info;
	size_t at = 0;
	if (cap == 0)
		return;
	if (dladdr(addr, &info) != 0) {
		if (info.dli_sname != NULL) {
			at = put_str(buf, at, cap, info.dli_sname);
			at = put_str(buf, at, cap, "+");
			at = put_hex(buf, at, cap, (uintptr_t)addr - (uintptr_t)info.dli_saddr);
			at = put_str(buf, at, cap, " ");
		}
		if (info.dli_fname != NULL && info.dli_fname[0] != '\0') {
			at = put_str(buf, at, cap, "(");
			at = put_str(buf, at, cap, info.dli_fname);
			at = put_str(buf, at, cap, ")");
		}
	}
	buf[at] = '\0';
}

static int sys_open(const char *path, int flags, unsigned mode)
{
	long r;
	do
		r = syscall(SYS_openat, AT_FDCWD, path, flags, mode);
	while (r < 0 && errno == EINTR);
	return (int)r;
}

int os_prof_file_open(const char *path)
{
	struct stat st;
	/* Look before opening (opening a device may have effects), and again
	 * at what was opened. */
	if (fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode)) {
		errno = S_ISLNK(st.st_mode) ? ELOOP : EINVAL;
		return -1;
	}
	int fd = sys_open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
			  0644);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		syscall(SYS_close, fd);
		errno = EINVAL;
		return -1;
	}
	return fd;
}

bool os_prof_file_copy(int fd, const char *src)
{
	char buf[4096];
	int in = sys_open(src, O_RDONLY | O_CLOEXEC, 0);
	if (in < 0)
		return false;
	bool ok = true;
	for (;;) {
		long n = syscall(SYS_read, in, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ok = n == 0;
			break;
		}
		for (long done = 0; done < n;) {
			long w = syscall(SYS_write, fd, buf + done, (size_t)(n - done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				ok = false;
				break;
			}
			done += w;
		}
		if (!ok)
			break;
	}
	syscall(SYS_close, in);
	return ok;
}
