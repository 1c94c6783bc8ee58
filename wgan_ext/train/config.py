"""The trainer's configuration: one dataclass, per-mode defaults from the papers, validation, config files.

    TrainConfig(...)                 every option; None means "the default for this mode and dataset"
    resolve(cfg) -> TrainConfig      fills the Nones (the defaults below) and validates; raises ConfigError
    load_config_file(path) -> dict   YAML (.yaml/.yml), TOML (.toml) or JSON (.json); keys are option names
    ConfigError                      a bad value; the message names the option, what was given and what is allowed

Per-mode defaults (all overridable; each constraint's class in constraints/ holds its own):
    clip  RMSprop, lr 5e-5 (critic and generator; toy data 2e-4), clip value c = 0.01, n_critic 5 (WGAN paper,
          Algorithm 1)
    gp    Adam, lr 1e-4, betas (0.5, 0.9), lambda 10 (toy data: 0.1), n_critic 5 (WGAN-GP official scripts)
    sn    Adam, lr 1e-4, betas (0.5, 0.9) (toy data: (0, 0.9)), n_critic 5
Batch 64. On toy data lambda is 0.1 as in the WGAN-GP toy script (with 10 the 2-D runs oscillate).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from .constraints import CONSTRAINTS, constraint_class
from .data import DATASETS, IMAGE_DATASETS, TOY_DATASETS
from .errors import ConfigError
from .layers import NORMS
from .models import CRITIC_ACTIVATIONS

MODES = tuple(CONSTRAINTS)  # the built-in constraints; --lipschitz accepts every registered one (CONSTRAINTS)
MODELS = ("mlp", "dcgan", "resnet")
CRITIC_NORMS = NORMS  # the critics' normalizations (layers.py)
OPTIMIZERS = ("rmsprop", "adam")
DCGAN_SIZES = (32, 64)
RESNET_SIZES = (32, 48)
PRECISIONS = ("fp32", "bf16", "fp16")
DIST_BACKENDS = ("auto", "gloo", "nccl")
GRAPH_MODES = ("auto", "on", "off")
# Off: on ring and grid (gp, 2,000 iterations, 2 seeds; benchmarks/results/ema-cpu.md) averages with decays 0.99 to
# 0.999 (ramped) changed W1 and HQ by less than the spread between seeds, and lost a grid mode on one seed
DEFAULT_G_EMA = 0.0
# The mode-collapse benchmarks (ring, grid) train 6,000 iterations, everything else 1,500. Measured (gp, defaults
# otherwise, CPU, 1 thread each of 2 runs side by side, commit 0fa8874): the grid at 2,000 iterations ends with blurred
# modes (12 % HQ, median distance to the nearest mode 12 std, W1 0.56) because the linear decay stops the generator
# while it is still sharpening; at 6,000 it reaches 68 % / 58 % HQ (seeds 0 / 1, W1 0.22 / 0.30) in about 7 minutes,
# the ring 94.7 % (seed 0). Five seeds: benchmarks/results/quality-gp-6000-cpu.md.
LONG_TOY_ITERS = {"ring": 6000, "grid": 6000}
DEFAULT_ITERS = 1500


def _opt(default, help: str, **extra):  # noqa: A002
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    # what to train
    lipschitz: str = _opt("gp", "Lipschitz constraint on the critic: " + ", ".join(
        cls.summary for cls in CONSTRAINTS.values()), choices=CONSTRAINTS.keys())
    dataset: str = _opt("8gaussians", "training data: toy 2-D " + ", ".join(TOY_DATASETS) + "; images "
                        + ", ".join(IMAGE_DATASETS), choices=DATASETS)
    iters: int | None = _opt(None, "generator iterations to train (the total, also when resuming; default: 6000 on "
                                   "the ring and grid benchmarks, 1500 otherwise)")
    # data
    data_root: str | None = _opt(None, "folder of the image data (folder: required; mnist/cifar10/lsun: "
                                       "default ./data)")
    download: bool = _opt(False, "download MNIST / CIFAR-10 through torchvision when missing")
    image_size: int | None = _opt(None, "image side in pixels (digits: 8 (native), 16, 32 or 64; mnist, cifar10: "
                                        "32; folder, lsun: 64). DCGAN models make 32 or 64")
    channels: int | None = _opt(None, "image channels for folder data: 3 (RGB) or 1 (grayscale)")
    num_workers: int = _opt(0, "data loader worker processes for file-backed datasets")
    batch_size: int = _opt(64, "batch size m (the WGAN paper's 64); under torchrun the global batch, split "
                               "equally over the processes (must be divisible by their number)")
    # models
    model: str | None = _opt(None, "mlp, dcgan or resnet (the ResNets of WGAN-GP and SN-GAN, 32 or 48 px; default: "
                                   "mlp for toy data and images not 32/64 px, dcgan otherwise)", choices=MODELS)
    nz: int | None = _opt(None, "noise dimension (default: 2 for toy data, 100 for images)")
    hidden: int = _opt(512, "MLP hidden units")
    depth: int | None = _opt(None, "MLP hidden layers (default: 3 for toy data, 4 for images)")
    ngf: int | None = _opt(None, "generator width (default: DCGAN 64; ResNet at 32 px 128, sn 256 as SN-GAN; at 48 "
                                 "px the base width 64)")
    ndf: int | None = _opt(None, "critic width (default: DCGAN 64; ResNet at 32 px 128; at 48 px the base width 64)")
    n_extra_layers: int = _opt(0, "DCGAN extra 3x3 conv layers in generator and critic")
    critic_activation: str | None = _opt(None, "MLP critic's activation: relu, or maxmin (pairs of units sorted, "
                                               "which keeps the gradient's norm: Anil et al. 2019); default: maxmin "
                                               "for sn, relu for clip and gp", choices=CRITIC_ACTIVATIONS)
    g_batchnorm: bool = _opt(True, "BatchNorm in the DCGAN generator (--no-g-batchnorm: the official --noBN)")
    critic_norm: str | None = _opt(None, "normalization in the DCGAN / ResNet critic: batch, layer or none "
                                         "(default: batch for clip as the official code; DCGAN: layer for gp, none "
                                         "for sn; ResNet: none for gp and sn, as their papers)",
                                   choices=CRITIC_NORMS)
    precision: str = _opt("fp32", "fp32, bf16 (autocast to bfloat16; recommended on GPUs that have it) or fp16 "
                                  "(autocast to float16 with a GradScaler for both optimizers and the penalty). "
                                  "Parameters, optimizer state, clipping and the spectral-norm power iteration stay "
                                  "in float32", choices=PRECISIONS)
    channels_last: bool = _opt(False, "conv models: parameters and batches in channels_last memory format (faster "
                                      "convolutions on tensor-core GPUs)")
    g_ema: float | None = _opt(None, "decay of an exponential moving average of the generator's parameters, ramped "
                                     "up with the step count (min(decay, (1+t)/(10+t))), used for samples, plots, "
                                     "evaluation, wgan-generate and wgan-eval (their --raw: the generator itself); "
                                     "0: off (default: see docs/training.md)")
    # optimization
    n_critic: int = _opt(5, "critic iterations per generator iteration")
    diters_schedule: str = _opt("constant", "clip: 'official' runs 100 critic iterations for the first 25 "
                                            "generator iterations and every 500th (the official WGAN code)",
                                choices=("constant", "official"))
    optimizer: str | None = _opt(None, "rmsprop or adam (default: rmsprop for clip, adam for gp and sn)",
                                 choices=OPTIMIZERS)
    lr_d: float | None = _opt(None, "critic learning rate (default: 5e-5 clip, 1e-4 gp/sn; toy data: clip 2e-4, "
                                    "gp/sn 3e-4, decayed by --lr-decay linear)")
    lr_g: float | None = _opt(None, "generator learning rate (default: as lr_d)")
    beta1: float | None = _opt(None, "Adam beta1 (default 0.5; sn on toy data 0)")
    beta2: float | None = _opt(None, "Adam beta2 (default 0.9)")
    lr_decay: str | None = _opt(None, "learning-rate schedule of both optimizers: none, or linear (to 0 at --iters, "
                                      "as the official WGAN-GP CIFAR-10 script); default: linear for toy data, else "
                                      "none", choices=("none", "linear"))
    # the constraint
    clip_value: float = _opt(0.01, "clip: clamp every critic weight to [-c, c]")
    fused_optimizer: bool = _opt(False, "clip (order after): the critic's optimizer step and the clamp in one "
                                        "fused pass (wgan_ext.ClippedRMSprop / ClippedAdam) instead of the optimizer "
                                        "and a Clipper; equal to float rounding")
    cuda_graphs: str = _opt("auto", "record each critic step and generator step as a CUDA graph after 3 eager "
                                    "warm-up steps and replay it (one launch per step instead of hundreds: for "
                                    "launch-bound small models); the random streams are those of eager, results "
                                    "equal to float rounding. auto: where they apply (CUDA, one process, not "
                                    "--fused-optimizer), falling back to eager with a warning if a capture fails; "
                                    "on: always (an error where they cannot); off: never. --cuda-graphs alone: on",
                            choices=GRAPH_MODES, const="on")
    clip_order: str = _opt("after", "clip: 'after' each critic update (the paper) or 'before' each critic "
                                    "iteration (the official code)", choices=("after", "before"))
    gp_weight: float | None = _opt(None, "gp: penalty weight lambda (default: 10 as the WGAN-GP paper; toy data "
                                         "0.1 as its toy script: with 10 the 2-D runs oscillate)")
    gp_one_sided: bool = _opt(False, "gp: penalize only gradient norms above 1")
    sn_power_iterations: int = _opt(1, "sn: power iterations per critic forward")
    # run
    seed: int = _opt(0, "random seed (models, data, noise)")
    device: str = _opt("auto", "auto (cuda when available), cpu or cuda[:N]; under torchrun auto and cuda mean "
                               "cuda:LOCAL_RANK")
    dist_backend: str = _opt("auto", "torchrun only: torch.distributed backend, auto (nccl on CUDA, gloo on CPU), "
                                     "gloo or nccl", choices=DIST_BACKENDS)
    out: str | None = _opt(None, "run folder (default: runs/<dataset>-<lipschitz>-<time>, under torchrun "
                                 "<time> is the job's run id; with --resume: the folder resumed from). A folder "
                                 "that holds a run is continued when the options match, else refused")
    log_every: int = _opt(20, "read the metrics back from the device every N generator iterations (one host-device "
                              "synchronization per N; metrics.jsonl still has one line per iteration); the NaN/Inf "
                              "check and SIGTERM/Ctrl-C act at these points, and at checkpoints")
    checkpoint_every: int = _opt(500, "write checkpoints/last.pt every N generator iterations (and at the end)")
    checkpoint_minutes: float = _opt(10.0, "also write it when this many minutes have passed since the last one "
                                           "(what a killed job can lose at most); 0: off")
    plot_every: int = _opt(500, "write plots every N generator iterations (and at the end); 0: only at the end")
    plots: bool = _opt(True, "write PNG plots (matplotlib)")
    eval_every: int = _opt(0, "evaluate sample quality every N generator iterations into eval.jsonl (toy data: "
                              "exact W1 and modes; digits: Fréchet classifier distance); 0: off. wgan-eval then "
                              "correlates it with the W estimate")
    n_samples: int | None = _opt(None, "samples in the sample plot (toy: 1000; images: 64)")
    tensorboard: bool = _opt(True, "write TensorBoard events when tensorboard is installed")
    progress: bool = _opt(True, "show a progress bar")

    def __post_init__(self):
        if isinstance(self.cuda_graphs, bool):  # configs and checkpoints made when it was a flag
            self.cuda_graphs = "on" if self.cuda_graphs else "off"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


OPTIONS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# What an option absent from a saved config (a run made before it existed) meant for that run.
BEFORE_IT_EXISTED = {"g_ema": 0.0}
# What a resumed run may change; everything else comes from the checkpoint.
RESUMABLE = {"iters", "device", "log_every", "checkpoint_every", "checkpoint_minutes", "plot_every", "plots", "eval_every",
             "progress", "tensorboard", "num_workers", "data_root", "download", "dist_backend", "cuda_graphs", "out"}


def before_it_existed(saved: dict) -> dict:
    """BEFORE_IT_EXISTED for one saved config (a checkpoint's): also the options whose old meaning depends on it
    (the MLP critic had ReLU before --critic-activation; other critics have no such option)."""
    return {**BEFORE_IT_EXISTED, "critic_activation": "relu" if saved.get("model") == "mlp" else None}


def load_config_file(path: str) -> dict:
    """Options from a YAML, TOML or JSON file (keys: option names, '-' or '_')."""
    if not os.path.exists(path):
        raise ConfigError(f"--config: file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as e:
                raise ConfigError("--config: YAML files need PyYAML: pip install pyyaml (or use TOML)") from e
            with open(path) as f:
                data = yaml.safe_load(f)
        elif ext == ".toml":
            import tomllib

            with open(path, "rb") as f:
                data = tomllib.load(f)
        elif ext == ".json":
            with open(path) as f:
                data = json.load(f)
        else:
            raise ConfigError(f"--config: {path!r}: use a .yaml, .yml, .toml or .json file")
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"--config: cannot parse {path!r}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path!r} must hold a mapping of option names to values")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in OPTIONS:
            raise ConfigError(f"--config: unknown option {key!r} in {path!r}; options: {', '.join(OPTIONS)}")
        out[name] = value
    return out


def from_dict(values: dict) -> TrainConfig:
    unknown = set(values) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}; options: {', '.join(OPTIONS)}")
    return TrainConfig(**values)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """A copy with every None default filled in for the mode and dataset, validated."""
    c = dataclasses.replace(cfg)
    _check_choices(c)
    toy = c.dataset in TOY_DATASETS
    if c.iters is None:
        c.iters = LONG_TOY_ITERS.get(c.dataset, DEFAULT_ITERS)
    if c.nz is None:
        c.nz = 2 if toy else 100
    if c.depth is None:
        c.depth = 3 if toy else 4
    if c.image_size is None and not toy:
        c.image_size = {"digits": 8, "mnist": 32, "cifar10": 32, "synthetic": 32}.get(c.dataset, 64)
    if c.model is None:
        c.model = "dcgan" if (not toy and c.image_size in DCGAN_SIZES) else "mlp"
    mode = constraint_class(c.lipschitz)
    if c.critic_activation is None and c.model == "mlp":
        c.critic_activation = mode.mlp_critic_activation
    if c.critic_norm is None:
        c.critic_norm = mode.default_critic_norm
        if c.model == "resnet" and c.critic_norm != "batch":  # the WGAN-GP and SN-GAN ResNet critics: none
            c.critic_norm = "none"
    if c.ngf is None:
        c.ngf = mode.resnet_ngf if (c.model == "resnet" and c.image_size == 32) else 64
    if c.ndf is None:
        c.ndf = 128 if (c.model == "resnet" and c.image_size == 32) else 64
    if c.optimizer is None:
        c.optimizer = mode.default_optimizer
    if c.lr_d is None:
        c.lr_d = mode.default_lr(toy)
    if c.lr_decay is None:
        c.lr_decay = mode.default_lr_decay(toy)
    if c.lr_g is None:
        c.lr_g = c.lr_d
    if c.beta1 is None:
        c.beta1 = mode.default_beta1(toy)
    if c.beta2 is None:
        c.beta2 = 0.9
    if c.gp_weight is None:
        c.gp_weight = 0.1 if toy else 10.0
    if c.g_ema is None:
        c.g_ema = DEFAULT_G_EMA
    if c.n_samples is None:
        c.n_samples = 1000 if toy else 64
    if c.out is None:
        c.out = os.path.join("runs", f"{c.dataset}-{c.lipschitz}-{_run_name()}")
    validate(c)
    return c


def _run_name() -> str:
    """The default run folder's last part: the start time, or under torchrun (torchelastic) the job's run id, which
    its elastic restarts share (so that a restarted group finds the run folder and continues it)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def _check_choices(c: TrainConfig) -> None:
    for name, f in OPTIONS.items():
        choices = f.metadata.get("choices")
        value = getattr(c, name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"--{_flag(name)}: {value!r} is not one of {', '.join(choices)}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def validate(c: TrainConfig) -> None:
    """Raise ConfigError naming the first invalid option of a resolved config."""
    _check_choices(c)

    def need(ok: bool, name: str, allowed: str):
        if not ok:
            raise ConfigError(f"--{_flag(name)}: got {getattr(c, name)!r}; {allowed}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for name in ("iters", "batch_size", "nz", "hidden", "depth", "ngf", "ndf", "n_critic", "sn_power_iterations",
                 "n_samples", "log_every"):
        need(is_int(getattr(c, name)) and getattr(c, name) >= 1, name, "must be an integer >= 1")
    for name in ("n_extra_layers", "num_workers", "plot_every", "eval_every", "seed"):
        need(is_int(getattr(c, name)) and getattr(c, name) >= 0, name, "must be an integer >= 0")
    need(is_int(c.checkpoint_every) and c.checkpoint_every >= 1, "checkpoint_every", "must be an integer >= 1")
    need(is_num(c.checkpoint_minutes) and c.checkpoint_minutes >= 0, "checkpoint_minutes", "must be a number >= 0")
    for name in ("lr_d", "lr_g"):
        need(is_num(getattr(c, name)) and getattr(c, name) > 0, name, "the learning rate must be a number > 0")
    for name in ("beta1", "beta2"):
        need(is_num(getattr(c, name)) and 0 <= getattr(c, name) < 1, name, "must be in [0, 1)")
    need(is_num(c.clip_value) and c.clip_value > 0, "clip_value", "the clip value c must be a number > 0")
    need(is_num(c.g_ema) and 0 <= c.g_ema < 1, "g_ema", "the EMA decay must be in [0, 1) (0: off)")
    need(is_num(c.gp_weight) and c.gp_weight >= 0, "gp_weight", "the penalty weight must be a number >= 0")
    for name in ("download", "g_batchnorm", "gp_one_sided", "fused_optimizer", "tensorboard", "channels_last",
                 "progress", "plots"):
        need(isinstance(getattr(c, name), bool), name, "must be true or false")
    need(isinstance(c.device, str) and (c.device in ("auto", "cpu") or c.device.startswith("cuda")), "device",
         "use auto, cpu or cuda[:N]")
    if c.dataset in IMAGE_DATASETS:
        need(is_int(c.image_size) and c.image_size >= 1, "image_size", "must be an integer >= 1")
        if c.dataset == "digits":
            need(c.image_size in (8, 16, 32, 64), "image_size", "digits come at 8 px, upscaled to 16, 32 or 64")
        if c.model == "dcgan":
            need(c.image_size in DCGAN_SIZES, "image_size",
                 f"the DCGAN models make 32 or 64 px images (use --model mlp for {c.image_size} px)")
        if c.model == "resnet":
            need(c.image_size in RESNET_SIZES, "image_size",
                 f"the ResNet models make 32 or 48 px images (use --model mlp for {c.image_size} px)")
        if c.dataset == "folder":
            need(c.data_root is not None, "data_root", "the folder dataset needs --data-root FOLDER")
        if c.channels is not None:
            need(c.channels in (1, 3), "channels", "use 1 or 3")
    else:
        need(c.model == "mlp", "model", "toy 2-D data trains MLPs (--model mlp)")
    constraint_class(c.lipschitz).validate(c)
    if c.critic_activation is not None and c.model != "mlp":
        raise ConfigError(f"--critic-activation: the {c.model} critic keeps its paper's activations; the option "
                          "chooses the MLP critic's (--model mlp)")
    if c.critic_activation == "maxmin":
        need(c.hidden % 2 == 0, "hidden", "maxmin pairs the MLP critic's hidden units: give an even number")
    if c.channels_last and c.model == "mlp":
        raise ConfigError("--channels-last: a memory format of convolutions; the MLP models have none (use --model "
                          "dcgan or resnet)")
    if c.eval_every and c.dataset not in TOY_DATASETS and c.dataset != "digits":
        raise ConfigError(f"--eval-every: no offline quality metric for {c.dataset!r} (toy data and digits have one)")
    if c.fused_optimizer and (c.lipschitz != "clip" or c.clip_order != "after"):
        raise ConfigError("--fused-optimizer: the fused step clamps after the update, so it needs --lipschitz clip "
                          "with --clip-order after")
    if c.diters_schedule == "official" and c.lipschitz != "clip":
        raise ConfigError("--diters-schedule official belongs to weight clipping (--lipschitz clip)")
