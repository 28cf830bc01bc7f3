#!/usr/bin/env python3
"""Loads in flight per thread, read from SASS: a check that needs no GPU.

A memory-bound kernel reaches the copy rate only if each SM keeps enough
bytes in flight (Little's law: bandwidth x latency, about 20 KB per H100 SM).
With few warps per SM, that rests on each thread issuing several loads before
it waits on the first. Whether it does is decided by ptxas, and shows in the
SASS: a load is waited on where an instruction first reads its destination.

For each kernel this finds its largest loop (the longest backward branch),
walks the loop body twice (so that loads issued late in one iteration count
as outstanding early in the next: software pipelining), and prints

    loop <instructions> ins <n> LDG peak in flight <p> <kernel>

where p is the most global loads issued and not yet read at any point of the
second walk. p == n: every load of an iteration overlaps; p == 1: the thread
waits on each load before issuing the next. Copies straight to shared memory
(LDGSTS, cp.async) hold no register and are waited on only at a DEPBAR: they
are listed as "+ k LDGSTS" (k in the loop), not counted in p. It is a static, linear reading of
the loop (branches inside it are walked in address order), so read it as an
upper bound of what the scheduler can overlap, not a measurement.

Usage:
    cuobjdump -sass libbnorm.so | bench/sass_mlp.py [REGEX]
    nvdisasm -c kernels.cubin | bench/sass_mlp.py [REGEX]
    bench/sass_mlp.py [REGEX] < file.sass
REGEX filters kernels by (mangled) name.
"""
import re
import sys

FUNC = re.compile(r'^\s*\.text\.(\S+):|Function : (\S+)')
LABEL = re.compile(r'^\s*(\.L_x_\d+):')
INSN = re.compile(r'/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?);')


def registers(text):
    """General registers named in an operand (R4.64 names R4 and R5)."""
    out = set()
    for m in re.finditer(r'\bR(\d+)(\.64)?', text):
        r = int(m.group(1))
        out.add(r)
        if m.group(2):
            out.add(r + 1)
    return out


def load_width(op):
    m = re.search(r'\.(128|64)\b', op)
    return int(m.group(1)) // 32 if m else 1


def parse(lines):
    funcs, cur, pending = {}, None, []
    for line in lines:
        m = FUNC.search(line)
        if m:
            cur = m.group(1) or m.group(2)
            funcs[cur] = ([], {})
            continue
        if cur is None:
            continue
        m = LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = INSN.search(line)
        if m:
            insns, labels = funcs[cur]
            for label in pending:
                labels[label] = len(insns)
            pending = []
            # cuobjdump may print a branch target as an address: index those too.
            labels[hex(int(m.group(1), 16))] = len(insns)
            insns.append((m.group(3), m.group(4)))
    return funcs


def largest_loop(insns, labels):
    best = (0, len(insns) - 1)
    found = False
    for i, (op, args) in enumerate(insns):
        if not op.startswith('BRA'):
            continue
        m = re.search(r'\((\.L_x_\d+)\)', args) or re.search(r'\b(0x[0-9a-f]+)\b', args)
        target = m and (m.group(1) if m.group(1).startswith('.') else hex(int(m.group(1), 16)))
        if target and target in labels and labels[target] <= i:
            lo = labels[target]
            if not found or i - lo > best[1] - best[0]:
                best, found = (lo, i), True
    return best


def peak_in_flight(body):
    outstanding, peak, loads, copies = [], 0, 0, 0
    for step, (op, args) in enumerate(body + body):
        second = step >= len(body)
        parts = [p.strip() for p in args.split(',')]
        if op.startswith(('ST', 'RED', 'ATOM', 'LDGSTS')):
            reads, writes = registers(args), set()
        else:
            reads = set().union(set(), *(registers(p) for p in parts[1:]))
            writes = registers(parts[0]) if parts else set()
        # A load stops being outstanding where its destination is read (the
        # wait) or overwritten.
        outstanding = [d for d in outstanding if not (d & reads) and not (d & writes)]
        if op.startswith('LDGSTS'):
            copies += second
        elif op.startswith('LDG'):
            first = int(re.match(r'R(\d+)', args).group(1))
            outstanding.append(set(range(first, first + load_width(op))))
            if second:
                loads += 1
                peak = max(peak, len(outstanding))
    return loads, peak, copies


def main():
    pattern = re.compile(sys.argv[1]) if len(sys.argv) > 1 else None
    for name, (insns, labels) in parse(sys.stdin).items():
        if pattern and not pattern.search(name):
            continue
        lo, hi = largest_loop(insns, labels)
        loads, peak, copies = peak_in_flight(insns[lo:hi + 1])
        extra = f'  + {copies} LDGSTS' if copies else ''
        print(f'loop {hi - lo + 1:5d} ins {loads:3d} LDG  peak in flight {peak:3d}{extra}  {name}')


if __name__ == '__main__':
    main()
