#!/usr/bin/env bash
# timeline_demo.sh LIB [PNG]
# The figure of docs/usage.md: python3 building and dropping big dicts and
# lists in phases (every object a malloc: PYTHONMALLOC=malloc), run under
# LD_PRELOAD=LIB with the stats timeline every 100 ms, then the same script
# under glibc with its RSS sampled from /proc every 100 ms for comparison;
# both plotted with bench/plot_timeline.sh. PNG defaults to
# docs/img/timeline-python.png; the CSVs are left next to it in /tmp.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
lib=$(realpath "${1:?usage: timeline_demo.sh path/to/libebbmalloc.so [out.png]}")
png=${2:-$here/../docs/img/timeline-python.png}
work=${TMPDIR:-/tmp}/ebb-timeline-demo
mkdir -p "$work"
# Debian's interpreter itself: a wrapper in PATH (pyenv's shim is a bash
# script) would be a different program and its own processes would also be
# preloaded.
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
script=$work/phases.py
cat >"$script" <<'PY'
import gc, sys, time
t0 = time.monotonic()
def say(msg):
    print(f"{time.monotonic() - t0:6.2f} s  {msg}", file=sys.stderr, flush=True)
time.sleep(0.5)
say("build a: dict of 400k str -> [int, str, tuple]")
a = {f"key-{i}": [i, str(i) * 3, (i, i + 1)] for i in range(400_000)}
time.sleep(1.0)
say("build b: 200k bytes objects of 1 KiB")
b = [bytes(1024) for _ in range(200_000)]
time.sleep(1.0)
say("drop a (b, allocated after it, stays)")
del a
gc.collect()
time.sleep(2.5)
say("drop b")
del b
time.sleep(2.5)
say("churn: 15 rounds of a 100k-entry dict built and dropped")
for r in range(15):
    d = {i: "x" * (16 + i % 200) for i in range(100_000)}
    del d
say("idle")
time.sleep(2.5)
say("end")
PY

csv=$work/python-ebbmalloc.csv
glibc=$work/python-glibc.csv
echo "== $py under LD_PRELOAD=$lib, timeline every 100 ms -> $csv"
rm -f "$csv" # the timeline never overwrites a file that holds data
EBB_OPTIONS=stats_interval_ms=100,stats_file=$csv PYTHONMALLOC=malloc LD_PRELOAD=$lib "$py" "$script"

echo "== the same under glibc, RSS from /proc/PID/statm every 100 ms -> $glibc"
page=$(getconf PAGESIZE)
PYTHONMALLOC=malloc "$py" "$script" &
pid=$!
start=$(date +%s%N)
echo "t_ms,rss" >"$glibc"
while read -r _ res _ 2>/dev/null <"/proc/$pid/statm"; do
  # a process being torn down (or a zombie) reads as 0: not a sample
  [ "$res" -gt 0 ] && echo "$(( ($(date +%s%N) - start) / 1000000 )),$((res * page))" >>"$glibc"
  sleep 0.1
done
wait "$pid"

mkdir -p "$(dirname "$png")"
"$here/plot_timeline.sh" "$csv" "$png" \
  "python3 building and dropping dicts (PYTHONMALLOC=malloc), LD_PRELOAD=libebbmalloc.so, stats_interval_ms=100" \
  "$glibc" "same script under glibc malloc"
