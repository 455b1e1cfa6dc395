#!/usr/bin/env bash
# plot_timeline.sh CSV [PNG] [TITLE] [OTHER_CSV OTHER_LABEL]
# Turns the CSV stats timeline of ebbmalloc (EBB_OPTIONS=stats_interval_ms=N,
# stats_file=CSV; columns in docs/usage.md) into a PNG with gnuplot: the
# kernel's RSS of the process, the allocator's own resident bytes, what the
# program holds (allocated), what the allocator keeps for reuse (cached =
# thread caches + central lists), dirty free pages waiting for decay, and
# the address space mapped. Needs gnuplot (Debian: gnuplot-nox; installed
# when missing and run as root). PNG defaults to CSV with .png. OTHER_CSV
# (columns t_ms,rss, e.g. the same program under glibc sampled from
# /proc/PID/statm, see bench/timeline_demo.sh) adds its RSS as a dashed line.
#
#   EBB_OPTIONS=stats_interval_ms=100,stats_file=/tmp/run.csv \
#     LD_PRELOAD=build/libebbmalloc.so python3 script.py
#   bench/plot_timeline.sh /tmp/run.csv /tmp/run.png "python3 script.py"
set -eu
[ $# -ge 1 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
csv=$1
png=${2:-${csv%.csv}.png}
title=${3:-$(basename "$csv")}
other=${4:-} other_label=${5:-other run}
[ -s "$csv" ] || { echo "plot_timeline: $csv is empty or missing" >&2; exit 1; }
head -1 "$csv" | grep -q '^t_ms,rss,' || { echo "plot_timeline: $csv is not an ebbmalloc timeline" >&2; exit 1; }
if ! command -v gnuplot >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null
  else
    echo "plot_timeline: needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 1
  fi
fi
rows=$(($(wc -l <"$csv") - 1))
[ "$rows" -ge 2 ] || { echo "plot_timeline: $csv has $rows row(s); need 2" >&2; exit 1; }
# gnuplot string: escape backslashes and double quotes.
gq() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
extra=
if [ -n "$other" ]; then
  head -1 "$other" | grep -q '^t_ms,rss' || { echo "plot_timeline: $other lacks the t_ms,rss header" >&2; exit 1; }
  extra=", \"$(gq "$other")\" using (column(\"t_ms\")/1000.0):(s(\"rss\")) with lines lw 2 dt 3 lc rgb \"#8c564b\" title \"RSS, $(gq "$other_label")\""
fi
gnuplot <<GP
set terminal pngcairo size 1100,620 font "sans,10"
set output "$(gq "$png")"
set datafile separator ","
set datafile columnheaders
set title "$(gq "$title")" noenhanced
set xlabel "seconds"
set ylabel "MiB"
set grid
set key outside below horizontal maxcols 4 samplen 3
set yrange [0:*]
MiB = 1048576.0
s(c) = column(c) / MiB
plot "$(gq "$csv")" using (column("t_ms")/1000.0):(s("mapped"))    with lines lw 1 dt 2 lc rgb "#999999" title "mapped", \
     ""             using (column("t_ms")/1000.0):(s("rss"))       with lines lw 2.5 lc rgb "#d62728" title "RSS (kernel, whole process)", \
     ""             using (column("t_ms")/1000.0):(s("resident"))  with lines lw 1.5 lc rgb "#ff9896" title "resident (allocator)", \
     ""             using (column("t_ms")/1000.0):(s("allocated")) with lines lw 2 lc rgb "#1f77b4" title "allocated (held by the program)", \
     ""             using (column("t_ms")/1000.0):(s("cached"))    with lines lw 1.5 lc rgb "#2ca02c" title "cached (tcache + central)", \
     ""             using (column("t_ms")/1000.0):(s("dirty"))     with lines lw 1.5 lc rgb "#ff7f0e" title "dirty (free, waiting for decay)"$extra
GP
echo "plot_timeline: $rows rows -> $png"
