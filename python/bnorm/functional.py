"""bnorm's batch norm as torch functions, with autograd.

batch_norm() is torch.nn.functional.batch_norm computed by bnorm: CPU tensors
run on libbnorm_emu (the kernels under the CPU emulator), CUDA tensors on
libbnorm on torch's current stream. Gradients go through bnorm's backward
calls: bnormBackward (batch statistics, with the mean and rstd saved by the
forward) and bnormBackwardFrozen (running statistics, eval mode).

Every call is asynchronous on the current stream and allocates only through
torch (outputs, saved statistics, workspace), so it can be captured in a
CUDA graph.
"""

import ctypes

import torch
from torch.autograd.function import once_differentiable

from . import _ffi
from ._ffi import UnsupportedInputError

_DTYPES = {
    torch.float32: _ffi.BNORM_DATA_FLOAT,
    torch.float16: _ffi.BNORM_DATA_HALF,
    torch.bfloat16: _ffi.BNORM_DATA_BFLOAT16,
}

_PATHS = {
    "auto": _ffi.BNORM_PATH_AUTO,
    "multi_pass": _ffi.BNORM_PATH_MULTI_PASS,
    "single_block": _ffi.BNORM_PATH_SINGLE_BLOCK,
    "persistent": _ffi.BNORM_PATH_PERSISTENT,
}

_WORKSPACE_ALIGN = 16  # bnorm.h: the workspace is 16-byte aligned


# ---------------------------------------------------------------------------
# Describing torch tensors to bnorm

def _channels_last_perm(dim):
    return (0,) + tuple(range(2, dim)) + (1,)


def layout_of(x):
    """BNORM_LAYOUT_NCHW for a contiguous tensor, BNORM_LAYOUT_NHWC for one
    dense in channels-last order (torch.channels_last, channels_last_3d, or
    the same order for any rank); anything else is refused."""
    if x.is_contiguous():
        return _ffi.BNORM_LAYOUT_NCHW
    if x.permute(_channels_last_perm(x.dim())).is_contiguous():
        return _ffi.BNORM_LAYOUT_NHWC
    raise UnsupportedInputError(
        "bnorm: the input's strides %s (shape %s) are neither contiguous (NCHW) nor "
        "channels-last (NHWC); bnorm takes dense tensors in one of those two orders: call "
        ".contiguous() or .contiguous(memory_format=torch.channels_last) first"
        % (tuple(x.stride()), tuple(x.shape)))


def _in_layout(t, layout):
    """t (same shape as the input) as a dense tensor in the given layout."""
    if layout == _ffi.BNORM_LAYOUT_NCHW:
        return t.contiguous()
    perm = _channels_last_perm(t.dim())
    if t.permute(perm).is_contiguous():
        return t
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return t.permute(perm).contiguous().permute(inv)


def describe(x):
    """(bnormTensorDesc_t, layout) of an activation tensor (N, C, *spatial)."""
    if x.dim() < 2:
        raise UnsupportedInputError("bnorm: the input needs at least 2 dimensions (N, C, ...); "
                                    "got shape %s" % (tuple(x.shape),))
    dt = _DTYPES.get(x.dtype)
    if dt is None:
        raise UnsupportedInputError(
            "bnorm: inputs of dtype %s are not supported (bnorm takes float32, float16 and "
            "bfloat16 activations)" % (x.dtype,))
    if x.device.type not in ("cpu", "cuda"):
        raise UnsupportedInputError("bnorm: tensors on %s are not supported (CPU tensors run on "
                                    "the emulator, CUDA tensors on the GPU)" % (x.device,))
    layout = layout_of(x)
    n, c = x.shape[0], x.shape[1]
    spatial = 1
    for s in x.shape[2:]:
        spatial *= s
    if spatial == 0:  # no elements: the same empty batch as n == 0 (bnorm needs spatial >= 1)
        n, spatial = 0, 1
    return _ffi.bnormTensorDesc_t(dt, layout, n, c, spatial), layout


def _check_channel_tensor(t, name, x):
    if t is None:
        return
    c = x.shape[1]
    if t.dtype != torch.float32:
        raise UnsupportedInputError(
            "bnorm: %s is %s; bnorm keeps per-channel parameters and statistics in float32 "
            "whatever the input's dtype (keep the BatchNorm module in float32)" % (name, t.dtype))
    if t.device != x.device:
        raise UnsupportedInputError("bnorm: %s is on %s but the input is on %s"
                                    % (name, t.device, x.device))
    if t.dim() != 1 or t.shape[0] != c or not t.is_contiguous():
        raise UnsupportedInputError(
            "bnorm: %s must be a contiguous vector of %d values (the input's channels); got "
            "shape %s, strides %s" % (name, c, tuple(t.shape), tuple(t.stride())))


def _ptr(t):
    return None if t is None else (t.data_ptr() or None)


def _make_config(eps, momentum, path):
    cfg = _ffi.config_initializer()
    cfg.eps = float(eps)
    if momentum is None:
        cfg.average = _ffi.BNORM_AVERAGE_CUMULATIVE
    else:
        cfg.exponential_average_factor = float(momentum)
    try:
        cfg.path = _PATHS[path]
    except KeyError:
        raise ValueError("bnorm: path must be one of %s, got %r" % (sorted(_PATHS), path))
    return cfg


class _Call:
    """The library, handle and stream for a tensor's device; a context manager
    that makes the tensor's CUDA device current for the calls made inside."""

    def __init__(self, x):
        self.x = x
        if x.device.type == "cuda":
            self.lib = _ffi.load("cuda")
            self._guard = torch.cuda.device(x.device)
        else:
            self.lib = _ffi.load("emu")
            self._guard = None

    def __enter__(self):
        if self._guard is not None:
            self._guard.__enter__()
            index = torch.cuda.current_device()
            self.stream = ctypes.c_void_p(torch.cuda.current_stream(self.x.device).cuda_stream)
        else:
            index = 0
            self.stream = None  # the emulator runs everything to completion when issued
        self.handle = self.lib.handle(index)
        return self

    def __exit__(self, *exc):
        if self._guard is not None:
            self._guard.__exit__(*exc)
        return False

    def workspace(self, query, desc, cfg):
        """A workspace from torch's allocator (so that CUDA-graph capture
        works): (tensor keeping it alive, aligned pointer, bytes)."""
        size = ctypes.c_size_t(0)
        self.lib.call(query, self.handle, ctypes.byref(desc), ctypes.byref(cfg), ctypes.byref(size))
        if size.value == 0:
            return None, None, 0
        buf = torch.empty(size.value + _WORKSPACE_ALIGN, dtype=torch.uint8, device=self.x.device)
        addr = buf.data_ptr()
        addr += (-addr) % _WORKSPACE_ALIGN
        return buf, addr, size.value


def _batch_too_small_prefix(x):
    # torch.nn.functional.batch_norm's words for the same input.
    return "Expected more than 1 value per channel when training, got input size %s" % (x.size(),)


# ---------------------------------------------------------------------------
# autograd Functions

class _BatchStats(torch.autograd.Function):
    """Training-mode batch norm: normalize with the batch statistics, update
    the running ones if given; backward through the batch statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, step_count, momentum, eps, path):
        desc, layout = describe(x)
        cfg = _make_config(eps, momentum, path)
        y = torch.empty_like(x)
        c = x.shape[1]
        saved_mean = torch.empty(c, dtype=torch.float32, device=x.device)
        saved_rstd = torch.empty(c, dtype=torch.float32, device=x.device)
        with _Call(x) as call:
            ws, ws_ptr, ws_bytes = call.workspace("bnormGetForwardTrainingWorkspaceSize", desc, cfg)
            status = call.lib.cdll.bnormForwardTraining(
                call.handle, call.stream, ctypes.byref(desc), ctypes.byref(cfg), _ptr(x), _ptr(y),
                _ptr(weight), _ptr(bias), _ptr(running_mean), _ptr(running_var), _ptr(step_count),
                _ptr(saved_mean), _ptr(saved_rstd), ws_ptr, ws_bytes)
            if status != _ffi.BNORM_STATUS_SUCCESS:
                prefix = (_batch_too_small_prefix(x)
                          if status == _ffi.BNORM_STATUS_BATCH_TOO_SMALL else None)
                raise call.lib.error("bnormForwardTraining", status, prefix)
        ctx.save_for_backward(x, weight, saved_mean, saved_rstd)
        ctx.eps, ctx.path, ctx.layout = eps, path, layout
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, saved_mean, saved_rstd = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        desc, _ = describe(x)
        cfg = _make_config(ctx.eps, 0.1, ctx.path)
        dy = _in_layout(dy.to(x.dtype), ctx.layout)
        dx = torch.empty_like(x)
        c = x.shape[1]
        dgamma = dbeta = None
        if need_dw or need_db:  # bnorm returns both or neither
            dgamma = torch.empty(c, dtype=torch.float32, device=x.device)
            dbeta = torch.empty(c, dtype=torch.float32, device=x.device)
        with _Call(x) as call:
            ws, ws_ptr, ws_bytes = call.workspace("bnormGetBackwardWorkspaceSize", desc, cfg)
            call.lib.call("bnormBackward", call.handle, call.stream, ctypes.byref(desc),
                          ctypes.byref(cfg), _ptr(x), _ptr(dy), _ptr(dx), _ptr(weight),
                          _ptr(saved_mean), _ptr(saved_rstd), _ptr(dgamma), _ptr(dbeta), ws_ptr,
                          ws_bytes)
        return (dx if need_dx else None, dgamma if need_dw else None, dbeta if need_db else None,
                None, None, None, None, None, None)


class _RunningStats(torch.autograd.Function):
    """Eval-mode batch norm: normalize with the running statistics; backward
    with the statistics held constant (bnormBackwardFrozen)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps):
        desc, layout = describe(x)
        cfg = _make_config(eps, 0.1, "auto")
        y = torch.empty_like(x)
        with _Call(x) as call:
            call.lib.call("bnormForwardInference", call.handle, call.stream, ctypes.byref(desc),
                          ctypes.byref(cfg), _ptr(x), _ptr(y), _ptr(weight), _ptr(bias),
                          _ptr(running_mean), _ptr(running_var))
        if any(ctx.needs_input_grad[:3]):
            # The statistics as they were: a later training step updates the
            # buffers in place, behind autograd's back.
            need_x = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
            ctx.save_for_backward(x if need_x else None, weight, running_mean.clone(),
                                  running_var.clone())
        ctx.eps, ctx.layout = eps, layout
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, running_mean, running_var = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        like = x if x is not None else dy
        dy = _in_layout(dy, ctx.layout)
        desc, _ = describe(dy)
        cfg = _make_config(ctx.eps, 0.1, "auto")
        dx = torch.empty_like(dy)
        c = dy.shape[1]
        dgamma = dbeta = None
        if need_dw or need_db:
            dgamma = torch.empty(c, dtype=torch.float32, device=like.device)
            dbeta = torch.empty(c, dtype=torch.float32, device=like.device)
        with _Call(dy) as call:
            ws, ws_ptr, ws_bytes = call.workspace("bnormGetBackwardFrozenWorkspaceSize", desc, cfg)
            call.lib.call("bnormBackwardFrozen", call.handle, call.stream, ctypes.byref(desc),
                          ctypes.byref(cfg), _ptr(x), _ptr(dy), _ptr(dx), _ptr(weight),
                          _ptr(running_mean), _ptr(running_var), _ptr(dgamma), _ptr(dbeta),
                          ws_ptr, ws_bytes)
        return (dx if need_dx else None, dgamma if need_dw else None, dbeta if need_db else None,
                None, None, None)


# ---------------------------------------------------------------------------
# The function

def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, step_count=None, path="auto"):
    """torch.nn.functional.batch_norm, computed by bnorm.

    training=True normalizes with the batch statistics and, when
    running_mean/running_var are given, updates them: with factor `momentum`,
    or, when momentum is None, as a cumulative average with f = 1/(1 + t)
    where t is the int64 tensor `step_count`, which bnorm then increments on
    the device (nn.BatchNorm's num_batches_tracked, see modules.py) when it
    updates the statistics, that is when n * spatial >= 2 (an empty batch is a
    no-op; a batch of one raises).
    training=False normalizes with running_mean/running_var (required).

    input: (N, C, *spatial), float32/float16/bfloat16, contiguous or
    channels-last; weight, bias, running statistics: float32 vectors of C
    values on the same device. path: "auto", "multi_pass", "single_block" or
    "persistent" (bnormConfig_t.path; every path computes the same function).
    """
    desc, _ = describe(input)
    for t, name in ((weight, "weight"), (bias, "bias"), (running_mean, "running_mean"),
                    (running_var, "running_var")):
        _check_channel_tensor(t, name, input)
    if (running_mean is None) != (running_var is None):
        raise ValueError("bnorm: running_mean and running_var must both be given or both None")
    if training:
        if momentum is None and running_mean is not None:
            if step_count is None:
                raise ValueError("bnorm: momentum=None (cumulative average) needs step_count")
            if (step_count.dtype != torch.int64 or step_count.numel() != 1
                    or step_count.device != input.device):
                raise UnsupportedInputError(
                    "bnorm: step_count must be one int64 on the input's device; got %s %s on %s"
                    % (step_count.dtype, tuple(step_count.shape), step_count.device))
        else:
            step_count = None
        return _BatchStats.apply(input, weight, bias, running_mean, running_var, step_count,
                                 momentum, eps, path)
    if running_mean is None:
        raise ValueError("bnorm: training=False needs running_mean and running_var")
    return _RunningStats.apply(input, weight, bias, running_mean, running_var, eps)
