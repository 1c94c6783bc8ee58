"""Benchmark of spectral normalization: its overhead per training forward of a critic, torch's parametrization vs
wgan_ext.apply_spectral_norm (one batched power iteration for all layers).

Overhead = (training-mode forward with SN) - (forward of the same critic without SN), per forward; and "SN weights
only": computing every layer's normalized weight (power iteration, sigma, division) without the layers' own work.
On the CPU the overhead also holds the convolutions' extra cost on a freshly computed weight, the same for both.
Critics:
  toy-mlp   2 -> 512 -> 512 -> 512 -> 1 (ReLU), batch 256
  dcgan64   the DCGAN 64x64 critic without BatchNorm, ndf 64, batch 64 (CPU: batch 8)
Variants (timed in alternating rounds): plain (no SN), torch (torch.nn.utils.parametrizations.spectral_norm on every
layer), wgan_ext (apply_spectral_norm). Also reported: operator calls (CPU) or kernel launches (CUDA) per forward
from torch.profiler.

    python benchmarks/bench_spectral_norm.py [--device cpu|cuda|all] [--quick] [--out DIR]
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_gradient_penalty import dcgan64_critic, toy_mlp_critic  # noqa: E402

import wgan_ext  # noqa: E402
from wgan_ext import _ops  # noqa: E402


def with_torch_sn(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    torch.manual_seed(1)  # the same initial u, v as with_our_sn
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            torch_spectral_norm(m)
    return model


def with_our_sn(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    torch.manual_seed(1)
    wgan_ext.apply_spectral_norm(model)
    return model


def weights_only(model: nn.Module):
    """What spectral norm itself costs per training forward: every layer's normalized weight (with the batched
    power iteration where wgan_ext's group runs it), without the layers' own computation."""
    layers = [m for m in model.modules() if parametrize.is_parametrized(m)]
    group_hooks = list(model._forward_pre_hooks.values())

    def run():
        for hook in group_hooks:
            hook(model, ())
        for m in layers:
            m.weight
    return run


def events_per_forward(model, x, device) -> int:
    """Kernel launches (CUDA) or top-level operator calls (CPU) of one training forward, from torch.profiler."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.no_grad(), profile(activities=activities) as prof:
        model(x)
        if device == "cuda":
            torch.cuda.synchronize()
    if device == "cuda":
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(1 for e in prof.events() if e.cpu_parent is None and e.name.startswith(("aten::", "wgan_ext::")))


def run_device(device: str, quick: bool, out_dir: Path) -> Path:
    fused = _ops.has_kernel("spectral_norm_power_iteration_", device)
    cases = [("toy-mlp", toy_mlp_critic, (64 if quick else 256, 2)),
             ("dcgan64", dcgan64_critic, (2 if quick else (64 if device == "cuda" else 8), 3, 64, 64))]
    rows = []
    for case, build, shape in cases:
        torch.manual_seed(0)
        base = build().to(device).train()
        x = torch.randn(*shape, device=device)
        models = {"plain": base, "torch": with_torch_sn(base)}
        if fused:
            models["wgan_ext"] = with_our_sn(base)
            with torch.no_grad():  # same u, v, same update: the outputs must agree before timings mean anything
                torch.testing.assert_close(models["wgan_ext"](x), models["torch"](x), rtol=1e-3, atol=1e-4)
        fns = {name: (lambda m=m: m(x)) for name, m in models.items()}
        with torch.no_grad():
            timings = common.time_interleaved(fns, device, (0.3 if quick else 3.0) * len(fns))
            sn_only = common.time_interleaved({n: weights_only(m) for n, m in models.items() if n != "plain"},
                                              device, (0.2 if quick else 2.0) * (len(models) - 1))
        plain_us = timings["plain"]["median_us"]
        overhead = {n: t["median_us"] - plain_us for n, t in timings.items()}
        for name, t in timings.items():
            sn_us = sn_only[name]["median_us"] if name in sn_only else None
            rows.append({"case": case, "variant": name, "batch": shape[0], "forward_us": t["median_us"],
                         "iqr_us": t["iqr_us"], "sn_overhead_us": overhead[name] if name != "plain" else None,
                         "overhead_vs_torch": (overhead["torch"] / overhead[name]
                                               if name == "wgan_ext" and overhead[name] > 0 else None),
                         "sn_weights_us": sn_us,
                         "sn_weights_vs_torch": (sn_only["torch"]["median_us"] / sn_us
                                                 if name == "wgan_ext" else None),
                         "events": events_per_forward(models[name], x, device)})
        if not fused:
            rows.append({"case": case, "variant": "wgan_ext (no compiled kernel for this device)"})
    ev = "kernel launches" if device == "cuda" else "operator calls"
    columns = [("case", "critic", ""), ("variant", "variant", ""), ("batch", "batch", "d"),
               ("forward_us", "forward µs", ".1f"), ("iqr_us", "IQR µs", ".1f"),
               ("sn_overhead_us", "SN overhead µs", ".1f"), ("overhead_vs_torch", "torch overhead / ours", ".2f"),
               ("sn_weights_us", "SN weights only µs", ".1f"), ("sn_weights_vs_torch", "torch / ours", ".2f"),
               ("events", f"{ev} per forward", "d")]
    table = common.markdown_table(rows, columns)
    settings = {"quick": quick, "overhead": "training-mode forward with SN minus plain forward, medians",
                "events": ev}
    _, md_path = common.write_results("spectral_norm", device, common.environment(device), settings, rows, table,
                                      out_dir)
    return md_path


def main(argv=None) -> int:
    return common.run_cli(__doc__.splitlines()[0], run_device, argv)


if __name__ == "__main__":
    sys.exit(main())
