#!/usr/bin/python3
"""Allocation-heavy Python workload for the benchmark suite.

A few threads each build large dicts and lists of small objects (strings,
tuples, ints, lists), sort them, transform them and drop them, round after
round. CPython allocates every object through its allocator: with
PYTHONMALLOC=malloc (as bench/run sets it) every one of those objects is a
malloc/free, so the run measures the malloc under LD_PRELOAD; with the default
pymalloc only objects above 512 bytes and the containers' item arrays reach
malloc.

The threads share the GIL, so they do not run Python code in parallel, but
they allocate and free from different OS threads and free each other's
objects when shared structures are dropped, which is what a threaded Python
server does to its allocator.

The work is fixed by the arguments, and the run prints a 'result:' line with
the elapsed seconds, the peak RSS (VmHWM of this process), and the CPU time
of the process over the same stretch (cpu_s, user plus system, all
threads; user_s; minflt, page faults): on a loaded machine the elapsed time
moves with the load (the threads wait for the CPU and for the GIL) far more
than the CPU time does.

The peak is not: with several threads it depends on how the GIL interleaves
them (how many rounds' dicts are alive at once), so it moves with the
machine's load and with the allocator's speed. Measured 2026-12-04 with
pymalloc, 5 runs per allocator: glibc 61-65 MiB, ebbmalloc 65-77. To compare
allocators' memory, run --threads=1 --rounds=4, which repeats to about 2%
(3 runs: glibc 29.8-30.0 MiB, ebbmalloc 32.6-33.2).
"""
import argparse
import random
import resource
import sys
import threading
import time


def peak_rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def one_round(rng, n, shared, lock):
    # A dict of string keys to small records, as a cache or an index.
    d = {}
    for i in range(n):
        key = "k%d-%x" % (i, rng.getrandbits(32))
        d[key] = (i, key.upper(), [i, i * 2, str(i)])
    # Sort by a derived key: builds a list of tuples and a temporary key list.
    items = sorted(d.items(), key=lambda kv: kv[1][1])
    # Transform: a list of new strings, then join them into one big string.
    texts = ["%s=%d" % (k, v[0]) for k, v in items[: n // 2]]
    blob = ",".join(texts)
    # Rebuild part of the data in another shape, and drop the rest.
    inverted = {v[1]: k for k, v in items[::3]}
    for k in list(d.keys())[::2]:
        del d[k]
    # Hand a slice to the shared pool (freed later by another thread).
    with lock:
        shared.append(items[: n // 8])
        if len(shared) > 4:
            shared.pop(0)
    return len(blob) + len(inverted) + len(d)


def worker(seed, n, rounds, shared, lock, out, idx):
    rng = random.Random(seed)
    total = 0
    for _ in range(rounds):
        total += one_round(rng, n, shared, lock)
    out[idx] = total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=4, help="threads [4]")
    ap.add_argument("--n", type=int, default=25000, help="entries per dict [25000]")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per thread [2]")
    ap.add_argument("--seed", type=int, default=42, help="PRNG seed [42]")
    args = ap.parse_args()

    shared, lock = [], threading.Lock()
    out = [0] * args.threads
    threads = [
        threading.Thread(target=worker, args=(args.seed + i, args.n, args.rounds, shared, lock, out, i))
        for i in range(args.threads)
    ]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.clear()
    secs = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    user = ru.ru_utime - ru0.ru_utime
    cpu = user + ru.ru_stime - ru0.ru_stime
    ops = args.threads * args.rounds * args.n
    print("# python: %d threads x %d rounds x %d entries in %.3f s, peak RSS %.1f MiB"
          % (args.threads, args.rounds, args.n, secs, peak_rss_kib() / 1024.0))
    print("result: bench=python threads=%d ops=%d seconds=%.6f ops_per_sec=%.1f checksum=%d peak_rss_kib=%d "
          "cpu_s=%.3f user_s=%.3f minflt=%d"
          % (args.threads, ops, secs, ops / secs if secs > 0 else 0.0, sum(out), peak_rss_kib(), cpu, user,
             ru.ru_minflt - ru0.ru_minflt))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
