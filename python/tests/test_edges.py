"""The edges: a batch of one value per channel (training raises as torch
does; eval mode takes it), an empty batch (as torch: empty output, zero
parameter gradients, statistics untouched, the call counted)."""

import pytest
import torch

import bnorm
from helpers import (assert_buffers_match, make_x, pair, step_and_compare,
                     torch_batch_norm_forbidden)

ONE_VALUE = [(1, (1, 4)), (1, (1, 4, 1)), (2, (1, 4, 1, 1)), (3, (1, 4, 1, 1, 1))]


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("dims,shape", ONE_VALUE, ids=[str(s) for _, s in ONE_VALUE])
def test_batch_of_one_raises_in_training_like_torch(device, dims, shape, momentum):
    mod, ref = pair(dims, device, num_features=4, momentum=momentum, nbt=2)
    before = {k: v.clone() for k, v in mod.state_dict().items()}
    x = make_x(shape, torch.float32, "nchw", device)
    with pytest.raises(ValueError) as torch_error:
        ref(x.double())
    with pytest.raises(ValueError) as bnorm_error, torch_batch_norm_forbidden():
        mod(x)
    # torch's sentence first, then bnorm's status and message
    assert str(torch_error.value).startswith("Expected more than 1 value per channel when training")
    assert str(bnorm_error.value).startswith(str(torch_error.value))
    e = bnorm_error.value
    assert isinstance(e, bnorm.BatchTooSmallError) and isinstance(e, bnorm.BnormError)
    assert e.status == 105 and e.call == "bnormForwardTraining"
    assert "n * spatial == 1" in e.message
    # nothing changed but the counter, which torch advances too
    assert_buffers_match(mod, ref, "after the refused call")
    assert mod.num_batches_tracked.item() == 3
    for k in ("running_mean", "running_var", "weight", "bias"):
        assert torch.equal(mod.state_dict()[k], before[k]), k
    # and the module still works, the counter in step with torch's
    step_and_compare(mod, ref, make_x((3,) + shape[1:], torch.float32, "nchw", device), "next")
    assert_buffers_match(mod, ref, "after the next batch")


def test_batch_of_one_without_running_stats_raises_in_eval_too(device):
    """track_running_stats=False: eval mode normalizes with batch statistics."""
    mod = bnorm.BatchNorm2d(3, track_running_stats=False, device=device).eval()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        mod(make_x((1, 3, 1, 1), torch.float32, "nchw", device))


@pytest.mark.parametrize("dims,shape", ONE_VALUE, ids=[str(s) for _, s in ONE_VALUE])
def test_batch_of_one_in_eval_mode(device, dims, shape):
    mod, ref = pair(dims, device, num_features=4)
    mod.eval()
    ref.eval()
    step_and_compare(mod, ref, make_x(shape, torch.float32, "nchw", device), "eval, one value")


def test_one_sample_with_spatial_extent_trains(device):
    """n == 1 is fine when n * spatial >= 2, in torch and in bnorm."""
    mod, ref = pair(2, device, num_features=3)
    step_and_compare(mod, ref, make_x((1, 3, 1, 2), torch.float32, "nchw", device), "1x3x1x2")
    assert_buffers_match(mod, ref, "1x3x1x2")
    step_and_compare(mod, ref, make_x((2, 3), torch.float32, "nchw", device).view(2, 3, 1, 1),
                     "two values")
    assert_buffers_match(mod, ref, "two values")


EMPTY = [(1, (0, 4), "nchw"), (1, (0, 4, 5), "nchw"), (2, (0, 4, 3, 3), "nchw"),
         (2, (0, 4, 3, 3), "nhwc"), (2, (5, 4, 0, 3), "nchw"), (3, (0, 4, 2, 2, 2), "nhwc")]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("dims,shape,layout", EMPTY, ids=["%s-%s" % (s, l) for _, s, l in EMPTY])
def test_empty_batch_like_torch(device, dims, shape, layout, momentum, training):
    mod, ref = pair(dims, device, num_features=4, momentum=momentum, nbt=1)
    mod.train(training)
    ref.train(training)
    before = {k: v.clone() for k, v in mod.state_dict().items()}
    x = torch.empty(shape, dtype=torch.float32)
    x = (x.contiguous(memory_format=torch.channels_last) if layout == "nhwc" and dims == 2 else
         x.contiguous(memory_format=torch.channels_last_3d) if layout == "nhwc" else x)
    x = x.to(device).requires_grad_(True)
    xr = x.detach().double().requires_grad_(True)
    with torch_batch_norm_forbidden():
        y = mod(x)
    y_ref = ref(xr)
    assert y.shape == y_ref.shape == x.shape and y.stride() == x.stride()
    # parameter gradients: zeros (bnorm writes them), as torch's
    y.sum().backward()
    y_ref.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(mod.weight.grad, torch.zeros(4, device=device))
    assert torch.equal(mod.bias.grad, torch.zeros(4, device=device))
    assert torch.equal(ref.weight.grad, torch.zeros(4, device=device, dtype=torch.float64))
    # statistics untouched, the call counted in training (torch counts it)
    for k in ("running_mean", "running_var"):
        assert torch.equal(mod.state_dict()[k], before[k]), k
    assert_buffers_match(mod, ref, "after the empty batch")
    assert mod.num_batches_tracked.item() == (2 if training else 1)
    # with the counter in step, a real batch next updates the statistics as torch does
    full = (3,) + shape[1:] if shape[0] == 0 else shape[:2] + (2,) + shape[3:]
    step_and_compare(mod, ref, make_x(full, torch.float32, layout, device), "next batch")
    assert_buffers_match(mod, ref, "after the next batch")
