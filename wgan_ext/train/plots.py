"""PNG plots for WGAN training runs.

Public API:
    median_filter(values, window) -> numpy.ndarray
        running median over a centred window (edges use only the values available).
    plot_w_estimate(iterations, w_estimates, path, *, window=None, title=None)
        the critic's W estimate E[f(real)] - E[f(fake)] against generator iterations, raw and median-filtered.
    plot_losses(iterations, series, path, *, title=None)
        several named curves, one subplot each, sharing the x axis.
    plot_toy(real, fake, path, *, critic=None, centers=None, title=None, grid=100)
        2-D real and generated samples, optional mode centres and the critic's values as filled contours.
    save_image_grid(images, path, *, nrow=8)
        a grid of (N, C, H, W) images in [-1, 1] as one PNG.

matplotlib is imported only inside the functions that draw, so the package imports without it; those functions
then raise ImportError("plots need matplotlib: pip install matplotlib"). Every function writes its PNG atomically
(a temporary file in the same folder, then os.replace), creating parent folders as needed.
"""

from __future__ import annotations

import bisect
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import nn

__all__ = ["median_filter", "plot_w_estimate", "plot_losses", "plot_toy", "save_image_grid"]

ArrayLike = Union[Sequence[float], np.ndarray, torch.Tensor]
PathLike = Union[str, os.PathLike]

MATPLOTLIB_MISSING = "plots need matplotlib: pip install matplotlib"
W_LABEL = "W estimate  E[f(real)] − E[f(fake)]"
X_LABEL = "generator iterations"
REAL_COLOUR, FAKE_COLOUR = "tab:blue", "tab:orange"
CRITIC_CHUNK = 8192  # grid points per critic call


# ----------------------------------------------------------------------------------------------------------- helpers

def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(MATPLOTLIB_MISSING) from e
    return Figure


def _as_float_array(values: ArrayLike | None) -> np.ndarray:
    """A float64 numpy copy of a sequence, array or tensor (None entries become NaN)."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy().copy()
    return np.array(values, dtype=np.float64)


def _write_atomically(path: PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temporary name next to `path`, then move it into place; on failure remove it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _save_figure(fig: Any, path: PathLike) -> None:
    _write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


# ------------------------------------------------------------------------------------------------------------ curves

def median_filter(values: ArrayLike, window: int) -> np.ndarray:
    """Running median of a 1-D series over a centred window of `window` points.

    Near the ends the window holds only the values that exist (no padding). A window longer than the series is
    clipped to the largest odd length <= len(values); window <= 1 returns a copy. Even windows > 1 are rejected.
    The input is assumed NaN-free. A sorted list slides along the series, so long series with wide windows stay
    fast (100k points, window 5001: well under a second).
    """
    x = _as_float_array(values)
    if x.ndim != 1:
        raise ValueError(f"median_filter needs a 1-D series, got shape {x.shape}")
    window = int(window)
    if window <= 1:
        return x.copy()
    if window % 2 == 0:
        raise ValueError(f"median_filter window must be odd, got {window}")
    n = len(x)
    window = min(window, n if n % 2 else n - 1)
    half = window // 2
    vals = x.tolist()
    sorted_window = sorted(vals[:half])  # the points i - half .. i + half, kept sorted as i moves right
    out = np.empty(n)
    for i in range(n):
        entering, leaving = i + half, i - half - 1
        if entering < n:
            bisect.insort(sorted_window, vals[entering])
        if leaving >= 0:
            del sorted_window[bisect.bisect_left(sorted_window, vals[leaving])]
        m = len(sorted_window)
        mid = m // 2
        out[i] = sorted_window[mid] if m % 2 else 0.5 * (sorted_window[mid - 1] + sorted_window[mid])
    return out


def _default_window(n: int) -> int:
    window = max(1, n // 20)
    return window if window % 2 else window + 1


def plot_w_estimate(iterations: ArrayLike, w_estimates: ArrayLike, path: PathLike, *, window: int | None = None,
                    title: str | None = None) -> None:
    """The W estimate against generator iterations: raw curve thin and light, its running median on top.

    window: median filter length (odd); default about len/20. Non-finite estimates are drawn as gaps in the raw
    curve and left out of the median.
    """
    Figure = _figure_class()
    its, w = _as_float_array(iterations).ravel(), _as_float_array(w_estimates).ravel()
    if len(its) != len(w):
        raise ValueError(f"{len(its)} iterations but {len(w)} W estimates")
    finite = np.isfinite(w)
    if window is None:
        window = _default_window(int(finite.sum()))
    smooth = median_filter(w[finite], window)

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    marker = "o" if len(w) == 1 else None
    ax.plot(its, np.where(finite, w, np.nan), color="tab:blue", lw=0.7, alpha=0.35, marker=marker, label="raw")
    ax.plot(its[finite], smooth, color="tab:blue", lw=1.8, marker=marker, label=f"median filter ({window})")
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(W_LABEL)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    _save_figure(fig, path)


def plot_losses(iterations: ArrayLike, series: Mapping[str, ArrayLike], path: PathLike, *,
                title: str | None = None) -> None:
    """Several named curves (e.g. critic loss, generator loss, gradient norm), one subplot each, shared x axis."""
    Figure = _figure_class()
    if not series:
        raise ValueError("plot_losses needs at least one series")
    its = _as_float_array(iterations).ravel()
    curves = {name: _as_float_array(values).ravel() for name, values in series.items()}
    for name, values in curves.items():
        if len(values) != len(its):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(its)} iterations")

    fig = Figure(figsize=(7, 1.2 + 1.8 * len(curves)), layout="constrained")
    axes = fig.subplots(len(curves), 1, sharex=True, squeeze=False)[:, 0]
    marker = "o" if len(its) == 1 else None
    for ax, (name, values) in zip(axes, curves.items()):
        ax.plot(its, values, lw=1.0, marker=marker)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(X_LABEL)
    if title:
        fig.suptitle(title)
    _save_figure(fig, path)


# ------------------------------------------------------------------------------------------------------------ toy 2-D

def _points(x: ArrayLike, name: str) -> np.ndarray:
    a = _as_float_array(x)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {tuple(a.shape)}")
    return a


def _critic_on_grid(critic: Callable[[torch.Tensor], torch.Tensor], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The critic's scores on the mesh xs × ys, as a (len(ys), len(xs)) array; no autograd, mode left alone."""
    device = torch.device("cpu")
    if isinstance(critic, nn.Module):
        first = next(critic.parameters(), None)
        if first is not None:
            device = first.device
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1)).to(device=device, dtype=torch.float32)
    scores = []
    with torch.no_grad():
        for chunk in pts.split(CRITIC_CHUNK):
            out = critic(chunk)
            if out.numel() != len(chunk):
                raise ValueError(f"critic returned shape {tuple(out.shape)} for {len(chunk)} points; "
                                 "expected (m,) or (m, 1)")
            scores.append(out.reshape(-1).to("cpu", torch.float64))
    return torch.cat(scores).numpy().reshape(gx.shape)


def plot_toy(real: ArrayLike, fake: ArrayLike, path: PathLike, *,
             critic: Callable[[torch.Tensor], torch.Tensor] | None = None, centers: ArrayLike | None = None,
             title: str | None = None, grid: int = 100) -> None:
    """Real and generated 2-D samples; optional mode centres (crosses) and the critic's landscape underneath.

    critic: called on (m, 2) float32 tensors (on the device of its first parameter if it is an nn.Module, else the
    CPU) under torch.no_grad(); its train/eval mode is not changed. It is evaluated on a grid × grid mesh covering
    both sample sets with a margin and drawn as filled contours with a colour bar.
    """
    Figure = _figure_class()
    real_np, fake_np = _points(real, "real"), _points(fake, "fake")
    centers_np = None if centers is None else _points(centers, "centers")

    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.subplots()
    if critic is not None:
        both = np.concatenate([real_np, fake_np])
        both = both[np.isfinite(both).all(axis=1)]  # a diverged generator must not blow up the mesh
        lo, hi = (both.min(axis=0), both.max(axis=0)) if len(both) else (np.full(2, -1.0), np.full(2, 1.0))
        margin = np.maximum(0.1 * (hi - lo), 0.5)
        lo, hi = lo - margin, hi + margin
        xs, ys = np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid)
        scores = _critic_on_grid(critic, xs, ys)
        filled = ax.contourf(xs, ys, scores, levels=20, cmap="Greys", alpha=0.8)
        fig.colorbar(filled, ax=ax, label="critic f(x)")
    # drawn bottom to top: mode centres, generated, real (a tight real mode would hide under a large marker)
    if centers_np is not None:
        ax.scatter(centers_np[:, 0], centers_np[:, 1], marker="x", s=40, linewidths=1.0, color="tab:red",
                   label="modes", zorder=2)
    ax.scatter(fake_np[:, 0], fake_np[:, 1], s=6, color=FAKE_COLOUR, alpha=0.7, label="generated", zorder=3)
    ax.scatter(real_np[:, 0], real_np[:, 1], s=4, color=REAL_COLOUR, alpha=0.8, label="real", zorder=4)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=2)
    if title:
        ax.set_title(title)
    _save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------- images

def _tile(images: np.ndarray, nrow: int, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) -> (C, rows*(H+p)+p, cols*(W+p)+p) with zero padding; the layout of torchvision's make_grid."""
    n, c, h, w = images.shape
    if n == 1:
        return images[0]
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = np.zeros((c, rows * (h + padding) + padding, cols * (w + padding) + padding), dtype=images.dtype)
    for k, img in enumerate(images):
        top, left = (k // cols) * (h + padding) + padding, (k % cols) * (w + padding) + padding
        out[:, top:top + h, left:left + w] = img
    return out


def _save_with_pil(rgb: np.ndarray, tmp: str) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(tmp, format="PNG")


def _save_with_matplotlib(rgb: np.ndarray, tmp: str) -> None:
    try:
        from matplotlib.image import imsave
    except ImportError as e:
        raise ImportError(MATPLOTLIB_MISSING) from e
    imsave(tmp, rgb, format="png")


def save_image_grid(images: torch.Tensor | np.ndarray, path: PathLike, *, nrow: int = 8) -> None:
    """Images (N, C, H, W) in [-1, 1] with C in {1, 3} as one PNG grid (nrow per row, 2-pixel black padding).

    Values are mapped to [0, 1] (clamped) and rounded to 8 bits. Drawn with torchvision.utils.make_grid and
    written with PIL (RGB) where torchvision is importable, else tiled the same way in numpy and written with
    matplotlib (RGBA, opaque).
    """
    x = torch.as_tensor(images).detach()
    if x.dim() != 4 or x.shape[1] not in (1, 3) or x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 1 and C in {{1, 3}}, "
                         f"got shape {tuple(x.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    x = (torch.nan_to_num(x.to("cpu", torch.float32), nan=0.0).clamp(-1, 1) + 1) / 2
    try:
        import PIL.Image  # noqa: F401  (torchvision depends on Pillow; checked so that the fallback is whole)
        from torchvision.utils import make_grid
    except ImportError:
        grid, save = _tile(x.numpy(), nrow), _save_with_matplotlib
    else:
        grid, save = make_grid(x, nrow=nrow, padding=2).numpy(), _save_with_pil
    # grid: (C, H, W) in [0, 1]; C is still 1 for a single grey image
    rgb = np.clip(np.rint(grid * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    _write_atomically(path, lambda tmp: save(np.ascontiguousarray(rgb), tmp))
