"""Clipper's cached launch plan (wgan_ext.clip._ClipPlan, the ops _clip_plan / _clip_planned_ / _clip_count_planned_):
the same results as the reference, bit for bit, and every way a parameter set can change between calls either
rebuilds the plan or is followed, never a write through an old address."""

import math
import warnings

import pytest
import torch
from torch import nn

import wgan_ext
from wgan_ext import _ops, _reference
from wgan_ext import clip as clip_mod

from conftest import CUDA, DEVICES, compiled_path, cuda_kernel_names, fused_available, needs_cuda

CPU_CHUNK = 16384  # the CPU plan's chunk (csrc/cpu/clip_cpu.cpp)
CUDA_CHUNK = 65536  # the CUDA plan's chunk (mta::kChunkSize)


def planned(device):
    if not fused_available("_clip_planned_", device):
        pytest.skip(f"no compiled _clip_planned_ kernel for {device}")
    return "fused"


def values(shape, dtype, device, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    flat = x.view(-1)
    specials = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 0.01, -0.01, 1e-30], dtype=torch.float64)
    k = min(flat.numel(), specials.numel())
    flat[:k] = specials[:k]
    return x.to(dtype=dtype, device=device)


SHAPES = [(1,), (3,), (CPU_CHUNK + 1,), (CUDA_CHUNK + 5,), (7, 13), (0,), (2, 3, 5, 7), (CPU_CHUNK,)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def params_of(device, seed=0):
    """Parameters of every dtype and size class, a channels_last one among them (dense, not contiguous)."""
    out = []
    for i, shape in enumerate(SHAPES):
        for j, dtype in enumerate(DTYPES):
            out.append(nn.Parameter(values(shape, dtype, device, seed=seed + 10 * i + j)))
    cl = values((2, 3, 4, 5), torch.float32, device, seed=seed + 99).contiguous(memory_format=torch.channels_last)
    out.append(nn.Parameter(cl))
    return out


def assert_same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("track", [False, True])
def test_planned_clipper_equals_the_reference_bit_for_bit(device, track):
    impl = planned(device)
    params = params_of(device)
    expected = [p.detach().clone() for p in params]
    expected_counts = _reference.clip_count_(expected, -0.01, 0.01)
    clipper = wgan_ext.Clipper(params, 0.01, track_saturation=track, impl=impl)
    counts = clipper()
    assert clipper._plan is not None  # the planned path ran
    for p, e in zip(params, expected):
        assert_same(p.detach(), e)
    if track:
        assert counts.dtype == torch.int64 and counts.device == params[0].device
        assert counts.cpu().tolist() == expected_counts.cpu().tolist()
    else:
        assert counts is None
    # a second call (the cached plan) on new values
    for p, e in zip(params, expected):
        with torch.no_grad():
            p.copy_(values(p.shape, p.dtype, device, seed=7) if p.numel() else p)
            e.copy_(p)
    expected_counts = _reference.clip_count_(expected, -0.01, 0.01)
    plan = clipper._plan
    counts = clipper()
    assert clipper._plan is plan  # not rebuilt: nothing moved
    for p, e in zip(params, expected):
        assert_same(p.detach(), e)
    if track:
        assert counts.cpu().tolist() == expected_counts.cpu().tolist()


@pytest.mark.parametrize("device", DEVICES)
def test_plan_rows_cover_every_element_once(device):
    planned(device)
    chunk = CPU_CHUNK if device == "cpu" else CUDA_CHUNK
    params = params_of(device)
    rows = torch.ops.wgan_ext._clip_plan(params).tolist()
    for i, p in enumerate(params):
        mine = [r for r in rows if r[2] == i]
        assert sum(r[1] for r in mine) == p.numel()
        assert all(1 <= r[1] <= chunk for r in mine)
        item = p.element_size()
        starts = sorted(r[0] for r in mine)
        assert starts == [p.data_ptr() + k * chunk * item for k in range(len(mine))]
        assert {r[3] for r in mine} <= {DTYPES.index(p.dtype)}


def test_saturation_of_a_planned_clipper():
    planned("cpu")
    w = nn.Parameter(torch.tensor([-1.0, 0.0, 0.5, 2.0]))
    b = nn.Parameter(torch.tensor([0.0, 0.0]))
    clipper = wgan_ext.Clipper([w, b], 0.5, track_saturation=True)
    clipper()
    assert clipper.saturation() == pytest.approx(3 / 6)
    assert clipper.saturation_per_parameter() == {"0": 0.75, "1": 0.0}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("flatten", [False, True])
def test_autograd_sees_the_planned_write(device, flatten):
    """The version bump must reach every tensor (flattened: one bump per buffer), so a graph that saved any of them
    sees the clamp."""
    planned(device)
    params = [nn.Parameter(torch.randn(6, device=device)) for _ in range(4)]
    params.append(nn.Parameter(torch.randn(3, device=device, dtype=torch.float64)))
    clipper = wgan_ext.Clipper(params, 0.1, flatten=flatten)
    clipper()
    for w in (params[2], params[4]):
        x = torch.randn(w.shape, device=device, dtype=w.dtype, requires_grad=True)
        y = (x * w).sum()  # saves w for x's gradient
        v = w._version
        clipper()
        assert w._version > v
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()


# --- invalidation: every way the parameters can change between two calls -----------------------------------------

def mlp(device="cpu", dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)).to(device=device, dtype=dtype)


def spread(model, scale=1.0):
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-scale, scale)


def all_within(model, c):
    """Every parameter within [-c, c], c rounded to the parameter's dtype as the clamp rounds it."""
    return all((p.detach().abs().max() <= torch.tensor(c, dtype=p.dtype, device=p.device)).item()
               for p in model.parameters())


@compiled_path
def test_data_reassigned_rebuilds_and_the_old_memory_is_left_alone():
    planned("cpu")
    model = mlp()
    clipper = wgan_ext.Clipper(model, 0.01)
    clipper()
    first = clipper._plan
    w = model[0].weight
    old = w.data
    w.data = torch.full((8, 4), 5.0)
    old.fill_(3.0)  # the old memory, still alive here, must not be written through the old plan
    clipper()
    assert clipper._plan is not first
    assert torch.all(w.detach() == 0.01)
    assert torch.all(old == 3.0)


def test_set_rebuilds():
    planned("cpu")
    model = mlp()
    clipper = wgan_ext.Clipper(model, 0.01)
    clipper()
    other = torch.full((8,), -2.0)
    with torch.no_grad():
        model[0].bias.set_(other)
    clipper()
    assert torch.all(model[0].bias.detach() == -0.01) and torch.all(other == -0.01)


@pytest.mark.parametrize("convert", ["double", "half", "bfloat16"])
def test_dtype_moves_rebuild(convert):
    planned("cpu")
    model = mlp()
    clipper = wgan_ext.Clipper(model, 0.01, track_saturation=True)
    clipper()
    getattr(model, convert)()
    spread(model)
    counts = clipper()
    assert all_within(model, 0.01)
    assert counts.sum().item() > 0


def test_swap_tensors_conversion_rebuilds():
    planned("cpu")
    model = mlp()
    clipper = wgan_ext.Clipper(model, 0.01)
    clipper()
    before = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model.double()
    finally:
        torch.__future__.set_swap_module_params_on_conversion(before)
    spread(model)
    clipper()
    assert all_within(model, 0.01)


def test_load_state_dict_in_place_keeps_the_plan():
    planned("cpu")
    model = mlp()
    clipper = wgan_ext.Clipper(model, 0.01)
    clipper()
    plan = clipper._plan
    other = mlp()
    spread(other)
    model.load_state_dict(other.state_dict())
    clipper()
    assert clipper._plan is plan
    assert all_within(model, 0.01)


def test_load_state_dict_assign_is_followed():
    planned("cpu")
    model = mlp()
    clipper = wgan_ext.Clipper(model, 0.01)
    clipper()
    other = mlp()
    spread(other)
    model.load_state_dict(other.state_dict(), assign=True)  # new Parameter objects
    clipper()
    assert all_within(model, 0.01)
    assert all(a is b for a, b in zip(clipper.params, model.parameters()))


def test_a_layer_added_or_replaced_is_followed():
    planned("cpu")
    model = mlp()
    clipper = wgan_ext.Clipper(model, 0.01, exclude=["2.bias"])
    clipper()
    model.extra = nn.Linear(3, 3)  # built before, attached now
    model[0] = nn.Linear(4, 8)
    spread(model)
    clipper()
    assert clipper.names == ["0.weight", "0.bias", "2.weight", "extra.weight", "extra.bias"]
    assert model[2].bias.abs().max() > 0.01  # still excluded
    for name, p in model.named_parameters():
        if name != "2.bias":
            assert p.abs().max() <= 0.01, name


def test_a_list_of_parameters_is_fixed():
    """A Clipper given a list clips exactly those tensors (there is no module to follow)."""
    planned("cpu")
    model = mlp()
    clipper = wgan_ext.Clipper(list(model.parameters()), 0.01)
    clipper()
    model.extra = nn.Linear(3, 3)
    spread(model)
    clipper()
    assert model.extra.weight.abs().max() > 0.01
    assert all(p.abs().max() <= 0.01 for p in clipper.params)


def test_a_parameter_that_is_not_dense_goes_through_clip_():
    planned("cpu")
    base = torch.randn(6, 6)
    view = base[:, ::2]  # strided: no flat range
    clipper = wgan_ext.Clipper([view, torch.randn(5)], 0.1)
    clipper()
    assert clipper._plan is None
    assert view.abs().max() <= 0.1
    assert base[:, 1::2].abs().max() > 0.1  # the elements between were left alone


def test_bad_bound_for_a_dtype_is_refused_before_anything_is_written():
    planned("cpu")
    a = nn.Parameter(torch.tensor([1e6, -1e6]))
    h = nn.Parameter(torch.tensor([1.0], dtype=torch.float16))
    with pytest.raises(ValueError, match="outside the range of float16"):
        wgan_ext.Clipper([a, h], 1e5)  # refused when built
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(2e5)
    clipper = wgan_ext.Clipper(model, 1e5)
    clipper()  # planned
    model.bias.data = model.bias.data.half()  # a parameter that moves to float16: the rebuilt plan is refused
    with pytest.raises(ValueError, match="outside the range of float16"):
        clipper()
    assert model.weight.eq(1e5).all()  # only the first call wrote
    model.weight.data.fill_(2e5)
    with pytest.raises(ValueError, match="outside the range of float16"):
        clipper()
    assert model.weight.eq(2e5).all()


def test_under_torch_compile_the_list_op_is_used(monkeypatch):
    planned("cpu")
    model = mlp()
    spread(model)
    clipper = wgan_ext.Clipper(model, 0.01)
    calls = []
    real = clip_mod.clip_
    monkeypatch.setattr(clip_mod, "clip_", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    clipper()
    assert calls and all_within(model, 0.01)


# --- the op's own checks (a direct torch.ops call) ---------------------------------------------------------------

def test_the_planned_op_checks_its_plan():
    planned("cpu")
    t = torch.randn(10)
    plan = torch.ops.wgan_ext._clip_plan([t])
    op = torch.ops.wgan_ext._clip_planned_
    with pytest.raises(RuntimeError, match="plan must be a contiguous int64 tensor"):
        op(plan.float(), 1, 1, -1.0, 1.0)
    with pytest.raises(RuntimeError, match="plan must be a contiguous int64 tensor"):
        op(plan[:, :3], 1, 1, -1.0, 1.0)
    with pytest.raises(RuntimeError, match="dtypes must be a mask"):
        op(plan, 1, 0, -1.0, 1.0)
    with pytest.raises(RuntimeError, match="row 0 of the plan"):
        op(plan, 0, 1, -1.0, 1.0)  # tensor index 0 out of range for 0 tensors
    with pytest.raises(RuntimeError, match="row 0 of the plan"):
        op(plan, 1, 2, -1.0, 1.0)  # the row's dtype (float32) is not in the mask
    bad = plan.clone()
    bad[0, 1] = CPU_CHUNK + 1
    with pytest.raises(RuntimeError, match="row 0 of the plan"):
        op(bad, 1, 1, -1.0, 1.0)
    with pytest.raises(RuntimeError, match="not dense"):
        torch.ops.wgan_ext._clip_plan([torch.randn(4, 4)[:, ::2]])


# --- flatten=True: the parameters re-laid out as views of one buffer per dtype -----------------------------------

def buffers_of(clipper):
    return clipper._plan.bump


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("track", [False, True])
def test_flattened_clipper_equals_the_reference_and_keeps_every_tensor(device, track):
    impl = planned(device)
    params = params_of(device)
    ids = [id(p) for p in params]
    layout = [(p.shape, p.stride(), p.dtype, p.requires_grad) for p in params]
    expected = [p.detach().clone() for p in params]
    expected_counts = _reference.clip_count_(expected, -0.01, 0.01)
    clipper = wgan_ext.Clipper(params, 0.01, track_saturation=track, impl=impl, flatten=True)
    buffers = buffers_of(clipper)
    assert len(buffers) == len(DTYPES)  # one per dtype
    counts = clipper()
    assert [id(p) for p in clipper.params] == ids
    assert [(p.shape, p.stride(), p.dtype, p.requires_grad) for p in params] == layout
    for p, e in zip(params, expected):
        assert_same(p.detach(), e)
        assert isinstance(p, nn.Parameter) and p.is_leaf
        if p.numel():  # a view of its dtype's buffer, inside it, overlapping no other tensor
            buf = next(b for b in buffers if b.dtype == p.dtype)
            assert p.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()
    spans = sorted((p.data_ptr(), p.data_ptr() + p.numel() * p.element_size()) for p in params if p.numel())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    if track:
        assert counts.cpu().tolist() == expected_counts.cpu().tolist()


def test_flatten_keeps_gradients_requires_grad_and_the_optimizer():
    planned("cpu")
    model = mlp()
    model[2].bias.requires_grad_(False)
    model(torch.randn(5, 4)).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    opt = torch.optim.RMSprop(model.parameters(), lr=0.1)
    clipper = wgan_ext.Clipper(model, 0.01, flatten=True)
    assert {n: p.grad for n, p in model.named_parameters()} == grads  # the same gradient tensors
    assert not model[2].bias.requires_grad
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()  # the optimizer built before still updates the (re-laid out) parameters
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    clipper()
    assert all_within(model, 0.01)
    fresh = mlp()
    fresh.load_state_dict(model.state_dict())  # a checkpoint of a flattened model loads into a plain one
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))


@compiled_path
def test_a_flattened_parameter_moved_is_re_laid_out():
    planned("cpu")
    model = mlp()
    clipper = wgan_ext.Clipper(model, 0.01, flatten=True)
    clipper()
    first = buffers_of(clipper)
    w = model[0].weight
    old = w.data
    w.data = torch.full((8, 4), 5.0)
    old.fill_(3.0)  # the old buffer's memory, still alive here, must not be written through the old plan
    clipper()
    assert buffers_of(clipper) is not first
    assert torch.all(w.detach() == 0.01)
    assert w.untyped_storage().data_ptr() == buffers_of(clipper)[0].untyped_storage().data_ptr()
    assert torch.all(old == 3.0)
    model.double()
    spread(model)
    clipper()
    assert all_within(model, 0.01) and buffers_of(clipper)[0].dtype == torch.float64


@pytest.mark.parametrize("why", ["reference", pytest.param("no planned kernel", marks=compiled_path)])
def test_flatten_without_a_plan_warns_and_clips_the_parameters_as_they_are(why, monkeypatch):
    """flatten=True is a speed option: where the compiled ops are missing (a failed build) or the pure-torch
    reference is asked for, a user's loop keeps working, with one warning saying why."""
    kwargs = {}
    if why == "reference":
        kwargs["impl"] = "reference"
    else:
        monkeypatch.setitem(_ops.KERNELS, ("_clip_planned_", "cpu"), False)
    model = mlp()
    spread(model)
    addresses = [p.data_ptr() for p in model.parameters()]
    expected = [p.detach().clamp(-0.01, 0.01) for p in model.parameters()]
    with pytest.warns(RuntimeWarning, match="not re-laid out and are clipped as they are, through clip_: "
                                            + ("impl='reference'" if why == "reference" else "wgan_ext was built")):
        clipper = wgan_ext.Clipper(model, 0.01, flatten=True, **kwargs)
    assert not clipper.flatten and clipper._plan is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clip_'s own fallback warning, where the kernel is missing
        clipper()
    assert [p.data_ptr() for p in model.parameters()] == addresses
    assert all(torch.equal(p, e) for p, e in zip(model.parameters(), expected))


@compiled_path
def test_flatten_refusals_name_the_problem():
    planned("cpu")
    model = mlp()
    model[0].weight.register_hook(lambda g: g)
    with pytest.raises(ValueError, match="'0.weight' has hooks"):
        wgan_ext.Clipper(model, 0.01, flatten=True)
    with pytest.raises(ValueError, match="needs cache_plan=True"):
        wgan_ext.Clipper(mlp(), 0.01, flatten=True, cache_plan=False)
    with pytest.raises(ValueError, match="no launch plan applies to these parameters"):
        wgan_ext.Clipper([torch.randn(4, 4)[:, :2]], 0.01, flatten=True)  # not dense

    leaf = torch.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match="'0' is the result of an autograd operation"):
        wgan_ext.Clipper([leaf * 2], 0.01, flatten=True)

    class Tagged(nn.Parameter):
        pass

    with pytest.raises(TypeError, match="'0' is a Tagged"):
        wgan_ext.Clipper([Tagged(torch.randn(3))], 0.01, flatten=True)


# --- CUDA ----------------------------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.cuda
def test_cuda_planned_clipper_is_one_launch_for_500_tensors_of_mixed_dtypes():
    planned("cuda")
    params = [nn.Parameter(torch.randn(7 + i % 5, device="cuda", dtype=DTYPES[i % 4])) for i in range(500)]
    clipper = wgan_ext.Clipper(params, 0.5)
    clipper()
    kernels = cuda_kernel_names(clipper)
    assert len([k for k in kernels if "clip_plan_kernel" in k]) == 1, kernels
    assert all(p.abs().max() <= 0.5 for p in params)


@needs_cuda
@pytest.mark.cuda
def test_cuda_planned_clipper_in_a_cuda_graph():
    planned("cuda")
    model = mlp("cuda")
    clipper = wgan_ext.Clipper(model, 0.01, track_saturation=True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        clipper()  # warm-up builds the plan outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        counts = clipper()
    spread(model)
    graph.replay()
    torch.cuda.synchronize()
    assert all_within(model, 0.01)
    assert counts.sum().item() > 0


@needs_cuda
@pytest.mark.cuda
def test_cuda_flattened_clipper_is_one_launch_and_replays_in_a_cuda_graph():
    planned("cuda")
    params = [nn.Parameter(torch.randn(7 + i % 5, device="cuda", dtype=DTYPES[i % 4])) for i in range(200)]
    clipper = wgan_ext.Clipper(params, 0.5, flatten=True)
    assert len(buffers_of(clipper)) == 4 and all(b.is_cuda for b in buffers_of(clipper))
    clipper()
    kernels = cuda_kernel_names(clipper)
    assert len([k for k in kernels if "clip_plan_kernel" in k]) == 1, kernels
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        clipper()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        clipper()
    with torch.no_grad():
        for p in params:
            p.uniform_(-2, 2)
    graph.replay()
    torch.cuda.synchronize()
    assert all(p.abs().max() <= 0.5 for p in params)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.cuda
def test_cuda_model_moved_between_devices_rebuilds():
    planned("cuda")
    model = mlp()
    clipper = wgan_ext.Clipper(model, 0.01)
    clipper()
    model.cuda()
    spread(model)
    clipper()
    assert all_within(model, 0.01)
    model.cpu()
    spread(model)
    clipper()
    assert all_within(model, 0.01)
