/* superblock.h: superblocks (4 MiB aligned mappings with an out-of-band
 * header), huge blocks (one mapping per block, header in its own slot), and the
 * process-wide registry that says which 4 MiB slots of the address space are
 * ours.
 *
 * Pointer to span in O(1), no lock:
 *   registry[p >> 22] == REG_HEADER -> sb = p & ~(4 MiB - 1)
 *   e = sb->pmap[(p - sb) >> 12]     -> span = superblock_span_at(sb, pmap_first(e))
 * and for the free fast path, pmap_class(e) is the size class of a small
 * block (0 for anything else): one word, one line of the header per free.
 *
 * Layout of a normal superblock: [header: 17 pages][1007 usable pages].
 * Layout of a huge block: [header pages][unmapped hole to 4 MiB][data ...]:
 * the data starts at the next 4 MiB boundary, so it is aligned to 4 MiB, its
 * first slot is registered REG_HUGE (header one slot back) and further slots
 * REG_HUGE_CONT (never a block start).
 *
 * Who writes what: the registry entries, size, kind and owner heap are
 * written once by superblock_create/huge_create before the superblock is
 * published (inserted into a page heap under its lock) and cleared by
 * superblock_destroy after it has been taken out of every list; pmap and
 * spans[] follow the span ownership table (span.h); the page heap fields are
 * under the owning heap's lock. The lock-free lookup below may read pmap and
 * a descriptor's state, page, npages and huge (and a huge header's map_size)
 * while their writer changes them: those are written with relaxed stores and
 * read with relaxed loads (core/pages/span_check.h).
 *
 * What a lookup follows, and what keeps it mapped: the registry byte (read
 * first) says the slot is ours; for a pointer the program legitimately
 * holds, its block keeps the superblock (or huge block) mapped, so every
 * later read is of live memory. For a forged or stale pointer nothing does:
 * between the registry read and the header reads another thread may unmap
 * the superblock (page_heap_release, a huge block freed out of the cache),
 * and the lookup then faults instead of reporting. Within a mapped
 * superblock a stale value is still one the allocator wrote (a pmap entry's
 * first page is 0 or a usable page index, its class a valid class, both
 * from one store), so it names another descriptor of the same header, never
 * memory outside it. */
#ifndef EBB_CORE_SUPERBLOCK_H
#define EBB_CORE_SUPERBLOCK_H

#include <stddef.h>

#include "core/base/config.h"
#include "core/pages/span.h"
#include "core/pages/span_check.h"
#include "core/base/util.h"

EBB_BEGIN_DECLS

struct page_heap;

enum registry_kind {
	REG_NONE = 0,      /* not ours */
	REG_HEADER = 1,    /* a superblock header starts at this slot */
	REG_HUGE = 2,      /* a huge block starts here; header one slot back */
	REG_HUGE_CONT = 3, /* inside a huge block */
};

/* The header's guard. A header starts at a 4 MiB boundary, right after
 * whatever ends there: often the last page of another superblock, where a
 * 16-byte block can end exactly at the boundary, or the end of a huge block.
 * An overflow of that block lands here first. So:
 *   - the first EBB_SB_GUARD bytes are a red zone: zero from mmap, never
 *     written, read by nobody but superblock_check; an overflow of up to 64
 *     bytes overwrites nothing the allocator uses;
 *   - every slow path validates a header before it trusts a field of it
 *     (superblock_check: red zone still zero, magic, kind and sizes as
 *     created; page_heap.c then checks the heap pointer against its own table
 *     of page heaps) and reports the header's address and aborts if it fails.
 * Not a guard page: a PROT_NONE page would catch the write itself, but costs
 * an mprotect per superblock and splits each mapping into two VMAs (adjacent
 * superblocks now merge into one, and vm.max_map_count is 65530 by default),
 * for no more than the red zone catches. The red zone costs nothing: it sits
 * on header page 0, which is resident anyway; the fast paths read pmap at a
 * constant offset as before. What an overflow past the
 * checked part can still do is in docs/reliability.md. */
#define EBB_SB_GUARD 64

/* At most this many cold runs per superblock (superblock_t's cold_*): they
 * fill the room left on header page 0 before the page map. */
#define EBB_SB_COLD 8

typedef struct superblock {
	uint8_t guard[EBB_SB_GUARD]; /* red zone: zero, never written */
	/* immutable while mapped */
	uint64_t magic;
	struct page_heap *heap; /* owner */
	size_t map_size;        /* bytes mapped for this superblock (header + data) */
	uint16_t first_page;    /* first usable page */
	uint16_t usable_pages;  /* pages first_page .. first_page+usable_pages-1 */
	uint8_t huge;
	uint8_t all_purged; /* set by page_heap_release while it unmaps */
	uint8_t hdr_purging; /* under heap->lock: descriptor pages are being purged
			      * (page_heap_purge.c trim_descriptors); frees wait */
	uint8_t trim_queued; /* under heap->lock: on a decay pass's trim list */
	/* under heap->lock */
	uint32_t free_pages;          /* pages in free runs (any state) */
	uint64_t empty_since_ns;      /* when free_pages became usable_pages; 0 if not empty */
	struct superblock *next, *prev; /* heap's list of superblocks (or of cached huge blocks) */
	uint32_t desc_touched;        /* bitmask: descriptor pages written (resident metadata) */
	struct superblock *trim_next; /* decay pass's list of superblocks to trim */
	/* under heap->lock: the cold runs, purged runs whose first descriptor's
	 * header page was given back (page_heap_purge.c, trim_descriptors): it
	 * reads as zero (SPAN_NONE), so their page, size and zeroed flag are
	 * kept here instead. They are in no run list (no allocation finds
	 * them) but count in free_pages and the heap's purged_pages; the page
	 * heap makes them runs again (page_heap_warm) before anything of sb
	 * could merge with or walk them. */
	uint8_t cold_n;
	uint8_t cold_zeroed; /* bit i: cold run i reads as zero */
	uint16_t cold_page[EBB_SB_COLD];
	uint16_t cold_npages[EBB_SB_COLD];
	/* The page map: one entry per page (pmap_entry, below), written by a
	 * span's owner before its blocks are published. Its first page is valid
	 * on every page of CENTRAL, LARGE, ARENA and POOL spans and on the first
	 * and last page of free runs (boundary tags); its class is 0 on every
	 * page but those of CENTRAL spans that hold carved blocks. Own lines:
	 * the fields above are written under the heap lock, these are read by
	 * every free. */
	uint32_t pmap[EBB_SB_PAGES] EBB_ALIGNED(64);
	/* Descriptors of the usable pages: spans[page - EBB_SB_HEADER_PAGES]
	 * (superblock_span_at). The first ones share header page 1 with the end
	 * of the map, so an entirely free superblock (one run) needs only the
	 * EBB_SB_FIXED_PAGES resident; the rest of the header is purged with its
	 * last dirty run. A huge block uses spans[0] only. */
	span_t spans[EBB_SB_PAGES - 17];
} superblock_t;

#define EBB_SB_MAGIC 0x6562625f73625f31ull /* "ebb_sb_1" */
#define EBB_SB_HEADER_PAGES 17
#define EBB_SB_USABLE_PAGES (EBB_SB_PAGES - EBB_SB_HEADER_PAGES)

/* Header pages 0 .. EBB_SB_FIXED_PAGES-1 hold the fixed fields and the page
 * map (and the first descriptors): written when the superblock is made,
 * resident while it is mapped, never trimmed (page_heap_purge.c). */
#define EBB_SB_FIXED_PAGES 2
#define EBB_SB_FIXED_MASK ((1u << EBB_SB_FIXED_PAGES) - 1)

#ifndef __cplusplus
_Static_assert(sizeof(superblock_t) <= EBB_SB_HEADER_PAGES * EBB_PAGE_SIZE, "header fits its pages");
_Static_assert(offsetof(superblock_t, pmap) == 192, "the cold runs' table leaves the map where it was "
	       "(bench/sb_resident.py reads it there)");
_Static_assert(offsetof(superblock_t, spans) + sizeof(span_t) <= EBB_SB_FIXED_PAGES * EBB_PAGE_SIZE &&
	       offsetof(superblock_t, spans) > (EBB_SB_FIXED_PAGES - 1) * EBB_PAGE_SIZE,
	       "the map ends on the last fixed page, which holds the first descriptor too");
#endif

/* A page map entry: the page's class in bits 0-7 (0: no small block starts
 * on the page), the first page of its span in bits 12-21, as that page's
 * byte offset in the superblock (first << 12), and, for an entry written by
 * pmap_set, bits 22-31 of the superblock's own address in bits 22-31
 * (pmap_entry_in), zero elsewhere. So bits 12-31 are the low 32 bits of the
 * span's first byte, and the free fast path takes p's offset from it as
 * (uint32_t)p - (e without its class) (core/blocks/block.h,
 * block_offset_in): no mask to find p's offset in its superblock first. Only that fast path and the block
 * test (block_lookup) use the raw word; pmap_load drops the address bits,
 * and pmap_first and pmap_span_offset ignore them.
 *
 * One word, so a reader without a lock (free, the block test, a span
 * lookup) gets class and first page of the same write: every writer stores
 * the whole entry with one relaxed 32-bit store (pmap_set), never a byte or
 * a halfword of it, and every lock-free reader loads it once (pmap_peek) and
 * takes both fields from that value. An aligned 32-bit store and load are
 * single-copy atomic, so a racing reader sees the old entry or the new one,
 * each one the allocator wrote, never the class of one and the first page of
 * the other. Who may store: the span's owner (span.h), and the page heap
 * under its lock for the boundary tags of free runs and of the span it hands
 * out (class 0 there: free pages have none). The owner rewrites its tags
 * with the first page they already hold (superblock_map_span), so a
 * coalescing neighbour reading them under the heap lock sees the same first
 * page either way. */
#define EBB_PMAP_CLASS_MASK 0xffu
/* Bits 8-11: on the first page of a page-run block (a LARGE span, not
 * huge) of at most EBB_PMAP_RUN_MAX pages, its size in pages; 0 on every
 * other entry, and on that one once the block is freed (large.c writes and
 * clears them, pmap_set_run). The class there is 0, so the free fast path
 * and the block test ignore them; realloc reads them to keep a page run in
 * place with the same one load as a small block (api.c, realloc_impl_at),
 * instead of a branch between the two kinds that strings crossing 32 KiB
 * take unpredictably. */
#define EBB_PMAP_RUN_SHIFT 8
#define EBB_PMAP_RUN_MASK (0xfu << EBB_PMAP_RUN_SHIFT)
#define EBB_PMAP_RUN_MAX 15u
/* Bits 12-21: the span's first page. */
#define EBB_PMAP_FIRST_MASK ((uint32_t)(EBB_SB_PAGES - 1) << EBB_PAGE_SHIFT)

#ifndef __cplusplus
_Static_assert(EBB_NUM_CLASSES - 1 <= EBB_PMAP_CLASS_MASK, "a class fits the entry's byte");
_Static_assert(EBB_SB_SHIFT < 32, "a superblock offset fits the entry's low 32 bits");
#endif

/* The entry's fields that do not depend on where the superblock is: what
 * pmap_load returns. */
EBB_INLINE uint32_t pmap_entry(unsigned first, unsigned cls)
{
	return ((uint32_t)first << EBB_PAGE_SHIFT) | cls;
}

/* The entry as stored in sb's map: with sb's address bits. */
EBB_INLINE uint32_t pmap_entry_in(const superblock_t *sb, unsigned first, unsigned cls)
{
	return (uint32_t)(uintptr_t)sb | pmap_entry(first, cls);
}

EBB_INLINE unsigned pmap_first(uint32_t e)
{
	return (e & EBB_PMAP_FIRST_MASK) >> EBB_PAGE_SHIFT;
}

EBB_INLINE unsigned pmap_class(uint32_t e)
{
	return e & EBB_PMAP_CLASS_MASK;
}

/* Byte offset of the span's first page in the superblock. */
EBB_INLINE uint32_t pmap_span_offset(uint32_t e)
{
	return e & EBB_PMAP_FIRST_MASK;
}

/* The lock-free read of the fast paths (core/runtime/atomic.h's peek): the
 * raw word, address bits included. */
EBB_INLINE uint32_t pmap_peek(const superblock_t *sb, size_t page)
{
	return atomic_peek_u32(&sb->pmap[page]);
}

/* The same for p, given the registry slot of its superblock (p >> 22, see
 * registry_slot below): the word's address, sb + pmap + 4 * page, formed as
 * slot * (4 MiB - 4 KiB) + pmap + 4 * (p >> 12), since p >> 12 is slot *
 * 1024 + page. One multiply and a shift of a copy of p, where sb (a shift of
 * the slot) and the page (a copy, a mask and a shift of p) take one
 * instruction more. */
EBB_INLINE uint32_t pmap_peek_slot(size_t slot, const void *p)
{
	uintptr_t base;
#if defined(__x86_64__)
	/* gcc would multiply with two shifts, two copies and a sub */
	__asm__("imulq %2, %1, %0" : "=r"(base) : "r"(slot), "i"(EBB_SB_SIZE - EBB_PAGE_SIZE));
#else
	base = slot * (EBB_SB_SIZE - EBB_PAGE_SIZE);
#endif
	base += offsetof(superblock_t, pmap);
	const uint32_t *w = (const uint32_t *)base + ((uintptr_t)p >> EBB_PAGE_SHIFT);
	return atomic_peek_u32(w);
}

/* Off the fast paths (a checker, the page heap's coalescing): the entry
 * without its address bits, as pmap_entry builds it. */
EBB_INLINE uint32_t pmap_load(const superblock_t *sb, size_t page)
{
	return atomic_load_u32(&sb->pmap[page]) & (uint32_t)(EBB_SB_SIZE - 1);
}

/* The one way an entry is written: whole, one store (see above). */
EBB_INLINE void pmap_set(superblock_t *sb, unsigned page, unsigned first, unsigned cls)
{
	atomic_store_u32(&sb->pmap[page], pmap_entry_in(sb, first, cls));
}

/* The first entry of the page-run block s starting at `page` (class 0):
 * with its size in pages if it has at most EBB_PMAP_RUN_MAX, else without;
 * npages 0 clears it. Written by the block's owner only (large.c). */
EBB_INLINE void pmap_set_run(superblock_t *sb, unsigned page, size_t npages)
{
	uint32_t run = npages <= EBB_PMAP_RUN_MAX ? (uint32_t)npages << EBB_PMAP_RUN_SHIFT : 0;
	atomic_store_u32(&sb->pmap[page], pmap_entry_in(sb, page, 0) | run);
}

/* Gives page `page` class cls and keeps its first page; caller owns the
 * span (only its owner writes the entry then, so the load and the store
 * are not a race). */
EBB_INLINE void pmap_set_class(superblock_t *sb, unsigned page, unsigned cls)
{
	pmap_set(sb, page, pmap_first(pmap_load(sb, page)), cls);
}

/* The registry: one byte per 4 MiB slot of the 47-bit address space, in
 * .bss: 32 MiB of address space whose zero pages the kernel materializes only
 * where we write (one 4 KiB page covers 16 GiB of addresses), and as much
 * again after it that is never written and never made resident by a write: the
 * slots of the canonical kernel half (below). An address at or above 2^47
 * (outside the user address space: a tagged or non-canonical pointer) is
 * never ours; it is not masked into a slot, which would send the caller
 * through a pointer the CPU refuses. */
#define EBB_REGISTRY_READ_ENTRIES (2 * EBB_REGISTRY_ENTRIES)
extern uint8_t superblock_registry[EBB_REGISTRY_READ_ENTRIES];

EBB_INLINE size_t registry_index(uintptr_t p)
{
	return (p >> EBB_SB_SHIFT) & (EBB_REGISTRY_ENTRIES - 1);
}

/* The slot the registry is read at for p, or false if p is neither below
 * 2^47 nor at or above 2^64 - 2^47 (no slot: never ours). One instruction
 * tests the range and copies p: a signed multiply by 2^16 overflows exactly
 * when p, read as a signed number, is outside [-2^47, 2^47); its product then
 * holds p's low 48 bits on top, and shifted down to slot granularity they
 * give p >> 22 for a user address (< 2^25) and a slot of the never-written
 * upper half (2^25 .. 2^26 - 1) for a kernel-half address, which thus reads
 * REG_NONE. (A compare of p >> 22 against 2^25 is a copy, a shift, a compare
 * and a branch; this is a multiply, a branch and a shift: one instruction
 * fewer on the free fast path.) */
EBB_INLINE bool registry_slot(const void *p, size_t *slot)
{
	int64_t up;
	if (EBB_UNLIKELY(__builtin_mul_overflow((int64_t)(uintptr_t)p, (int64_t)1 << (64 - EBB_ADDR_BITS - 1),
						&up)))
		return false;
	*slot = (size_t)((uint64_t)up >> (64 - EBB_ADDR_BITS - 1 + EBB_SB_SHIFT));
	return true;
}

/* The registry byte of slot i (from registry_slot), read without a lock.
 * Writers store with release, and a pointer the program got from us was
 * published after the store that registered its slot, so a plain load sees
 * it; that load is one cmpb on the free fast path. Under TSan, which must see
 * every cross-thread access as atomic, it is an acquire load (the same
 * instruction on x86-64). */
EBB_INLINE uint8_t registry_at(size_t i)
{
#if EBB_TSAN
	return __atomic_load_n(&superblock_registry[i], __ATOMIC_ACQUIRE);
#else
	return superblock_registry[i];
#endif
}

/* The registry byte of p's slot; REG_NONE for an address without one. */
EBB_INLINE uint8_t registry_get(const void *p)
{
	size_t i;
	if (!registry_slot(p, &i))
		return REG_NONE;
	return registry_at(i);
}

EBB_INLINE superblock_t *superblock_of(const void *p)
{
	return (superblock_t *)((uintptr_t)p & ~(uintptr_t)(EBB_SB_SIZE - 1));
}

EBB_INLINE unsigned superblock_page_index(const void *p)
{
	return (unsigned)(((uintptr_t)p >> EBB_PAGE_SHIFT) & (EBB_SB_PAGES - 1));
}

EBB_INLINE void *superblock_page_addr(const superblock_t *sb, unsigned page)
{
	return (char *)sb + ((size_t)page << EBB_PAGE_SHIFT);
}

/* The span that contains p, or NULL if p is not inside a live span of ours
 * (foreign pointer, header, stale page of a free run). Any thread, no lock;
 * the answer is exact for pointers the program legitimately holds. For huge
 * blocks, p must be the block's start. */
span_t *superblock_span_lookup(const void *p, superblock_t **sb_out);

/* Validates the header of sb (guard, magic, registry entry, kind and sizes
 * as created: huge or not as `huge` says) before a slow path trusts it;
 * reports "allocator metadata overwritten" with sb's address and aborts if
 * it fails, whatever on_error says. Reads only fields written when sb was
 * made (and, for a huge block, by its owner as it resizes it), so whoever may
 * use sb can call it without a lock. The heap pointer is checked by
 * page_heap.c, which owns the table of heaps. */
void superblock_check(const superblock_t *sb, bool huge);
/* The report of superblock_check, for the checks other modules make. */
EBB_NORETURN void superblock_report_overwritten(const superblock_t *sb, const char *why);

/* Index of sb's cold run that starts at `page`, or -1. Caller holds the
 * heap lock. */
EBB_INLINE int superblock_cold_find(const superblock_t *sb, unsigned page)
{
	for (unsigned i = 0; i < sb->cold_n; i++)
		if (sb->cold_page[i] == page)
			return (int)i;
	return -1;
}

/* Descriptor of the span or run that starts at usable page `page`. */
EBB_INLINE span_t *superblock_span_at(superblock_t *sb, size_t page)
{
	return &sb->spans[page - EBB_SB_HEADER_PAGES];
}

/* Address of a span's first byte. For whoever owns s or holds its heap's
 * lock (plain loads: the refill path asks it per batch). */
EBB_INLINE void *span_start(const superblock_t *sb, const span_t *s)
{
	if (EBB_UNLIKELY(s->huge))
		return (char *)sb + EBB_SB_SIZE;
	return superblock_page_addr(sb, s->page);
}

/* The same for a lock-free lookup, which may read s while its owner
 * rewrites it (relaxed loads, core/pages/span_check.h). */
EBB_INLINE void *span_start_seen(const superblock_t *sb, const span_t *s)
{
	if (EBB_UNLIKELY(span_load_huge(s)))
		return (char *)sb + EBB_SB_SIZE;
	return superblock_page_addr(sb, span_load_page(s));
}

EBB_INLINE superblock_t *span_superblock(const span_t *s)
{
	return superblock_of(s);
}

/* Descriptor at page index `page`: records that its page of the header is
 * now in use (for the resident-metadata figure). Caller owns the span. */
span_t *superblock_desc(superblock_t *sb, unsigned page);

/* The span of a normal superblock that contains p, or NULL; p's registry
 * slot holds REG_HEADER (the caller has read it). The bounds are constants,
 * not read from the header (an overflow from the slot before may have
 * written it); the pmap of a huge block's header slot is all zero and
 * names no span. Inline for the pool's free fast path; superblock_span_lookup
 * is this plus the registry read and huge blocks (declared above). */
EBB_INLINE span_t *superblock_span_in(const void *p, superblock_t **sb_out)
{
	superblock_t *sb = superblock_of(p);
	unsigned page = superblock_page_index(p);
	if (page < EBB_SB_HEADER_PAGES)
		return NULL;
	/* Relaxed loads, each read once (core/runtime/atomic.h's peek): the
	 * owner of the span p names may be rewriting these right now. */
	unsigned first = pmap_first(pmap_peek(sb, page));
	if (first < EBB_SB_HEADER_PAGES || first > page)
		return NULL;
	span_t *s = superblock_span_at(sb, first);
	if (atomic_peek_u8(&s->state) == SPAN_NONE || page >= first + atomic_peek_u32(&s->npages))
		return NULL;
	*sb_out = sb;
	return s;
}

/* Sets the pmap entries of pages [page, page+n) to first page `page`, class
 * cls. The first and last entries (boundary tags) already name `page`: the
 * page heap wrote them under its lock when it handed the span out, and
 * coalescing may read a neighbour's tag while the neighbour's owner calls
 * this; it rewrites them with the same first page, so that reader sees
 * `page` before and after. Caller owns the span. */
void superblock_map_span(superblock_t *sb, unsigned page, unsigned n, unsigned cls);

/* Maps and registers a new normal superblock for `heap`. Its usable pages
 * are not yet in any list. NULL with errno ENOMEM if the kernel refuses. */
superblock_t *superblock_create(struct page_heap *heap);
/* Unregisters and unmaps. Caller has removed it from every list. false if
 * munmap failed (then the superblock stays registered and usable). */
bool superblock_destroy(superblock_t *sb);

/* Huge blocks: a superblock whose single span (spans[0], page 1024, huge=1)
 * covers `pages` pages starting at sb + 4 MiB (aligned to `align` if that is
 * larger than 4 MiB). NULL with ENOMEM on failure. */
superblock_t *huge_create(struct page_heap *heap, size_t pages, size_t align);
/* The same from a spare header slot (one whose block's data moved away
 * whole, superblock.c says when) whose data would be aligned to `align`,
 * grown in place by one mremap; NULL if there is none or it could not grow
 * (errno untouched: the caller maps a new block). */
superblock_t *huge_create_spare(struct page_heap *heap, size_t pages, size_t align);
/* Unmaps every spare header slot: when a page heap's release pass has let
 * its last cached huge block go by age, at a trim of everything, and in
 * tests (which start from none). */
void huge_spare_drain(void);
/* Resizes a huge block in place (a grow: huge_grow_after; a shrink: mremap)
 * or by moving its pages to a new mapping without copying; returns the
 * (possibly new) superblock or NULL if neither worked (the old block is
 * untouched). */
superblock_t *huge_resize(superblock_t *sb, size_t pages);

/* Grows huge block sb (caller owns it, out of every list) to `pages` where
 * it is: fresh pages mapped right after its data, as one mapping with it
 * where the kernel merges them, whatever mappings its data is made of
 * (mremap grows only one). false, sb untouched, if the address space there
 * is not free: the registry is asked first (no call where it is ours), then
 * the kernel, which maps nothing over another mapping. */
bool huge_grow_after(superblock_t *sb, size_t pages);

/* Moves the last `pages` pages of the free huge block sb to `to` (inside a
 * mapping the caller reserved and owns), replacing what was mapped there:
 * the kernel moves the page tables, so resident pages stay resident and no
 * byte is copied. sb shrinks by as much, and is unmapped when that was all
 * of it. Caller owns sb (out of every list). false if the kernel refused
 * (nothing moved; on kernels before 6.17, when the tail spans two mappings). */
bool huge_give_tail(superblock_t *sb, size_t pages, void *to);

/* Moves the pages of sb, a normal superblock its heap let go of (out of
 * every list, its runs too), to `to` (inside a mapping the caller reserved
 * and owns), replacing what was mapped there: all 4 MiB, header pages
 * included, or with `half` only its last 2 MiB (usable pages, 2 MiB
 * aligned), the first half unmapped. Either way sb is no longer ours.
 * false if the kernel refused (nothing moved, sb registered again). */
bool superblock_give(superblock_t *sb, void *to, bool half);

/* Like superblock_create, but with the last 4 MiB of the free huge block
 * donor (caller owns it, out of every list) moved in by the kernel: the
 * usable pages are resident and hold old bytes, the header reads as zero.
 * *moved is false if the donor could not give them (the pages are fresh);
 * if it gave all it had, the donor is unmapped. NULL with ENOMEM. */
superblock_t *superblock_create_from(struct page_heap *heap, superblock_t *donor, bool *moved);

/* Process-wide totals of mappings (for stats), atomically updated. */
typedef struct superblock_totals {
	uint64_t mapped_bytes;   /* all superblock and huge mappings */
	uint64_t header_bytes;   /* header pages (metadata) */
	uint64_t count;          /* superblocks + huge blocks mapped now */
	uint64_t mapped_total;   /* ever mapped */
	uint64_t unmapped_total; /* ever unmapped */
} superblock_totals_t;
void superblock_totals_get(superblock_totals_t *out);
/* totals.mapped_bytes alone: one relaxed load (background.c reads it on a
 * malloc's slow path). */
uint64_t superblock_mapped_bytes(void);

EBB_END_DECLS

#endif /* EBB_CORE_SUPERBLOCK_H */
