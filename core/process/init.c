/* init.c: the start-up state machine (see init.h) and reactions to option
 * changes. */
#include "core/process/init.h"

#include "core/process/background.h"
#include "core/process/timeline.h"
#include "core/blocks/central.h"
#include "core/blocks/freelist.h"
#include "core/runtime/options.h"
#include "core/pages/page_heap.h"
#include "core/runtime/report.h"
#include "core/blocks/size_class.h"
#include "os/os.h"

uint32_t init_state;
/* atomic.h's per-thread lock count lives here because atomic.h has no .c of
 * its own and every build of core/ (the unit tests' too) links init.c. */
__thread unsigned lock_depth __attribute__((tls_model("initial-exec")));
uint64_t freelist_secret;
uint64_t freelist_mark;

/* Everything the allocation paths need; calls nothing that allocates. */
static bool init_run(void)
{
	size_t page = os_page_size();
	if (page != EBB_PAGE_SIZE) {
		report_warn("page size %zu is not supported (ebbmalloc needs 4096-byte pages); "
			    "every allocation will fail", page);
		return false;
	}
	options_init();
	/* The low bit set: a zero word (the commonest stray write into a freed
	 * block) decodes to a misaligned link, which the fast path rejects. */
	freelist_secret = os_random() | 1;
	freelist_mark = os_random();
	if (freelist_mark == 0 || freelist_mark == freelist_secret)
		freelist_mark = ~freelist_secret; /* even, so neither 0 nor the secret */
	size_class_init();
	os_event_init();
	page_heap_init_all();
	return central_init_all();
}

bool init_slow(void)
{
	for (;;) {
		uint32_t s = atomic_load_u32_acquire(&init_state);
		if (s == INIT_DONE)
			return true;
		if (s == INIT_FAILED)
			return false;
		if (s == INIT_NONE && atomic_cas_u32(&init_state, INIT_NONE, INIT_RUNNING))
			break;
		os_yield(); /* another thread is initializing */
	}
	bool ok = init_run();
	atomic_store_u32_release(&init_state, ok ? INIT_DONE : INIT_FAILED);
	if (ok) {
		/* The layers below learn of the end of start-up from here: they
		 * do not read init_state (they sit under this file). */
		page_heap_set_dirty_hook(background_on_dirty);
		timeline_enable();
		background_enable();
	}
	return ok;
}

void init_option_changed(enum option_id id)
{
	if (atomic_load_u32_acquire(&init_state) != INIT_DONE)
		return; /* read by init_run itself */
	switch (id) {
	case OPT_DECAY_MS:
		page_heap_decay_interval_changed(os_now_ns());
		break;
	case OPT_BACKGROUND_THREAD:
	case OPT_STATS_INTERVAL_MS: /* the next row may be due sooner than its sleep ends */
		background_option_changed();
		break;
	default:
		break;
	}
}
