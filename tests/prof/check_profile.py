#!/usr/bin/env python3
"""check_profile.py: end-to-end tests of the heap profiler (issue 15).

Runs tests/prof/prof_sites (or prof_dlopen, or python3 under LD_PRELOAD)
with EBB_OPTIONS=prof=1,..., then reads the profile with the real tools,
google-pprof (Debian package google-perftools) and go tool pprof (golang-go),
and checks what they say against the truth the program knows.

  check_profile.py two_sites PROG        90/10 MiB sites within 10% (google-pprof --text),
                                         --alloc_space and --svg work (libunwind if installed)
  check_profile.py same_leaf PROG        stacks alike but past their first frames stay apart
  check_profile.py in_signal PROG        stacks through a signal frame (libgcc's, loaded then)
  check_profile.py two_sites_libgcc PROG the same with prof_unwind=libgcc
  check_profile.py go_pprof PROG         the same profile through go tool pprof -top
  check_profile.py leaks PROG            prof_leaks=1 names leak_here, about 8 MiB
  check_profile.py fork PROG             parent's and child's profiles, each its own sites
  check_profile.py realloc PROG          blocks grown and shrunk by realloc: live bytes per site within 10%
  check_profile.py double_free PROG      a sampled block freed twice: SIGABRT, report with its address
  check_profile.py realloc_kept PROG     the same, the second free a realloc: SIGABRT, report with its address
  check_profile.py threads PROG          4 threads sampling while profiles are written
  check_profile.py free_paths PROG       sampled blocks of every entry point leave the profile
  check_profile.py inner_paths PROG      sampled small blocks leave it once through realloc, another thread, ebb_free
  check_profile.py inner_forged PROG     a pointer inside a sampled small block is reported
  check_profile.py own_faults PROG       the profiler adds at most 17 minor page faults to a small
                                         2-thread program (fewest of 7 runs each, prof=1 against prof=0)
  check_profile.py size_keys PROG       sizes above prof_sample/16 a line per key of 4 bits after the leading one
  check_profile.py same_leaf_memalign PROG  same_leaf through posix_memalign (its frame cut off)
  check_profile.py big_calloc PROG       a sampled calloc of 256 MiB reads zero without making every page resident
  check_profile.py large_clock PROG      sampled large blocks count in the release of idle big bins
  check_profile.py sample_aside PROG     a fresh small sample run leaves a page-run block room to grow
  check_profile.py sample_realloc PROG   a sampled small block moves past its class as the block would
  check_profile.py patched PROG          malloc and calloc of 24 B-32 KiB in 4 threads: blocks of their own, calloc zero
  check_profile.py huge_moved PROG       a sampled huge block moved by realloc leaves the profile when freed
                                         through every freeing entry point
  check_profile.py huge PROG             requests of 2^63 bytes and more fail, sampling goes on
  check_profile.py before_tables PROG    nothing sampled: huge_moved and free_paths run before the tables exist
  check_profile.py dlopen PROG LIB       libebbmalloc.so dlopen'ed, ebb_malloc sampled
  check_profile.py reload PROG A B       stacks through a library loaded where a closed one was
  check_profile.py preload LIB           python3 under LD_PRELOAD writes prof_file at exit
  check_profile.py unwind_same LIB       the own walker's stacks are libgcc's (python3, sqlite3)

Exit status: 0 pass, 1 fail, 77 a tool is missing (ctest SKIP_RETURN_CODE).
"""
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

MiB = 1 << 20


def fail(msg):
    print("check_profile: FAIL: " + msg)
    sys.exit(1)


def skip(msg):
    print("check_profile: SKIP: " + msg)
    sys.exit(77)


def run(cmd, env_extra=None, check=True, **kw):
    env = dict(os.environ)
    env.pop("EBB_OPTIONS", None)
    if env_extra:
        env.update(env_extra)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        fail("%s exited %d\nstdout: %s\nstderr: %s" % (" ".join(cmd), r.returncode, r.stdout[-3000:],
                                                          r.stderr[-3000:]))
    return r


def need_pprof():
    tool = shutil.which("google-pprof") or shutil.which("pprof")
    if tool is None:
        skip("google-pprof not installed (apt-get install google-perftools)")
    return tool


def pprof_flat(tool, prog, profile, extra=()):
    """{function: flat MiB} from google-pprof --text (inuse_space)."""
    r = run([tool, "--text"] + list(extra) + [prog, profile])
    flat = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)\s+[\d.]+%\s+[\d.]+%\s+[\d.]+\s+[\d.]+%\s+(\S+)", line)
        if m:
            flat[m.group(2)] = flat.get(m.group(2), 0.0) + float(m.group(1))
    if not flat:
        fail("google-pprof --text printed no rows:\n" + r.stdout + r.stderr)
    return flat, r.stdout


def check_near(what, got, want, tol):
    err = abs(got - want) / want
    print("  %-8s %7.2f MiB (truth %5.1f MiB, error %4.1f%%)" % (what, got, want, 100 * err))
    if err > tol:
        fail("%s: %.2f MiB, more than %d%% away from %.1f MiB" % (what, got, int(tol * 100), want))


def two_sites(prog, tmp, unwind="auto"):
    tool = need_pprof()
    out = os.path.join(tmp, "two.heap")
    run([prog, "two_sites", out], {"EBB_OPTIONS": "prof=1,prof_sample=4096,prof_unwind=" + unwind})
    flat, text = pprof_flat(tool, prog, out)
    print(text)
    check_near("site_a", flat.get("site_a", 0.0), 90.0, 0.10)
    check_near("site_b", flat.get("site_b", 0.0), 10.0, 0.10)
    # The totals since start hold the churn too: 90 + 10 + 100 MiB.
    aflat, atext = pprof_flat(tool, prog, out, ["--alloc_space"])
    check_near("churn", aflat.get("churn", 0.0), 100.0, 0.10)
    if shutil.which("dot"):
        r = run([tool, "--svg", prog, out])
        if "<svg" not in r.stdout or "site_a" not in r.stdout:
            fail("google-pprof --svg gave no graph with site_a:\n" + r.stdout[:500] + r.stderr[-500:])
        print("  --svg: ok")
    else:
        print("  --svg not tried (no graphviz dot)")


def same_leaf(prog, tmp, how=()):
    """Two stacks that differ only past their first frames (same return
    address and stack pointer in the allocating function): each keeps its
    own bytes, 3 000 000 through leaf_via_a, 1 000 000 through leaf_via_b.
    Every allocation is sampled (prof_sample=1), so the figures are exact
    but for pprof's rounding to 0.1 MB (5% of via_b); a stack taken for
    the other's would be off by all of it."""
    tool = need_pprof()
    out = os.path.join(tmp, "leaf.heap")
    run([prog, "same_leaf", out] + list(how), {"EBB_OPTIONS": "prof=1,prof_sample=1"})
    r = run([tool, "--text", "--cum", prog, out])
    cum = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+%\s+[\d.]+%\s+([\d.]+)\s+[\d.]+%\s+(\S+)", line)
        if m:
            cum[m.group(2)] = float(m.group(1))
    print(r.stdout)
    check_near("via_a", cum.get("leaf_via_a", 0.0), 3e6 / 2**20, 0.15)
    check_near("via_b", cum.get("leaf_via_b", 0.0), 1e6 / 2**20, 0.15)


def in_signal(prog, tmp):
    """Stacks through a signal frame: the own walker gives them to libgcc's
    unwinder, loaded the first time (os_unwind). 200 blocks of 5 000 bytes
    from signal_site, every allocation sampled (prof_sample=1)."""
    tool = need_pprof()
    out = os.path.join(tmp, "signal.heap")
    run([prog, "in_signal", out], {"EBB_OPTIONS": "prof=1,prof_sample=1"})
    flat, text = pprof_flat(tool, prog, out)
    print(text)
    check_near("signal", flat.get("signal_site", 0.0), 1e6 / 2**20, 0.15)
    if "main" not in text:
        fail("the stacks from the handler do not reach main")


def realloc_sites(prog, tmp):
    """A realloc that moves is a free and a new allocation of the new size;
    a sampled block shrunk to a small one leaves its sample (and site)."""
    tool = need_pprof()
    out = os.path.join(tmp, "realloc.heap")
    run([prog, "realloc", out], {"EBB_OPTIONS": "prof=1,prof_sample=4096"})
    flat, text = pprof_flat(tool, prog, out)
    print(text)
    check_near("grow", flat.get("grow_site", 0.0), 30.0, 0.10)
    check_near("site_b", flat.get("site_b", 0.0), 10.0, 0.10)
    shrunk = flat.get("shrink_site", 0.0)
    print("  shrink   %7.2f MiB (truth 0.005 MiB)" % shrunk)
    if shrunk > 0.5:
        fail("shrink_site: %.2f MiB live, its blocks are 16 B now" % shrunk)


def double_free(prog, tmp, mode="double_free", want="double free"):
    """A freed sample block the profiler keeps for reuse is still caught
    when freed again (mode realloc_kept: by a realloc it would hold in
    place); mode inner_forged: a pointer inside a sampled small block, not
    the one the program got, is reported as one that starts no block (want),
    not taken for the sample."""
    env = dict(os.environ)
    env["EBB_OPTIONS"] = "prof=1,prof_sample=1"
    r = subprocess.run([prog, mode], env=env, capture_output=True, text=True, timeout=60)
    m = re.search(r"block (0x[0-9a-f]+)", r.stdout)
    print("  exit %d, stdout %r, stderr %r" % (r.returncode, r.stdout.strip(), r.stderr.strip()[-300:]))
    if m is None:
        fail("the program printed no block address")
    if r.returncode != -6:
        fail("%s of a sampled block: want SIGABRT (-6), got %d" % (mode, r.returncode))
    if want not in r.stderr or m.group(1) not in r.stderr:
        fail("the report does not say %r of %s: %r" % (want, m.group(1), r.stderr))


def live_objects(path):
    with open(path) as f:
        m = re.match(r"heap profile: (\d+): (\d+) \[(\d+): (\d+)\]", f.readline())
    if m is None:
        fail("%s: no heap profile header" % path)
    return int(m.group(1)), int(m.group(3))


def rate(prog, tmp):
    """The draws are exponential with mean prof_sample: an allocation of s
    bytes is sampled with probability 1 - exp(-s / prof_sample), whatever
    came before it (pprof's unsampling assumes exactly that). Small blocks
    test the mean (256 B at 4 KiB: p = 0.0606), big ones the shape (64 KiB
    at 64 KiB: p = 0.632, where a draw of the right mean but another
    distribution is off). Tolerances are about 5 standard deviations."""
    for size, count, sample, tol in ((256, 2000000, 4096, 0.015), (65536, 20000, 65536, 0.03)):
        path = os.path.join(tmp, "rate.heap")
        run([prog, "rate", str(size), str(count), path],
            {"EBB_OPTIONS": "prof=1,prof_sample=%d,background_thread=0" % sample})
        got = live_objects(path)[1]
        want = count * (1 - math.exp(-size / sample))
        print("  %d x %d B at prof_sample=%d: %d sampled, %.0f expected (%.4f)" %
              (count, size, sample, got, want, got / want))
        if abs(got / want - 1) > tol:
            fail("%d samples of %d blocks of %d B at prof_sample=%d, expected %.0f (within %.1f%%)" %
                 (got, count, size, sample, want, tol * 100))


def huge(prog, tmp):
    """Requests no block holds (2^46 + 1 bytes up to SIZE_MAX) fail with
    ENOMEM through malloc, posix_memalign, aligned_alloc, memalign and
    calloc, and sampling goes on after each: the tick counts down on the
    borrow, so a size of 2^63 or more does not wrap the distance to a huge
    positive one (core/process/prof.h, prof_tick). 20 000 blocks of 256 B
    at prof_sample=4096 are about 1 212 samples; fewer than 600 fails."""
    path = os.path.join(tmp, "huge.heap")
    r = run([prog, "huge", path], {"EBB_OPTIONS": "prof=1,prof_sample=4096,background_thread=0"}, check=False)
    if r.returncode != 0:
        fail("prof_sites huge exited %d (2: a request did not fail with ENOMEM): %s %s" %
             (r.returncode, r.stdout.strip(), r.stderr.strip()))
    before = 0
    for i in range(20):
        got = live_objects("%s.%d" % (path, i))[1]
        if got - before < 600:
            fail("round %d: %d samples after the huge request, expected about 1 212" % (i, got - before))
        before = got
    print("  20 huge requests failed with ENOMEM; %d samples of 256 B after them" % before)


def seed(prog, tmp):
    """prof_seed=N fixes the sample points (bench/prof_overhead compares the
    instruction totals of prof=1 runs with it): the same N samples the same
    blocks in every run, other Ns other blocks. 20 000 blocks of 1 000 B at
    prof_sample=4096: about 4 300 samples, whose count alone differs between
    two seeds with probability about 0.993 (three seeds all alike: < 1e-4)."""
    def sampled(extra):
        path = os.path.join(tmp, "seed.heap")
        run([prog, "rate", "1000", "20000", path],
            {"EBB_OPTIONS": "prof=1,prof_sample=4096,background_thread=0" + extra})
        with open(path) as f:
            return f.readline().split("@")[0]
    first = sampled(",prof_seed=7")
    for i in range(2):
        again = sampled(",prof_seed=7")
        if again != first:
            fail("prof_seed=7 sampled %s, then %s" % (first, again))
    others = {sampled(",prof_seed=%d" % n) for n in (8, 9, 1 << 40)}
    print("  prof_seed=7: %s; 8, 9, 2^40: %s" % (first, sorted(others)))
    if others == {first}:
        fail("prof_seed=8, 9 and 2^40 sampled what 7 did: %s" % first)


def size_keys(prog, tmp):
    """Sizes above prof_sample / 16 share a line of their site when they
    agree in their leading bit and the 4 bits after it (prof_key): pprof
    scales a line by its mean size, off by at most 3.3e-5 of its bytes for
    such a spread. 600 000, 600 001 and 610 000 share a line (their key is
    589 824); 630 000 (key 622 592) has one of its own. Every block is
    sampled (prof_sample=1) and live at the dump."""
    path = os.path.join(tmp, "sizes.heap")
    run([prog, "sizes", path, "600000", "600001", "610000", "630000"],
        {"EBB_OPTIONS": "prof=1,prof_sample=1,background_thread=0"})
    lines = set()
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*(\d+): (\d+) \[", line)
            if m and not line.startswith("heap profile"):
                lines.add((int(m.group(1)), int(m.group(2))))
    print("  lines (live n, live bytes):", sorted(l for l in lines if l[1] >= 600000))
    for want in ((3, 600000 + 600001 + 610000), (1, 630000)):
        if want not in lines:
            fail("no profile line of %d live blocks, %d bytes (lines: %s)" % (want[0], want[1], sorted(lines)))


def kept_sizes(prog, tmp):
    """Every allocation sampled (prof_sample=1): freed sample blocks serve
    later samples of every size up to 32 KiB, without the page heap."""
    r = run([prog, "kept_sizes"], {"EBB_OPTIONS": "prof=1,prof_sample=1,background_thread=0"})
    print("  " + r.stdout.strip().splitlines()[-1])


def big_calloc(prog, tmp):
    """Every allocation sampled (prof_sample=1): a calloc of 256 MiB reads
    zero and makes resident little more than the pages it reads."""
    r = run([prog, "big_calloc"], {"EBB_OPTIONS": "prof=1,prof_sample=1,background_thread=0"}, check=False)
    if r.returncode != 0:
        fail("prof_sites big_calloc exited %d (1: not zero, 2: the whole block made resident, 3: NULL): %s %s" %
             (r.returncode, r.stdout.strip(), r.stderr.strip()))
    print("  " + r.stdout.strip().splitlines()[-1])


def large_clock(prog, tmp):
    """Sampled large blocks count as the thread's large allocations: a bin
    of 8 KiB blocks idle over them is given back (big_bins_release)."""
    r = run([prog, "large_clock"], {"EBB_OPTIONS": "prof=1,background_thread=0"}, check=False)
    if r.returncode != 0:
        fail("prof_sites large_clock exited %d (1: the idle bin was kept, 2: nothing cached to start with): %s %s" %
             (r.returncode, r.stdout.strip(), r.stderr.strip()))
    print("  " + r.stdout.strip().splitlines()[-1])


def sample_aside(prog, tmp):
    """Every allocation sampled (prof_sample=1): a fresh sample run of a
    small block does not take the free pages right of a page-run block, so
    that block still grows in place (the sample runs come from the
    profiler's own page heap, page_heap_prof)."""
    r = run([prog, "sample_aside"], {"EBB_OPTIONS": "prof=1,prof_sample=1,background_thread=0,decay_ms=-1"},
            check=False)
    if r.returncode != 0:
        fail("prof_sites sample_aside exited %d (1: the block moved, 2: runs not placed as the test needs, "
             "3: contents lost): %s %s" % (r.returncode, r.stdout.strip(), r.stderr.strip()))
    print("  " + r.stdout.strip().splitlines()[-1])


def sample_realloc(prog, tmp):
    """Every allocation sampled (prof_sample=1): a sampled small block is
    resized as that small block, moved past its class's size though its
    page run would hold the size."""
    r = run([prog, "sample_realloc"], {"EBB_OPTIONS": "prof=1,prof_sample=1,background_thread=0,decay_ms=-1"},
            check=False)
    if r.returncode != 0:
        fail("prof_sites sample_realloc exited %d (1: resized in place, 3: contents lost): %s %s" %
             (r.returncode, r.stdout.strip(), r.stderr.strip()))
    print("  " + r.stdout.strip().splitlines()[-1])


def patched(prog, tmp):
    """The patched variants (core/process/prof.h: the countdown and the
    cache pointer loaded with their TLS offsets written in) of malloc and
    calloc, mid sizes included, in 4 threads, sampling now and then: each
    thread gets blocks of its own, and calloc's read zero."""
    r = run([prog, "patched"], {"EBB_OPTIONS": "prof=1,prof_sample=256K"}, check=False)
    if r.returncode != 0:
        fail("prof_sites patched exited %d (1: a calloc not zero, 2: a held block overwritten): %s %s" %
             (r.returncode, r.stdout.strip(), r.stderr.strip()))
    print("  " + r.stdout.strip().splitlines()[-1])


def own_faults(prog, tmp):
    """The profiler's own pages are a constant per process, which shows as
    a ratio on a small program's faults (bench cache-thrash t=2: about 105).
    Measured with `perf record -e page-faults -d` (docs/profiler-overhead.md):
    7 in a process that samples (the one code page written at start-up,
    the tables' page (made at the first sample, the first carving beside
    the heads), the rule cache's home page, libc's unwind tables (2), the
    filter (gone since: the span's sampled mark answers realloc), the
    first sample run), 8 before the heads and the carving
    chunk shared a page, 12-14 before the patched code shared
    a page, the rule cache filled one page first and the program's link
    map was read without dlinfo, 16-18 before the replay entries and the
    kept filter moved into pages used anyway, about 26 before the tables
    shared a page; 13 since the sample runs come from a page heap of their
    own (page_heap_prof: its slot in the heap table, its superblock's
    header pages). The bound (17) leaves room for the sample points and
    catches a table or code with pages of its own again. Decay off on both
    sides, so that only the sample points differ."""
    def faults(opts):
        env = dict(os.environ)
        env["EBB_OPTIONS"] = opts + ",decay_ms=-1,background_thread=0"
        p = subprocess.Popen([prog, "small"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        if status != 0:
            fail("prof_sites small exited with status %d" % status)
        return ru.ru_minflt
    # The fewest of each, not the medians: the scheduler only adds faults
    # (a thread that moves to the other CPU touches that CPU's central
    # lists too): beside 3 busy loops, 1 check in 12 read +19 by medians
    # where the fewest of the same runs read +14.
    off, on = [], []
    for _ in range(7):
        off.append(faults("prof=0"))
        on.append(faults("prof=1"))
    off.sort()
    on.sort()
    extra = on[0] - off[0]
    print("  minor faults, fewest of 7: prof=0 %d, prof=1 %d (+%d); runs %s / %s" % (off[0], on[0], extra, off, on))
    if extra > 17:
        fail("the profiler added %d minor faults to a small program (at most 17)" % extra)


def free_paths(prog, tmp):
    """Every allocation sampled (prof_sample=1): 7 entry points x 8 blocks
    are live in the second profile, and gone from the third whichever way
    they were freed (free, free_sized, realloc(p, 0), free_aligned_sized,
    operator delete, sized delete; ebb_* in a build without the standard
    names)."""
    out = os.path.join(tmp, "paths.heap")
    # No background thread: its start (at the first freed pages) allocates
    # its TLS in libc, a block that stays live and is sampled too.
    run([prog, "free_paths", out], {"EBB_OPTIONS": "prof=1,prof_sample=1,background_thread=0"})
    (l0, a0), (l1, a1), (l2, a2) = (live_objects(out + ".%d" % i) for i in range(3))
    print("  live sampled objects: %d before, %d with the blocks, %d after; sampled since start %d" %
          (l0, l1, l2, a2))
    if l1 - l0 != 7 * 8:
        fail("%d blocks live after allocating 56 (every one sampled)" % (l1 - l0))
    if l2 != l0:
        fail("%d sampled blocks still live after every one was freed" % (l2 - l0))


def live_bytes(path):
    with open(path) as f:
        m = re.match(r"heap profile: (\d+): (\d+) \[", f.readline())
    if m is None:
        fail("%s: no heap profile header" % path)
    return int(m.group(1)), int(m.group(2))


def inner_paths(prog, tmp):
    """Every allocation sampled (prof_sample=1): 4 x 8 small blocks (inner
    samples) are live in the second profile (8 of them moved by realloc to
    another sample, 8 resized in place), and gone from the third after
    their frees (the moved ones, the kept ones, another thread's free,
    ebb_free): each dropped exactly once, so the live count is back where
    it was, and 40 samples were taken (the 32 and the 8 moves)."""
    out = os.path.join(tmp, "inner.heap")
    r = run([prog, "inner_paths", out], {"EBB_OPTIONS": "prof=1,prof_sample=1,background_thread=0"}, check=False)
    if r.returncode != 0:
        fail("prof_sites inner_paths exited %d: %s" % (r.returncode, r.stderr[-2000:]))
    (l0, a0), (l1, a1), (l2, a2) = (live_objects(out + ".%d" % i) for i in range(3))
    print("  live sampled objects: %d before, %d with the blocks, %d after; sampled %d" % (l0, l1, l2, a1 - a0))
    if l1 - l0 != 4 * 8:
        fail("%d blocks live with 32 live" % (l1 - l0))
    if l2 != l0:
        fail("%d sampled blocks still live after every one was freed" % (l2 - l0))
    if a1 - a0 != 5 * 8:
        fail("%d samples taken for 32 blocks and 8 moves" % (a1 - a0))


def huge_moved(prog, tmp):
    """Every allocation sampled (prof_sample=1): a huge block grown by
    realloc until mremap moved it is live once in the second profile, and
    gone from the third after its free and the free of blocks of another
    site made at its old addresses."""
    out = os.path.join(tmp, "moved.heap")
    r = run([prog, "huge_moved", out], {"EBB_OPTIONS": "prof=1,prof_sample=1,background_thread=0"}, check=False)
    if r.returncode == 77:
        skip("realloc never moved the huge block")
    if r.returncode != 0:
        fail("prof_sites huge_moved exited %d: %s" % (r.returncode, r.stderr))
    (n0, b0), (n1, b1), (n2, b2) = (live_bytes(out + ".%d" % i) for i in range(3))
    print("  live sampled objects/bytes: %d/%d before, %d/%d with the block, %d/%d after" %
          (n0, b0, n1, b1, n2, b2))
    if n1 - n0 != 1:
        fail("%d blocks live with one moved block live" % (n1 - n0))
    if (n2, b2) != (n0, b0):
        fail("%d sampled blocks (%d bytes) still live after every one was freed" % (n2 - n0, b2 - b0))


def before_tables(prog, tmp):
    """prof on, nothing sampled (prof_sample=1T): the tables are made at
    the first sample (prof.c, prof_tables_make), so every path that reads
    them runs before they exist: page runs and a huge block freed (the free
    hook), grown and moved by realloc (prof_resize_begin, the kept filter's
    zero table), blocks of every entry point freed every way, and profiles
    written with no site. Each must run and write a profile with no
    sample."""
    opts = {"EBB_OPTIONS": "prof=1,prof_sample=1T,background_thread=0"}
    for mode in ("huge_moved", "free_paths"):
        out = os.path.join(tmp, mode + ".heap")
        r = run([prog, mode, out], opts, check=False)
        if r.returncode not in (0, 77):
            fail("prof_sites %s with nothing sampled exited %d: %s" % (mode, r.returncode, r.stderr[-2000:]))
        for i in range(3):
            with open(out + ".%d" % i) as f:
                head = f.readline().strip()
            if not head.startswith("heap profile: 0: 0 [0: 0] @ heap_v2/"):
                fail("%s.%d: %r, where nothing was sampled" % (mode, i, head))
        print("  %s: exit %d, 3 empty profiles" % (mode, r.returncode))


def go_units(v, unit):
    return float(v) * {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[unit] / MiB


def go_pprof(prog, tmp):
    go = shutil.which("go")
    if go is None:
        skip("go not installed (apt-get install golang-go)")
    out = os.path.join(tmp, "two.heap")
    run([prog, "two_sites", out], {"EBB_OPTIONS": "prof=1,prof_sample=4096"})
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    env = {"HOME": home, "GOCACHE": os.path.join(home, "cache"), "GOPATH": os.path.join(home, "go"),
           "PPROF_TMPDIR": home, "GOFLAGS": "", "GOTOOLCHAIN": "local"}
    # go tool pprof symbolizes Go binaries only (its own object reader wants
    # .gopclntab): for a C program it reads the profile, scales it and
    # attributes it to addresses, which addr2line names here.
    r = run([go, "tool", "pprof", "-top", "-addresses", "-sample_index=inuse_space", prog, out], env)
    print(r.stdout)
    base = None
    with open(out) as f:
        for line in f:
            cols = line.split()
            if len(cols) >= 6 and cols[2] == "00000000" and os.path.realpath(cols[5]) == os.path.realpath(prog):
                base = int(cols[0].split("-")[0], 16)
                break
    if base is None:
        fail("the profile's MAPPED_LIBRARIES has no mapping of " + prog)
    flat = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)(B|kB|MB|GB)\s+[\d.]+%\s+[\d.]+%\s+[\d.]+(?:B|kB|MB|GB)?\s+[\d.]+%\s+"
                     r"([0-9a-f]+)\s", line)
        if m:
            addr = int(m.group(3), 16) - base
            fn = run(["addr2line", "-f", "-e", prog, "0x%x" % addr]).stdout.split("\n")[0]
            flat[fn] = flat.get(fn, 0.0) + go_units(m.group(1), m.group(2))
    print("  functions of the -top addresses: %s" % {k: round(v, 2) for k, v in flat.items()})
    check_near("site_a", flat.get("site_a", 0.0), 90.0, 0.10)
    check_near("site_b", flat.get("site_b", 0.0), 10.0, 0.10)


def leaks(prog, tmp):
    r = run([prog, "leak"], {"EBB_OPTIONS": "prof=1,prof_sample=4096,prof_leaks=1"})
    print(r.stderr)
    lines = r.stderr.splitlines()
    head = [i for i, l in enumerate(lines) if "prof_leaks:" in l]
    if not head:
        fail("no prof_leaks report on stderr")
    first = [i for i, l in enumerate(lines) if "#1:" in l]
    if not first:
        fail("the report lists no site")
    # The largest site first, and its stack names leak_here.
    block = "\n".join(lines[first[0]:first[0] + 4])
    if "leak_here" not in block:
        fail("the first site of the report is not leak_here:\n" + block)
    m = re.search(r"#1: about ([\d.]+) (KiB|MiB)", lines[first[0]])
    mib = float(m.group(1)) / (1024 if m.group(2) == "KiB" else 1) if m else 0
    check_near("leak", mib, 8.0, 0.15)
    if "site_b" in r.stderr:
        fail("site_b's blocks were all freed but the report names it")


def fork(prog, tmp):
    tool = need_pprof()
    out = os.path.join(tmp, "fork.heap")
    run([prog, "fork", out], {"EBB_OPTIONS": "prof=1,prof_sample=4096"})
    pflat, ptext = pprof_flat(tool, prog, out + ".parent")
    cflat, ctext = pprof_flat(tool, prog, out + ".child")
    print("parent:\n" + ptext + "child:\n" + ctext)
    check_near("parent", pflat.get("parent_site", 0.0), 6.0, 0.15)
    if "child_site" in pflat:
        fail("the parent's profile shows the child's site")
    check_near("child", cflat.get("child_site", 0.0), 12.0, 0.15)
    check_near("inherit", cflat.get("parent_site", 0.0), 6.0, 0.15)


def threads(prog, tmp):
    out = os.path.join(tmp, "threads.heap")
    run([prog, "threads", out], {"EBB_OPTIONS": "prof=1,prof_sample=4096"}, timeout=600)
    with open(out) as f:
        text = f.read()
    m = re.match(r"heap profile: *(\d+): *(\d+) *\[ *(\d+): *(\d+) *\] *@ heap_v2/4096\n", text)
    if not m or "MAPPED_LIBRARIES:" not in text:
        fail("not a heap profile:\n" + text[:300])
    # 4 threads x 100000 mallocs of 16 B to 8 KiB, about 1.6 GB: ~400000 samples.
    if int(m.group(3)) < 10000:
        fail("only %s allocations sampled" % m.group(3))
    # The threads freed all they allocated; what may remain is libc's own
    # (a joined thread's cached stack keeps its TLS vector), a few small blocks.
    if int(m.group(1)) > 8 or int(m.group(2)) > 65536:
        fail("%s sampled blocks (%s bytes) live after every thread freed all" % (m.group(1), m.group(2)))
    print("  threads: %s allocations sampled; live at the end: %s blocks, %s bytes"
          % (m.group(3), m.group(1), m.group(2)))


def dlopen(prog, lib, tmp):
    tool = need_pprof()
    out = os.path.join(tmp, "dl.heap")
    run([prog, lib, out], {"EBB_OPTIONS": "prof=1,prof_sample=4096"})
    flat, text = pprof_flat(tool, prog, out)
    print(text)
    check_near("dl_site", flat.get("dl_site", 0.0), 16.0, 0.10)


def preload(lib, tmp):
    tool = need_pprof()
    # Debian's own python3 (built -O2 without frame pointers, linked -z now).
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
    live = os.path.join(tmp, "live.heap")
    at_exit = os.path.join(tmp, "py.%p.heap")
    code = ("import ctypes\n"
            "x = [bytes(1000 + i %% 7) for i in range(60000)]\n"
            "assert ctypes.CDLL(None).ebb_prof_dump(%r.encode()) == 0\n" % live)
    # prof_sample=64 KiB: about 940 samples of the 60 MiB, so the total is
    # within 50-90 MiB by 5 standard deviations; at the default rate (about
    # 117 samples, 9%) 1 run in 25-40 read below 50 (45.6 MiB).
    r = run([py, "-c", code], {"LD_PRELOAD": lib, "EBB_OPTIONS": "prof=1,prof_sample=65536,prof_file=" + at_exit})
    if r.stderr.strip():
        fail("python3 under LD_PRELOAD wrote to stderr:\n" + r.stderr)
    files = [f for f in os.listdir(tmp) if f.startswith("py.") and f.endswith(".heap")]
    if len(files) != 1:
        fail("expected one profile written at exit (prof_file), found %s" % files)
    flat, text = pprof_flat(tool, os.path.realpath(py), live)
    print("\n".join(text.splitlines()[:12]))
    total = sum(flat.values())
    # 60000 bytes objects of ~1 KiB each, live at the dump.
    if total < 50 or total > 90:
        fail("python3's profile totals %.1f MiB, not the ~60 MiB it holds" % total)
    r = run([tool, "--text", "--cum", os.path.realpath(py), live])
    if not re.search(r"\b_?Py\w+", r.stdout):
        fail("no Python function in python3's profile: symbols did not resolve\n" + r.stdout[:2000])


def profile_stacks(path):
    """The stacks of a profile's lines whose blocks average 64 bytes or
    more (sampled with probability 1 - exp(-64) at prof_sample=1: always),
    each frame as (object, offset in its file) from the profile's mappings:
    a library dlopen'ed later lands where the memory mapped before it left
    room, which differs from run to run."""
    lines, maps = [], []
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*\d+: \d+ \[\s*(\d+): (\d+)\] @(.*)", line)
            if m and int(m.group(1)) > 0 and int(m.group(2)) >= 64 * int(m.group(1)):
                lines.append(m.group(3).split())
                continue
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s+(/\S+)", line)
            if m:
                maps.append((int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16), m.group(4)))

    def where(addr):
        a = int(addr, 16)
        for lo, hi, off, name in maps:
            if lo <= a < hi:
                return "%s+%x" % (os.path.basename(name), a - lo + off)
        return addr

    return set(" ".join(where(a) for a in frames) for frames in lines)


def reload(prog, lib_a, lib_b, tmp):
    """prof_reload.c: after library a was sampled through and dlclose'd,
    library b (same code offsets, another frame size) is loaded, normally
    at a's address. Every stack through b must name b and go on past it
    into the program (reload_run, main): a rule cached for a and applied to
    b's frame would end the stack inside b instead."""
    out = os.path.join(tmp, "reload.heap")
    r = run([prog, lib_a, lib_b, out], {"EBB_OPTIONS": "prof=1,prof_sample=1"})
    print("  libraries: " + r.stdout.strip())
    a_name, b_name, p_name = (os.path.basename(x) for x in (lib_a, lib_b, prog))
    through_b = 0
    for st in profile_stacks(out):
        frames = [f.split("+")[0] for f in st.split()]
        if a_name in frames:
            fail("a live stack names the closed library %s: %s" % (a_name, st))
        if b_name not in frames:
            continue
        through_b += 1
        last_b = max(i for i, f in enumerate(frames) if f == b_name)
        if p_name not in frames[last_b + 1:]:
            fail("a stack through %s ends inside it (a stale rule?): %s" % (b_name, st))
    if through_b == 0:
        fail("no sampled stack goes through %s" % b_name)
    print("  %d stack(s) through %s, each going on into %s" % (through_b, b_name, p_name))


def unwind_same(lib, tmp):
    """The own walker (prof_unwind=auto) gives the stacks libgcc's unwinder
    gives, on Debian's python3 and sqlite3 (built -O2 without frame
    pointers) under LD_PRELOAD: every allocation sampled (prof_sample=1),
    address randomization off (setarch -R), frames compared as object and
    offset. The programs are not exactly repeatable (python3's imports, a
    few allocations of ld.so), so a few stacks may appear in one run only;
    a walker that got frames wrong would differ on most."""
    setarch = shutil.which("setarch")
    if setarch is None or subprocess.run([setarch, "x86_64", "-R", "true"]).returncode != 0:
        skip("setarch -R is not available here")
    sql = ("create table t(a integer primary key, b text);\n"
           "with recursive r(i) as (select 1 union all select i + 1 from r where i < 3000) "
           "insert into t select i, printf('%.*c', i % 900, 'x') from r;\n"
           "create index tb on t(b);\n"
           "select count(*), sum(length(b)) from t group by a % 7;\n")
    py = ("import json, sqlite3\n"
          "d = {str(i): [i, 'x' * (i % 700)] for i in range(3000)}\n"
          "json.loads(json.dumps(d))\n"
          "db = sqlite3.connect(':memory:')\n"
          "db.execute('create table t(a, b)')\n"
          "db.executemany('insert into t values (?, ?)', ((i, 'y' * 1500) for i in range(500)))\n")
    progs = [("python3", ["/usr/bin/python3", "-c", py], None), ("sqlite3", ["/usr/bin/sqlite3", ":memory:"], sql)]
    tried = 0
    for name, cmd, stdin in progs:
        if not os.path.exists(cmd[0]):
            print("  %s: not installed, left out" % cmd[0])
            continue
        tried += 1
        got = {}
        for unwind in ("auto", "libgcc"):
            out = os.path.join(tmp, "%s.%s.heap" % (name, unwind))
            env = {"LD_PRELOAD": lib, "PYTHONHASHSEED": "0",
                   "EBB_OPTIONS": "prof=1,prof_sample=1,prof_unwind=%s,prof_file=%s" % (unwind, out)}
            run([setarch, "x86_64", "-R"] + cmd, env, input=stdin)
            got[unwind] = profile_stacks(out)
        a, b = got["auto"], got["libgcc"]
        differ = len(a ^ b)
        deep = sum(1 for st in a if len(st.split()) >= 8)
        print("  %s: %d stacks (%d of 8 frames or more) with auto, %d with libgcc, %d in one only"
              % (name, len(a), deep, len(b), differ))
        if len(a) < 100 or deep < 20:
            fail("%s: too few stacks to compare (%d)" % (name, len(a)))
        if differ > max(4, len(a | b) // 100):
            for s in sorted(a - b)[:5]:
                print("    auto only:   " + s[:300])
            for s in sorted(b - a)[:5]:
                print("    libgcc only: " + s[:300])
            fail("%s: %d of %d stacks differ between the own walker and libgcc's" % (name, differ, len(a | b)))
    if tried == 0:
        skip("neither /usr/bin/python3 nor /usr/bin/sqlite3 is installed")


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    mode = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="ebb-prof.")
    try:
        if mode == "two_sites":
            two_sites(sys.argv[2], tmp)
        elif mode == "two_sites_libgcc":
            two_sites(sys.argv[2], tmp, "libgcc")
        elif mode == "go_pprof":
            go_pprof(sys.argv[2], tmp)
        elif mode == "leaks":
            leaks(sys.argv[2], tmp)
        elif mode == "fork":
            fork(sys.argv[2], tmp)
        elif mode == "same_leaf":
            same_leaf(sys.argv[2], tmp)
        elif mode == "same_leaf_memalign":
            same_leaf(sys.argv[2], tmp, ["memalign"])
        elif mode == "in_signal":
            in_signal(sys.argv[2], tmp)
        elif mode == "realloc":
            realloc_sites(sys.argv[2], tmp)
        elif mode == "double_free":
            double_free(sys.argv[2], tmp)
        elif mode == "realloc_kept":
            double_free(sys.argv[2], tmp, "realloc_kept")
        elif mode == "inner_forged":
            double_free(sys.argv[2], tmp, "inner_forged", "not the start of a block")
        elif mode == "huge":
            huge(sys.argv[2], tmp)
        elif mode == "rate":
            rate(sys.argv[2], tmp)
        elif mode == "seed":
            seed(sys.argv[2], tmp)
        elif mode == "size_keys":
            size_keys(sys.argv[2], tmp)
        elif mode == "kept_sizes":
            kept_sizes(sys.argv[2], tmp)
        elif mode == "big_calloc":
            big_calloc(sys.argv[2], tmp)
        elif mode == "patched":
            patched(sys.argv[2], tmp)
        elif mode == "large_clock":
            large_clock(sys.argv[2], tmp)
        elif mode == "sample_aside":
            sample_aside(sys.argv[2], tmp)
        elif mode == "sample_realloc":
            sample_realloc(sys.argv[2], tmp)
        elif mode == "own_faults":
            own_faults(sys.argv[2], tmp)
        elif mode == "free_paths":
            free_paths(sys.argv[2], tmp)
        elif mode == "inner_paths":
            inner_paths(sys.argv[2], tmp)
        elif mode == "huge_moved":
            huge_moved(sys.argv[2], tmp)
        elif mode == "before_tables":
            before_tables(sys.argv[2], tmp)
        elif mode == "threads":
            threads(sys.argv[2], tmp)
        elif mode == "dlopen":
            dlopen(sys.argv[2], sys.argv[3], tmp)
        elif mode == "reload":
            reload(sys.argv[2], sys.argv[3], sys.argv[4], tmp)
        elif mode == "preload":
            preload(sys.argv[2], tmp)
        elif mode == "unwind_same":
            unwind_same(sys.argv[2], tmp)
        else:
            print(__doc__)
            return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("check_profile: %s: ok" % mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
