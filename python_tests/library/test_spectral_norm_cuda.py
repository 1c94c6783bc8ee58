"""The CUDA kernels of spectral normalization (csrc/cuda/spectral_norm_normalize_cuda.cu, spectral_norm_cuda.cu):
against the CPU kernel and the pure-torch reference, on large layers, under CUDA graph capture, bit for bit
deterministic, on the cooperative and the two-launch path, and through apply_spectral_norm in training."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

import wgan_ext
from wgan_ext import _reference

from conftest import fused_available, needs_cuda

pytestmark = [pytest.mark.cuda, needs_cuda]

OPS = torch.ops.wgan_ext
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
# sigma sums up to 8192 products in another order than the CPU kernel and torch.mv do; in float16/bfloat16 it is
# rounded to the weight dtype, where one ulp of difference moves every output by one ulp
TOL = {torch.float64: dict(rtol=1e-11, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2), torch.float16: dict(rtol=4e-3, atol=4e-3)}
SHAPES = {
    "small": [(1, 1), (1, 7), (9, 1), (5, 7), (33, 129)],
    "conv": [(64, 48), (256, 2304), (1, 8192), (8192, 1), (5, 4099)],
    "segments": [(3, 2047), (3, 2048), (3, 2049), (2, 6145)],  # row pieces of 2048 columns, tails
}
TWO_LAUNCHES = "WGAN_EXT_SN_TWO_LAUNCHES"


def need_ops():
    for op in ("spectral_norm_normalize", "_spectral_norm_normalize_backward", "spectral_norm_power_iteration_"):
        if not fused_available(op, "cuda"):
            pytest.skip(f"no compiled CUDA kernel for {op}")


def layers(shapes, dtype, device="cuda", seed=0):
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for s in shapes]
    us = [torch.nn.functional.normalize(torch.randn(s[0], generator=g, dtype=torch.float64), dim=0)
          .to(device=device, dtype=dtype) for s in shapes]
    # v = normalize(W^T u): sigma = ||W^T u|| is not near 0, which would make any comparison ill-posed
    vs = [torch.nn.functional.normalize(W.cpu().double().t() @ u.cpu().double(), dim=0).to(device=device, dtype=dtype)
          for W, u in zip(Ws, us)]
    return Ws, us, vs


def cpu(ts):
    return [t.cpu() for t in ts]


def grads_like(Ws, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(W.shape, generator=g, dtype=torch.float64).to(device=W.device, dtype=W.dtype) for W in Ws]


def check_forward(Ws, us, vs, tol):
    outs, saved = OPS.spectral_norm_normalize(Ws, us, vs)
    cpu_outs, cpu_saved = OPS.spectral_norm_normalize(cpu(Ws), cpu(us), cpu(vs))
    ref_outs, ref_saved = _reference.spectral_norm_normalize(Ws, us, vs)
    assert saved.device == Ws[0].device and saved.dtype == torch.float64 and saved.shape == cpu_saved.shape
    for o, c, r, W in zip(outs, cpu_outs, ref_outs, Ws):
        assert o.device == W.device and o.dtype == W.dtype and o.shape == W.shape and o.is_contiguous()
        torch.testing.assert_close(o.cpu(), c, **tol)
        torch.testing.assert_close(o, r, **tol)
    L = len(Ws)
    torch.testing.assert_close(saved[:L].cpu(), cpu_saved[:L], **tol)
    assert torch.equal(saved[L:].cpu(), cpu_saved[L:])  # u, v kept exactly
    return outs, saved


def check_backward(Gs, Ws, saved, tol):
    got = OPS._spectral_norm_normalize_backward(Gs, Ws, saved)
    want_cpu = OPS._spectral_norm_normalize_backward(cpu(Gs), cpu(Ws), saved.cpu())
    want_ref = _reference.spectral_norm_normalize_backward(Gs, Ws, saved)
    for g, c, r, W in zip(got, want_cpu, want_ref, Ws):
        assert g.device == W.device and g.dtype == W.dtype and g.shape == W.shape and g.is_contiguous()
        torch.testing.assert_close(g.cpu(), c, **tol)
        torch.testing.assert_close(g, r, **tol)
    return got


@pytest.fixture(params=["cooperative", "two-launches"])
def path(request, monkeypatch):
    if request.param == "two-launches":
        monkeypatch.setenv(TWO_LAUNCHES, "1")
    else:
        monkeypatch.delenv(TWO_LAUNCHES, raising=False)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(SHAPES))
def test_normalize_and_backward_match_cpu_and_reference(dtype, case, path):
    need_ops()
    Ws, us, vs = layers(SHAPES[case], dtype)
    _, saved = check_forward(Ws, us, vs, TOL[dtype])
    check_backward(grads_like(Ws), Ws, saved, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_normalize_into_given_outputs_writes_the_same_bits(dtype, path):
    """_spectral_norm_normalize_into on CUDA: the allocating op's results, in views of one buffer; bad outs refused
    before anything is written."""
    if not fused_available("_spectral_norm_normalize_into", "cuda"):
        pytest.skip("no compiled CUDA kernel for _spectral_norm_normalize_into")
    shapes = SHAPES["small"] + SHAPES["segments"]
    Ws, us, vs = layers(shapes, dtype)
    flat = torch.full((sum(h * w for h, w in shapes),), float("nan"), device="cuda", dtype=dtype)
    outs = [part.view(shape) for part, shape in zip(flat.split([h * w for h, w in shapes]), shapes)]
    saved = OPS._spectral_norm_normalize_into(Ws, us, vs, outs)
    want, want_saved = OPS.spectral_norm_normalize(Ws, us, vs)
    for o, w in zip(outs, want):
        assert torch.equal(o, w)
    assert torch.equal(saved, want_saved)
    with pytest.raises(RuntimeError, match="shares memory with a weight"):
        OPS._spectral_norm_normalize_into(Ws, us, vs, [Ws[0]] + outs[1:])
    with pytest.raises(RuntimeError, match="must be a contiguous"):
        OPS._spectral_norm_normalize_into(Ws, us, vs, [outs[0].cpu()] + outs[1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_four_large_layers(dtype, path):
    need_ops()
    Ws, us, vs = layers([(1024, 8192)] * 4, dtype)
    tol = TOL[dtype]
    _, saved = check_forward(Ws, us, vs, tol)
    check_backward(grads_like(Ws), Ws, saved, tol)


def test_mixed_dtypes_and_more_layers_than_one_launch_takes():
    need_ops()
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
    Ws, us, vs = [], [], []
    for i in range(45):  # > 36 layers of one dtype: two launches for float32
        dtype = dtypes[0] if i < 38 else dtypes[i % 4]
        W, u, v = layers([(1 + i % 5, 3 + 97 * i)], dtype, seed=i)
        Ws += W
        us += u
        vs += v
    outs, saved = OPS.spectral_norm_normalize(Ws, us, vs)
    cpu_outs, cpu_saved = OPS.spectral_norm_normalize(cpu(Ws), cpu(us), cpu(vs))
    for o, c in zip(outs, cpu_outs):
        torch.testing.assert_close(o.cpu(), c, **TOL[c.dtype])
    torch.testing.assert_close(saved.cpu(), cpu_saved, rtol=2e-2, atol=1e-6)
    Gs = grads_like(Ws)
    got = OPS._spectral_norm_normalize_backward(Gs, Ws, saved)
    want = OPS._spectral_norm_normalize_backward(cpu(Gs), cpu(Ws), saved.cpu())
    for g, c in zip(got, want):
        torch.testing.assert_close(g.cpu(), c, **TOL[c.dtype])


def test_empty_layers():
    need_ops()
    Ws, us, vs = layers([(0, 3), (3, 0), (2, 2), (0, 0)], torch.float32)
    outs, saved = OPS.spectral_norm_normalize(Ws, us, vs)
    cpu_outs, cpu_saved = OPS.spectral_norm_normalize(cpu(Ws), cpu(us), cpu(vs))
    assert [o.shape for o in outs] == [o.shape for o in cpu_outs]
    torch.testing.assert_close(saved.cpu(), cpu_saved)
    got = OPS._spectral_norm_normalize_backward(grads_like(Ws), Ws, saved)
    assert [g.shape for g in got] == [W.shape for W in Ws]


def test_non_contiguous_inputs():
    need_ops()
    Ws, us, vs = layers([(48, 33), (7, 130)], torch.float32)
    Wt = [W.t().contiguous().t() for W in Ws]  # column-major
    ut = [torch.stack([u, u], 1)[:, 1] for u in us]  # stride 2
    vt = [torch.stack([v, v], 1)[:, 0] for v in vs]
    assert not any(t.is_contiguous() for t in Wt + ut + vt)
    outs, saved = OPS.spectral_norm_normalize(Wt, ut, vt)
    want, want_saved = OPS.spectral_norm_normalize(Ws, us, vs)
    for o, w in zip(outs, want):
        assert torch.equal(o, w)
    assert torch.equal(saved, want_saved)
    Gs = grads_like(Ws)
    Gt = [G.t().contiguous().t() for G in Gs]
    for a, b in zip(OPS._spectral_norm_normalize_backward(Gt, Wt, saved),
                    OPS._spectral_norm_normalize_backward(Gs, Ws, saved)):
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second GPU")
def test_a_non_default_device():
    need_ops()
    Ws, us, vs = layers(SHAPES["conv"], torch.float32, device="cuda:1")
    _, saved = check_forward(Ws, us, vs, TOL[torch.float32])
    check_backward(grads_like(Ws), Ws, saved, TOL[torch.float32])


def test_deterministic_and_the_same_bits_on_both_paths(monkeypatch):
    need_ops()
    shapes = SHAPES["conv"] + [(1024, 8192)]
    Ws, us, vs = layers(shapes, torch.float32)
    Gs = grads_like(Ws)
    results = []
    for two in ("", "", "1", "1"):
        monkeypatch.setenv(TWO_LAUNCHES, two)
        outs, saved = OPS.spectral_norm_normalize(Ws, us, vs)
        dW = OPS._spectral_norm_normalize_backward(Gs, Ws, saved)
        results.append(outs + [saved] + dW)
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_capture_and_replay_equal_eager(dtype, path):
    need_ops()
    shapes = [(64, 48), (256, 2304), (1, 8192), (1024, 8192)]
    Ws, us, vs = layers(shapes, dtype)
    Gs = grads_like(Ws)
    pu, pv = [u.clone() for u in us], [v.clone() for v in vs]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the capture
        for _ in range(2):
            outs, saved = OPS.spectral_norm_normalize(Ws, us, vs)
            OPS._spectral_norm_normalize_backward(Gs, Ws, saved)
            OPS.spectral_norm_power_iteration_(Ws, [u.clone() for u in us], [v.clone() for v in vs], 2, 1e-12)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_outs, g_saved = OPS.spectral_norm_normalize(Ws, us, vs)
        g_dW = OPS._spectral_norm_normalize_backward(Gs, Ws, g_saved)
        OPS.spectral_norm_power_iteration_(Ws, pu, pv, 2, 1e-12)
    for _ in range(2):  # replays with new inputs
        for W, G in zip(Ws, Gs):
            W.mul_(1.25)
            G.add_(0.5)
        eu, ev = [u.clone() for u in pu], [v.clone() for v in pv]
        graph.replay()
        torch.cuda.synchronize()
        outs, saved = OPS.spectral_norm_normalize(Ws, us, vs)
        dW = OPS._spectral_norm_normalize_backward(Gs, Ws, saved)
        OPS.spectral_norm_power_iteration_(Ws, eu, ev, 2, 1e-12)
        for a, b in zip(g_outs + [g_saved] + g_dW + pu + pv, outs + [saved] + dW + eu + ev):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_power_iteration_on_large_layers_matches_the_reference(dtype, path):
    need_ops()
    Ws, us, vs = layers([(256, 2304), (1024, 8192), (1, 8192), (8192, 1), (3, 5)], dtype)
    ru, rv = [u.clone() for u in us], [v.clone() for v in vs]
    OPS.spectral_norm_power_iteration_(Ws, us, vs, 3, 1e-12)
    _reference.spectral_norm_power_iteration_(Ws, ru, rv, 3, 1e-12)
    tol = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5),
           torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}[dtype]
    for a, b in zip(us + vs, ru + rv):
        torch.testing.assert_close(a, b, **tol)
    cu, cv = [u.clone() for u in us], [v.clone() for v in vs]
    OPS.spectral_norm_power_iteration_(Ws, us, vs, 1, 1e-12)
    OPS.spectral_norm_power_iteration_(Ws, cu, cv, 1, 1e-12)
    for a, b in zip(us + vs, cu + cv):
        assert torch.equal(a, b)  # deterministic


def dcgan_critic(nc=3, ndf=16):
    return nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Flatten(0))


def test_apply_spectral_norm_on_a_dcgan_critic_matches_torch_over_training_steps(path):
    need_ops()
    torch.manual_seed(0)
    base = dcgan_critic().to(device="cuda", dtype=torch.float64)
    theirs, ours = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(1)
    for m in theirs.modules():
        if isinstance(m, nn.Conv2d):
            torch_spectral_norm(m)
    torch.manual_seed(1)
    wgan_ext.apply_spectral_norm(ours)
    ours.load_state_dict(theirs.state_dict())  # the same u, v to start from
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (theirs, ours)]
    g = torch.Generator().manual_seed(2)
    for _ in range(4):
        real = torch.randn(4, 3, 64, 64, generator=g, dtype=torch.float64).to("cuda")
        fake = torch.randn(4, 3, 64, 64, generator=g, dtype=torch.float64).to("cuda")
        losses = []
        for critic, opt in zip((theirs, ours), opts):
            opt.zero_grad()
            loss = critic(fake).mean() - critic(real).mean()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-9, atol=1e-9)
    for (k, a), b in zip(theirs.state_dict().items(), ours.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_power_iteration_matches_the_cpu_kernel_on_every_shape(dtype, path):
    need_ops()
    shapes = SHAPES["small"] + SHAPES["segments"] + [(0, 3), (3, 0), (65, 257), (130, 600)]
    Ws, us, vs = layers(shapes, dtype)
    cu, cv = cpu(us), cpu(vs)
    OPS.spectral_norm_power_iteration_(Ws, us, vs, 2, 1e-12)
    OPS.spectral_norm_power_iteration_(cpu(Ws), cu, cv, 2, 1e-12)
    for a, b in zip(us + vs, cu + cv):
        torch.testing.assert_close(a.cpu(), b, **TOL[dtype])


def test_power_iteration_is_the_same_bits_on_both_paths_and_mixed_dtypes(monkeypatch):
    need_ops()
    Ws, us, vs = layers([(1024, 8192), (256, 2304), (7, 3)], torch.float32)
    W2, u2, v2 = layers([(300, 200), (1, 5)], torch.bfloat16, seed=3)
    Ws, us, vs = Ws + W2, us + u2, vs + v2
    results = []
    for two in ("", "1"):
        monkeypatch.setenv(TWO_LAUNCHES, two)
        u, v = [t.clone() for t in us], [t.clone() for t in vs]
        OPS.spectral_norm_power_iteration_(Ws, u, v, 3, 1e-12)
        results.append(u + v)
    for a, b in zip(*results):
        assert torch.equal(a, b)
