"""bnorm.convert(model), and a small convolutional network trained for a few
SGD steps twice, once with torch's batch norm and once converted."""

import copy

import pytest
import torch
import torch.nn as nn

import bnorm
from helpers import TOL_ACT, make_x, randomize_, torch_batch_norm_forbidden


class MyBatchNorm(nn.BatchNorm2d):
    """A user's subclass: it may override forward, so convert leaves it alone."""


def _model():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4, momentum=None),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 1), MyBatchNorm(4)),
        nn.Flatten(2),
        nn.BatchNorm1d(4, affine=False, eps=1e-3),
        nn.Unflatten(2, (1, 5, 5)),
        nn.BatchNorm3d(4, track_running_stats=False),
    )


def test_convert_swaps_every_batch_norm_keeping_its_state(device):
    model = _model().to(device)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            randomize_(m, nbt=5)
    model[1].eval()
    original = copy.deepcopy(model)
    params = {name: p for name, p in model.named_parameters()}
    buffers = {name: b for name, b in model.named_buffers()}

    converted = bnorm.convert(model)
    assert converted is model  # changed in place
    assert type(model[1]) is bnorm.BatchNorm2d
    assert type(model[5]) is bnorm.BatchNorm1d
    assert type(model[7]) is bnorm.BatchNorm3d
    assert type(model[3][1]) is MyBatchNorm
    assert not model[1].training and model[5].training
    for m, o in ((model[1], original[1]), (model[5], original[5]), (model[7], original[7])):
        assert (m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats) == \
            (o.num_features, o.eps, o.momentum, o.affine, o.track_running_stats)
    # the very same Parameter and buffer objects: an optimizer keeps working
    for name, p in model.named_parameters():
        assert p is params[name], name
    for name, b in model.named_buffers():
        assert b is buffers[name], name
    assert model.state_dict().keys() == original.state_dict().keys()
    for k, v in original.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k

    # the same function
    x = make_x((2, 3, 5, 5), torch.float32, "nchw", device)
    with torch_batch_norm_forbidden():
        model[1](model[0](x))  # bnorm's own, no torch batch norm
    y, y_ref = model(x), original(x)
    err = (y - y_ref).abs().max().item()
    assert err <= 1e-4 * y_ref.abs().max().item()

    # converting again changes nothing; a bare batch norm is returned converted
    assert bnorm.convert(model) is model and type(model[1]) is bnorm.BatchNorm2d
    bare = nn.BatchNorm1d(3).to(device)
    assert type(bnorm.convert(bare)) is bnorm.BatchNorm1d


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16, momentum=None),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )


STEPS = 6
# Both runs compute in float32; they differ by bnorm's and torch's rounding
# (about 1e-7 relative per layer and step, see helpers.py), which a few SGD
# steps carry forward. 1e-4 of each quantity's scale is 1000 u: far above
# that drift (seen: < 4e-6), far below what any real difference in the
# forward, the gradients or the running statistics causes after one step.
TOL_TRAIN = 1e-4


def _train(model, layout, device, data):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for x, target in data:
        x = x.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else x
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_small_convnet_trains_the_same(device, layout):
    data = []
    g = torch.Generator().manual_seed(7)
    for _ in range(STEPS):
        x = torch.randn(16, 3, 8, 8, generator=g)
        # a learnable label: which of the three channels has the largest mean
        data.append((x.to(device), x.mean(dim=(2, 3)).argmax(dim=1).to(device)))
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    ref = _net(3).to(device).to(memory_format=fmt)
    mod = bnorm.convert(_net(3).to(device).to(memory_format=fmt))
    assert sum(isinstance(m, (bnorm.BatchNorm1d, bnorm.BatchNorm2d)) for m in mod.modules()) == 3

    ref_losses = _train(ref, layout, device, data)
    with torch_batch_norm_forbidden():
        losses = _train(mod, layout, device, data)

    # the runs learned something, and the same thing
    assert ref_losses[-1] < ref_losses[0]
    for step, (a, b) in enumerate(zip(losses, ref_losses)):
        assert abs(a - b) <= TOL_TRAIN * abs(b), "loss at step %d: %r vs %r" % (step, a, b)
    ref_state, state = ref.state_dict(), mod.state_dict()
    assert ref_state.keys() == state.keys()
    for k, v in ref_state.items():
        if v.dtype == torch.int64:
            assert torch.equal(state[k], v), k
            continue
        err = (state[k] - v).abs().max().item()
        assert err <= TOL_TRAIN * v.abs().max().item(), "%s: %g" % (k, err)
    # weights moved away from their start (the comparison is not of initial values)
    start = _net(3).state_dict()
    assert (ref_state["0.weight"].cpu() - start["0.weight"]).abs().max() > 1e-2

    # and predict the same in eval mode
    ref.eval()
    mod.eval()
    x = data[0][0].contiguous(memory_format=fmt)
    with torch.no_grad():
        out, out_ref = mod(x), ref(x)
    assert (out - out_ref).abs().max().item() <= TOL_TRAIN * out_ref.abs().max().item()
    assert TOL_ACT[torch.float32] < TOL_TRAIN
