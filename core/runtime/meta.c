/* meta.c: the bump allocator of meta.h. */
#include "core/runtime/meta.h"

#include "core/runtime/atomic.h"
#include "core/base/util.h"
#include "os/os.h"

#define META_CHUNK ((size_t)1 << 20)

static ebb_lock_t meta_lock = EBB_LOCK_INITIALIZER_RANK(LOCK_RANK_META);
static char *meta_cur, *meta_end;
static uint64_t meta_mapped;

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
