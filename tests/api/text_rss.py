"""api.text_rss: the code of libebbmalloc.so that a process which starts,
allocates a little and exits has resident is one 64 KiB fault-around
window (core/api/layout.ld), not the whole 148 KiB.

Run under LD_PRELOAD=libebbmalloc.so by the interpreter itself: at its end
it reads /proc/self/smaps (exit 77, skipped, without it). A glibc older
than 2.35 ignores the segment's 64 KiB alignment: the warm 64 KiB may then
straddle two windows, so the bound is 128 KiB there."""
import os
import sys

# Work of a small program: the interpreter's start-up, some objects, a
# large block, a realloc that grows.
data = [str(i) * (i % 50) for i in range(20000)]
big = bytearray(300000)
s = ""
for i in range(2000):
    s += "x" * 7
del data, big

try:
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
except OSError:
    sys.exit(77)
rss = None
start = None
for i, line in enumerate(lines):
    head = line.split()
    if len(head) >= 6 and "-" in head[0] and "libebbmalloc" in head[5] and head[1].startswith("r-x"):
        start = int(head[0].split("-")[0], 16)
        for nxt in lines[i + 1:]:
            if nxt.startswith("Rss:"):
                rss = int(nxt.split()[1])
                break
        break
if rss is None:
    print("libebbmalloc.so is not mapped: run me under LD_PRELOAD")
    sys.exit(1)
bound = 64 if start % 65536 == 0 else 128
print("libebbmalloc.so code resident: %d KiB (bound %d KiB)" % (rss, bound))
sys.exit(0 if rss <= bound else 1)
