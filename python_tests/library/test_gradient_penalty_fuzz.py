"""Property-based fuzz of the interpolate and gradient_norm_penalty ops against the pure-torch reference."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")  # in requirements/test.txt; may be absent on a bare GPU machine
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from wgan_ext import _reference  # noqa: E402
from wgan_ext.gradient_penalty import gradient_norm_penalty, interpolate  # noqa: E402

from conftest import DEVICES, fused_available  # noqa: E402

FLOAT_TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9), trailing=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       dtype=st.sampled_from([torch.float32, torch.float64]), target=st.floats(0.0, 3.0),
       one_sided=st.booleans(), inv_scale=st.sampled_from([1.0, 0.5, 2.0 ** -16]),
       scale=st.sampled_from([0.0, 1e-3, 1.0, 1e3]), seed=st.integers(0, 2 ** 16))
def test_fuzz_penalty_op_and_backward(device, n, trailing, dtype, target, one_sided, inv_scale, scale, seed):
    if not fused_available("gradient_norm_penalty", device):
        pytest.skip(f"no compiled kernel for {device}")
    g0 = (torch.randn(n, *trailing, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale).to(device)
    if inv_scale < 1e-3:
        g0 = g0 / inv_scale  # a gradient of a scaled output: large, unscaled inside
    outs = []
    for impl in ("fused", "reference"):
        g = g0.clone().requires_grad_(True)
        penalty, norms = gradient_norm_penalty(g, target, one_sided=one_sided, inv_scale=inv_scale, impl=impl)
        (2.0 * penalty + 0.5 * norms.sum()).backward()
        outs.append((penalty, norms, g.grad))
    for a, b in zip(*outs):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **FLOAT_TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 9), trailing=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
       seed=st.integers(0, 2 ** 16))
def test_fuzz_interpolate_op(device, n, trailing, dtype, seed):
    if not fused_available("interpolate", device):
        pytest.skip(f"no compiled kernel for {device}")
    gen = torch.Generator().manual_seed(seed)
    real, fake = (torch.randn(n, *trailing, generator=gen).to(device, dtype) for _ in range(2))
    alpha = torch.rand(n, generator=gen).to(device, dtype)
    torch.testing.assert_close(interpolate(real, fake, alpha, impl="fused"), _reference.interpolate(real, fake, alpha),
                               rtol=0, atol=0)
