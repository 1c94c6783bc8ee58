"""Benchmark of the fused optimizer step with clip: wgan_ext.ClippedRMSprop / ClippedAdam against what WGAN code runs.

Cases (float32 parameters of a critic, fixed random gradients, c = 0.01):
  dcgan64-critic  the DCGAN 64x64 critic with BatchNorm (nc 3, ndf 64): 11 tensors, 2.77 M elements
  toy-mlp         the toy critic 2 -> 512 -> 512 -> 512 -> 1: 8 tensors, 0.53 M elements
  tiny-mlp        2 -> 16 -> 1: 4 tensors, 65 elements (all overhead: the Python side of each optimizer)
  500x1           500 tensors of one element (nothing but the host's cost per parameter)
Variants, one optimizer step + the clamp of every parameter (each variant steps its own copy of the parameters):
  loop                 torch.optim.RMSprop(foreach=False).step(); for p in params: p.data.clamp_(-c, c)
                       (the official WGAN code)
  foreach+clip_        torch.optim.RMSprop(foreach=True).step(); wgan_ext.clip_(params, c)
  foreach+foreach      torch.optim.RMSprop(foreach=True).step(); torch._foreach_clamp_min_ / _max_
  fused                wgan_ext.ClippedRMSprop(clip_value=c).step() (its cached launch plan: one op call)
  fused-list           the same with cache_plan=False (the lists passed to the op every step)
and the same five for Adam (torch.optim.Adam, wgan_ext.ClippedAdam; betas (0.5, 0.9) as the trainer's default).
The variants of one case are timed in alternating rounds (common.time_interleaved), so a drifting shared machine
slows them alike. "× foreach" is the ratio to foreach+foreach, the target's baseline (RMSprop(foreach=True) + a
separate clamp). GB/s counts the fused step's minimum traffic: param read+write, grad read, state read+write.

On a shared CPU, run it with OMP_NUM_THREADS=1: with 2 intra-op threads on 2 cores that other jobs also use,
torch's per-op OpenMP regions stall (measured here: torch's RMSprop step on the DCGAN critic 4 ms with 1 thread,
140 ms with 2 threads at load 5), which would flatter the fused step absurdly. The thread count is in the results.

    OMP_NUM_THREADS=1 python benchmarks/bench_fused_optim.py [--device cpu|cuda|all] [--quick] [--out DIR]
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import wgan_ext  # noqa: E402
from wgan_ext import _ops  # noqa: E402
from wgan_ext.train.models import DCGANCritic, MLPCritic  # noqa: E402

C = 0.01
LR = {"rmsprop": 5e-5, "adam": 1e-4}
BETAS = (0.5, 0.9)


def cases() -> dict[str, list[tuple[int, ...]]]:
    return {"dcgan64-critic": [tuple(p.shape) for p in DCGANCritic(64).parameters()],
            "toy-mlp": [tuple(p.shape) for p in MLPCritic(2).parameters()],
            "tiny-mlp": [tuple(p.shape) for p in MLPCritic(2, hidden=16, depth=1).parameters()],
            "500x1": [(1,)] * 500}


def make_params(shapes, device) -> list[torch.nn.Parameter]:
    """The same starting parameters and gradients for every variant (seeded)."""
    g = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter((torch.randn(s, generator=g) * 0.02).to(device))
        p.grad = torch.randn(s, generator=g).to(device)
        params.append(p)
    return params


def torch_optimizer(kind: str, params, foreach: bool):
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=LR[kind], foreach=foreach)
    return torch.optim.Adam(params, lr=LR[kind], betas=BETAS, foreach=foreach)


def fused_optimizer(kind: str, params, **plan):
    if kind == "rmsprop":
        return wgan_ext.ClippedRMSprop(params, lr=LR[kind], clip_value=C, impl="fused", **plan)
    return wgan_ext.ClippedAdam(params, lr=LR[kind], betas=BETAS, clip_value=C, impl="fused", **plan)


def variants(kind: str, shapes, device, fused: bool, clip_fused: bool) -> dict:
    out = {}

    params = make_params(shapes, device)
    opt = torch_optimizer(kind, params, foreach=False)

    def loop(opt=opt, params=params):
        opt.step()
        for p in params:
            p.data.clamp_(-C, C)

    out["loop"] = loop

    if clip_fused:
        params = make_params(shapes, device)
        opt = torch_optimizer(kind, params, foreach=True)

        def foreach_clip(opt=opt, params=params):
            opt.step()
            wgan_ext.clip_(params, C, impl="fused")

        out["foreach+clip_"] = foreach_clip

    params = make_params(shapes, device)
    opt = torch_optimizer(kind, params, foreach=True)

    def foreach_foreach(opt=opt, params=params):
        opt.step()
        with torch.no_grad():
            torch._foreach_clamp_min_(params, -C)
            torch._foreach_clamp_max_(params, C)

    out["foreach+foreach"] = foreach_foreach

    if fused:
        params = make_params(shapes, device)
        out["fused"] = fused_optimizer(kind, params).step
        if "cache_plan" in inspect.signature(wgan_ext.ClippedRMSprop).parameters:  # (compare_builds: older builds)
            params = make_params(shapes, device)
            out["fused-list"] = fused_optimizer(kind, params, cache_plan=False).step
    return out


def check_fused(kind: str, shapes, device) -> None:
    """Three fused steps must give what three official-loop steps give before any timing is believed."""
    ours = make_params(shapes, device)
    theirs = make_params(shapes, device)
    fused = fused_optimizer(kind, ours)
    plain = torch_optimizer(kind, theirs, foreach=False)
    for _ in range(3):
        fused.step()
        plain.step()
        for p in theirs:
            p.data.clamp_(-C, C)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-7,
                                   msg=lambda m: f"fused {kind} step differs from torch + clamp: {m}")


def run_device(device: str, quick: bool, out_dir: Path) -> Path:
    clip_fused = _ops.has_kernel("clip_", device)
    min_run_time = 0.3 if quick else 6.0
    rows = []
    for case, shapes in cases().items():
        n_elem = sum(torch.Size(s).numel() for s in shapes)
        for kind in ("rmsprop", "adam"):
            op = "rmsprop_clip_step_" if kind == "rmsprop" else "adam_clip_step_"
            fused = _ops.has_kernel(op, device)
            if fused:
                check_fused(kind, shapes, device)
            timings = common.time_interleaved(variants(kind, shapes, device, fused, clip_fused), device,
                                              min_run_time=min_run_time, rounds=5 if quick else 15)
            loop_us, foreach_us = timings["loop"]["median_us"], timings["foreach+foreach"]["median_us"]
            # Minimum traffic of one step: param r+w, grad r, state r+w (RMSprop: square_avg; Adam: two states).
            states = 1 if kind == "rmsprop" else 2
            nbytes = n_elem * 4 * (3 + 2 * states)
            for name, t in timings.items():
                rows.append({
                    "case": case, "optimizer": kind, "variant": name, "tensors": len(shapes), "elements": n_elem,
                    "median_us": t["median_us"], "iqr_us": t["iqr_us"], "measurements": t["measurements"],
                    "vs_loop": loop_us / t["median_us"], "vs_foreach": foreach_us / t["median_us"],
                    "gb_per_s": nbytes / (t["median_us"] * 1e-6) / 1e9,
                })
            if not fused:
                rows.append({"case": case, "optimizer": kind, "variant": "fused (no compiled kernel for this device)"})
    columns = [("case", "case", ""), ("optimizer", "optimizer", ""), ("variant", "variant", ""),
               ("tensors", "tensors", "d"), ("elements", "elements", ",d"), ("median_us", "median µs", ".1f"),
               ("iqr_us", "IQR µs", ".1f"), ("vs_loop", "× loop", ".2f"), ("vs_foreach", "× foreach", ".2f"),
               ("gb_per_s", "GB/s", ".1f")]
    table = common.markdown_table(rows, columns)
    env = common.environment(device)
    settings = {"c": C, "lr": LR, "adam_betas": list(BETAS), "dtype": "float32", "quick": quick,
                "min_run_time_s": min_run_time, "cpu_threads": torch.get_num_threads(),
                "timing": "common.time_interleaved (alternating rounds)",
                "vs_foreach_note": "× foreach = foreach+foreach median / variant median (RMSprop/Adam foreach=True + "
                                   "torch._foreach_clamp_min_/max_)"}
    _, md_path = common.write_results("fused_optim", device, env, settings, rows, table, out_dir)
    return md_path


def main(argv=None) -> int:
    return common.run_cli(__doc__.splitlines()[0], run_device, argv)


if __name__ == "__main__":
    sys.exit(main())
