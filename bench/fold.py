#!/usr/bin/env python3
"""`perf script` output → folded stacks (one line a stack, root first: `a;b;c count`), the
format flame graph tools read. The root frame is the thread's name (`thread:strangler-shado`,
as the kernel cuts it to 15 bytes), so a flame graph and `top.py` tell the worker's time from the
helper threads'. Rust hashes (`::h0123…`) and offsets are dropped so the same function folds
together across builds; kernel frames are marked `[k]`."""
import re
import sys
from collections import Counter

HASH = re.compile(r"::h[0-9a-f]{16}$")
# A sample's first line: the thread's name (it may hold spaces), then its pid/tid.
COMM = re.compile(r"^\s*(.+?)\s+\d+(?:/\d+)?\s")


def frames(block):
    head = COMM.match(block[0])
    yield "thread:" + (head.group(1).replace(";", ":") if head else "?")
    yield from calls(block)


def calls(block):
    for line in block[1:]:
        line = line.strip()
        if not line:
            continue
        parts = line.split(None, 1)
        rest = parts[1] if len(parts) > 1 else "[unknown]"
        sym, _, dso = rest.rpartition(" (")
        if not sym:
            sym, dso = rest, ""
        sym = sym.rsplit("+0x", 1)[0]
        sym = HASH.sub("", sym)
        if "kernel" in dso or dso.startswith("[k"):
            sym += " [k]"
        yield sym.replace(";", ":")


def fold(block):
    f = list(frames(block))
    return ";".join([f[0]] + list(reversed(f[1:])))


def main():
    stacks = Counter()
    block = []
    for line in sys.stdin:
        if line.strip() == "":
            if block:
                stacks[fold(block)] += 1
            block = []
        else:
            block.append(line.rstrip("\n"))
    if block:
        stacks[fold(block)] += 1
    for stack, n in stacks.most_common():
        print(f"{stack} {n}")


if __name__ == "__main__":
    main()
