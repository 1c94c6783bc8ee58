"""Property-based fuzz of the spectral-norm ops (power iteration, the batched normalize, its into-given-tensors
variant) against the pure-torch reference."""

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


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 70)), min_size=1, max_size=5),
       dtype=st.sampled_from([torch.float32, torch.float64]), scale=st.sampled_from([1e-3, 1.0, 50.0]),
       gaps=st.lists(st.integers(0, 9), min_size=5, max_size=5), transpose=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_fuzz_normalize_and_into(device, shapes, dtype, scale, gaps, transpose, seed):
    """sigma and W / sigma of every layer, allocated and into views of one buffer at arbitrary element offsets."""
    for op in ("spectral_norm_normalize", "_spectral_norm_normalize_into"):
        if not fused_available(op, device):
            pytest.skip(f"no compiled {op} kernel for {device}")
    g = torch.Generator().manual_seed(seed)
    weights = [(torch.randn(s, generator=g, dtype=torch.float64) * scale).to(device, dtype) for s in shapes]
    if transpose:
        weights = [w.t() for w in weights]  # strided inputs
    us = [torch.randn(w.shape[0], generator=g, dtype=torch.float64).to(device, dtype) for w in weights]
    vs = [torch.randn(w.shape[1], generator=g, dtype=torch.float64).to(device, dtype) for w in weights]
    _reference.spectral_norm_power_iteration_(weights, us, vs, 3, 1e-12)  # sigma well away from 0
    want, want_saved = _reference.spectral_norm_normalize(weights, us, vs)
    outs, saved = torch.ops.wgan_ext.spectral_norm_normalize(weights, us, vs)
    starts, n = [], 0
    for w, gap in zip(weights, gaps):
        n += gap
        starts.append(n)
        n += w.numel()
    flat = torch.full((n,), float("nan"), device=device, dtype=dtype)
    into = [flat[a:a + w.numel()].view(w.shape) for a, w in zip(starts, weights)]
    into_saved = torch.ops.wgan_ext._spectral_norm_normalize_into(weights, us, vs, into)
    tol = dict(rtol=TOL[dtype], atol=TOL[dtype])
    for o, i, r in zip(outs, into, want):
        torch.testing.assert_close(o, r, **tol)
        assert torch.equal(i, o)
    torch.testing.assert_close(saved, want_saved, **tol)
    assert torch.equal(into_saved, saved)
    written = torch.zeros(n, dtype=torch.bool, device=device)
    for a, w in zip(starts, weights):
        written[a:a + w.numel()] = True
    assert torch.isnan(flat[~written]).all()  # nothing outside the outs was touched
