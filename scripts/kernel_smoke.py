"""Every compiled op once per representative case, checked against the pure-torch reference: the workload for
compute-sanitizer (memcheck, synccheck, racecheck) in scripts/gpu_check.sh.

The test suite runs each kernel hundreds of times over parametrizations; under racecheck that did not finish in
420 s on an H100. This runs a fixed few dozen launches that still reach every code path that indexing bugs hide
in: several tensors in one launch, more tensors than one launch takes, a tensor over several chunks, sizes that are
not a multiple of the vector width (scalar tails), storage offsets that break vector alignment, empty tensors;
the cached-plan kernels of Clipper and the fused optimizers; spectral norm on small, tall, wide and large layers; the penalty on 1-element, odd and long samples; float32,
float16 and bfloat16 where the op takes them.

    python scripts/kernel_smoke.py [--device cuda|cpu]      exit 0: every case matched the reference
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

import wgan_ext  # noqa: F401  (loads the ops)
from wgan_ext import _reference as ref

OPS = torch.ops.wgan_ext
failures: list[str] = []


def check(name: str, got, want, atol: float, rtol: float) -> None:
    got = got if isinstance(got, (list, tuple)) else [got]
    want = want if isinstance(want, (list, tuple)) else [want]
    for i, (g, w) in enumerate(zip(got, want)):
        try:
            torch.testing.assert_close(g.float().cpu(), w.float().cpu(), atol=atol, rtol=rtol)
        except AssertionError as e:
            failures.append(f"{name}[{i}]: {str(e).splitlines()[0]}")


def tensors(device, dtype, sizes, offset: int = 0, scale: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        base = torch.randn(n + offset, generator=g) * scale
        out.append(base.to(device=device, dtype=dtype)[offset:])  # offset: a view off the vector alignment
    return out


# sizes: one launch's worth, tails, a multi-chunk tensor, empties, and more tensors than one launch takes (~110)
CLIP_CASES = {
    "mixed": [1, 3, 4, 5, 31, 32, 33, 1000, 4097],
    "empty": [0, 7, 0],
    "multi-chunk": [65536 * 2 + 3],
    "many": [17] * 300,
}


def clip_cases(device) -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        tol = 0.0 if dtype == torch.float32 else 1e-3
        for name, sizes in CLIP_CASES.items():
            for offset in (0, 1):
                a = tensors(device, dtype, sizes, offset)
                b = [t.clone() for t in a]
                counts = OPS.clip_count_(a, -0.01, 0.01)
                want = ref.clip_count_(b, -0.01, 0.01)
                check(f"clip_count_ {name} {dtype} offset {offset}", a, b, tol, 0)
                check(f"clip_count_ counts {name} {dtype} offset {offset}", counts, want, 0, 0)
                c = tensors(device, dtype, sizes, offset, seed=1)
                d = [t.clone() for t in c]
                OPS.clip_(c, -0.02, 0.03)
                ref.clip_(d, -0.02, 0.03)
                check(f"clip_ {name} {dtype} offset {offset}", c, d, tol, 0)


def optimizer_cases(device) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        for name, sizes in CLIP_CASES.items():
            if name == "empty":
                continue
            p, g = tensors(device, dtype, sizes, seed=2), tensors(device, dtype, sizes, seed=3, scale=1.0)
            sq = [torch.rand_like(t) * 0.01 for t in p]
            mom = [torch.zeros_like(t) for t in p]
            rp, rsq, rmom = [t.clone() for t in p], [t.clone() for t in sq], [t.clone() for t in mom]
            OPS.rmsprop_clip_step_(p, g, sq, mom, 1e-3, 0.99, 1e-8, 1e-4, 0.9, 0.01)
            ref.rmsprop_clip_step_(rp, g, rsq, rmom, 1e-3, 0.99, 1e-8, 1e-4, 0.9, 0.01)
            check(f"rmsprop_clip_step_ {name} {dtype}", p + sq + mom, rp + rsq + rmom, tol, tol)
            p, g = tensors(device, dtype, sizes, seed=4), tensors(device, dtype, sizes, seed=5, scale=1.0)
            m, v = [torch.zeros_like(t) for t in p], [torch.rand_like(t) * 0.01 for t in p]
            rp, rm, rv = [t.clone() for t in p], [t.clone() for t in m], [t.clone() for t in v]
            OPS.adam_clip_step_(p, g, m, v, 1e-3, 0.5, 0.9, 1e-8, 0.0, 3, None)
            ref.adam_clip_step_(rp, g, rm, rv, 1e-3, 0.5, 0.9, 1e-8, 0.0, 3, None)
            check(f"adam_clip_step_ {name} {dtype}", p + m + v, rp + rm + rv, tol, tol)


def planned_cases(device) -> None:
    """The cached-plan kernels (Clipper, ClippedRMSprop / ClippedAdam): one launch over mixed dtypes, tails, a
    multi-chunk tensor and more tensors than a list launch takes. Offsets are left out: a plan covers dense tensors
    only, and its chunks start where the tensors do."""
    dtypes = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    sizes = CLIP_CASES["mixed"] + CLIP_CASES["multi-chunk"] + CLIP_CASES["many"][:150]
    a = [tensors(device, dtypes[i % 4], [n], seed=i)[0] for i, n in enumerate(sizes)]
    b = [t.clone() for t in a]
    plan = OPS._clip_plan(a).to(device)
    counts = OPS._clip_count_planned_(plan, len(a), 0xF, -0.01, 0.01)
    want = ref.clip_count_(b, -0.01, 0.01)
    check("_clip_count_planned_", a, b, 0, 0)
    check("_clip_count_planned_ counts", counts, want, 0, 0)
    for dtype in (torch.float32, torch.bfloat16):
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        p, g = tensors(device, dtype, sizes, seed=6), tensors(device, dtype, sizes, seed=7, scale=1.0)
        sq, mom = [torch.rand_like(t) * 0.01 for t in p], [torch.zeros_like(t) for t in p]
        rp, rsq, rmom = [t.clone() for t in p], [t.clone() for t in sq], [t.clone() for t in mom]
        plan = OPS._optim_plan(p, g, sq, mom).to(device)
        OPS._rmsprop_clip_planned_(plan, None, len(p), 0xF, 1e-3, 0.99, 1e-8, 1e-4, 0.9, 0.01)
        ref.rmsprop_clip_step_(rp, g, rsq, rmom, 1e-3, 0.99, 1e-8, 1e-4, 0.9, 0.01)
        check(f"_rmsprop_clip_planned_ {dtype}", p + sq + mom, rp + rsq + rmom, tol, tol)
        m, v = [torch.zeros_like(t) for t in p], [torch.rand_like(t) * 0.01 for t in p]
        rp, rm, rv = [t.clone() for t in p], [t.clone() for t in m], [t.clone() for t in v]
        plan = OPS._optim_plan(p, g, m, v).to(device)
        OPS._adam_clip_planned_(plan, None, len(p), 0xF, 1e-3, 0.5, 0.9, 1e-8, 0.0, 3, None)
        ref.adam_clip_step_(rp, g, rm, rv, 1e-3, 0.5, 0.9, 1e-8, 0.0, 3, None)
        check(f"_adam_clip_planned_ {dtype}", p + m + v, rp + rm + rv, tol, tol)


def penalty_cases(device) -> None:
    # (batch, per-sample shape): 1 element, odd, one block's worth and more, long samples over several blocks
    shapes = [(3, (1,)), (5, (7,)), (4, (3, 5, 5)), (2, (1024,)), (3, (3, 64, 64)), (1, (100_003,))]
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        for n, shape in shapes:
            gen = torch.Generator().manual_seed(n)
            real = torch.randn(n, *shape, generator=gen).to(device=device, dtype=dtype)
            fake = torch.randn(n, *shape, generator=gen).to(device=device, dtype=dtype)
            alpha = torch.rand(n, generator=gen).to(device=device, dtype=dtype)
            check(f"interpolate {n}x{shape} {dtype}", OPS.interpolate(real, fake, alpha),
                  ref.interpolate(real, fake, alpha), tol, tol)
            for one_sided in (False, True):
                grad = (torch.randn(n, *shape, generator=gen) / max(1, torch.Size(shape).numel()) ** 0.5).to(
                    device=device, dtype=dtype)
                got = OPS.gradient_norm_penalty(grad, 1.0, one_sided, 1.0, 1e-12)
                want = ref.gradient_norm_penalty(grad, 1.0, one_sided, 1.0, 1e-12)
                check(f"gradient_norm_penalty {n}x{shape} {dtype} one_sided={one_sided}", got, want, tol, tol)
                # the backward against autograd through the reference
                g = grad.detach().clone().requires_grad_(True)
                penalty, norms = ref.gradient_norm_penalty(g, 1.0, one_sided, 1.0, 1e-12)
                wp, wn = torch.tensor(0.7, device=device), torch.linspace(-1, 1, n, device=device)
                (want_grad,) = torch.autograd.grad(penalty * wp + (norms * wn).sum(), g)
                got_grad = OPS._gradient_norm_penalty_backward(wp.to(penalty.dtype), wn.to(norms.dtype), grad,
                                                               got[1], 1.0, one_sided, 1.0)
                check(f"_gradient_norm_penalty_backward {n}x{shape} {dtype} one_sided={one_sided}", got_grad,
                      want_grad, tol * 10, tol * 10)


def spectral_norm_cases(device) -> None:
    # (rows, columns) of each layer's matrix: tiny, tall, wide, a conv's, and a large one
    layers = [(1, 1), (3, 2), (64, 2), (2, 64), (0, 3), (3, 0), (65, 257), (128, 48), (256, 2304), (1024, 8192)]
    for dtype in (torch.float32, torch.float64):
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        gen = torch.Generator().manual_seed(7)
        ws = [torch.randn(h, w, generator=gen, dtype=dtype).to(device) for h, w in layers]
        us = [torch.nn.functional.normalize(torch.randn(h, generator=gen, dtype=dtype), dim=0).to(device)
              for h, _ in layers]
        vs = [torch.nn.functional.normalize(torch.randn(w, generator=gen, dtype=dtype), dim=0).to(device)
              for _, w in layers]
        ru, rv = [u.clone() for u in us], [v.clone() for v in vs]
        ref.spectral_norm_power_iteration_(ws, ru, rv, 2, 1e-12)
        # on CUDA also with the phases as separate launches (the path without cooperative launches)
        for two in (["", "1"] if device.startswith("cuda") else [""]):
            os.environ["WGAN_EXT_SN_TWO_LAUNCHES"] = two
            try:
                u, v = [t.clone() for t in us], [t.clone() for t in vs]
                OPS.spectral_norm_power_iteration_(ws, u, v, 2, 1e-12)
            finally:
                os.environ.pop("WGAN_EXT_SN_TWO_LAUNCHES", None)
            check(f"spectral_norm_power_iteration_ {dtype}{' two launches' if two else ''}", u + v, ru + rv, tol, tol)


def spectral_normalize_cases(device) -> None:
    # sigma and W / sigma of every layer in one launch, and its backward: 1-element, one row, one column, rows of
    # one / several column pieces (2048) with tails, empty layers, a large layer; on CUDA also the two-launch path
    layers = [(1, 1), (1, 4097), (4097, 1), (3, 2049), (0, 3), (3, 0), (128, 48), (1024, 8192)]
    paths = ["", "1"] if device.startswith("cuda") else [""]
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        gen = torch.Generator().manual_seed(8)
        w64 = [torch.randn(h, w, generator=gen, dtype=torch.float64) for h, w in layers]
        u64 = [torch.nn.functional.normalize(torch.randn(h, generator=gen, dtype=torch.float64), dim=0)
               for h, _ in layers]
        # v = normalize(W^T u): sigma = ||W^T u|| is not near 0 (a tiny sigma makes every comparison ill-posed)
        v64 = [torch.nn.functional.normalize(w.t() @ u, dim=0) for w, u in zip(w64, u64)]
        ws, us, vs = ([t.to(device=device, dtype=dtype) for t in ts] for ts in (w64, u64, v64))
        gs = [torch.randn(h, w, generator=gen).to(device=device, dtype=dtype) for h, w in layers]
        # the reference in float64 (torch.mv rounds each row of W v to bfloat16/float16 before summing sigma)
        w64, g64 = [w.double() for w in ws], [g.double() for g in gs]
        want, want_saved = ref.spectral_norm_normalize(w64, [u.double() for u in us], [v.double() for v in vs])
        for two in paths:
            os.environ["WGAN_EXT_SN_TWO_LAUNCHES"] = two
            try:
                outs, saved = OPS.spectral_norm_normalize(ws, us, vs)
                dws = OPS._spectral_norm_normalize_backward(gs, ws, saved)
            finally:
                os.environ.pop("WGAN_EXT_SN_TWO_LAUNCHES", None)
            name = f"{dtype}{' two launches' if two else ''}"
            check(f"spectral_norm_normalize {name}", outs + [saved], want + [want_saved], tol, tol)
            check(f"_spectral_norm_normalize_backward {name}", dws,
                  ref.spectral_norm_normalize_backward(g64, w64, saved), tol, tol)
        # the same into given outputs (views of one buffer, as the nn layer's pool makes them on the CPU)
        flat = torch.full((sum(h * w for h, w in layers),), float("nan"), device=device, dtype=dtype)
        into = [part.view(h, w) for part, (h, w) in zip(flat.split([h * w for h, w in layers]), layers)]
        saved = OPS._spectral_norm_normalize_into(ws, us, vs, into)
        check(f"_spectral_norm_normalize_into {dtype}", into + [saved], want + [want_saved], tol, tol)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("kernel_smoke: no CUDA device visible", file=sys.stderr)
        return 2
    for op in wgan_ext._ops.OP_NAMES:
        if not wgan_ext._ops.has_kernel(op, torch.device(args.device).type):
            print(f"kernel_smoke: no {args.device} kernel for {op} in this build", file=sys.stderr)
            return 2
    for cases in (clip_cases, planned_cases, optimizer_cases, penalty_cases, spectral_norm_cases,
                  spectral_normalize_cases):
        cases(args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    for f in failures:
        print("MISMATCH", f, file=sys.stderr)
    print(f"kernel_smoke: {'all cases match the reference' if not failures else f'{len(failures)} mismatches'} "
          f"({args.device}, torch {torch.__version__})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
