"""BatchNorm1d/2d/3d computed by bnorm, and convert(model).

The modules subclass torch.nn.BatchNorm1d/2d/3d: the same constructor
arguments, parameters, buffers, state_dict keys, repr and input checks, so
isinstance(m, torch.nn.BatchNorm2d) still holds and a state_dict moves freely
between the two. Only forward differs: it calls bnorm.
"""

import torch

from ._ffi import BatchTooSmallError
from .functional import batch_norm, describe


class _BnormBatchNorm:
    """forward() of torch's _BatchNorm, step for step, with bnorm doing the work.

    Attribute bnorm_path ("auto", "multi_pass", "single_block", "persistent") selects
    bnorm's kernel path for training and backward (bnormConfig_t.path)."""

    bnorm_path = "auto"

    def forward(self, input):
        self._check_input_dim(input)

        # As torch: num_batches_tracked counts every training call (the empty
        # batch, and the batch of one that raises, included), and momentum=None
        # averages the batch statistics cumulatively with f = 1 / num_batches_tracked
        # after the increment. bnorm's cumulative mode computes the same
        # f = 1 / (1 + t) from the counter before its increment, and increments
        # the counter itself, on the device, when it updates the running
        # statistics (n * spatial >= 2). Every other training call is counted
        # here, after the call: a call bnorm refuses changes nothing, except
        # the batch of one, which torch counts although it raises.
        training_tracked = self.training and self.track_running_stats
        momentum = self.momentum
        step_count = None
        count_here = False
        if training_tracked:
            if self.num_batches_tracked is None:
                if momentum is None:
                    momentum = 0.0  # torch: exponential_average_factor stays 0.0
            elif momentum is None and self.running_mean is not None and self._updates(input):
                step_count = self.num_batches_tracked  # bnorm reads and increments it
            else:
                count_here = True
        if momentum is None and step_count is None:
            momentum = 0.0  # the running statistics are not updated by this call

        if self.training:
            bn_training = True
        else:
            bn_training = (self.running_mean is None) and (self.running_var is None)
        use_buffers = not self.training or self.track_running_stats
        try:
            y = batch_norm(
                input,
                self.running_mean if use_buffers else None,
                self.running_var if use_buffers else None,
                self.weight,
                self.bias,
                bn_training,
                momentum,
                self.eps,
                step_count=step_count,
                path=self.bnorm_path,
            )
        except BatchTooSmallError:
            if count_here:
                self.num_batches_tracked.add_(1)
            raise
        if count_here:
            self.num_batches_tracked.add_(1)
        return y

    @staticmethod
    def _updates(input):
        """Whether a training call on this input updates the running statistics
        (and so advances bnorm's step counter): n * spatial >= 2."""
        desc, _ = describe(input)
        return desc.n * desc.spatial >= 2


class BatchNorm1d(_BnormBatchNorm, torch.nn.BatchNorm1d):
    __doc__ = "torch.nn.BatchNorm1d computed by bnorm: (N, C) or (N, C, L) inputs.\n\n" + \
        (_BnormBatchNorm.__doc__ or "")


class BatchNorm2d(_BnormBatchNorm, torch.nn.BatchNorm2d):
    __doc__ = "torch.nn.BatchNorm2d computed by bnorm: (N, C, H, W) inputs, contiguous or " \
        "channels_last.\n\n" + (_BnormBatchNorm.__doc__ or "")


class BatchNorm3d(_BnormBatchNorm, torch.nn.BatchNorm3d):
    __doc__ = "torch.nn.BatchNorm3d computed by bnorm: (N, C, D, H, W) inputs, contiguous or " \
        "channels_last_3d.\n\n" + (_BnormBatchNorm.__doc__ or "")


_REPLACEMENTS = {
    torch.nn.BatchNorm1d: BatchNorm1d,
    torch.nn.BatchNorm2d: BatchNorm2d,
    torch.nn.BatchNorm3d: BatchNorm3d,
}


def _swap(module):
    new = _REPLACEMENTS[type(module)](module.num_features, module.eps, module.momentum,
                                      module.affine, module.track_running_stats)
    # The same Parameter and buffer objects (as SyncBatchNorm.convert_sync_batchnorm
    # does): an optimizer built before the conversion keeps working, and the
    # state (device included) is exactly the old module's.
    if module.affine:
        new.weight = module.weight
        new.bias = module.bias
    new.running_mean = module.running_mean
    new.running_var = module.running_var
    new.num_batches_tracked = module.num_batches_tracked
    new.train(module.training)
    if hasattr(module, "qconfig"):
        new.qconfig = module.qconfig
    return new


def convert(module):
    """Replaces every torch.nn.BatchNorm1d/2d/3d in `module` (which may itself be
    one) by bnorm's, sharing its parameters and buffers, and returns the result.

    The model is changed in place, so ``model = bnorm.convert(model)`` is all it
    takes. Only those three exact classes are replaced: subclasses (which may
    override forward), lazy and sync batch norm are left alone."""
    if type(module) in _REPLACEMENTS:
        return _swap(module)
    for name, child in module.named_children():
        new = convert(child)
        if new is not child:
            setattr(module, name, new)
    return module
