#!/usr/bin/python3
"""Create a PostgreSQL cluster with Debian's initdb, the allocator preloaded
into initdb and every process it starts.

Why this program: initdb is a real multi-process C program whose heap is
PostgreSQL's memory contexts (palloc), which take memory from malloc in
blocks of 1 KiB to a few MiB and give it back a context at a time, plus the
catalog caches that grow while the bootstrap and single-user backends build
the template databases. It is one of the programs issue 14 names for waste at
the peak (peak RSS under an allocator against glibc's).

The run: a fresh data directory in a temporary directory, initdb -N (no
fsync) with a fixed locale, encoding and authentication, so the work is the
same for every allocator. initdb runs 'postgres --check' a few times to size
shared_buffers, then 'postgres --boot' (bootstrap) and 'postgres --single'
(everything after: views, collations, the information schema, the template
and postgres databases), one after the other; the backends are where the
memory is. PostgreSQL refuses to run as root, so as root the run goes
through runuser as --user (postgres when that account exists, else nobody)
and the data directory belongs to that user.

Peak RSS, two figures, both of the whole process tree:
- peak_rss_kib: the largest peak of any one process of the tree (ru_maxrss
  of the tree from wait4: the kernel folds each waited-for descendant's peak
  into its parent's). The processes run one after the other, so this is the
  figure that compares allocators. One caveat: the first process (runuser, or
  env) is forked from this driver and starts with a copy of its pages, so the
  figure cannot read below the driver's own RSS (driver_rss_kib, printed).
- tree_rss_kib: the largest sum of VmRSS over the tree, sampled every few
  milliseconds from /proc (initdb and a backend at once). A sample can miss a
  short spike; it is printed for reading, not used for ranking.
Both include PostgreSQL's shared memory as far as it is touched (the same
for every allocator).

Prints one 'result:' line: seconds (wall of initdb), peak_rss_kib,
tree_rss_kib, driver_rss_kib, minflt (page faults of the whole tree, from
wait4: pages given back too early are faulted in again), cpu_s (user plus
system CPU time of the whole tree, from wait4: on a loaded machine the wall
time moves with the load far more than this does), and the largest
process' command (peak_proc=postgres|initdb|...).
"""
import argparse
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def find_initdb():
    """Debian puts initdb outside PATH (/usr/lib/postgresql/<major>/bin);
    the newest major wins. None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return found[-1]
    return shutil.which("initdb")


def install():
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log = subprocess.DEVNULL
    subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=log, stderr=log)
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
                       env=env, stdout=log, stderr=log)
    return r.returncode == 0


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children(pid):
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        pass
    return kids


class TreeSampler(threading.Thread):
    """Sums VmRSS over the tree under root every interval seconds; keeps the
    largest sum, and each command's largest VmHWM seen (which process of
    the tree is the big one)."""

    def __init__(self, root, interval=0.005):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_sum = 0
        self.hwm = {}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            total, todo = 0, [self.root]
            while todo:
                pid = todo.pop()
                todo += children(pid)
                total += status_kib(pid, "VmRSS:")
                try:
                    with open("/proc/%d/comm" % pid) as f:
                        comm = f.read().strip()
                except OSError:
                    continue
                self.hwm[comm] = max(self.hwm.get(comm, 0), status_kib(pid, "VmHWM:"))
            self.peak_sum = max(self.peak_sum, total)
            self.done.wait(self.interval)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alloc-lib", default="glibc",
                    help="library to preload into initdb and its children; 'glibc' for none [glibc]")
    ap.add_argument("--initdb", default=None, help="initdb to run [newest /usr/lib/postgresql/*/bin/initdb]")
    ap.add_argument("--user", default=None,
                    help="as root, run initdb as this user [postgres if it exists, else nobody]")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install postgresql")
    args = ap.parse_args()

    initdb = args.initdb or find_initdb()
    if not initdb and not args.no_install and install():
        initdb = find_initdb()
    if not initdb or not os.path.exists(initdb):
        print("error: initdb not found (apt-get install postgresql)", file=sys.stderr)
        sys.exit(2)

    tmp = tempfile.mkdtemp(prefix="ebb-postgres-")
    data = os.path.join(tmp, "data")
    # The preload goes on through env(1), after runuser, so that only
    # initdb and what it starts run under the allocator.
    cmd = ["env"]
    if args.alloc_lib not in ("glibc", "none", ""):
        # Absolute: the dynamic loader resolves a relative LD_PRELOAD in
        # each process's own directory, so initdb's postgres children (run
        # elsewhere) would silently fall back to glibc's malloc.
        lib = os.path.abspath(args.alloc_lib)
        if not os.path.exists(lib):
            print("error: --alloc-lib %s: no such file" % args.alloc_lib, file=sys.stderr)
            sys.exit(2)
        cmd.append("LD_PRELOAD=" + lib)
    cmd += [initdb, "-D", data, "-N", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-instructions",
            "-U", "postgres"]
    if os.geteuid() == 0:
        user = args.user
        if not user:
            try:
                pwd.getpwnam("postgres")
                user = "postgres"
            except KeyError:
                user = "nobody"
        pw = pwd.getpwnam(user)
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        cmd = ["runuser", "-u", user, "--"] + cmd
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env["LC_ALL"] = "C"
    driver_rss = status_kib(os.getpid(), "VmRSS:")
    try:
        t0 = time.perf_counter()
        # cwd: runuser keeps it, and postgres must be able to enter it.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        # The pipes are drained in threads, not by communicate(): wait4 below
        # is what reaps the tree's root, so its rusage is ours to read.
        outs = {}

        def drain(name, f):
            outs[name] = f.read().decode(errors="replace")
        readers = [threading.Thread(target=drain, args=(n, f)) for n, f in (("out", proc.stdout),
                                                                            ("err", proc.stderr))]
        for r in readers:
            r.start()
        _, status, ru = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.done.set()
        sampler.join()
        for r in readers:
            r.join()
        ok = os.path.exists(os.path.join(data, "PG_VERSION"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0 or not ok:
        sys.stderr.write(outs.get("err", ""))
        print("error: initdb exited with %d" % proc.returncode, file=sys.stderr)
        sys.exit(1)
    # initdb's own stderr carries allocator output (stats_on_exit): pass it on.
    sys.stderr.write(outs.get("err", ""))
    big = max(sampler.hwm.items(), key=lambda kv: kv[1]) if sampler.hwm else ("?", 0)
    print("# postgres: %s, %.2f s, peak RSS %.1f MiB (one process; sampled largest %s %.1f MiB), "
          "tree sum %.1f MiB, driver %.1f MiB"
          % (initdb, secs, ru.ru_maxrss / 1024.0, big[0], big[1] / 1024.0, sampler.peak_sum / 1024.0,
             driver_rss / 1024.0))
    print("result: bench=postgres seconds=%.6f peak_rss_kib=%d tree_rss_kib=%d driver_rss_kib=%d minflt=%d "
          "cpu_s=%.3f peak_proc=%s" % (secs, ru.ru_maxrss, sampler.peak_sum, driver_rss, ru.ru_minflt,
                                       ru.ru_utime + ru.ru_stime, big[0]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
