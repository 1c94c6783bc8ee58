"""The training loop: Algorithm 1 of the WGAN paper, with the Lipschitz constraint as a piece (constraints/).

    Trainer(resolve(TrainConfig(...))).train()      a run to config.iters generator iterations
    Trainer(config, resume_state=load_checkpoint(run))   the same run continued from its checkpoint

Each generator iteration: n_critic critic steps (data batch, noise, the constraint's extra inputs drawn outside the
step; critic loss -(E[D(real)] - E[D(fake)]) plus the constraint's term), then one generator step. The loop does
not know which constraint it runs: the constraint object sets itself up on the critic and its optimizer, adds its
term to the critic loss and names what it logs. It only uses the public drop-ins that users put into their own
loops (``Clipper``, ``gradient_penalty``, ``apply_spectral_norm``, ``graphs.GraphedStep``).

Run folder: config.json (the resolved options), metrics.jsonl (one line per generator iteration), plots/ (W
estimate curve, losses, samples), checkpoints/last.pt (atomic), tb/ (TensorBoard events, when installed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings

import torch
from torch import nn

from .. import graphs
from . import run_folder
from .checkpoint import FORMAT, LAST, remove_stale_temporaries, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .constraints import Constraint, constraint_class
from .data import TOY_DATASETS, Batches, image_data, toy_distribution
from .distributed import Distributed, pick_device
from .ema import ModelEMA
from .errors import ConfigError, Stopped, TrainingDiverged
from .models import build_models
from .optimizers import make_optimizer

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def build_data(c: TrainConfig):
    """(source for Batches, sample shape, the toy distribution or None)."""
    if c.dataset in TOY_DATASETS:
        dist = toy_distribution(c.dataset)
        return dist, (2,), dist
    data = image_data(c.dataset, root=c.data_root, image_size=c.image_size, channels=c.channels,
                      download=c.download)
    return data, tuple(data.shape), None


def use_graphs(c: TrainConfig, device: torch.device, world_size: int) -> bool:
    """Whether this run replays its steps as CUDA graphs: --cuda-graphs on (a ConfigError where they cannot run),
    auto (where they can), off."""
    if c.cuda_graphs == "off":
        return False
    if c.cuda_graphs == "on":
        check_graphs_supported(c, device, world_size)
        return True
    try:
        check_graphs_supported(c, device, world_size)
    except ConfigError:
        return False
    return True


def check_graphs_supported(c: TrainConfig, device: torch.device, world_size: int) -> None:
    """Raise ConfigError naming what is wrong when --cuda-graphs cannot capture this run's steps."""
    if device.type != "cuda":
        raise ConfigError(f"--cuda-graphs needs a CUDA device, but the run is on {device} (use --device cuda, "
                          f"or leave --cuda-graphs off)")
    if world_size > 1:
        raise ConfigError(f"--cuda-graphs runs in one process; this run has {world_size} (torchrun): the "
                          f"gradient all-reduce between processes is not captured")
    if c.precision == "fp16":
        raise ConfigError("--cuda-graphs with --precision fp16: the GradScaler's step reads its inf check on the host, "
                          "which a graph cannot; use --precision bf16 (no scaler) or --cuda-graphs off")
    why = constraint_class(c.lipschitz).graphs_unsupported(c)
    if why:
        raise ConfigError(why)


class Trainer:
    """One WGAN training run for a resolved config. ``train()`` runs to ``config.iters`` generator iterations."""

    def __init__(self, config: TrainConfig, resume_state: dict | None = None, overwrite: bool = False):
        """`resume_state`: a checkpoint (load_checkpoint) to continue from. A new run into an `out` that already
        holds one (a checkpoint or metrics) raises ConfigError, unless `overwrite` (then that run's files go)."""
        self.config = c = config
        self.device = pick_device(c.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # cuda:N: streams, graphs and default allocations on N
        # data-parallel: this process's rank and share of each global batch (everything below is the same on every
        # rank: seeds, models, data and noise streams; see distributed.py)
        self.dist = Distributed.current()
        self.share = self.dist.shard(c.batch_size)
        self.out = c.out
        if resume_state is None:
            self._claim_folder(overwrite)
        torch.manual_seed(c.seed)
        source, self.shape, self.toy = build_data(c)
        self.generator, self.critic = build_models(c, self.shape)
        self.generator.to(self.device)
        self.critic.to(self.device)
        if c.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.critic.to(memory_format=torch.channels_last)
        self.constraint: Constraint = constraint_class(c.lipschitz)(c, self.critic, self.device)
        # --precision: autocast of both models' forwards; with fp16 a GradScaler per optimizer (and the penalty's)
        self._amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[c.precision]
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=c.precision == "fp16")
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=c.precision == "fp16")
        self.constraint.scaler = self.scaler_d if self.scaler_d.is_enabled() else None
        self._skipped = torch.zeros((), device=self.device)  # optimizer steps the scalers skipped (inf gradients)
        graphed = use_graphs(c, self.device, self.dist.world_size)
        # autocast's cache of cast weights must be off where steps are captured (PyTorch's CUDA-graph notes)
        self._autocast_cache = not graphed
        self.opt_g = make_optimizer(c, self.generator.parameters(), c.lr_g)
        self.ema = ModelEMA(self.generator, c.g_ema) if c.g_ema else None  # --g-ema: the generator's average
        self.opt_d = self.constraint.critic_optimizer(self.critic.parameters())
        self.constraint.attach(self.opt_d)
        self.batches = Batches(source, c.batch_size, seed=c.seed, device=self.device, num_workers=c.num_workers,
                               rank=self.dist.rank, world_size=self.dist.world_size)
        # noise and the constraint's random inputs: their own generator on the training device, saved in checkpoints
        self.noise_rng = torch.Generator(self.device).manual_seed(c.seed + 1)
        fixed = torch.Generator().manual_seed(c.seed + 2)
        self.fixed_noise = torch.randn(c.n_samples, c.nz, generator=fixed)
        self.iteration = 0
        self.elapsed = 0.0
        self.last_checkpoint: str | None = None
        self._saved_at = time.monotonic()  # when the last checkpoint was written (--checkpoint-minutes)
        self._stop: str | None = None  # set by request_stop (a signal handler): stop after this iteration
        self._params_finite: bool | None = None  # read with the metrics by iteration_step, for check_finite
        self._eval_noise: torch.Tensor | None = None
        if resume_state is not None:
            self._load_state(resume_state)
        # --cuda-graphs: both steps recorded once and replayed (wgan_ext.graphs); capturable optimizers on the GPU
        self.critic_graph = self.generator_graph = None
        if graphed:
            capture = self.device.type == "cuda"
            self.critic_graph = graphs.GraphedStep(self._critic_update, capture=capture)
            self.generator_graph = graphs.GraphedStep(self._generator_update, capture=capture)
            if capture:
                for opt in (self.opt_d, self.opt_g):
                    graphs.prepare_optimizer(opt, tensor_lr=c.lr_decay != "none")
        # every replica starts from rank 0's parameters and buffers (SN's u, v included)
        for model in (self.generator, self.critic) + ((self.ema.model,) if self.ema else ()):
            self.dist.broadcast_state(model)

    def _claim_folder(self, overwrite: bool) -> None:
        run = run_folder.existing_run(self.out)
        if run is None or not (run.checkpoint or run.metrics_lines):
            return
        if not overwrite:
            raise ConfigError(f"{self.out} already holds a run ({'a checkpoint' if run.checkpoint else 'metrics'}): "
                              f"continue it with Trainer(config, resume_state=load_checkpoint({self.out!r})), train "
                              f"into another out, or replace it with Trainer(..., overwrite=True)")
        if self.dist.is_main:
            run_folder.clear(self.out)

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"format": FORMAT, "config": self.config.to_dict(), "iteration": self.iteration,
                "elapsed": self.elapsed, "generator": self.generator.state_dict(),
                "critic": self.critic.state_dict(),
                # as the plain optimizers save it, whether or not --cuda-graphs made them capturable
                "opt_g": graphs.portable_state_dict(self.opt_g), "opt_d": graphs.portable_state_dict(self.opt_d),
                "constraint": self.constraint.state_dict(),
                "scaler_d": self.scaler_d.state_dict(), "scaler_g": self.scaler_g.state_dict(),
                "generator_ema": self.ema.state_dict() if self.ema else None,
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
        self.constraint.load_state_dict(s.get("constraint", {}))  # absent in checkpoints before the constraints
        if self.ema is not None:
            if s.get("generator_ema") is None:
                raise ValueError("the checkpoint has no generator EMA, but --g-ema is on (it cannot change on resume)")
            self.ema.load_state_dict(s["generator_ema"])
        for name, scaler in (("scaler_d", self.scaler_d), ("scaler_g", self.scaler_g)):
            if s.get(name):  # absent before --precision; {} for a disabled scaler
                scaler.load_state_dict(s[name])
        self.batches.load_state_dict(s["data"])
        self._set_noise_state(s["noise_rng"], s.get("noise_rng_device"))
        self.fixed_noise = s["fixed_noise"]
        self.iteration = s["iteration"]
        self.elapsed = s["elapsed"]
        set_rng_state(s["rng"])
        if os.path.exists(os.path.join(self.out, LAST)):
            self.last_checkpoint = os.path.join(self.out, LAST)

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
                      f"state does not carry over, so the noise goes on from a seed derived from it (the run "
                      f"continues, but not with the noise the original device would have drawn)", RuntimeWarning,
                      stacklevel=3)

    def save(self) -> str:
        path = os.path.join(self.out, LAST)
        save_checkpoint(self.state_dict(), path)
        self.last_checkpoint = path
        self._saved_at = time.monotonic()
        return path

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask train() to stop at the end of the current generator iteration, after writing a checkpoint; it then
        raises Stopped(reason). Safe to call from a signal handler. Under torchrun every rank stops at the same
        iteration as soon as any rank was asked."""
        self._stop = reason

    @property
    def stop_requested(self) -> bool:
        return self._stop is not None

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
        constraint's extra inputs (drawn here only where they must be inputs: several processes or a CUDA graph;
        otherwise the step draws the same values itself)."""
        c = self.config
        real = self.batches.next()  # this rank's share of the global batch
        if c.channels_last and real.dim() == 4:
            real = real.contiguous(memory_format=torch.channels_last)
        noise = self._local(self._noise(c.batch_size))
        explicit = self.dist.enabled or self.critic_graph is not None
        extra = [self._local(x) for x in self.constraint.extra_inputs(c.batch_size, self.noise_rng, explicit)]
        if self.critic_graph is not None:
            try:
                return self.critic_graph(real, noise, *extra)
            except graphs.GraphCaptureError as e:
                self._without_graphs(e)
        return self._critic_update(real, noise, *extra)

    def _critic_update(self, real: torch.Tensor, noise: torch.Tensor, *extra: torch.Tensor) -> dict:
        """The critic update on given inputs (what --cuda-graphs records): no host synchronization in here."""
        self.constraint.before_critic_step()
        with torch.no_grad(), self._autocast():
            fake = self.generator(noise).to(real.dtype)  # the penalty interpolates real and fake: one dtype
        with self._autocast():
            # means over the local share; the averaged gradient is that of the global mean (equal shares)
            w = self.critic(real).float().mean() - self.critic(fake).float().mean()
            loss = -w
            term, out = self.constraint.critic_loss(self.critic, real, fake, list(extra), self.noise_rng)
            if term is not None:
                loss = loss + term
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss).backward()
        self.dist.average_gradients(self.critic.parameters())
        self._scaled_step(self.scaler_d, self.opt_d)  # an attached Clipper clamps here (the paper's order)
        out["w_estimate"] = w.detach()
        out["loss_d"] = loss.detach()
        return out

    def generator_step(self) -> torch.Tensor:
        noise = self._local(self._noise(self.config.batch_size))
        loss = None
        if self.generator_graph is not None:
            try:
                loss = self.generator_graph(noise)
            except graphs.GraphCaptureError as e:
                self._without_graphs(e)
        if loss is None:
            loss = self._generator_update(noise)
        if self.ema is not None:  # outside any graph: its decay changes with the step count
            self.ema.update(self.iteration)
        return loss

    def _without_graphs(self, error: Exception) -> None:
        """--cuda-graphs auto: a capture failed, so the run goes on eagerly (the failed capture ran nothing; the
        step is repeated eagerly on the same inputs). With --cuda-graphs on the error stops the run."""
        if self.config.cuda_graphs != "auto":
            raise error
        warnings.warn(f"--cuda-graphs auto: {error}; training goes on without CUDA graphs", RuntimeWarning,
                      stacklevel=3)
        self.critic_graph = self.generator_graph = None

    def _generator_update(self, noise: torch.Tensor) -> torch.Tensor:
        for p in self.critic.parameters():
            p.requires_grad_(False)
        try:
            with self._autocast():
                loss = -self.critic(self.generator(noise)).float().mean()
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(loss).backward()
            self.dist.average_gradients(self.generator.parameters())
            self._scaled_step(self.scaler_g, self.opt_g)
        finally:
            for p in self.critic.parameters():
                p.requires_grad_(True)
        return loss.detach()

    def _autocast(self):
        """--precision bf16/fp16: autocast of the models' forwards (a no-op context for fp32)."""
        return torch.autocast(self.device.type, dtype=self._amp_dtype or torch.float32,
                              enabled=self._amp_dtype is not None, cache_enabled=self._autocast_cache)

    def _scaled_step(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step() through its GradScaler (fp16: skipped when a gradient is inf/NaN, then the scale
        shrinks; counted, on the device, into skipped_steps). Disabled scalers call optimizer.step() as it is."""
        if not scaler.is_enabled():
            optimizer.step()
            return
        before = scaler._get_scale_async().clone()
        scaler.step(optimizer)
        scaler.update()
        self._skipped += (scaler._get_scale_async() < before).float()  # update() shrinks the scale after a skip

    def set_learning_rates(self) -> None:
        """The configured lr of both optimizers, scaled for the current iteration by --lr-decay (a function of the
        iteration alone, so a resumed run continues the same schedule)."""
        c = self.config
        scale = max(0.0, 1.0 - self.iteration / c.iters) if c.lr_decay == "linear" else 1.0
        for opt, lr in ((self.opt_d, c.lr_d), (self.opt_g, c.lr_g)):
            for group in opt.param_groups:
                graphs.set_lr(group, lr * scale)  # in place where a CUDA graph reads it

    def iteration_step(self) -> dict:
        """One generator iteration: n_critic critic steps, then one generator step. Returns its metrics, read back
        at once (one device-to-host transfer); train() reads them in blocks of --log-every iterations instead."""
        row = self._step()
        (m,), finite = self._read([row], self.iteration)
        self._params_finite = finite
        return m

    def _step(self) -> tuple[torch.Tensor, int]:
        """One generator iteration without a host synchronization: every logged value of it as one 1-D float64
        tensor on the device (read later by _read), and its number of critic iterations."""
        if self.config.lr_decay != "none":
            self.set_learning_rates()
        d_iters = self.critic_iterations(self.iteration)
        for _ in range(d_iters):
            last = self.critic_step()
        loss_g = self.generator_step()
        if self.dist.enabled:
            # logged values are those of the global batch: 0-dim outputs averaged over the ranks (equal shares),
            # per-sample ones gathered in the global batch's order
            keys = [k for k, v in last.items() if v.dim() == 0]
            means = self.dist.mean(torch.stack([last[k].float() for k in keys] + [loss_g.float()]))
            last = {**last, **dict(zip(keys, means[:-1])),
                    **{k: self.dist.gather(v) for k, v in last.items() if v.dim() == 1}}
            loss_g = means[-1]
            for model in (self.generator, self.critic):  # BatchNorm running stats: rank 0's everywhere
                self.dist.broadcast_state(model, buffers_of=_BATCHNORMS)
        scalars = {"w_estimate": last["w_estimate"], "loss_d": last["loss_d"], "loss_g": loss_g,
                   **self.constraint.metrics(last)}
        if self.scaler_d.is_enabled():
            scalars["grad_scale"] = self.scaler_d._get_scale_async()
            scalars["skipped_steps"] = self._skipped.clone()
            self._skipped.zero_()
        vectors = self.constraint.vectors()
        self._layout = (list(scalars), [(name, v.numel()) for name, v in vectors.items()])
        # a copy: with CUDA graphs the step's outputs are overwritten by the next replay
        row = torch.cat([torch.stack([v.detach().reshape(()).double() for v in scalars.values()]),
                         *(v.detach().reshape(-1).double() for v in vectors.values())])
        return row, d_iters

    def _read(self, rows: list[tuple[torch.Tensor, int]], first: int) -> tuple[list[dict], bool]:
        """The metrics of generator iterations first+1, first+2, ... from their device rows, and whether every
        parameter is finite now, in one device-to-host transfer (each .item() would wait for the device)."""
        names, vectors = self._layout
        flat = torch.cat([torch.stack([r for r, _ in rows]).reshape(-1), self._all_finite().double().reshape(1)])
        values = flat.tolist()
        width = len(values[:-1]) // len(rows)
        out = []
        for i, (_, d_iters) in enumerate(rows):
            v = values[i * width:(i + 1) * width]
            m = {"iteration": first + i + 1, **dict(zip(names, v)), "critic_iters": d_iters}
            rest = v[len(names):]
            for name, n in vectors:
                vals, rest = rest[:n], rest[n:]
                m.update({f"{name}_mean": sum(vals) / len(vals), f"{name}_min": min(vals), f"{name}_max": max(vals)})
            out.append(m)
        return out, bool(values[-1])

    def _all_finite(self) -> torch.Tensor:
        """Whether every parameter of both models is finite, as a 0-dim bool tensor (no sync): one multi-tensor
        max-abs over all parameters (NaN propagates through it, inf reaches it), then one check."""
        params = [p.detach() for _, _, p in self._named_parameters() if p.numel()]
        if not params:
            return torch.ones((), dtype=torch.bool, device=self.device)
        return torch.isfinite(torch.stack(torch._foreach_norm(params, float("inf")))).all()

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

    def check_finite(self, m: dict) -> bool:
        """Raise TrainingDiverged when a metric of `m` or a parameter is non-finite, on every rank when on any (no
        hang). Uses the parameters' finiteness read with the metrics by the last iteration_step, else reads it now.
        Returns whether a stop was requested on any rank (one collective decides both)."""
        finite, self._params_finite = self._params_finite, None
        return self._agree(self._non_finite(m, finite), m["iteration"])

    def _agree(self, problem: str | None, iteration: int) -> bool:
        """Every rank learns whether any found a problem (then all raise TrainingDiverged) or was asked to stop."""
        bad, stop = self.dist.any_of([problem is not None, self._stop is not None], self.device)
        if bad:
            raise TrainingDiverged(problem or f"generator iteration {iteration}: another process's values became "
                                              f"non-finite")
        if stop and self._stop is None:
            self._stop = "another process was asked to stop"
        return stop

    def _non_finite(self, m: dict, all_finite: bool | None = None) -> str | None:
        bad = [k for k, v in m.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad and m.get("skipped_steps"):
            bad = []  # fp16: the GradScaler skipped a step on inf values (then shrinks its scale): not a divergence
        if bad:
            return (f"generator iteration {m['iteration']}: {', '.join(bad)} became non-finite "
                    f"({', '.join(f'{k}={m[k]}' for k in bad)})")
        if all_finite is None:
            all_finite = bool(self._all_finite())  # one sync
        if all_finite:
            return None
        named = self._named_parameters()
        flags = self._finite_flags().tolist()  # which ones: only once something is wrong
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
            # a resumed run continues from its checkpoint: lines and events written after it are dropped
            _truncate_metrics(metrics_path, self.iteration)
            _truncate_metrics(os.path.join(self.out, "eval.jsonl"), self.iteration)
            remove_stale_temporaries(os.path.dirname(os.path.join(self.out, LAST)))  # a write cut off by a kill
            writer = _tensorboard(os.path.join(self.out, "tb"), self.iteration) if c.tensorboard else None
            bar = _progress(c.iters, self.iteration, c.progress)
        last = None
        self._saved_at = time.monotonic()
        self.generator.train()
        self.critic.train()
        try:
            with open(metrics_path, "a") if writes else contextlib.nullcontext() as log:
                pending: list[tuple[torch.Tensor, int, float]] = []  # iterations not yet read back
                while self.iteration < c.iters:
                    t0 = time.perf_counter()
                    row, d_iters = self._step()
                    self.iteration += 1
                    self.elapsed += time.perf_counter() - t0  # on a GPU: host time, the device may be behind
                    pending.append((row, d_iters, round(self.elapsed, 4)))
                    if self._due(self.iteration):
                        last = self._flush(pending, log, writer, bar)
                        pending = []
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return last

    def _due(self, it: int) -> bool:
        """Whether generator iteration `it` ends a block: metrics are read back and checked, and checkpoints,
        evaluations and plots written, only there (the same iterations on every rank: they agree there)."""
        c = self.config
        return (it % c.log_every == 0 or it == c.iters or it % c.checkpoint_every == 0
                or bool(c.eval_every and it % c.eval_every == 0)
                or bool(c.plots and c.plot_every and it % c.plot_every == 0))

    def _flush(self, pending, log, writer, bar) -> dict:
        """Read a block of iterations back (one transfer), check it, write it; then what is due at its end."""
        c = self.config
        rows, finite = self._read([(r, d) for r, d, _ in pending], self.iteration - len(pending))
        for m, (_, _, seconds) in zip(rows, pending):
            m["seconds"] = seconds
        # the first iteration with a non-finite metric stops the run before its line; parameters are checked at the
        # block's end (the last checkpoint is older than the block, so it stays the last good one)
        problem, good = None, rows
        for i, m in enumerate(rows):
            problem = self._non_finite(m, True)
            if problem:
                good = rows[:i]
                break
        if problem is None and not finite:
            problem = self._non_finite(rows[-1], False)
        if self.dist.is_main:
            for m in good:
                self._log(m, log, writer, bar)
        stop = self._agree(problem, rows[-1]["iteration"])
        if self.dist.is_main:
            final = self.iteration == c.iters
            overdue = c.checkpoint_minutes and time.monotonic() - self._saved_at >= 60 * c.checkpoint_minutes
            if final or stop or overdue or self.iteration % c.checkpoint_every == 0:
                self.save()
            if not stop and c.eval_every and (final or self.iteration % c.eval_every == 0):
                self.evaluate()
            if not stop and c.plots and (final or (c.plot_every and self.iteration % c.plot_every == 0)):
                self.plot(writer)
        if stop and self.iteration < c.iters:  # asked at the very end: the run is simply done
            raise Stopped(self._stop, self.iteration, self.last_checkpoint)
        return rows[-1]

    @staticmethod
    def _log(m: dict, log, writer, bar) -> None:
        log.write(json.dumps(m) + "\n")
        log.flush()
        if writer is not None:
            for k, v in m.items():
                if k != "iteration":
                    writer.add_scalar(k, v, m["iteration"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(W=f"{m['w_estimate']:.4f}", refresh=False)

    def evaluate(self) -> dict:
        """Sample quality now (fixed noise, no RNG touched), appended to out/eval.jsonl."""
        from ..eval.runs import N_TOY, evaluate_samples

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
    def sample(self, n: int | None = None, noise: torch.Tensor | None = None, raw: bool = False) -> torch.Tensor:
        """Samples in eval mode from the generator's EMA when there is one (`raw`: from the generator itself);
        touches no RNG when `noise` is given."""
        if noise is None:
            noise = self._noise(n)
        g = self.generator if (raw or self.ema is None) else self.ema.model
        was = g.training
        g.eval()
        try:
            return g(noise.to(self.device)).float().cpu()
        finally:
            g.train(was)

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


def _metric_lines(path: str) -> list[tuple[str, dict]]:
    """(line, parsed) for each complete line of a metrics file; a line cut off by a kill mid-write is skipped."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append((line if line.endswith("\n") else line + "\n", json.loads(line)))
            except ValueError:
                continue
    return out


def _read_metrics(path: str) -> tuple[list[int], dict[str, list[float]]]:
    its, series = [], {}
    for _, m in _metric_lines(path):
        its.append(m["iteration"])
        for k, v in m.items():
            if k != "iteration":
                series.setdefault(k, []).append(v)
    return its, series


def _truncate_metrics(path: str, iteration: int) -> None:
    """Keep the complete lines up to `iteration` (a resumed run continues from its checkpoint, not from the last
    line; a killed run may have left lines past it, or half a line)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        before = f.read()
    keep = "".join(line for line, m in _metric_lines(path) if m["iteration"] <= iteration)
    if keep != before:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(keep)
        os.replace(tmp, path)


def _tensorboard(folder: str, iteration: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    # resumed: events after the checkpoint's iteration (written before a crash) are purged, as metrics lines are
    return SummaryWriter(folder, purge_step=iteration + 1 if iteration else None)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="it", desc="generator iterations", dynamic_ncols=True,
                mininterval=0.5)
