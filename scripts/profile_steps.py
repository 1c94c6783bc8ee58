"""Where a critic step's time goes: torch.profiler tables of one WGAN-GP critic step (plain recipe against
wgan_ext.gradient_penalty), one spectral-norm critic forward (torch's parametrization against apply_spectral_norm)
and one trainer iteration (eager, and with --cuda-graphs on CUDA), on the toy MLP and the DCGAN-64 critic.

For the speed targets that missed on the GPU (issue 7): per variant, the number of kernel launches (CUDA) or operator
calls (CPU), the device and host time, and the ops that take most of it. scripts/gpu_check.sh runs it on CUDA.

    python scripts/profile_steps.py [--device cpu|cuda] [--steps N] [--rows K]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_gradient_penalty as gp  # noqa: E402
import bench_spectral_norm as sn  # noqa: E402

import wgan_ext  # noqa: E402,F401  (loads the ops)


def profile_fn(label: str, fn, device: str, steps: int, rows: int) -> None:
    for _ in range(3):  # warm-up (cuBLAS handles, autograd buffers, graph capture)
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    if device == "cuda":
        launches = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / steps
        device_us = sum(e.device_time_total for e in prof.key_averages() if e.device_type
                        == torch.autograd.DeviceType.CUDA) / steps
        what = f"{launches:.0f} kernel launches, {device_us:.0f} µs of kernel time"
    else:
        calls = sum(1 for e in events if e.cpu_parent is None and e.name.startswith(("aten::", "wgan_ext::")))
        what = f"{calls / steps:.0f} top-level operator calls"
    host_us = max(e.time_range.end for e in events) - min(e.time_range.start for e in events)
    print(f"\n=== {label}: per call {what}; {host_us / steps:.0f} µs wall (profiled)")
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=60))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10, help="profiled calls per variant")
    parser.add_argument("--rows", type=int, default=12, help="ops listed per variant")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = parser.parse_args(argv)
    device, steps, rows = args.device, args.steps, args.rows
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
    for case, build, shape in gp.cases(device, args.quick):
        torch.manual_seed(0)
        critic = build().to(device)
        opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
        real, fake = torch.randn(*shape, device=device), torch.randn(*shape, device=device)
        for name, pen in (("plain recipe", gp.plain_penalty), ("wgan_ext.gradient_penalty", gp.fused_penalty)):
            profile_fn(f"GP critic step, {case}, batch {shape[0]}, {name}", gp.make_step(critic, opt, real, fake, pen),
                       device, steps, rows)
        base = build().to(device).train()
        x = torch.randn(*shape, device=device)
        for name, model in (("torch spectral_norm", sn.with_torch_sn(base)), ("wgan_ext", sn.with_our_sn(base))):
            with torch.no_grad():
                profile_fn(f"SN critic forward, {case}, batch {shape[0]}, {name}", lambda m=model: m(x), device,
                           steps, rows)
    from wgan_ext.train.config import TrainConfig, resolve
    from wgan_ext.train import Trainer

    for mode in ("clip", "gp", "sn"):
        for graphed in ((False, True) if device == "cuda" else (False,)):
            t = Trainer(resolve(TrainConfig(lipschitz=mode, iters=1, device=device, out=None, progress=False,
                                            tensorboard=False, plots=False, cuda_graphs="on" if graphed else "off",
                                            **({"batch_size": 32, "hidden": 32} if args.quick else {}))))
            if graphed:  # past the eager warm-ups and both captures: the profiled calls replay
                for _ in range(t.critic_graph.warmup + 1):
                    t.iteration_step()
            profile_fn(f"trainer iteration, toy MLP, {mode}{', --cuda-graphs' if graphed else ''}", t.iteration_step,
                       device, max(1, steps // 5), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
