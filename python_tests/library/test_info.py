"""The build and the op layer: the library loaded, the kernels it has, the info command, impl selection."""

import json
import subprocess
import sys

import pytest
import torch

import wgan_ext
from wgan_ext import _ops, info

from conftest import EXPECT_CUDA_KERNELS, REQUIRE_OPS, compiled_path


@pytest.mark.skipif(not REQUIRE_OPS, reason="only where the test command demands the compiled ops")
def test_compiled_ops_loaded_with_cpu_kernels():
    assert wgan_ext.has_ops(), f"wgan_ext._C did not load: {_ops.LOAD_ERROR}"
    for op in _ops.OP_NAMES:
        assert _ops.has_kernel(op, "cpu"), op


@pytest.mark.skipif(not REQUIRE_OPS, reason="only where the test command demands the compiled ops")
def test_cpu_kernels_run_on_torchs_threads():
    # The CPU kernels run torch's parallel_for (a stable-ABI call): they must use torch's threads, as many as
    # torch.set_num_threads allows (an earlier build, compiled without OpenMP, quietly ran on one thread).
    import torch

    if not torch.backends.openmp.is_available():
        pytest.skip("torch is not built with OpenMP here")
    assert _ops.build_info()["cpu_parallel"] == "1"
    before = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert torch.ops.wgan_ext._parallel_threads(64) == n
        assert torch.ops.wgan_ext._parallel_threads(1) == 1  # one task: one thread
    finally:
        torch.set_num_threads(before)
    assert info.collect()["cpu_parallel"] is True
    with pytest.raises(RuntimeError, match="tasks must be >= 1"):
        torch.ops.wgan_ext._parallel_threads(0)


@pytest.mark.skipif(not EXPECT_CUDA_KERNELS, reason="only where nvcc is present and CUDA kernels must be built")
def test_cuda_kernels_compiled_for_hopper():
    facts = info.collect()
    assert facts["cuda_kernels_built"]
    assert all(k["cuda"] for k in facts["kernels"].values()), facts["kernels"]
    assert "900" in facts["cuda_archs"], f"sm_90 (H100/H200) missing from {facts['cuda_archs']}"


def test_info_command_json_matches_the_dispatcher(tmp_path):
    # Run outside the checkout so that `-m` imports the installed package, as this process did.
    out = subprocess.run([sys.executable, "-m", "wgan_ext.info", "--json"], check=True, capture_output=True,
                         text=True, cwd=tmp_path).stdout
    facts = json.loads(out)
    assert facts["wgan_ext"] == wgan_ext.__version__
    for op in _ops.OP_NAMES:
        assert facts["kernels"][op]["cpu"] == _ops.has_kernel(op, "cpu")
        assert facts["kernels"][op]["cuda"] == _ops.has_kernel(op, "cuda")


def test_info_command_text_lists_every_op(capsys):
    assert info.main([]) == 0
    text = capsys.readouterr().out
    for op in _ops.OP_NAMES:
        assert op in text


def test_require_cuda_fails_without_cuda_kernels(monkeypatch, capsys):
    monkeypatch.setattr(_ops, "KERNELS", {k: v for k, v in _ops.KERNELS.items() if k[1] != "cuda"})
    assert info.main(["--require-cuda"]) == 1
    assert "no CUDA kernel" in capsys.readouterr().err


def test_require_cuda_passes_with_cuda_kernels(monkeypatch):
    monkeypatch.setattr(_ops, "KERNELS", {(op, dev): True for op in _ops.OP_NAMES for dev in _ops.DEVICE_KEYS})
    assert info.main(["--require-cuda"]) == 0


def _fake_gpu(monkeypatch, capability, archs, cuda_kernels=True):
    """This process as if on a machine whose GPU has `capability`, with a build for `archs` (nvcc's spelling)."""
    monkeypatch.setattr(_ops, "KERNELS", {(op, dev): dev == "cpu" or cuda_kernels
                                          for op in _ops.OP_NAMES for dev in _ops.DEVICE_KEYS})
    built = dict(_ops.build_info(), cuda="1" if cuda_kernels else "0", cuda_archs=archs)
    monkeypatch.setattr(_ops, "build_info", lambda: built)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capability)


@pytest.mark.parametrize("capability, archs, cuda_kernels, problem", [
    ((9, 0), "800,900", True, None),
    ((8, 0), "800,900", True, None),
    ((9, 0), "800", True, "no machine code for this GPU (NVIDIA H200, sm_90); it has sm_80: rebuild with "
                          "TORCH_CUDA_ARCH_LIST=9.0"),
    ((10, 0), "800,900", True, "sm_100"),
    ((8, 6), "800,900", True, "sm_86"),  # sm_80 machine code does run on sm_86, but is not built for it
    (None, "800,900", True, "no GPU is visible"),
    ((9, 0), "", False, "no CUDA kernel"),
])
def test_require_gpu_accepts_a_build_only_with_machine_code_for_the_gpu_here(capability, archs, cuda_kernels,
                                                                            problem, monkeypatch, capsys):
    """scripts/gpu_check.sh runs a carried build (compiled on a machine without a GPU) only when this passes, and
    compiles on the GPU machine otherwise."""
    _fake_gpu(monkeypatch, capability, archs, cuda_kernels)
    code = info.main(["--require-gpu"])
    out = capsys.readouterr()
    if problem is None:
        assert code == 0, out.err
        assert "the build runs on this GPU" in out.out
    else:
        assert code == 1
        assert problem in out.err and out.err.startswith("error: --require-gpu: "), out.err
    assert (info.gpu_problem(info.collect()) is None) == (problem is None)


def test_require_gpu_also_requires_every_op_registered_for_cuda(monkeypatch, capsys):
    _fake_gpu(monkeypatch, (9, 0), "800,900")
    op = _ops.OP_NAMES[-1]
    monkeypatch.setitem(_ops.KERNELS, (op, "cuda"), False)  # built with CUDA, but one op's kernel not registered
    assert info.main(["--require-gpu"]) == 1
    assert f"error: --require-gpu: no CUDA kernel for {op} " in capsys.readouterr().err


@pytest.mark.parametrize("value", ["fast", "FUSEDX", "cuda"])
def test_bad_impl_is_refused(value, monkeypatch):
    with pytest.raises(ValueError, match="auto, fused, reference"):
        _ops.resolve_impl(value)
    monkeypatch.setenv(_ops.ENV_IMPL, value)
    with pytest.raises(ValueError, match="WGAN_EXT_IMPL"):
        _ops.resolve_impl(None)


@compiled_path
def test_missing_library_falls_back_with_one_warning(tmp_path):
    # A fresh interpreter in which `import wgan_ext._C` fails, as when the extension was never built.
    code = """
import sys, warnings
sys.modules["wgan_ext._C"] = None
import torch, wgan_ext
assert not wgan_ext.has_ops()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):
        x = torch.linspace(-1, 1, 101)
        wgan_ext.clip_([x], 0.25)
        assert torch.equal(x, torch.linspace(-1, 1, 101).clamp(-0.25, 0.25))
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(messages) == 1 and "could not be loaded" in messages[0], messages
try:
    wgan_ext.clip_([x], 0.25, impl="fused")
except RuntimeError as e:
    assert "--no-build-isolation" in str(e)
else:
    raise AssertionError("impl='fused' without the library must raise")
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _inplace_calls():
    t = lambda: torch.zeros(4)  # noqa: E731
    return {
        "clip_": (lambda a: torch.ops.wgan_ext.clip_(a[0], -1.0, 1.0), [[t(), t()]], [0]),
        "clip_count_": (lambda a: torch.ops.wgan_ext.clip_count_(a[0], -1.0, 1.0), [[t()]], [0]),
        "spectral_norm_power_iteration_": (
            lambda a: torch.ops.wgan_ext.spectral_norm_power_iteration_(a[0], a[1], a[2], 1, 1e-12),
            [[torch.eye(4)], [torch.ones(4)], [torch.ones(4)]], [1, 2]),
        "rmsprop_clip_step_": (
            lambda a: torch.ops.wgan_ext.rmsprop_clip_step_(a[0], a[1], a[2], [], 0.1, 0.9, 1e-8, 0.0, 0.0, 1.0),
            [[t()], [torch.ones(4)], [t()]], [0, 2]),
        "adam_clip_step_": (
            lambda a: torch.ops.wgan_ext.adam_clip_step_(a[0], a[1], a[2], a[3], 0.1, 0.9, 0.99, 1e-8, 0.0, 1, None),
            [[t()], [torch.ones(4)], [t()], [t()]], [0, 2, 3]),
    }


@pytest.mark.parametrize("name", ["clip_", "clip_count_", "spectral_norm_power_iteration_", "rmsprop_clip_step_",
                                  "adam_clip_step_"])
def test_direct_op_calls_bump_the_versions_of_written_tensors_only(name):
    # The ADInplaceOrView kernel (wgan_ext/_ops.py) bumps exactly the arguments the schema marks as written, for a
    # call straight to torch.ops.wgan_ext as for the Python layer: autograd then refuses a backward through a tensor
    # that was changed in place after it was saved.
    if not _ops.has_kernel(name, "cpu"):
        pytest.skip("no compiled op")
    call, args, written = _inplace_calls()[name]
    before = [[t._version for t in group] for group in args]
    call(args)
    for i, group in enumerate(args):
        for t, v in zip(group, before[i]):
            assert (t._version > v) == (i in written), (name, i)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="only where a GPU is visible")
def test_without_the_cuda_marker_a_test_runs_as_on_a_machine_without_a_gpu():
    """conftest's _cpu_unless_marked_cuda: the suite's CPU tests keep their meaning on a GPU machine."""
    import os

    assert not torch.cuda.is_available() and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    from wgan_ext.train import pick_device
    assert pick_device("auto") == torch.device("cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_with_the_cuda_marker_a_test_sees_the_gpu():
    import os

    assert torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES") != ""
