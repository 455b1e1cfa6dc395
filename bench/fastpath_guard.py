#!/usr/bin/env python3
"""fastpath_guard.py: fails when a malloc + free pair gets dearer (issue 13).

Counts the instructions per malloc + free pair of every scenario listed in
bench/fastpath.expected (the same-slot thread-cache hit, and batches of
100 000 blocks freed in random and in reverse order, which go through refills
and flushes) as bench/runner.py's measure_fastpath does: callgrind on
bench_fastpath at two loop lengths, difference over difference, the harness
alone measured with --null=1 and subtracted. A scenario more than 5% above
its expected count fails the test; one below it passes and says so, so the
file can be lowered in the same commit as the change that earned it. Every
line also prints the issue's goal for the scenario, so the gap stays in view.

Callgrind counts instructions exactly, but the counts only repeat if the
program takes the same path every run. Two things would make it wander:
- The process moving between CPUs: ebbmalloc picks its central list by
  sched_getcpu(), so a move in the middle of a batch turns some refills into
  cross-CPU ones (seen: +12 instructions per pair in one run of four). Each
  run is therefore pinned to one CPU; callgrind runs the program's threads
  one at a time anyway, so the pin changes nothing else.
- Timers: decay and the background thread act on wall-clock time, which
  under valgrind passes some 50 times faster per instruction than natively.
  With the pin they did not show in the counts on a quiet machine (5 runs
  of each batch scenario agreed within 0.03 per pair); on a heavily loaded
  one they did (a batch row 5-6% over, once), so a count over its limit is
  measured again and the lowest of at most three runs kept.

Usage: fastpath_guard.py --lib libebbmalloc.so --bench bench_fastpath
                         [--expected bench/fastpath.expected]
Exit status 0 pass, 1 over budget or no result, 77 no valgrind (ctest skip).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Loop lengths. For the batch scenarios they must be multiples of --batch
# (whole rounds): 100 000 and 200 000 are one and two rounds of the issue's
# 100 000 blocks, after the program's own warm-up round.
N1, N2 = 100000, 200000
TOLERANCE = 1.05
RETRIES = 2


def pin_one_cpu():
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def callgrind(prog, args, env, tmp):
    out = os.path.join(tmp, "cg.out")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, prog] + args,
                       env=env, capture_output=True, text=True, preexec_fn=pin_one_cpu)
    if r.returncode != 0:
        sys.exit("fastpath_guard: %s %s failed (%d): %s" % (prog, " ".join(args), r.returncode, r.stderr[-2000:]))
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
                         capture_output=True, text=True).stdout
    os.unlink(out)
    counts = {}
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(PROGRAM TOTALS|\S*?:(call_\w+))\s", line + " ")
        if m:
            key = "total" if m.group(2) == "PROGRAM TOTALS" else m.group(3)
            counts.setdefault(key, int(m.group(1).replace(",", "")))
    return counts


def per_pair(prog, args, env, tmp):
    a = callgrind(prog, ["--iterations=%d" % N1] + args, env, tmp)
    b = callgrind(prog, ["--iterations=%d" % N2] + args, env, tmp)
    per = {}
    for key, fn in (("pair", "total"), ("malloc", "call_malloc"), ("free", "call_free"),
                    ("malloc", "call_null_malloc"), ("free", "call_null_free")):
        if fn in a and fn in b:
            per[key] = (b[fn] - a[fn]) / float(N2 - N1)
    if "pair" not in per:
        sys.exit("fastpath_guard: callgrind_annotate output not understood")
    return per


def read_expected(path):
    """Lines 'name expected goal bench_fastpath-arguments...'; '#' starts a comment."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) < 4 or not all(w.startswith("--") for w in words[3:]):
                sys.exit("fastpath_guard: %s:%d: want 'name expected goal --arg...'" % (path, n))
            rows.append((words[0], float(words[1]), float(words[2]), words[3:]))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--expected", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       "fastpath.expected"))
    a = ap.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_annotate")):
        print("fastpath_guard: no valgrind, skipped")
        return 77
    base = dict(os.environ)
    base.pop("LD_PRELOAD", None)
    base.pop("EBB_OPTIONS", None)
    env = dict(base, LD_PRELOAD=os.path.abspath(a.lib))
    bad = []
    with tempfile.TemporaryDirectory(prefix="ebb-fastpath-") as tmp:
        for name, expected, goal, args in read_expected(a.expected):
            null = per_pair(a.bench, args + ["--null=1"], base, tmp)
            limit = expected * TOLERANCE
            # A count over the limit is measured again (at most RETRIES
            # times) and the lowest kept: the timers named above can only
            # add work to a run, never take any away, so the lowest run is
            # the one they disturbed least. Seen on a machine loaded 10-25
            # times over its CPUs: a batch row 5-6% over in one ctest run,
            # at its expected count again alone.
            for attempt in range(1 + RETRIES):
                got = per_pair(a.bench, args, env, tmp)
                if attempt == 0 or got["pair"] < best["pair"]:
                    best = got
                if best["pair"] - null["pair"] <= limit:
                    break
                print("fastpath %-11s %7.2f over the limit, measured again"
                      % (name, got["pair"] - null["pair"]))
            got = best
            pair = got["pair"] - null["pair"]
            m = got.get("malloc", 0) - null.get("malloc", 0)
            fr = got.get("free", 0) - null.get("free", 0)
            verdict = "ok" if pair <= limit else "OVER BUDGET"
            if pair <= expected - 1:
                verdict += " (below the expected count: lower it in %s)" % os.path.basename(a.expected)
            gap = ("%.0f above it" % (pair - goal)) if pair > goal else "met"
            print("fastpath %-11s %7.2f instructions per pair (malloc %.2f, free %.2f); expected %g, "
                  "limit %.2f: %s; issue 13's goal %g: %s"
                  % (name, pair, m, fr, expected, limit, verdict, goal, gap))
            sys.stdout.flush()
            if pair > limit:
                bad.append(name)
    if bad:
        print("fastpath_guard: over budget: %s" % ", ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
