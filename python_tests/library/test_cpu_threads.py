"""The CPU kernels are parallel (at::parallel_for over torch's threads) and their results do not depend on how many
threads there are: every op gives the same bits on 1, 2 and 3 threads, on sizes that split into many tasks and
leave uneven tails. (A run resumed on a machine with another core count continues the same run.) That the thread
count reaches the kernels at all is test_info.py's test_cpu_kernels_run_on_torchs_threads."""

import pytest
import torch

from conftest import fused_available

THREADS = (1, 2, 3)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def on_each_thread_count(fn):
    """fn() on fresh inputs under each thread count; the list of its outputs (tensors, or lists of them)."""
    outs = []
    for n in THREADS:
        torch.set_num_threads(n)
        out = fn()
        outs.append([t.clone() for t in (out if isinstance(out, (list, tuple)) else [out])])
    return outs


def assert_same_bits(outs):
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert a.dtype == b.dtype and torch.equal(a, b)


def need(op):
    if not fused_available(op, "cpu"):
        pytest.skip(f"no compiled CPU kernel for {op}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_spectral_norm_power_iteration(threads, dtype):
    need("spectral_norm_power_iteration_")
    g = torch.Generator().manual_seed(0)
    shapes = [(1031, 257), (3, 5000), (1, 70000), (130, 4), (7, 7)]  # many row groups, tails of 1-3 rows
    weights = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    u0 = [torch.nn.functional.normalize(torch.randn(s[0], generator=g), dim=0).to(dtype) for s in shapes]
    v0 = [torch.nn.functional.normalize(torch.randn(s[1], generator=g), dim=0).to(dtype) for s in shapes]

    def run():
        us, vs = [u.clone() for u in u0], [v.clone() for v in v0]
        torch.ops.wgan_ext.spectral_norm_power_iteration_(weights, us, vs, 2, 1e-12)
        return us + vs

    assert_same_bits(on_each_thread_count(run))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_penalty_ops(threads, dtype):
    need("gradient_norm_penalty")
    g = torch.Generator().manual_seed(1)
    real, fake = (torch.randn(37, 3, 33, 33, generator=g, dtype=dtype) for _ in range(2))
    alpha = torch.rand(37, generator=g, dtype=dtype)
    grad = torch.randn(37, 3, 33, 33, generator=g, dtype=dtype)

    def run():
        x = torch.ops.wgan_ext.interpolate(real, fake, alpha)
        penalty, norms = torch.ops.wgan_ext.gradient_norm_penalty(grad, 1.0, False, 1.0, 1e-12)
        back = torch.ops.wgan_ext._gradient_norm_penalty_backward(torch.ones_like(penalty), torch.zeros_like(norms),
                                                                  grad, norms, 1.0, False, 1.0)
        return [x, penalty, norms, back]

    assert_same_bits(on_each_thread_count(run))


def test_clip_and_fused_optimizer_steps(threads):
    need("clip_")
    need("rmsprop_clip_step_")
    g = torch.Generator().manual_seed(2)
    shapes = [(300_001,), (17,), (64, 1000), (0,)]
    p0 = [torch.randn(s, generator=g) * 0.02 for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]

    def run():
        params = [p.clone() for p in p0]
        counts = torch.ops.wgan_ext.clip_count_(params, -0.01, 0.01)
        sq = [torch.zeros_like(p) for p in params]
        mom = [torch.zeros_like(p) for p in params]
        torch.ops.wgan_ext.rmsprop_clip_step_(params, grads, sq, mom, 1e-3, 0.99, 1e-8, 0.0, 0.9, 0.01)
        return params + sq + mom + [counts]

    assert_same_bits(on_each_thread_count(run))

