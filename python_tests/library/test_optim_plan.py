"""The fused optimizers' cached launch plans (wgan_ext.optim._GroupPlan, the ops _optim_plan / _rmsprop_clip_planned_
/ _adam_clip_planned_): the planned step gives the per-list step's bits and torch's results, and every way the
tensors of a group can change between steps rebuilds the plan (or leaves it to the per-list path)."""

import copy

import pytest
import torch
from torch import nn

import wgan_ext

from conftest import DEVICES, compiled_path, cuda_kernel_names, fused_available, needs_cuda

CPU_CHUNK = 16384

OPTIMIZERS = [
    ("ClippedRMSprop", dict(lr=1e-3)),
    ("ClippedRMSprop", dict(lr=1e-3, momentum=0.9, weight_decay=1e-2)),
    ("ClippedAdam", dict(lr=1e-3, betas=(0.5, 0.9))),
    ("ClippedAdam", dict(lr=1e-3, betas=(0.0, 0.9), weight_decay=1e-2)),
]
TORCH = {"ClippedRMSprop": torch.optim.RMSprop, "ClippedAdam": torch.optim.Adam}


def planned(device, name="ClippedRMSprop"):
    op = "_adam_clip_planned_" if name == "ClippedAdam" else "_rmsprop_clip_planned_"
    if not fused_available(op, device):
        pytest.skip(f"no compiled {op} kernel for {device}")


def params_of(device, seed=0):
    """Every dtype, sizes around the CPU chunk, a channels_last parameter (dense, not contiguous), an empty one."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 13), (CPU_CHUNK + 3,), (1,), (0,), (3, 5)]
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    out = []
    for i, shape in enumerate(shapes):
        for j, dtype in enumerate(dtypes):
            t = torch.randn(shape, generator=g, dtype=torch.float64) * 0.02
            out.append(nn.Parameter(t.to(device=device, dtype=dtype)))
    cl = (torch.randn(2, 3, 4, 5, generator=g) * 0.02).to(device).contiguous(memory_format=torch.channels_last)
    out.append(nn.Parameter(cl))
    return out


def clone_params(params):
    return [nn.Parameter(p.detach().clone(memory_format=torch.preserve_format)) for p in params]


def set_grads(params, step, new=True):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        grad = (torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1).to(device=p.device, dtype=p.dtype)
        grad = grad.contiguous(memory_format=torch.channels_last) if p.dim() == 4 else grad
        if new or p.grad is None:
            p.grad = grad
        else:
            p.grad.copy_(grad)


def assert_bits(a_params, b_params, a_opt, b_opt):
    for a, b in zip(a_params, b_params):
        assert torch.equal(a.detach(), b.detach()), (a.dtype, a.shape)
        sa, sb = a_opt.state[a], b_opt.state[b]
        assert set(sa) == set(sb)
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, kwargs", OPTIMIZERS)
@pytest.mark.parametrize("new_grads", [True, False])
def test_planned_steps_give_the_list_steps_bits(device, name, kwargs, new_grads):
    planned(device, name)
    a = params_of(device)
    b = clone_params(a)
    opt_a = getattr(wgan_ext, name)(a, clip_value=0.01, impl="fused", **kwargs)
    opt_b = getattr(wgan_ext, name)(b, clip_value=0.01, impl="fused", cache_plan=False, **kwargs)
    for step in range(4):
        set_grads(a, step, new_grads)
        set_grads(b, step, new_grads)
        opt_a.step()
        opt_b.step()
        assert opt_a._plans[0].rows is not None  # the planned path ran
        assert_bits(a, b, opt_a, opt_b)
    assert [float(opt_a.state[p]["step"]) for p in a] == [4.0] * len(a)


def step_like_torch(opt, ref, ours, theirs):
    """One step of ours and of torch's optimizer followed by the clamp; the parameters must agree."""
    opt.step()
    ref.step()
    with torch.no_grad():
        for p in theirs:
            p.clamp_(-0.01, 0.01)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS)
@compiled_path
def test_planned_steps_match_torch(name, kwargs):
    planned("cpu", name)
    ours = [nn.Parameter(torch.randn(40, 30, dtype=torch.float64) * 0.02) for _ in range(3)]
    theirs = clone_params(ours)
    opt = getattr(wgan_ext, name)(ours, clip_value=0.01, **kwargs)
    ref = TORCH[name](theirs, foreach=False, **kwargs)
    for step in range(5):
        set_grads(ours, step)
        set_grads(theirs, step)
        step_like_torch(opt, ref, ours, theirs)
    assert opt._plans[0].rows is not None


def test_the_step_count_is_one_counter_and_state_dicts_interchange_with_torch():
    planned("cpu")
    params = [nn.Parameter(torch.randn(5, dtype=torch.float64) * 0.02) for _ in range(3)]
    opt = wgan_ext.ClippedAdam(params, lr=1e-3, clip_value=0.01)
    for step in range(3):
        set_grads(params, step)
        opt.step()
    sd = opt.state_dict()
    assert [float(s["step"]) for s in sd["state"].values()] == [3.0, 3.0, 3.0]
    theirs = clone_params(params)
    ref = torch.optim.Adam(theirs, lr=1e-3)
    ref.load_state_dict(copy.deepcopy(sd))
    set_grads(params, 9)
    set_grads(theirs, 9)
    step_like_torch(opt, ref, params, theirs)
    assert [float(ref.state[p]["step"]) for p in theirs] == [4.0] * 3


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS[1:3])
@compiled_path
def test_what_moves_between_steps_rebuilds_the_plan(name, kwargs):
    """.data reassigned, a dtype move, load_state_dict, a cleared state, momentum switched on: each step still
    equals the per-list step on the same tensors."""
    planned("cpu", name)
    torch.manual_seed(0)
    model_a = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    model_b = copy.deepcopy(model_a)
    kw = dict(clip_value=0.05, **kwargs)
    opt_a = getattr(wgan_ext, name)(model_a.parameters(), **kw)
    opt_b = getattr(wgan_ext, name)(model_b.parameters(), cache_plan=False, **kw)

    def step(k):
        set_grads(list(model_a.parameters()), k, new=False)  # gradients written in place: they stay where they are
        set_grads(list(model_b.parameters()), k, new=False)
        opt_a.step()
        opt_b.step()
        assert opt_a._plans[0].rows is not None
        assert_bits(list(model_a.parameters()), list(model_b.parameters()), opt_a, opt_b)

    step(0)
    first = opt_a._plans[0]
    step(1)
    assert opt_a._plans[0] is first  # nothing moved
    for m in (model_a, model_b):
        m.zero_grad(set_to_none=True)  # new gradients at new addresses: a CPU plan follows them
    before = first.grad_ptrs.clone()
    step(1)
    assert opt_a._plans[0] is first and not torch.equal(first.grad_ptrs, before)
    w = model_a[0].weight
    w.grad = torch.zeros(4, 8).t()  # a gradient in another layout: rebuilt (and stepped by the per-list path)
    model_b[0].weight.grad = torch.zeros(4, 8).t()
    opt_a.step()
    opt_b.step()
    assert opt_a._plans[0] is not first and opt_a._plans[0].rows is None  # kept: no retry until something moves
    assert_bits(list(model_a.parameters()), list(model_b.parameters()), opt_a, opt_b)
    for m in (model_a, model_b):
        m.zero_grad(set_to_none=True)  # gradients in the parameters' layout again: planned again
    for m in (model_a, model_b):
        m[0].weight.data = torch.full((8, 4), 0.5)
    step(2)
    for m, opt in ((model_a, opt_a), (model_b, opt_b)):
        m.double()  # (the state stays float32, as torch's would: start it afresh)
        opt.state.clear()
    step(3)
    sd = copy.deepcopy(opt_b.state_dict())
    opt_a.load_state_dict(sd)
    opt_b.load_state_dict(copy.deepcopy(sd))
    step(4)
    opt_a.state.clear()
    opt_b.state.clear()
    step(5)
    for opt in (opt_a, opt_b):
        for group in opt.param_groups:
            if "momentum" in group:
                group["momentum"] = 0.5
    step(6)


def test_a_parameter_without_gradient_takes_the_list_path_and_counts_stay_right():
    planned("cpu")
    params = [nn.Parameter(torch.randn(6, dtype=torch.float64) * 0.02) for _ in range(3)]
    theirs = clone_params(params)
    opt = wgan_ext.ClippedAdam(params, lr=1e-3, clip_value=0.01)
    ref = torch.optim.Adam(theirs, lr=1e-3)
    for step in range(5):
        set_grads(params, step)
        set_grads(theirs, step)
        if step == 2:
            params[1].grad = theirs[1].grad = None
        step_like_torch(opt, ref, params, theirs)
    assert [float(opt.state[p]["step"]) for p in params] == [5.0, 4.0, 5.0]
    # steps that differ: Adam's bias corrections differ per parameter, so the per-list path keeps going
    assert opt._plans.get(0) is None or opt._plans[0].rows is None


def test_versions_are_bumped_and_a_copy_keeps_no_plan():
    planned("cpu")
    params = [nn.Parameter(torch.randn(6) * 0.02) for _ in range(2)]
    opt = wgan_ext.ClippedRMSprop(params, lr=1e-3, momentum=0.9)
    set_grads(params, 0)
    opt.step()
    before = [p._version for p in params] + [opt.state[p]["square_avg"]._version for p in params]
    opt.step()
    after = [p._version for p in params] + [opt.state[p]["square_avg"]._version for p in params]
    assert all(b > a for a, b in zip(before, after))
    x = torch.randn(6, requires_grad=True)
    y = (x * params[0]).sum()
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    twin = copy.deepcopy(opt)
    assert twin._plans == {}


def test_sparse_gradient_after_planned_steps_is_refused_clearly():
    planned("cpu")
    emb = nn.Embedding(10, 3)
    opt = wgan_ext.ClippedRMSprop(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    opt.step()
    emb.weight.grad = torch.sparse_coo_tensor([[0]], torch.ones(1, 3), (10, 3), check_invariants=True)
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


def test_the_planned_ops_check_their_plans():
    planned("cpu")
    p, g, s = torch.zeros(10), torch.zeros(10), torch.zeros(10)
    plan = torch.ops.wgan_ext._optim_plan([p], [g], [s], [])
    rms = torch.ops.wgan_ext._rmsprop_clip_planned_
    adam = torch.ops.wgan_ext._adam_clip_planned_
    with pytest.raises(RuntimeError, match="plan must be a contiguous int64 tensor"):
        rms(plan[:, :7], None, 1, 1, 1e-3, 0.99, 1e-8, 0.0, 0.0, 0.01)
    with pytest.raises(RuntimeError, match="row 0 of the plan"):
        rms(plan, None, 1, 1, 1e-3, 0.99, 1e-8, 0.0, 0.9, 0.01)  # momentum needs a second state
    with pytest.raises(RuntimeError, match="row 0 of the plan"):
        adam(plan, None, 1, 1, 1e-3, 0.9, 0.99, 1e-8, 0.0, 1, 0.01)  # Adam needs two states
    with pytest.raises(RuntimeError, match="row 0 of the plan"):
        rms(plan, None, 0, 1, 1e-3, 0.99, 1e-8, 0.0, 0.0, 0.01)
    with pytest.raises(RuntimeError, match="lr must be >= 0"):
        rms(plan, None, 1, 1, -1.0, 0.99, 1e-8, 0.0, 0.0, 0.01)
    with pytest.raises(RuntimeError, match="has shape"):
        torch.ops.wgan_ext._optim_plan([p], [torch.zeros(9)], [s], [])
    with pytest.raises(RuntimeError, match="grad_ptrs must be a contiguous int64 CPU tensor"):
        rms(plan, torch.zeros(2, dtype=torch.int64), 1, 1, 1e-3, 0.99, 1e-8, 0.0, 0.0, 0.01)
    with pytest.raises(RuntimeError, match="gradient address of tensor 0 is null"):
        rms(plan, torch.zeros(1, dtype=torch.int64), 1, 1, 1e-3, 0.99, 1e-8, 0.0, 0.0, 0.01)
    g.fill_(1.0)
    other = torch.full((10,), -1.0)
    rms(plan, torch.tensor([other.data_ptr()]), 1, 1, 1e-3, 0.99, 1e-8, 0.0, 0.0, None)  # the gradient read from
    assert (p > 0).all()  # `other` (a negative gradient: the step goes up), not from g
    up = p.clone()
    rms(plan, None, 1, 1, 1e-3, 0.99, 1e-8, 0.0, 0.0, None)  # from the plan's own column again: g
    assert (p < up).all()  # (a positive gradient: the step goes down)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", ["ClippedRMSprop", "ClippedAdam"])
def test_cuda_planned_step_is_one_launch(name):
    from wgan_ext.train.models import DCGANCritic

    planned("cuda", name)
    params = list(DCGANCritic(64).cuda().parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    opt = getattr(wgan_ext, name)(params, lr=1e-4)
    opt.step()
    kernels = cuda_kernel_names(opt.step)
    assert len([k for k in kernels if "_plan_kernel" in k]) == 1, kernels
    assert opt._plans[0].rows.device.type == "cuda"


def warmed_up_cuda_optimizer():
    """Parameters with gradients and a ClippedRMSprop stepped once on a side stream (the plan built outside any
    capture, as torch's CUDA-graph recipe warms up)."""
    planned("cuda")
    params = [nn.Parameter(torch.randn(300, device="cuda") * 0.02) for _ in range(5)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = wgan_ext.ClippedRMSprop(params, lr=1e-2, clip_value=0.01)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    return params, opt


def replay_changes_and_clamps(graph, params):
    """Replays the captured step after negating the gradients in place (the graph reads them at these addresses).
    With the warm-up's gradients again nothing would change: lr 1e-2 put every parameter at the bound its gradient
    pushes it to, and the same push leaves it there (seen with the CPU kernel, the same math)."""
    for p in params:
        p.grad.neg_()
    before = [p.detach().clone() for p in params]
    graph.replay()
    torch.cuda.synchronize()
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, params))
    assert all(p.abs().max() <= 0.01 for p in params)


@needs_cuda
@pytest.mark.cuda
def test_cuda_planned_step_in_a_cuda_graph():
    params, opt = warmed_up_cuda_optimizer()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    assert opt._plans[0].captured  # the planned launch was recorded
    replay_changes_and_clamps(graph, params)


@needs_cuda
@pytest.mark.cuda
def test_cuda_capture_that_would_rebuild_the_plan_takes_the_list_path():
    """A plan cannot be copied to the device inside a capture (pageable memory): a step captured after the
    gradients moved goes through the per-list launches, and the graph replays correctly."""
    params, opt = warmed_up_cuda_optimizer()
    first = opt._plans[0]
    for p in params:
        p.grad = torch.randn_like(p)  # new gradients at new addresses
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    assert opt._plans.get(0) is not first
    replay_changes_and_clamps(graph, params)
