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
def _cpu_unless_marked_cuda(request, monkeypatch):
    """Tests not marked `cuda` are written for a machine without a GPU (CI's): on one with a GPU (a user's running
    scripts/test.sh, or gpu_check's suite step) they run as they would there. The trainer's --device auto then means
    the CPU, in this process and in the processes a test starts (torchrun, the CLI). Tests that need a GPU carry the
    `cuda` marker (and needs_cuda)."""
    if CUDA and request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(autouse=True)
def _fresh_fallback_warnings():
    """Each test sees the fallback warning anew (it is issued once per process otherwise)."""
    _ops._warned.clear()
    yield
    _ops._warned.clear()


def states_equal(a, b) -> bool:
    """Bitwise equality of nested states (state_dicts, checkpoints): tensors by dtype and value on any device."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b))
    return a == b


# WGAN_EXT_IMPL=reference (scripts/test.sh runs the library's tests so, as a user without the compiled ops would):
# every call that does not name its implementation takes the pure-torch path. Tests that assert the compiled path is
# taken (launch plans, the kept-output pool, op calls counted, the fallback warnings) are marked compiled_path and
# skip then.
REFERENCE_RUN = os.environ.get(_ops.ENV_IMPL) == "reference"
compiled_path = pytest.mark.skipif(REFERENCE_RUN, reason="tests the compiled path; WGAN_EXT_IMPL=reference")


def fused_available(op: str, device: str) -> bool:
    return _ops.has_kernel(op, device)


def cuda_kernel_names(fn) -> list[str]:
    """The CUDA kernels that one call of `fn` launches (torch.profiler; the device is synchronized around it)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
