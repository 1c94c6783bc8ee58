"""End-to-end WGAN training throughput: generator iterations per second of a whole training loop, in each mode,
with wgan_ext's drop-ins against the pure-PyTorch loop a user would otherwise run, measured in the same run.

One generator iteration = n_critic (5) critic steps, then one generator step, on batches drawn from a fixed pool
of data already on the device (so data loading is not what is timed). Both loops build the same models from the
same seed and use the same optimizers:

  clip  torch     the official WGAN loop: RMSprop(5e-5); before each critic step
                  ``for p in critic.parameters(): p.data.clamp_(-c, c)``
        wgan_ext  the same loop with ``wgan_ext.clip_(critic.parameters(), c)`` (one fused pass)
        + fused optimizer rows where wgan_ext has one (``wgan_ext.ClippedRMSprop``: the step clamps)
  gp    torch     the standard recipe: per-sample alpha, autograd.grad(create_graph=True), ((norm - 1) ** 2).mean()
        wgan_ext  ``wgan_ext.gradient_penalty(critic, real, fake)``
  sn    torch     ``torch.nn.utils.parametrizations.spectral_norm`` on every Linear / Conv layer of the critic
        wgan_ext  ``wgan_ext.apply_spectral_norm(critic)`` (one batched power iteration per forward)
  *     trainer   the trainer's own iteration (``Trainer._step``, metrics read back every --log-every iterations)
  *     trainer+cuda-graphs   the same with ``--cuda-graphs`` (CUDA only: each step replayed as a graph)
  *     trainer bf16 ...      resnet32: ``--precision bf16`` (autocast), + ``--channels-last``, + CUDA graphs
  clip  compile   the torch loop with ``torch.compile(mode="reduce-overhead")`` on generator and critic
  sn              (--compile; CUDA graphs of the compiled code on CUDA, ``torch.compiler.cudagraph_mark_step_begin``
                  before every step). sn: the critic's one forward per critic step runs on real and fake together
                  (``torch.cat``), since with torch's spectral_norm parametrization, which updates u and v in place
                  in every training forward, a compiled critic's backward after two forwards fails with a
                  version-counter error (torch 2.11 and 2.14); one power iteration per critic step, as wgan_ext's
                  SN does. Not for gp: torch.compile does not support the penalty's double backward.

Cases: toy-mlp (2-D data, MLP 3 x 512, batch 256 as the WGAN-GP toy script), dcgan64 (3 x 64 x 64, DCGAN
generator and critic with ngf = ndf = 64, batch 64; critic normalization as the trainer's defaults: batch for clip,
layer for gp, none for sn) and resnet32 (gp and sn: the ResNets of WGAN-GP / SN-GAN at 32 px, ngf 128 (sn 256), ndf
128, batch 64, synthetic 3 x 32 x 32 images; trainer rows in fp32, bf16, and on CUDA bf16 + channels_last, with and
without CUDA graphs). "real images (samples)/s" = generator it/s x n_critic x batch. Variants are timed in
alternating rounds (common.time_interleaved).

    python benchmarks/bench_train.py [--device cpu|cuda|all] [--quick] [--compile] [--cases A,B] [--name STEM]
                                     [--out DIR]

--name STEM writes STEM-<device>.json / .md instead of train-<device>.* (scripts/gpu_check.sh runs the toy case
with --compile as a run of its own, train_compile, so that compiling cannot cost the main run its rows).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import wgan_ext  # noqa: E402
from wgan_ext.train.models import DCGANCritic, DCGANGenerator, MLPCritic, MLPGenerator, dcgan_init_  # noqa: E402
from wgan_ext.train.resnet import ResNetCritic, ResNetGenerator  # noqa: E402

N_CRITIC = 5
CLIP = 0.01
POOL = 8  # batches in the data pool


CASES = ("toy-mlp", "dcgan64", "resnet32")
CASE_MODES = {"toy-mlp": ("clip", "gp", "sn"), "dcgan64": ("clip", "gp", "sn"), "resnet32": ("gp", "sn")}


def case_settings(case: str, quick: bool) -> dict:
    if case == "toy-mlp":
        return dict(batch=32 if quick else 256, hidden=32 if quick else 512)
    if case == "resnet32":  # WGAN-GP's CIFAR-10 ResNet (ngf = ndf = 128; sn: SN-GAN's ngf 256), batch 64
        return dict(batch=4 if quick else 64, ndf=8 if quick else 128, size=32)
    return dict(batch=4 if quick else 64, width=8 if quick else 64, size=32 if quick else 64)


def resnet_ngf(mode: str, quick: bool) -> int:
    return 8 if quick else (256 if mode == "sn" else 128)


def build(case: str, mode: str, quick: bool, device: str, seed: int = 0):
    """(generator, critic, data pool (POOL, B, ...), nz) for a case and mode."""
    s = case_settings(case, quick)
    torch.manual_seed(seed)
    if case == "toy-mlp":
        nz = 2
        g, d = MLPGenerator(nz, (2,), hidden=s["hidden"]), MLPCritic((2,), hidden=s["hidden"])
        pool = torch.randn(POOL, s["batch"], 2)
    elif case == "resnet32":
        nz = 128
        g = ResNetGenerator(32, nz=nz, nc=3, ngf=resnet_ngf(mode, quick))
        d = ResNetCritic(32, nc=3, ndf=s["ndf"], pool="sum" if mode == "sn" else "mean")
        pool = torch.rand(POOL, s["batch"], 3, 32, 32) * 2 - 1
    else:
        nz = 100
        norm = {"clip": "batch", "gp": "layer", "sn": "none"}[mode]
        g = dcgan_init_(DCGANGenerator(s["size"], nz=nz, nc=3, ngf=s["width"]))
        d = dcgan_init_(DCGANCritic(s["size"], nc=3, ndf=s["width"], norm=norm))
        pool = torch.rand(POOL, s["batch"], 3, s["size"], s["size"]) * 2 - 1
    return g.to(device), d.to(device), pool.to(device), nz


def _torch_gp(critic, real, fake, weight=10.0):
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x = (real + alpha * (fake - real)).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return weight * ((norm - 1) ** 2).mean()


def _torch_sn(critic: nn.Module) -> nn.Module:
    for name, m in list(critic.named_modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            torch.nn.utils.parametrizations.spectral_norm(m)
    return critic


class Loop:
    """One training loop (a variant): ``step()`` runs one generator iteration."""

    def __init__(self, case: str, mode: str, variant: str, quick: bool, device: str):
        self.g, self.d, self.pool, self.nz = build(case, mode, quick, device)
        self.mode, self.variant, self.i = mode, variant, 0
        self.penalty = None
        if mode == "sn":
            if variant == "wgan_ext":
                wgan_ext.apply_spectral_norm(self.d)
            else:
                _torch_sn(self.d)
        self.compiled = variant == "compile"
        if self.compiled:
            self.g = torch.compile(self.g, mode="reduce-overhead")
            self.d = torch.compile(self.d, mode="reduce-overhead")
        if mode == "clip":
            self.opt_d = torch.optim.RMSprop(self.d.parameters(), lr=5e-5)
            self.opt_g = torch.optim.RMSprop(self.g.parameters(), lr=5e-5)
            if variant == "wgan_ext+fused-optim":
                self.opt_d = wgan_ext.ClippedRMSprop(self.d.parameters(), lr=5e-5, clip_value=CLIP)
        else:
            self.opt_d = torch.optim.Adam(self.d.parameters(), lr=1e-4, betas=(0.5, 0.9))
            self.opt_g = torch.optim.Adam(self.g.parameters(), lr=1e-4, betas=(0.5, 0.9))
        self.params_d = list(self.d.parameters())

    def batch(self) -> torch.Tensor:
        self.i = (self.i + 1) % POOL
        return self.pool[self.i]

    def critic_step(self) -> None:
        if self.mode == "clip":
            if self.variant in ("torch", "compile"):
                for p in self.params_d:
                    p.data.clamp_(-CLIP, CLIP)
            elif self.variant == "wgan_ext":
                wgan_ext.clip_(self.params_d, CLIP)
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        real = self.batch()
        with torch.no_grad():
            fake = self.g(torch.randn(real.shape[0], self.nz, device=real.device))
        if self.compiled and self.mode == "sn":  # one forward per step (see the module docstring)
            scores = self.d(torch.cat([fake, real]))
            loss = scores[:real.shape[0]].mean() - scores[real.shape[0]:].mean()
        else:
            loss = self.d(fake).mean() - self.d(real).mean()
        if self.mode == "gp":
            loss = loss + (wgan_ext.gradient_penalty(self.d, real, fake) if self.variant == "wgan_ext"
                           else _torch_gp(self.d, real, fake))
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()

    def step(self) -> None:
        for _ in range(N_CRITIC):
            self.critic_step()
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        for p in self.params_d:
            p.requires_grad_(False)
        loss = -self.d(self.g(torch.randn(self.pool.shape[1], self.nz, device=self.pool.device))).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        for p in self.params_d:
            p.requires_grad_(True)


def trainer_step(case: str, mode: str, quick: bool, device: str, cuda_graphs: bool = False,
                 precision: str = "fp32", channels_last: bool = False):
    """The trainer's own iteration on the same models and sizes, as train() runs it: the metrics stay on the device
    and are read back once per --log-every iterations. Data: its toy source, or its in-memory synthetic images."""
    trainer = build_trainer(case, mode, quick, device, cuda_graphs, precision, channels_last)
    if cuda_graphs:  # past the warm-up steps and both captures, so that every timed call replays
        for _ in range(trainer.critic_graph.warmup + 1):
            trainer.iteration_step()
        assert trainer.generator_graph.graph is not None and trainer.critic_graph.graph is not None
    pending = []

    def step():
        pending.append(trainer._step())
        if len(pending) == trainer.config.log_every:
            trainer._read(pending, trainer.iteration)
            pending.clear()

    return step


def build_trainer(case: str, mode: str, quick: bool, device: str, cuda_graphs: bool = False,
                  precision: str = "fp32", channels_last: bool = False):
    """A wgan_ext.train.Trainer for one case and mode, with the loops' models (tested: python_tests)."""
    from wgan_ext.train import Trainer
    from wgan_ext.train.config import TrainConfig, resolve

    s = case_settings(case, quick)
    common_kw = dict(lipschitz=mode, iters=1, device=device, progress=False, tensorboard=False, plots=False,
                     batch_size=s["batch"], out=None, cuda_graphs="on" if cuda_graphs else "off",
                     precision=precision, channels_last=channels_last, n_critic=N_CRITIC)
    if case == "toy-mlp":  # the loops' ReLU critic (sn's toy default is maxmin, which costs more per step)
        cfg = TrainConfig(dataset="8gaussians", hidden=s["hidden"], critic_activation="relu", **common_kw)
    elif case == "resnet32":
        cfg = TrainConfig(dataset="synthetic", image_size=32, channels=3, model="resnet", nz=128,
                          ngf=resnet_ngf(mode, quick), ndf=s["ndf"], lr_decay="none", **common_kw)
    else:
        cfg = TrainConfig(dataset="synthetic", image_size=s["size"], channels=3, model="dcgan", nz=100,
                          ngf=s["width"], ndf=s["width"], lr_decay="none", **common_kw)
    trainer = Trainer(resolve(cfg))
    trainer.generator.train()
    trainer.critic.train()
    return trainer


def variants_for(mode: str, compile_: bool) -> list[str]:
    out = ["torch", "wgan_ext"]
    if mode == "clip" and hasattr(wgan_ext, "ClippedRMSprop"):
        out.append("wgan_ext+fused-optim")
    if compile_ and mode in ("clip", "sn"):  # see the module docstring for gp
        out.append("compile")
    return out


def trainer_variants(case: str, device: str) -> dict[str, dict]:
    """The trainer rows of a case: name -> trainer_step options."""
    if case in ("toy-mlp", "dcgan64"):
        return {"trainer": {}, **({"trainer+cuda-graphs": {"cuda_graphs": True}} if device == "cuda" else {})}
    if case == "resnet32":
        out = {"trainer": {}, "trainer bf16": {"precision": "bf16"}}
        if device == "cuda":
            out["trainer bf16+channels-last"] = {"precision": "bf16", "channels_last": True}
            out["trainer bf16+channels-last+cuda-graphs"] = {"precision": "bf16", "channels_last": True,
                                                             "cuda_graphs": True}
        return out
    raise ValueError(f"unknown case {case!r}")


def run_device(device: str, quick: bool, out_dir: Path, compile_: bool = False, cases=CASES,
               stem: str = "train") -> None:
    env = common.environment(device)
    rows, failed = [], []
    settings = {"quick": quick, "n_critic": N_CRITIC, "compile": compile_,
                "cases": {c: case_settings(c, quick) for c in cases}}
    todo = [(case, mode) for case in cases for mode in CASE_MODES[case]]
    for i, (case, mode) in enumerate(todo):
        fns = {}
        for v in variants_for(mode, compile_):
            loop = Loop(case, mode, v, quick, device)
            if v == "compile":  # compiled here, before the timing; a failure is reported as a row
                try:
                    for _ in range(3):
                        loop.step()
                except Exception as e:  # noqa: BLE001
                    failed.append({"case": case, "mode": mode,
                                   "variant": f"{v} FAILED: {type(e).__name__}: {e}"[:300]})
                    continue
            fns[v] = loop.step
        for name, options in trainer_variants(case, device).items():
            try:  # a failure here must not cost the GPU run its other rows: it is reported as a row
                fns[name] = trainer_step(case, mode, quick, device, **options)
            except Exception as e:  # noqa: BLE001
                failed.append({"case": case, "mode": mode,
                               "variant": f"{name} FAILED: {type(e).__name__}: {e}"[:300]})
        min_time = 0.5 if quick else (6.0 if case == "toy-mlp" else 20.0)
        timed = common.time_interleaved(fns, device, min_run_time=min_time, rounds=3 if quick else 7)
        base = timed["torch"]["median_us"]
        batch = case_settings(case, quick)["batch"]
        for v, t in timed.items():
            it_per_s = 1e6 / t["median_us"]
            rows.append({"case": case, "mode": mode, "variant": v, **t, "it_per_s": it_per_s,
                         "real_per_s": it_per_s * N_CRITIC * batch, "vs_torch": base / t["median_us"]})
        # written after every case and mode, so that a run stopped at its time limit (a lent GPU's) keeps what is done
        left = [f"{c} {m}" for c, m in todo[i + 1:]]
        done = dict(settings, incomplete=f"not yet run: {', '.join(left)}") if left else settings
        write(out_dir, device, env, done, rows + failed, stem)


def write(out_dir: Path, device: str, env: dict, settings: dict, rows: list[dict], stem: str = "train") -> None:
    table = common.markdown_table(rows, [("case", "case", "s"), ("mode", "mode", "s"), ("variant", "variant", "s"),
                                         ("it_per_s", "generator it/s", ".3g"),
                                         ("real_per_s", "real images (samples)/s", ".4g"),
                                         ("iqr_us", "IQR (µs/it)", ".3g"), ("vs_torch", "× torch loop", ".2f")])
    if settings.get("incomplete"):
        table += f"\n\n**Incomplete: {settings['incomplete']}**"
    common.write_results(stem, device, env, settings, rows, table, out_dir)


def main(argv=None) -> int:
    def add_arguments(parser):
        parser.add_argument("--compile", action="store_true", help="add torch.compile variants of the torch loop")
        parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
        parser.add_argument("--name", default="train", help="file stem of the results (default: train)")

    def run(device, quick, out, args):
        cases = [c for c in args.cases.split(",") if c]
        unknown = sorted(set(cases) - set(CASES))
        if unknown:
            raise SystemExit(f"--cases: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
        if not args.name.replace("_", "").replace("-", "").isalnum():
            raise SystemExit(f"--name: {args.name!r}: letters, digits, '_' and '-' only")
        run_device(device, quick, out, args.compile, cases, args.name)

    return common.run_cli(__doc__.splitlines()[0], run, argv, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
