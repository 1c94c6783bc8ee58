"""Digits metrics: the Fréchet distance against closed forms and scipy, the locally trained classifier (accuracy,
determinism, the caller's RNG left alone), image_metrics ranking real < noisy < noise and spotting collapse, and the
errors for bad input and for FID without torchmetrics."""

import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.datasets import load_digits

from wgan_ext.eval import images as ei
from wgan_ext.train.data import image_data


def random_psd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.05 * np.eye(d)


def frechet_with_sqrtm(mu1, s1, mu2, s2) -> float:
    """The textbook formula, with scipy's general matrix square root of S1 S2."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    return torch.as_tensor(load_digits().target)


@pytest.fixture(scope="module")
def digits8() -> torch.Tensor:
    return image_data("digits", image_size=8).tensor


@pytest.fixture(scope="module")
def classifier() -> ei.DigitsClassifier:
    return ei.digits_classifier(0)


@pytest.fixture(scope="module")
def halves(digits8):
    perm = torch.randperm(len(digits8), generator=torch.Generator().manual_seed(0))
    half = len(digits8) // 2
    return digits8[perm[:half]], digits8[perm[half:]]


# ---------------------------------------------------------------------------------------------- Fréchet distance
def test_frechet_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(5), random_psd(rng, 5)
    assert ei.frechet_distance(mu, s, mu, s) < 1e-8


def test_frechet_1d_closed_form():
    # N(0.3, 2^2) vs N(-0.2, 0.5^2): (0.3 + 0.2)^2 + (2 - 0.5)^2
    d = ei.frechet_distance(np.array([0.3]), np.array([[4.0]]), np.array([-0.2]), np.array([[0.25]]))
    assert d == pytest.approx(0.25 + 2.25, rel=1e-12)


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    assert ei.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_frechet_agrees_with_scipy_sqrtm(seed):
    rng = np.random.default_rng(100 + seed)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    s1, s2 = random_psd(rng, 8), random_psd(rng, 8)
    assert ei.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_with_sqrtm(mu1, s1, mu2, s2), rel=1e-8)


def test_frechet_is_symmetric_and_accepts_tensors():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(7), rng.standard_normal(7)
    s1, s2 = random_psd(rng, 7), random_psd(rng, 7)
    forward = ei.frechet_distance(mu1, s1, mu2, s2)
    assert ei.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(forward, rel=1e-10)
    as_tensors = ei.frechet_distance(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2)))
    assert as_tensors == pytest.approx(forward, rel=1e-12)


def test_frechet_of_rank_deficient_covariances_is_finite():
    rng = np.random.default_rng(3)
    mu1, s1 = ei.gaussian_stats(rng.standard_normal((3, 10)))   # rank 2 in 10 dimensions
    mu2, s2 = ei.gaussian_stats(rng.standard_normal((4, 10)))
    d = ei.frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(d) and d > 0
    assert ei.frechet_distance(mu1, s1, mu1, s1) < 1e-6


def test_frechet_shape_mismatch():
    eye3, eye4 = np.eye(3), np.eye(4)
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        ei.frechet_distance(np.zeros(3), eye3, np.zeros(4), eye4)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        ei.frechet_distance(np.zeros(3), eye3, np.zeros(3), eye4)
    with pytest.raises(ValueError, match="non-finite"):
        ei.frechet_distance(np.zeros(3), eye3, np.array([0.0, np.nan, 0.0]), eye3)


def test_gaussian_stats_matches_numpy():
    x = np.random.default_rng(4).standard_normal((50, 6)) * np.arange(1, 7)
    mu, sigma = ei.gaussian_stats(x)
    assert mu.dtype == sigma.dtype == np.float64 and mu.shape == (6,) and sigma.shape == (6, 6)
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12)
    mu_t, sigma_t = ei.gaussian_stats(torch.from_numpy(x).float())
    np.testing.assert_allclose(sigma_t, np.cov(x.astype(np.float32).astype(np.float64), rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(mu_t, x.mean(axis=0), atol=1e-6)


def test_gaussian_stats_needs_two_rows_of_a_matrix():
    with pytest.raises(ValueError, match=r"\(1, 4\)"):
        ei.gaussian_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        ei.gaussian_stats(np.zeros(5))


# ---------------------------------------------------------------------------------------------------- classifier
def test_classifier_is_accurate_and_frozen(classifier, digits8):
    assert classifier.heldout_accuracy >= 0.9
    assert not classifier.training
    assert not any(p.requires_grad for p in classifier.parameters())
    assert classifier(digits8[:5]).shape == (5, 10)
    assert classifier.features(digits8[:5]).shape == (5, 64)
    assert ei.digits_classifier(0) is classifier        # cached


def test_classifier_works_on_upscaled_digits(classifier, labels):
    _, heldout = ei.digits_split()
    x32 = image_data("digits", image_size=32).tensor
    with torch.no_grad():
        accuracy = (classifier(x32[heldout]).argmax(1) == labels[heldout]).double().mean().item()
    assert accuracy >= 0.85


def test_training_is_deterministic_and_leaves_the_global_rng_alone(classifier):
    torch.manual_seed(1234)
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    ei.clear_cache()
    fresh = ei.digits_classifier(0)
    assert fresh is not classifier                       # really trained again
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    for (name, a), (_, b) in zip(classifier.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    assert fresh.heldout_accuracy == classifier.heldout_accuracy


def test_classifier_rejects_bad_shapes(classifier):
    with pytest.raises(ValueError, match=r"\(2, 1, 12, 12\)"):
        classifier(torch.zeros(2, 1, 12, 12))
    with pytest.raises(TypeError, match="int"):
        ei.digits_classifier("0")


# ------------------------------------------------------------------------------------------------- image_metrics
def test_image_metrics_rank_real_below_noisy_below_noise(classifier, halves):
    a, b = halves
    g = torch.Generator().manual_seed(1)
    noisy = (a + 0.5 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    noise = torch.rand(a.shape, generator=g) * 2 - 1
    real = ei.image_metrics(a, b, classifier)
    fcd = [real["fcd"], ei.image_metrics(noisy, b, classifier)["fcd"], ei.image_metrics(noise, b, classifier)["fcd"]]
    assert fcd[0] < fcd[1] < fcd[2], fcd
    assert real["classes_covered"] == 10 and real["class_kl"] < 0.05
    assert real["n"] == len(a) and len(real["class_hist"]) == 10
    assert sum(real["class_hist"]) == pytest.approx(1.0)


def test_image_metrics_spot_a_collapsed_sampler(digits8, labels):
    threes = digits8[labels == 3]
    m = ei.image_metrics(threes)                         # default real digits and classifier
    assert m["classes_covered"] == 1
    assert m["class_kl"] > 1
    assert max(m["class_hist"]) == m["class_hist"][3]


def test_image_metrics_default_real_at_32px(halves):
    a32 = torch.nn.functional.interpolate(halves[0], size=(32, 32), mode="bilinear", align_corners=False)
    real = ei.image_metrics(a32.clamp(-1, 1))
    noise = ei.image_metrics(torch.rand(500, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1)
    assert real["classes_covered"] == 10 and real["class_kl"] < 0.05
    assert real["fcd"] < noise["fcd"]
    assert ei.image_metrics(a32.clamp(-1, 1)) == real   # cached reference statistics give the same answer


@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (4, 1, 8, 16), (4, 1, 12, 12), (4, 8, 8), (1, 1, 8, 8)])
def test_image_metrics_bad_shapes(shape):
    pattern = r"\(" + r", ".join(str(s) for s in shape) + r"\)"
    with pytest.raises(ValueError, match=pattern):
        ei.image_metrics(torch.zeros(shape))


def test_image_metrics_bad_values_and_mismatched_real(digits8):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ei.image_metrics(digits8[:10] * 2)
    with pytest.raises(ValueError, match="non-finite"):
        ei.image_metrics(torch.full((4, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="dtype"):
        ei.image_metrics(torch.zeros(4, 1, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(10, 1, 16, 16\)"):
        ei.image_metrics(digits8[:10], real=torch.zeros(10, 1, 16, 16))
    with pytest.raises(ValueError, match=r"pass real"):
        ei.image_metrics(torch.zeros(4, 1, 24, 24))
    with pytest.raises(TypeError, match="Tensor"):
        ei.image_metrics(digits8[:10].numpy())


# --------------------------------------------------------------------------------------------------- Inception
def test_inception_fid_without_torchmetrics_says_so(monkeypatch, digits8):
    for name in ("torchmetrics", "torchmetrics.image", "torchmetrics.image.fid"):
        monkeypatch.setitem(sys.modules, name, None)   # import fails as if it were not installed
    with pytest.raises(RuntimeError, match=r"torchmetrics.*pip install torchmetrics\[image\].*image_metrics"):
        ei.inception_fid(digits8[:4], digits8[4:8])


def test_inception_fid_bad_shapes(digits8):
    with pytest.raises(ValueError, match=r"\(4, 2, 8, 8\)"):
        ei.inception_fid(torch.zeros(4, 2, 8, 8), digits8[:4])
