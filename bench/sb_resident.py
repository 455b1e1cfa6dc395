#!/usr/bin/env python3
"""Where a running process's ebbmalloc memory is resident, by the kernel's page table.

Reads, as root, /proc/PID/pagemap (which pages are present) and the headers of
the process's superblocks through /proc/PID/mem, walks each superblock's spans
and prints the resident KiB of each class's spans, of large spans, of dirty
and purged free runs, of the headers and of huge blocks, beside the KiB those
spans cover. The allocator's own stats count a span's free blocks and header
pages as resident whether or not they were ever touched; this counts what
the kernel holds.

It reads only pages that are present: a read of /proc/PID/mem faults absent
pages in (each one a real page, not the zero page), which would raise the RSS
it measures (a scan of every 4 MiB slot of the 64 MiB registry in .lbss made
1.1 MiB of it resident in initdb's backend).

The offsets below are those of core/pages/superblock.h and span.h on x86-64
(superblock_t: magic at 64, first_page at 88, huge at 92, cold_n at 144,
cold_page at 146, cold_npages at 162, pmap at 192, spans at 4288; span_t:
npages at 48, used at 52, page at 56, state at 58, cls at 59);
a walk that does not tile a superblock exactly is reported as 'layout?'.

Usage: sb_resident.py PID
"""
import collections
import struct
import sys

PAGE = 4096
SB = 4 << 20
SB_PAGES = SB // PAGE
HEADER_PAGES = 17
MAGIC = struct.pack("<Q", 0x6562625F73625F31)  # "ebb_sb_1"
SPANS_OFF = 4288
SPAN_SIZE = 64
COLD_N_OFF, COLD_PAGE_OFF, COLD_NPAGES_OFF = 144, 146, 162
STATES = {1: "dirty", 2: "purged", 3: "busy", 5: "large", 6: "arena", 7: "pool"}


def present_bits(pagemap, addr, npages):
    pagemap.seek(addr // PAGE * 8)
    raw = pagemap.read(npages * 8)
    return [(struct.unpack_from("<Q", raw, 8 * i)[0] >> 63) & 1 for i in range(len(raw) // 8)]


def read_present(mem, addr, present):
    """The bytes of the pages at addr, absent pages as zeros (never read)."""
    out = bytearray(len(present) * PAGE)
    for i, p in enumerate(present):
        if p:
            mem.seek(addr + i * PAGE)
            out[i * PAGE:(i + 1) * PAGE] = mem.read(PAGE)
    return bytes(out)


def anon_vmas(pid):
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if len(fields) < 6 and fields[1].startswith("rw"):
                yield lo, hi


def analyze(pid):
    resident = collections.Counter()
    covered = collections.Counter()
    with open("/proc/%d/mem" % pid, "rb", 0) as mem, open("/proc/%d/pagemap" % pid, "rb", 0) as pagemap:
        for lo, hi in anon_vmas(pid):
            sb = (lo + SB - 1) & ~(SB - 1)
            while sb + HEADER_PAGES * PAGE <= hi:
                head = present_bits(pagemap, sb, HEADER_PAGES)
                if not head[0]:
                    sb += SB
                    continue
                mem.seek(sb)
                if mem.read(72)[64:72] != MAGIC:
                    sb += SB
                    continue
                hdr = read_present(mem, sb, head)
                resident["header"] += sum(head)
                resident["superblocks"] += 1
                first_page, _, huge = struct.unpack_from("<HHB", hdr, 88)
                if huge:
                    npages = struct.unpack_from("<I", hdr, SPANS_OFF + 48)[0]
                    data = present_bits(pagemap, sb + SB, npages)
                    resident["huge"] += sum(data)
                    covered["huge"] += npages
                    sb += SB
                    continue
                bits = present_bits(pagemap, sb, SB_PAGES) if sb + SB <= hi else \
                    present_bits(pagemap, sb, (hi - sb) // PAGE) + [0] * ((sb + SB - hi) // PAGE)
                # Cold runs: purged runs whose descriptor page was given back;
                # their first page and size are in the header's table.
                cold = {}
                for i in range(hdr[COLD_N_OFF]):
                    at = struct.unpack_from("<H", hdr, COLD_PAGE_OFF + 2 * i)[0]
                    cold[at] = struct.unpack_from("<H", hdr, COLD_NPAGES_OFF + 2 * i)[0]
                page = first_page
                while page < SB_PAGES:
                    off = SPANS_OFF + (page - HEADER_PAGES) * SPAN_SIZE
                    npages, _used, at, state, cls = struct.unpack_from("<IIHBB", hdr, off + 48)
                    if page in cold:
                        npages, at, state = cold[page], page, 2
                    if npages == 0 or at != page or page + npages > SB_PAGES:
                        resident["layout?"] += 1
                        break
                    key = "class %2d" % cls if state == 4 else STATES.get(state, "state %d" % state)
                    resident[key] += sum(bits[page:page + npages])
                    covered[key] += npages
                    page += npages
                sb += SB
    return resident, covered


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    resident, covered = analyze(int(sys.argv[1]))
    total = 0
    for key in sorted(k for k in resident if k != "superblocks"):
        kib = resident[key] * PAGE // 1024
        total += kib
        print("%-10s %8d KiB resident of %8d KiB" % (key, kib, covered[key] * PAGE // 1024))
    print("%-10s %8d KiB resident in %d superblocks" % ("total", total, resident["superblocks"]))


if __name__ == "__main__":
    main()
