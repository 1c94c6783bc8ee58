"""wgan_ext.clip_ / Clipper and the ops torch.ops.wgan_ext.clip_ / clip_count_ against the pure-torch reference."""

import math
import warnings

import pytest
import torch
from torch import nn

import wgan_ext
from wgan_ext import _ops, _reference
from wgan_ext.clip import SUPPORTED_DTYPES

from conftest import CUDA, DEVICES, compiled_path, fused_available, needs_cuda

DTYPES = list(SUPPORTED_DTYPES)
CHUNK = 65536  # the CUDA launcher's chunk: sizes around it exercise chunk edges


def impl_for(device, op="clip_"):
    """The implementation under test: the compiled kernel where it exists (the reference is the oracle)."""
    return "fused" if fused_available(op, device) else pytest.skip(f"no compiled {op} kernel for {device}")


def make_values(shape, dtype, device, scale=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    flat = x.view(-1)
    # Values the clamp must get exactly right: NaN, infinities, zeros of both signs, the bounds themselves.
    specials = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 0.01, -0.01, 1e-3, -1e-30],
                            dtype=torch.float64)
    k = min(flat.numel(), specials.numel())
    flat[:k] = specials[:k]
    return x.to(dtype=dtype, device=device)


def assert_same(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def check_against_reference(tensors, lo, hi, impl):
    expected = [t.clone() for t in tensors]
    expected_counts = _reference.clip_count_(expected, lo, hi)
    work = [t.clone() for t in tensors]
    counts = wgan_ext.clip_(work, min=lo, max=hi, return_counts=True, impl=impl)
    for a, e in zip(work, expected):
        assert_same(a, e)
    assert counts.dtype == torch.int64 and counts.shape == (len(tensors),)
    assert counts.cpu().tolist() == expected_counts.cpu().tolist()
    # The variant without counts writes the same values.
    work = [t.clone() for t in tensors]
    assert wgan_ext.clip_(work, min=lo, max=hi, impl=impl) is None
    for a, e in zip(work, expected):
        assert_same(a, e)


ODD_SHAPES = [(0,), (1,), (3,), (CHUNK + 1,), (7, 13), (2, 3, 5, 7), (CHUNK - 1,), (0, 4)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_clamp_on_odd_sizes(device, dtype):
    tensors = [make_values(s, dtype, device, seed=i) for i, s in enumerate(ODD_SHAPES)]
    check_against_reference(tensors, -0.01, 0.01, impl_for(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_on_non_contiguous_views(device, dtype):
    base = make_values((64, 96), dtype, device, seed=3)
    tensors = [
        base.t(),                  # dense, another memory order
        base[:, ::3],              # strided slice: not dense
        base[1:, 2:],              # storage offset, rows not contiguous
        base.view(-1)[1:4001],     # dense, start not 16-byte aligned
        make_values((4, 5, 6), dtype, device).permute(2, 0, 1),
    ]
    # The views must be clamped through their own strides, in place: check against clamping the same views.
    expected_base = base.clone()
    expected = [expected_base.t(), expected_base[:, ::3], expected_base[1:, 2:], expected_base.view(-1)[1:4001],
                tensors[4].clone()]
    # Overlapping views of one base: clamp sequentially in the reference as in the op (idempotent anyway).
    _reference.clip_(expected, -0.01, 0.01)
    wgan_ext.clip_(tensors, 0.01, impl=impl_for(device))
    assert_same(base, expected_base)
    assert_same(tensors[4], expected[4])


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_and_more_tensors_than_one_launch(device):
    # More tensors than one launch holds (110), and one tensor longer than one launch's 320 chunks.
    tensors = [make_values((17 + (i * 37) % 300,), DTYPES[i % 4], device, seed=i) for i in range(300)]
    tensors.append(make_values((CHUNK * 321 + 5,), torch.float32, device, seed=99))
    check_against_reference(tensors, -0.01, 0.01, impl_for(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lo,hi", [(-0.5, 0.25), (0.0, 0.0), (-1e-3, None), (None, 2e-3), (0.3, 0.7)])
def test_min_max_and_one_sided_bounds(device, lo, hi):
    tensors = [make_values((1000,), dt, device, scale=1.0) for dt in DTYPES]
    expected = [t.clone().clamp_(lo, hi) for t in tensors]
    wgan_ext.clip_(tensors, min=lo, max=hi, impl=impl_for(device))
    for a, e in zip(tensors, expected):
        assert_same(a, e)


@pytest.mark.parametrize("device", DEVICES)
def test_counts_are_the_elements_at_a_bound(device):
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, math.nan], device=device)
    counts = wgan_ext.clip_([x, x[:0]], 1.0, return_counts=True, impl=impl_for(device, "clip_count_"))
    assert counts.tolist() == [4, 0]  # -2, -1, 1, 2 sit at a bound; NaN does not


@pytest.mark.parametrize("device", DEVICES)
def test_leaf_parameters_that_require_grad(device):
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
    model(torch.randn(4, 5, device=device)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    versions = [p._version for p in model.parameters()]
    wgan_ext.clip_(model.parameters(), 0.05, impl=impl_for(device))  # a generator, as users pass it
    for p, g, v in zip(model.parameters(), grads, versions):
        assert p.is_leaf and p.requires_grad and isinstance(p, nn.Parameter)
        assert p.abs().max() <= 0.05
        assert torch.equal(p.grad, g)  # gradients untouched
        assert p._version > v  # autograd sees the in-place write


@pytest.mark.parametrize("device", DEVICES)
def test_autograd_detects_a_clamped_saved_tensor(device):
    w = torch.randn(6, device=device, requires_grad=True)
    x = torch.randn(6, device=device, requires_grad=True)
    y = (x * w).sum()  # saves w for x's gradient
    wgan_ext.clip_([w], 0.1, impl=impl_for(device))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


@pytest.mark.parametrize("device", DEVICES)
def test_empty_list_is_a_no_op(device):
    assert wgan_ext.clip_([], 0.01) is None
    counts = wgan_ext.clip_(iter([]), 0.01, return_counts=True)
    assert counts.shape == (0,) and counts.dtype == torch.int64


@needs_cuda
@pytest.mark.cuda
def test_tensors_on_several_devices_are_clamped_per_device():
    a = make_values((100,), torch.float32, "cpu")
    b = make_values((50,), torch.float16, "cuda")
    c = make_values((70,), torch.float64, "cpu")
    expected = [t.clone().clamp_(-0.01, 0.01) for t in (a, b, c)]
    expected_counts = _reference.clip_count_([t.clone() for t in (a, b, c)], -0.01, 0.01).tolist()
    counts = wgan_ext.clip_([a, b, c], 0.01, return_counts=True)
    for t, e in zip((a, b, c), expected):
        assert_same(t, e)
    assert counts.tolist() == expected_counts and counts.device == a.device


@needs_cuda
@pytest.mark.cuda
def test_cuda_one_launch_for_a_dcgan_critic():
    from torch.profiler import ProfilerActivity, profile

    shapes = [(64, 3, 4, 4), (128, 64, 4, 4), (128,), (128,), (256, 128, 4, 4), (256,), (256,), (512, 256, 4, 4),
              (512,), (512,), (1, 512, 4, 4)]
    params = [torch.randn(s, device="cuda") * 0.02 for s in shapes]
    wgan_ext.clip_(params, 0.01)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        wgan_ext.clip_(params, 0.01, impl="fused")
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len([k for k in kernels if "multi_tensor_kernel" in k]) == 1, kernels


# --- the op layer: opcheck, torch.compile, fallback --------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["clip_", "clip_count_"])
def test_opcheck(device, op):
    impl_for(device, op)
    samples = [
        [torch.randn(10, 10, device=device), torch.randn(3, device=device, dtype=torch.float64)],
        [torch.randn(8, 6, device=device).t(), torch.randn(0, device=device)],
        [torch.randn(5, device=device, dtype=torch.bfloat16), torch.randn(9, 4, device=device)[:, ::2]],
    ]
    for tensors in samples:
        torch.library.opcheck(getattr(torch.ops.wgan_ext, op).default, (tensors, -0.5, 0.5))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_traces_the_ops_without_graph_breaks(device):
    impl_for(device, "clip_count_")

    def step(params, x):
        loss = sum((p * x).sum() for p in params)
        counts = wgan_ext.clip_(params, 0.01, return_counts=True)
        return loss, counts

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    params = [make_values((7, 3), torch.float32, device, seed=1), make_values((5,), torch.float32, device, seed=2)]
    params[0][0, 0] = 0.0  # no NaN in the loss
    params[0][0, 1] = 0.0
    params[0][0, 2] = 0.0
    params[1][:3] = 0.0
    reference = [p.clone() for p in params]
    ref_loss, ref_counts = step(reference, 2.0)
    loss, counts = compiled(params, 2.0)
    torch.testing.assert_close(loss, ref_loss, equal_nan=True)
    assert counts.tolist() == ref_counts.tolist()
    for a, e in zip(params, reference):
        assert_same(a, e)


@compiled_path
def test_fallback_when_no_kernel_for_the_device(monkeypatch):
    monkeypatch.setattr(_ops, "KERNELS", {})
    x = make_values((50,), torch.float32, "cpu")
    expected = x.clone().clamp_(-0.01, 0.01)
    with pytest.warns(RuntimeWarning, match="pure-torch reference for clip_ on cpu"):
        wgan_ext.clip_([x], 0.01)
    assert_same(x, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only one warning per op and device
        wgan_ext.clip_([x], 0.01)
    with pytest.raises(RuntimeError, match="impl='fused'"):
        wgan_ext.clip_([x], 0.01, impl="fused")


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_reference_can_be_forced(how, monkeypatch):
    calls = []
    real = _reference.clip_
    monkeypatch.setattr(_reference, "clip_", lambda *a: (calls.append(a), real(*a)))
    x = torch.linspace(-1, 1, 50)
    if how == "environment":
        monkeypatch.setenv(_ops.ENV_IMPL, "reference")
        wgan_ext.clip_([x], 0.01)
    else:
        wgan_ext.clip_([x], 0.01, impl="reference")
    assert len(calls) == 1
    assert x.abs().max() <= 0.01


@compiled_path
def test_auto_uses_the_compiled_kernel_where_it_exists(monkeypatch):
    impl_for("cpu")
    monkeypatch.setattr(_reference, "clip_", lambda *a: pytest.fail("the reference ran although a kernel exists"))
    x = torch.linspace(-1, 1, 50)
    wgan_ext.clip_([x], 0.01)
    assert x.abs().max() <= 0.01


# --- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("item,error,match", [
    (3.0, TypeError, "item 1 is a float, not a tensor"),
    ("w", TypeError, "item 1 is a str"),
    (torch.ones(3, dtype=torch.int64), TypeError, "dtype torch.int64; supported"),
    (torch.ones(3, dtype=torch.bool), TypeError, "dtype torch.bool"),
    (torch.ones(3, dtype=torch.complex64), TypeError, "dtype torch.complex64"),
    (torch.eye(3).to_sparse(), ValueError, "layout torch.sparse_coo"),
    (torch.ones(3, device="meta"), ValueError, "meta tensor"),
    (torch.ones(1, 3).expand(4, 3), ValueError, "share memory"),
])
def test_bad_items_are_refused(impl, item, error, match):
    good = torch.ones(4)
    with pytest.raises(error, match=match):
        wgan_ext.clip_([good, item], 0.01, impl=impl)
    assert torch.equal(good, torch.ones(4)), "nothing may be clamped when the input is refused"


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(c=0.0), ValueError, "c must be > 0"),
    (dict(c=-0.01), ValueError, "c must be > 0"),
    (dict(c=math.nan), ValueError, "c must be finite"),
    (dict(c=math.inf), ValueError, "c must be finite"),
    (dict(c=True), TypeError, "c must be a real number"),
    (dict(c="0.01"), TypeError, "c must be a real number"),
    (dict(min=0.5, max=0.1), ValueError, "min must be <= max"),
    (dict(min=math.nan, max=0.1), ValueError, "min must be finite"),
    (dict(min=-math.inf), ValueError, "min must be finite"),
    (dict(c=0.1, min=-0.1), ValueError, "either c"),
    (dict(), TypeError, "give the bound"),
])
def test_bad_bounds_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        wgan_ext.clip_([torch.ones(2)], **kwargs)


def test_bound_may_be_a_one_element_tensor():
    x = torch.linspace(-1, 1, 11)
    wgan_ext.clip_([x], torch.tensor(0.5))
    assert x.abs().max() == 0.5


@pytest.mark.parametrize("impl", [None, "reference"])
def test_a_bound_beyond_a_dtypes_range_is_refused_before_anything_is_written(impl):
    """On every path (the pure-torch one clamps tensor by tensor): the same ValueError, and no tensor changed."""
    if impl is None:
        impl_for("cpu")
    a = torch.tensor([1e6, -1e6])
    h = torch.tensor([1.0], dtype=torch.float16)
    for bounds in (dict(c=1e5), dict(min=-1e39), dict(min=0.0, max=7e4)):
        with pytest.raises(ValueError, match=r"outside the range of float(16|32) \("):
            wgan_ext.clip_([a, h], impl=impl, **bounds)
        assert a.tolist() == [1e6, -1e6] and h.item() == 1.0
    wgan_ext.clip_([a, h], max=1.0, impl=impl)  # no lower bound (-inf inside) fits every dtype
    assert a.tolist() == [1.0, -1e6] and h.item() == 1.0

# checks first and raises ValueError/TypeError.
@pytest.mark.parametrize("tensors,min_,max_,match", [
    ([torch.ones(3, dtype=torch.int32)], -1.0, 1.0, "dtype Int"),
    ([torch.ones(3)], 1.0, -1.0, "min must be <= max"),
    ([torch.ones(3)], math.nan, 1.0, "must not be NaN"),
    ([torch.ones(1, 3).expand(2, 3)], -1.0, 1.0, "share memory"),
    ([torch.ones(3)], -1e5, 1e5, None),  # fine for float32 (the float16 range is not checked: no float16 tensor)
    ([torch.ones(3), torch.ones(2, dtype=torch.float16)], -1e5, 1e5, "outside the range of float16"),
    ([torch.ones(3)], -1e39, 1.0, "outside the range of float32"),
])
def test_the_compiled_op_checks_its_arguments_too(tensors, min_, max_, match):
    impl_for("cpu")
    if match is None:
        torch.ops.wgan_ext.clip_(tensors, min_, max_)
        assert torch.equal(tensors[0], torch.ones(3))
        return
    with pytest.raises(RuntimeError, match=match):
        torch.ops.wgan_ext.clip_(tensors, min_, max_)


# --- Clipper -----------------------------------------------------------------------------------------------------

def dcgan_like_critic():
    return nn.Sequential(
        nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(8, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),
        nn.Conv2d(16, 1, 4, 1, 0),
    )


def scatter_weights(model, scale=0.1):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale)


@pytest.mark.parametrize("device", DEVICES)
def test_clipper_clamps_all_parameters_with_the_paper_default(device):
    model = dcgan_like_critic().to(device)
    scatter_weights(model)
    clipper = wgan_ext.Clipper(model)
    assert (clipper.min, clipper.max) == (-0.01, 0.01)
    assert clipper() is None
    for p in model.parameters():
        assert p.abs().max().item() <= 0.01


def test_clipper_excludes_by_name_pattern_and_module_type():
    model = dcgan_like_critic()
    scatter_weights(model, scale=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    clipper = wgan_ext.Clipper(model, c=0.05, exclude=["*.bias"], exclude_types=nn.BatchNorm2d)
    clipper()
    for name, p in model.named_parameters():
        kept = name.endswith(".bias") or name.startswith("3.")  # module 3 is the BatchNorm
        if kept:
            assert torch.equal(p, before[name]), name
        else:
            assert p.abs().max() <= 0.05 and not torch.equal(p, before[name]), name
    assert clipper.names == ["0.weight", "2.weight", "5.weight"]


def test_clipper_exclude_errors():
    model = dcgan_like_critic()
    with pytest.raises(ValueError, match="matches no parameter"):
        wgan_ext.Clipper(model, exclude=["*.wieght"])
    with pytest.raises(TypeError, match="need the module itself"):
        wgan_ext.Clipper(model.parameters(), exclude=["*.bias"])
    with pytest.raises(ValueError, match="c must be > 0"):
        wgan_ext.Clipper(model, c=0)
    with pytest.raises(TypeError, match="dtype torch.int64"):
        wgan_ext.Clipper([torch.ones(2, dtype=torch.int64)])


@pytest.mark.parametrize("device", DEVICES)
def test_clipper_attach_clamps_after_every_step(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    handle = wgan_ext.Clipper(model, c=0.01).attach(opt)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4, device=device)).pow(2).sum().backward()
        opt.step()
        assert max(p.abs().max().item() for p in model.parameters()) <= 0.01
    handle.remove()
    opt.zero_grad()
    model(torch.randn(8, 4, device=device)).pow(2).sum().mul(1e3).backward()
    opt.step()
    assert max(p.abs().max().item() for p in model.parameters()) > 0.01  # detached: no longer clamped


def test_clipper_attach_refuses_another_models_optimizer():
    critic, generator = nn.Linear(3, 1), nn.Linear(3, 3)
    with pytest.raises(ValueError, match="critic's optimizer"):
        wgan_ext.Clipper(critic).attach(torch.optim.RMSprop(generator.parameters(), lr=5e-5))


@pytest.mark.parametrize("device", DEVICES)
def test_clipper_saturation(device):
    model = dcgan_like_critic().to(device)
    scatter_weights(model, scale=0.02)
    expected = [((p.detach() <= -0.01) | (p.detach() >= 0.01)).sum().item() for p in model.parameters()]
    clipper = wgan_ext.Clipper(model, c=0.01, track_saturation=True)
    with pytest.raises(RuntimeError, match="call it first"):
        clipper.saturation()
    counts = clipper()
    assert counts.tolist() == expected
    total = sum(p.numel() for p in model.parameters())
    assert clipper.saturation() == pytest.approx(sum(expected) / total)
    per = clipper.saturation_per_parameter()
    assert per["0.weight"] == pytest.approx(expected[0] / model[0].weight.numel())
    assert 0.2 < clipper.saturation() < 0.8  # N(0, 0.02) clamped at ±0.01: about 62 % saturate
    with pytest.raises(RuntimeError, match="track_saturation=True"):
        wgan_ext.Clipper(model).saturation()


# --- the CUDA launcher's plan, checked on the CPU -----------------------------------------------------------------

MAX_TENSORS, MAX_BLOCKS = 110, 320


def check_plan(numels):
    rows = torch.ops.wgan_ext._multi_tensor_plan(numels).tolist()
    seen = {}
    for launch, slot, index, chunk, numel in rows:
        assert numel == numels[index] and 0 <= slot < MAX_TENSORS
        assert 0 <= chunk * CHUNK < numel
        key = (index, chunk)
        assert key not in seen, f"chunk {key} planned twice"
        seen[key] = launch
    expected = {(i, c) for i, n in enumerate(numels) for c in range(-(-n // CHUNK))}
    assert set(seen) == expected, "some chunk is never launched"
    launches = {}
    for launch, slot, index, _, _ in rows:
        blocks, slots = launches.setdefault(launch, [0, {}])
        launches[launch][0] = blocks + 1
        assert slots.setdefault(slot, index) == index, "one slot holds two tensors in a launch"
    assert all(b <= MAX_BLOCKS and len(s) <= MAX_TENSORS for b, s in launches.values())
    return len(launches)


@pytest.mark.parametrize("numels,launches", [
    ([], 0),
    ([0, 0], 0),
    ([1, 3, 0, CHUNK + 1], 1),
    ([100] * 110, 1),
    ([100] * 111, 2),                          # more tensors than slots
    ([CHUNK * 320], 1),
    ([CHUNK * 320 + 1], 2),                    # one tensor longer than a launch: it continues in slot 0
    ([5] * 109 + [CHUNK * 700 + 3, 7], 3),     # 109 + 211 blocks, then 320, then 170 + 1
    ([CHUNK * 319, CHUNK + 1, 9], 2),          # a tensor split across launches, then more tensors
])
def test_cuda_launch_plan_covers_every_chunk_once(numels, launches):
    impl_for("cpu")
    assert check_plan(numels) == launches


def test_cuda_launch_plan_random_lists():
    impl_for("cpu")
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        n = int(torch.randint(1, 400, (1,), generator=g))
        big = torch.randint(0, 3 * CHUNK, (n,), generator=g)
        small = torch.randint(0, 50, (n,), generator=g)
        numels = torch.where(torch.rand(n, generator=g) < 0.2, big, small).tolist()
        check_plan(numels)


@pytest.mark.parametrize("op", ["clip_", "clip_count_"])
def test_a_list_of_real_tensors_that_also_holds_a_meta_tensor_is_refused(op):
    """The meta key outranks the devices', so such a list reaches the op's meta kernel: it must refuse it rather
    than write nothing (clip_ itself sends nothing to the op without looking at the first item only)."""
    impl_for("cpu", op)
    real = torch.full((3,), 5.0)
    meta = torch.zeros(2, device="meta")
    with pytest.raises(RuntimeError, match="also holds meta tensors"):
        getattr(torch.ops.wgan_ext, op)([real, meta], -1.0, 1.0)
    with pytest.raises(ValueError, match="item 1 is a meta tensor"):
        wgan_ext.clip_([real, meta], 1.0, return_counts=op == "clip_count_")
    assert real.tolist() == [5.0, 5.0, 5.0]
    getattr(torch.ops.wgan_ext, op)([meta, meta], -1.0, 1.0)  # meta tensors alone: shapes only, nothing to do
