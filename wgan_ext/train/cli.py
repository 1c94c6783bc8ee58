"""The WGAN trainer: Algorithm 1 of the WGAN paper with the Lipschitz constraint as a choice.

    wgan-train                            the embedded default: 8 Gaussians, gradient penalty, about 2 minutes on
                                          2 CPU cores; prints where the run folder is
    wgan-train --lipschitz clip|gp|sn --dataset NAME --iters N --out DIR ...   (wgan-train --help lists all)
    wgan-train --config run.yaml          options from a YAML/TOML/JSON file; flags override it
    wgan-train --resume RUN_DIR           continue a run from its last checkpoint (bitwise on the CPU), in RUN_DIR
    wgan-train --device cuda --cuda-graphs   each critic and generator step replayed as a CUDA graph (graphs.py)
    python -m wgan_ext.train ...          the same
    torchrun --nproc_per_node N -m wgan_ext.train ...   data-parallel over N processes (see distributed.py: the
                                          batch is global, gradients are averaged, rank 0 alone writes the run folder)

In Python: ``Trainer(resolve(TrainConfig(...))).train()``. The trainer only uses the public drop-ins that users
put into their own loops: ``Clipper`` (clip), ``gradient_penalty`` (gp), ``apply_spectral_norm`` (sn).

Run folder: config.json (the resolved options), metrics.jsonl (one line per generator iteration), plots/ (W
estimate curve, losses, samples), checkpoints/last.pt (atomic), tb/ (TensorBoard events, when installed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import warnings

import torch
from torch import nn

from . import config as cfgmod
from . import distributed, graphs
from .checkpoint import FORMAT, LAST, CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .clip import Clipper
from .config import ConfigError, TrainConfig, resolve
from .data import TOY_DATASETS, Batches, DataError, image_data, toy_distribution
from .distributed import Distributed
from .gradient_penalty import gradient_penalty
from .models import DCGANCritic, DCGANGenerator, MLPCritic, MLPGenerator, dcgan_init_
from .optim import ClippedAdam, ClippedRMSprop
from .spectral_norm import apply_spectral_norm


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN/Inf; the last good checkpoint is kept."""


def pick_device(name: str) -> torch.device:
    """The training device; under torchrun with several processes, auto and cuda mean cuda:LOCAL_RANK."""
    _, world, local_rank = distributed.launch_info()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device: {name!r} asked for, but torch sees no CUDA device (use auto or cpu)")
    if device.type == "cuda" and world > 1:
        if device.index is not None:
            raise ConfigError(f"--device: {name!r}: under torchrun each process takes cuda:LOCAL_RANK; use --device "
                              f"cuda or auto (and CUDA_VISIBLE_DEVICES to choose the GPUs)")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} CUDA device(s): "
                              f"start at most that many processes per node")
        device = torch.device("cuda", local_rank)
    return device


def build_models(c: TrainConfig, shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """Generator and critic for a resolved config and a data sample shape."""
    if c.model == "mlp":
        return (MLPGenerator(c.nz, shape, hidden=c.hidden, depth=c.depth),
                MLPCritic(shape, hidden=c.hidden, depth=c.depth))
    nc = shape[0]
    g = DCGANGenerator(c.image_size, nz=c.nz, nc=nc, ngf=c.ngf, n_extra_layers=c.n_extra_layers,
                       batchnorm=c.g_batchnorm)
    d = DCGANCritic(c.image_size, nc=nc, ndf=c.ndf, n_extra_layers=c.n_extra_layers, norm=c.critic_norm)
    return dcgan_init_(g), dcgan_init_(d)


def build_data(c: TrainConfig):
    """(source for Batches, sample shape, the toy distribution or None)."""
    if c.dataset in TOY_DATASETS:
        dist = toy_distribution(c.dataset)
        return dist, (2,), dist
    data = image_data(c.dataset, root=c.data_root, image_size=c.image_size, channels=c.channels,
                      download=c.download)
    return data, tuple(data.shape), None


def _optimizer(c: TrainConfig, params, lr: float, clip_value: float | None = None) -> torch.optim.Optimizer:
    """The configured optimizer; with `clip_value`, its fused variant whose step also clamps (ClippedRMSprop /
    ClippedAdam, whose state_dicts are those of torch's RMSprop / Adam)."""
    if clip_value is not None:
        if c.optimizer == "rmsprop":
            return ClippedRMSprop(params, lr=lr, clip_value=clip_value)
        return ClippedAdam(params, lr=lr, betas=(c.beta1, c.beta2), clip_value=clip_value)
    if c.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=(c.beta1, c.beta2))


class Trainer:
    """One WGAN training run for a resolved config. ``train()`` runs to ``config.iters`` generator iterations."""

    def __init__(self, config: TrainConfig, resume_state: dict | None = None):
        self.config = c = config
        self.device = pick_device(c.device)
        # data-parallel: this process's rank and share of each global batch (everything below is the same on every
        # rank: seeds, models, data and noise streams; see distributed.py)
        self.dist = Distributed.current()
        self.share = self.dist.shard(c.batch_size)
        self.out = c.out
        torch.manual_seed(c.seed)
        source, self.shape, self.toy = build_data(c)
        self.generator, self.critic = build_models(c, self.shape)
        self.generator.to(self.device)
        self.critic.to(self.device)
        self.clipper = self.sn_group = None
        if c.lipschitz == "sn":
            self.sn_group = apply_spectral_norm(self.critic, n_power_iterations=c.sn_power_iterations)
        self.fused_clip = c.lipschitz == "clip" and c.fused_optimizer
        if c.cuda_graphs:
            graphs.check_supported(self.device, self.dist.world_size, self.fused_clip)
        self.opt_g = _optimizer(c, self.generator.parameters(), c.lr_g)
        self.opt_d = _optimizer(c, self.critic.parameters(), c.lr_d, c.clip_value if self.fused_clip else None)
        if c.lipschitz == "clip" and not self.fused_clip:
            self.clipper = Clipper(self.critic, c=c.clip_value, track_saturation=True)
            if c.clip_order == "after":
                self.clipper.attach(self.opt_d)
        self.batches = Batches(source, c.batch_size, seed=c.seed, device=self.device, num_workers=c.num_workers,
                               rank=self.dist.rank, world_size=self.dist.world_size)
        # noise and the penalty's alpha: their own generator on the training device, saved in checkpoints
        self.noise_rng = torch.Generator(self.device).manual_seed(c.seed + 1)
        fixed = torch.Generator().manual_seed(c.seed + 2)
        self.fixed_noise = torch.randn(c.n_samples, c.nz, generator=fixed)
        self.iteration = 0
        self.elapsed = 0.0
        self.last_checkpoint: str | None = None
        self._params_finite: list[bool] | None = None  # read with the metrics by iteration_step, for check_finite
        self._eval_noise: torch.Tensor | None = None
        if resume_state is not None:
            self._load_state(resume_state)
        # --cuda-graphs: both steps recorded once and replayed (graphs.py); capturable optimizers on the GPU
        self.critic_graph = self.generator_graph = None
        if c.cuda_graphs:
            capture = self.device.type == "cuda"
            self.critic_graph = graphs.GraphedStep(self._critic_update, capture=capture)
            self.generator_graph = graphs.GraphedStep(self._generator_update, capture=capture)
            if capture:
                for opt in (self.opt_d, self.opt_g):
                    graphs.prepare_optimizer(opt, tensor_lr=c.lr_decay != "none")
        # every replica starts from rank 0's parameters and buffers (SN's u, v included)
        for model in (self.generator, self.critic):
            self.dist.broadcast_state(model)

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"format": FORMAT, "config": self.config.to_dict(), "iteration": self.iteration,
                "elapsed": self.elapsed, "generator": self.generator.state_dict(),
                "critic": self.critic.state_dict(),
                # as the plain optimizers save it, whether or not --cuda-graphs made them capturable
                "opt_g": graphs.portable_state_dict(self.opt_g), "opt_d": graphs.portable_state_dict(self.opt_d),
                "data": self.batches.state_dict(),
                "noise_rng": self.noise_rng.get_state(), "noise_rng_device": self.noise_rng.device.type,
                "fixed_noise": self.fixed_noise, "rng": rng_state(),
                "sample_shape": list(self.shape),
                "torch_version": str(torch.__version__)}

    def _load_state(self, s: dict) -> None:
        self.generator.load_state_dict(s["generator"])
        self.critic.load_state_dict(s["critic"])
        self.opt_g.load_state_dict(s["opt_g"])
        self.opt_d.load_state_dict(s["opt_d"])
        self.batches.load_state_dict(s["data"])
        self._set_noise_state(s["noise_rng"], s.get("noise_rng_device"))
        self.fixed_noise = s["fixed_noise"]
        self.iteration = s["iteration"]
        self.elapsed = s["elapsed"]
        set_rng_state(s["rng"])

    def _set_noise_state(self, state: torch.Tensor, saved_on: str | None) -> None:
        """Restore the noise generator. A run resumed on another device type (--device may change on resume) cannot
        take the saved state (a CUDA generator's is not a CPU one's): its noise stream then goes on from a seed derived
        from the saved state, the same on every rank, and a warning says so."""
        here = self.noise_rng.device.type
        if saved_on in (None, here):
            try:
                self.noise_rng.set_state(state)
                return
            except RuntimeError:
                if saved_on is not None:
                    raise
        seed = int.from_bytes(hashlib.sha256(state.cpu().numpy().tobytes()).digest()[:8], "little") >> 1
        self.noise_rng.manual_seed(seed)
        warnings.warn(f"resuming on {here} a run whose noise generator was on {saved_on or 'another device'}: its "
                      f"state does not carry over, so the noise goes on from a seed derived from it (the run continues, but "
                      f"not with the noise the original device would have drawn)", RuntimeWarning, stacklevel=3)

    def save(self) -> str:
        path = os.path.join(self.out, LAST)
        save_checkpoint(self.state_dict(), path)
        self.last_checkpoint = path
        return path

    # ----------------------------------------------------------------------------------------------- steps
    def critic_iterations(self, it: int) -> int:
        """Critic iterations for generator iteration `it` (0-based)."""
        if self.config.diters_schedule == "official" and (it < 25 or it % 500 == 0):
            return 100
        return self.config.n_critic

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.nz, generator=self.noise_rng, device=self.device)

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch drawn identically on every rank (all of it in one process)."""
        return x[self.share] if self.dist.enabled else x

    def critic_step(self) -> dict:
        """One critic update. Its random inputs are drawn here, in this order: the data batch, the noise, the
        penalty's alphas (drawn explicitly only where they must be: several processes or a CUDA graph; they are then
        the values gradient_penalty would draw itself)."""
        c = self.config
        real = self.batches.next()  # this rank's share of the global batch
        noise = self._local(self._noise(c.batch_size))
        inputs = [real, noise]
        if c.lipschitz == "gp" and (self.dist.enabled or self.critic_graph is not None):
            inputs.append(self._local(torch.rand(c.batch_size, generator=self.noise_rng,
                                                 device=self.noise_rng.device)))
        if self.critic_graph is not None:
            return self.critic_graph(*inputs)
        return self._critic_update(*inputs)

    def _critic_update(self, real: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor | None = None) -> dict:
        """The critic update on given inputs (what --cuda-graphs records): no host synchronization in here."""
        c = self.config
        if self.clipper is not None and c.clip_order == "before":
            self.clipper()
        with torch.no_grad():
            fake = self.generator(noise)
        # means over the local share; the averaged gradient is that of the global mean (equal shares)
        w = self.critic(real).mean() - self.critic(fake).mean()
        loss = -w
        out = {}
        if c.lipschitz == "gp":
            # alpha: the global batch's, or None (gradient_penalty draws it from noise_rng); the penalty's inner
            # autograd.grad is local and plain (no DDP hooks), only the averaged .grad is shared
            penalty, norms = gradient_penalty(self.critic, real, fake, weight=c.gp_weight, one_sided=c.gp_one_sided,
                                              alpha=alpha, generator=self.noise_rng, return_norms=True)
            loss = loss + penalty
            out["gp"] = penalty.detach()
            out["grad_norms"] = norms
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients(self.critic.parameters())
        self.opt_d.step()  # the Clipper clamps here in the paper's order
        out["w_estimate"] = w.detach()
        out["loss_d"] = loss.detach()
        return out

    def generator_step(self) -> torch.Tensor:
        noise = self._local(self._noise(self.config.batch_size))
        if self.generator_graph is not None:
            return self.generator_graph(noise)
        return self._generator_update(noise)

    def _generator_update(self, noise: torch.Tensor) -> torch.Tensor:
        for p in self.critic.parameters():
            p.requires_grad_(False)
        try:
            loss = -self.critic(self.generator(noise)).mean()
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.dist.average_gradients(self.generator.parameters())
            self.opt_g.step()
        finally:
            for p in self.critic.parameters():
                p.requires_grad_(True)
        return loss.detach()

    def set_learning_rates(self) -> None:
        """The configured lr of both optimizers, scaled for the current iteration by --lr-decay (a function of the
        iteration alone, so a resumed run continues the same schedule)."""
        c = self.config
        scale = max(0.0, 1.0 - self.iteration / c.iters) if c.lr_decay == "linear" else 1.0
        for opt, lr in ((self.opt_d, c.lr_d), (self.opt_g, c.lr_g)):
            for group in opt.param_groups:
                graphs.set_lr(group, lr * scale)  # in place where a CUDA graph reads it

    def iteration_step(self) -> dict:
        """One generator iteration: n_critic critic steps, then one generator step. Returns its metrics."""
        if self.config.lr_decay != "none":
            self.set_learning_rates()
        d_iters = self.critic_iterations(self.iteration)
        for _ in range(d_iters):
            last = self.critic_step()
        loss_g = self.generator_step()
        if self.dist.enabled:
            # logged values are those of the global batch: means over the ranks (equal shares), all the norms
            keys = ["w_estimate", "loss_d"] + (["gp"] if "gp" in last else [])
            means = self.dist.mean(torch.stack([last[k].float() for k in keys] + [loss_g.float()]))
            last = {**last, **dict(zip(keys, means[:-1])), **(
                {"grad_norms": self.dist.gather(last["grad_norms"])} if "grad_norms" in last else {})}
            loss_g = means[-1]
            for model in (self.generator, self.critic):  # BatchNorm running stats: rank 0's everywhere
                self.dist.broadcast_state(model, buffers_of=_BATCHNORMS)
        # every logged number and the parameters' finiteness (for check_finite) in one device-to-host transfer: each
        # .item() would wait for the device, and a generator iteration logs up to a dozen numbers
        scalars = {"w_estimate": last["w_estimate"], "loss_d": last["loss_d"], "loss_g": loss_g}
        if "grad_norms" in last:
            n = last["grad_norms"].float()
            scalars.update(gp=last["gp"], grad_norm_mean=n.mean(),
                           grad_norm_std=n.std() if n.numel() > 1 else n.new_zeros(()), grad_norm_min=n.min(),
                           grad_norm_max=n.max())
        if self.clipper is not None:
            scalars["clip_saturation"] = self.clipper.saturation_tensor()
        elif self.fused_clip:
            scalars["clip_saturation"] = self._saturation()
        parts = [torch.stack([v.detach().reshape(()).double() for v in scalars.values()])]
        if self.sn_group is not None:
            parts.append(self.sn_group.sigma_tensor())
        parts.append(self._finite_flags().double())
        values = torch.cat([p.to(self.device) for p in parts]).tolist()
        m = {"iteration": self.iteration + 1, **dict(zip(scalars, values)), "critic_iters": d_iters}
        rest = values[len(scalars):]
        if self.sn_group is not None:
            sig, rest = rest[:len(self.sn_group.layers)], rest[len(self.sn_group.layers):]
            m.update(sigma_mean=sum(sig) / len(sig), sigma_min=min(sig), sigma_max=max(sig))
        self._params_finite = [bool(v) for v in rest]
        return m

    def _saturation(self) -> torch.Tensor:
        """Fraction of the critic's weights at a clip bound (with --fused-optimizer, whose step clamps), as a 0-dim
        float64 tensor (no synchronization)."""
        params = [p.detach() for p in self.critic.parameters()]
        total = sum(p.numel() for p in params)
        if not total:
            return torch.zeros((), dtype=torch.float64, device=self.device)
        return torch.stack([(p.abs() >= self.config.clip_value).sum() for p in params]).sum().double() / total

    def _named_parameters(self) -> list[tuple[str, str, torch.Tensor]]:
        return [(label, name, p) for label, model in (("critic", self.critic), ("generator", self.generator))
                for name, p in model.named_parameters()]

    def _finite_flags(self) -> torch.Tensor:
        """Per parameter of the critic, then of the generator: whether all its values are finite (no sync). amax and
        amin propagate NaN and reach +-inf, so two plain reductions decide it: 8x faster than isfinite(p).all(), which
        writes a temporary the size of p (measured: 0.18 against 1.5 ms per iteration for the toy MLPs, CPU)."""
        flags = []
        for _, _, p in self._named_parameters():
            p = p.detach()
            flags.append(torch.isfinite(torch.stack([p.amax(), p.amin()])).all() if p.numel()
                         else torch.ones((), dtype=torch.bool, device=p.device))
        return torch.stack(flags)

    def check_finite(self, m: dict) -> None:
        """Raise TrainingDiverged when a metric or parameter is non-finite, on every rank when on any (no hang).
        Uses the parameters' finiteness read with the metrics by the last iteration_step, else reads it now."""
        flags, self._params_finite = self._params_finite, None
        problem = self._non_finite(m, flags)
        if self.dist.any(problem is not None, self.device):
            raise TrainingDiverged(problem or f"generator iteration {m['iteration']}: another process's values "
                                              f"became non-finite")

    def _non_finite(self, m: dict, flags: list[bool] | None = None) -> str | None:
        bad = [k for k, v in m.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            return (f"generator iteration {m['iteration']}: {', '.join(bad)} became non-finite "
                    f"({', '.join(f'{k}={m[k]}' for k in bad)})")
        named = self._named_parameters()
        if flags is None:
            flags = self._finite_flags().tolist()  # one sync
        for label in ("critic", "generator"):
            names = [n for (lab, n, _), good in zip(named, flags) if lab == label and not good]
            if names:
                return (f"generator iteration {m['iteration']}: {label} parameter(s) {', '.join(names[:5])} became "
                        f"non-finite")
        return None

    # ----------------------------------------------------------------------------------------------- run
    def train(self) -> dict | None:
        """Train to config.iters generator iterations. Returns the last metrics (None if nothing to do).

        In a data-parallel run every rank trains; rank 0 alone writes the run folder (config, metrics, TensorBoard,
        checkpoints, evaluations, plots) and shows the progress bar."""
        c = self.config
        writes = self.dist.is_main
        metrics_path = os.path.join(self.out, "metrics.jsonl")
        writer = bar = None
        if writes:
            os.makedirs(self.out, exist_ok=True)
            with open(os.path.join(self.out, "config.json"), "w") as f:
                json.dump(c.to_dict(), f, indent=2)
            _truncate_metrics(metrics_path, self.iteration)
            _truncate_metrics(os.path.join(self.out, "eval.jsonl"), self.iteration)
            writer = _tensorboard(os.path.join(self.out, "tb")) if c.tensorboard else None
            bar = _progress(c.iters, self.iteration, c.progress)
        last = None
        self.generator.train()
        self.critic.train()
        try:
            with open(metrics_path, "a") if writes else contextlib.nullcontext() as log:
                while self.iteration < c.iters:
                    t0 = time.perf_counter()
                    m = self.iteration_step()
                    self.check_finite(m)
                    self.iteration += 1
                    self.elapsed += time.perf_counter() - t0
                    m["seconds"] = round(self.elapsed, 4)
                    last = m
                    if not writes:
                        continue
                    log.write(json.dumps(m) + "\n")
                    log.flush()
                    if writer is not None:
                        for k, v in m.items():
                            if k != "iteration":
                                writer.add_scalar(k, v, self.iteration)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(W=f"{m['w_estimate']:.4f}", refresh=False)
                    final = self.iteration == c.iters
                    if final or self.iteration % c.checkpoint_every == 0:
                        self.save()
                    if c.eval_every and (final or self.iteration % c.eval_every == 0):
                        self.evaluate()
                    if c.plots and (final or (c.plot_every and self.iteration % c.plot_every == 0)):
                        self.plot(writer)
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return last

    def evaluate(self) -> dict:
        """Sample quality now (fixed noise, no RNG touched), appended to out/eval.jsonl."""
        from .eval import N_TOY, evaluate_samples

        if self._eval_noise is None:
            n = N_TOY if self.toy is not None else 1000
            self._eval_noise = torch.randn(n, self.config.nz, generator=torch.Generator().manual_seed(
                self.config.seed + 5))
        m = {"iteration": self.iteration,
             **evaluate_samples(self.sample(noise=self._eval_noise), self.config.dataset, self.config.seed)}
        m = {k: v for k, v in m.items() if not isinstance(v, list)}
        with open(os.path.join(self.out, "eval.jsonl"), "a") as f:
            f.write(json.dumps(m) + "\n")
        return m

    @torch.no_grad()
    def sample(self, n: int | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Generator samples in eval mode (touches no RNG when `noise` is given)."""
        if noise is None:
            noise = self._noise(n)
        was = self.generator.training
        self.generator.eval()
        try:
            return self.generator(noise.to(self.device)).float().cpu()
        finally:
            self.generator.train(was)

    def plot(self, writer=None) -> None:
        """Plots of the run so far into out/plots (no RNG is touched, so plotting never changes training)."""
        try:
            from . import plots
        except ImportError:
            return
        folder = os.path.join(self.out, "plots")
        try:
            its, series = _read_metrics(os.path.join(self.out, "metrics.jsonl"))
            if its:
                plots.plot_w_estimate(its, series["w_estimate"], os.path.join(folder, "w_estimate.png"),
                                      title=f"{self.config.dataset}, {self.config.lipschitz}")
                keys = [k for k in ("loss_d", "loss_g", "grad_norm_mean", "clip_saturation", "sigma_max")
                        if k in series]
                plots.plot_losses(its, {k: series[k] for k in keys}, os.path.join(folder, "losses.png"))
            fake = self.sample(noise=self.fixed_noise)
            name = f"samples_{self.iteration:06d}.png"
            if self.toy is not None:
                real = self.toy.sample(self.config.n_samples, torch.Generator().manual_seed(self.config.seed + 3))
                was = self.critic.training
                self.critic.eval()
                try:
                    for target in (name, "samples.png"):
                        plots.plot_toy(real, fake, os.path.join(folder, target), critic=self.critic,
                                       centers=self.toy.centers,
                                       title=f"{self.config.dataset}, {self.config.lipschitz}, "
                                             f"iteration {self.iteration}")
                finally:
                    self.critic.train(was)
            else:
                for target in (name, "samples.png"):
                    plots.save_image_grid(fake, os.path.join(folder, target))
                if writer is not None:
                    import torchvision

                    writer.add_image("samples", torchvision.utils.make_grid(fake, normalize=True,
                                                                            value_range=(-1, 1)), self.iteration)
        except ImportError as e:  # matplotlib missing: training goes on without plots
            warnings.warn(f"no plots: {e}", RuntimeWarning, stacklevel=2)


def _read_metrics(path: str) -> tuple[list[int], dict[str, list[float]]]:
    its, series = [], {}
    if not os.path.exists(path):
        return its, series
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            m = json.loads(line)
            its.append(m["iteration"])
            for k, v in m.items():
                if k != "iteration":
                    series.setdefault(k, []).append(v)
    return its, series


def _truncate_metrics(path: str, iteration: int) -> None:
    """Drop lines after `iteration` (a resumed run continues from its checkpoint, not from the last line)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    keep = [ln for ln in lines if json.loads(ln)["iteration"] <= iteration]
    if len(keep) != len(lines):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)


def _tensorboard(folder: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(folder)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="it", desc="generator iterations", dynamic_ncols=True,
                mininterval=0.5)


# ----------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wgan-train",
        description="Train a Wasserstein GAN (Algorithm 1 of the WGAN paper) with weight clipping, a gradient "
                    "penalty or spectral normalization on the critic. With no arguments: 8 Gaussians with a "
                    "gradient penalty, about 2 minutes on 2 CPU cores.",
        epilog="Options can also come from --config FILE (YAML, TOML or JSON; keys are the option names); flags "
               "given on the command line override the file. Defaults marked 'default: ...' depend on the mode "
               "and dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="options from a YAML, TOML or JSON file", default=argparse.SUPPRESS)
    p.add_argument("--resume", metavar="RUN_DIR_OR_CHECKPOINT", default=argparse.SUPPRESS,
                   help="continue a run from its checkpoint; only " + ", ".join(sorted(cfgmod.RESUMABLE))
                        + " may change")
    for name, f in cfgmod.OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        help_text = f.metadata["help"]
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{help_text} (default: {f.default})")
            continue
        kind = {"int": int, "int | None": int, "float": float, "float | None": float}.get(str(f.type), str)
        p.add_argument(flag, type=kind, default=argparse.SUPPRESS, choices=f.metadata.get("choices"),
                       metavar=None if f.metadata.get("choices") else name.upper(),
                       help=help_text + ("" if f.default is None else f" (default: {f.default})"))
    return p


def config_from_args(argv: list[str] | None = None) -> tuple[TrainConfig, dict | None]:
    """Parse the command line into a resolved config (and the checkpoint state when resuming)."""
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    resume = args.pop("resume", None)
    values = cfgmod.load_config_file(config_file) if config_file else {}
    values.update(args)
    if resume is None:
        return resolve(cfgmod.from_dict(values)), None
    state = load_checkpoint(resume)
    if "out" not in values:  # continue in the folder resumed from (a copied run folder stays apart from its original)
        values["out"] = _run_folder(resume, state)
    fixed = sorted(k for k in values if k not in cfgmod.RESUMABLE and values[k] != state["config"].get(k))
    if fixed:
        raise ConfigError(f"--resume: {', '.join('--' + k.replace('_', '-') for k in fixed)} cannot change when "
                          f"resuming (the run was made with them); resumable: "
                          f"{', '.join(sorted(cfgmod.RESUMABLE))}")
    merged = {**state["config"], **values}
    cfg = cfgmod.from_dict(merged)
    cfgmod.validate(cfg)
    if cfg.iters < state["iteration"]:
        raise ConfigError(f"--iters: {cfg.iters} is below the checkpoint's iteration {state['iteration']}")
    return cfg, state


def _run_folder(resume: str, state: dict) -> str:
    """The run folder a --resume argument names: the folder itself, the folder of RUN/checkpoints/last.pt, or, for a
    checkpoint file elsewhere, the folder the run was made in."""
    if os.path.isdir(resume):
        return resume
    parent = os.path.dirname(os.path.abspath(resume))
    if os.path.basename(parent) == os.path.dirname(LAST):
        return os.path.dirname(parent)
    return state["config"]["out"]


def main(argv: list[str] | None = None) -> int:
    """The CLI. Under torchrun (WORLD_SIZE > 1) it joins the process group first and leaves it at the end; every
    process trains, rank 0 alone prints and writes."""
    try:
        try:
            cfg, state = config_from_args(argv)
            ctx = distributed.setup(cfg, pick_device(cfg.device))
            trainer = Trainer(cfg, resume_state=state)
        except (ConfigError, DataError, CheckpointError) as e:
            # a config error is the same on every rank: rank 0 says it; file and data errors may be one node's
            rank = os.environ.get("RANK", "0")
            if rank in ("", "0") or not isinstance(e, ConfigError):
                who = "wgan-train" if rank in ("", "0") else f"wgan-train (rank {rank})"
                print(f"{who}: error: {e}", file=sys.stderr)
            return 2
        code = _run(trainer, cfg, state, ctx)
        distributed.shutdown(wait=code in (0, 1))  # finished or diverged: every rank got here
        return code
    finally:
        distributed.shutdown()


def _run(trainer: Trainer, cfg: TrainConfig, state: dict | None, ctx: Distributed) -> int:
    say = (lambda msg: print(msg, file=sys.stderr)) if ctx.is_main else (lambda msg: None)
    where = os.path.abspath(cfg.out)
    start = trainer.iteration
    procs = f", {ctx.world_size} processes (global batch {cfg.batch_size})" if ctx.enabled else ""
    say(f"wgan-train: {cfg.lipschitz} on {cfg.dataset}, {cfg.model} models, device {trainer.device}{procs}, "
        f"{cfg.iters} generator iterations" + (f" (resuming at {start})" if state else "") + f"; run folder {where}")
    try:
        last = trainer.train()
    except TrainingDiverged as e:
        kept = (f"the last good checkpoint is {trainer.last_checkpoint} (iteration "
                f"{load_checkpoint(trainer.last_checkpoint)['iteration']})" if trainer.last_checkpoint
                else "no checkpoint was written before it")
        say(f"wgan-train: training stopped: {e}; {kept}. Try a lower learning rate.")
        return 1
    except KeyboardInterrupt:
        say(f"wgan-train: interrupted; resume with: wgan-train --resume {where}")
        return 130
    summary = f"W estimate {last['w_estimate']:.4f}, " if last else ""
    say(f"wgan-train: done: {summary}{trainer.elapsed:.0f} s of training.\n"
        f"  metrics      {os.path.join(where, 'metrics.jsonl')}\n"
        f"  plots        {os.path.join(where, 'plots')}  (samples.png, w_estimate.png, losses.png)\n"
        f"  checkpoint   {os.path.join(where, LAST)}\n"
        f"  tensorboard  tensorboard --logdir {os.path.join(where, 'tb')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
