"""wgan-generate: samples from a trainer checkpoint.

    wgan-generate RUN_DIR_OR_CHECKPOINT -n 64 -o samples.png    a grid (images) or a scatter plot (toy data)
    wgan-generate RUN_DIR -n 10000 -o samples.pt                 the samples as a tensor (torch.load)
    wgan-generate RUN_DIR -n 10000 -o samples.npy                the samples as a NumPy array
    wgan-generate RUN_DIR -n 64 -o folder/                       one PNG per image (image data)

The checkpoint is read with ``torch.load(weights_only=True)``; the generator runs in eval mode.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from .checkpoint import CheckpointError, load_checkpoint
from .config import from_dict
from .data import TOY_DATASETS
from .errors import ConfigError
from .models import build_generator


def load_generator(path: str, device: str = "cpu", raw: bool = False) -> tuple[torch.nn.Module, dict]:
    """The generator of a checkpoint (eval mode) and the checkpoint's config dict: its EMA (--g-ema) where the run
    kept one, else (or with `raw`) the generator itself."""
    state = load_checkpoint(path)
    c = from_dict(state["config"])
    g = build_generator(c, tuple(state["sample_shape"]))
    ema = state.get("generator_ema")
    g.load_state_dict(state["generator"] if (raw or ema is None) else ema)
    return g.to(device).eval(), state["config"]


@torch.no_grad()
def generate(path: str, n: int, seed: int = 0, device: str = "cpu", raw: bool = False) -> torch.Tensor:
    """n samples (CPU float32) from the checkpoint's generator (its EMA where there is one, unless `raw`), noise
    from `seed`."""
    g, cfg = load_generator(path, device, raw)
    z = torch.randn(n, cfg["nz"], generator=torch.Generator().manual_seed(seed))
    return g(z.to(device)).float().cpu()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wgan-generate", description="Write samples from a wgan-train checkpoint.")
    p.add_argument("checkpoint", help="a run folder (uses checkpoints/last.pt) or a checkpoint file")
    p.add_argument("-n", "--num", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("-o", "--output", default="samples.png",
                   help="file to write: .png (grid or scatter), .pt, .npy; or a folder ending in / for one PNG "
                        "per image (default samples.png)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--nrow", type=int, default=8, help="images per grid row (default 8)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--raw", action="store_true", help="sample the generator itself, not its EMA (runs with --g-ema)")
    args = p.parse_args(argv)
    if args.num < 1:
        p.error(f"-n/--num must be >= 1, got {args.num}")
    out = args.output
    ext = os.path.splitext(out)[1].lower()
    folder = out.endswith(os.sep) or os.path.isdir(out)
    if not folder and ext not in (".png", ".pt", ".npy"):
        p.error(f"-o/--output: {out!r}: use a .png, .pt or .npy file, or a folder ending in /")
    try:
        x = generate(args.checkpoint, args.num, args.seed, args.device, raw=args.raw)
        _, cfg = load_generator(args.checkpoint)
    except (CheckpointError, ConfigError) as e:
        print(f"wgan-generate: error: {e}", file=sys.stderr)
        return 2
    toy = cfg["dataset"] in TOY_DATASETS
    if os.path.dirname(out.rstrip(os.sep)):
        os.makedirs(os.path.dirname(out.rstrip(os.sep)), exist_ok=True)
    if folder:
        if toy:
            p.error("a folder of PNGs needs image data; for toy data write .png, .pt or .npy")
        from .plots import save_image_grid

        os.makedirs(out, exist_ok=True)
        for i, img in enumerate(x):
            save_image_grid(img[None], os.path.join(out, f"{i:06d}.png"), nrow=1)
    elif ext == ".pt":
        torch.save(x, out)
    elif ext == ".npy":
        import numpy as np

        np.save(out, x.numpy())
    elif toy:
        from .data import toy_distribution
        from .plots import plot_toy

        dist = toy_distribution(cfg["dataset"])
        real = dist.sample(args.num, torch.Generator().manual_seed(args.seed + 1))
        plot_toy(real, x, out, centers=dist.centers, title=f"{cfg['dataset']}, {cfg['lipschitz']}")
    else:
        from .plots import save_image_grid

        save_image_grid(x, out, nrow=args.nrow)
    print(f"wgan-generate: wrote {args.num} samples to {out}", file=sys.stderr)
    return 0



if __name__ == "__main__":
    sys.exit(main())
