#!/usr/bin/env python3
"""fastpath_guard.py: fails when the thread-cache hit gets dearer (issue 13).

Counts the instructions of a same-slot malloc + free pair as bench/runner.py's
measure_fastpath does (callgrind on bench_fastpath at two loop lengths,
difference over difference, the harness alone measured with --null=1 and
subtracted) and compares them with the figures checked in beside it in
bench/fastpath.expected. A pair more than 5% above its expected count fails
the test; one below it passes and says so, so the file can be lowered in the
same commit as the change that earned it. Callgrind counts are exact, so the
result does not depend on the machine's load.

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

N1, N2 = 100000, 200000  # the runner's loop lengths
TOLERANCE = 1.05


def callgrind(prog, args, env, tmp):
    out = os.path.join(tmp, "cg.out")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, prog] + args,
                       env=env, capture_output=True, text=True)
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
    """Lines 'size pair' (e.g. '64 62'); '#' starts a comment."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if line:
                rows.append((int(line[0]), float(line[1])))
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
    bad = []
    with tempfile.TemporaryDirectory(prefix="ebb-fastpath-") as tmp:
        for size, expected in read_expected(a.expected):
            null = per_pair(a.bench, ["--size=%d" % size, "--null=1"], base, tmp)
            env = dict(base, LD_PRELOAD=os.path.abspath(a.lib))
            got = per_pair(a.bench, ["--size=%d" % size], env, tmp)
            pair = got["pair"] - null["pair"]
            m = got.get("malloc", 0) - null.get("malloc", 0)
            fr = got.get("free", 0) - null.get("free", 0)
            limit = expected * TOLERANCE
            verdict = "ok" if pair <= limit else "OVER BUDGET"
            if pair <= expected - 1:
                verdict += " (below the expected count: lower %s)" % os.path.basename(a.expected)
            print("fastpath %d B: %.2f instructions per pair (malloc %.2f, free %.2f); expected %.0f, "
                  "limit %.2f: %s" % (size, pair, m, fr, expected, limit, verdict))
            if pair > limit:
                bad.append(size)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
