import os

import pytest
import torch

from wgan_ext import _ops

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

# Every test that takes `device` runs on the CPU, and on CUDA where a GPU is visible.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, needs_cuda])]

# Set by the test command (scripts/test.sh) so that a build that silently lost its kernels fails the suite instead
# of passing on the pure-torch fallback.
REQUIRE_OPS = os.environ.get("WGAN_EXT_REQUIRE_OPS") == "1"
EXPECT_CUDA_KERNELS = os.environ.get("WGAN_EXT_EXPECT_CUDA_KERNELS") == "1"


@pytest.fixture(autouse=True)
def _fresh_fallback_warnings():
    """Each test sees the fallback warning anew (it is issued once per process otherwise)."""
    _ops._warned.clear()
    yield
    _ops._warned.clear()


def fused_available(op: str, device: str) -> bool:
    return _ops.has_kernel(op, device)
