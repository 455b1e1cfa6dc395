/* superblock.c: mapping, registering and unmapping superblocks and huge
 * blocks; pointer-to-span lookup. */
#include "core/pages/superblock.h"
#include "core/pages/span_check.h"

#include <errno.h>
#include <string.h>

#include "core/base/track.h"
#include "core/base/util.h"
#include "core/runtime/atomic.h"
#include "core/runtime/report.h"
#include "os/os.h"

/* After all of .bss (EBB_BIG_ZERO): the 64 MiB array would otherwise split
 * the small globals onto pages of their own. Its upper half is read only
 * (superblock.h, registry_slot). */
uint8_t superblock_registry[EBB_REGISTRY_READ_ENTRIES] EBB_BIG_ZERO;

static superblock_totals_t sb_totals;

void superblock_totals_get(superblock_totals_t *out)
{
	out->mapped_bytes = atomic_load_u64(&sb_totals.mapped_bytes);
	out->header_bytes = atomic_load_u64(&sb_totals.header_bytes);
	out->count = atomic_load_u64(&sb_totals.count);
	out->mapped_total = atomic_load_u64(&sb_totals.mapped_total);
	out->unmapped_total = atomic_load_u64(&sb_totals.unmapped_total);
}

uint64_t superblock_mapped_bytes(void)
{
	return atomic_load_u64(&sb_totals.mapped_bytes);
}

static void registry_set(uintptr_t from, size_t bytes, uint8_t first_kind, uint8_t rest_kind)
{
	size_t slots = (bytes + EBB_SB_SIZE - 1) >> EBB_SB_SHIFT;
	for (size_t i = 0; i < slots; i++) {
		uint8_t *e = &superblock_registry[registry_index(from + (i << EBB_SB_SHIFT))];
		atomic_store_u8_release(e, i == 0 ? first_kind : rest_kind);
	}
}

static size_t header_bytes(void)
{
	return (size_t)EBB_SB_HEADER_PAGES << EBB_PAGE_SHIFT;
}

static void totals_add(size_t mapped, size_t header)
{
	atomic_add_u64(&sb_totals.mapped_bytes, mapped);
	atomic_add_u64(&sb_totals.header_bytes, header);
	atomic_add_u64(&sb_totals.count, 1);
	atomic_add_u64(&sb_totals.mapped_total, 1);
}

static void totals_sub(size_t mapped, size_t header)
{
	atomic_sub_u64(&sb_totals.mapped_bytes, mapped);
	atomic_sub_u64(&sb_totals.header_bytes, header);
	atomic_sub_u64(&sb_totals.count, 1);
	atomic_add_u64(&sb_totals.unmapped_total, 1);
}

/* ---------------------------------------------------------------------------
 * Lookup
 * ------------------------------------------------------------------------- */
span_t *superblock_span_lookup(const void *p, superblock_t **sb_out)
{
	uintptr_t a = (uintptr_t)p;
	if (a >> EBB_ADDR_BITS) /* outside the user address space: not ours */
		return NULL;
	uint8_t kind = atomic_load_u8_acquire(&superblock_registry[registry_index(a)]);
	superblock_t *sb;
	if (kind == REG_HEADER)
		return superblock_span_in(p, sb_out);
	if (kind == REG_HUGE) {
		sb = (superblock_t *)((uintptr_t)superblock_of(p) - EBB_SB_SIZE);
		superblock_check(sb, true);
		*sb_out = sb;
		return &sb->spans[0];
	}
	return NULL;
}

/* ---------------------------------------------------------------------------
 * Header validation (superblock.h: the guard)
 * ------------------------------------------------------------------------- */
/* One report: another thread that finds the same header (the background
 * thread's pass, a free) waits for the first report's abort. */
static uint32_t overwritten_reported;

void superblock_report_overwritten(const superblock_t *sb, const char *why)
{
	if (__atomic_exchange_n(&overwritten_reported, 1, __ATOMIC_ACQ_REL) != 0)
		for (;;)
			os_yield();
	char msg[200];
	report_format(msg, sizeof msg,
		      "allocator metadata overwritten (a buffer overflow from the block before it?): "
		      "superblock header %p: %s",
		      (const void *)sb, why);
	report_fatal(msg);
}

/* Why the header at sb is not one superblock_create or huge_create wrote,
 * or NULL. Looks at memory only once the registry says the slot is ours. */
static const char *header_why_bad(const superblock_t *sb, bool huge)
{
	uintptr_t a = (uintptr_t)sb;
	if ((a & (EBB_SB_SIZE - 1)) != 0 ||
	    atomic_load_u8_acquire(&superblock_registry[registry_index(a)]) != REG_HEADER)
		return "not a superblock of ours (a link in a header was overwritten?)";
	/* Eight words ORed: the red zone is zero unless something wrote it. */
	const uint64_t *g = (const uint64_t *)sb->guard;
	uint64_t any = 0;
	for (unsigned i = 0; i < EBB_SB_GUARD / sizeof(uint64_t); i++)
		any |= g[i];
	if (any != 0)
		return "its red zone was written";
	if (sb->magic != EBB_SB_MAGIC)
		return "bad magic";
	if (sb->huge != (huge ? 1 : 0))
		return huge ? "not a huge block's header" : "a huge block's header where a superblock's belongs";
	if (!huge) {
		if (sb->map_size != EBB_SB_SIZE || sb->first_page != EBB_SB_HEADER_PAGES ||
		    sb->usable_pages != EBB_SB_USABLE_PAGES)
			return "sizes differ from what was mapped";
		return NULL;
	}
	/* A huge block's size changes while it is mapped (huge_give_tail,
	 * huge_resize, under its owner), and a lookup of a stale pointer may
	 * check the header meanwhile: relaxed loads of what changes. The rest
	 * is written before the registry entry that published it (release,
	 * read with acquire) and never again while mapped. */
	const span_t *s = &sb->spans[0];
	size_t npages = span_load_npages(s);
	if (sb->first_page != EBB_SB_PAGES || sb->usable_pages != 0 || !span_load_huge(s) ||
	    span_load_page(s) != EBB_SB_PAGES || npages == 0 ||
	    atomic_load_u64(&sb->map_size) != header_bytes() + (npages << EBB_PAGE_SHIFT))
		return "sizes differ from what was mapped";
	return NULL;
}

void superblock_check(const superblock_t *sb, bool huge)
{
	const char *why = header_why_bad(sb, huge);
	if (EBB_UNLIKELY(why != NULL))
		superblock_report_overwritten(sb, why);
}

span_t *superblock_desc(superblock_t *sb, unsigned page)
{
	span_t *s = superblock_span_at(sb, page);
	unsigned hdr_page = (unsigned)(((uintptr_t)s - (uintptr_t)sb) >> EBB_PAGE_SHIFT);
	sb->desc_touched |= 1u << hdr_page;
	return s;
}

void superblock_map_span(superblock_t *sb, unsigned page, unsigned n, unsigned cls)
{
	EBB_ASSERT(page + n <= EBB_SB_PAGES);
	EBB_ASSERT(pmap_first(pmap_load(sb, page)) == page && pmap_first(pmap_load(sb, page + n - 1)) == page);
	/* Whole entries, one store each (pmap_set): the block test
	 * (core/blocks/block.h) of a stale pointer reads them with no lock. */
	for (unsigned i = 0; i < n; i++)
		pmap_set(sb, page + i, page, cls);
}

/* ---------------------------------------------------------------------------
 * Normal superblocks
 * ------------------------------------------------------------------------- */
/* Sets up the header of the mapping at sb (its header pages read as zero)
 * and registers it. */
static superblock_t *superblock_init(superblock_t *sb, struct page_heap *heap)
{
	/* Every header byte is zero, so only non-zero fields are set. */
	sb->magic = EBB_SB_MAGIC;
	sb->heap = heap;
	sb->map_size = EBB_SB_SIZE;
	sb->first_page = EBB_SB_HEADER_PAGES;
	sb->usable_pages = (uint16_t)(EBB_SB_PAGES - EBB_SB_HEADER_PAGES);
	sb->desc_touched = EBB_SB_FIXED_MASK; /* the pages holding the fixed fields and the map */
	totals_add(EBB_SB_SIZE, header_bytes());
	registry_set((uintptr_t)sb, EBB_SB_SIZE, REG_HEADER, REG_HEADER);
	return sb;
}

superblock_t *superblock_create(struct page_heap *heap)
{
	superblock_t *sb = os_map_aligned(EBB_SB_SIZE, EBB_SB_SIZE);
	if (sb == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	return superblock_init(sb, heap);
}

/* What huge_map leaves mapped of a huge block's header slot, from its
 * start: all of it, or only the header pages where the rest was given back
 * (THP "always"), which the kernel may since have placed another mapping in. */
static size_t huge_slot_bytes(void)
{
	return os_thp_always() ? header_bytes() : EBB_SB_SIZE;
}

/* The registry entries of huge block sb: its header slot, then its data
 * (`data` bytes from sb + 4 MiB). */
static void huge_register(superblock_t *sb, size_t data)
{
	registry_set((uintptr_t)sb, EBB_SB_SIZE, REG_HEADER, REG_HEADER);
	registry_set((uintptr_t)sb + EBB_SB_SIZE, data, REG_HUGE, REG_HUGE_CONT);
}

static void registry_clear_huge(superblock_t *sb)
{
	registry_set((uintptr_t)sb, EBB_SB_SIZE, REG_NONE, REG_NONE);
	registry_set((uintptr_t)sb + EBB_SB_SIZE, sb->map_size - header_bytes(), REG_NONE, REG_NONE);
}

bool superblock_destroy(superblock_t *sb)
{
	size_t size = sb->map_size;
	if (sb->huge) {
		size_t data = size - header_bytes();
		registry_clear_huge(sb);
		void *data_start = (char *)sb + EBB_SB_SIZE;
		/* With the slot mapped whole (huge_map), slot and data go in one
		 * call. */
		bool whole = huge_slot_bytes() == EBB_SB_SIZE;
		if (!os_unmap(whole ? (void *)sb : data_start, whole ? EBB_SB_SIZE + data : data)) {
			huge_register(sb, data);
			return false;
		}
		/* The data is gone; the header pages cannot fail to go in any way
		 * that matters (if they do, we leak 68 KiB of address space). */
		if (!whole)
			os_unmap(sb, header_bytes());
	} else {
		registry_set((uintptr_t)sb, EBB_SB_SIZE, REG_NONE, REG_NONE);
		if (!os_unmap(sb, size)) {
			registry_set((uintptr_t)sb, EBB_SB_SIZE, REG_HEADER, REG_HEADER);
			return false;
		}
	}
	totals_sub(size, header_bytes());
	return true;
}

/* ---------------------------------------------------------------------------
 * Huge blocks
 * ------------------------------------------------------------------------- */

/* Maps [header slot][data of data_bytes], the data aligned to `align` (a power
 * of two >= 4 MiB), and returns the header slot's start. The header slot
 * stays mapped whole: past the header pages it is never touched (no page of
 * it is resident) and its registry slot is the header's; unmapping that hole
 * cost a system call per huge mapping (bench large: 76 of 434 mapping
 * calls). Not where the kernel backs a first touch with a 2 MiB page (THP
 * "always"): the header's first write would make 2 MiB resident. Whoever
 * unmaps the header unmaps huge_slot_bytes() of the slot. */
static superblock_t *huge_map(size_t data_bytes, size_t align)
{
	size_t lead = align; /* data starts `align` bytes into the reservation */
	if (data_bytes > EBB_MAX_REQUEST + align) {
		errno = ENOMEM;
		return NULL;
	}
	char *base = os_map_aligned(lead + data_bytes, align);
	if (base == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	char *data = base + lead;
	char *hdr = data - EBB_SB_SIZE;
	if (hdr > base)
		os_unmap(base, (size_t)(hdr - base));
	if (huge_slot_bytes() != EBB_SB_SIZE)
		os_unmap(hdr + header_bytes(), EBB_SB_SIZE - header_bytes());
	return (superblock_t *)hdr;
}

static void huge_init_header(superblock_t *sb, struct page_heap *heap, size_t pages)
{
	sb->magic = EBB_SB_MAGIC;
	sb->heap = heap;
	atomic_store_u64(&sb->map_size, header_bytes() + (pages << EBB_PAGE_SHIFT)); /* header_why_bad */
	sb->first_page = EBB_SB_PAGES; /* no usable pages inside the header slot */
	sb->usable_pages = 0;
	sb->huge = 1;
	sb->desc_touched = EBB_SB_FIXED_MASK;
	span_t *s = &sb->spans[0];
	span_set_npages(s, pages);
	span_set_page(s, EBB_SB_PAGES);
	span_set_huge(s, 1);
	SPAN_SET_STATE(s, SPAN_LARGE, NULL);
	s->zeroed = 1;
}

/* A newly mapped huge block of `pages` pages at sb: its header, the totals,
 * the registry (last: a lookup finds it only once its header is set). */
static void huge_publish(superblock_t *sb, struct page_heap *heap, size_t pages)
{
	huge_init_header(sb, heap, pages);
	totals_add(sb->map_size, header_bytes());
	huge_register(sb, pages << EBB_PAGE_SHIFT);
}

superblock_t *huge_create(struct page_heap *heap, size_t pages, size_t align)
{
	if (align < EBB_SB_SIZE)
		align = EBB_SB_SIZE;
	size_t data = pages << EBB_PAGE_SHIFT;
	superblock_t *sb = huge_map(data, align);
	if (sb == NULL)
		return NULL;
	huge_publish(sb, heap, pages);
	return sb;
}

/* Header slots of huge blocks whose data moved away whole (a cached block
 * that gave all its pages to another, huge_give_tail; a block moved to grow,
 * huge_resize), kept mapped for the next huge block: the address space right
 * after a slot is where its data was, free as long as the kernel has not
 * placed another mapping there, so one mremap grows the slot in place into
 * a new block, where unmapping it and mapping a new one took three calls
 * (munmap, mmap, the trim of huge_map_new in huge.c). A slot holds its
 * EBB_SB_FIXED_PAGES header pages resident (they are zeroed at its reuse)
 * and is counted nowhere while spare. At most HUGE_SPARE_SLOTS; a slot
 * finds its place, and is taken, by one compare-and-swap: no lock, so
 * nothing can be held across a fork. */
#define HUGE_SPARE_SLOTS 4
static uint64_t huge_spare[HUGE_SPARE_SLOTS];

/* sb's slot, its data gone, registry entries cleared and totals taken off:
 * kept spare, or unmapped. Only a slot mapped whole (huge_map) adjoins its
 * data's address space. */
static void huge_slot_retire(superblock_t *sb)
{
	if (huge_slot_bytes() == EBB_SB_SIZE && sb->desc_touched == EBB_SB_FIXED_MASK) {
		for (unsigned i = 0; i < HUGE_SPARE_SLOTS; i++) {
			uint64_t expect = 0;
			if (atomic_cas_u64_value(&huge_spare[i], &expect, (uintptr_t)sb))
				return;
		}
	}
	os_unmap(sb, huge_slot_bytes());
}

void huge_spare_drain(void)
{
	for (unsigned i = 0; i < HUGE_SPARE_SLOTS; i++) {
		uint64_t v = atomic_load_u64(&huge_spare[i]);
		if (v != 0 && atomic_cas_u64_value(&huge_spare[i], &v, 0))
			os_unmap((void *)(uintptr_t)v, EBB_SB_SIZE);
	}
}

/* Bytes from `from` (4 MiB aligned) to the first slot of [from, from +
 * bytes) that the registry says is ours, or `bytes` if none is. A slot is
 * ours from its start (every superblock, header slot and huge block's data
 * starts on a slot), so an address space ours from there cannot be grown
 * into. A hint without a lock: a slot registered or cleared meanwhile only
 * turns a grow that would have failed into a call that fails, or the
 * reverse into a new mapping; what the kernel does decides. */
static size_t registry_free_bytes(uintptr_t from, size_t bytes)
{
	size_t slots = (bytes + EBB_SB_SIZE - 1) >> EBB_SB_SHIFT;
	for (size_t i = 0; i < slots; i++)
		if (atomic_load_u8_acquire(&superblock_registry[registry_index(from + (i << EBB_SB_SHIFT))]) !=
		    REG_NONE)
			return i << EBB_SB_SHIFT;
	return bytes;
}

/* Whether a spare slot lies in [from, end): mapped, but not in the
 * registry. */
static bool huge_spare_within(uintptr_t from, uintptr_t end)
{
	for (unsigned i = 0; i < HUGE_SPARE_SLOTS; i++) {
		uint64_t v = atomic_load_u64(&huge_spare[i]);
		if (v != 0 && v < end && v + EBB_SB_SIZE > from)
			return true;
	}
	return false;
}

superblock_t *huge_create_spare(struct page_heap *heap, size_t pages, size_t align)
{
	size_t data = pages << EBB_PAGE_SHIFT;
	if (align < EBB_SB_SIZE)
		align = EBB_SB_SIZE;
	if (pages == 0 || data > EBB_MAX_REQUEST)
		return NULL;
	for (unsigned i = 0; i < HUGE_SPARE_SLOTS; i++) {
		uint64_t v = atomic_load_u64(&huge_spare[i]);
		if (v == 0 || ((v + EBB_SB_SIZE) & (align - 1)) != 0 ||
		    !atomic_cas_u64_value(&huge_spare[i], &v, 0))
			continue;
		superblock_t *sb = (superblock_t *)(uintptr_t)v;
		/* Where the registry knows the space after the slot is one of
		 * our own mappings (bench large --mode=malloc-large: 153 of the
		 * 159 refused grows), no call is made for it: the slot cannot
		 * grow into a block while that mapping is there, and goes; the
		 * next spare may do. Refused by the kernel (another mapping of
		 * the program's is there, or an injected fault): the slot goes
		 * too, and the caller maps a new block. */
		if (registry_free_bytes(v + EBB_SB_SIZE, data) < data) {
			os_unmap(sb, EBB_SB_SIZE);
			continue;
		}
		int saved = errno;
		if (!os_remap_inplace(sb, EBB_SB_SIZE, EBB_SB_SIZE + data)) {
			os_unmap(sb, EBB_SB_SIZE);
			errno = saved;
			return NULL;
		}
		/* The old block's header: only its fixed pages were written
		 * (huge_slot_retire keeps no other), and a new header reads as
		 * zero before it is set up. */
		memset(sb, 0, (size_t)EBB_SB_FIXED_PAGES << EBB_PAGE_SHIFT);
		huge_publish(sb, heap, pages);
		return sb;
	}
	return NULL;
}

bool huge_grow_after(superblock_t *sb, size_t pages)
{
	span_t *s = &sb->spans[0];
	size_t old_data = (size_t)s->npages << EBB_PAGE_SHIFT;
	size_t new_data = pages << EBB_PAGE_SHIFT;
	char *data = (char *)sb + EBB_SB_SIZE;
	if (new_data <= old_data || new_data > EBB_MAX_REQUEST)
		return false;
	/* The slot the old data ends in is the block's own; the kernel says
	 * whether its rest is free. The slots after it the registry knows. */
	uintptr_t next = util_align_up((uintptr_t)data + old_data, (uintptr_t)EBB_SB_SIZE);
	uintptr_t end = (uintptr_t)data + new_data;
	if (end > next && (registry_free_bytes(next, end - next) < end - next || huge_spare_within(next, end)))
		return false;
	if (!os_map_at(data + old_data, new_data - old_data))
		return false;
	registry_set((uintptr_t)data, new_data, REG_HUGE, REG_HUGE_CONT);
	atomic_add_u64(&sb_totals.mapped_bytes, new_data - old_data);
	atomic_store_u64(&sb->map_size, header_bytes() + new_data);
	span_set_npages(s, pages);
	return true;
}

/* Sets the registry entries of the slots that data of `from` bytes covers
 * and data of `to` bytes (0 < to < from) does not. */
static void registry_set_tail(char *data, size_t to, size_t from, uint8_t kind)
{
	size_t keep = (to + EBB_SB_SIZE - 1) >> EBB_SB_SHIFT;
	size_t old = (from + EBB_SB_SIZE - 1) >> EBB_SB_SHIFT;
	for (size_t i = keep; i < old; i++)
		atomic_store_u8_release(
			&superblock_registry[registry_index((uintptr_t)data + (i << EBB_SB_SHIFT))], kind);
}

/* Moves the tail of a free huge block into another block being assembled;
 * same order as huge_resize below: registry entries cleared before the
 * kernel lets go of the address space, put back if it refuses. */
bool huge_give_tail(superblock_t *sb, size_t pages, void *to)
{
	span_t *s = &sb->spans[0];
	size_t old_data = (size_t)s->npages << EBB_PAGE_SHIFT;
	size_t give = pages << EBB_PAGE_SHIFT;
	char *data = (char *)sb + EBB_SB_SIZE;
	if (give == 0 || give > old_data)
		return false;
	if (give == old_data)
		registry_clear_huge(sb);
	else
		registry_set_tail(data, old_data - give, old_data, REG_NONE);
	if (!os_remap_to(data + (old_data - give), give, give, to)) {
		if (give == old_data) {
			huge_register(sb, old_data);
		} else {
			registry_set_tail(data, old_data - give, old_data, REG_HUGE_CONT);
		}
		return false;
	}
	/* The pages now back part of `to`, which was counted as mapped when it
	 * was reserved: only the donor's share goes from the totals. */
	atomic_sub_u64(&sb_totals.mapped_bytes, give);
	if (give == old_data) {
		totals_sub(header_bytes(), header_bytes());
		huge_slot_retire(sb);
		return true;
	}
	atomic_store_u64(&sb->map_size, header_bytes() + (old_data - give));
	span_set_npages(s, (old_data - give) >> EBB_PAGE_SHIFT);
	return true;
}

superblock_t *superblock_create_from(struct page_heap *heap, superblock_t *donor, bool *moved)
{
	superblock_t *sb = os_map_aligned(EBB_SB_SIZE, EBB_SB_SIZE);
	if (sb == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	*moved = donor->spans[0].npages >= EBB_SB_PAGES && huge_give_tail(donor, EBB_SB_PAGES, sb);
	/* The pages came from a freed huge block, which memcheck (the valgrind
	 * build) holds as no-access, and mremap moves that state with them: the
	 * new superblock is as addressable as a fresh mapping. */
	if (*moved)
		TRACK_DEFINED(sb, EBB_SB_SIZE);
	/* The header pages came with the rest and hold the donor's bytes; they
	 * must read as zero, and need not be resident until written. */
	if (*moved && !os_purge(sb, header_bytes(), false))
		memset(sb, 0, header_bytes());
	return superblock_init(sb, heap);
}

bool superblock_give(superblock_t *sb, void *to, bool half)
{
	size_t give = half ? EBB_SB_SIZE / 2 : EBB_SB_SIZE;
	/* Registry entries cleared before the kernel lets go of the address
	 * space (as superblock_destroy), put back if it refuses. */
	registry_set((uintptr_t)sb, EBB_SB_SIZE, REG_NONE, REG_NONE);
	if (!os_remap_to((char *)sb + (EBB_SB_SIZE - give), give, give, to)) {
		registry_set((uintptr_t)sb, EBB_SB_SIZE, REG_HEADER, REG_HEADER);
		return false;
	}
	/* The header half goes; if the kernel refuses, its 2 MiB of address
	 * space are lost, as nothing names them now. */
	if (half)
		os_unmap(sb, EBB_SB_SIZE - give);
	/* What moved backs part of `to`, counted as mapped when it was
	 * reserved: all of sb goes from the totals. */
	totals_sub(EBB_SB_SIZE, header_bytes());
	return true;
}

/* Address space goes back to the kernel only after its registry entries are
 * cleared: the moment it is unmapped another thread may map it and register
 * its own superblock there, which a late clear would wipe out. The block
 * itself belongs to the caller (it is being realloc'ed), so nobody else reads
 * its entries meanwhile. */
superblock_t *huge_resize(superblock_t *sb, size_t pages)
{
	span_t *s = &sb->spans[0];
	size_t old_data = (size_t)s->npages << EBB_PAGE_SHIFT;
	size_t new_data = pages << EBB_PAGE_SHIFT;
	char *data = (char *)sb + EBB_SB_SIZE;
	if (new_data == old_data)
		return sb;
	/* Grown in place only where the address space after it is free, as
	 * the registry and the kernel say (huge_grow_after): no failed call
	 * where the registry knows it is ours, and a block made of several
	 * mappings (huge_assemble) grows too, which mremap refuses (EFAULT). */
	if (new_data > old_data && huge_grow_after(sb, pages))
		return sb;
	if (new_data < old_data) {
		registry_set_tail(data, new_data, old_data, REG_NONE);
		if (!os_remap_inplace(data, old_data, new_data)) {
			registry_set_tail(data, new_data, old_data, REG_HUGE_CONT);
			return NULL;
		}
		atomic_sub_u64(&sb_totals.mapped_bytes, old_data - new_data);
		atomic_store_u64(&sb->map_size, header_bytes() + new_data);
		span_set_npages(s, pages);
		return sb;
	}
	/* Move: reserve a new aligned home of the new size and let the kernel
	 * move the old pages' tables over its front; no byte of data is copied,
	 * and the rest of the home stays the fresh mapping it is. The move is
	 * at the old size: the kernel grows only a range that is one mapping
	 * of its own, and a block assembled from the tails of freed ones
	 * (huge_give_tail) is several; moving and growing in one call failed
	 * for those, after the new home was mapped, cut and unmapped again. */
	superblock_t *nsb = huge_map(new_data, EBB_SB_SIZE);
	if (nsb == NULL)
		return NULL;
	char *ndata = (char *)nsb + EBB_SB_SIZE;
	registry_clear_huge(sb);
	if (!os_remap_to(data, old_data, old_data, ndata)) {
		huge_register(sb, old_data);
		os_unmap(nsb, huge_slot_bytes());
		os_unmap(ndata, new_data);
		return NULL;
	}
	huge_init_header(nsb, sb->heap, pages);
	nsb->spans[0].zeroed = s->zeroed;
	huge_register(nsb, new_data);
	atomic_add_u64(&sb_totals.mapped_bytes, new_data - old_data);
	atomic_add_u64(&sb_totals.mapped_total, 1);
	atomic_add_u64(&sb_totals.unmapped_total, 1);
	huge_slot_retire(sb);
	return nsb;
}
