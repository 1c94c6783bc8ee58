"""Benchmark of the gradient penalty: one WGAN-GP critic step, the plain recipe vs wgan_ext.gradient_penalty.

A critic step is what Algorithm 1 of WGAN-GP runs n_critic times per generator step: critic forward on real and
fake, the penalty (interpolates, create_graph gradient, norms, mean), backward, Adam step. Critics:
  toy-mlp     2 -> 512 -> 512 -> 512 -> 1 (ReLU), batch 256 (the WGAN-GP toy script)
  dcgan64     the DCGAN 64x64 critic without BatchNorm (LeakyReLU 0.2), ndf 64, batch 64 (CPU: batch 8)
Variants (timed in alternating rounds, so a drifting shared machine slows both alike):
  plain       the usual code: torch.rand per sample, interpolation, autograd.grad, .norm(2, dim=1), (n-1)^2 mean
  fused       wgan_ext.gradient_penalty(critic, real, fake) (impl="fused")

    python benchmarks/bench_gradient_penalty.py [--device cpu|cuda|all] [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import wgan_ext  # noqa: E402
from wgan_ext import _ops  # noqa: E402
from wgan_ext.train.models import DCGANCritic, MLPCritic  # noqa: E402

LAMBDA = 10.0


def toy_mlp_critic() -> nn.Module:
    return MLPCritic(2)


def dcgan64_critic() -> nn.Module:
    return DCGANCritic(64, norm="none")


def plain_penalty(critic, real, fake):
    alpha = torch.rand(real.shape[0], device=real.device).view(-1, *([1] * (real.dim() - 1)))
    x_hat = (real + alpha * (fake - real)).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return LAMBDA * ((grad.reshape(grad.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()


def fused_penalty(critic, real, fake):
    return wgan_ext.gradient_penalty(critic, real, fake, weight=LAMBDA, impl="fused")


def make_step(critic, opt, real, fake, penalty):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = critic(fake).mean() - critic(real).mean() + penalty(critic, real, fake)
        loss.backward()
        opt.step()
    return step


def cases(device: str, quick: bool):
    toy_batch = 64 if quick else 256
    dc_batch = 2 if quick else (64 if device == "cuda" else 8)
    yield "toy-mlp", toy_mlp_critic, (toy_batch, 2)
    yield "dcgan64", dcgan64_critic, (dc_batch, 3, 64, 64)


def run_device(device: str, quick: bool, out_dir: Path) -> Path:
    fused = _ops.has_kernel("gradient_norm_penalty", device)
    min_run_time = 0.1 if quick else 2.0
    rows = []
    for case, build, shape in cases(device, quick):
        torch.manual_seed(0)
        critic = build().to(device)
        opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
        real, fake = torch.randn(*shape, device=device), torch.randn(*shape, device=device)
        # Same alpha in both: the two penalties must agree before their timings mean anything.
        g = torch.Generator(device).manual_seed(3)
        alpha = torch.rand(shape[0], device=device, generator=g)
        variants = {"plain": plain_penalty}
        if fused:
            a = alpha.view(-1, *([1] * (real.dim() - 1)))
            x_hat = (real + a * (fake - real)).requires_grad_(True)
            (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
            expected = LAMBDA * ((grad.reshape(shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
            got = wgan_ext.gradient_penalty(critic, real, fake, weight=LAMBDA, alpha=alpha, impl="fused")
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
            variants["fused"] = fused_penalty
        steps = {name: make_step(critic, opt, real, fake, pen) for name, pen in variants.items()}
        timings = common.time_interleaved(steps, device, min_run_time * len(steps))
        plain_us = timings["plain"]["median_us"]
        count = (lambda f: common.events_per_call(f, device)) if device == "cuda" else common.count_compute_ops
        events = {name: count(step) for name, step in steps.items()}
        for name, t in timings.items():
            rows.append({"case": case, "variant": name, "batch": shape[0], "median_us": t["median_us"],
                         "iqr_us": t["iqr_us"], "measurements": t["measurements"],
                         "vs_plain": plain_us / t["median_us"], "events": events[name],
                         # were the step launch-bound, fusing could speed it up by no more than this
                         "launch_bound_limit": events["plain"] / events[name]})
        if not fused:
            rows.append({"case": case, "variant": "fused (no compiled kernel for this device)"})
    columns = [("case", "critic", ""), ("variant", "variant", ""), ("batch", "batch", "d"),
               ("median_us", "critic step µs", ".1f"), ("iqr_us", "IQR µs", ".1f"), ("vs_plain", "× plain", ".2f"),
               ("events", "kernel launches per step" if device == "cuda" else "compute ops per step", "d"),
               ("launch_bound_limit", "plain / ours calls", ".3f")]
    table = common.markdown_table(rows, columns)
    env = common.environment(device)
    settings = {"lambda": LAMBDA, "optimizer": "Adam(1e-4, betas=(0.5, 0.9))", "quick": quick,
                "min_run_time_s": min_run_time,
                "events": "per critic step: kernel launches (CUDA, torch.profiler) or ATen ops that compute, backward "
                          "included (CPU, a dispatch mode); plain / ours bounds the speed-up fusion can give a "
                          "launch-bound step"}
    _, md_path = common.write_results("gradient_penalty", device, env, settings, rows, table, out_dir)
    return md_path


def main(argv=None) -> int:
    return common.run_cli(__doc__.splitlines()[0], run_device, argv)


if __name__ == "__main__":
    sys.exit(main())
