"""bench/torch_bench.py --bnorm times bnorm through this binding beside torch
(on a GPU). Here, on the CPU: the very callables it times compute the same
as torch's, for each op and both of its layouts."""

import importlib.util
import os

import pytest
import torch

from helpers import TOL_ACT

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench",
                     "torch_bench.py")


def _bench():
    spec = importlib.util.spec_from_file_location("torch_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("op", ["fwd_train", "fwd_infer", "bwd"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_bench_ops_agree(op, layout):
    tb = _bench()
    assert tb.import_bnorm().BatchNorm2d  # the binding from this checkout
    n, c, s = 4, 6, 10
    if layout == "NHWC":  # as torch_bench builds its inputs
        x = torch.randn(n, s, 1, c).permute(0, 3, 1, 2)
    else:
        x = torch.randn(n, c, s, 1)
    x = x * 2 + 1
    w, b = torch.rand(c) + 0.5, torch.rand(c) - 0.5
    out = {}
    stats = {}
    for impl in ("torch", "bnorm"):
        torch.manual_seed(5)  # the same dy for both
        rm, rv = torch.zeros(c), torch.ones(c)
        fn, state = tb.make_op(impl, op, x, w, b, rm, rv)
        out[impl] = fn()
        stats[impl] = (rm, rv)
    # Both in fp32, each within TOL_ACT of the exact result (helpers.py; m = 40
    # is large enough for dx and the sums to be of their terms' scale).
    tol = 2 * TOL_ACT[torch.float32]
    got, ref = out["bnorm"], out["torch"]
    for g, r in (zip(got, ref) if op == "bwd" else [(got, ref)]):
        assert (g - r).abs().max() <= tol * r.abs().max()
    for g, r in zip(stats["bnorm"], stats["torch"]):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-6)
    if op == "fwd_train":
        assert not torch.equal(stats["bnorm"][0], torch.zeros(c))  # updated
