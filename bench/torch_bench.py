#!/usr/bin/env python3
"""PyTorch's batch norm on bnorm-bench's cases, timed the same way.

Times torch.nn.functional.batch_norm on CUDA:
  fwd_train  training=True forward (under no_grad; running stats updated)
  fwd_infer  training=False forward
  bwd        the backward alone: torch.autograd.grad on a saved graph
             (retain_graph=True), w.r.t. x, weight and bias
Tensors are 4-D (N, C, H*W, 1), channels_last where the case is NHWC; weight,
bias and running statistics are fp32 (mixed precision for fp16/bf16 inputs,
as nn.BatchNorm2d under autocast). Each run is timed with CUDA events after
warm-up, with the L2 cache flushed before it (a 2x-L2 buffer written, not
timed); the median is reported.

With --bnorm, bnorm is timed the same way beside it, through the Python
binding (python/bnorm: bnorm.batch_norm, ctypes, autograd), so its times
include what a PyTorch user pays: the binding's host work on every call.

Writes a CSV with columns op,layout,dtype,n,c,spatial,torch_us (and
bnorm_py_us with --bnorm). With
--cases-from BNORM_CSV the cases and ops are those of a bnorm-bench CSV, and
--merge-out PATH writes that CSV again with torch_us filled in.

Exit status: 0 done, 1 a case failed unexpectedly, 2 bad arguments,
77 no PyTorch or no CUDA device.
"""

import argparse
import csv
import math
import sys
import time

OPS = ("fwd_train", "fwd_infer", "bwd")
EPS = 1e-5
MOMENTUM = 0.1


def suite():
    """The cases of bnorm-bench (bench/bnorm_bench.cpp, suite()), same names."""
    cases = []

    def add(name, layout, dtype, n, c, spatial, quick):
        cases.append(dict(name=name, layout=layout, dtype=dtype, n=n, c=c,
                          spatial=spatial, quick=quick))

    rn = [(64, 112), (64, 56), (256, 56), (128, 56), (128, 28), (512, 28),
          (256, 28), (256, 14), (1024, 14), (512, 14), (512, 7), (2048, 7)]
    for layout, dtype in (("NHWC", "f16"), ("NHWC", "bf16"), ("NCHW", "f32")):
        for c, hw in rn:
            quick = ((c, hw, dtype) in ((256, 56, "f16"), (64, 112, "f32"),
                                        (2048, 7, "bf16")))
            add("rn50-c%d-%dx%d-%s-%s" % (c, hw, hw, layout.lower(), dtype),
                layout, dtype, 256, c, hw * hw, quick)
    for dtype in ("f32", "f16"):
        for n in (8192, 65536):
            for c in (1024, 4096):
                add("bn1d-n%d-c%d-%s" % (n, c, dtype), "NCHW", dtype, n, c, 1,
                    n == 8192 and c == 1024 and dtype == "f32")
    add("video-n8-c64-32x56x56-nchw-f32", "NCHW", "f32", 8, 64, 32 * 56 * 56, False)
    add("video-n8-c64-32x56x56-nhwc-f16", "NHWC", "f16", 8, 64, 32 * 56 * 56, True)
    add("tiny-n2-c16-8x8-nchw-f32", "NCHW", "f32", 2, 16, 64, True)
    add("s1-n131072-c8-f32", "NCHW", "f32", 1 << 17, 8, 1, True)
    add("huge-n256-c64-384x384-nhwc-f16", "NHWC", "f16", 256, 64, 384 * 384, False)
    return cases


def key_of(op, case):
    return (op, case["layout"], case["dtype"], int(case["n"]), int(case["c"]),
            int(case["spatial"]))


def cases_from_csv(path):
    """(cases, ops per case) from a bnorm-bench CSV, in its order."""
    cases, ops = [], {}
    names = {key_of("", c)[1:]: c["name"] for c in suite()}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            case = dict(layout=row["layout"], dtype=row["dtype"], n=int(row["n"]),
                        c=int(row["c"]), spatial=int(row["spatial"]), quick=True)
            ident = key_of("", case)[1:]
            case["name"] = names.get(ident) or "n%d-c%d-s%d-%s-%s" % (
                case["n"], case["c"], case["spatial"], case["layout"].lower(), case["dtype"])
            if ident not in ops:
                ops[ident] = []
                cases.append(case)
            if row["op"] in OPS and row["op"] not in ops[ident]:
                ops[ident].append(row["op"])
    return cases, ops


def reps_for(footprint, want):
    if footprint > (4 << 30):
        return 1, min(want, 10)
    if footprint > (1 << 30):
        return 2, min(want, 20)
    return 3, want


def median(values):
    v = sorted(values)
    k = len(v)
    return v[k // 2] if k % 2 else 0.5 * (v[k // 2 - 1] + v[k // 2])


def make_op(impl, op, x, w, b, rm, rv):
    """(fn, state) timing `op` of `impl` ("torch": F.batch_norm, "bnorm": the
    Python binding's bnorm.batch_norm, same arguments) on these tensors; state
    holds what fn needs alive."""
    import torch
    import torch.nn.functional as F
    if impl == "torch":
        bn = F.batch_norm
    else:
        import bnorm
        bn = bnorm.batch_norm
    if op in ("fwd_train", "fwd_infer"):
        training = op == "fwd_train"

        def fn():
            with torch.no_grad():
                return bn(x, rm, rv, w, b, training, MOMENTUM, EPS)
        return fn, None
    xg = x.detach().requires_grad_(True)
    wg = w.detach().requires_grad_(True)
    bg = b.detach().requires_grad_(True)
    y = bn(xg, rm, rv, wg, bg, True, MOMENTUM, EPS)
    dy = torch.randn_like(y)

    def fn():
        return torch.autograd.grad(y, (xg, wg, bg), dy, retain_graph=True)
    return fn, (y, dy, xg, wg, bg)


def import_bnorm():
    """The binding from this checkout (python/), its libraries from
    $BNORM_LIBRARY_DIR or build/."""
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(os.path.dirname(here), "python"))
    import bnorm
    return bnorm


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a handful of cases")
    ap.add_argument("--case", action="append", default=[],
                    help="only cases whose name contains this (repeatable)")
    ap.add_argument("--op", default=",".join(OPS), help="comma-separated ops")
    ap.add_argument("--reps", type=int, default=30, help="timed runs (fewer for huge cases)")
    ap.add_argument("--csv", help="write the results here")
    ap.add_argument("--cases-from", help="take cases and ops from a bnorm-bench CSV")
    ap.add_argument("--merge-out", help="with --cases-from: that CSV with torch_us filled in")
    ap.add_argument("--bnorm", action="store_true",
                    help="also time bnorm through the Python binding (python/bnorm)")
    args = ap.parse_args()

    want_ops = [o for o in args.op.split(",") if o]
    for o in want_ops:
        if o not in OPS:
            print("torch_bench: unknown op %r" % o, file=sys.stderr)
            return 2
    if args.merge_out and not args.cases_from:
        print("torch_bench: --merge-out needs --cases-from", file=sys.stderr)
        return 2
    if args.reps < 1:
        print("torch_bench: --reps must be >= 1", file=sys.stderr)
        return 2

    try:
        import torch
    except ImportError as e:
        print("torch_bench: PyTorch is not installed (%s)" % e)
        return 77
    if not torch.cuda.is_available():
        print("torch_bench: no CUDA device")
        return 77
    impls = ["torch"]
    if args.bnorm:
        try:
            import_bnorm()
        except ImportError as e:
            print("torch_bench: the bnorm binding cannot be imported (%s)" % e, file=sys.stderr)
            return 2
        impls.append("bnorm")

    if args.cases_from:
        cases, ops_of = cases_from_csv(args.cases_from)
    else:
        cases = [c for c in suite() if c["quick"] or not args.quick]
        ops_of = {}
    if args.case:
        cases = [c for c in cases if any(s in c["name"] for s in args.case)]

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = int(getattr(props, "L2_cache_size", 0) or (50 << 20))
    flush = torch.empty(2 * l2, dtype=torch.uint8, device=dev)
    dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    try:
        cudnn_v = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except RuntimeError as e:  # e.g. a different cuDNN found first on LD_LIBRARY_PATH
        cudnn_v = "unusable (%s)" % str(e).splitlines()[0][:120]
    print("torch_bench  %s" % time.strftime("%Y-%m-%d %H:%M:%S"))
    print("device: %s  torch %s  cuDNN %s  L2 %.0f MiB" % (
        props.name, torch.__version__, cudnn_v, l2 / 1048576.0))
    print("median of %d runs after warm-up, L2 flushed before each; GB/s on compulsory bytes\n"
          % args.reps)
    if args.bnorm:
        print("%-32s %-9s %10s %10s %12s %10s" % ("case", "op", "torch_us", "GB/s",
                                                 "bnorm_py_us", "GB/s"))
        print("-" * 88)
    else:
        print("%-32s %-9s %10s %10s" % ("case", "op", "torch_us", "GB/s"))
        print("-" * 64)

    def timed(fn, footprint):
        warm, reps = reps_for(footprint, args.reps)
        for _ in range(warm):
            fn()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            flush.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        return 1000.0 * median([s.elapsed_time(e) for s, e in zip(starts, ends)])

    results = {}  # key -> torch's us (None: n/a)
    bnorm_results = {}  # key -> bnorm's us through the binding (--bnorm)
    failures = 0
    for case in cases:
        n, c, s = case["n"], case["c"], case["spatial"]
        dt = dtypes[case["dtype"]]
        esize = torch.empty((), dtype=dt).element_size()
        tbytes = n * c * s * esize
        ops = ops_of.get(key_of("", case)[1:], want_ops) if ops_of else want_ops
        ops = [o for o in ops if o in want_ops]
        tensors = []
        try:
            if case["layout"] == "NHWC":
                x = torch.randn(n, s, 1, c, dtype=dt, device=dev).permute(0, 3, 1, 2)
            else:
                x = torch.randn(n, c, s, 1, dtype=dt, device=dev)
            tensors.append(x)
            w = torch.rand(c, device=dev) + 0.5
            b = torch.rand(c, device=dev) - 0.5
            rm = torch.zeros(c, device=dev)
            rv = torch.ones(c, device=dev)
            for op in ops:
                nbytes = (3 if op == "bwd" else 2) * tbytes
                cols = []
                for impl in impls:
                    us = None
                    try:
                        fn, state = make_op(impl, op, x, w, b, rm, rv)
                        us = timed(fn, nbytes)
                        del fn, state
                    except torch.cuda.OutOfMemoryError as e:
                        print("    -- %s %s %s: out of memory (%s)" % (
                            case["name"], op, impl, str(e).splitlines()[0]))
                    except (RuntimeError, ValueError) as e:  # bnorm's errors are both
                        failures += 1
                        print("    !! %s %s %s: %s" % (case["name"], op, impl,
                                                     str(e).splitlines()[0]))
                    (results if impl == "torch" else bnorm_results)[key_of(op, case)] = us
                    cols += ["n/a" if us is None else "%.1f" % us,
                             "n/a" if us is None else "%.0f" % (nbytes / (us * 1e3))]
                widths = [10, 10, 12, 10]
                print("%-32s %-9s" % (case["name"], op) + "".join(
                    " %*s" % (wd, v) for wd, v in zip(widths, cols)))
                sys.stdout.flush()
        except torch.cuda.OutOfMemoryError as e:
            print("    -- %s: out of memory (%s)" % (case["name"], str(e).splitlines()[0]))
            for op in ops:
                results[key_of(op, case)] = None
                if args.bnorm:
                    bnorm_results[key_of(op, case)] = None
        finally:
            del tensors
            x = None
            torch.cuda.empty_cache()

    if args.csv:
        with open(args.csv, "w", newline="") as f:
            wr = csv.writer(f, lineterminator="\n")
            wr.writerow(["op", "layout", "dtype", "n", "c", "spatial", "torch_us"] +
                        (["bnorm_py_us"] if args.bnorm else []))
            for k, us in results.items():
                row = list(k) + ["" if us is None else "%.3f" % us]
                if args.bnorm:
                    bus = bnorm_results.get(k)
                    row.append("" if bus is None else "%.3f" % bus)
                wr.writerow(row)
        print("\nCSV: %s" % args.csv)

    if args.cases_from:
        with open(args.cases_from, newline="") as f:
            rows = list(csv.DictReader(f))
        logs = {}
        for row in rows:
            k = (row["op"], row["layout"], row["dtype"], int(row["n"]), int(row["c"]),
                 int(row["spatial"]))
            us = results.get(k)
            if us is not None:
                row["torch_us"] = "%.3f" % us
                try:
                    bn = float(row.get("bnorm_us") or "nan")
                except ValueError:
                    bn = float("nan")
                if bn > 0:
                    logs.setdefault(row["op"], []).append(math.log(us / bn))
        if logs:
            print("\ngeometric-mean speedup (torch time / bnorm time):")
            for op in OPS:
                if op in logs:
                    v = logs[op]
                    print("  %-9s %.3fx over %d cases" % (op, math.exp(sum(v) / len(v)), len(v)))
        if args.merge_out and rows:
            with open(args.merge_out, "w", newline="") as f:
                wr = csv.DictWriter(f, fieldnames=list(rows[0].keys()), lineterminator="\n")
                wr.writeheader()
                wr.writerows(rows)
            print("merged CSV: %s" % args.merge_out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
