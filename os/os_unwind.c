/* os_unwind.c: the profiler's own x86-64 stack walker (see os_unwind.h). */
#define _GNU_SOURCE
#include "os/os_unwind.h"

#include <dlfcn.h>
#include <link.h>
#include <stddef.h>
#include <string.h>

#include "core/base/util.h"

#if defined(__x86_64__) && defined(__linux__) && defined(DLFO_EH_SEGMENT_TYPE)
#define UNW_OWN 1
#endif

#ifdef UNW_OWN

typedef int (*find_object_fn)(void *, struct dl_find_object *);
/* glibc's _dl_find_object (2.35 and later), looked up rather than linked
 * so that the library still loads with an older glibc. */
static find_object_fn find_object;
/* The objects that are never unloaded: the program, ld.so, libc and this
 * library (the cache goes with it), whose rules need no generation. */
#define UNW_PERM_OBJECTS 4
static void *unw_perm[UNW_PERM_OBJECTS];
/* The main thread's stack pointer at start-up (ld.so's). */
extern void *__libc_stack_end;

/* DWARF's numbers of the registers the walker follows. */
#define DW_RBP 6
#define DW_RSP 7
#define DW_RA 16

/* A stack whose bound cannot be found within this of its pointer, or a
 * frame larger than UNW_FRAME_MAX, is left to libgcc. */
#define UNW_STACK_MAX ((uintptr_t)256 << 20)
#define UNW_FRAME_MAX ((uintptr_t)1 << 20)

/* ---------------------------------------------------------------------------
 * The rule cache: one 64-bit word per entry, so that a reader sees a whole
 * entry or another whole one, and two threads that fill the same slot just
 * overwrite each other. A return address pc lives in slot
 * (pc ^ mix(pc >> 12)) mod 2^12; the slot and the tag pc >> 12 give pc back,
 * so a tag match is an exact match. Bits: 0 valid, 1 end (no caller), 2 CFA
 * from rbp (else rsp), 3-14 with the three below as 0 the CFA offset (a
 * multiple of 8 below 2^15; a larger frame is libgcc's), 19-26 the same way
 * the distance below the CFA at which rbp is saved (0: rbp unchanged), 16
 * the rule's object is never unloaded, 15, 17 and 18 the page of the slot
 * (rule_home: a word in a home slot, cache_put), 27-28 the generation
 * mod 4, 29-63 the tag (user addresses below 2^47). Both fields are read
 * with a mask alone.
 *
 * The generation is glibc's count of unloaded objects (dlpi_subs): a rule
 * outlives its object otherwise, and a library loaded later at the same
 * address would meet it (a wrong stack). A walk reads it (about 160
 * instructions) the first time it meets a rule of an object that could be
 * unloaded or computes a rule, and the first walk that sees a new count clears the cache
 * before it uses it; the generation in the word rejects what a walk that
 * started before the dlclose stores after the clear. Only a walk that
 * spans four dlcloses could still store a rule that passes, and a wrong
 * rule gives a wrong stack or one the bounds checks send to libgcc, never
 * a read outside the stack. The rules of the objects never unloaded (bit
 * 16) skip the generation: a stack of the program, libc and the allocator
 * alone does not read it.
 * ------------------------------------------------------------------------- */
#define UNW_CACHE_BITS 12
static uint64_t unw_cache[1u << UNW_CACHE_BITS] EBB_BIG_ZERO __attribute__((aligned(4096)));
/* Bit i: page i of unw_cache was written (a rule stored, or the cache
 * cleared). A lookup in a page never written is a miss without a read: its
 * first read faulted in the zero page, and the rule's store then faulted
 * again (bench cache-thrash t=2: 6 of the profiler's 26 page faults, 3
 * cache pages). */
#define UNW_CACHE_PAGE_SHIFT (EBB_PAGE_SHIFT - 3)
_Static_assert((sizeof unw_cache >> EBB_PAGE_SHIFT) <= 32, "a bit per page");
static uint32_t unw_cache_pages;
/* A rule goes first to its home slot in page 0 (slot mod 512), and only
 * when that one holds another rule to its own slot: the few rules of a
 * small program (a walk of 5-10 frames) then all sit in one page, where
 * slots spread over the 8 pages took 3 page faults in bench cache-thrash
 * t=2 (2 more than one page). A lookup reads the home slot, then its own
 * slot when that differs. */
#define UNW_CACHE_HOME ((unsigned)(EBB_PAGE_SIZE / sizeof(uint64_t)))

#define RULE_VALID ((uint64_t)1)
#define RULE_END ((uint64_t)1 << 1)
#define RULE_CFA_RBP ((uint64_t)1 << 2)
#define RULE_CFA_OFF(w) ((uint32_t)(w) & 0x7ff8)
#define RULE_RBP_BELOW(w) ((uint32_t)((w) >> 16) & 0x7f8)
#define RULE_PERM ((uint64_t)1 << 16)
#define RULE_GEN_SHIFT 27
#define RULE_TAG_SHIFT 29
#define RULE_TAG_MASK (~(uint64_t)0 << RULE_TAG_SHIFT)
/* Slot si >> 9 (which page its own slot is in) in bits 15, 17 and 18 of
 * every word stored: a word in a home slot (cache_put) names its pc exactly
 * with them. */
#define RULE_HOME_MASK ((uint64_t)1 << 15 | (uint64_t)3 << 17)
EBB_INLINE uint64_t rule_home(unsigned si)
{
	unsigned h = si >> UNW_CACHE_PAGE_SHIFT;
	return (uint64_t)(h & 1) << 15 | (uint64_t)(h >> 1) << 17;
}
/* The dlpi_subs the cache was last cleared for. */
static unsigned long long unw_gen;

static unsigned cache_slot(uintptr_t pc)
{
	uint32_t mix = (uint32_t)(pc >> 12) * 0x9E3779B1u >> (32 - UNW_CACHE_BITS);
	return (unsigned)(pc ^ mix) & ((1u << UNW_CACHE_BITS) - 1);
}

/* pc's rule word (slot si: cache_slot), or one whose tag is not pc's. */
static uint64_t cache_get(uintptr_t pc, unsigned si)
{
	uint32_t pages = __atomic_load_n(&unw_cache_pages, __ATOMIC_RELAXED);
	if (pages & 1) {
		uint64_t w = __atomic_load_n(&unw_cache[si % UNW_CACHE_HOME], __ATOMIC_RELAXED);
		if ((w & (RULE_TAG_MASK | RULE_HOME_MASK)) == ((uint64_t)(pc >> 12) << RULE_TAG_SHIFT | rule_home(si)))
			return w;
	}
	if (si >= UNW_CACHE_HOME && (pages & (uint32_t)1 << (si >> UNW_CACHE_PAGE_SHIFT)))
		return __atomic_load_n(&unw_cache[si], __ATOMIC_RELAXED);
	return 0;
}

/* Stores rule word w of slot si: in its home slot if that is empty, else
 * in si (two threads may overwrite each other: a word is whole). */
static void cache_put(unsigned si, uint64_t w)
{
	unsigned at = si % UNW_CACHE_HOME;
	if ((__atomic_load_n(&unw_cache_pages, __ATOMIC_RELAXED) & 1) &&
	    __atomic_load_n(&unw_cache[at], __ATOMIC_RELAXED) != 0)
		at = si;
	__atomic_store_n(&unw_cache[at], w, __ATOMIC_RELAXED);
	uint32_t page_bit = (uint32_t)1 << (at >> UNW_CACHE_PAGE_SHIFT);
	if (!(__atomic_load_n(&unw_cache_pages, __ATOMIC_RELAXED) & page_bit))
		__atomic_fetch_or(&unw_cache_pages, page_bit, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------------
 * Reading .eh_frame_hdr and .eh_frame. The data belongs to a loaded object
 * and is trusted as libgcc trusts it, but every read stays inside the
 * record's own length; anything unusual is a failure (libgcc's turn).
 * ------------------------------------------------------------------------- */
typedef struct rd {
	const uint8_t *p, *end;
	bool bad;
} rd_t;

static uint8_t rd_u8(rd_t *r)
{
	if (r->p >= r->end) {
		r->bad = true;
		return 0;
	}
	return *r->p++;
}

static uint64_t rd_fixed(rd_t *r, size_t n)
{
	if ((size_t)(r->end - r->p) < n) {
		r->bad = true;
		return 0;
	}
	uint64_t v = 0;
	memcpy(&v, r->p, n); /* little-endian */
	r->p += n;
	return v;
}

static uint64_t rd_uleb(rd_t *r)
{
	uint64_t v = 0;
	for (unsigned shift = 0;; shift += 7) {
		uint8_t b = rd_u8(r);
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80) || r->bad)
			return v;
	}
}

static int64_t rd_sleb(rd_t *r)
{
	uint64_t v = 0;
	unsigned shift = 0;
	uint8_t b;
	do {
		b = rd_u8(r);
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
	} while ((b & 0x80) && !r->bad);
	if (shift < 64 && (b & 0x40))
		v |= ~(uint64_t)0 << shift;
	return (int64_t)v;
}

/* A pointer in DWARF's exception-header encoding `enc`: absolute or
 * relative to its own address (pcrel) or to `data` (datarel); indirect
 * ones only to be skipped (`deref` false). */
static uintptr_t rd_enc(rd_t *r, uint8_t enc, uintptr_t data)
{
	uintptr_t at = (uintptr_t)r->p, v;
	if (enc == 0xff)
		return 0;
	switch (enc & 0x0f) {
	case 0x00: v = (uintptr_t)rd_fixed(r, 8); break;
	case 0x01: v = (uintptr_t)rd_uleb(r); break;
	case 0x02: v = (uintptr_t)rd_fixed(r, 2); break;
	case 0x03: v = (uintptr_t)rd_fixed(r, 4); break;
	case 0x04: v = (uintptr_t)rd_fixed(r, 8); break;
	case 0x09: v = (uintptr_t)rd_sleb(r); break;
	case 0x0a: v = (uintptr_t)(int64_t)(int16_t)rd_fixed(r, 2); break;
	case 0x0b: v = (uintptr_t)(int64_t)(int32_t)rd_fixed(r, 4); break;
	case 0x0c: v = (uintptr_t)rd_fixed(r, 8); break;
	default: r->bad = true; return 0;
	}
	switch (enc & 0x70) {
	case 0x00: return v;
	case 0x10: return v + at;
	case 0x30: return v + data;
	default: r->bad = true; return 0;
	}
}

/* The FDE of the code at `pc` (a return address minus one), found through
 * the object's .eh_frame_hdr search table. NULL if there is none or the
 * table is not the usual sorted datarel sdata4 one. */
static const uint8_t *fde_find(uintptr_t pc, bool *perm)
{
	struct dl_find_object fo;
	if (find_object((void *)pc, &fo) != 0 || fo.dlfo_eh_frame == NULL)
		return NULL;
	*perm = false;
	for (unsigned i = 0; i < UNW_PERM_OBJECTS; i++)
		if (unw_perm[i] != NULL && (void *)fo.dlfo_link_map == unw_perm[i])
			*perm = true;
	const uint8_t *hdr = fo.dlfo_eh_frame;
	if (hdr[0] != 1 || hdr[3] != 0x3b)
		return NULL;
	rd_t r = {hdr + 4, hdr + 4 + 2 * 8, false};
	rd_enc(&r, hdr[1], (uintptr_t)hdr);
	uintptr_t count = rd_enc(&r, hdr[2], (uintptr_t)hdr);
	if (r.bad || count == 0 || ((uintptr_t)r.p & 3) != 0)
		return NULL;
	const int32_t *tab = (const int32_t *)(const void *)r.p;
	/* The last entry whose start is at or below pc. */
	uintptr_t lo = 0, hi = count;
	while (hi - lo > 1) {
		uintptr_t mid = lo + (hi - lo) / 2;
		if ((uintptr_t)hdr + (intptr_t)tab[2 * mid] <= pc)
			lo = mid;
		else
			hi = mid;
	}
	if ((uintptr_t)hdr + (intptr_t)tab[2 * lo] > pc)
		return NULL;
	return hdr + (intptr_t)tab[2 * lo + 1];
}

/* The rules of the CFI interpreter for the registers that matter. */
enum { HOW_SAME, HOW_OFFSET, HOW_UNDEF, HOW_OTHER };
typedef struct cfi_regs {
	unsigned cfa_reg; /* DW_RSP, DW_RBP, or something else (not followed) */
	int64_t cfa_off;
	uint8_t rbp_how, ra_how;
	int64_t rbp_off, ra_off;
} cfi_regs_t;

#define CFI_STATE_DEPTH 8

static void cfi_set(cfi_regs_t *s, uint64_t reg, uint8_t how, int64_t off)
{
	if (reg == DW_RBP) {
		s->rbp_how = how;
		s->rbp_off = off;
	} else if (reg == DW_RA) {
		s->ra_how = how;
		s->ra_off = off;
	} else if (reg == DW_RSP) {
		/* A rule for rsp itself: not the x86-64 convention. */
		s->cfa_reg = ~0u;
	}
}

static void cfi_restore(cfi_regs_t *s, const cfi_regs_t *init, uint64_t reg)
{
	if (reg == DW_RBP) {
		s->rbp_how = init->rbp_how;
		s->rbp_off = init->rbp_off;
	} else if (reg == DW_RA) {
		s->ra_how = init->ra_how;
		s->ra_off = init->ra_off;
	}
}

/* Runs the CFI program in r (starting at address *loc) up to the row that
 * covers `target`. false on anything not understood. */
static bool cfi_run(rd_t *r, cfi_regs_t *s, const cfi_regs_t *init, uintptr_t *loc, uintptr_t target,
		    uint64_t code_align, int64_t data_align)
{
	cfi_regs_t stack[CFI_STATE_DEPTH];
	unsigned depth = 0;
	while (r->p < r->end && !r->bad) {
		uint8_t op = rd_u8(r);
		uint64_t reg, delta;
		switch (op >> 6) {
		case 1:
			delta = (uint64_t)(op & 0x3f);
			goto advance;
		case 2:
			cfi_set(s, op & 0x3f, HOW_OFFSET, (int64_t)rd_uleb(r) * data_align);
			continue;
		case 3:
			cfi_restore(s, init, op & 0x3f);
			continue;
		}
		switch (op) {
		case 0x00: /* nop */
			continue;
		case 0x02: delta = rd_fixed(r, 1); goto advance;
		case 0x03: delta = rd_fixed(r, 2); goto advance;
		case 0x04: delta = rd_fixed(r, 4); goto advance;
		case 0x05: /* offset_extended */
			reg = rd_uleb(r);
			cfi_set(s, reg, HOW_OFFSET, (int64_t)rd_uleb(r) * data_align);
			continue;
		case 0x06: /* restore_extended */
			cfi_restore(s, init, rd_uleb(r));
			continue;
		case 0x07: /* undefined */
			cfi_set(s, rd_uleb(r), HOW_UNDEF, 0);
			continue;
		case 0x08: /* same_value */
			cfi_set(s, rd_uleb(r), HOW_SAME, 0);
			continue;
		case 0x09: /* register */
			reg = rd_uleb(r);
			rd_uleb(r);
			cfi_set(s, reg, HOW_OTHER, 0);
			continue;
		case 0x0a: /* remember_state: the CFA rule with the registers */
			if (depth == CFI_STATE_DEPTH)
				return false;
			stack[depth++] = *s;
			continue;
		case 0x0b: /* restore_state */
			if (depth == 0)
				return false;
			*s = stack[--depth];
			continue;
		case 0x0c: /* def_cfa */
			s->cfa_reg = (unsigned)rd_uleb(r);
			s->cfa_off = (int64_t)rd_uleb(r);
			continue;
		case 0x0d: /* def_cfa_register */
			s->cfa_reg = (unsigned)rd_uleb(r);
			continue;
		case 0x0e: /* def_cfa_offset */
			s->cfa_off = (int64_t)rd_uleb(r);
			continue;
		case 0x0f: /* def_cfa_expression */
			return false;
		case 0x10: /* expression */
		case 0x16: /* val_expression */
			reg = rd_uleb(r);
			delta = rd_uleb(r);
			if (delta > (uint64_t)(r->end - r->p))
				return false;
			r->p += delta;
			cfi_set(s, reg, HOW_OTHER, 0);
			continue;
		case 0x11: /* offset_extended_sf */
			reg = rd_uleb(r);
			cfi_set(s, reg, HOW_OFFSET, rd_sleb(r) * data_align);
			continue;
		case 0x12: /* def_cfa_sf */
			s->cfa_reg = (unsigned)rd_uleb(r);
			s->cfa_off = rd_sleb(r) * data_align;
			continue;
		case 0x13: /* def_cfa_offset_sf */
			s->cfa_off = rd_sleb(r) * data_align;
			continue;
		case 0x14: /* val_offset */
			reg = rd_uleb(r);
			rd_uleb(r);
			cfi_set(s, reg, HOW_OTHER, 0);
			continue;
		case 0x15: /* val_offset_sf */
			reg = rd_uleb(r);
			rd_sleb(r);
			cfi_set(s, reg, HOW_OTHER, 0);
			continue;
		case 0x2e: /* GNU_args_size */
			rd_uleb(r);
			continue;
		case 0x2f: /* GNU_negative_offset_extended */
			reg = rd_uleb(r);
			cfi_set(s, reg, HOW_OFFSET, -(int64_t)rd_uleb(r) * data_align);
			continue;
		default: /* set_loc and the rest */
			return false;
		}
	advance:
		*loc += delta * code_align;
		if (*loc > target)
			return !r->bad;
	}
	return !r->bad;
}

/* The rule for return address pc, from its FDE, as a cache word without
 * the tag; 0 when the walker cannot follow it, and when no object's
 * .eh_frame_hdr covers pc: code outside the loaded objects (a JIT's) may
 * have registered its CFI with libgcc (__register_frame), which libgcc
 * then follows. */
static uint64_t rule_compute(uintptr_t pc)
{
	uintptr_t target = pc - 1; /* inside the call, not after it */
	bool perm = false;
	const uint8_t *fde = fde_find(target, &perm);
	if (fde == NULL)
		return 0;
	uint32_t len, cie_ptr, clen, cie_id;
	memcpy(&len, fde, 4);
	if (len == 0 || len == 0xffffffffu)
		return 0;
	memcpy(&cie_ptr, fde + 4, 4);
	const uint8_t *cie = fde + 4 - cie_ptr;
	memcpy(&clen, cie, 4);
	memcpy(&cie_id, cie + 4, 4);
	if (cie_ptr == 0 || clen == 0 || clen == 0xffffffffu || cie_id != 0)
		return 0;

	rd_t c = {cie + 8, cie + 4 + clen, false};
	uint8_t version = rd_u8(&c);
	if (version != 1 && version != 3)
		return 0;
	const char *aug = (const char *)c.p;
	size_t aug_len = strnlen(aug, (size_t)(c.end - c.p));
	if (aug_len == (size_t)(c.end - c.p))
		return 0;
	c.p += aug_len + 1;
	uint64_t code_align = rd_uleb(&c);
	int64_t data_align = rd_sleb(&c);
	uint64_t ra_reg = version == 1 ? rd_u8(&c) : rd_uleb(&c);
	if (ra_reg != DW_RA)
		return 0;
	uint8_t fde_enc = 0;
	bool has_z = aug[0] == 'z';
	if (has_z) {
		uint64_t n = rd_uleb(&c);
		if (c.bad || n > (uint64_t)(c.end - c.p))
			return 0;
		rd_t a = {c.p, c.p + n, false};
		for (const char *q = aug + 1; *q; q++) {
			if (*q == 'R') {
				fde_enc = rd_u8(&a);
			} else if (*q == 'L') {
				rd_u8(&a);
			} else if (*q == 'P') {
				uint8_t penc = rd_u8(&a);
				rd_enc(&a, penc & 0x7f, 0); /* skipped, never followed */
			} else {
				return 0; /* S (a signal frame) and the rest */
			}
		}
		if (a.bad)
			return 0;
		c.p += n;
	} else if (aug[0] != '\0') {
		return 0;
	}
	if (c.bad)
		return 0;

	rd_t f = {fde + 8, fde + 4 + len, false};
	uintptr_t start = rd_enc(&f, fde_enc, 0);
	uintptr_t range = rd_enc(&f, fde_enc & 0x0f, 0);
	if (has_z) {
		uint64_t n = rd_uleb(&f);
		if (n > (uint64_t)(f.end - f.p))
			return 0;
		f.p += n;
	}
	if (f.bad)
		return 0;
	if (target < start || target - start >= range)
		return 0;

	cfi_regs_t init = {DW_RSP, 8, HOW_SAME, HOW_SAME, 0, 0}, s;
	uintptr_t loc = start;
	if (!cfi_run(&c, &init, &init, &loc, target, code_align, data_align))
		return 0;
	s = init;
	loc = start;
	if (!cfi_run(&f, &s, &init, &loc, target, code_align, data_align))
		return 0;

	uint64_t flags = RULE_VALID | (perm ? RULE_PERM : 0);
	if (s.ra_how == HOW_UNDEF)
		return flags | RULE_END;
	if ((s.cfa_reg != DW_RSP && s.cfa_reg != DW_RBP) || s.cfa_off < 8 || s.cfa_off > 0x7fff ||
	    (s.cfa_off & 7) != 0 || s.ra_how != HOW_OFFSET || s.ra_off != -8)
		return 0;
	uint64_t w = flags | (uint64_t)s.cfa_off;
	if (s.cfa_reg == DW_RBP)
		w |= RULE_CFA_RBP;
	if (s.rbp_how == HOW_OFFSET) {
		if (s.rbp_off > -16 || s.rbp_off < -8 * 255 || (s.rbp_off & 7) != 0)
			return 0;
		w |= (uint64_t)-s.rbp_off << 16;
	} else if (s.rbp_how == HOW_OTHER) {
		return 0;
	}
	return w;
}

/* ---------------------------------------------------------------------------
 * The walk
 * ------------------------------------------------------------------------- */
bool os_unwind_own_load(void)
{
	find_object_fn f = (find_object_fn)dlsym(RTLD_DEFAULT, "_dl_find_object");
	if (f == NULL)
		return false;
	/* The program's link map: the first of ld.so's list (dlopen(NULL)
	 * and dlinfo read a page of libc's not otherwise read, a page fault
	 * of every process with prof on); ld.so's, libc's and this library's
	 * from an address inside each. */
	unw_perm[0] = _r_debug.r_map;
	void *inside[UNW_PERM_OBJECTS - 1] = {(void *)f, (void *)dl_iterate_phdr, (void *)os_unwind_own_load};
	for (unsigned i = 0; i < UNW_PERM_OBJECTS - 1; i++) {
		struct dl_find_object fo;
		if (f(inside[i], &fo) == 0)
			unw_perm[i + 1] = fo.dlfo_link_map;
	}
	__atomic_store_n(&find_object, f, __ATOMIC_RELEASE);
	return true;
}

/* The top of the stack that sp is on (reads below it are inside the
 * stack), or 0. A glibc thread's stack ends below its thread control block
 * (static TLS, then the TCB the thread pointer points at, both inside the
 * stack mapping, even for a stack the program gave pthread_create); the
 * main thread's ends above __libc_stack_end (argc, argv, environ, auxv),
 * whose page is mapped. Any other stack (a coroutine's, sigaltstack's) is
 * not bounded here. */
static uintptr_t stack_top(uintptr_t sp)
{
	uintptr_t tp;
	__asm__("mov %%fs:0, %0" : "=r"(tp));
	if (sp < tp && tp - sp <= UNW_STACK_MAX)
		return tp;
	uintptr_t end = ((uintptr_t)__libc_stack_end | 4095) + 1;
	if (sp < end && end - sp <= UNW_STACK_MAX)
		return end;
	return 0;
}

static int subs_read(struct dl_phdr_info *info, size_t size, void *arg)
{
	if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
		*(unsigned long long *)arg = info->dlpi_subs;
	return 1; /* the first object says it: every one carries the counts */
}

/* The generation of this walk: glibc's count of unloaded objects. The
 * cache is cleared when it moved since the last clear. dl_iterate_phdr
 * takes ld.so's write lock (a recursive one, held only while the object
 * list changes and around callbacks) for one callback: about 60
 * instructions, allocation-free. */
static unsigned long long unw_generation(void)
{
	unsigned long long subs = 0;
	dl_iterate_phdr(subs_read, &subs);
	if (subs != __atomic_load_n(&unw_gen, __ATOMIC_ACQUIRE)) {
		for (unsigned i = 0; i < (1u << UNW_CACHE_BITS); i++)
			__atomic_store_n(&unw_cache[i], 0, __ATOMIC_RELAXED);
		__atomic_store_n(&unw_cache_pages, ~(uint32_t)0, __ATOMIC_RELAXED);
		__atomic_store_n(&unw_gen, subs, __ATOMIC_RELEASE);
	}
	return subs;
}

/* Notes in rec (if any) the read of the stack word at `at`, valued v. */
EBB_INLINE void rec_read(os_unwind_rec_t *rec, uintptr_t at, uintptr_t v)
{
	if (rec != NULL && rec->n < OS_UNWIND_REC_MAX) {
		rec->at[rec->n] = at;
		rec->val[rec->n++] = v;
	} else if (rec != NULL) {
		rec->n = OS_UNWIND_REC_NONE;
	}
}

__attribute__((no_sanitize("address", "thread"))) unsigned os_unwind_own(void **out, unsigned max, uintptr_t pc,
									  uintptr_t cfa, uintptr_t rbp,
									  os_unwind_rec_t *rec)
{
	if (__atomic_load_n(&find_object, __ATOMIC_ACQUIRE) == NULL)
		return 0;
	uintptr_t sp = cfa, top = stack_top(sp);
	if (top == 0 || (sp & 7) != 0)
		return 0;
	uint64_t gen = 4; /* not read yet */
	unsigned n = 0;
	bool rbp_start = true; /* rbp still holds the start's value */
	/* rec's entry of the read that rbp holds now (rbp_start false), its
	 * address tagged with bit 0 until a rule uses rbp: an rbp read that no
	 * CFA came from does not change the walk, and is left out of rec at
	 * the end (churn 16B-32K: 5 words to compare in a replay, then 3). */
	unsigned rbp_at = OS_UNWIND_REC_MAX;
	if (rec != NULL) {
		rec->top = top;
		rec->rbp = rbp;
		rec->rbp_used = false;
		rec->n = 0;
	}
	while (n < max && pc != 0) {
		out[n++] = (void *)pc;
		unsigned si = cache_slot(pc);
		uint64_t w = cache_get(pc, si);
		if ((w >> RULE_TAG_SHIFT) == (uint64_t)(pc >> 12) && !(w & RULE_PERM)) { /* never 0 for code */
			if (gen == 4) {
				/* It may clear the cache: w is read again. */
				gen = unw_generation() & 3;
				w = cache_get(pc, si);
			}
			if ((w >> RULE_GEN_SHIFT & 3) != gen)
				w = 0;
		}
		if ((w >> RULE_TAG_SHIFT) != (uint64_t)(pc >> 12)) {
			/* Read before the rule: one computed from an object
			 * closed after the read carries the older generation. */
			if (gen == 4)
				gen = unw_generation() & 3;
			if ((w = rule_compute(pc)) == 0)
				return 0;
			if ((pc >> 47) == 0)
				cache_put(si, w | (gen & 3) << RULE_GEN_SHIFT | (uint64_t)(pc >> 12) << RULE_TAG_SHIFT |
						      rule_home(si));
		}
		if (rec != NULL && !(w & RULE_PERM))
			rec->n = OS_UNWIND_REC_NONE; /* its rule may change (dlclose) */
		if (w & RULE_END)
			break;
		uintptr_t next = sp + RULE_CFA_OFF(w);
		if (w & RULE_CFA_RBP) {
			next = rbp + RULE_CFA_OFF(w);
			if (rec != NULL && rbp_start)
				rec->rbp_used = true;
			if (rec != NULL && !rbp_start && rbp_at < rec->n)
				rec->at[rbp_at] &= ~(uintptr_t)1;
			/* Aligned: rbp may hold anything (sp is aligned, and so
			 * is every offset of a rule). */
			if ((next & 7) != 0)
				return 0;
		}
		/* Above sp (next - sp - 1 wraps when not) by at most a frame,
		 * within the stack. Two branches: gcc made one of the three
		 * tests with flags and an or (3 instructions more a frame). */
		if (next - sp - 1 >= UNW_FRAME_MAX)
			return 0;
		if (next > top)
			return 0;
		if (RULE_RBP_BELOW(w) != 0) {
			uintptr_t at = next - RULE_RBP_BELOW(w);
			if (at < sp)
				return 0;
			rbp = *(const uintptr_t *)at;
			rbp_at = rec != NULL ? rec->n : 0;
			rec_read(rec, at | 1, rbp);
			rbp_start = false;
		}
		pc = *(const uintptr_t *)(next - 8);
		rec_read(rec, next - 8, pc);
		sp = next;
	}
	if (rec != NULL && rec->n != OS_UNWIND_REC_NONE) {
		unsigned k = 0;
		for (unsigned i = 0; i < rec->n; i++) {
			if (rec->at[i] & 1)
				continue;
			rec->at[k] = rec->at[i];
			rec->val[k++] = rec->val[i];
		}
		rec->n = k;
	}
	return n;
}

bool os_unwind_replay_other(const os_unwind_rec_t *rec, uintptr_t cfa)
{
	return stack_top(cfa) == rec->top && os_unwind_rec_reads_same(rec);
}

#else /* !UNW_OWN */

bool os_unwind_replay_other(const os_unwind_rec_t *rec, uintptr_t cfa)
{
	(void)rec;
	(void)cfa;
	return false;
}


bool os_unwind_own_load(void)
{
	return false;
}

unsigned os_unwind_own(void **out, unsigned max, uintptr_t pc, uintptr_t cfa, uintptr_t rbp, os_unwind_rec_t *rec)
{
	(void)rec;
	(void)out;
	(void)max;
	(void)pc;
	(void)cfa;
	(void)rbp;
	return 0;
}

#endif
