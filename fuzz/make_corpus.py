#!/usr/bin/env python3
"""Writes the committed seed corpus of fuzz_api (fuzz/corpus/): a few short
programs that reach every kind of call, made from a fixed seed so the files
are the same each time. Run from anywhere: python3 fuzz/make_corpus.py"""
import os
import random

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(here, exist_ok=True)

def small(n): return [0x00 | 0, n & 63]
def medium(n): return [0x40 | ((n >> 8) & 63), n & 255]
def large(k): return [0x80 | (k & 63), (k * 37) & 255]
def huge(mb): return [0xC0 | (mb & 7), 0x10, 0x20]

seeds = {
    # op % 16 in 0..5 allocates (kind = op // 16) or frees; 6..8 reallocs
    "malloc-free": [0, 0] + small(24) + [0, 0] + [16 * 0, 1] + medium(1000) + [16, 1],
    "every-kind": sum(([16 * k, k] + medium(300 + k) + [k % 5] for k in range(9)), []),
    "aligned": [16 * 3, 2] + medium(5000) + [12] + [16 * 4, 3] + large(5) + [20] + [16 * 5, 4] + small(8) + [7],
    "realloc-chain": [0, 5] + small(10) + sum(([6, 5] + medium(200 * i) for i in range(1, 10)), []) + [6, 5] + large(3) + [6, 5] + small(0),
    "huge": [0, 6] + huge(5) + [6, 6] + huge(6) + [6, 6] + small(40) + [0, 6],
    "second-thread": [16 * 8, 7] + medium(700) + [15, 7] + [0, 8] + small(33) + [6 + 16 * 3, 8] + medium(4000) + [16 * 3, 8],
    "calloc": [16, 9] + [1] + medium(4096) + [16, 10] + [3] + large(9) + [9, 9] + [9, 10],
    "impossible": [0, 11] + small(50) + [13, 0, 5, 11] + [13, 0, 0, 3],
    "swap-and-trim": [0, 12] + small(20) + [0, 13] + medium(20000) + [12, 12, 13] + [14, 0, 0x7f] + [11, 12] + [11, 13],
    "valloc-pvalloc": [16 * 6, 14] + medium(100) + [16 * 7, 15] + small(0) + [16 * 7, 16] + large(1),
}
rng = random.Random(20261201)
for i in range(6):
    seeds["random-%d" % i] = [rng.randrange(256) for _ in range(rng.randrange(40, 400))]

for name, data in seeds.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(bytes(b & 255 for b in data))
print("%d seeds in %s" % (len(seeds), here))
