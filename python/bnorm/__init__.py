"""bnorm for PyTorch: fused batch norm kernels behind torch.nn.BatchNorm's interface.

    import bnorm
    model = bnorm.convert(model)   # every nn.BatchNorm1d/2d/3d now runs on bnorm

CPU tensors run on the CPU emulator (libbnorm_emu.so), CUDA tensors on the GPU
library (libbnorm.so), both through ctypes: no compiled extension, any torch
version. The libraries are found in $BNORM_LIBRARY_DIR, else in the CMake build
folder next to this package.
"""

from ._ffi import BnormError, BatchTooSmallError, UnsupportedInputError, BNORM_VERSION
from .functional import batch_norm
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d, convert

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "convert", "batch_norm", "BnormError",
           "BatchTooSmallError", "UnsupportedInputError", "BNORM_VERSION"]
