#!/usr/bin/env python3
"""preload_workload.py: a deterministic Python workload for the LD_PRELOAD test.

Several threads build large dicts and lists, sort them, grow and shrink
buffers, round-trip through json, and hash what they built. Prints one
checksum line per thread and a total; the output must be the same with and
without libebbmalloc.so preloaded. Usage: preload_workload.py [scale]
"""
import hashlib
import json
import random
import sys
import threading


def work(tid, n, out):
    rng = random.Random(1000 + tid)
    h = hashlib.sha256()

    # a large dict of small objects, sorted by key and by value
    d = {}
    for i in range(n):
        key = "k%x-%d" % (rng.getrandbits(40), i)
        d[key] = (rng.getrandbits(32), "v" * (i % 23), i)
    for key in sorted(d)[::101]:
        h.update(key.encode())
    for val in sorted(d.values())[::101]:
        h.update(repr(val).encode())

    # churn: delete half, insert again (reuses freed blocks)
    for i, key in enumerate(list(d)):
        if i % 2:
            del d[key]
    for i in range(n // 2):
        d["again%d" % i] = [i] * (i % 9)
    h.update(str(len(d)).encode())

    # large lists of ints and of strings, sorted
    nums = [rng.getrandbits(64) for _ in range(n)]
    nums.sort()
    h.update(str(nums[:: n // 64 or 1]).encode())
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randrange(1, 12))) for _ in range(n // 4)]
    words.sort(key=lambda w: (len(w), w))
    h.update("".join(words[::53]).encode())

    # big blocks: strings and bytearrays up to a few MiB, grown in place
    blobs = []
    for i in range(60):
        size = rng.randrange(1, 1 << rng.randrange(4, 22))
        blobs.append(bytes([i % 251]) * size)
    buf = bytearray()
    for i in range(3000):
        buf += blobs[i % len(blobs)][: rng.randrange(1, 4000)]
        if len(buf) > (4 << 20):
            h.update(hashlib.sha1(buf).digest())
            del buf[: len(buf) // 2]
    h.update(hashlib.sha1(buf).digest())
    h.update(hashlib.sha1(b"".join(blobs)).digest())

    # json round trip of a nested structure
    doc = {str(i): {"a": list(range(i % 50)), "b": "x" * (i % 300)} for i in range(n // 10)}
    back = json.loads(json.dumps(doc, sort_keys=True))
    h.update(str(len(back)).encode())
    h.update(json.dumps(back["7"], sort_keys=True).encode())

    out[tid] = h.hexdigest()


def main():
    scale = int(sys.argv[1]) if len(sys.argv) > 1 else 60000
    nthreads = 4
    out = [None] * nthreads
    threads = [threading.Thread(target=work, args=(t, scale, out)) for t in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = hashlib.sha256()
    for tid, digest in enumerate(out):
        print("thread %d %s" % (tid, digest))
        total.update(digest.encode())
    print("total %s" % total.hexdigest())


if __name__ == "__main__":
    main()
