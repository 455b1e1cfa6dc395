#!/usr/bin/python3
"""Drive Debian's redis-server with redis-benchmark, the allocator preloaded
into the server only.

Starts redis-server on a free loopback port with LD_PRELOAD set to the
allocator under test (persistence off), waits until it answers PING, runs
redis-benchmark against it (SET, GET and LPUSH by default, values of a few
hundred bytes over some thousands of keys, pipelined), reads the server's
peak RSS (VmHWM) and used_memory, shuts it down and prints one 'result:'
line: requests per second over all tests, per test, and the server's RSS.

Debian's redis-server is linked against libjemalloc.so.2 and calls plain
malloc/calloc/realloc/free/malloc_usable_size, so a preloaded library takes
those calls. Only its statistics and size-class queries (mallctl, nallocx)
keep going to the linked jemalloc. Without any preload the server runs on that
jemalloc; the 'glibc' choice preloads libc.so.6 itself, which puts glibc's
malloc ahead of jemalloc in symbol lookup. Which library actually serves
redis-server's malloc is checked with the dynamic linker's own report
(LD_DEBUG=bindings) and printed as malloc_from=.

The driver and redis-benchmark are not preloaded: only the server's
allocator is being compared.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def die(msg):
    print("error: " + msg, file=sys.stderr)
    sys.exit(2)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(port, *args, timeout=5.0):
    """Sends one command in the inline protocol and returns the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((" ".join(args) + "\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"$"):
                header, _, rest = data.partition(b"\r\n")
                if len(rest) >= int(header[1:]) + 2:
                    break
            elif data.endswith(b"\r\n"):
                break
        return data.decode(errors="replace")


def libc_path(server):
    out = subprocess.run(["ldd", server], capture_output=True, text=True).stdout
    m = re.search(r"libc\.so\.6 => (\S+)", out)
    return m.group(1) if m else "/lib/x86_64-linux-gnu/libc.so.6"


def malloc_binding(server, env):
    """Asks the dynamic linker which object redis-server's malloc binds to."""
    e = dict(env, LD_DEBUG="bindings", LD_BIND_NOW="1")
    r = subprocess.run([server, "--version"], env=e, capture_output=True, text=True, timeout=30)
    pat = re.compile(r"binding file \S*redis-server \[0\] to (\S+) \[0\]: normal symbol `malloc'")
    for line in r.stderr.splitlines():
        m = pat.search(line)
        if m:
            return os.path.basename(m.group(1))
    return "unknown"


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """User plus system CPU time of a running process (all its threads), from
    /proc/PID/stat: fields 14 and 15 after the command, in clock ticks."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alloc-lib", default="default",
                    help="shared library to preload into redis-server; 'glibc' for glibc's malloc, "
                         "'default' for none (Debian's redis then uses its linked jemalloc) [default]")
    ap.add_argument("--requests", type=int, default=100000, help="requests per test [100000]")
    ap.add_argument("--tests", default="set,get,lpush", help="redis-benchmark tests [set,get,lpush]")
    ap.add_argument("--data-size", type=int, default=256, help="value size in bytes [256]")
    ap.add_argument("--keyspace", type=int, default=10000, help="distinct keys [10000]")
    ap.add_argument("--clients", type=int, default=50, help="parallel connections [50]")
    ap.add_argument("--pipeline", type=int, default=16, help="requests per pipeline [16]")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    ap.add_argument("--redis-benchmark", default=shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up [300]")
    args = ap.parse_args()

    for exe in (args.redis_server, args.redis_benchmark):
        if not os.access(exe, os.X_OK):
            die("%s not found (apt-get install redis-server redis-tools)" % exe)

    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if args.alloc_lib == "glibc":
        env["LD_PRELOAD"] = libc_path(args.redis_server)
    elif args.alloc_lib != "default":
        if not os.path.exists(args.alloc_lib):
            die("no such library: " + args.alloc_lib)
        env["LD_PRELOAD"] = args.alloc_lib
    bound = malloc_binding(args.redis_server, env)

    tmp = tempfile.mkdtemp(prefix="ebb-redis-")
    port = free_port()
    log = os.path.join(tmp, "redis.log")
    server = subprocess.Popen(
        [args.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--dir", tmp, "--logfile", log],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 15
        while True:
            if server.poll() is not None:
                tail = open(log).read()[-2000:] if os.path.exists(log) else ""
                die("redis-server exited with %s during start-up\n%s%s"
                    % (server.returncode, server.stderr.read().decode(errors="replace"), tail))
            try:
                if "PONG" in command(port, "PING", timeout=1):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                die("redis-server did not answer PING within 15 s")
            time.sleep(0.05)

        t0 = time.perf_counter()
        cpu0 = cpu_seconds(server.pid)
        bench = subprocess.run(
            [args.redis_benchmark, "-h", "127.0.0.1", "-p", str(port), "-q", "--csv",
             "-t", args.tests, "-n", str(args.requests), "-d", str(args.data_size),
             "-r", str(args.keyspace), "-c", str(args.clients), "-P", str(args.pipeline)],
            env={k: v for k, v in env.items() if k != "LD_PRELOAD"},
            capture_output=True, text=True, timeout=args.timeout)
        wall = time.perf_counter() - t0
        # The server's CPU time over the benchmark: on a loaded machine the
        # requests/s figure moves with the load (the client and the server
        # share the CPUs), the CPU the server spent on the same requests far less.
        server_cpu = cpu_seconds(server.pid) - cpu0
        if server.poll() is not None:
            die("redis-server died during the benchmark (exit %s)" % server.returncode)
        if bench.returncode != 0:
            die("redis-benchmark failed: " + bench.stderr.strip()[-500:])
        rps = {}
        for line in bench.stdout.splitlines():
            m = re.match(r'"([A-Z_ ]+?)(?: \([^)]*\))?","([\d.]+)"', line)
            if m:
                rps[m.group(1).lower()] = float(m.group(2))
        wanted = [t.strip().lower() for t in args.tests.split(",") if t.strip()]
        missing = [t for t in wanted if t not in rps or rps[t] <= 0]
        if missing:
            die("no result for %s in redis-benchmark output:\n%s" % (",".join(missing), bench.stdout))

        info = command(port, "INFO", "memory")
        m = re.search(r"used_memory:(\d+)", info)
        used_kib = int(m.group(1)) // 1024 if m else 0
        peak_kib = status_kib(server.pid, "VmHWM")
        rss_kib = status_kib(server.pid, "VmRSS")
        try:
            command(port, "SHUTDOWN", "NOSAVE", timeout=5)
        except OSError:
            pass
        try:
            code = server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            die("redis-server did not shut down")
        if code not in (0, None):
            die("redis-server exited with %s at shutdown" % code)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    # Requests per second over all tests: total requests over the time they
    # took together, so a slow test weighs as much as it cost.
    total = args.requests * len(wanted)
    busy = sum(args.requests / rps[t] for t in wanted)
    overall = total / busy
    print("# redis: %s; malloc served by %s; server peak RSS %.1f MiB, used_memory %.1f MiB, wall %.2f s"
          % (", ".join("%s %.0f/s" % (t.upper(), rps[t]) for t in wanted), bound, peak_kib / 1024.0,
             used_kib / 1024.0, wall))
    fields = ["bench=redis", "ops=%d" % total, "seconds=%.6f" % busy, "ops_per_sec=%.1f" % overall]
    fields += ["rps_%s=%.1f" % (t.replace(" ", "_"), rps[t]) for t in wanted]
    fields += ["malloc_from=%s" % bound, "used_memory_kib=%d" % used_kib, "rss_end_kib=%d" % rss_kib,
               "peak_rss_kib=%d" % peak_kib, "server_cpu_s=%.2f" % server_cpu]
    print("result: " + " ".join(fields))


if __name__ == "__main__":
    main()
