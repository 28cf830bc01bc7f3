"""pytest setup: the package from this checkout, devices, and shared helpers.

Every test that takes the `device` fixture runs twice: on the CPU (bnorm's
kernels under the emulator, libbnorm_emu.so) and on CUDA (the real
libbnorm.so), the CUDA run skipping itself, with the reason, where
torch.cuda.is_available() is False.
"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # python/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # helpers

NO_CUDA = "no CUDA device: torch.cuda.is_available() is False"

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
