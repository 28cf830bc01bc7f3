"""Inputs bnorm cannot take are refused with a message that says why, before
anything is computed or changed; errors from the library carry its status and
its message (read on the thread that made the call)."""

import threading

import pytest
import torch

import bnorm
from helpers import make_x


def _state(mod):
    return {k: v.clone() for k, v in mod.state_dict().items()}


def _unchanged(mod, before):
    for k, v in mod.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32])
def test_unsupported_dtype(device, dtype):
    mod = bnorm.BatchNorm2d(3, device=device)
    before = _state(mod)
    x = torch.ones(2, 3, 2, 2, dtype=dtype, device=device)
    with pytest.raises(bnorm.UnsupportedInputError, match=str(dtype).replace("torch.", "")) as e:
        mod(x)
    assert "float32, float16 and bfloat16" in str(e.value)
    _unchanged(mod, before)


STRIDED = {
    "slice": lambda d: make_x((2, 3, 4, 8), torch.float32, "nchw", d)[:, :, :, ::2],
    "transpose-hw": lambda d: make_x((2, 3, 4, 5), torch.float32, "nchw", d).transpose(2, 3),
    "channels-in-the-middle": lambda d: torch.randn(2, 4, 3, 5, device=d).permute(0, 2, 1, 3),
}


@pytest.mark.parametrize("case", sorted(STRIDED))
def test_unsupported_strides(device, case):
    mod = bnorm.BatchNorm2d(3, device=device)
    before = _state(mod)
    x = STRIDED[case](device)
    assert x.shape[1] == 3
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(bnorm.UnsupportedInputError, match="neither contiguous") as e:
        mod(x)
    assert "strides" in str(e.value) and ".contiguous()" in str(e.value)
    _unchanged(mod, before)
    # the same data made contiguous goes through
    mod(x.contiguous())


def test_expanded_batch_refused(device):
    mod = bnorm.BatchNorm2d(3, device=device)
    x = make_x((1, 3, 4, 4), torch.float32, "nchw", device).expand(4, 3, 4, 4)
    with pytest.raises(bnorm.UnsupportedInputError, match="neither contiguous"):
        mod(x)


def test_wrong_rank_like_torch(device):
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        bnorm.BatchNorm2d(3, device=device)(torch.ones(2, 3, 4, device=device))
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\)"):
        bnorm.BatchNorm1d(3, device=device)(torch.ones(2, 3, 4, 4, device=device))
    with pytest.raises(ValueError, match=r"expected 5D input \(got 4D input\)"):
        bnorm.BatchNorm3d(3, device=device)(torch.ones(2, 3, 4, 4, device=device))


def test_half_parameters_refused(device):
    mod = bnorm.BatchNorm2d(3, device=device).half()
    with pytest.raises(bnorm.UnsupportedInputError, match="float32") as e:
        mod(torch.ones(2, 3, 2, 2, dtype=torch.float16, device=device))
    assert "weight is torch.float16" in str(e.value)


def test_channel_count_mismatch(device):
    mod = bnorm.BatchNorm2d(3, device=device)
    with pytest.raises(bnorm.UnsupportedInputError, match="vector of 4 values"):
        mod(torch.ones(2, 4, 2, 2, device=device))


def test_momentum_out_of_range_is_the_library_error(device):
    """torch takes any momentum; bnorm's factor must be in [0, 1]: the library
    refuses, names the field, and nothing changes (the counter included)."""
    mod = bnorm.BatchNorm2d(3, momentum=1.5, device=device)
    before = _state(mod)
    with pytest.raises(bnorm.BnormError) as e:
        mod(make_x((2, 3, 2, 2), torch.float32, "nchw", device))
    assert e.value.status == 101 and e.value.call == "bnormForwardTraining"
    assert e.value.status_string.startswith("BNORM_STATUS_INVALID_VALUE")
    assert "exponential_average_factor" in e.value.message and "1.5" in e.value.message
    assert not isinstance(e.value, ValueError)
    _unchanged(mod, before)


def test_negative_eps(device):
    mod = bnorm.BatchNorm1d(3, eps=-1e-3, device=device).eval()
    with pytest.raises(bnorm.BnormError, match="config->eps"):
        mod(torch.ones(4, 3, device=device))


def test_cumulative_needs_a_counter():
    x = torch.ones(4, 3)
    with pytest.raises(ValueError, match="needs step_count"):
        bnorm.batch_norm(x, torch.zeros(3), torch.ones(3), training=True, momentum=None)
    with pytest.raises(bnorm.UnsupportedInputError, match="one int64"):
        bnorm.batch_norm(x, torch.zeros(3), torch.ones(3), training=True, momentum=None,
                         step_count=torch.zeros(1, dtype=torch.int32))


def test_messages_are_per_thread():
    """bnorm's last-error message is per host thread: two threads failing at
    once, each on its own argument, each get their own message."""
    errors = {}
    barrier = threading.Barrier(2)

    def fail(name, kwargs):
        mod = bnorm.BatchNorm1d(3, **kwargs)
        x = make_x((8, 3), torch.float32, "nchw", "cpu")
        barrier.wait()
        got = []
        for _ in range(50):
            try:
                mod(x)
            except bnorm.BnormError as e:
                got.append(e.message)
        errors[name] = got

    threads = [threading.Thread(target=fail, args=("eps", dict(eps=-1.0))),
               threading.Thread(target=fail, args=("factor", dict(momentum=2.0)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors["eps"]) == 50 and len(errors["factor"]) == 50
    assert all("config->eps" in m for m in errors["eps"])
    assert all("exponential_average_factor" in m for m in errors["factor"])


def test_cuda_tensor_with_cpu_parameters():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    mod = bnorm.BatchNorm2d(3)
    with pytest.raises(bnorm.UnsupportedInputError, match="weight is on cpu"):
        mod(torch.ones(2, 3, 2, 2, device="cuda"))
