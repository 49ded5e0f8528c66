#!/usr/bin/env python3
"""Where the time goes, from folded stacks (bench/fold.py): the share of samples per kind of
work at the leaf (kernel, allocator, copies, HTTP/1 parsing, the runtime, pingora, metrics, our
code…) and the heaviest functions, each also in µs per request when the CPU µs per request of
the run is given.  Usage: top.py FOLDED [cpu_us_per_request] [rows]"""
import gzip
import sys
from collections import Counter

# First match wins: (kind, substrings of the leaf frame).
KINDS = [
    ("kernel (syscalls, TCP, scheduling)", [" [k]"]),
    ("allocator", ["mi_", "malloc", "free", "realloc", "calloc", "_int_", "tcache", "sdallocx", "mallocx", "__rust_alloc", "__rust_dealloc"]),
    ("memcpy / memmove / memset", ["memcpy", "memmove", "memset", "memcmp", "bcmp"]),
    ("HTTP/1 parsing (httparse)", ["httparse::"]),
    ("tokio (runtime, timers, I/O driver)", ["tokio::"]),
    ("metrics (prometheus)", ["prometheus::"]),
    ("pingora", ["pingora"]),
    ("http / bytes crates (headers, URIs)", ["http::", "bytes::", "httpdate", "h2::"]),
    ("strangler", ["strangler"]),
    ("hyper (reference proxy)", ["hyper"]),
    ("libc / std (other)", ["std::", "core::", "alloc::", "libc", "__"]),
]


def kind(leaf):
    for name, needles in KINDS:
        if any(n in leaf for n in needles):
            return name
    return "other"


def main():
    path = sys.argv[1]
    us = float(sys.argv[2]) if len(sys.argv) > 2 else None
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    kinds, leaves, inclusive, threads = Counter(), Counter(), Counter(), Counter()
    total = 0
    lines = gzip.open(path, "rt") if path.endswith(".gz") else open(path)
    for line in lines:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        n = int(n)
        total += n
        frames = stack.split(";")
        if frames[0].startswith("thread:"):
            threads[frames[0][len("thread:"):]] += n
            frames = frames[1:] or ["?"]
        leaves[frames[-1]] += n
        kinds[kind(frames[-1])] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        print("no samples")
        return

    def cell(n):
        share = 100.0 * n / total
        return f"{share:5.1f} %" + (f" | {us * n / total:6.2f}" if us else "")

    head = "| share" + (" | µs/req" if us else "")
    sep = "|---" + ("|---" if us else "")
    print(f"{total} samples\n")
    if threads:
        print(f"| thread {head} |\n|---{sep}|")
        for t, n in threads.most_common():
            print(f"| {t} | {cell(n)} |")
        print()
    print(f"| kind of work (leaf frame) {head} |\n|---{sep}|")
    for k, n in kinds.most_common():
        print(f"| {k} | {cell(n)} |")
    print(f"\n| heaviest functions (self) {head} |\n|---{sep}|")
    for f, n in leaves.most_common(rows):
        print(f"| `{f[:110]}` | {cell(n)} |")
    ours = [(f, n) for f, n in inclusive.items() if f.startswith("strangler") or "<strangler" in f]
    if ours:
        print(f"\n| strangler's functions (inclusive) {head} |\n|---{sep}|")
        for f, n in sorted(ours, key=lambda x: -x[1])[:rows]:
            print(f"| `{f[:110]}` | {cell(n)} |")


if __name__ == "__main__":
    main()
