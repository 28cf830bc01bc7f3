"""CUDA only (skipped, with the reason, without a CUDA device): bnorm on torch's
current stream, and inside a captured CUDA graph (workspace, outputs and
saved statistics come from torch's allocator; the cumulative average's step
counter advances on the device, so replays count)."""

import pytest
import torch

from conftest import NO_CUDA
from helpers import (assert_act_close, assert_buffers_match, assert_sum_close, batch_stats,
                     channel_sum, make_x, pair, xhat)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)


def test_side_stream():
    mod, ref = pair(2, "cuda", num_features=8)
    s = torch.cuda.Stream()
    x = make_x((16, 8, 32, 32), torch.float16, "nhwc", "cuda")
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        y = mod(x)
    s.synchronize()
    assert_act_close(y, ref(x.double()), torch.float16, "y on a side stream")
    assert_buffers_match(mod, ref, "side stream")


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
def test_graph_capture_of_a_training_step(momentum):
    shape = (8, 6, 5, 5)
    mod, ref = pair(2, "cuda", num_features=6, momentum=momentum)
    static_x = make_x(shape, torch.float32, "nchw", "cuda").requires_grad_(True)
    static_dy = torch.randn(shape, device="cuda")

    def ref_step(x, dy):
        xr = x.detach().double().requires_grad_(True)
        ref.weight.grad = ref.bias.grad = None
        yr = ref(xr)
        yr.backward(dy.double())
        return yr, xr.grad

    # warm-up on a side stream, as torch.cuda.graph wants
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            mod.zero_grad(set_to_none=True)
            static_x.grad = None
            mod(static_x).backward(static_dy)
    torch.cuda.current_stream().wait_stream(s)
    for _ in range(2):
        ref_step(static_x, static_dy)

    graph = torch.cuda.CUDAGraph()
    mod.zero_grad(set_to_none=True)
    static_x.grad = None
    with torch.cuda.graph(graph):
        static_y = mod(static_x)
        static_y.backward(static_dy)
    assert mod.num_batches_tracked.item() == 2  # capture runs nothing

    for replay in range(3):
        x = make_x(shape, torch.float32, "nchw", "cuda")
        dy = torch.randn(shape, device="cuda")
        with torch.no_grad():
            static_x.copy_(x)
            static_dy.copy_(dy)
        graph.replay()
        torch.cuda.synchronize()
        yr, dxr = ref_step(x, dy)
        what = "replay %d" % replay
        assert_act_close(static_y, yr, torch.float32, what + ": y")
        assert_act_close(static_x.grad, dxr, torch.float32, what + ": dx")
        mean, var = batch_stats(x)
        assert_sum_close(mod.bias.grad, ref.bias.grad, channel_sum(dy.double().abs()), what)
        assert_sum_close(mod.weight.grad, ref.weight.grad,
                         channel_sum((dy.double() * xhat(x, mean, var, ref.eps)).abs()), what)
        assert_buffers_match(mod, ref, what)
        assert mod.num_batches_tracked.item() == 3 + replay


def test_module_on_a_second_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("only one CUDA device")
    mod, ref = pair(2, "cuda:1", num_features=4)
    x = make_x((4, 4, 3, 3), torch.float32, "nchw", "cuda:1")
    y = mod(x)
    assert y.device == x.device
    assert_act_close(y, ref(x.double()), torch.float32, "y on cuda:1")
    assert_buffers_match(mod, ref, "cuda:1")
