"""Benchmark of spectral normalization: its overhead per training forward (and forward + backward) of a critic,
torch's parametrization vs wgan_ext.apply_spectral_norm (one batched power iteration and one batched normalize,
sigma and W / sigma, for all layers; one batched backward).

Overhead = (training-mode forward with SN) - (forward of the same critic without SN), per forward; the same for a
forward + backward (the critic's mean output, gradients of its parameters); and "SN weights only": computing every
layer's normalized weight (power iteration, sigma, division) without the layers' own work.
On the CPU the overhead also holds the convolutions' extra cost on a freshly computed weight, the same for both.
Critics:
  tiny-mlp  2 -> 16 -> 16 -> 16 -> 1 (ReLU), batch 8: almost no arithmetic, so its rows are the host's cost per
            forward (Python, dispatch, allocation), which bounds an eager critic on a GPU whatever the kernels do
  toy-mlp   2 -> 512 -> 512 -> 512 -> 1 (ReLU), batch 256
  dcgan64   the DCGAN 64x64 critic without BatchNorm, ndf 64, batch 64 (CPU: batch 8)
Variants (timed in alternating rounds): plain (no SN), torch (torch.nn.utils.parametrizations.spectral_norm on every
layer), wgan_ext (apply_spectral_norm). Also reported: operator calls (CPU) or kernel launches (CUDA) per forward,
from torch.profiler, and the operator calls that compute something per backward (about one launch each on a GPU).

A second table times the power iteration alone (one iteration over every layer's weight matrix: torch's per-layer
mv + normalize twice, as its parametrization runs it, against wgan_ext's one op call) on the layers of both critics
and on a large case (4 layers of 1024 x 8192), with the achieved bandwidth (each weight read twice) and, on CUDA,
its fraction of the copy bandwidth measured on the same bytes (where they are >= 32 MiB: below that a copy is
launch-bound, not a roofline).

    python benchmarks/bench_spectral_norm.py [--device cpu|cuda|all] [--quick] [--out DIR]
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_gradient_penalty import dcgan64_critic, toy_mlp_critic  # noqa: E402

import wgan_ext  # noqa: E402
from wgan_ext import _ops  # noqa: E402
from wgan_ext.train.models import MLPCritic  # noqa: E402


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
    with torch.no_grad():
        return common.events_per_call(lambda: model(x), device)


def ops_per_backward(model, x) -> int:
    """Operator calls that compute something in the backward of one training forward's mean output (the profiler
    puts the backward's ops under the autograd engine's nodes, so they are counted by dispatch instead)."""
    loss = model(x).mean()
    return common.count_compute_ops(lambda: loss.backward())


def train_step(model, x):
    """Forward and backward of the critic's mean output (gradients dropped each time, as zero_grad does)."""
    def run():
        for p in model.parameters():
            p.grad = None
        model(x).mean().backward()
    return run


def matrices(model: nn.Module) -> list[tuple[int, int]]:
    """The (out, rest) shapes of the weight matrices spectral norm iterates on, layer by layer."""
    return [(m.weight.shape[0], m.weight[0].numel()) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def power_iteration_rows(device: str, quick: bool, fused: bool) -> list[dict]:
    cases = {"toy-mlp layers": matrices(toy_mlp_critic()), "dcgan64 layers": matrices(dcgan64_critic()),
             "large": [(64, 512)] * 4 if quick else [(1024, 8192)] * 4}
    rows = []
    for case, shapes in cases.items():
        if case == "large":
            case = f"large ({len(shapes)} x {shapes[0][0]}x{shapes[0][1]})"
        torch.manual_seed(0)
        ws = [torch.randn(s, device=device) for s in shapes]
        us = [F.normalize(torch.randn(s[0], device=device), dim=0) for s in shapes]
        vs = [F.normalize(torch.randn(s[1], device=device), dim=0) for s in shapes]

        def torch_pi():  # torch's parametrization: u = normalize(W v), v = normalize(W^T u), per layer
            for w, u, v in zip(ws, us, vs):
                F.normalize(torch.mv(w, v), dim=0, eps=1e-12, out=u)
                F.normalize(torch.mv(w.t(), u), dim=0, eps=1e-12, out=v)

        fns = {"torch": torch_pi}
        if fused:  # from the same u, v both must give the same u, v before the timings mean anything
            start = [t.clone() for t in us + vs]
            torch_pi()
            want = [t.clone() for t in us + vs]
            for t, s0 in zip(us + vs, start):
                t.copy_(s0)
            torch.ops.wgan_ext.spectral_norm_power_iteration_(ws, us, vs, 1, 1e-12)
            for got, w in zip(us + vs, want):
                torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-5)
            fns["wgan_ext"] = lambda: torch.ops.wgan_ext.spectral_norm_power_iteration_(ws, us, vs, 1, 1e-12)
        with torch.no_grad():
            timed = common.time_interleaved(fns, device, (0.2 if quick else 2.0) * len(fns))
        nbytes = sum(w.numel() * w.element_size() for w in ws)
        copy_gbs = (common.measure_copy_bandwidth(2 * nbytes, device, 0.2 if quick else 1.0)
                    if device == "cuda" and (2 * nbytes >= 32 * 2**20 or quick) else None)
        for name, t in timed.items():
            gbs = 2 * nbytes / (t["median_us"] * 1e-6) / 1e9
            rows.append({"table": "power_iteration", "case": case, "variant": name, "layers": len(ws),
                         "elements": sum(w.numel() for w in ws), "median_us": t["median_us"], "iqr_us": t["iqr_us"],
                         "vs_torch": timed["torch"]["median_us"] / t["median_us"], "gb_per_s": gbs,
                         "copy_gb_per_s": copy_gbs, "of_copy_bw": gbs / copy_gbs if copy_gbs else None})
    return rows


def run_device(device: str, quick: bool, out_dir: Path) -> Path:
    fused = _ops.has_kernel("spectral_norm_power_iteration_", device)
    cases = [("tiny-mlp", lambda: MLPCritic(2, hidden=16), (8, 2)),
             ("toy-mlp", toy_mlp_critic, (64 if quick else 256, 2)),
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
        steps = common.time_interleaved({n: train_step(m, x) for n, m in models.items()}, device,
                                        (0.3 if quick else 3.0) * len(models))
        plain_us = timings["plain"]["median_us"]
        overhead = {n: t["median_us"] - plain_us for n, t in timings.items()}
        step_overhead = {n: t["median_us"] - steps["plain"]["median_us"] for n, t in steps.items()}
        for name, t in timings.items():
            sn_us = sn_only[name]["median_us"] if name in sn_only else None
            rows.append({"case": case, "variant": name, "batch": shape[0], "forward_us": t["median_us"],
                         "iqr_us": t["iqr_us"], "sn_overhead_us": overhead[name] if name != "plain" else None,
                         "overhead_vs_torch": (overhead["torch"] / overhead[name]
                                               if name == "wgan_ext" and overhead[name] > 0 else None),
                         "sn_weights_us": sn_us,
                         "sn_weights_vs_torch": (sn_only["torch"]["median_us"] / sn_us
                                                 if name == "wgan_ext" else None),
                         "step_us": steps[name]["median_us"],
                         "step_overhead_us": step_overhead[name] if name != "plain" else None,
                         "step_overhead_vs_torch": (step_overhead["torch"] / step_overhead[name]
                                                    if name == "wgan_ext" and step_overhead[name] > 0 else None),
                         "events": events_per_forward(models[name], x, device),
                         "ops_backward": ops_per_backward(models[name], x)})
        if not fused:
            rows.append({"case": case, "variant": "wgan_ext (no compiled kernel for this device)"})
    ev = "kernel launches" if device == "cuda" else "operator calls"
    columns = [("case", "critic", ""), ("variant", "variant", ""), ("batch", "batch", "d"),
               ("forward_us", "forward µs", ".1f"), ("iqr_us", "IQR µs", ".1f"),
               ("sn_overhead_us", "SN overhead µs", ".1f"), ("overhead_vs_torch", "torch overhead / ours", ".2f"),
               ("sn_weights_us", "SN weights only µs", ".1f"), ("sn_weights_vs_torch", "torch / ours", ".2f"),
               ("step_us", "fwd+bwd µs", ".1f"), ("step_overhead_us", "SN overhead fwd+bwd µs", ".1f"),
               ("step_overhead_vs_torch", "torch / ours (fwd+bwd)", ".2f"),
               ("events", f"{ev} per forward", "d"), ("ops_backward", "compute ops per backward", "d")]
    table = common.markdown_table(rows, columns)
    pi_rows = power_iteration_rows(device, quick, fused)
    table += "\n\nPower iteration alone (one iteration, every layer):\n\n" + common.markdown_table(pi_rows, [
        ("case", "weights", ""), ("variant", "variant", ""), ("layers", "layers", "d"), ("elements", "elements", ",d"),
        ("median_us", "median µs", ".1f"), ("iqr_us", "IQR µs", ".1f"), ("vs_torch", "× torch", ".2f"),
        ("gb_per_s", "GB/s (W read twice)", ".1f"), ("of_copy_bw", "of copy BW", ".0%")])
    rows += pi_rows
    settings = {"quick": quick, "overhead": "training-mode forward with SN minus plain forward, medians",
                "step_overhead": "forward + backward of the mean output with SN minus without, medians",
                "events": ev, "power_iteration": "one iteration over all layers; GB/s counts each weight read twice; "
                                                 "of copy BW = that / dst.copy_(src) GB/s on the same bytes (CUDA)"}
    _, md_path = common.write_results("spectral_norm", device, common.environment(device), settings, rows, table,
                                      out_dir)
    return md_path


def main(argv=None) -> int:
    return common.run_cli(__doc__.splitlines()[0], run_device, argv)


if __name__ == "__main__":
    sys.exit(main())
