/*
 * regrow: what giving memory back costs a program that comes back for it.
 *
 * One thread repeats --bursts times: allocate --bytes in blocks of mixed
 * sizes (16 B to 1 MiB, equal bytes per power of two), write every block,
 * free them all, then sleep --gap-ms. An allocator that kept the freed pages
 * serves the next burst from them; one that gave them back to the kernel
 * pays a page fault (and the kernel's zeroing) for each page again.
 *
 * Reports, over bursts 2.. (the first always faults), the median time of a
 * burst and the minor page faults per burst, and the resident set in the
 * middle of a gap: the two sides of the trade that decay_ms sets.
 */
#include "bench_util.h"
#include <sys/resource.h>

static uint64_t opt_bursts = 6;
static uint64_t opt_bytes = 256u << 20;
static uint64_t opt_gap = 300;
static uint64_t opt_seed = 42;

static const bu_opt options[] = {
	{ "bursts", BU_COUNT, &opt_bursts, "bursts (the first is not counted)" },
	{ "bytes", BU_SIZE, &opt_bytes, "bytes allocated by each burst" },
	{ "gap-ms", BU_COUNT, &opt_gap, "idle time between bursts, ms" },
	{ "seed", BU_COUNT, &opt_seed, "PRNG seed" },
	{ NULL, 0, NULL, NULL },
};

typedef struct block {
	struct block *next;
} block;

static uint64_t minor_faults(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)ru.ru_minflt;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	bu_parse_args(argc, argv,
		      "Repeated bursts with idle gaps: the page faults an allocator pays\n"
		      "again for memory it gave back during the gap, and the RSS it holds.",
		      options);
	BU_CHECK(opt_bursts >= 2, "--bursts must be >= 2");
	size_t n = (size_t)opt_bursts;
	uint64_t *ns = bu_map(n * sizeof(uint64_t));
	uint64_t *faults = bu_map(n * sizeof(uint64_t));
	uint64_t *gap_rss = bu_map(n * sizeof(uint64_t));
	bu_rng rng = bu_rng_make(opt_seed, 0);

	for (size_t i = 0; i < n; i++) {
		uint64_t f0 = minor_faults(), t0 = bu_now_ns();
		block *head = NULL;
		for (uint64_t got = 0; got < opt_bytes;) {
			size_t size = bu_rng_size_log(&rng, 16, 1u << 20);
			block *b = malloc(size);
			BU_CHECK(b, "malloc(%zu) failed", size);
			memset(b, (int)i, size);
			b->next = head;
			head = b;
			got += size;
		}
		while (head) {
			block *next = head->next;
			free(head);
			head = next;
		}
		ns[i] = bu_now_ns() - t0;
		faults[i] = minor_faults() - f0;
		bu_sleep_ms(opt_gap / 2);
		gap_rss[i] = bu_rss_kib();
		bu_sleep_ms(opt_gap - opt_gap / 2);
	}

	/* Medians over bursts 2.. */
	qsort(ns + 1, n - 1, sizeof(uint64_t), cmp_u64);
	qsort(faults + 1, n - 1, sizeof(uint64_t), cmp_u64);
	qsort(gap_rss + 1, n - 1, sizeof(uint64_t), cmp_u64);
	uint64_t med_ns = ns[1 + (n - 1) / 2], med_faults = faults[1 + (n - 1) / 2];
	uint64_t med_rss = gap_rss[1 + (n - 1) / 2];
	printf("# regrow: %zu bursts of %.0f MiB, gap %" PRIu64 " ms: burst %.1f ms, %" PRIu64
	       " page faults per burst (first: %" PRIu64 "), RSS mid-gap %.1f MiB\n",
	       n, opt_bytes / 1048576.0, opt_gap, med_ns / 1e6, med_faults, faults[0], med_rss / 1024.0);
	bu_result("gap_ms", "%" PRIu64, opt_gap);
	bu_result("seconds", "%.6f", med_ns / 1e9);
	bu_result("faults", "%" PRIu64, med_faults);
	bu_result("first_faults", "%" PRIu64, faults[0]);
	bu_result("gap_rss_kib", "%" PRIu64, med_rss);
	bu_result_print("regrow");
	return 0;
}
