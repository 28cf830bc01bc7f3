"""bnorm.BatchNorm1d/2d/3d against torch.nn.BatchNorm1d/2d/3d (float64), on
random non-zero inputs: outputs, input and parameter gradients, running
statistics and num_batches_tracked after several training steps, then eval
mode; every module, layout, dtype and configuration. Tolerances: helpers.py."""

import pytest
import torch

import bnorm
from helpers import (BNORM_CLASSES, TORCH_CLASSES, assert_act_close, assert_buffers_match,
                     make_x, pair, step_and_compare, torch_batch_norm_forbidden, to_layout)

# (id, dims of the module, input shape, layout)
SHAPES = [
    ("1d-nc", 1, (32, 6), "nchw"),
    ("1d-ncl", 1, (8, 5, 12), "nchw"),
    ("1d-ncl-channels_last", 1, (8, 5, 12), "nhwc"),
    ("2d-nchw", 2, (6, 7, 5, 6), "nchw"),
    ("2d-channels_last", 2, (6, 7, 5, 6), "nhwc"),
    ("2d-nchw-larger", 2, (16, 24, 12, 12), "nchw"),
    ("3d-ncdhw", 3, (3, 5, 4, 3, 5), "nchw"),
    ("3d-channels_last_3d", 3, (3, 5, 4, 3, 5), "nhwc"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (affine, track_running_stats, momentum, eps)
CONFIGS = [
    (True, True, 0.1, 1e-5),
    (True, True, None, 1e-5),   # cumulative average
    (False, True, 0.3, 1e-3),
    (True, False, 0.1, 1e-5),   # batch statistics in eval mode too
    (False, False, None, 1e-5),
    (True, True, 1.0, 0.5),     # running statistics = the last batch's; a large eps
]


def _ids(v):
    if isinstance(v, torch.dtype):
        return str(v).replace("torch.", "")
    if isinstance(v, tuple) and len(v) == 4 and isinstance(v[0], bool):
        return "affine%d-track%d-momentum%s-eps%g" % v
    return None


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_train_steps_then_eval(device, shape, dtype, config):
    name, dims, size, layout = shape
    affine, track, momentum, eps = config
    mod, ref = pair(dims, device, num_features=size[1], affine=affine, track_running_stats=track,
                    momentum=momentum, eps=eps, nbt=0)
    assert type(mod) is BNORM_CLASSES[dims]
    for step in range(3):
        x = make_x(size, dtype, layout, device)
        if layout == "nhwc" and dims > 1:
            fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
            assert x.is_contiguous(memory_format=fmt) and not x.is_contiguous()
        step_and_compare(mod, ref, x, "train step %d" % step)
        assert_buffers_match(mod, ref, "after train step %d" % step)
    if track:
        assert mod.num_batches_tracked.item() == 3

    mod.eval()
    ref.eval()
    before = {k: v.clone() for k, v in mod.state_dict().items()}
    for step in range(2):
        x = make_x(size, dtype, layout, device)
        step_and_compare(mod, ref, x, "eval step %d" % step)
    for k, v in mod.state_dict().items():  # eval changes nothing
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("path", ["multi_pass", "single_block", "persistent", "auto"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_kernel_paths(device, path, layout):
    """bnormConfig_t.path (the newest field of the struct) reaches the library,
    and every path matches torch."""
    mod, ref = pair(2, device, num_features=9, momentum=0.2)
    mod.bnorm_path = path
    for step in range(2):
        step_and_compare(mod, ref, make_x((5, 9, 7, 6), torch.float32, layout, device),
                         "%s step %d" % (path, step))
        assert_buffers_match(mod, ref, "%s step %d" % (path, step))


def test_unknown_path_is_refused(device):
    mod = bnorm.BatchNorm2d(3, device=device)
    mod.bnorm_path = "fastest"
    with pytest.raises(ValueError, match="path must be one of"):
        mod(make_x((2, 3, 2, 2), torch.float32, "nchw", device))


def test_cumulative_average_is_the_plain_mean(device):
    """momentum=None: after k steps the running mean is the mean of the k batch
    means, counting from a num_batches_tracked that does not start at 0
    (bnorm's f = 1/(1 + t) then t += 1 is torch's t += 1 then f = 1/t)."""
    mod, ref = pair(2, device, num_features=4, momentum=None, nbt=3)
    start_mean = ref.running_mean.double().clone()
    means = []
    for step in range(4):
        x = make_x((4, 4, 3, 3), torch.float32, "nchw", device)
        means.append(x.double().mean(dim=(0, 2, 3)))
        step_and_compare(mod, ref, x, "step %d" % step)
        assert_buffers_match(mod, ref, "step %d" % step)
    assert mod.num_batches_tracked.item() == 7
    # (3 * start + sum of 4 batch means) / 7
    want = (3 * start_mean + torch.stack(means).sum(0)) / 7
    err = (mod.running_mean.double() - want).abs().max().item()
    assert err <= 1e-5 * want.abs().max().item()


def test_momentum_zero_keeps_running_stats(device):
    mod, ref = pair(1, device, num_features=5, momentum=0.0)
    rm, rv = mod.running_mean.clone(), mod.running_var.clone()
    step_and_compare(mod, ref, make_x((7, 5), torch.float32, "nchw", device), "momentum 0")
    assert torch.equal(mod.running_mean, rm) and torch.equal(mod.running_var, rv)
    assert mod.num_batches_tracked.item() == 1


def test_output_and_gradient_keep_the_layout(device):
    mod, ref = pair(2, device, num_features=4)
    x = make_x((3, 4, 5, 5), torch.float32, "nhwc", device).requires_grad_(True)
    xr = x.detach().double().requires_grad_(True)
    y = mod(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    # A gradient in another layout (here contiguous) is rearranged, not refused
    # or misread.
    dy = torch.randn(y.shape, device=device).contiguous()
    y.backward(dy)
    ref(xr).backward(dy.double())
    assert x.grad.stride() == x.stride()
    assert_act_close(x.grad, xr.grad, torch.float32, "dx from a contiguous dy")


def test_backward_with_a_broadcast_gradient(device):
    """A reduction hands backward an expanded gradient (stride 0 along the
    batch here): it is made dense in the input's layout, not misread."""
    mod, ref = pair(2, device, num_features=3)
    x = make_x((4, 3, 2, 2), torch.float32, "nhwc", device).requires_grad_(True)
    xr = x.detach().double().requires_grad_(True)
    r = torch.randn(3, 2, 2, dtype=torch.float64, device=device)
    (mod(x).sum(0) * r.float()).sum().backward()
    (ref(xr).sum(0) * r).sum().backward()
    assert_act_close(x.grad, xr.grad, torch.float32, "dx")
    assert torch.allclose(mod.bias.grad.double(), ref.bias.grad, rtol=1e-5, atol=1e-5)
    assert torch.allclose(mod.weight.grad.double(), ref.weight.grad, rtol=1e-5, atol=1e-5)


def test_only_some_gradients_wanted(device):
    mod, ref = pair(2, device, num_features=3)
    mod.weight.requires_grad_(False)
    ref.weight.requires_grad_(False)
    x = make_x((4, 3, 2, 2), torch.float32, "nchw", device)
    # x without grad, bias with grad
    y = mod(x)
    y_ref = ref(x.double())
    dy = torch.randn_like(y)
    y.backward(dy)
    y_ref.backward(dy.double())
    assert mod.weight.grad is None
    assert torch.allclose(mod.bias.grad.double(), ref.bias.grad, rtol=1e-5, atol=1e-5)
    # x with grad, no parameter needs one
    mod.bias.requires_grad_(False)
    x2 = x.clone().requires_grad_(True)
    x2r = x.double().requires_grad_(True)
    mod.eval()
    ref.eval()
    mod(x2).backward(dy)
    ref(x2r).backward(dy.double())
    assert_act_close(x2.grad, x2r.grad, torch.float32, "eval dx, frozen, no parameter grads")


def test_no_grad_forward(device):
    mod, ref = pair(2, device, num_features=3)
    x = make_x((4, 3, 2, 2), torch.float16, "nhwc", device)
    with torch.no_grad(), torch_batch_norm_forbidden():
        y = mod(x)
    assert not y.requires_grad
    assert_act_close(y, ref(x.double()), torch.float16, "y under no_grad")
    assert_buffers_match(mod, ref, "no_grad")


def test_functional_batch_norm(device):
    """bnorm.batch_norm has torch.nn.functional.batch_norm's arguments."""
    x = make_x((6, 4, 3), torch.float32, "nchw", device)
    w = torch.rand(4, device=device) + 0.5
    b = torch.randn(4, device=device)
    rm, rv = torch.randn(4, device=device), torch.rand(4, device=device) + 0.5
    rm2, rv2 = rm.double(), rv.double()
    for training in (True, False):
        y = bnorm.batch_norm(x, rm, rv, w, b, training, 0.25, 1e-3)
        y_ref = torch.nn.functional.batch_norm(x.double(), rm2, rv2, w.double(), b.double(),
                                               training, 0.25, 1e-3)
        assert_act_close(y, y_ref, torch.float32, "functional training=%s" % training)
        assert torch.allclose(rm.double(), rm2, rtol=1e-5, atol=1e-6)
        assert torch.allclose(rv.double(), rv2, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip(device):
    ref = TORCH_CLASSES[2](6, momentum=None, device=device)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.normal_()
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2)
        ref.num_batches_tracked.fill_(11)
    mod = bnorm.BatchNorm2d(6, momentum=None, device=device)
    assert list(mod.state_dict().keys()) == list(ref.state_dict().keys()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    mod.load_state_dict(ref.state_dict())  # strict
    for k, v in ref.state_dict().items():
        assert torch.equal(mod.state_dict()[k], v), k
    mod(make_x((3, 6, 4, 4), torch.float32, "nchw", device))  # changes the buffers
    back = TORCH_CLASSES[2](6, momentum=None, device=device)
    back.load_state_dict(mod.state_dict())
    for k, v in mod.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert back.num_batches_tracked.item() == 12
    # An old (version 1) state_dict without num_batches_tracked loads as in torch.
    old = ref.state_dict()
    del old["num_batches_tracked"]
    old._metadata[""]["version"] = 1
    mod.load_state_dict(old)
    assert mod.num_batches_tracked.item() == 0
    # without running statistics
    nt = bnorm.BatchNorm1d(3, track_running_stats=False, affine=False)
    assert list(nt.state_dict().keys()) == []


def test_constructor_and_repr_match_torch():
    for dims in (1, 2, 3):
        a = BNORM_CLASSES[dims](7, eps=1e-3, momentum=None, affine=False,
                                track_running_stats=True)
        b = TORCH_CLASSES[dims](7, eps=1e-3, momentum=None, affine=False,
                                track_running_stats=True)
        assert isinstance(a, TORCH_CLASSES[dims])
        assert a.extra_repr() == b.extra_repr()
        assert (a.eps, a.momentum, a.affine, a.track_running_stats) == (1e-3, None, False, True)


def test_torch_batch_norm_forbidden_works():
    """The guard used around every bnorm call in these tests does stop torch's
    batch norm, so a module that fell back to torch would fail them."""
    with torch_batch_norm_forbidden():
        with pytest.raises(AssertionError, match="torch's batch norm was called"):
            torch.nn.BatchNorm2d(3)(torch.randn(2, 3, 2, 2))


def test_channels_last_helper_matches_torch():
    x = to_layout(torch.randn(2, 3, 4, 5), "nhwc")
    assert x.is_contiguous(memory_format=torch.channels_last)
    x = to_layout(torch.randn(2, 3, 4, 5, 6), "nhwc")
    assert x.is_contiguous(memory_format=torch.channels_last_3d)
