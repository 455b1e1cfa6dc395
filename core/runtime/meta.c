/* meta.c: the bump allocator of meta.h. */
#include "core/runtime/meta.h"

#include "core/runtime/atomic.h"
#include "core/base/util.h"
#include "os/os.h"

#define META_CHUNK ((size_t)1 << 20)

/* The chunks mapped so far, for the stats' resident count (meta_resident_bytes
 * asks the kernel which of their pages are resident: the users write their
 * memory piece by piece as it comes into use, the central lists and
 * transfer nodes of every CPU and each cache's slots, so most of a chunk
 * stays untouched). The table only grows; an entry is written before the
 * count that publishes it (release), so it is read without the lock. A
 * chunk beyond the table counts whole (an overstatement, never an under-
 * statement): 64 chunks are far beyond what a process maps here. */
#define META_CHUNKS_MAX 64
typedef struct {
	char *base;
	size_t len;
} meta_chunk_t;

static ebb_lock_t meta_lock = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_META);
static char *meta_cur, *meta_end;
static uint64_t meta_mapped;
static meta_chunk_t meta_chunks[META_CHUNKS_MAX];
static uint32_t meta_nchunks;
static uint64_t meta_untracked; /* bytes of chunks beyond the table */

/* Records a new chunk. Caller holds meta_lock. Out of line and listed after
 * the prof page in layout.ld: the page before it has no room. */
static EBB_NOINLINE void chunk_add(char *mem, size_t len)
{
	uint32_t n = meta_nchunks;
	if (n == META_CHUNKS_MAX) {
		atomic_add_u64(&meta_untracked, len);
		return;
	}
	meta_chunks[n].base = mem;
	meta_chunks[n].len = len;
	atomic_store_u32_release(&meta_nchunks, n + 1);
}

void *meta_alloc(size_t size, size_t align)
{
	lock_acquire(&meta_lock);
	uintptr_t p = util_align_up((uintptr_t)meta_cur, align);
	if (meta_cur == NULL || p + size > (uintptr_t)meta_end) {
		size_t chunk = size + align > META_CHUNK ? util_align_up(size + align, EBB_PAGE_SIZE) : META_CHUNK;
		/* Mapping under this lock is fine: it is taken only when a thread or
		 * a CPU's lists are first set up, never on an allocation path. */
		char *mem = os_map(chunk);
		if (mem == NULL) {
			lock_release(&meta_lock);
			return NULL;
		}
		atomic_add_u64(&meta_mapped, chunk);
		chunk_add(mem, chunk);
		meta_cur = mem;
		meta_end = mem + chunk;
		p = util_align_up((uintptr_t)meta_cur, align);
	}
	meta_cur = (char *)(p + size);
	lock_release(&meta_lock);
	return (void *)p;
}

uint64_t meta_mapped_bytes(void)
{
	return atomic_load_u64(&meta_mapped);
}

uint64_t meta_resident_bytes(void)
{
	uint32_t n = atomic_load_u32_acquire(&meta_nchunks);
	uint64_t bytes = atomic_load_u64(&meta_untracked);
	for (uint32_t i = 0; i < n; i++) {
		size_t pages = os_resident_pages(meta_chunks[i].base, meta_chunks[i].len);
		/* Unknown (the call failed): the chunk counts whole. */
		bytes += pages != (size_t)-1 ? (uint64_t)pages << EBB_PAGE_SHIFT : meta_chunks[i].len;
	}
	return bytes;
}

unsigned meta_chunk_ranges(void **base, size_t *len, unsigned max)
{
	uint32_t n = atomic_load_u32_acquire(&meta_nchunks);
	unsigned k = 0;
	for (; k < n && k < max; k++) {
		base[k] = meta_chunks[k].base;
		len[k] = meta_chunks[k].len;
	}
	return k;
}

void meta_prefork(void)
{
	lock_acquire(&meta_lock);
}

void meta_postfork_parent(void)
{
	lock_release(&meta_lock);
}

void meta_postfork_child(void)
{
	lock_init(&meta_lock);
}
