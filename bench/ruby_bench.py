#!/usr/bin/python3
"""Run Debian's ruby on an allocation-heavy script, the allocator preloaded
into ruby only.

Why this program: Ruby's heap is its own object pages (64 KiB, taken from
posix_memalign, 64 KiB aligned) plus malloc for everything that does not fit
in a 40-byte object slot: strings above 23 bytes, arrays above 3 elements,
hash tables. The garbage collector frees those in bursts. It is one of the
programs issue 14 names for waste at the peak (peak RSS against glibc's).

The script builds a hash of string keys to small records, sorts it, joins
strings, inverts part of it and drops half, round after round, keeping the
last few rounds' slices alive, like a cache; the work is fixed by the
arguments and Ruby's PRNG is seeded.

Prints one 'result:' line: seconds (ruby's own wall time of the work) and
peak_rss_kib (ruby's VmHWM, read by the script itself at its end: the
driver's ru_maxrss would start at the driver's own RSS).
"""
import argparse
import os
import shutil
import subprocess
import sys

SCRIPT = r"""
n = Integer(ARGV[0]); rounds = Integer(ARGV[1])
srand(42)
kept = []
t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
sum = 0
rounds.times do |r|
  d = {}
  n.times do |i|
    k = "key-#{i}-#{rand(1 << 32).to_s(16)}"
    d[k] = [i, k.upcase, "value #{i * 7} of round #{r} " * (1 + i % 4), [i, i * 2]]
  end
  items = d.sort_by { |k, v| v[1] }
  blob = items.first(n / 2).map { |k, v| "#{k}=#{v[0]}" }.join(",")
  inv = {}
  items.each_with_index { |(k, v), j| inv[v[1]] = k if j % 3 == 0 }
  d.keys.each_with_index { |k, j| d.delete(k) if j.even? }
  kept << items.first(n / 8)
  kept.shift if kept.size > 4
  sum += blob.size + inv.size + d.size
end
secs = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
hwm = File.read("/proc/self/status")[/VmHWM:\s+(\d+)/, 1].to_i
puts "#{sum} #{secs} #{hwm}"
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alloc-lib", default="glibc", help="library to preload into ruby; 'glibc' for none [glibc]")
    ap.add_argument("--n", type=int, default=100000, help="entries per round [100000]")
    ap.add_argument("--rounds", type=int, default=3, help="rounds [3]")
    ap.add_argument("--ruby", default=shutil.which("ruby") or "/usr/bin/ruby", help="ruby [from PATH]")
    args = ap.parse_args()
    if not os.path.exists(args.ruby):
        print("error: ruby not found (apt-get install ruby)", file=sys.stderr)
        sys.exit(2)
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if args.alloc_lib not in ("glibc", "none", ""):
        env["LD_PRELOAD"] = args.alloc_lib
    r = subprocess.run([args.ruby, "-e", SCRIPT, str(args.n), str(args.rounds)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sys.stderr.write(r.stderr.decode(errors="replace"))
    out = r.stdout.decode(errors="replace").split()
    if r.returncode != 0 or len(out) != 3:
        print("error: ruby exited with %d" % r.returncode, file=sys.stderr)
        sys.exit(1)
    check, secs, hwm = int(out[0]), float(out[1]), int(out[2])
    print("# ruby: %d rounds x %d entries in %.2f s, peak RSS %.1f MiB" % (args.rounds, args.n, secs, hwm / 1024.0))
    print("result: bench=ruby n=%d rounds=%d seconds=%.6f checksum=%d peak_rss_kib=%d"
          % (args.n, args.rounds, secs, check, hwm))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
