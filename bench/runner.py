#!/usr/bin/python3
"""The allocator comparison behind bench/run.

Builds ebbmalloc (Release) and the benchmark programs with CMake, installs the
peer allocators and tools from Debian when they are missing, runs every
selected benchmark row with every selected allocator (LD_PRELOAD; glibc is the
run without it), interleaved within each repetition, and reports medians, ratios
to the best allocator of each row, and their geometric means, as text, Markdown,
CSV and PNG charts under bench/results/.
"""
import argparse
import csv
import datetime
import glob
import math
import mmap
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
BUILD = os.path.join(REPO, "build")
RESULTS = os.path.join(BENCH_DIR, "results")
PYTHON = "/usr/bin/python3"

# ---------------------------------------------------------------------------
# Allocators
# ---------------------------------------------------------------------------


class Alloc:
    def __init__(self, name, lib=None, package=None, soname=None, builtin=True):
        self.name = name
        self.lib = lib          # path to preload; None means glibc (no preload)
        self.package = package  # Debian package that ships it
        self.soname = soname    # file name to look for in that package
        self.builtin = builtin
        self.env = {}
        self.skip = None        # reason, when it cannot be run
        self.notes = []
        self.timeouts = 0


def builtin_allocs():
    return [
        Alloc("glibc"),
        Alloc("jemalloc", package="libjemalloc2", soname="libjemalloc.so.2"),
        Alloc("tcmalloc", package="libtcmalloc-minimal4", soname="libtcmalloc_minimal.so.4"),
        Alloc("mimalloc", package="libmimalloc2.0", soname="libmimalloc.so.2"),
        Alloc("ebbmalloc"),
    ]


# ---------------------------------------------------------------------------
# Benchmarks and their rows
# ---------------------------------------------------------------------------

THREADS_FULL = [1, 2, 4, 8, 32]

BENCHMARKS = [
    ("xmalloc", "producer threads allocate, consumer threads free (cross-thread frees)"),
    ("larson", "server simulation: slots replaced at random, arrays handed to new threads"),
    ("cache-scratch", "passive false sharing: objects freed by another thread"),
    ("cache-thrash", "active false sharing: small objects of different threads"),
    ("churn", "thread-local random replacements over working sets of several sizes"),
    ("realloc", "strings and vectors grown by realloc"),
    ("large", "64 KiB to 32 MiB blocks, a working set that grows and shrinks"),
    ("aligned", "posix_memalign/aligned_alloc/memalign, alignments 64 B to 2 MiB"),
    ("request", "per-request pattern: 100 mixed-size blocks per request, all dropped at its end (malloc/free; "
                "under ebbmalloc the result line adds ebb_arena and ebb_pool, arena_speedup, pool_speedup)"),
    ("memreturn", "burst, free, idle: RSS over time (memory given back to the kernel)"),
    ("latency", "p50/p99/p99.9/max of single malloc and free calls"),
    ("fastpath", "instructions per malloc+free pair (callgrind): a thread-cache hit, and 100 000 blocks freed "
                 "in random or reverse order"),
    ("redis", "redis-server under redis-benchmark (SET/GET/LPUSH, loopback)"),
    ("python", "python3 building and sorting dicts and lists in threads"),
    ("sqlite", "sqlite3 filling a large page cache (blocks just above 4 KiB: size-class rounding)"),
    ("postgres", "PostgreSQL's initdb: peak RSS of its largest process (a backend's memory contexts)"),
]
BENCH_NAMES = [b for b, _ in BENCHMARKS]


class Row:
    """One line of a table: a benchmark with fixed parameters."""

    def __init__(self, bench, label, kind, args, metric, higher, scale, unit, threads=None,
                 series=None, reps=None, timeout=None, env=None, program=None, est=1.0):
        self.bench = bench
        self.label = label
        self.id = "%s %s" % (bench, label) if label else bench
        self.kind = kind          # prog | python | redis | sqlite | fastpath
        self.program = program    # bench_<program> for kind prog
        self.args = args
        self.metric = metric      # key of the result line
        self.higher = higher      # higher is better?
        self.scale = scale        # divide the metric by this for display
        self.unit = unit
        self.threads = threads
        self.series = series      # rows of one series differ only in threads
        self.reps = reps          # overrides the run's repetitions
        self.timeout = timeout
        self.env = env or {}
        self.est = est            # rough seconds per run, for the progress estimate


def build_rows(quick):
    """The rows of a quick or a full run. est is a rough duration of one run
    in seconds on a 2-CPU machine, used only for the time-left estimate."""
    rows = []
    q = quick

    def tput(bench, label, program, args, threads=None, series=None, scale=1e6, unit="Mops/s", **kw):
        rows.append(Row(bench, label, "prog", args, "ops_per_sec", True, scale, unit, threads=threads,
                        series=series, program=program, **kw))

    # A quick run keeps t=2 and t=32 of every threaded series (a few seconds
    # per allocator), so Report.oversubscription has its figures in it too.
    for t in ([2, 4, 32] if q else THREADS_FULL):
        tput("xmalloc", "t=%d" % t, "xmalloc", ["--threads=%d" % t, "--objects=%s" % ("2m" if q else "4m")],
             threads=t, series="xmalloc", est=0.3 if q else 0.8)
    for t in ([2, 8, 32] if q else THREADS_FULL):
        tput("larson", "t=%d" % t, "larson", ["--threads=%d" % t, "--ops=%s" % ("4m" if q else "10m")],
             threads=t, series="larson", est=0.3 if q else 0.6)
    for b, prog in (("cache-scratch", "cache_scratch"), ("cache-thrash", "cache_thrash")):
        for t in ([2, 32] if q else THREADS_FULL):
            tput(b, "t=%d" % t, prog, ["--threads=%d" % t, "--iterations=%s" % ("200k" if q else "400k")],
                 threads=t, series=b, est=0.3 if q else 0.5)
    if q:
        for t in (1, 2, 32):
            tput("churn", "16B-1K ws=10K t=%d" % t, "churn", ["--threads=%d" % t, "--slots=10000", "--ops=5m"],
                 threads=t, series="churn 16B-1K ws=10K", est=0.3)
        tput("churn", "16B-32K ws=1K t=1", "churn", ["--max-size=32K", "--slots=1000", "--ops=2m"], threads=1,
             est=0.3)
    else:
        tput("churn", "16B-1K ws=100 t=1", "churn", ["--slots=100", "--ops=20m"], threads=1, est=0.5)
        for t in THREADS_FULL:
            tput("churn", "16B-1K ws=10K t=%d" % t, "churn", ["--threads=%d" % t, "--slots=10000", "--ops=20m"],
                 threads=t, series="churn 16B-1K ws=10K", est=0.6)
        # The same churn with the working set split among the threads (20 000
        # blocks in all at every t): at t=32 the series above holds 16 times
        # the memory of t=2, so its fall mixes CPU-cache misses with
        # contention; this one keeps the footprint and shows contention alone.
        for t in (2, 8, 32):
            tput("churn", "16B-1K ws=20K/t t=%d" % t, "churn",
                 ["--threads=%d" % t, "--slots=%d" % (20000 // t), "--ops=20m"],
                 threads=t, series="churn 16B-1K ws=20K/t", est=0.6)
        tput("churn", "16B-1K ws=1M t=1", "churn", ["--slots=1m", "--ops=4m"], threads=1, est=2.5)
        tput("churn", "16B-32K ws=1K t=1", "churn", ["--max-size=32K", "--slots=1000", "--ops=10m"], threads=1,
             est=0.6)
        tput("churn", "16B-32K ws=100K t=1", "churn", ["--max-size=32K", "--slots=100000", "--ops=2m"],
             threads=1, est=2.0)
    tput("realloc", "string", "realloc", ["--mode=string"] + (["--bytes=64M"] if q else []),
         unit="MB/s", est=0.3 if q else 0.8)
    tput("realloc", "vector", "realloc", ["--mode=vector"] + (["--bytes=128M"] if q else []),
         unit="MB/s", est=0.4 if q else 0.8)
    tput("large", "64K-32M", "large", ["--ops=%d" % (300 if q else 1000)], scale=1, unit="ops/s",
         est=0.8 if q else 3.0)
    tput("aligned", "64B-2M", "aligned", ["--ops=%s" % ("15k" if q else "50k")], scale=1e3, unit="Kops/s",
         est=0.5 if q else 1.5)
    tput("request", "8B-512B x100 t=1", "arena", ["--requests=%s" % ("100k" if q else "400k")],
         threads=1, est=1.0 if q else 3.0)

    # Memory return: the idle window must reach +2 s. Scenario a at its full
    # size (50 million blocks) costs about a minute per run on a machine with
    # slow page faults, so the full run measures it once per allocator.
    idle = 2100 if q else 3000
    for sc, extra, est in (("a", ["--objects=%s" % ("1m" if q else "50m")], 3.0 if q else 60.0),
                           ("b", ["--bytes=%s" % ("64M" if q else "512M")], 3.0 if q else 7.5),
                           ("c", ["--bytes=%s" % ("64M" if q else "512M")], 3.0 if q else 7.5),
                           # Scattered survivors (issue 14): 1 GiB, every 100th block kept, the rest
                           # freed in random order; the threads park (d) or exit (e).
                           ("d", ["--bytes=%s" % ("256M" if q else "1G")], 4.0 if q else 10.0),
                           ("e", ["--bytes=%s" % ("256M" if q else "1G")], 4.0 if q else 10.0)):
        rows.append(Row("memreturn", sc, "prog", ["--scenario=" + sc, "--idle-ms=%d" % idle] + extra,
                        "seconds", False, 1, "s burst", program="memreturn",
                        reps=(1 if sc == "a" and not q else None),
                        timeout=(600 if sc == "a" and not q else None), est=est))

    for t, ops in ([(1, "500k")] if q else [(1, "2m"), (4, "500k")]):
        rows.append(Row("latency", "t=%d" % t, "prog", ["--threads=%d" % t, "--ops=" + ops], "p99_sum_ns", False,
                        1, "ns p99 m+f", threads=t, program="latency", est=0.5 if q else 1.2))
    for size in ([64] if q else [16, 64, 512]):
        rows.append(Row("fastpath", "%dB" % size, "fastpath", ["--size=%d" % size], "instr_pair", False, 1,
                        "instr/pair", reps=1, est=2.5))
    # Issue 13's batch patterns, the figures bench/fastpath.expected guards:
    # 100 000 blocks of 32 B allocated, then all freed in random or in reverse
    # order, so most pairs go through refills and flushes. The runner's loop
    # lengths (N1, N2) are whole rounds of the batch.
    for order in ("random", "reverse"):
        rows.append(Row("fastpath", "32B %s x100K" % order, "fastpath",
                        ["--size=32", "--batch=100000", "--order=" + order], "instr_pair", False, 1,
                        "instr/pair", reps=1, est=4.0))
    rows.append(Row("redis", "", "redis", ["--requests=%d" % (30000 if q else 100000)], "ops_per_sec", True,
                    1e3, "Kreq/s", est=1.2 if q else 2.5))
    rows.append(Row("python", "malloc", "python", (["--n=10000"] if q else []), "seconds", False, 1, "s",
                    env={"PYTHONMALLOC": "malloc"}, est=0.6 if q else 1.8))
    if not q:
        rows.append(Row("python", "pymalloc", "python", [], "seconds", False, 1, "s", est=1.8))
    rows.append(Row("sqlite", "page cache", "sqlite", ["--rows=%d" % (100000 if q else 300000)], "seconds", False,
                    1, "s", est=0.8 if q else 2.3))
    rows.append(Row("postgres", "initdb", "postgres", ["--no-install"], "seconds", False, 1, "s", est=3.0))
    return rows


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def say(msg="", end="\n"):
    sys.stdout.write(msg + end)
    sys.stdout.flush()


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def fmt_num(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 10:
        return "%.2f" % v
    return "%.3f" % v


def fmt_mib(kib):
    if kib is None:
        return "-"
    mib = kib / 1024.0
    return "%.0f" % mib if mib >= 100 else "%.1f" % mib


def fmt_dur(s):
    s = int(round(s))
    return "%d:%02d" % (s // 60, s % 60) if s < 3600 else "%d:%02d:%02d" % (s // 3600, s % 3600 // 60, s % 60)


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def parse_result(stdout):
    res = None
    for line in stdout.splitlines():
        if line.startswith("result:"):
            res = {}
            for tok in line[len("result:"):].split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    try:
                        res[k] = float(v)
                    except ValueError:
                        res[k] = v
    return res


def last_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip() and not l.startswith("==")]
    return lines[-1][:160] if lines else ""


def slug(s):
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-")


# ---------------------------------------------------------------------------
# Installing and building
# ---------------------------------------------------------------------------

def installed(pkg):
    r = sh(["dpkg-query", "-W", "-f=${Status}", pkg])
    return r.returncode == 0 and "install ok installed" in r.stdout


def ensure_packages(pkgs, log):
    have_dpkg = shutil.which("dpkg-query") is not None
    if not have_dpkg:
        say("note: not a Debian system (no dpkg-query); install the tools and allocators yourself")
        return
    missing = [p for p in pkgs if not installed(p)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say("note: missing Debian packages (run as root to install them): " + " ".join(missing))
        return
    say("installing from Debian: " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=log, stderr=log)
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, env=env,
                       stdout=log, stderr=log)
    if r.returncode != 0:
        say("warning: apt-get install failed for some of: %s (see bench/results/build.log)" % " ".join(missing))


def package_file(pkg, soname):
    r = sh(["dpkg", "-L", pkg]) if shutil.which("dpkg") else None
    if r is not None and r.returncode == 0:
        for line in r.stdout.splitlines():
            if os.path.basename(line) == soname and os.path.exists(line):
                return line
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return p
    return None


def run_logged(cmd, log, cwd=REPO):
    log.write("\n$ %s\n" % " ".join(cmd))
    log.flush()
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(r.stdout)
    log.flush()
    return r.returncode, r.stdout


def first_error(text):
    for line in text.splitlines():
        if re.search(r"error|Error|ERROR", line):
            return line.strip()[:200]
    return last_line(text)


def build(args, log):
    """Returns (directory of the bench programs, path of libebbmalloc.so or None, why not)."""
    bench_bin, lib, why = None, None, None
    if args.no_build:
        for d in (os.path.join(BUILD, "bench"), os.path.join(BUILD, "bench-ebbmalloc", "bench"),
                  os.path.join(BUILD, "bench-standalone")):
            if os.path.exists(os.path.join(d, "bench_xmalloc")):
                bench_bin = d
                break
        for p in (os.path.join(BUILD, "libebbmalloc.so"), os.path.join(BUILD, "bench-ebbmalloc", "libebbmalloc.so")):
            if os.path.exists(p):
                lib = p
                break
        if not lib:
            why = "--no-build and no build/libebbmalloc.so"
        return bench_bin, lib, why

    jobs = "-j%d" % max(1, os.cpu_count() or 1)
    # The project's own build directory first, as the README builds it. If it
    # does not configure (a test dependency missing, say), a private one with
    # the tests switched off, so the benchmark is not blocked by the tests.
    attempts = [(BUILD, []), (os.path.join(BUILD, "bench-ebbmalloc"), ["-DEBB_BUILD_TESTS=OFF"])]
    for bdir, extra in attempts:
        say("building ebbmalloc (Release) in %s ..." % os.path.relpath(bdir, REPO))
        rc, out = run_logged(["cmake", "-S", REPO, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release"] + extra, log)
        if rc != 0:
            why = "cmake configure failed: " + first_error(out)
            continue
        rc, out = run_logged(["cmake", "--build", bdir, jobs, "--target", "ebbmalloc"], log)
        if rc == 0 and os.path.exists(os.path.join(bdir, "libebbmalloc.so")):
            lib, why = os.path.join(bdir, "libebbmalloc.so"), None
        else:
            why = "build failed: " + first_error(out)
        rc, out = run_logged(["cmake", "--build", bdir, jobs, "--target", "bench_programs"], log)
        if rc == 0:
            bench_bin = os.path.join(bdir, "bench")
        break
    if bench_bin is None:
        # The allocator's tree is not buildable yet: the programs do not
        # depend on it, so build them on their own.
        bdir = os.path.join(BUILD, "bench-standalone")
        say("building the benchmark programs on their own in %s ..." % os.path.relpath(bdir, REPO))
        rc, out = run_logged(["cmake", "-S", BENCH_DIR, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release"], log)
        if rc == 0:
            rc, out = run_logged(["cmake", "--build", bdir, jobs], log)
        if rc != 0:
            say("error: the benchmark programs do not build: " + first_error(out))
            say("       full log: " + os.path.relpath(os.path.join(RESULTS, "build.log")))
            sys.exit(1)
        bench_bin = bdir
    return bench_bin, lib, why


# ---------------------------------------------------------------------------
# Running one measurement
# ---------------------------------------------------------------------------

class Run:
    def __init__(self):
        self.status = "ok"
        self.values = {}
        self.rss = None       # peak RSS in KiB
        self.wall = 0.0
        self.note = ""
        self.raw = ""

    @property
    def ok(self):
        return self.status == "ok"


def spawn(cmd, env, timeout, logbase, cpu=None):
    """Runs cmd in its own session (pinned to CPU cpu if given); returns (exit status, rusage, wall, stdout,
    stderr, timed out)."""
    out_path, err_path = logbase + ".out", logbase + ".err"
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=BENCH_DIR, preexec_fn=pin)
        timed_out = []

        def kill():
            timed_out.append(True)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            while True:
                try:
                    _, status, ru = os.wait4(p.pid, 0)
                    break
                except InterruptedError:
                    continue
        except KeyboardInterrupt:
            kill()
            os.wait4(p.pid, 0)
            raise
        finally:
            timer.cancel()
        p.returncode = status  # reaped here; keep Popen from waiting again
        wall = time.monotonic() - t0
        # Anything the program left behind in its session (a server) goes too.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
    with open(out_path) as f:
        stdout = f.read()
    with open(err_path) as f:
        stderr = f.read()
    os.unlink(out_path)
    os.unlink(err_path)
    return status, ru, wall, stdout, stderr, bool(timed_out)


def judge(run, status, ru, wall, stdout, stderr, timed_out, keep_log):
    run.wall = wall
    run.raw = stdout
    if timed_out:
        run.status = "timeout"
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            run.status = signal.Signals(sig).name
        except ValueError:
            run.status = "signal %d" % sig
    elif os.WEXITSTATUS(status) != 0:
        run.status = "exit %d" % os.WEXITSTATUS(status)
    res = parse_result(stdout)
    if run.ok and res is None:
        run.status = "no result"
    if res:
        run.values = res
        if isinstance(res.get("peak_rss_kib"), float) and res["peak_rss_kib"] > 0:
            run.rss = int(res["peak_rss_kib"])
    if run.rss is None and ru is not None:
        run.rss = int(ru.ru_maxrss)
    if not run.ok:
        run.note = last_line(stderr) or last_line(stdout)
        with open(keep_log, "w") as f:
            f.write("status: %s\n--- stdout\n%s\n--- stderr\n%s\n" % (run.status, stdout, stderr))


class Runner:
    def __init__(self, args, bench_bin):
        self.args = args
        self.bench_bin = bench_bin
        self.tmp = os.path.join(RESULTS, ".tmp")
        self.logs = os.path.join(RESULTS, "logs")
        os.makedirs(self.tmp, exist_ok=True)
        os.makedirs(self.logs, exist_ok=True)
        self.null_cache = {}

    def env_for(self, alloc, row, preload=True):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env.update(row.env)
        env.update(alloc.env)
        if preload and alloc.lib:
            env["LD_PRELOAD"] = alloc.lib
        return env

    def timeout_for(self, row):
        return row.timeout or (90 if self.args.quick else 180)

    def measure(self, row, alloc, rep):
        run = Run()
        base = os.path.join(self.tmp, "%s-%s-%d" % (slug(row.id), alloc.name, rep))
        keep = os.path.join(self.logs, "%s-%s-rep%d.txt" % (slug(row.id), alloc.name, rep))
        timeout = self.timeout_for(row)
        if row.kind == "fastpath":
            return self.measure_fastpath(row, alloc, rep, run, base, keep, timeout)
        if row.kind == "prog":
            cmd = [os.path.join(self.bench_bin, "bench_" + row.program)] + row.args
            if row.bench == "memreturn":
                cmd.append("--csv=" + timeline_path(row, alloc, rep))
            env = self.env_for(alloc, row)
        elif row.kind == "python":
            cmd = [PYTHON, os.path.join(BENCH_DIR, "py_alloc.py")] + row.args
            env = self.env_for(alloc, row)
        elif row.kind == "redis":
            cmd = [PYTHON, os.path.join(BENCH_DIR, "redis_bench.py"), "--alloc-lib", alloc.lib or "glibc"] + row.args
            env = self.env_for(alloc, row, preload=False)
        elif row.kind == "sqlite":
            cmd = [PYTHON, os.path.join(BENCH_DIR, "sqlite_bench.py"), "--alloc-lib", alloc.lib or "glibc"] + row.args
            env = self.env_for(alloc, row, preload=False)
        elif row.kind == "postgres":
            cmd = [PYTHON, os.path.join(BENCH_DIR, "postgres_bench.py"), "--alloc-lib", alloc.lib or "glibc"] + row.args
            env = self.env_for(alloc, row, preload=False)
        else:
            raise ValueError(row.kind)
        judge(run, *spawn(cmd, env, timeout, base), keep)
        return run

    # Instructions per call: callgrind at two loop lengths, difference over
    # difference, so start-up and warm-up cancel; then the same for the
    # harness alone (--null=1), which is subtracted.
    N1, N2 = 100000, 200000

    def callgrind(self, cmd, env, timeout, base, keep):
        out = base + ".cg"
        full = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + cmd
        # Pinned: an allocator that picks per-CPU lists by sched_getcpu()
        # (ebbmalloc) takes other paths when the process moves between CPUs
        # mid-run, and the count stops repeating (see bench/fastpath_guard.py).
        # Callgrind runs the threads one at a time, so the pin costs nothing.
        status, ru, wall, stdout, stderr, timed_out = spawn(full, env, timeout, base,
                                                            cpu=min(os.sched_getaffinity(0)))
        r = Run()
        judge(r, status, ru, wall, stdout, stderr, timed_out, keep)
        if not r.ok:
            return r, None
        ann = sh(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out])
        if os.path.exists(out):
            os.unlink(out)
        counts = {}
        for line in ann.stdout.splitlines():
            m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(PROGRAM TOTALS|\S*?:(call_\w+))\s", line + " ")
            if m:
                key = "total" if m.group(2) == "PROGRAM TOTALS" else m.group(3)
                counts.setdefault(key, int(m.group(1).replace(",", "")))
        return r, counts

    def fastpath_counts(self, row, env, timeout, base, keep, extra):
        prog = os.path.join(self.bench_bin, "bench_fastpath")
        c = []
        for n in (self.N1, self.N2):
            r, counts = self.callgrind([prog, "--iterations=%d" % n] + row.args + extra, env, timeout, base, keep)
            if not r.ok:
                return r, None
            c.append(counts)
        dn = float(self.N2 - self.N1)
        per = {}
        for key, fn in (("pair", "total"), ("malloc", "call_malloc"), ("free", "call_free"),
                        ("malloc", "call_null_malloc"), ("free", "call_null_free")):
            if fn in c[0] and fn in c[1]:
                per[key] = (c[1][fn] - c[0][fn]) / dn
        return None, per

    def measure_fastpath(self, row, alloc, rep, run, base, keep, timeout):
        if not (shutil.which("valgrind") and shutil.which("callgrind_annotate")):
            run.status = "no valgrind"
            return run
        key = tuple(row.args)
        if key not in self.null_cache:
            env = self.env_for(Alloc("none"), row)
            err, per = self.fastpath_counts(row, env, timeout, base + "-null", keep, ["--null=1"])
            self.null_cache[key] = per if err is None else None
        null = self.null_cache[key]
        t0 = time.monotonic()
        err, per = self.fastpath_counts(row, self.env_for(alloc, row), timeout, base, keep, [])
        if err is not None:
            return err
        run.wall = time.monotonic() - t0
        if not null or not all(k in per for k in ("pair", "malloc", "free")):
            run.status = "no result"
            run.note = "callgrind_annotate output not understood"
            return run
        run.values = {
            "instr_pair": per["pair"] - null.get("pair", 0),
            "instr_malloc": per["malloc"] - null.get("malloc", 0),
            "instr_free": per["free"] - null.get("free", 0),
            "harness_pair": null.get("pair", 0),
        }
        run.raw = "result: " + " ".join("%s=%.2f" % kv for kv in run.values.items())
        run.rss = None  # under valgrind RSS says nothing about the allocator
        return run


def timeline_path(row, alloc, rep):
    return os.path.join(RESULTS, "timeline-%s-%s-rep%d.csv" % (row.label, alloc.name, rep))


# ---------------------------------------------------------------------------
# Checks before the run
# ---------------------------------------------------------------------------

def malloc_binding(prog, alloc):
    """The object the dynamic linker binds prog's malloc to, as it reports it."""
    env = dict(os.environ, LD_DEBUG="bindings", LD_BIND_NOW="1")
    env.pop("LD_PRELOAD", None)
    env.update(alloc.env)
    if alloc.lib:
        env["LD_PRELOAD"] = alloc.lib
    try:
        r = subprocess.run([prog, "--iterations=1000"], env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None, "hangs"
    if r.returncode != 0:
        st = r.returncode
        why = ("killed by %s" % signal.Signals(-st).name) if st < 0 else ("exit %d" % st)
        return None, why + (": " + last_line(r.stderr) if last_line(r.stderr) else "")
    pat = re.compile(r"binding file \S*bench_fastpath \[0\] to (\S+) \[0\]: normal symbol `malloc'")
    for line in r.stderr.splitlines():
        m = pat.search(line)
        if m:
            return os.path.basename(m.group(1)), None
    return "unknown", None


def fault_cost_us():
    """Microseconds per first touch of an anonymous page: it decides how much
    fresh memory costs, which differs by two orders of magnitude between bare
    metal and some virtual machines."""
    n = 64 << 20
    m = mmap.mmap(-1, n)
    t0 = time.perf_counter()
    for off in range(0, n, 4096):
        m[off] = 1
    t = time.perf_counter() - t0
    m.close()
    return t / (n // 4096) * 1e6


def machine_info(allocs):
    info = []
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024 // 1024
    except (OSError, ValueError, IndexError):
        pass
    glibc = sh(["ldd", "--version"]).stdout.splitlines()[:1]
    info.append(("machine", "%s, %d CPUs, %d GiB, Linux %s" % (cpu or platform.machine(), os.cpu_count() or 0,
                                                                 mem, platform.release())))
    info.append(("glibc", glibc[0].split()[-1] if glibc else "?"))
    for a in allocs:
        if a.package and installed(a.package):
            v = sh(["dpkg-query", "-W", "-f=${Version}", a.package]).stdout
            info.append((a.name, "%s %s (%s)" % (a.package, v, a.lib)))
        elif a.lib:
            info.append((a.name, a.lib))
    rev = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])
    if rev.returncode == 0:
        info.append(("ebbmalloc source", rev.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")))
    else:
        info.append(("ebbmalloc source", "working tree without commits"))
    if os.environ.get("EBB_OPTIONS"):
        info.append(("EBB_OPTIONS", os.environ["EBB_OPTIONS"]))
    try:
        info.append(("page fault", "%.1f us per first touch of a 4 KiB page" % fault_cost_us()))
    except (OSError, ValueError):
        pass
    return info


# ---------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------

class Cell:
    """The runs of one row with one allocator, summarized."""

    def __init__(self, row, runs, reps_planned):
        self.row = row
        self.runs = runs
        self.planned = reps_planned
        good = [r for r in runs if r.ok and row.metric in r.values and isinstance(r.values[row.metric], float)]
        self.ok = bool(good)
        self.n_ok = len(good)
        self.value = median([r.values[row.metric] for r in good]) if good else None
        self.rss = median([r.rss for r in good]) if good else None
        self.ratio = None
        self.rss_ratio = None
        self.extra = {}
        if good:
            keys = set()
            for r in good:
                keys.update(k for k, v in r.values.items() if isinstance(v, float))
            for k in keys:
                self.extra[k] = median([r.values.get(k) for r in good if isinstance(r.values.get(k), float)])
            strs = [r.values.get("malloc_from") for r in good if isinstance(r.values.get("malloc_from"), str)]
            if strs:
                self.extra["malloc_from"] = strs[0]
        fails = [r for r in runs if not r.ok]
        self.failure = None
        if fails:
            self.failure = fails[0].status + (": " + fails[0].note if fails[0].note else "")

    def text(self, with_ratio=True):
        if not self.runs:
            return "not run"
        if not self.ok:
            return "FAIL " + self.runs[-1].status if self.runs else "FAIL"
        s = fmt_num(self.value / self.row.scale)
        if with_ratio and self.ratio is not None:
            s += " (%.2f)" % self.ratio
        if self.n_ok < len(self.runs):
            s += " !%d/%d" % (len(self.runs) - self.n_ok, len(self.runs))
        return s

    def rss_text(self):
        if not self.ok or self.rss is None:
            return "-" if self.ok or not self.runs else "FAIL"
        s = fmt_mib(self.rss)
        if self.rss_ratio is not None:
            s += " (%.2f)" % self.rss_ratio
        return s


def compute_ratios(cells):
    """cells: {alloc name: Cell} for one row. Ratio 1.00 is the best; larger is worse."""
    ok = [c for c in cells.values() if c.ok and c.value and c.value > 0]
    if ok:
        row = ok[0].row
        best = max(c.value for c in ok) if row.higher else min(c.value for c in ok)
        for c in ok:
            c.ratio = best / c.value if row.higher else c.value / best
    with_rss = [c for c in ok if c.rss]
    if with_rss:
        best = min(c.rss for c in with_rss)
        for c in with_rss:
            c.rss_ratio = c.rss / best


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------

def table_text(headers, lines, first_width=None):
    widths = [max(len(str(h)), *(len(str(l[i])) for l in lines)) if lines else len(str(h))
              for i, h in enumerate(headers)]
    if first_width:
        widths[0] = max(widths[0], first_width)
    out = ["  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
    for l in lines:
        out.append("  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(l, widths))))
    return "\n".join(out)


def table_md(headers, lines):
    out = ["| " + " | ".join(str(h) for h in headers) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for l in lines:
        out.append("| " + " | ".join(str(x).replace("|", "/") for x in l) + " |")
    return "\n".join(out)


class Report:
    def __init__(self, rows, allocs, cells, info, args, elapsed, interrupted):
        self.rows = rows
        self.allocs = allocs
        self.cells = cells     # {(row id, alloc name): Cell}
        self.info = info
        self.args = args
        self.elapsed = elapsed
        self.interrupted = interrupted

    def names(self):
        return [a.name for a in self.allocs]

    def cell(self, row, a):
        return self.cells.get((row.id, a))

    def sections(self, summary_first):
        """Yields (title, subtitle, headers, lines) for every table, in order."""
        if summary_first:
            yield self.summary()
            yield from self.oversubscription()
        yield from self.bench_sections()
        if not summary_first:
            yield self.summary()
            yield from self.oversubscription()

    def summary(self):
        names = self.names()
        lines = []
        for a in names:
            t = [self.cell(r, a).ratio for r in self.rows if self.cell(r, a) and self.cell(r, a).ratio]
            m = [self.cell(r, a).rss_ratio for r in self.rows if self.cell(r, a) and self.cell(r, a).rss_ratio]
            ran = [r for r in self.rows if self.cell(r, a) and self.cell(r, a).runs]
            failed = [r.id for r in ran if not self.cell(r, a).ok]
            partial = [r.id for r in ran if self.cell(r, a).ok and self.cell(r, a).n_ok < len(self.cell(r, a).runs)]
            gt, gm = geomean(t), geomean(m)
            lines.append([a, "%.2f" % gt if gt else "-", "%.2f" % gm if gm else "-",
                          "%d/%d" % (len(ran) - len(failed), len(ran)),
                          (", ".join(failed) if failed else "") + ((" (some reps failed: %s)" % ", ".join(partial))
                                                                   if partial else "")])
        return ("Summary", "geometric mean over rows of the ratio to the best allocator of the row "
                "(1.00 = best in every row; time ratio uses each row's own metric, RSS ratio the peak RSS)",
                ["allocator", "time ratio", "peak RSS ratio", "rows ok", "failed rows"], lines)

    OVERSUB_FLOOR = 0.9

    def oversubscription(self):
        """Issue 13's goal: with 32 threads on this machine's CPUs no threaded
        series falls below 0.9x its own 2-thread throughput (what a thread
        spinning on a lock whose holder was preempted does to it). Every
        allocator is compared with itself, so the rows' ratios to the best do
        not enter. Yields one table, or none when no series has t=2 and a
        higher count."""
        names = self.names()
        series = {}
        for r in self.rows:
            if r.series and r.threads and r.higher:
                series.setdefault(r.series, {})[r.threads] = r
        lines = []
        worst = {a: [] for a in names}
        low = {a: 0 for a in names}
        for name, by_t in series.items():
            if 2 not in by_t:
                continue
            for t in (8, 32):
                if t not in by_t:
                    continue
                cells = []
                for a in names:
                    base, c = self.cell(by_t[2], a), self.cell(by_t[t], a)
                    if not (base and base.ok and base.value and c and c.ok):
                        cells.append("-")
                        continue
                    x = c.value / base.value
                    # The same for CPU time per operation, where the program
                    # reports it: other processes on the machine hardly move it.
                    cb, cc = base.extra.get("cpu_ns_per_op"), c.extra.get("cpu_ns_per_op")
                    cpu = " (cpu %.2f)" % (cb / cc) if cb and cc else ""
                    cells.append("%.2f%s%s" % (x, " LOW" if x < self.OVERSUB_FLOOR else "", cpu))
                    if t == 32:
                        worst[a].append(x)
                        low[a] += x < self.OVERSUB_FLOOR
                lines.append(["%s t=%d" % (name, t)] + cells)
        if not lines:
            return
        lines.append(["worst t=32"] + ["%.2f" % min(worst[a]) if worst[a] else "-" for a in names])
        lines.append(["t=32 rows below %.2f" % self.OVERSUB_FLOOR]
                     + ["%d of %d" % (low[a], len(worst[a])) if worst[a] else "-" for a in names])
        yield ("Oversubscription: throughput relative to 2 threads",
               "each allocator's throughput at t=8 and t=32 divided by its own at t=2 (this machine: %d CPUs; "
               "higher is better); LOW: below %.2f, issue 13's floor for t=32. churn, larson and xmalloc time "
               "only the steady state (no fills, thread starts or exits). Not all of a fall is contention: "
               "churn ws=10K's working set is per thread (16 times the memory at t=32, more CPU-cache misses; "
               "churn ws=20K/t splits one working set among the threads to show contention alone) and "
               "larson's threads live 16 times shorter (each starts with an empty thread cache), for every "
               "allocator alike. (cpu x): t=2's CPU time per operation over t's; unlike the throughput ratio "
               "it is not moved by time the threads sat idle or lost to other processes, only by what each "
               "operation cost in CPU (spinning, cache misses, refills)"
               % (os.cpu_count() or 0, self.OVERSUB_FLOOR), ["series"] + names, lines)

    def bench_sections(self):
        names = self.names()
        for bench, desc in BENCHMARKS:
            brows = [r for r in self.rows if r.bench == bench]
            if not brows:
                continue
            units = sorted(set("%s, %s is better" % (r.unit, "higher" if r.higher else "lower") for r in brows))
            lines = [[r.label or r.bench] + [self.cell(r, a).text() if self.cell(r, a) else "-" for a in names]
                     for r in brows]
            yield (bench, desc + " [" + "; ".join(units) + "; (ratio to best)]", ["row"] + names, lines)
            if any(self.cell(r, a) and self.cell(r, a).rss for r in brows for a in names):
                lines = [[r.label or r.bench] + [self.cell(r, a).rss_text() if self.cell(r, a) else "-"
                                                 for a in names] for r in brows]
                yield (bench + ": peak RSS", "MiB (ratio to smallest)", ["row"] + names, lines)
            yield from self.details(bench, brows)

    def details(self, bench, brows):
        names = self.names()
        if bench == "memreturn":
            for r in brows:
                lines = []
                for a in names:
                    c = self.cell(r, a)
                    if not c or not c.ok:
                        lines.append([a] + ["FAIL" if c and c.runs else "-"] * 8)
                        continue
                    e = c.extra
                    ret = e.get("return_ms")
                    back = "never" if ret is None or ret < 0 else ("%.2f s" % (ret / 1000.0))
                    lines.append([a, fmt_num(e.get("seconds")), fmt_mib(e.get("burst_peak_kib")),
                                  fmt_mib(e.get("freed_rss_kib")), fmt_mib(e.get("rss_1s_kib")),
                                  fmt_mib(e.get("rss_2s_kib")), fmt_mib(e.get("end_rss_kib")), back,
                                  "%.0f%%" % e.get("returned_pct", 0)])
                what = {"a": "one thread, equal 120 B blocks", "b": "threads, sizes 16 B-1 MiB, all freed",
                        "c": "threads, sizes 16 B-1 MiB, every 100th kept",
                        "d": "scattered survivors: 2 threads, 16 B-16 KiB (1/500 64 KiB-1 MiB), every 100th "
                             "kept, the rest freed in random order, threads parked",
                        "e": "scattered survivors as d, threads exited"}.get(r.label, "")
                yield ("memreturn %s: RSS over time" % r.label,
                       "%s; MiB; 'back' = time after the frees until RSS is within 16 MiB of the start "
                       "(plus what is still allocated)" % what,
                       ["allocator", "burst s", "peak", "after free", "+1 s", "+2 s", "end", "back", "returned"],
                       lines)
        elif bench == "latency":
            for r in brows:
                lines = []
                for a in names:
                    c = self.cell(r, a)
                    if not c or not c.ok:
                        lines.append([a] + ["FAIL" if c and c.runs else "-"] * 8)
                        continue
                    e = c.extra
                    lines.append([a] + [fmt_num(e.get("%s_%s_ns" % (op, p))) for op in ("malloc", "free")
                                        for p in ("p50", "p99", "p999", "max")])
                yield ("latency %s" % r.label, "ns per call, timer cost subtracted",
                       ["allocator", "malloc p50", "p99", "p99.9", "max", "free p50", "p99", "p99.9", "max"], lines)
        elif bench == "fastpath":
            lines = []
            for a in names:
                vals = []
                for r in brows:
                    c = self.cell(r, a)
                    if not c or not c.ok:
                        vals += ["FAIL" if c and c.runs else "-"] * 3
                    else:
                        vals += ["%.1f" % c.extra.get(k, float("nan")) for k in ("instr_pair", "instr_malloc",
                                                                                   "instr_free")]
                lines.append([a] + vals)
            headers = ["allocator"]
            for r in brows:
                headers += ["%s pair" % r.label, "malloc", "free"]
            harness = []
            for r in brows:
                h = [self.cell(r, a).extra.get("harness_pair") for a in names if self.cell(r, a) and self.cell(r, a).ok]
                if h:
                    harness.append("%s %s" % (r.label, fmt_num(h[0])))
            yield ("fastpath: instructions per call",
                   "callgrind; a size alone: the same slot taken and freed again (thread-cache hits); 'x100K': "
                   "100 000 blocks allocated, then freed in that order (refills and flushes); the loop and wrappers "
                   "(per pair: %s) are subtracted, the call into the allocator is counted"
                   % (", ".join(harness) if harness else "?"),
                   headers, lines)
        elif bench == "redis":
            for r in brows:
                lines = []
                for a in names:
                    c = self.cell(r, a)
                    if not c or not c.ok:
                        lines.append([a] + ["FAIL" if c and c.runs else "-"] * 6)
                        continue
                    e = c.extra
                    lines.append([a, fmt_num(e.get("rps_set", 0) / 1e3), fmt_num(e.get("rps_get", 0) / 1e3),
                                  fmt_num(e.get("rps_lpush", 0) / 1e3), fmt_mib(c.rss),
                                  fmt_mib(e.get("used_memory_kib")), e.get("malloc_from", "?")])
                yield ("redis: per test", "thousand requests/s; server RSS and Redis' own used_memory in MiB",
                       ["allocator", "SET", "GET", "LPUSH", "server peak", "used_memory", "malloc from"], lines)

    def text(self):
        out = []
        for title, sub, headers, lines in self.sections(summary_first=False):
            out.append("")
            out.append("== %s" % title)
            out.append("   " + sub)
            out.append(table_text(headers, lines))
        return "\n".join(out)

    def markdown(self, charts):
        a = self.args
        out = ["# ebbmalloc allocator comparison", ""]
        out.append("Run of %s, %s mode, %d repetition(s), %s in total%s." % (
            datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "quick" if a.quick else "full", a.reps,
            fmt_dur(self.elapsed), " (interrupted: incomplete)" if self.interrupted else ""))
        out.append("")
        for k, v in self.info:
            out.append("- %s: %s" % (k, v))
        out.append("")
        out.append("Each cell is the median over repetitions; in brackets the ratio to the best allocator of "
                   "the row (1.00 = best, 2.00 = half as fast or twice the memory). FAIL means every run "
                   "crashed, timed out or reported no result; `!k/n` means k of n runs failed. Allocators "
                   "ran interleaved within each repetition.")
        for title, sub, headers, lines in self.sections(summary_first=True):
            out += ["", "## " + title, "", sub, "", table_md(headers, lines)]
        notes = self.notes()
        if notes:
            out += ["", "## Notes", ""] + ["- " + n for n in notes]
        if charts:
            out += ["", "## Charts", ""]
            for png, caption in charts:
                out.append("![%s](%s)" % (caption, os.path.basename(png)))
                out.append("")
        return "\n".join(out) + "\n"

    def notes(self):
        notes = []
        for al in self.allocs:
            for n in al.notes:
                notes.append("%s: %s" % (al.name, n))
        for r in self.rows:
            for a in self.names():
                c = self.cell(r, a)
                if c and c.failure:
                    notes.append("%s / %s: %s" % (r.id, a, c.failure))
        return notes

    def write_csv(self, path):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "benchmark", "series", "threads", "allocator", "status", "reps_ok", "reps",
                        "metric", "unit", "better", "value", "ratio", "peak_rss_kib", "rss_ratio"])
            for r in self.rows:
                for a in self.names():
                    c = self.cell(r, a)
                    if not c:
                        continue
                    status = "ok" if c.ok else ("not run" if not c.runs else c.runs[-1].status)
                    w.writerow([r.id, r.bench, r.series or "", r.threads or "", a, status, c.n_ok, len(c.runs),
                                r.metric, r.unit, "higher" if r.higher else "lower",
                                "" if c.value is None else "%.6g" % c.value,
                                "" if c.ratio is None else "%.4f" % c.ratio,
                                "" if c.rss is None else int(c.rss),
                                "" if c.rss_ratio is None else "%.4f" % c.rss_ratio])

    def write_runs_csv(self, path):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "allocator", "rep", "status", "wall_s", "peak_rss_kib", "note", "result"])
            for r in self.rows:
                for a in self.names():
                    c = self.cell(r, a)
                    if not c:
                        continue
                    for i, run in enumerate(c.runs):
                        res = ""
                        for line in run.raw.splitlines():
                            if line.startswith("result:"):
                                res = line[len("result:"):].strip()
                        w.writerow([r.id, a, i + 1, run.status, "%.3f" % run.wall,
                                    "" if run.rss is None else run.rss, run.note, res])


# ---------------------------------------------------------------------------
# Charts (gnuplot)
# ---------------------------------------------------------------------------

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]


def gp_str(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def make_charts(report, run_rows):
    if not shutil.which("gnuplot"):
        say("note: gnuplot not found; no charts (apt-get install gnuplot-nox)")
        return []
    names = report.names()
    data_dir = os.path.join(RESULTS, "plot-data")
    os.makedirs(data_dir, exist_ok=True)
    charts = []
    styles = "\n".join("set style line %d lc rgb %s lw 2 pt 7 ps 0.8" % (i + 1, gp_str(PALETTE[i % len(PALETTE)]))
                       for i in range(len(names)))

    # 1. Ratios per row, grouped bars: time ratio above, RSS ratio below.
    rows = [r for r in report.rows if any(report.cell(r, a) and report.cell(r, a).ratio for a in names)]
    if rows:
        dat = os.path.join(data_dir, "ratios.dat")
        with open(dat, "w") as f:
            f.write("row " + " ".join(gp_str(a) for a in names) + " " + " ".join(gp_str(a) for a in names) + "\n")
            for r in rows:
                vals = []
                for key in ("ratio", "rss_ratio"):
                    for a in names:
                        c = report.cell(r, a)
                        v = getattr(c, key) if c else None
                        vals.append("%.4f" % v if v else "NaN")
                f.write(gp_str(r.id) + " " + " ".join(vals) + "\n")
        png = os.path.join(RESULTS, "ratios.png")
        width = max(1000, 70 + 28 * len(rows) * (len(names) + 1) // 2)
        n = len(names)
        script = """
set terminal pngcairo size %(w)d,1000 font "DejaVu Sans,10"
set output %(png)s
set datafile missing "NaN"
%(styles)s
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set logscale y 2
set yrange [0.9:*]
set grid ytics
set key outside right top vertical
set xtics rotate by 35 right font ",9" nomirror
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb "#444444"
set label "no bar: failed\\nor not measured" at graph 1.01, graph 0.05 font ",8"
set multiplot layout 2,1
set title "Time / throughput: ratio to the best allocator of each row (1 = best; lower is better; log scale)"
set ylabel "ratio"
plot for [i=2:%(last)d] %(dat)s using i:xtic(1) title columnhead(i) ls (i-1)
set title "Peak RSS: ratio to the smallest of each row (1 = smallest; lower is better; log scale)"
plot for [i=%(first2)d:%(last2)d] %(dat)s using i:xtic(1) title columnhead(i) ls (i-%(n)d-1)
unset multiplot
""" % {"w": width, "png": gp_str(png), "styles": styles, "last": n + 1, "dat": gp_str(dat),
            "first2": n + 2, "last2": 2 * n + 1, "n": n}
        if run_gnuplot(script, data_dir, "ratios"):
            charts.append((png, "Ratios to the best allocator, per row"))

    # 2. RSS over time for the memory-return scenarios, x = 0 at the end of
    # the frees, so the idle behaviour lines up across allocators.
    mrows = [r for r in report.rows if r.bench == "memreturn"]
    panels = []
    for r in mrows:
        lines = []
        for i, a in enumerate(names):
            c = report.cell(r, a)
            if not c or not c.ok:
                continue
            # The first successful repetition's timeline.
            for k, run in enumerate(c.runs):
                path = timeline_path(r, Alloc(a), k + 1)
                if run.ok and os.path.exists(path):
                    shift = run.values.get("seconds", 0.0) * 1000.0
                    lines.append("%s skip 1 using (($1-%.1f)/1000.0):($2/1024.0) with lines ls %d title %s"
                                 % (gp_str(path), shift, i + 1, gp_str(a)))
                    break
        if lines:
            panels.append((r, lines))
    if panels:
        png = os.path.join(RESULTS, "memreturn.png")
        desc = {"a": "one thread, equal 120 B blocks", "b": "threads, 16 B-1 MiB, all freed",
                "c": "threads, 16 B-1 MiB, every 100th kept",
                "d": "scattered survivors, threads parked", "e": "scattered survivors, threads exited"}
        body = []
        for r, lines in panels:
            body.append('set title %s' % gp_str("memreturn %s: %s" % (r.label, desc.get(r.label, ""))))
            body.append("plot " + ", \\\n     ".join(lines))
        script = """
set terminal pngcairo size 1100,%(h)d font "DejaVu Sans,10"
set output %(png)s
set datafile separator ","
%(styles)s
set grid
set key top left
set xlabel "seconds since the frees finished (negative: during the burst)"
set ylabel "RSS (MiB)"
set arrow from 0, graph 0 to 0, graph 1 nohead dt 2 lc rgb "#888888"
set multiplot layout %(n)d,1
%(body)s
unset multiplot
""" % {"h": 330 * len(panels), "png": gp_str(png), "styles": styles, "n": len(panels), "body": "\n".join(body)}
        if run_gnuplot(script, data_dir, "memreturn"):
            charts.append((png, "RSS over time in the memory-return scenarios"))

    # 3. Throughput over thread count for every series with several counts.
    series = {}
    for r in report.rows:
        if r.series and r.threads:
            series.setdefault(r.series, []).append(r)
    series = {k: v for k, v in series.items() if len(v) >= 2}
    if series:
        plots = []
        for name, srows in series.items():
            dat = os.path.join(data_dir, "scaling-%s.dat" % slug(name))
            srows = sorted(srows, key=lambda r: r.threads)
            with open(dat, "w") as f:
                f.write("threads " + " ".join(gp_str(a) for a in names) + "\n")
                for r in srows:
                    vals = []
                    for a in names:
                        c = report.cell(r, a)
                        vals.append("%.6g" % (c.value / r.scale) if c and c.ok else "NaN")
                    f.write("%d %s\n" % (r.threads, " ".join(vals)))
            plots.append((name, srows[0].unit, dat))
        cols = 2
        nrow = (len(plots) + cols - 1) // cols
        png = os.path.join(RESULTS, "scaling.png")
        body = []
        for name, unit, dat in plots:
            body.append("set title %s" % gp_str("%s (%s, higher is better; 2 CPUs)" % (name, unit)))
            body.append("set ylabel %s" % gp_str(unit))
            body.append("plot for [i=2:%d] %s using 1:i with linespoints ls (i-1) title columnhead(i)"
                        % (len(names) + 1, gp_str(dat)))
        script = """
set terminal pngcairo size 1200,%(h)d font "DejaVu Sans,10"
set output %(png)s
set datafile missing "NaN"
%(styles)s
set grid
set key top right font ",9"
set logscale x 2
set xtics (1, 2, 4, 8, 16, 32, 64)
set xlabel "threads"
set yrange [0:*]
set multiplot layout %(nrow)d,%(cols)d
%(body)s
unset multiplot
""" % {"h": 340 * nrow, "png": gp_str(png), "styles": styles, "nrow": nrow, "cols": cols,
            "body": "\n".join(body)}
        if run_gnuplot(script, data_dir, "scaling"):
            charts.append((png, "Throughput over thread count"))
    return charts


def run_gnuplot(script, data_dir, name):
    path = os.path.join(data_dir, name + ".gp")
    with open(path, "w") as f:
        f.write(script)
    r = sh(["gnuplot", path])
    if r.returncode != 0:
        say("warning: gnuplot failed for %s: %s" % (name, last_line(r.stderr)))
        return False
    return True


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(
        prog="bench/run",
        description="Compare ebbmalloc with glibc, jemalloc, tcmalloc and mimalloc (or any allocator you "
                    "name) on the benchmark suite in bench/. Builds, installs what is missing (as root), runs "
                    "every benchmark with every allocator interleaved, and writes tables and charts to "
                    "bench/results/.",
        epilog="Examples:  bench/run --quick     bench/run --bench larson,xmalloc --alloc glibc,ebbmalloc    "
               "bench/run --add-alloc hoard=/opt/lib/libhoard.so --reps 5")
    ap.add_argument("--quick", action="store_true", help="a short run (about 2 minutes): fewer rows, smaller sizes, 1 repetition")
    ap.add_argument("--bench", help="benchmarks to run, comma-separated (see --list)")
    ap.add_argument("--alloc", help="allocators to run, comma-separated (default: all)")
    ap.add_argument("--add-alloc", action="append", default=[], metavar="NAME=/path/lib.so",
                    help="another allocator, preloaded from this shared library (repeatable)")
    ap.add_argument("--alloc-env", action="append", default=[], metavar="NAME:VAR=VALUE",
                    help="environment variable for one allocator's runs, e.g. "
                         "jemalloc:MALLOC_CONF=background_thread:true (repeatable)")
    ap.add_argument("--reps", type=int, help="repetitions per row (default 3, --quick 1)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks, their rows and the allocators, then exit")
    ap.add_argument("--no-build", action="store_true", help="use what is already built in build/")
    ap.add_argument("--no-install", action="store_true", help="never call apt-get")
    ap.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    ap.add_argument("--results", metavar="DIR",
                    help="where tables, charts and logs go (default bench/results; its old results are replaced)")
    args = ap.parse_args()
    if args.reps is None:
        args.reps_given = False
        args.reps = 1 if args.quick else 3
    else:
        args.reps_given = True
        if args.reps < 1:
            ap.error("--reps must be at least 1")
    return args


def select(args):
    allocs = builtin_allocs()
    if args.alloc:
        want = [x.strip() for x in args.alloc.split(",") if x.strip()]
        added = [s.split("=", 1)[0] for s in args.add_alloc]
        unknown = [w for w in want if w not in [a.name for a in allocs] + added]
        if unknown:
            sys.exit("unknown allocator(s): %s (built in: %s; others need --add-alloc NAME=lib.so)"
                     % (", ".join(unknown), ", ".join(a.name for a in allocs)))
        allocs = [a for a in allocs if a.name in want]
    for spec in args.add_alloc:
        if "=" not in spec:
            sys.exit("--add-alloc wants NAME=/path/lib.so, got %r" % spec)
        name, lib = spec.split("=", 1)
        lib = os.path.abspath(os.path.expanduser(lib))
        allocs = [a for a in allocs if a.name != name]
        al = Alloc(name, lib=lib, builtin=False)
        if not os.path.exists(lib):
            al.skip = "no such file: " + lib
        allocs.append(al)
    for spec in args.alloc_env:
        m = re.match(r"([^:]+):([A-Za-z_][A-Za-z0-9_]*)=(.*)$", spec)
        if not m:
            sys.exit("--alloc-env wants NAME:VAR=VALUE, got %r" % spec)
        for a in allocs:
            if a.name == m.group(1):
                a.env[m.group(2)] = m.group(3)
                a.notes.append("ran with %s=%s" % (m.group(2), m.group(3)))
    rows = build_rows(args.quick)
    if args.bench:
        want = [x.strip() for x in args.bench.split(",") if x.strip()]
        unknown = [w for w in want if w not in BENCH_NAMES]
        if unknown:
            sys.exit("unknown benchmark(s): %s (see --list)" % ", ".join(unknown))
        rows = [r for r in rows if r.bench in want]
    return allocs, rows


def list_all(args):
    rows = build_rows(args.quick)
    say("benchmarks (%s mode):" % ("quick" if args.quick else "full"))
    for b, desc in BENCHMARKS:
        brows = [r for r in rows if r.bench == b]
        say("  %-14s %s" % (b, desc))
        say("  %-14s rows: %s" % ("", ", ".join(r.label or r.bench for r in brows)))
    say("\nallocators: " + ", ".join(a.name for a in builtin_allocs()) + " (glibc = no preload; "
        "ebbmalloc = build/libebbmalloc.so; add others with --add-alloc NAME=/path/lib.so)")


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    # Ctrl-C or a kill stops the current run and still writes the report of
    # what was measured (also when started in the background, where SIGINT
    # arrives ignored).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    global RESULTS
    args = parse_args()
    if args.results:
        RESULTS = os.path.abspath(args.results)
    if args.list:
        list_all(args)
        return
    allocs, rows = select(args)
    os.makedirs(RESULTS, exist_ok=True)
    t_start = time.monotonic()
    log = open(os.path.join(RESULTS, "build.log"), "w")

    # What this run needs from Debian.
    pkgs = ["cmake", "gcc", "make", "libc6-dev", "libck-dev"]
    pkgs += [a.package for a in allocs if a.package]
    benches = set(r.bench for r in rows)
    if "redis" in benches:
        pkgs += ["redis-server", "redis-tools"]
    if "fastpath" in benches:
        pkgs += ["valgrind"]
    if "sqlite" in benches:
        pkgs += ["sqlite3"]
    if "postgres" in benches:
        pkgs += ["postgresql"]
    if not args.no_charts:
        pkgs += ["gnuplot-nox"]
    if not args.no_install:
        ensure_packages(pkgs, log)

    bench_bin, ebb_lib, ebb_why = build(args, log)
    for a in allocs:
        if a.name == "ebbmalloc" and a.builtin:
            if ebb_lib:
                a.lib = ebb_lib
            else:
                a.skip = "not built (%s); full log: bench/results/build.log" % ebb_why
        elif a.package and not a.skip:
            a.lib = package_file(a.package, a.soname)
            if not a.lib:
                a.skip = "%s is not installed (apt-get install %s)" % (a.soname, a.package)

    # Does each allocator start, and does it really take over malloc?
    probe = os.path.join(bench_bin, "bench_fastpath")
    for a in allocs:
        if a.skip:
            continue
        bound, err = malloc_binding(probe, a)
        if err:
            a.skip = "a trivial program fails with it preloaded (%s)" % err
        elif a.lib and bound not in ("unknown", os.path.basename(a.lib)):
            a.notes.append("does not replace malloc: the dynamic linker binds malloc to %s, so its rows "
                           "measure that instead" % bound)
        elif not a.lib and bound not in ("unknown",) and not bound.startswith("libc.so"):
            a.notes.append("malloc binds to %s without preload" % bound)
    for a in allocs:
        if a.skip:
            say("%s: skipped: %s" % (a.name, a.skip))
    active = [a for a in allocs if not a.skip]
    if not active:
        sys.exit("no allocator can be run")
    if "redis" in benches and not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        say("redis: skipped (redis-server/redis-benchmark not installed)")
        rows = [r for r in rows if r.bench != "redis"]
    if "sqlite" in benches and not shutil.which("sqlite3"):
        say("sqlite: skipped (sqlite3 not installed)")
        rows = [r for r in rows if r.bench != "sqlite"]
    pg_bins = glob.glob("/usr/lib/postgresql/*/bin/initdb") + [shutil.which("initdb") or "/nonexistent"]
    if "postgres" in benches and not any(os.path.exists(p) for p in pg_bins):
        say("postgres: skipped (initdb not installed: apt-get install postgresql)")
        rows = [r for r in rows if r.bench != "postgres"]
    if "fastpath" in benches and not (shutil.which("valgrind") and shutil.which("callgrind_annotate")):
        say("fastpath: skipped (valgrind not installed)")
        rows = [r for r in rows if r.bench != "fastpath"]

    info = machine_info(active)
    say("")
    for k, v in info:
        say("%-17s %s" % (k + ":", v))
    plan = [(r, (r.reps if (r.reps and not args.reps_given) else args.reps)) for r in rows]
    total = sum(n for _, n in plan) * len(active)
    say("\n%d rows x %d allocators (%s), %s: %d runs. Results: %s\n" % (
        len(rows), len(active), ", ".join(a.name for a in active),
        "reps %d" % args.reps + (" (memreturn a: 1)" if not args.quick and not args.reps_given else ""), total,
        os.path.relpath(RESULTS)))

    # Old timelines would otherwise be plotted as if they were this run's.
    for f in os.listdir(RESULTS):
        if f.startswith("timeline-") and f.endswith(".csv"):
            os.unlink(os.path.join(RESULTS, f))
    for f in os.listdir(os.path.join(RESULTS, "logs")) if os.path.isdir(os.path.join(RESULTS, "logs")) else []:
        os.unlink(os.path.join(RESULTS, "logs", f))

    runner = Runner(args, bench_bin)
    runs = {}
    done = 0
    est_total = sum(r.est * n for r, n in plan) * len(active)
    est_done = 0.0
    t_runs = time.monotonic()
    interrupted = False
    label_w = max(len(r.id) for r in rows) if rows else 10
    name_w = max(len(a.name) for a in active)
    try:
        for row, reps in plan:
            for rep in range(reps):
                # Interleaved: every allocator once per repetition, starting
                # one further along each time so no allocator always runs
                # first (right after a different program) or last.
                order = active[rep % len(active):] + active[:rep % len(active)]
                for a in order:
                    done += 1
                    el = time.monotonic() - t_runs
                    # Time left: the rows' rough costs, scaled by how this
                    # machine has kept up with them so far.
                    pace = el / est_done if est_done > 0 else 1.0
                    eta = (est_total - est_done) * pace
                    say("[%*d/%d ~%s left] %-*s  %-*s  rep %d/%d  " % (
                        len(str(total)), done, total, fmt_dur(eta) if done > 1 else "?:??", label_w, row.id,
                        name_w, a.name, rep + 1, reps), end="")
                    if a.timeouts >= 3:
                        run = Run()
                        run.status = "skipped"
                        run.note = "after 3 timeouts"
                    else:
                        run = runner.measure(row, a, rep + 1)
                    if run.status == "timeout":
                        a.timeouts += 1
                    runs.setdefault((row.id, a.name), []).append(run)
                    est_done += row.est
                    if run.ok and row.metric in run.values:
                        v = run.values[row.metric]
                        say("%s %s  %s MiB  %.1fs" % (fmt_num(v / row.scale), row.unit, fmt_mib(run.rss),
                                                      run.wall))
                    else:
                        say("%s %s" % (run.status.upper(), run.note[:100]))
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted: reporting what has been measured")

    cells = {}
    for row, reps in plan:
        rc = {}
        for a in active:
            rc[a.name] = cells[(row.id, a.name)] = Cell(row, runs.get((row.id, a.name), []), reps)
        compute_ratios(rc)
    elapsed = time.monotonic() - t_start
    report = Report(rows, active, cells, info, args, elapsed, interrupted)
    say(report.text())
    notes = report.notes()
    if notes:
        say("\nNotes:")
        for n in notes:
            say("  - " + n)
    skipped = [a for a in allocs if a.skip]
    charts = [] if args.no_charts else make_charts(report, rows)
    md = report.markdown(charts)
    if skipped:
        md += "\nSkipped allocators:\n\n" + "".join("- %s: %s\n" % (a.name, a.skip) for a in skipped)
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write(md)
    report.write_csv(os.path.join(RESULTS, "latest.csv"))
    report.write_runs_csv(os.path.join(RESULTS, "latest-runs.csv"))
    shutil.rmtree(runner.tmp, ignore_errors=True)
    say("\nwrote %s, latest.csv, latest-runs.csv%s in %s  (%s in total)" % (
        "latest.md", "".join(", " + os.path.basename(p) for p, _ in charts), os.path.relpath(RESULTS),
        fmt_dur(elapsed)))
    for a in allocs:
        if a.skip:
            say("%s was skipped: %s" % (a.name, a.skip))


if __name__ == "__main__":
    main()
