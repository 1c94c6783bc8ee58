"""wgan_ext.data: toy distributions, image datasets (digits, folders, missing torchvision data) and the resumable
batch stream."""

import io
import math
import sys

import numpy as np
import pytest
import torch

from wgan_ext.train.data import (DATASETS, IMAGE_DATASETS, TOY_DATASETS, Batches, DataError, ImageData, ToyDistribution,
                           image_data, toy_distribution)

MIXTURES = ("8gaussians", "25gaussians", "ring", "grid")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_names():
    assert DATASETS == TOY_DATASETS + IMAGE_DATASETS
    assert len(set(DATASETS)) == 11


def test_synthetic_images_are_fixed_smooth_and_in_range():
    a, b = image_data("synthetic", image_size=16, channels=1), image_data("synthetic")
    assert a.shape == (1, 16, 16) and b.shape == (3, 32, 32) and len(a) == len(b) == 1024
    assert torch.equal(a.tensor, image_data("synthetic", image_size=16, channels=1).tensor)  # the same every time
    assert a.tensor.min() >= -1 and a.tensor.max() <= 1 and a.tensor.std() > 0.1
    assert (a.tensor[:, :, 1:] - a.tensor[:, :, :-1]).abs().max() < 0.5  # smooth: neighbours close
    with pytest.raises(ValueError, match="channels=2 is not supported for 'synthetic'"):
        image_data("synthetic", channels=2)
    with pytest.raises(ValueError, match="image_size must be an integer >= 4"):
        image_data("synthetic", image_size=2)


# ------------------------------------------------------------------------------------------------------------- toy
@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_shape_dtype_and_reproducible(name):
    dist = toy_distribution(name)
    assert isinstance(dist, ToyDistribution) and dist.name == name
    x = dist.sample(500, _gen(3))
    assert x.shape == (500, 2) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    assert torch.equal(x, dist.sample(500, _gen(3)))
    assert not torch.equal(x, dist.sample(500, _gen(4)))
    assert dist.sample(0, _gen()).shape == (0, 2)


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_leaves_global_rngs_alone(name):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    toy_distribution(name).sample(1000, _gen(1))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()


@pytest.mark.parametrize("name", MIXTURES)
def test_mixture_samples_cluster_on_the_centres(name):
    dist = toy_distribution(name)
    c, std = dist.centers, dist.std
    assert c.dtype == torch.float64 and c.shape[1] == 2 and std > 0
    x = dist.sample(2000, _gen(7)).double()
    d = torch.cdist(x, c)
    nearest = d.argmin(dim=1)
    assert (d.min(dim=1).values < 5 * std).all()
    assert set(nearest.tolist()) == set(range(len(c)))          # every mode is hit
    counts = torch.bincount(nearest, minlength=len(c)).double()
    assert counts.min() > 0.4 * 2000 / len(c)                     # roughly uniform over modes
    residual = x - c[nearest]
    assert abs(residual.std().item() / std - 1) < 0.05           # the stated per-coordinate std
    assert residual.mean(dim=0).abs().max() < 0.1 * std


def test_mixture_centres():
    g8 = toy_distribution("8gaussians")
    assert len(g8.centers) == 8
    assert torch.allclose(g8.centers.norm(dim=1), torch.full((8,), 2 / 1.414, dtype=torch.float64))
    assert math.isclose(g8.std, 0.02 / 1.414)
    angles = sorted(round(math.degrees(math.atan2(y, x))) % 360 for x, y in g8.centers.tolist())
    assert angles == list(range(0, 360, 45))

    ring = toy_distribution("ring")
    assert len(ring.centers) == 8 and len({tuple(p) for p in ring.centers.round(decimals=6).tolist()}) == 8
    assert torch.allclose(ring.centers.norm(dim=1), torch.ones(8, dtype=torch.float64))
    assert torch.allclose(ring.centers[1], torch.tensor([0.5 ** 0.5, 0.5 ** 0.5], dtype=torch.float64))
    assert ring.std == 0.01

    grid = toy_distribution("grid")
    values = {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert len(grid.centers) == 25 and grid.std == 0.05
    assert {tuple(p) for p in grid.centers.tolist()} == {(a, b) for a in values for b in values}

    g25 = toy_distribution("25gaussians")
    assert torch.allclose(g25.centers, grid.centers / 2.828)
    assert math.isclose(g25.std, 0.05 / 2.828)


def test_swissroll_lies_on_the_spiral():
    dist = toy_distribution("swissroll")
    assert dist.centers is None and dist.std is None
    x = dist.sample(2000, _gen(5)).double()
    r = x.norm(dim=1)
    assert r.min() > 1.5 * math.pi / 7.5 - 0.2 and r.max() < 4.5 * math.pi / 7.5 + 0.2
    t = torch.linspace(1.5 * math.pi, 4.5 * math.pi, 20000, dtype=torch.float64)
    curve = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 7.5
    dist_to_curve = torch.cdist(x, curve).min(dim=1).values
    assert dist_to_curve.max() < 5 * 0.25 / 7.5
    assert dist_to_curve.mean() > 0.2 * 0.25 / 7.5                 # there is noise
    # t ~ U[1.5pi, 4.5pi]: radius is about uniform on [0.63, 1.88]
    assert abs(r.mean().item() - 3 * math.pi / 7.5) < 0.05


def test_toy_errors():
    with pytest.raises(ValueError, match="unknown dataset 'moons'.*8gaussians.*lsun"):
        toy_distribution("moons")
    with pytest.raises(ValueError, match="'digits' is an image dataset"):
        toy_distribution("digits")
    dist = toy_distribution("ring")
    with pytest.raises(ValueError, match="n must be an integer >= 0, got -1"):
        dist.sample(-1, _gen())
    with pytest.raises(ValueError, match="n must be an integer >= 0, got 2.5"):
        dist.sample(2.5, _gen())
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got int"):
        dist.sample(3, 0)
    with pytest.raises(ValueError, match=r"centers must be a \(K, 2\) tensor"):
        ToyDistribution("mine", torch.zeros(3, 3), 0.1)
    with pytest.raises(ValueError, match="std must be a finite number > 0, got 0"):
        ToyDistribution("mine", torch.zeros(3, 2), 0)


# ---------------------------------------------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits():
    return image_data("digits")


def test_digits(digits):
    assert digits.tensor.shape == (1797, 1, 8, 8) and digits.tensor.dtype == torch.float32
    assert digits.shape == (1, 8, 8) and len(digits) == 1797 and digits.dataset is None
    assert digits.tensor.min() == -1 and digits.tensor.max() == 1
    from sklearn.datasets import load_digits
    raw = torch.as_tensor(load_digits().images[5], dtype=torch.float32)
    assert torch.allclose(digits.tensor[5, 0], raw / 8 - 1)
    assert torch.equal(image_data("digits", image_size=8, channels=1).tensor, digits.tensor)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_digits_upscaled(size, digits):
    up = image_data("digits", image_size=size)
    assert up.shape == (1, size, size) and up.tensor.shape == (1797, 1, size, size)
    assert up.tensor.min() >= -1 and up.tensor.max() <= 1
    # downscaling back by block averaging stays close to the original
    back = torch.nn.functional.avg_pool2d(up.tensor[:50], size // 8)
    assert (back - digits.tensor[:50]).abs().mean() < 0.15


@pytest.mark.parametrize("size", [7, 12, 128, 0, "32", 32.0])
def test_digits_bad_image_size(size):
    with pytest.raises(ValueError, match=r"image_size=.*not supported for 'digits'.*8, 16, 32, 64"):
        image_data("digits", image_size=size)


def test_digits_bad_channels():
    with pytest.raises(ValueError, match=r"channels=3 is not supported for 'digits': use 1"):
        image_data("digits", channels=3)


def test_image_data_errors():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*8gaussians.*digits.*lsun"):
        image_data("imagenet")
    with pytest.raises(ValueError, match="'ring' is a 2-D toy distribution"):
        image_data("ring")
    with pytest.raises(TypeError, match="download must be True or False, got 'yes'"):
        image_data("digits", download="yes")
    with pytest.raises(ValueError, match="give exactly one of tensor and dataset"):
        ImageData("x", (1, 2, 2))


# ---------------------------------------------------------------------------------------------------------- folder
def _write_pngs(folder, n, size=(20, 12), start=0):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(n):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{start + i:03d}.png")


def test_folder_flat(tmp_path):
    _write_pngs(tmp_path, 5)
    (tmp_path / "notes.txt").write_text("not an image")
    data = image_data("folder", root=str(tmp_path), image_size=16)
    assert data.shape == (3, 16, 16) and len(data) == 5 and data.tensor is None
    x = data.dataset[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.5 and x.max() > 0.5
    gray = image_data("folder", root=tmp_path, image_size=8, channels=1)
    assert gray.shape == (1, 8, 8) and gray.dataset[4].shape == (1, 8, 8)
    assert image_data("folder", root=tmp_path).shape == (3, 64, 64)


def test_folder_pixel_values(tmp_path):
    from PIL import Image
    Image.new("RGB", (4, 4), (255, 0, 128)).save(tmp_path / "a.png")
    x = image_data("folder", root=tmp_path, image_size=4).dataset[0]
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-6)


def test_folder_with_class_subfolders(tmp_path):
    _write_pngs(tmp_path / "cats", 3)
    _write_pngs(tmp_path / "dogs", 4, start=10)
    data = image_data("folder", root=tmp_path, image_size=8, channels=1)
    assert data.shape == (1, 8, 8) and len(data) == 7
    image, label = data.dataset[6]
    assert image.shape == (1, 8, 8) and label == 1
    batch = Batches(data, batch_size=3, seed=0).next()
    assert batch.shape == (3, 1, 8, 8) and batch.dtype == torch.float32


def test_folder_missing_or_empty(tmp_path):
    with pytest.raises(ValueError, match="'folder' dataset needs root"):
        image_data("folder")
    with pytest.raises(DataError, match="is not a folder"):
        image_data("folder", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="no images found.*directly inside.*class subfolders"):
        image_data("folder", root=tmp_path)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="empty_class"):
        image_data("folder", root=tmp_path)


def test_folder_bad_options(tmp_path):
    _write_pngs(tmp_path, 1)
    with pytest.raises(ValueError, match=r"channels=2 is not supported for 'folder': use 3 or 1"):
        image_data("folder", root=tmp_path, channels=2)
    with pytest.raises(ValueError, match="image_size for 'folder' must be an integer >= 1.*got 0"):
        image_data("folder", root=tmp_path, image_size=0)


def test_folder_without_torchvision(tmp_path, monkeypatch):
    _write_pngs(tmp_path, 1)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(DataError, match="pip install torchvision"):
        image_data("folder", root=tmp_path)


def test_unreadable_image(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    data = image_data("folder", root=tmp_path, image_size=8)
    with pytest.raises(DataError, match="could not read image .*broken.png"):
        data.dataset[0]


# ------------------------------------------------------------------------------------------- torchvision datasets
@pytest.mark.parametrize("name, title", [("mnist", "MNIST"), ("cifar10", "CIFAR-10")])
def test_missing_torchvision_data(tmp_path, name, title):
    with pytest.raises(DataError, match=rf"{title} not found under '{tmp_path}'.*--download"):
        image_data(name, root=str(tmp_path), download=False)


def test_lsun_missing(tmp_path):
    with pytest.raises(DataError, match=r"LSUN bedroom_train not found.*cannot download LSUN.*fyu/lsun"):
        image_data("lsun", root=str(tmp_path), download=True)


@pytest.mark.parametrize("name, channels, allowed", [("mnist", 3, "1"), ("cifar10", 1, "3"), ("lsun", 1, "3")])
def test_torchvision_bad_channels(tmp_path, name, channels, allowed):
    with pytest.raises(ValueError, match=rf"channels={channels} is not supported for '{name}': use {allowed}"):
        image_data(name, root=str(tmp_path), channels=channels)


# --------------------------------------------------------------------------------------------------------- batches
def _take(batches: Batches, k: int) -> list[torch.Tensor]:
    return [batches.next() for _ in range(k)]


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _check_resume(make, k: int, more: int) -> None:
    """Same seed: same batches; state after k batches, loaded into a fresh stream: the batches k+1, k+2, ..."""
    a, b = make(), make()
    first = _take(a, k)
    assert all(torch.equal(x, y) for x, y in zip(first, _take(b, k)))
    state = _roundtrip(a.state_dict())
    rest = _take(a, more)
    resumed = make()
    resumed.load_state_dict(state)
    again = _take(resumed, more)
    assert all(torch.equal(x, y) for x, y in zip(rest, again))
    assert not torch.equal(rest[0], first[0])


@pytest.mark.parametrize("name", ["8gaussians", "swissroll"])
def test_toy_batches_resume(name):
    dist = toy_distribution(name)
    _check_resume(lambda: Batches(dist, 64, seed=11), k=5, more=4)
    x = Batches(dist, 64, seed=11).next()
    assert x.shape == (64, 2) and x.dtype == torch.float32
    assert torch.equal(x, dist.sample(64, _gen(11)))
    assert not torch.equal(x, Batches(dist, 64, seed=12).next())


def test_toy_batches_leave_global_rng_alone():
    state = torch.get_rng_state()
    _take(Batches(toy_distribution("grid"), 32, seed=0), 3)
    assert torch.equal(torch.get_rng_state(), state)


def test_digits_batches_epochs_and_resume(digits):
    n, bs = len(digits), 500                  # 3 batches an epoch, 297 images dropped
    stream = Batches(digits, bs, seed=3)
    for epoch in range(2):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(3 + epoch))
        for i in range(3):
            x = stream.next()
            assert x.shape == (bs, 1, 8, 8) and x.dtype == torch.float32
            assert torch.equal(x, digits.tensor[perm[i * bs:(i + 1) * bs]])
    assert stream.state_dict() == {"kind": "image", "epoch": 1, "position": 1500}
    _check_resume(lambda: Batches(digits, bs, seed=3), k=2, more=5)   # resume mid-epoch, run across epochs
    _check_resume(lambda: Batches(digits, bs, seed=3), k=3, more=2)   # resume at the end of an epoch


def _folder_data(tmp_path):
    _write_pngs(tmp_path, 10)
    return image_data("folder", root=tmp_path, image_size=8)


def test_folder_batches_resume(tmp_path):
    data = _folder_data(tmp_path)
    stream = Batches(data, 4, seed=1)                  # 2 batches an epoch
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    first = stream.next()
    assert torch.equal(first, torch.stack([data.dataset[i] for i in perm[:4].tolist()]))
    _check_resume(lambda: Batches(data, 4, seed=1), k=3, more=4)


def test_folder_batches_leave_global_rng_alone(tmp_path):
    data = _folder_data(tmp_path)
    state = torch.get_rng_state()
    _take(Batches(data, 3, seed=0), 5)
    assert torch.equal(torch.get_rng_state(), state)


def test_folder_batches_with_workers(tmp_path):
    data = _folder_data(tmp_path)
    plain = _take(Batches(data, 3, seed=2), 4)
    workers = _take(Batches(data, 3, seed=2, num_workers=2), 4)
    assert all(torch.equal(x, y) for x, y in zip(plain, workers))


@pytest.mark.parametrize("batch_size", [0, -1, 1798, 2.0, None])
def test_image_batches_bad_batch_size(digits, batch_size):
    with pytest.raises(ValueError, match=rf"batch_size must be an integer from 1 to the dataset size N=1797.*"
                                         rf"got {batch_size}"):
        Batches(digits, batch_size, seed=0)


def test_batches_other_errors(digits):
    dist = toy_distribution("ring")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        Batches(dist, 0, seed=0)
    with pytest.raises(TypeError, match="source must be a ToyDistribution or ImageData, got Tensor"):
        Batches(torch.zeros(10, 2), 2, seed=0)
    with pytest.raises(TypeError, match="seed must be an integer, got 1.5"):
        Batches(dist, 2, seed=1.5)
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0, got -1"):
        Batches(digits, 2, seed=0, num_workers=-1)
    assert len(Batches(digits, 1797, seed=0).next()) == 1797


def test_batches_bad_state(digits):
    toy = Batches(toy_distribution("ring"), 8, seed=0)
    images = Batches(digits, 8, seed=0)
    with pytest.raises(ValueError, match="not for image data.*'toy'"):
        images.load_state_dict(toy.state_dict())
    with pytest.raises(ValueError, match="not for toy data.*'image'"):
        toy.load_state_dict(images.state_dict())
    with pytest.raises(ValueError, match="position must be an integer from 0 to N=1797, got 5000"):
        images.load_state_dict({"kind": "image", "epoch": 0, "position": 5000})
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got -1"):
        images.load_state_dict({"kind": "image", "epoch": -1, "position": 0})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_are_the_cpu_stream_copied_without_a_sync():
    # the same values as on the CPU; the host-to-device copy is from pinned memory, so it does not wait for the GPU
    import importlib.util

    sources = [toy_distribution("8gaussians")]
    if importlib.util.find_spec("sklearn") is not None:  # the GPU image may lack scikit-learn (digits)
        sources.append(image_data("digits"))
    for source in sources:
        cpu, gpu = Batches(source, 16, seed=3), Batches(source, 16, seed=3, device="cuda")
        slow = torch.cuda._sleep  # queue GPU work that takes a while, then draw a batch: must not wait for it
        for _ in range(3):
            slow(50_000_000)  # about 30 ms of GPU time
            x = gpu.next()
            assert not torch.cuda.current_stream().query(), "next() waited for the queued GPU work"
            assert x.device.type == "cuda" and x.dtype == torch.float32
            assert torch.equal(x.cpu(), cpu.next())
