"""api.text_rss: the code of libebbmalloc.so that a process has resident is
few 64 KiB fault-around windows (core/api/layout.ld), not the whole 164 KiB.

Run under LD_PRELOAD=libebbmalloc.so by the interpreter itself: at its end
it reads /proc/self/smaps (exit 77, skipped, without it). The mode, the
first argument:
- none: a process which starts, allocates a little and exits has one
  window resident (api.text_rss);
- fork: so has the child of a fork from a single-threaded process, and so
  has that parent (fork's handlers for a process that never had a thread
  are in the first window: a shell's $(...) child; api.text_rss.fork);
- threads: a process that starts threads, whose allocator thread starts
  (a few MiB freed, then a wait past decay_ms) and whose threads exit has
  two windows resident, not all three (api.text_rss.threads).
A glibc older than 2.35 ignores the segment's 64 KiB alignment: the warm
code may then straddle one more window, so every bound is a window more."""
import os
import sys
import threading
import time


def text_rss():
    """Rss (KiB) of libebbmalloc.so's code mapping, and its start address."""
    try:
        with open("/proc/self/smaps") as f:
            lines = f.read().splitlines()
    except OSError:
        sys.exit(77)
    for i, line in enumerate(lines):
        head = line.split()
        if len(head) >= 6 and "-" in head[0] and "libebbmalloc" in head[5] and head[1].startswith("r-x"):
            start = int(head[0].split("-")[0], 16)
            for nxt in lines[i + 1:]:
                if nxt.startswith("Rss:"):
                    return int(nxt.split()[1]), start
    print("libebbmalloc.so is not mapped: run me under LD_PRELOAD")
    sys.exit(1)


def check(what, windows):
    rss, start = text_rss()
    if start % 65536:
        windows += 1
    bound = 64 * windows
    print("%s: libebbmalloc.so code resident: %d KiB (bound %d KiB)" % (what, rss, bound))
    return rss <= bound


def small_work():
    # Work of a small program: the interpreter's start-up, some objects, a
    # large block, a realloc that grows.
    data = [str(i) * (i % 50) for i in range(20000)]
    big = bytearray(300000)
    s = ""
    for i in range(2000):
        s += "x" * 7
    del data, big


mode = sys.argv[1] if len(sys.argv) > 1 else ""
small_work()
if mode == "fork":
    pid = os.fork()
    if pid == 0:
        # The child's page tables start without the library's code (a
        # private file mapping is not copied at fork): what it faults is what
        # fork's child handlers and its own work run.
        small_work()
        os._exit(0 if check("fork's child", 1) else 1)
    _, status = os.waitpid(pid, 0)
    child_ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    sys.exit(0 if check("fork's parent", 1) and child_ok else 1)
elif mode == "threads":
    def work(n):
        keep = [bytearray((i * 37) % 5000 + n) for i in range(20000)]
        keep += [bytearray(200000) for _ in range(10)]
        del keep[::2]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blocks = [bytearray(100000) for _ in range(60)]
    del blocks
    # Past decay_ms (500 ms by default): the allocator's thread wakes and
    # purges. Only the code it runs matters here, not when.
    time.sleep(0.8)
    sys.exit(0 if check("threads", 2) else 1)
else:
    sys.exit(0 if check("small process", 1) else 1)
