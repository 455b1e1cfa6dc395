/* central.h: per-CPU central lists, one per (CPU, size class).
 *
 * A central list is where thread caches get blocks in batches (refill) and
 * give them back in batches (flush). It has two stores:
 *   transfer  whole batches ready to hand out: a lock-free stack of batch
 *             nodes, each an array of `batch` block addresses in the
 *             allocator's metadata (nothing is linked through a block);
 *             pushing or popping one is a copy and one CAS;
 *   spans     its partial spans: spans homed here that have free blocks,
 *             under the list's lock.
 * A refill pops a transfer batch or gathers a batch from partial spans;
 * when the list has neither, it takes a transfer batch of one of the next
 * few CPUs' lists (what consumers there flushed), and only then carves a new
 * span from the page heap (the batch asked for goes to the caller, further
 * whole batches of the new span into spare transfer nodes, the rest onto its
 * free list; a quarter of the batch if blocks came back to the list since its
 * last carve: CENTRAL_RETURNED). A refill of fewer blocks than a batch pops no batch whole: it
 * gathers from partial spans, then splits one of the list's batches (the
 * rest back to their spans), and its carve fills no transfer node, so that a
 * class's free blocks never wait in batches while its span count grows. A flush pushes whole batches while the list has a spare node;
 * the rest goes back to the blocks' own spans, under the home list's lock:
 * each block validated (its page's class and its bin mark; the block-start
 * test only for classes of several pages, release_blocks_in says why) and
 * chained with the blocks of its span that come right before it, the span's
 * fields written once per such run; a span whose blocks are then all free
 * goes back to the page heap at once.
 *
 * Transfer nodes: each list makes up to transfer_cap nodes, each the next
 * of its CPU slot's array (meta.c memory, resident once used, never
 * unmapped: a stale pointer to a node always reads a node), and owns them
 * from then on. A node is on exactly one of its list's two stacks (`full`
 * or `spare`), or held by the one thread that popped it. So a list never
 * keeps more than transfer_cap batches, and a node never moves to another
 * list: a steal pops another list's full node and pushes it back on that
 * list's spare stack. A stack head is one 64-bit word, top node index + 1
 * in the slot (0: empty) | node count << 16 | generation << 24, so a push
 * or pop is a single-word CAS (no CAS2), the generation
 * makes an ABA (pop A, pop B, push A between another thread's read and CAS)
 * fail the CAS, and the count read from the head is exact.
 *
 * The CPU id is only a hint (the thread may migrate right after reading it):
 * correctness comes from the CAS and the list's lock. A block flushed on CPU
 * j may sit in CPU j's transfer stack although its span is homed on CPU k;
 * when it leaves the transfer stack for its span, it goes to k's list, under
 * k's lock.
 *
 * Scaling: a thread touches a central list only once per batch (up to 32
 * blocks); the transfer heads and the span state of a list are on separate
 * cache lines, the lists of different CPUs share none; a span's blocks go
 * back to its home, so on 64 cores the lists are as contended as the threads
 * on one CPU make them, and the page heap (per CPU as well) only sees whole
 * spans. No transfer operation waits for a preempted thread.
 *
 * Locking: one lock per list for its spans (rank LOCK_RANK_CENTRAL); at most
 * one central lock is held at a time; no page heap call or system call under
 * it. The transfer stacks take no lock. */
#ifndef EBB_CORE_CENTRAL_H
#define EBB_CORE_CENTRAL_H

#include "core/runtime/atomic.h"
#include "core/base/config.h"
#include "core/blocks/size_class.h"
#include "core/pages/span.h"

EBB_BEGIN_DECLS

/* A transfer batch: `batch` block addresses, each checked (by free or by
 * its span) before it entered, each block carrying its bin mark. */
typedef struct transfer_node {
	uint32_t next; /* index + 1 of the node below on its stack, 0 at the bottom (atomic) */
	uint32_t pad_;
	void *blocks[]; /* batch addresses */
} transfer_node_t;

/* central_t.busy once a flush of a batch or more came to the list, until
 * central_drain clears it or a refill that carves reads it (central_refill,
 * which then carves a quarter of what it was asked for): blocks of the
 * class came back since the list's last carve, so it is not only growing. */
#define CENTRAL_RETURNED 3u

/* The head word of a transfer stack (central_t.full, .spare): top node
 * index + 1 in its slot (0: empty), 16 bits; node count, 8 bits;
 * generation, the other 40. */
#define TRANSFER_TOP(h) ((unsigned)((h) & 0xffffu))
#define TRANSFER_COUNT(h) ((unsigned)(((h) >> 16) & 0xffu))
#define TRANSFER_GEN_SHIFT 24

/* Most blocks a transfer node holds (size_class.c: batch <= 32), and the
 * bytes of every node, whatever its class's batch. */
#define TRANSFER_BATCH_MAX 32
#define TRANSFER_NODE_BYTES (sizeof(transfer_node_t) + TRANSFER_BATCH_MAX * sizeof(void *))

typedef struct central {
	/* --- transfer: lock-free, one cache line --- */
	uint64_t full;        /* stack of full batch nodes (head word, above) */
	uint64_t spare;       /* stack of empty nodes */
	uint32_t made;        /* nodes this list made so far, <= transfer_cap (atomic) */
	uint32_t busy;        /* 1 (a refill) or CENTRAL_RETURNED (a flush) since central_drain's 0 (atomic) */
	char *node_base;      /* its CPU slot's nodes (central_node_at; meta.c) */
	uint16_t cls;
	/* --- spans: under lock --- */
	ebb_lock_t lock EBB_ALIGNED(EBB_CACHELINE);
	/* spans homed here with free blocks; refills take the head. Written
	 * atomically: central_refill reads it without the lock. */
	span_t *partial;
	uint64_t spans;       /* spans homed here */
	uint64_t used_blocks; /* sum of `used` over those spans */
	uint64_t spans_carved, spans_returned;
	/* The stash: spans of a one-page class cut with the one a carve took
	 * (page_heap_alloc_n), not carved yet, linked through `next`, the next
	 * to carve first (descending addresses: the order single cuts from the
	 * run's tail would carve them). Each is CENTRAL, homed here and counted
	 * in `spans` (not in used_blocks: its blocks count as free), with every
	 * page untouched, without class and given back (given_back all its
	 * pages, withheld all its blocks, counted in central_purge.c's pages
	 * out, as central_carve_withhold(s, 0) would leave it); on no list.
	 * A refill carves it as a fresh span; the purge pass and ebb_trim give
	 * it back to the page heap whole, as purged runs. nstash: how many
	 * (written under the lock, read without it by the purge pass). */
	span_t *stash;
	uint32_t nstash;
} EBB_ALIGNED(EBB_CACHELINE) central_t;

/*
 * Node i of list c: node i of its CPU slot. A slot's lists take their nodes
 * from one array, each new node the next one (node_get), so the nodes made
 * lie side by side whatever their classes, and the pages of nodes resident
 * are those the nodes made fill. All nodes have the room of the largest
 * batch (TRANSFER_NODE_BYTES): a node's place is then its index times one
 * constant. With nodes at fixed places per list (each list's first 8 in
 * rows shared by the slot's classes, 7e74685, the rest in an array of the
 * list's own), bench/xmalloc kept 39 pages of nodes resident at t=1 and 59
 * at t=2 (two slots); side by side, the nodes made fill 16 and 35 pages
 * (bench/peak_probe with a walk of the metadata). Peak RSS, interleaved
 * pairs, median of the ratios: xmalloc t=1 0.988, t=2 0.993 (21 pairs
 * each), churn 16 B-1 KiB ws=10K t=2 0.992 (15).
 */
static inline transfer_node_t *central_node_at(const central_t *c, unsigned i)
{
	return (transfer_node_t *)(c->node_base + (size_t)i * TRANSFER_NODE_BYTES);
}

typedef struct central_class_stats {
	uint64_t spans;           /* spans of the class */
	uint64_t used_blocks;     /* blocks out of their spans */
	uint64_t transfer_blocks; /* of those, blocks on transfer stacks */
} central_class_stats_t;

/* Bit 31 of a CENTRAL span's `used`: set exactly while the span is off its
 * home's partial list with no free and no withheld block (full), clear on
 * the list; the low bits count its blocks out either way. A run's return
 * subtracts its n blocks from `used` and branches once on the signed result
 * (used_sub_reaches: old <= n as int32): that one branch catches a span now
 * empty, one given more than it had out (the subtraction wrapped), and one
 * that was full (negative), which must join the partial list; the branch
 * not taken needs no test of in_partial. Every reader of `used` of a span
 * that may be full masks the bit (span_free_count); a span on the partial
 * list, the only kind a refill takes from, never has it. */
#define CENTRAL_USED_FULL 0x80000000u

/* The blocks on s's free list (s CENTRAL; its home's lock held, or s the
 * caller's alone): what span.h's identity leaves. Not stored, so that a
 * block's return to its span writes no count but `used` (bench/fastpath's
 * random batch, where nearly every returned block closes a run of its own:
 * one instruction a block). */
static inline uint32_t span_free_count(const span_t *s)
{
	return (uint32_t)size_classes[s->cls].blocks - (s->used & ~CENTRAL_USED_FULL) - s->u.central.withheld -
	       s->u.central.lost;
}

/* Maps the lists of every possible CPU; a list (one class of one CPU slot)
 * is written the first time a refill or flush uses it. false: no memory. */
bool central_init_all(void);

/* Up to `want` blocks of class cls for the calling thread, written to
 * out[0 .. n); a whole transfer batch if one is ready, use_transfer is set
 * and want >= batch. Every block carries its bin mark (freelist.h), which
 * the taker checks and clears as it hands each out. Returns n; 0 means the
 * kernel refused memory (errno ENOMEM). Any thread. out[] may be the slots
 * of the caller's bin, half filled until this returns: nothing in here may
 * allocate on the calling thread (so no page-heap dirty hook, which may
 * start a thread: refill_split_batch holds it). */
unsigned central_refill(unsigned cpu, unsigned cls, unsigned want, bool use_transfer, void **out);
/* central_refill(cpu, cls, want, true, out) for a thread cache's first
 * refills: while the page heaps hold dirty pages that fit a span of the
 * class (page_heap_growing false), the blocks come from new spans, not from
 * partial spans or transfer batches, whose blocks sit on lines where other
 * threads' blocks are live (central.c says why). errno ENOMEM as
 * central_refill. */
unsigned central_refill_fresh(unsigned cpu, unsigned cls, unsigned want, void **out);
/* Takes back `count` free blocks of class cls (addresses in blocks[], each
 * checked by free as a block start of a page of class cls, and carrying its
 * bin mark; the array is the allocator's, never the program's). The array
 * is lent: its slots are written while the call runs (the return to spans'
 * window sentinel) and hold what they held when it returns. Any thread. */
void central_flush(unsigned cpu, unsigned cls, void **blocks, unsigned count);
/* central_flush with blocks[count] lent as well (written while the call
 * runs, as it was when it returns), which spares the return to spans a
 * window for the last block: a thread cache's bin lends its next slot (a
 * block or its sentinel). */
void central_flush_spare(unsigned cpu, unsigned cls, void **blocks, unsigned count);
/* Returns the transfer batches of the lists of every CPU to their spans;
 * with only_idle, just of lists unused since the previous idle call. Returns
 * the blocks moved; *kept (if not NULL) tells whether a list in use kept
 * batches, which a later call may drain. */
size_t central_drain(bool only_idle, bool *kept);

/* Whether block p (of a CENTRAL span) is on its span's free list; takes the
 * home's lock. For double-free reports only: O(free blocks of the span). */
bool central_span_holds_free(void *p);

void central_stats(central_class_stats_t out[EBB_NUM_CLASSES], uint64_t *carved, uint64_t *returned);
/* Every list, for the passes that visit them all: i < central_list_count();
 * central_list_at is NULL for the lists of a slot never used (not set up:
 * they hold nothing and their lock is not initialised). */
unsigned central_list_count(void);
central_t *central_list_at(unsigned i);
/* s, homed on c, has all its blocks free: takes it off c (its partial list
 * and counts). Caller holds c's lock; then, without it, hands s to the page
 * heap (release_to_spans, and the purge pass for a span it was purging). */
void central_span_retire(central_t *c, span_t *s);

/* Pages given back inside spans (central_purge.c): free pages of partial
 * spans that still hold a live block go back to the kernel, their free
 * blocks withheld from the span's free list until a refill needs them. */
/* The pass, called once per drain interval: lists whose spans have not
 * changed for decay_ms (at least one interval), or every list if `all`.
 * No lock held. Returns the pages given back. */
size_t central_purge_tick(bool all);
/* Looks at every list: notes the program's changes (at each tick, and
 * right before a drain tick's central_drain, so that the pass after it,
 * central_purge_tick, tells the drain's change of a list from the
 * program's). No lock held. */
void central_purge_observe(void);
/* Whether the last pass left a list waiting to be idle long enough: the
 * caller should pass again within a drain interval. Any thread. */
bool central_purge_pending(void);
/* s (on its home's partial list) has an empty free list: relinks the
 * withheld blocks of its lowest given-back pages, enough for `want` blocks
 * if it has them, or returns false while its pages are being given back
 * (it cannot serve now). Caller holds s's home lock. */
bool central_purge_relink(span_t *s, unsigned want);
/* The lazy carve of a span of class cls whose pages read as zero: the
 * first block m >= n (at least 1) that starts at a page boundary, or the
 * class's blocks if none (carve them all). For the `sole` span of its list,
 * any block m >= n whose page boundary ends the pages the first n touch:
 * a class used a few blocks at a time faults in only those pages although
 * its blocks seldom start a page (central_carve_withhold marks the block
 * across the cut). Not for every span: a list that holds many refills them
 * a page at a time (central_purge_relink) at more instructions a block
 * (callgrind, bench_churn 16 B-32 KiB 300K ops ws=100 000: +11.7%). */
unsigned central_carve_cut(unsigned cls, unsigned n, bool sole);
/* s, just carved with blocks [0, m) (m from central_carve_cut, below the
 * class's blocks), still the carver's alone, its pages not yet given their
 * class: the pages from block m on count as given back (they were never
 * touched) and their blocks as withheld. Returns how many of the span's
 * first pages get the class now; the rest keep none, so that free()
 * rejects a block start there until a refill carves it. */
unsigned central_carve_withhold(span_t *s, unsigned m);
/* s leaves CENTRAL, all its blocks free, no central lock held and nobody
 * else able to reach it: its pages lose their class and go back to the
 * page heap, its given-back pages as purged runs (those a lazy carve never
 * carved as reading zero), the rest dirty. */
void central_purge_free_span(span_t *s);
/* c's stash (central_t) back to the page heap, as purged runs that read as
 * zero where the page heap said they did: the pages it held. Any thread, no
 * central lock held. */
size_t central_stash_release(central_t *c);
/* Every list's stash given back (central_stash_release): the pages. */
size_t central_stash_release_all(void);
/* Pages of spans in a stash, counted with the pages given back from inside
 * CENTRAL spans (central_purge_stats): added as a stash takes them,
 * subtracted as it gives them up. */
void central_purge_pages_out_add(uint64_t pages);
void central_purge_pages_out_sub(uint64_t pages);
/* Pages given back from inside CENTRAL spans now; madvise calls and bytes
 * given back since start. */
void central_purge_stats(uint64_t *pages_out, uint64_t *madvise_calls, uint64_t *bytes);
void central_purge_postfork_child(void);
void central_prefork(void);
void central_postfork_parent(void);
void central_postfork_child(void);

/* The invariant checker of the EBB_INVARIANTS build (central_check.c). */
#if EBB_INVARIANTS
/* Caller holds c's lock. Checks c's counters every time, its transfer
 * stacks (counts match the nodes, every address a block of c's class) and
 * its partial list span by span every CENTRAL_CHECK_EVERY calls (per thread)
 * or when `walk`. Aborts with a report on the first identity that fails. */
void central_check(const central_t *c, bool walk);
#define CENTRAL_CHECK(c) central_check((c), false)
#else
#define CENTRAL_CHECK(c) ((void)0)
#endif

EBB_END_DECLS

#endif /* EBB_CORE_CENTRAL_H */
