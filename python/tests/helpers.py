"""Inputs, the torch reference and the tolerances the tests share.

The reference is torch.nn.BatchNorm itself, run in float64 on the very values
bnorm sees (an fp16/bf16 input is upcast exactly), with the same parameters
and buffers. So every difference is bnorm's own rounding, and the tolerances
below are budgets for that rounding:

Activations (y, dx), normwise: max|got - ref| <= TOL_ACT[dtype] * scale, with
  scale = max|ref| for y. For dx through the batch statistics, scale is the
  size of the terms dx sums, max gamma*rstd*(|dy| + |mean dy| + |xhat| |mean dy xhat|):
  dx is what remains after they cancel, and for small batches they cancel
  almost entirely (m = 2 leaves eps/(var + eps) of them), so no fp32
  computation, torch's own included, keeps more digits of dx than of them.
  For m >= 8 the two scales are about the same.
  float32   1e-5. bnorm computes in fp32 (u = 2^-24 = 6e-8): the statistics
            carry a relative error of a few u times log2(m) from the blocked
            sums, y and dx a few u more; seen here: <= 2e-7. 1e-5 leaves a
            margin of 20x, yet any formula error above 1e-5 of the output's
            scale (a wrong eps of 1e-3 on a unit variance, m vs m-1 in dx
            for m < 1e5, one element left out) fails.
  float16   2^-10 (fp16's machine epsilon): the output is rounded once to
            fp16, at most half an ulp, 2^-11 relative, plus the fp32 noise.
  bfloat16  2^-7 (bf16's machine epsilon): likewise for bf16's 8-bit
            significand (half an ulp is 2^-8 relative).
Per-channel statistics (running_mean, running_var), normwise: 1e-5 for every
  input dtype: they are accumulated in fp32 from the exact input values.
Parameter gradients (dgamma, dbeta), per channel:
  |got - ref| <= 1e-5 * sum_i |t_i| (t_i the summed terms, dy * xhat or dy):
  an fp32 sum of m terms in any blocked order errs by about
  log2(m) * u * sum|t_i| (1e-6 for m = 1e5); leaving out or doubling any one
  term (>= sum|t_i| / m on average) fails it for m < 1e5.
"""

import contextlib
import copy

import torch

import bnorm

TOL_ACT = {torch.float32: 1e-5, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}
TOL_STATS = 1e-5
TOL_SUM = 1e-5

TORCH_CLASSES = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}
BNORM_CLASSES = {1: bnorm.BatchNorm1d, 2: bnorm.BatchNorm2d, 3: bnorm.BatchNorm3d}


def channels_last_perm(dim):
    return (0,) + tuple(range(2, dim)) + (1,)


def to_layout(t, layout):
    """layout "nchw": contiguous; "nhwc": dense in channels-last order (any rank)."""
    if layout == "nchw":
        return t.contiguous()
    perm = channels_last_perm(t.dim())
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return t.permute(perm).contiguous().permute(inv)


def make_x(shape, dtype, layout, device, spread=(0.5, 2.0), offset=3.0):
    """Random non-zero data: per channel a different mean (-offset..offset) and
    spread, rounded to dtype (the reference sees the rounded values)."""
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    mean = torch.linspace(-offset, offset, c, dtype=torch.float64).view(view)
    scale = torch.linspace(spread[0], spread[1], c, dtype=torch.float64).view(view)
    x = (torch.randn(shape, dtype=torch.float64) * scale + mean).to(dtype)
    return to_layout(x, layout).to(device)


def make_dy(like):
    dy = torch.randn(like.shape, dtype=torch.float64).to(like.dtype)
    return to_layout(dy, "nhwc" if not like.is_contiguous() else "nchw").to(like.device)


def randomize_(module, nbt=0):
    """Non-trivial parameters and buffers: weight in [0.5, 1.5], bias ~ N(0, 1),
    running mean ~ N(0, 1), running var in [0.5, 2]."""
    with torch.no_grad():
        if module.affine:
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_()
        if module.track_running_stats:
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(nbt)
    return module


def pair(dims, device, **kwargs):
    """(bnorm module, torch float64 reference) with identical random state."""
    c = kwargs.pop("num_features")
    nbt = kwargs.pop("nbt", 0)
    ref = randomize_(TORCH_CLASSES[dims](c, device=device, **kwargs), nbt)
    mod = BNORM_CLASSES[dims](c, device=device, **kwargs)
    mod.load_state_dict(ref.state_dict())
    return mod, ref.double()


@contextlib.contextmanager
def torch_batch_norm_forbidden():
    """While active, torch's own batch norm raises: what runs is bnorm."""
    saved = torch.nn.functional.batch_norm, torch.batch_norm

    def forbidden(*a, **k):
        raise AssertionError("torch's batch norm was called where bnorm's must run")

    torch.nn.functional.batch_norm = forbidden
    torch.batch_norm = forbidden
    try:
        yield
    finally:
        torch.nn.functional.batch_norm, torch.batch_norm = saved


def channel_sum(t):
    return t.sum(dim=[d for d in range(t.dim()) if d != 1])


def assert_act_close(got, ref, dtype, what, scale=None):
    """Normwise: max|got - ref| <= TOL_ACT[dtype] * scale (default max|ref|)."""
    assert got.shape == ref.shape, what
    if ref.numel() == 0:
        return
    assert torch.isfinite(got).all(), "%s: not finite" % what
    err = (got.double() - ref.double()).abs().max().item()
    assert ref.abs().max().item() > 0, "%s: the reference is all zeros (a trivial test)" % what
    if scale is None:
        scale = ref.abs().max().item()
    tol = TOL_ACT[dtype] * scale
    assert err <= tol, "%s: max error %.3g > %.3g (= %.3g * scale %.3g)" % (
        what, err, tol, TOL_ACT[dtype], scale)


def dx_scale(x, dy, weight, mean, var, eps):
    """The size of the terms dx through the batch statistics sums (see the top)."""
    c = x.shape[1]
    view = (1, c) + (1,) * (x.dim() - 2)
    dims = [d for d in range(x.dim()) if d != 1]
    g = dy.double()
    xh = xhat(x, mean, var, eps)
    gamma = weight.double().abs().view(view) if weight is not None else 1.0
    rstd = 1.0 / torch.sqrt(var.double().view(view) + eps)
    terms = g.abs() + g.mean(dim=dims, keepdim=True).abs() + \
        xh.abs() * (g * xh).mean(dim=dims, keepdim=True).abs()
    return (gamma * rstd * terms).max().item()


def assert_stats_close(got, ref, what):
    assert got.dtype == torch.float32, what
    err = (got.double() - ref.double()).abs().max().item()
    scale = ref.abs().max().item()
    tol = TOL_STATS * scale
    assert err <= tol, "%s: max error %.3g > %.3g (max|ref| %.3g)" % (what, err, tol, scale)


def assert_sum_close(got, ref, terms_abs_sum, what):
    """Per channel: |got - ref| <= TOL_SUM * sum|terms| (see the top of this file)."""
    assert got.dtype == torch.float32, what
    err = (got.double() - ref.double()).abs()
    tol = TOL_SUM * terms_abs_sum.double()
    assert bool((err <= tol).all()), "%s: errors %s exceed %s" % (what, err.tolist(), tol.tolist())


def xhat(x, mean, var, eps):
    c = x.shape[1]
    view = (1, c) + (1,) * (x.dim() - 2)
    return (x.double() - mean.double().view(view)) / torch.sqrt(var.double().view(view) + eps)


def batch_stats(x):
    dims = [d for d in range(x.dim()) if d != 1]
    xd = x.double()
    return xd.mean(dim=dims), xd.var(dim=dims, unbiased=False)


def step_and_compare(mod, ref, x, what, dy=None):
    """One forward and backward of both modules on x; compares y, dx, dweight
    and dbias (and the output's memory layout). Returns (y, y_ref)."""
    dtype = x.dtype
    x = x.detach().requires_grad_(True)
    x_ref = x.detach().double().requires_grad_(True)
    for m in (mod, ref):
        if m.affine:
            m.weight.grad = None
            m.bias.grad = None
    uses_batch = mod.training or mod.running_mean is None
    if uses_batch:
        mean, var = batch_stats(x)
    else:
        mean, var = ref.running_mean.clone(), ref.running_var.clone()

    with torch_batch_norm_forbidden():
        y = mod(x)
    y_ref = ref(x_ref)
    assert y.dtype == dtype and y.stride() == x.stride(), "%s: output layout" % what
    assert_act_close(y, y_ref, dtype, what + ": y")

    if dy is None:
        dy = make_dy(y)
    y.backward(dy)
    y_ref.backward(dy.double())
    assert x.grad.dtype == dtype
    scale = None
    if uses_batch and x.numel() > 0:
        scale = dx_scale(x, dy, ref.weight, mean, var, ref.eps)
    assert_act_close(x.grad, x_ref.grad, dtype, what + ": dx", scale)
    if mod.affine:
        dyd = dy.double()
        assert_sum_close(mod.bias.grad, ref.bias.grad, channel_sum(dyd.abs()), what + ": dbias")
        terms = (dyd * xhat(x, mean, var, ref.eps)).abs()
        assert_sum_close(mod.weight.grad, ref.weight.grad, channel_sum(terms), what + ": dweight")
    return y, y_ref


def assert_buffers_match(mod, ref, what):
    if ref.track_running_stats:
        assert_stats_close(mod.running_mean, ref.running_mean, what + ": running_mean")
        assert_stats_close(mod.running_var, ref.running_var, what + ": running_var")
        assert mod.num_batches_tracked.dtype == torch.int64
        assert mod.num_batches_tracked.item() == ref.num_batches_tracked.item(), \
            what + ": num_batches_tracked"
    else:
        assert mod.running_mean is None and mod.running_var is None
        assert mod.num_batches_tracked is None


def clone_module(m):
    return copy.deepcopy(m)
