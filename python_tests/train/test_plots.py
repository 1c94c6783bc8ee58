"""wgan_ext.plots: the running median against a direct computation, PNG output, atomic writes, fallbacks."""

import importlib
import math
import os
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from wgan_ext.train import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, size=None):
    """A non-empty, complete PNG (PIL decodes every pixel); `size` is (width, height)."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as im:
        im.load()
        if size is not None:
            assert im.size == size
        return np.asarray(im.convert("RGB"))


def only_file(folder, name):
    """`name` is the only entry in `folder` (no temporary files left behind)."""
    assert sorted(os.listdir(folder)) == [name]


def hide_modules(monkeypatch, *names):
    """Make `import name` fail for each name (a None entry in sys.modules raises ImportError)."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


# ------------------------------------------------------------------------------------------------------ median_filter

def direct_running_median(x, window):
    n = len(x)
    if window <= 1:
        return x.copy()
    window = min(window, n if n % 2 else n - 1)
    half = window // 2
    return np.array([np.median(x[max(0, i - half):i + half + 1]) for i in range(n)])


@pytest.mark.parametrize("n", [1, 2, 3, 10, 37, 200])
@pytest.mark.parametrize("window", [1, 3, 5, 9, 21, 401])
def test_median_filter_matches_direct_computation(n, window):
    rng = np.random.default_rng(n * 1000 + window)
    for x in (rng.normal(size=n), rng.integers(0, 4, size=n).astype(float)):  # the second has many ties
        np.testing.assert_allclose(plots.median_filter(x, window), direct_running_median(x, window),
                                   rtol=0, atol=1e-12)


def test_median_filter_removes_a_spike():
    x = [1.0, 2.0, 3.0, 100.0, 5.0, 6.0, 7.0]
    np.testing.assert_array_equal(plots.median_filter(x, 3), [1.5, 2.0, 3.0, 5.0, 6.0, 6.0, 6.5])
    flat = [0.0] * 5 + [-50.0] + [0.0] * 5
    np.testing.assert_array_equal(plots.median_filter(flat, 3), np.zeros(11))


def test_median_filter_edges_and_clipping():
    x = np.array([4.0, 1.0, 3.0, 2.0])  # window 99 is clipped to 3, the largest odd length <= 4
    np.testing.assert_array_equal(plots.median_filter(x, 99), [2.5, 3.0, 2.0, 2.5])
    np.testing.assert_array_equal(plots.median_filter(x, 99), plots.median_filter(x, 3))
    assert plots.median_filter([], 5).shape == (0,)


@pytest.mark.parametrize("window", [1, 0, -3])
def test_median_filter_small_window_returns_a_copy(window):
    x = np.array([3.0, -1.0, 2.0])
    y = plots.median_filter(x, window)
    np.testing.assert_array_equal(y, x)
    y[0] = 99.0
    assert x[0] == 3.0


def test_median_filter_accepts_tensors_and_rejects_bad_input():
    t = torch.tensor([5.0, 0.0, 5.0, 5.0, 0.0])
    np.testing.assert_array_equal(plots.median_filter(t, 3), [2.5, 5.0, 5.0, 5.0, 2.5])
    with pytest.raises(ValueError, match="odd"):
        plots.median_filter([1.0, 2.0, 3.0], 4)
    with pytest.raises(ValueError, match="1-D"):
        plots.median_filter(np.zeros((3, 3)), 3)


# ------------------------------------------------------------------------------------------------------------ curves

@pytest.mark.parametrize("n", [1, 2, 300])
def test_plot_w_estimate_writes_png(tmp_path, n):
    its = list(range(1, n + 1))
    w = (np.exp(-np.arange(n) / 50.0) + np.random.default_rng(0).normal(0, 0.05, n)).tolist()
    path = tmp_path / "new" / "deeper" / "w.png"  # parent folders are created
    plots.plot_w_estimate(its, w, path, title="toy run")
    assert_png(path)
    only_file(path.parent, "w.png")


def test_plot_w_estimate_window_nonfinite_and_tensors(tmp_path):
    w = torch.linspace(1, 0, 50, dtype=torch.float64)
    w[7], w[20] = math.nan, math.inf
    plots.plot_w_estimate(torch.arange(50), w, str(tmp_path / "w.png"), window=5)
    assert_png(tmp_path / "w.png")
    with pytest.raises(ValueError, match="iterations"):
        plots.plot_w_estimate([1, 2, 3], [0.1, 0.2], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_plot_losses_writes_png(tmp_path):
    its = list(range(100))
    series = {"loss_d": np.linspace(-1, 0, 100).tolist(), "loss_g": [0.5] * 100,
              "grad_norm_mean": [1.0 + 0.01 * i for i in range(99)] + [None]}  # None (JSON null) is a gap
    plots.plot_losses(its, series, tmp_path / "losses.png", title="losses")
    assert_png(tmp_path / "losses.png")
    plots.plot_losses([3], {"loss_d": [0.1]}, tmp_path / "one.png")
    assert_png(tmp_path / "one.png")


def test_plot_losses_rejects_bad_series(tmp_path):
    with pytest.raises(ValueError, match="loss_g"):
        plots.plot_losses([1, 2, 3], {"loss_d": [1, 2, 3], "loss_g": [1, 2]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_losses([1, 2, 3], {}, tmp_path / "x.png")
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------------------------ toy 2-D

def toy_samples():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    real = centers[torch.randint(0, 4, (200,), generator=g)] + 0.05 * torch.randn(200, 2, generator=g)
    fake = 0.5 * torch.randn(150, 2, generator=g)
    return real, fake, centers


def test_plot_toy_without_critic(tmp_path):
    real, fake, centers = toy_samples()
    plots.plot_toy(real, fake, tmp_path / "toy.png")
    assert_png(tmp_path / "toy.png")
    plots.plot_toy(real.numpy(), fake.numpy(), tmp_path / "toy2.png", centers=centers.numpy(), title="8 gaussians")
    assert_png(tmp_path / "toy2.png")


@pytest.mark.parametrize("training", [True, False])
def test_plot_toy_with_module_critic(tmp_path, training):
    real, fake, centers = toy_samples()
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    critic.train(training)
    calls = []
    critic.register_forward_hook(
        lambda module, inputs, output: calls.append((torch.is_grad_enabled(), inputs[0].dtype,
                                                     inputs[0].shape, output.requires_grad)))
    plots.plot_toy(real, fake, tmp_path / "toy.png", critic=critic, centers=centers, grid=30)
    assert_png(tmp_path / "toy.png")
    assert calls, "the critic was never evaluated"
    assert all(not grad and not req for grad, _, _, req in calls)
    assert all(dtype == torch.float32 and shape[1] == 2 for _, dtype, shape, _ in calls)
    assert sum(shape[0] for _, _, shape, _ in calls) == 30 * 30
    assert critic.training is training
    assert all(m.training is training for m in critic.modules())
    assert all(p.grad is None for p in critic.parameters())


def test_plot_toy_with_plain_callable_critic(tmp_path):
    real, fake, _ = toy_samples()
    seen = []

    def critic(x):
        seen.append((x.device.type, x.dtype, x.shape, torch.is_grad_enabled()))
        return (x ** 2).sum(dim=1)  # (m,) scores

    plots.plot_toy(real, fake, tmp_path / "toy.png", critic=critic, grid=5)
    assert_png(tmp_path / "toy.png")
    assert seen == [("cpu", torch.float32, (25, 2), False)]


def test_plot_toy_rejects_bad_shapes(tmp_path):
    real, fake, _ = toy_samples()
    with pytest.raises(ValueError, match="real"):
        plots.plot_toy(real[:, :1], fake, tmp_path / "x.png")
    with pytest.raises(ValueError, match="centers"):
        plots.plot_toy(real, fake, tmp_path / "x.png", centers=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="critic returned"):
        plots.plot_toy(real, fake, tmp_path / "x.png", critic=lambda x: torch.zeros(len(x), 2), grid=4)
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------------------------------------- images

def grid_size(n, h, w, nrow, padding=2):
    """(width, height) of make_grid's layout."""
    cols = min(nrow, n)
    rows = -(-n // cols)
    return cols * (w + padding) + padding, rows * (h + padding) + padding


@pytest.mark.parametrize("n,c,nrow", [(16, 1, 8), (5, 3, 2), (3, 1, 8)])
def test_save_image_grid_size(tmp_path, n, c, nrow):
    images = torch.rand(n, c, 8, 6) * 2 - 1
    plots.save_image_grid(images, tmp_path / "g" / "grid.png", nrow=nrow)
    assert_png(tmp_path / "g" / "grid.png", size=grid_size(n, 8, 6, nrow))
    only_file(tmp_path / "g", "grid.png")


def test_save_image_grid_of_16_grey_images(tmp_path):
    plots.save_image_grid(torch.zeros(16, 1, 8, 8), tmp_path / "grid.png", nrow=8)
    assert_png(tmp_path / "grid.png", size=(8 * (8 + 2) + 2, 2 * (8 + 2) + 2))


@pytest.mark.parametrize("c", [1, 3])
def test_save_image_grid_maps_minus_one_to_0_and_one_to_255(tmp_path, c):
    images = torch.stack([torch.full((c, 4, 4), -1.0), torch.full((c, 4, 4), 1.0)])
    plots.save_image_grid(images, tmp_path / "grid.png", nrow=2)
    px = assert_png(tmp_path / "grid.png", size=(2 * 6 + 2, 6 + 2))
    assert (px[2:6, 2:6] == 0).all()  # first cell: -1 -> black
    assert (px[2:6, 8:12] == 255).all()  # second cell: +1 -> white
    assert (px[0:2] == 0).all() and (px[:, 6:8] == 0).all()  # black padding


def test_save_image_grid_single_image_and_clamping(tmp_path):
    img = torch.tensor([[[-5.0, 0.0], [1.0, 7.0]]])[None]  # (1, 1, 2, 2), values beyond [-1, 1] are clamped
    plots.save_image_grid(img.numpy(), tmp_path / "one.png", nrow=1)
    px = assert_png(tmp_path / "one.png", size=(2, 2))  # a single image has no padding (as make_grid)
    assert px[:, :, 0].tolist() == [[0, 128], [255, 255]]
    assert (px[:, :, 0] == px[:, :, 1]).all() and (px[:, :, 0] == px[:, :, 2]).all()


@pytest.mark.parametrize("shape", [(8, 8), (3, 8, 8), (2, 2, 8, 8), (2, 4, 8, 8), (0, 1, 8, 8), (1, 1, 1, 8, 8)])
def test_save_image_grid_rejects_bad_shapes(tmp_path, shape):
    with pytest.raises(ValueError) as info:
        plots.save_image_grid(torch.zeros(shape), tmp_path / "x.png")
    assert str(tuple(shape)) in str(info.value) and "(N, C, H, W)" in str(info.value)
    assert "C in {1, 3}" in str(info.value)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("n,c,nrow", [(1, 3, 8), (5, 1, 2), (16, 3, 8), (7, 3, 3)])
def test_save_image_grid_fallback_matches_torchvision(tmp_path, monkeypatch, n, c, nrow):
    images = torch.rand(n, c, 5, 7, generator=torch.Generator().manual_seed(n)) * 2 - 1
    plots.save_image_grid(images, tmp_path / "tv.png", nrow=nrow)
    with monkeypatch.context() as m:  # no torchvision: numpy tiling + matplotlib imsave
        hide_modules(m, "torchvision", "torchvision.utils")
        plots.save_image_grid(images, tmp_path / "mpl.png", nrow=nrow)
    expected = assert_png(tmp_path / "tv.png", size=grid_size(n, 5, 7, nrow) if n > 1 else (7, 5))
    np.testing.assert_array_equal(assert_png(tmp_path / "mpl.png"), expected)


# ---------------------------------------------------------------------------------------------- missing matplotlib

def test_module_imports_without_matplotlib_and_says_what_to_install(tmp_path, monkeypatch):
    hide_modules(monkeypatch, "matplotlib", "matplotlib.figure", "matplotlib.image", "matplotlib.pyplot")
    monkeypatch.delitem(sys.modules, "wgan_ext.train.plots")
    fresh = importlib.import_module("wgan_ext.train.plots")
    assert fresh is not plots
    calls = [lambda p: fresh.plot_w_estimate([1, 2], [0.1, 0.2], p),
             lambda p: fresh.plot_losses([1, 2], {"loss_d": [0.1, 0.2]}, p),
             lambda p: fresh.plot_toy(np.zeros((3, 2)), np.ones((3, 2)), p)]
    for call in calls:
        with pytest.raises(ImportError, match="plots need matplotlib: pip install matplotlib"):
            call(tmp_path / "x.png")
    assert not os.listdir(tmp_path)
    fresh.save_image_grid(torch.zeros(2, 3, 4, 4), tmp_path / "grid.png")  # torchvision + PIL are enough
    assert_png(tmp_path / "grid.png")
    hide_modules(monkeypatch, "torchvision", "torchvision.utils")
    with pytest.raises(ImportError, match="plots need matplotlib: pip install matplotlib"):
        fresh.save_image_grid(torch.zeros(2, 3, 4, 4), tmp_path / "grid.png")
    only_file(tmp_path, "grid.png")


# ------------------------------------------------------------------------------------------------------ atomic write

def test_failed_figure_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "w.png"
    path.write_bytes(b"old plot")

    def half_written_then_crash(self, fname, *args, **kwargs):
        with open(fname, "wb") as f:
            f.write(PNG_SIGNATURE + b"trunc")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_written_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.plot_w_estimate([1, 2, 3], [0.3, 0.2, 0.1], path)
    assert path.read_bytes() == b"old plot"
    only_file(tmp_path, "w.png")


def test_failed_replace_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "grid.png"
    path.write_bytes(b"old grid")
    replaced = []

    def refuse(src, dst):
        replaced.append((os.path.dirname(src), os.path.getsize(src)))
        raise OSError("no")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="no"):
        plots.save_image_grid(torch.zeros(4, 3, 8, 8), path)
    monkeypatch.undo()
    assert replaced == [(str(tmp_path), replaced[0][1])] and replaced[0][1] > 0  # temp was complete, same folder
    assert path.read_bytes() == b"old grid"
    only_file(tmp_path, "grid.png")


def test_successful_write_replaces_existing_file(tmp_path):
    path = tmp_path / "toy.png"
    path.write_bytes(b"old")
    real, fake, _ = toy_samples()
    plots.plot_toy(real, fake, path)
    assert_png(path)
    only_file(tmp_path, "toy.png")
