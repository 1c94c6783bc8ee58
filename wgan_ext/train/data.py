"""Training data for WGAN runs: 2-D toy distributions, image datasets, and a resumable stream of batches.

Public API:
    TOY_DATASETS, IMAGE_DATASETS, DATASETS   names accepted by the functions below
    DataError                                 data missing or unusable (a ValueError); the message says what to do
    ToyDistribution, toy_distribution(name)   Gaussian mixtures ("8gaussians", "25gaussians", "ring", "grid") and
                                              "swissroll"; ``sample(n, generator)`` draws only from ``generator``
    ImageData, image_data(name, ...)          "digits" (scikit-learn, offline, in memory), "folder" (your images),
                                              "mnist", "cifar10", "lsun" (through torchvision); values in [-1, 1]
    Batches(source, batch_size, seed, ...)    endless stream of batches; ``state_dict()`` / ``load_state_dict()``
                                              resume it exactly where it was

torchvision is imported only by the datasets that need it ("folder", "mnist", "cifar10", "lsun").
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["TOY_DATASETS", "IMAGE_DATASETS", "DATASETS", "DataError", "ToyDistribution", "toy_distribution",
           "ImageData", "image_data", "Batches"]

TOY_DATASETS = ("8gaussians", "25gaussians", "ring", "grid", "swissroll")
IMAGE_DATASETS = ("digits", "folder", "mnist", "cifar10", "lsun", "synthetic")
SYNTHETIC_N = 1024  # images in the synthetic dataset
DATASETS = TOY_DATASETS + IMAGE_DATASETS

DIGITS_SIZES = (8, 16, 32, 64)
DEFAULT_ROOT = "./data"
LSUN_CLASS = "bedroom_train"


class DataError(ValueError):
    """Data missing or unusable; the message says what to do."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _unknown(name) -> ValueError:
    return ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------------------------- toy 2-D
@dataclass(frozen=True, eq=False)
class ToyDistribution:
    """A 2-D toy distribution. For the Gaussian mixtures each sample picks one of ``centers`` uniformly at random
    and adds N(0, std^2 I); ``centers`` (K, 2, float64) and ``std`` are in the units of the samples. The swiss roll
    has neither (both None)."""

    name: str
    centers: torch.Tensor | None
    std: float | None

    def __post_init__(self) -> None:
        if self.centers is None:
            if self.name != "swissroll":
                raise ValueError(f"ToyDistribution {self.name!r}: centers=None is only allowed for 'swissroll'")
            return
        if not isinstance(self.centers, torch.Tensor) or self.centers.dim() != 2 or self.centers.shape[1] != 2 \
                or self.centers.shape[0] < 1:
            shape = tuple(self.centers.shape) if isinstance(self.centers, torch.Tensor) else type(self.centers).__name__
            raise ValueError(f"ToyDistribution {self.name!r}: centers must be a (K, 2) tensor with K >= 1, got {shape}")
        if not isinstance(self.std, numbers.Real) or not (math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"ToyDistribution {self.name!r}: std must be a finite number > 0, got {self.std!r}")

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` samples, (n, 2) float32 on the CPU, drawn only from ``generator`` (a CPU torch.Generator)."""
        if not _is_int(n) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
        n = int(n)
        if self.centers is None:
            return _swiss_roll(n, generator)
        centers = self.centers.to(torch.float64)
        mode = torch.randint(len(centers), (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (centers[mode] + self.std * noise).to(torch.float32)


def _swiss_roll(n: int, generator: torch.Generator) -> torch.Tensor:
    """scikit-learn's make_swiss_roll (noise 0.25), its (x, z) plane, divided by 7.5 (the WGAN-GP toy script)."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    points = points + 0.25 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (points / 7.5).to(torch.float32)


def _grid_centers() -> torch.Tensor:
    side = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    x, y = torch.meshgrid(side, side, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def toy_distribution(name: str) -> ToyDistribution:
    """The toy distribution called ``name`` (one of TOY_DATASETS)."""
    if name == "8gaussians":      # WGAN-GP toy script: unit vectors times 2, noise 0.02, all divided by 1.414
        d = 1 / math.sqrt(2)
        unit = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1], [d, d], [d, -d], [-d, d], [-d, -d]],
                            dtype=torch.float64)
        return ToyDistribution(name, 2 * unit / 1.414, 0.02 / 1.414)
    if name == "25gaussians":     # WGAN-GP toy script: {-4..4}^2 grid, noise 0.05, all divided by 2.828
        return ToyDistribution(name, _grid_centers() / 2.828, 0.05 / 2.828)
    if name == "ring":            # mode-collapse protocol (VEEGAN, PacGAN): 8 modes on the unit circle, std 0.01
        angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        return ToyDistribution(name, torch.stack([torch.cos(angle), torch.sin(angle)], dim=1), 0.01)
    if name == "grid":            # same protocol: 25 modes on {-4..4}^2, std 0.05
        return ToyDistribution(name, _grid_centers(), 0.05)
    if name == "swissroll":
        return ToyDistribution(name, None, None)
    if name in IMAGE_DATASETS:
        raise ValueError(f"{name!r} is an image dataset, not a toy distribution; use image_data({name!r}) "
                         f"or one of: {', '.join(TOY_DATASETS)}")
    raise _unknown(name)


# ------------------------------------------------------------------------------------------------------------ images
@dataclass
class ImageData:
    """An image dataset with values in [-1, 1]. Exactly one of ``tensor`` (in memory, (N, C, H, W) float32) and
    ``dataset`` (file-backed; items are (C, H, W) tensors or (image, label) tuples) is set; ``shape`` is (C, H, W)."""

    name: str
    shape: tuple[int, int, int]
    tensor: torch.Tensor | None = None
    dataset: Dataset | None = None

    def __post_init__(self) -> None:
        if (self.tensor is None) == (self.dataset is None):
            raise ValueError(f"ImageData {self.name!r}: give exactly one of tensor and dataset")
        if len(self.shape) != 3 or not all(_is_int(s) and s >= 1 for s in self.shape):
            raise ValueError(f"ImageData {self.name!r}: shape must be (C, H, W) of positive ints, got {self.shape!r}")
        self.shape = tuple(int(s) for s in self.shape)
        if self.tensor is not None and tuple(self.tensor.shape[1:]) != self.shape:
            raise ValueError(f"ImageData {self.name!r}: tensor images are {tuple(self.tensor.shape[1:])}, "
                             f"shape says {self.shape}")

    def __len__(self) -> int:
        return len(self.tensor) if self.tensor is not None else len(self.dataset)


def _torchvision():
    try:
        import torchvision
    except ImportError as e:
        raise DataError(f"this dataset needs torchvision, which could not be imported ({e}); "
                        "install it with: pip install torchvision") from e
    return torchvision


def _image_size(name: str, image_size, default: int) -> int:
    if image_size is None:
        return default
    if not _is_int(image_size) or image_size < 1:
        raise ValueError(f"image_size for {name!r} must be an integer >= 1 (or None for {default}), "
                         f"got {image_size!r}")
    return int(image_size)


def _channels(name: str, channels, allowed: tuple[int, ...]) -> int:
    if channels is None:
        return allowed[0]
    if not _is_int(channels) or channels not in allowed:
        what = " or ".join(str(c) for c in allowed)
        raise ValueError(f"channels={channels!r} is not supported for {name!r}: use {what} (or None)")
    return int(channels)


def _transform(size: int, channels: int, grayscale: bool = False):
    """PIL image -> (channels, size, size) float32 in [-1, 1]: Resize + CenterCrop + ToTensor + Normalize."""
    T = _torchvision().transforms
    steps = [T.Grayscale(num_output_channels=1)] if grayscale else []
    steps += [T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize([0.5] * channels, [0.5] * channels)]
    return T.Compose(steps)


def _digits(image_size) -> ImageData:
    if image_size is None:
        image_size = 8
    if not _is_int(image_size) or image_size not in DIGITS_SIZES:
        raise ValueError(f"image_size={image_size!r} is not supported for 'digits': use one of "
                         f"{', '.join(map(str, DIGITS_SIZES))} (8 is native; larger sizes are upscaled)")
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16 * 2 - 1
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
        images = images.clamp(-1, 1)
    return ImageData("digits", (1, int(image_size), int(image_size)), tensor=images.contiguous())


def _synthetic(image_size, channels) -> ImageData:
    """SYNTHETIC_N smooth random images in memory (the same every time): throughput runs and benchmarks of image
    models without a dataset on disk, like torchvision's FakeData but without torchvision or per-item decoding."""
    image_size = 32 if image_size is None else image_size
    channels = 3 if channels is None else channels
    if not _is_int(image_size) or image_size < 4:
        raise ValueError(f"image_size must be an integer >= 4 for 'synthetic', got {image_size!r}")
    _channels("synthetic", channels, (1, 3))
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(SYNTHETIC_N, channels, 4, 4, generator=g) * 2 - 1
    images = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return ImageData("synthetic", (channels, image_size, image_size), tensor=images.contiguous())


class _FlatImages(Dataset):
    """Image files directly inside one folder; items are image tensors (no labels)."""

    def __init__(self, files: list[str], transform, mode: str):
        self.files, self.transform, self.mode = files, transform, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        path = self.files[i]
        try:
            with Image.open(path) as img:
                img = img.convert(self.mode)
        except OSError as e:
            raise DataError(f"could not read image {path}: {e}") from e
        return self.transform(img)


def _folder(root, image_size, channels) -> ImageData:
    if root is None:
        raise ValueError("the 'folder' dataset needs root: the folder that holds your images (--data-root)")
    size = _image_size("folder", image_size, 64)
    nc = _channels("folder", channels, (3, 1))
    tv = _torchvision()
    from torchvision.datasets.folder import IMG_EXTENSIONS

    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"folder dataset: {root!r} is not a folder (looked for a folder of images, or of class "
                        "subfolders of images)")
    transform = _transform(size, nc, grayscale=nc == 1)
    names = sorted(os.listdir(root))
    files = [os.path.join(root, f) for f in names
             if f.lower().endswith(IMG_EXTENSIONS) and os.path.isfile(os.path.join(root, f))]
    if files:
        dataset = _FlatImages(files, transform, "RGB" if nc == 3 else "L")
    else:
        looked = (f"looked for image files ({' '.join(IMG_EXTENSIONS)}) directly inside {root!r} or in class "
                  "subfolders of it")
        if not any(os.path.isdir(os.path.join(root, f)) for f in names):
            raise DataError(f"folder dataset: no images found; {looked}")
        try:
            dataset = tv.datasets.ImageFolder(root, transform=transform)
        except FileNotFoundError as e:
            raise DataError(f"folder dataset: {e}; {looked}") from e
        if len(dataset) == 0:
            raise DataError(f"folder dataset: no images found; {looked}")
    return ImageData("folder", (nc, size, size), dataset=dataset)


def _torchvision_dataset(name: str, root, image_size, channels, download: bool) -> ImageData:
    root = DEFAULT_ROOT if root is None else os.fspath(root)
    if name == "mnist":
        nc, size, title = _channels(name, channels, (1,)), _image_size(name, image_size, 32), "MNIST"
    elif name == "cifar10":
        nc, size, title = _channels(name, channels, (3,)), _image_size(name, image_size, 32), "CIFAR-10"
    else:
        nc, size, title = _channels(name, channels, (3,)), _image_size(name, image_size, 64), "LSUN"
    tv = _torchvision()
    transform = _transform(size, nc)
    if name == "lsun":
        where = os.path.join(root, f"{LSUN_CLASS}_lmdb")
        if not os.path.isdir(where):
            raise DataError(f"LSUN {LSUN_CLASS} not found: looked for {where!r}. torchvision cannot download LSUN; "
                            "get it with the download script of the LSUN project (https://github.com/fyu/lsun: "
                            f"python download.py -c bedroom), unzip it into {root!r}, or pass --data-root")
        try:
            import lmdb  # noqa: F401  (torchvision's LSUN reads it)
        except ImportError as e:
            raise DataError("the LSUN dataset needs the lmdb package: pip install lmdb") from e
        return ImageData(name, (nc, size, size), dataset=tv.datasets.LSUN(root, [LSUN_CLASS], transform=transform))
    cls = tv.datasets.MNIST if name == "mnist" else tv.datasets.CIFAR10
    try:
        dataset = cls(root, train=True, transform=transform, download=download)
    except (RuntimeError, OSError) as e:
        if download:
            raise DataError(f"{title}: could not download to {root!r} ({e}); check the network, or put the data "
                            "there yourself") from e
        raise DataError(f"{title} not found under {root!r} ({e}); pass --download (download=True) to fetch it, "
                        "or --data-root to point at it") from e
    return ImageData(name, (nc, size, size), dataset=dataset)


def image_data(name: str, *, root: str | None = None, image_size: int | None = None, channels: int | None = None,
               download: bool = False) -> ImageData:
    """The image dataset ``name`` (one of IMAGE_DATASETS), values in [-1, 1].

    digits: scikit-learn's 1797 8x8 digits in memory, upscaled bilinearly to image_size 16, 32 or 64 if asked.
    synthetic: 1024 smooth random images in memory (image_size default 32, channels 3): for throughput runs.
    folder: images in ``root`` (flat, or in class subfolders), RGB (channels 3) or grayscale (1), image_size 64.
    mnist, cifar10, lsun (bedroom_train): torchvision datasets under ``root`` (default ./data); image_size 32, 32
    and 64 by default. Missing data raises DataError (``download=True`` fetches MNIST and CIFAR-10).
    """
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    if name == "digits":
        _channels(name, channels, (1,))
        return _digits(image_size)
    if name == "folder":
        return _folder(root, image_size, channels)
    if name == "synthetic":
        return _synthetic(image_size, channels)
    if name in ("mnist", "cifar10", "lsun"):
        return _torchvision_dataset(name, root, image_size, channels, download)
    if name in TOY_DATASETS:
        raise ValueError(f"{name!r} is a 2-D toy distribution, not an image dataset; use toy_distribution({name!r}) "
                         f"or one of: {', '.join(IMAGE_DATASETS)}")
    raise _unknown(name)


# ----------------------------------------------------------------------------------------------------------- batches
class Batches:
    """Endless stream of training batches, resumable exactly (state_dict/load_state_dict).

    Toy data: samples from a CPU generator seeded with ``seed``. Images: epoch e visits the images in the order
    ``torch.randperm(N, generator=torch.Generator().manual_seed(seed + e))``, in consecutive batches, dropping the
    last incomplete one. File-backed datasets are read through a DataLoader (``num_workers`` processes).

    Data-parallel runs: ``batch_size`` is the global batch and ``rank``/``world_size`` pick this process's share, the
    contiguous slice ``[rank * b, (rank + 1) * b)`` with ``b = batch_size // world_size`` of the batch a single
    process would get. The stream advances by the global batch, so the state is the same on every rank and means the
    same under any world size. Images: only the local share is read.
    """

    def __init__(self, source: ToyDistribution | ImageData, batch_size: int, seed: int, device="cpu",
                 num_workers: int = 0, rank: int = 0, world_size: int = 1):
        if not isinstance(source, (ToyDistribution, ImageData)):
            raise TypeError(f"source must be a ToyDistribution or ImageData, got {type(source).__name__}")
        if not _is_int(seed):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        if not _is_int(num_workers) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if isinstance(source, ImageData):
            n = len(source)
            if not _is_int(batch_size) or not 1 <= batch_size <= n:
                raise ValueError(f"batch_size must be an integer from 1 to the dataset size N={n} "
                                 f"({source.name}), got {batch_size!r}")
        elif not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not _is_int(world_size) or world_size < 1 or not _is_int(rank) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer in [0, world_size), got rank={rank!r}, world_size={world_size!r}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
        self.source = source
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        local = self.batch_size // self.world_size
        self._share = slice(rank * local, (rank + 1) * local)   # this rank's part of each global batch
        self.seed = int(seed)
        self.device = torch.device(device)
        self.num_workers = int(num_workers)
        self.toy = isinstance(source, ToyDistribution)
        if self.toy:
            self.generator = torch.Generator().manual_seed(self.seed)
        else:
            self.n = len(source)
            self.epoch = 0
            self.position = 0
        self._perm: torch.Tensor | None = None    # permutation of self.epoch (image data)
        self._iter = None                          # DataLoader iterator over the rest of the epoch (file-backed)

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return self._perm

    def next(self) -> torch.Tensor:
        """The next batch: (batch_size, *shape) float32 on ``device``."""
        if self.toy:
            batch = self.source.sample(self.batch_size, self.generator)
            if self.world_size > 1:
                batch = batch[self._share]
            return self._to_device(batch)
        if self.position + self.batch_size > self.n:     # epoch exhausted (drop_last): start the next one
            self.epoch += 1
            self.position = 0
            self._perm = None
            self._iter = None
        perm = self._permutation()
        if self.source.tensor is not None:
            batch = self.source.tensor[perm[self.position:self.position + self.batch_size][self._share]]
        else:
            if self._iter is None:
                rest = perm[self.position:]
                if self.world_size > 1:  # this rank's share of each remaining full batch
                    full = rest.numel() // self.batch_size * self.batch_size
                    rest = rest[:full].view(-1, self.batch_size)[:, self._share].reshape(-1)
                self._iter = iter(self._loader(rest))
            batch = next(self._iter)
            if isinstance(batch, (list, tuple)):          # (images, labels)
                batch = batch[0]
        self.position += self.batch_size
        return self._to_device(batch)

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        # A copy to a GPU from pageable memory makes torch wait for everything queued on the GPU (a stream sync at
        # every critic step); from pinned memory it is queued behind that work and the host runs ahead.
        if self.device.type == "cuda" and batch.device.type == "cpu" and not batch.is_pinned():
            batch = batch.pin_memory()
        return batch.to(self.device, dtype=torch.float32, non_blocking=True)

    def _loader(self, indices: torch.Tensor) -> DataLoader:
        # an explicit generator keeps DataLoader from drawing its worker base seed from the global RNG
        return DataLoader(Subset(self.source.dataset, indices.tolist()), batch_size=self.batch_size // self.world_size,
                          shuffle=False,
                          num_workers=self.num_workers, drop_last=True, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def state_dict(self) -> dict:
        """Where the stream is: loads with torch.load(weights_only=True)."""
        if self.toy:
            return {"kind": "toy", "generator": self.generator.get_state()}
        return {"kind": "image", "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (from state_dict of a Batches over the same data, batch size and seed)."""
        kind = "toy" if self.toy else "image"
        if not isinstance(state, dict) or state.get("kind") != kind:
            got = state.get("kind") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"Batches state is not for {kind} data (its kind: {got!r})")
        if self.toy:
            gen = state.get("generator")
            if not isinstance(gen, torch.Tensor) or gen.dtype != torch.uint8:
                raise ValueError("Batches state: 'generator' must be a uint8 generator state tensor")
            self.generator.set_state(gen)
            return
        epoch, position = state.get("epoch"), state.get("position")
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"Batches state: epoch must be an integer >= 0, got {epoch!r}")
        if not _is_int(position) or not 0 <= position <= self.n:
            raise ValueError(f"Batches state: position must be an integer from 0 to N={self.n}, got {position!r}")
        self.epoch, self.position = int(epoch), int(position)
        self._perm = None
        self._iter = None
