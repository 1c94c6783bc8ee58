"""Property-based fuzz of wgan_ext.clip_ against the pure-torch reference (random lists, shapes, dtypes, views)."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")  # in requirements/test.txt; may be absent on a bare GPU machine
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import DEVICES, fused_available  # noqa: E402
from test_clip import DTYPES, check_against_reference, make_values  # noqa: E402


@st.composite
def tensor_lists(draw, device):
    tensors = []
    for i in range(draw(st.integers(1, 6))):
        shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=4)))
        dtype = draw(st.sampled_from(DTYPES))
        scale = draw(st.sampled_from([1e-3, 0.02, 1.0, 100.0]))
        t = make_values(shape, dtype, device, scale=scale, seed=draw(st.integers(0, 2**16)))
        view = draw(st.sampled_from(["plain", "transpose", "slice"]))
        if view == "transpose" and t.dim() >= 2:
            t = t.transpose(0, 1)
        elif view == "slice" and t.dim() >= 1 and t.shape[-1] > 1:
            t = t[..., ::2]
        tensors.append(t)
    return tensors


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), c=st.floats(1e-4, 10.0), asymmetric=st.booleans())
def test_fuzz_against_the_reference(device, data, c, asymmetric):
    if not fused_available("clip_count_", device):
        pytest.skip(f"no compiled kernel for {device}")
    tensors = data.draw(tensor_lists(device))
    lo, hi = (-c / 3, c) if asymmetric else (-c, c)
    check_against_reference(tensors, lo, hi, "fused")
