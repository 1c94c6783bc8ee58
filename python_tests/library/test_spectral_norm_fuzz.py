"""Property-based fuzz of the spectral_norm_power_iteration_ op against the pure-torch reference."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")  # in requirements/test.txt; may be absent on a bare GPU machine
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from wgan_ext import _reference  # noqa: E402
from wgan_ext.spectral_norm import power_iteration_  # noqa: E402

from conftest import DEVICES, fused_available  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 70)), min_size=1, max_size=5),
       dtype=st.sampled_from([torch.float32, torch.float64]), n=st.integers(0, 4),
       scale=st.sampled_from([1e-3, 1.0, 50.0]), seed=st.integers(0, 2 ** 16))
def test_fuzz_power_iteration(device, shapes, dtype, n, scale, seed):
    if not fused_available("spectral_norm_power_iteration_", device):
        pytest.skip(f"no compiled kernel for {device}")
    g = torch.Generator().manual_seed(seed)
    weights = [(torch.randn(s, generator=g, dtype=torch.float64) * scale).to(device, dtype) for s in shapes]
    # Start u, v from a few reference steps, as after registration (a converged-enough direction is well defined).
    us = [torch.randn(s[0], generator=g, dtype=torch.float64).to(device, dtype) for s in shapes]
    vs = [torch.randn(s[1], generator=g, dtype=torch.float64).to(device, dtype) for s in shapes]
    _reference.spectral_norm_power_iteration_(weights, us, vs, 2, 1e-12)
    ref_us, ref_vs = [u.clone() for u in us], [v.clone() for v in vs]
    power_iteration_(weights, us, vs, n, 1e-12, impl="fused")
    _reference.spectral_norm_power_iteration_(weights, ref_us, ref_vs, n, 1e-12)
    for a, b in zip(us + vs, ref_us + ref_vs):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=TOL[dtype], atol=TOL[dtype])
