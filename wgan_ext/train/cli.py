"""wgan-train: the trainer's command line.

    wgan-train                            the embedded default: 8 Gaussians, gradient penalty, about 2 minutes on
                                          2 CPU cores; prints where the run folder is
    wgan-train --lipschitz clip|gp|sn --dataset NAME --iters N --out DIR ...   (wgan-train --help lists all)
    wgan-train --config run.yaml          options from a YAML/TOML/JSON file; flags override it
    wgan-train --resume RUN_DIR           continue a run from its last checkpoint (bitwise on the CPU), in RUN_DIR
    wgan-train --cuda-graphs off          no CUDA graphs (default auto: on CUDA in one process, each critic and
                                          generator step is replayed as a CUDA graph)
    python -m wgan_ext.train ...          the same
    torchrun --nproc_per_node N -m wgan_ext.train ...   data-parallel over N processes (see distributed.py: the
                                          batch is global, gradients are averaged, rank 0 alone writes the run folder)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from . import config as cfgmod
from . import distributed, run_folder
from .checkpoint import LAST, CheckpointError, load_checkpoint
from .config import TrainConfig, resolve
from .data import DataError
from .distributed import Distributed, pick_device
from .errors import ConfigError, Stopped, TrainingDiverged
from .trainer import Trainer


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
                        + " may change. Without it, a run whose --out already holds one continues it when the "
                          "options match and is refused otherwise")
    p.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS,
                   help="start afresh in an --out that already holds a run, removing that run's files (config, "
                        "metrics, checkpoints, plots, TensorBoard events); under torchrun only at the job's first "
                        "start, so that its elastic restarts continue the new run")
    for name, f in cfgmod.OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        help_text = f.metadata["help"]
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{help_text} (default: {f.default})")
            continue
        kind = {"int": int, "int | None": int, "float": float, "float | None": float}.get(str(f.type), str)
        extra = {"nargs": "?", "const": f.metadata["const"]} if "const" in f.metadata else {}
        p.add_argument(flag, type=kind, default=argparse.SUPPRESS, choices=f.metadata.get("choices"),
                       metavar=None if f.metadata.get("choices") else name.upper(),
                       help=help_text + ("" if f.default is None else f" (default: {f.default})"), **extra)
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_const", const="off",
                   default=argparse.SUPPRESS, help="the same as --cuda-graphs off")
    return p


def config_from_args(argv: list[str] | None = None) -> tuple[TrainConfig, dict | None]:
    """Parse the command line into a resolved config (and the checkpoint state when resuming)."""
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    resume = args.pop("resume", None)
    overwrite = args.pop("overwrite", False)
    if resume is not None and overwrite:
        raise ConfigError("--overwrite starts a run afresh and --resume continues one: give one of them")
    values = cfgmod.load_config_file(config_file) if config_file else {}
    values.update(args)
    if resume is None:
        cfg = resolve(cfgmod.from_dict(values))
        return cfg, _continue_or_refuse(cfg, overwrite)
    state = load_checkpoint(resume)
    if "out" not in values:  # continue in the folder resumed from (a copied run folder stays apart from its original)
        values["out"] = _run_folder(resume, state)
    fixed = sorted(k for k in values if k not in cfgmod.RESUMABLE and values[k] != state["config"].get(k))
    if fixed:
        raise ConfigError(f"--resume: {', '.join('--' + k.replace('_', '-') for k in fixed)} cannot change when "
                          f"resuming (the run was made with them); resumable: "
                          f"{', '.join(sorted(cfgmod.RESUMABLE))}")
    merged = {**cfgmod.before_it_existed(state["config"]), **state["config"], **values}
    cfg = cfgmod.from_dict(merged)
    cfgmod.validate(cfg)
    if cfg.iters < state["iteration"]:
        raise ConfigError(f"--iters: {cfg.iters} is below the checkpoint's iteration {state['iteration']}")
    return cfg, state


def _continue_or_refuse(cfg: TrainConfig, overwrite: bool) -> dict | None:
    """A new run's --out already holding a run: the checkpoint state to continue it from (the same options: what
    running the same command again, or an elastic restart under torchrun, means), None to start afresh, or a
    ConfigError naming what differs and the ways out. Never removes anything without --overwrite."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    main_rank = distributed.launch_info()[0] == 0
    if overwrite and not restarted:  # an elastic restart continues what its first start began
        if main_rank:
            run_folder.clear(cfg.out)
        return None
    run = run_folder.existing_run(cfg.out)
    if run is None:
        return None
    if run.checkpoint is None and not main_rank:
        return None  # nothing to continue from: rank 0 alone decides (and may be clearing the folder right now)
    state = load_checkpoint(run.checkpoint) if run.checkpoint else None
    saved = state["config"] if state else run.config
    held = (f"checkpoint at iteration {state['iteration']}" if state
            else f"{run.metrics_lines} metrics lines, no checkpoint")
    where = f"--out {cfg.out} already holds a run ({held})"
    ways = (f"continue it with its options (the same command, or wgan-train --resume {cfg.out}, which may change "
            f"only {', '.join('--' + k.replace('_', '-') for k in sorted(cfgmod.RESUMABLE))}), train elsewhere with "
            f"another --out, or replace it with --overwrite")
    if saved is None:
        raise ConfigError(f"{where}, but its config.json is missing or unreadable: {ways}")
    diff = run_folder.differences(cfg.to_dict(), {**cfgmod.before_it_existed(saved), **saved}, cfgmod.OPTIONS,
                                  cfgmod.RESUMABLE)
    if diff:
        shown = "; ".join(f"--{k.replace('_', '-')} {before!r} there, {now!r} now" for k, before, now in diff)
        raise ConfigError(f"{where} made with other options ({shown}): {ways}")
    if state is None:
        # same options but nothing to continue from: the run starts again from iteration 0 (its metrics lines are
        # written again, the same on the CPU)
        if main_rank:
            run_folder.clear(cfg.out)
        return None
    if cfg.iters < state["iteration"]:
        more = f"with --iters {state['iteration']} or more"
        raise ConfigError(f"{where}, past --iters {cfg.iters}: {ways.replace('with its options', more, 1)}")
    return state


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
        distributed.shutdown(wait=code in (0, 1, 130, 143))  # finished, diverged or stopped: every rank got here
        return code
    finally:
        distributed.shutdown()


def _stop_on_signals(trainer: Trainer) -> dict:
    """SIGTERM (what schedulers and torchrun send before a kill) and Ctrl-C ask the trainer to stop after the current
    iteration with a checkpoint (exit status 143 and 130); a second Ctrl-C interrupts at once. Returns the previous
    handlers."""
    def handler(signum, frame):
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.request_stop(f"{name} received")

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def _run(trainer: Trainer, cfg: TrainConfig, state: dict | None, ctx: Distributed) -> int:
    say = (lambda msg: print(msg, file=sys.stderr)) if ctx.is_main else (lambda msg: None)
    where = os.path.abspath(cfg.out)
    start = trainer.iteration
    procs = f", {ctx.world_size} processes (global batch {cfg.batch_size})" if ctx.enabled else ""
    say(f"wgan-train: {cfg.lipschitz} on {cfg.dataset}, {cfg.model} models, device {trainer.device}{procs}, "
        f"{cfg.iters} generator iterations" + (f" (continuing at {start})" if state else "") + f"; run folder {where}")
    previous = _stop_on_signals(trainer)
    try:
        last = trainer.train()
    except TrainingDiverged as e:
        kept = (f"the last good checkpoint is {trainer.last_checkpoint} (iteration "
                f"{load_checkpoint(trainer.last_checkpoint)['iteration']})" if trainer.last_checkpoint
                else "no checkpoint was written before it")
        say(f"wgan-train: training stopped: {e}; {kept}. Try a lower learning rate.")
        return 1
    except Stopped as e:
        say(f"wgan-train: {e}; checkpoint {os.path.abspath(e.checkpoint) if e.checkpoint else '(none)'}. The same "
            f"command continues the run (or: wgan-train --resume {where})")
        return 130 if e.reason.startswith("SIGINT") else 143
    except KeyboardInterrupt:  # a second Ctrl-C: at once, without a checkpoint
        kept = (f"the last checkpoint is {trainer.last_checkpoint}" if trainer.last_checkpoint
                else "no checkpoint was written")
        say(f"wgan-train: interrupted at once; {kept}; continue with: wgan-train --resume {where}")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = f"W estimate {last['w_estimate']:.4f}, " if last else ""
    say(f"wgan-train: done: {summary}{trainer.elapsed:.0f} s of training.\n"
        f"  metrics      {os.path.join(where, 'metrics.jsonl')}\n"
        f"  plots        {os.path.join(where, 'plots')}  (samples.png, w_estimate.png, losses.png)\n"
        f"  checkpoint   {os.path.join(where, LAST)}\n"
        f"  tensorboard  tensorboard --logdir {os.path.join(where, 'tb')}")
    return 0

