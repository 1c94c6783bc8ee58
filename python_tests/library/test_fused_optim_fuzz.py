"""Property-based fuzz of torch.ops.wgan_ext.rmsprop_clip_step_ / adam_clip_step_ against the pure-torch reference
(random lists of shapes and dtypes, dense layouts, hyperparameters, with and without clamp and momentum)."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")  # in requirements/test.txt; may be absent on a bare GPU machine
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from wgan_ext import _reference  # noqa: E402

from conftest import DEVICES, fused_available  # noqa: E402
from test_fused_optim import tolerances  # noqa: E402


@st.composite
def tensor_lists(draw, device, depth, nonnegative):
    """`depth` lists (param, grad, states...) of matching tensors; the lists in `nonnegative` (square_avg,
    exp_avg_sq) hold values >= 0, as those states always do."""
    lists = [[] for _ in range(depth)]
    for _ in range(draw(st.integers(1, 5))):  # at least one tensor: an op call on [] has nothing to dispatch on
        shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=3)))
        dtype = draw(st.sampled_from([torch.float32, torch.float64]))
        transpose = draw(st.booleans()) and len(shape) >= 2
        seed = draw(st.integers(0, 2**16))
        g = torch.Generator().manual_seed(seed)
        scales = [draw(st.sampled_from([1e-3, 0.02, 1.0])), draw(st.sampled_from([1e-6, 1.0, 100.0])), 1.0, 0.1]
        for d in range(depth):
            t = torch.randn(shape, generator=g, dtype=torch.float64) * scales[min(d, 3)]
            if d in nonnegative:
                t = t.abs()
            t = t.to(device=device, dtype=dtype)
            lists[d].append(t.transpose(0, 1) if transpose else t)  # the same dense layout in every list
    return lists


def assert_lists_close(got, want):
    for a_list, e_list in zip(got, want):
        for a, e in zip(a_list, e_list):
            torch.testing.assert_close(a, e, **tolerances(a.dtype, state=True), equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), lr=st.floats(0, 0.1), alpha=st.floats(0, 1), eps=st.sampled_from([0.0, 1e-8, 1e-3]),
       weight_decay=st.sampled_from([0.0, 1e-4, 0.5]), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       clip_value=st.one_of(st.none(), st.floats(1e-4, 1.0)))
def test_rmsprop_fuzz_against_the_reference(device, data, lr, alpha, eps, weight_decay, momentum, clip_value):
    if not fused_available("rmsprop_clip_step_", device):
        pytest.skip(f"no compiled kernel for {device}")
    lists = data.draw(tensor_lists(device, 4 if momentum > 0 else 3, nonnegative={2}))
    if momentum == 0:
        lists.append([])
    work = [[t.clone() for t in lst] for lst in lists]
    args = (lr, alpha, eps, weight_decay, momentum, clip_value)
    torch.ops.wgan_ext.rmsprop_clip_step_(*work, *args)
    _reference.rmsprop_clip_step_(*lists, *args)
    assert_lists_close(work, lists)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), lr=st.floats(0, 0.1), beta1=st.floats(0, 0.99), beta2=st.floats(0, 0.999),
       eps=st.sampled_from([0.0, 1e-8, 1e-3]), weight_decay=st.sampled_from([0.0, 1e-4, 0.5]),
       step=st.integers(1, 10_000), clip_value=st.one_of(st.none(), st.floats(1e-4, 1.0)))
def test_adam_fuzz_against_the_reference(device, data, lr, beta1, beta2, eps, weight_decay, step, clip_value):
    if not fused_available("adam_clip_step_", device):
        pytest.skip(f"no compiled kernel for {device}")
    lists = data.draw(tensor_lists(device, 4, nonnegative={3}))
    work = [[t.clone() for t in lst] for lst in lists]
    args = (lr, beta1, beta2, eps, weight_decay, step, clip_value)
    torch.ops.wgan_ext.adam_clip_step_(*work, *args)
    _reference.adam_clip_step_(*lists, *args)
    assert_lists_close(work, lists)
