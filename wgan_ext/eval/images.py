"""Sample quality for image GANs, offline: a Fréchet distance on the features of a small digits classifier trained
here in a few seconds, the classes the samples cover, and (where torchmetrics and its weights are at hand) FID.

Public API:
    gaussian_stats(features)                  mean (d,) and covariance (d, d) of (n, d) features, float64
    frechet_distance(mu1, sigma1, mu2, sigma2) Fréchet distance between two Gaussians (float64, eigh-based)
    DigitsClassifier                          64 -> 128 -> 64 -> 10 MLP on 8x8 digits; ``features(x)`` gives the
                                              64 penultimate activations; larger images are average-pooled to 8x8
    digits_split()                            (train, heldout) indices of the fixed 80/20 split of load_digits
    digits_classifier(seed=0)                 a DigitsClassifier trained deterministically on the 80 % split (cached
                                              per seed; ``.heldout_accuracy`` on the other 20 %)
    clear_cache()                             forget the cached classifiers and real-data statistics
    image_metrics(fake, real=None, classifier=None)
                                              {"fcd", "classes_covered", "class_kl", "class_hist", "n"}
    inception_fid(fake, real)                 FID through torchmetrics; RuntimeError saying why when it cannot run

Images are (N, 1, S, S) tensors with values in [-1, 1] and S a multiple of 8 (the digits at 8, 16, 32 or 64 px).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..train.data import image_data

__all__ = ["gaussian_stats", "frechet_distance", "DigitsClassifier", "digits_split", "digits_classifier",
           "clear_cache", "image_metrics", "inception_fid"]

N_CLASSES = 10
COVERED_FRACTION = 0.01   # a class is covered when it is the predicted class of at least this fraction of samples
KL_EPS = 1e-6             # added to each histogram bin before renormalizing, so that the KL stays finite
RANGE_TOL = 1e-4          # slack on [-1, 1] for round-off in the caller's conversions

SPLIT_SEED = 20240601     # the 80/20 split is the same for every classifier seed
TRAIN_FRACTION = 0.8
EPOCHS = 12
BATCH_SIZE = 128
LEARNING_RATE = 3e-3

_CLASSIFIERS: dict[int, "DigitsClassifier"] = {}
_REAL_STATS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}   # image size -> (mu, sigma, class hist)


# --------------------------------------------------------------------------------------------------- Fréchet distance
def _as_float64(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a numeric array or tensor, got {type(x).__name__}") from e


def gaussian_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and sample covariance (d, d) (divided by n - 1) of ``features`` (n, d) with n >= 2, float64."""
    f = _as_float64(features, "features")
    if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] < 1:
        raise ValueError(f"features must be an (n, d) array with n >= 2 rows and d >= 1 columns, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"features (shape {f.shape}) contain non-finite values")
    mu = f.mean(axis=0)
    centered = f - mu
    sigma = centered.T @ centered / (f.shape[0] - 1)
    return mu, sigma


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix through eigh; negative eigenvalues (round-off) are clipped to 0."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), squared as in FID:

        ||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr (S1^1/2 S2 S1^1/2)^1/2

    in float64. S1^1/2 comes from eigh of S1 and the trace term from the eigenvalues of the symmetrized
    S1^1/2 S2 S1^1/2, both with round-off negatives clipped to 0; the result is clipped at 0.
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    s1, s2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length d, got shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"sigma1 and sigma2 must be ({d}, {d}) to match mu of length {d}, got shapes "
                         f"{s1.shape} and {s2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} (shape {a.shape}) contains non-finite values")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    middle = (middle + middle.T) / 2
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt
    return max(float(value), 0.0)


# -------------------------------------------------------------------------------------------------------- the images
def _check_shape(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 1, S, S), got {type(x).__name__}")
    ok = x.dim() == 4 and x.shape[1] == 1 and x.shape[2] == x.shape[3] and x.shape[2] >= 8 and x.shape[2] % 8 == 0
    if not ok:
        raise ValueError(f"{name} must be (N, 1, S, S) single-channel square images with S a multiple of 8 "
                         f"(8, 16, 32, 64, ...), got shape {tuple(x.shape)}")


def _check_images(x, name: str) -> torch.Tensor:
    """``x`` as float32 on the CPU, after checking shape (N >= 2), dtype and values (finite, in [-1, 1])."""
    _check_shape(x, name)
    shape = tuple(x.shape)
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 images (for a covariance), got shape {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor with values in [-1, 1], got dtype {x.dtype} "
                         f"(shape {shape})")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} (shape {shape}) contains non-finite values")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1 - RANGE_TOL or hi > 1 + RANGE_TOL:
        raise ValueError(f"{name} values must lie in [-1, 1] (as the generator's tanh gives), got values in "
                         f"[{lo:.4g}, {hi:.4g}] (shape {shape})")
    return x.clamp(-1, 1)


# -------------------------------------------------------------------------------------------------- the classifier
class DigitsClassifier(nn.Module):
    """64 -> 128 -> 64 -> 10 MLP with ReLU on 8x8 digit images in [-1, 1]. Inputs (N, 1, S, S) with S a multiple of
    8 are average-pooled to 8x8 first; ``features`` are the 64 activations after the second ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, N_CLASSES)
        self.heldout_accuracy: float = math.nan   # set by digits_classifier

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 64) penultimate activations (the Fréchet features) of images ``x`` (N, 1, S, S)."""
        _check_shape(x, "x")
        if x.shape[-1] != 8:
            x = F.adaptive_avg_pool2d(x, 8)
        return self.hidden(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 10) class logits of images ``x`` (N, 1, S, S)."""
        return self.head(self.features(x))


def _labels() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.as_tensor(load_digits().target, dtype=torch.long)


def digits_split() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, heldout) indices into the 1797 digits: a fixed random 80/20 split, the same for every seed."""
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_train = round(TRAIN_FRACTION * 1797)
    return perm[:n_train], perm[n_train:]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one CPU thread: on a busy machine, small matrices train many times faster than with several."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _accuracy(model: DigitsClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def _train(seed: int) -> DigitsClassifier:
    labels = _labels()
    train, heldout = digits_split()
    # the native 8x8 digits and the 8x8 average-pools of their 16, 32 and 64 px upscales: what forward() sees
    images = [image_data("digits", image_size=8).tensor]
    images += [F.adaptive_avg_pool2d(image_data("digits", image_size=s).tensor, 8) for s in (16, 32, 64)]
    x = torch.cat([im[train] for im in images])
    y = labels[train].repeat(len(images))

    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(seed)
        model = DigitsClassifier()
        order = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        for _ in range(EPOCHS):
            perm = torch.randperm(len(x), generator=order)
            for start in range(0, len(x), BATCH_SIZE):
                batch = perm[start:start + BATCH_SIZE]
                loss = F.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.eval()
    model.requires_grad_(False)
    model.heldout_accuracy = _accuracy(model, images[0][heldout], labels[heldout])
    return model


def digits_classifier(seed: int = 0) -> DigitsClassifier:
    """A DigitsClassifier trained on the fixed 80 % split of scikit-learn's digits (Adam, minibatches, a fixed
    number of epochs; a few seconds on a CPU). Deterministic for a seed and leaves the global RNG as it was. Eval
    mode, frozen, cached per seed; ``.heldout_accuracy`` is its accuracy on the other 20 % (about 0.98)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if seed not in _CLASSIFIERS:
        _CLASSIFIERS[seed] = _train(seed)
    return _CLASSIFIERS[seed]


def clear_cache() -> None:
    """Forget the trained classifiers and the cached statistics of the real digits."""
    _CLASSIFIERS.clear()
    _REAL_STATS.clear()


# ------------------------------------------------------------------------------------------------------------ metrics
def _features_and_hist(classifier: DigitsClassifier, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, sigma) of the classifier features of ``x`` and the histogram (fractions) of its predicted classes."""
    with torch.no_grad():
        features = classifier.features(x)
        predicted = classifier.head(features).argmax(1)
    hist = torch.bincount(predicted, minlength=N_CLASSES).double() / len(x)
    mu, sigma = gaussian_stats(features)
    return mu, sigma, hist.numpy()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = (p + KL_EPS) / (p + KL_EPS).sum()
    q = (q + KL_EPS) / (q + KL_EPS).sum()
    return float(np.sum(p * np.log(p / q)))


def image_metrics(fake: torch.Tensor, real: torch.Tensor | None = None,
                  classifier: DigitsClassifier | None = None) -> dict:
    """Quality and coverage of digit samples ``fake`` (N, 1, S, S) in [-1, 1], against ``real`` (the same image
    size; default: all 1797 digits at fake's size) through ``classifier`` (default: digits_classifier()).

    Returns {"fcd": Fréchet distance between the classifier features of fake and real,
             "classes_covered": classes predicted for at least 1 % of the fake samples (int, 0..10),
             "class_kl": KL(p_fake || p_real) of the predicted-class histograms (natural log, 1e-6 per bin),
             "class_hist": the fake histogram (10 fractions), "n": number of fake samples}.
    """
    fake = _check_images(fake, "fake")
    size = fake.shape[-1]
    if real is not None:
        real = _check_images(real, "real")
        if real.shape[1:] != fake.shape[1:]:
            raise ValueError(f"real images must have the size of the fake ones, {tuple(fake.shape[1:])}, got shape "
                             f"{tuple(real.shape)}")
    if classifier is not None and not isinstance(classifier, DigitsClassifier):
        raise TypeError(f"classifier must be a DigitsClassifier (or None), got {type(classifier).__name__}")

    use_cache = real is None and classifier is None   # the default reference: cache its statistics per size
    clf = classifier if classifier is not None else digits_classifier()
    if use_cache and size in _REAL_STATS:
        real_stats = _REAL_STATS[size]
    else:
        if real is None:
            if size not in (8, 16, 32, 64):
                raise ValueError(f"the default real digits exist at 8, 16, 32 and 64 px; fake has shape "
                                 f"{tuple(fake.shape)}: pass real images of its size")
            real = image_data("digits", image_size=size).tensor
        real_stats = _features_and_hist(clf, real)
        if use_cache:
            _REAL_STATS[size] = real_stats
    mu_r, sigma_r, hist_r = real_stats
    mu_f, sigma_f, hist_f = _features_and_hist(clf, fake)
    return {"fcd": frechet_distance(mu_f, sigma_f, mu_r, sigma_r),
            "classes_covered": int((hist_f >= COVERED_FRACTION).sum()),
            "class_kl": _kl(hist_f, hist_r),
            "class_hist": [float(v) for v in hist_f],
            "n": int(len(fake))}


# ----------------------------------------------------------------------------------------------------- Inception FID
_OFFLINE_HINT = "image_metrics (a Fréchet distance on a digits classifier trained locally) works offline"


def _inception_input(x, name: str) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] with C 1 or 3 -> (N, 3, H, W) in [0, 1], as torchmetrics' normalize=True wants."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in (1, 3) or x.shape[0] < 2:
        raise ValueError(f"{name} must be (N, C, H, W) images with C 1 or 3 and N >= 2, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in [-1, 1], got dtype {x.dtype}")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all() or x.min() < -1 - RANGE_TOL or x.max() > 1 + RANGE_TOL:
        raise ValueError(f"{name} values must be finite and in [-1, 1], got values in "
                         f"[{x.min().item():.4g}, {x.max().item():.4g}] (shape {tuple(x.shape)})")
    x = ((x.clamp(-1, 1) + 1) / 2)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def inception_fid(fake: torch.Tensor, real: torch.Tensor) -> float:
    """FID between ``fake`` and ``real`` ((N, C, H, W) in [-1, 1], C 1 or 3) with torchmetrics'
    FrechetInceptionDistance (2048 Inception features). Raises RuntimeError when torchmetrics (with its image
    extras) is missing or the Inception weights cannot be had (they are downloaded on first use)."""
    fake, real = _inception_input(fake, "fake"), _inception_input(real, "real")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:
        raise RuntimeError(f"inception_fid needs torchmetrics, which could not be imported ({e}); install it with "
                           f"pip install torchmetrics[image]. Meanwhile {_OFFLINE_HINT}") from e
    try:
        fid = FrechetInceptionDistance(feature=2048, normalize=True)
    except ImportError as e:   # torch-fidelity, which holds the Inception network, is missing
        raise RuntimeError(f"inception_fid needs torchmetrics' image extras ({e}); install them with "
                           f"pip install torchmetrics[image]. Meanwhile {_OFFLINE_HINT}") from e
    except Exception as e:     # the weights are downloaded on first use: no network, or a failed download
        raise RuntimeError(f"torchmetrics could not load the Inception weights ({type(e).__name__}: {e}); they are "
                           f"downloaded on first use and cannot be downloaded here. {_OFFLINE_HINT}") from e
    with torch.no_grad():
        for images, is_real in ((real, True), (fake, False)):
            for start in range(0, len(images), 64):
                fid.update(images[start:start + 64], real=is_real)
        return float(fid.compute())
