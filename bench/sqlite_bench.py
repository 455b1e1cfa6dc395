#!/usr/bin/python3
"""Drive Debian's sqlite3 shell over a database that fills a large page cache,
the allocator preloaded into sqlite3 only.

Why this program: SQLite keeps every page it reads or writes in its page
cache, one malloc per page of the page size (4096) plus SQLite's own header
(a few hundred bytes), so at its peak nearly all of the heap is blocks just
above 4 KiB. How an allocator rounds that one size decides its peak RSS: the
row measures size-class rounding waste on a real program (issue 14).

The run: a new database file in a temporary directory, the page cache large
enough to hold all of it (PRAGMA cache_size, in KiB), no journal and no
fsync; a table of --rows rows (an integer key, a random integer, a 300-byte
hex string), then an index on each of the two columns, then a query over the
whole table. The work is fixed by the arguments and the PRNG is SQLite's
own, so every allocator does the same work up to the random contents.

The driver is not preloaded: only sqlite3's allocator is compared. Prints one
'result:' line: seconds (wall of sqlite3), peak_rss_kib (sqlite3's
ru_maxrss from wait4), and from the same rusage cpu_s (user plus system CPU
time), user_s and minflt: on a loaded machine the wall time moves with the
load far more than the CPU time does, so a gap in seconds alone can be the
load's.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def script(rows, cache_kib):
    return """PRAGMA cache_size=-%d;
PRAGMA journal_mode=OFF;
PRAGMA synchronous=OFF;
CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d)
INSERT INTO t SELECT x, abs(random()) %% 1000000, hex(randomblob(150)) FROM c;
CREATE INDEX ta ON t(a);
CREATE INDEX tb ON t(b);
SELECT count(*), sum(length(b)), max(a) FROM t;
""" % (cache_kib, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alloc-lib", default="glibc",
                    help="library to preload into sqlite3; 'glibc' for none [glibc]")
    ap.add_argument("--rows", type=int, default=300000, help="rows inserted [300000]")
    ap.add_argument("--cache-kib", type=int, default=400000, help="page cache size in KiB [400000]")
    ap.add_argument("--sqlite3", default=shutil.which("sqlite3") or "/usr/bin/sqlite3",
                    help="the sqlite3 shell [from PATH]")
    args = ap.parse_args()
    if not os.path.exists(args.sqlite3):
        print("error: sqlite3 not found (apt-get install sqlite3)", file=sys.stderr)
        sys.exit(2)

    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if args.alloc_lib not in ("glibc", "none", ""):
        env["LD_PRELOAD"] = args.alloc_lib
    tmp = tempfile.mkdtemp(prefix="ebb-sqlite-")
    try:
        db = os.path.join(tmp, "bench.db")
        t0 = time.perf_counter()
        proc = subprocess.Popen([args.sqlite3, "-batch", db], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        # Write the script, then collect the output without waiting: wait4
        # below is what reaps sqlite3, so its rusage is ours to read.
        proc.stdin.write(script(args.rows, args.cache_kib).encode())
        proc.stdin.close()
        out = proc.stdout.read().decode(errors="replace")
        err = proc.stderr.read().decode(errors="replace")
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        secs = time.perf_counter() - t0
        size = os.path.getsize(db)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0 or err.strip():
        sys.stderr.write(err)
        print("error: sqlite3 exited with %d" % proc.returncode, file=sys.stderr)
        sys.exit(1)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    print("# sqlite: %d rows, database %.1f MiB, %.2f s, sqlite3 peak RSS %.1f MiB (%s)"
          % (args.rows, size / 1048576.0, secs, ru.ru_maxrss / 1024.0, last))
    print("result: bench=sqlite rows=%d seconds=%.6f db_kib=%d peak_rss_kib=%d cpu_s=%.3f user_s=%.3f minflt=%d"
          % (args.rows, secs, size // 1024, ru.ru_maxrss, ru.ru_utime + ru.ru_stime, ru.ru_utime, ru.ru_minflt))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
