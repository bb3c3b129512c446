"""NIQE, the default quality score: its distribution fits recover known shapes, it ranks blur and noise
below a clean natural-like image, it runs at any size with the shipped pristine model (no download,
no optional package), and a quality score that cannot load is reported, not only logged."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from normguard import train
from normguard.trainer.config import TrainConfig
from normguard.trainer.rewards import RewardSpec, load_reward, register
from normguard.trainer.rewards.base import INFO, REGISTRY
from normguard.trainer.rewards.niqe import aggd_features, ggd_features, niqe


def pink_noise(size: int, seed: int = 0) -> torch.Tensor:
    """A [3, size, size] image with a 1/f amplitude spectrum, the statistics of natural scenes."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(size)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).clamp_min(1 / size)
    phase = torch.rand(3, size, size, generator=g) * 2 * math.pi
    img = torch.fft.ifft2(torch.polar(1 / radius.expand(3, -1, -1), phase)).real
    img = (img - img.mean()) / img.std()
    return (0.5 + 0.15 * img).clamp(0, 1)


def blur(image: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    x = torch.arange(9, dtype=torch.float32) - 4
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = (k / k.sum())[None, None]
    out = F.conv2d(F.pad(image[:, None], (4, 4, 0, 0), mode="reflect"), k[..., None, :])
    return F.conv2d(F.pad(out, (0, 0, 4, 4), mode="reflect"), k[..., :, None])[:, 0]


def test_distribution_fits_recover_known_shapes():
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(2, 200_000, generator=g, dtype=torch.float64) * 0.5
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((2, 200_000)).double()
    assert ggd_features(gauss)[:, 0].sub(2.0).abs().max() < 0.05  # shape 2: Gaussian
    assert ggd_features(gauss)[:, 1].sub(0.25).abs().max() < 0.01  # variance
    assert ggd_features(laplace)[:, 0].sub(1.0).abs().max() < 0.05  # shape 1: Laplacian
    a = aggd_features(gauss)
    assert a[:, 0].sub(2.0).abs().max() < 0.05 and a[:, 1].abs().max() < 0.01  # symmetric: mean 0
    skewed = torch.where(gauss > 0, gauss * 2, gauss)
    left, right = aggd_features(skewed)[0, 2:]
    assert right / left == pytest.approx(4.0, rel=0.05)


def test_niqe_ranks_blur_and_noise_below_a_natural_like_image():
    clean = pink_noise(256)
    noisy = (clean + 0.08 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    scores = {"clean": niqe(clean), "blurred": niqe(blur(clean)), "noisy": niqe(noisy)}
    assert all(math.isfinite(s) for s in scores.values()), scores
    assert scores["blurred"] > scores["clean"] + 1 and scores["noisy"] > scores["clean"] + 1, scores


def test_niqe_is_the_default_quality_score_and_needs_nothing_optional():
    assert TrainConfig().eval_quality == "niqe" and INFO["niqe"].extra is None
    reward = load_reward(RewardSpec("niqe"), torch.device("cpu"))
    images = torch.stack([pink_noise(32, 0), pink_noise(48, 1)[:, :32, :32]])  # tiny images work too
    scores = reward(images, ["a", "b"])
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (scores < 0).all()


@pytest.fixture
def missing_quality_score():
    """A registered quality score whose package is missing; unregistered afterwards."""

    def factory(spec, device):
        raise ImportError("the '_needs_missing_package' score needs a package: pip install something")

    register("_needs_missing_package", description="a quality score whose package is missing (test)")(factory)
    yield "_needs_missing_package"
    REGISTRY.pop("_needs_missing_package")
    INFO.pop("_needs_missing_package")


def test_a_quality_score_that_cannot_load_is_a_warning(tiny_config, missing_quality_score):
    seen = []

    class Recorder:
        def __getattr__(self, name):
            return lambda *args: seen.append((name, args)) if name == "on_train_start" else None

    train(
        tiny_config.replace(eval_quality=missing_quality_score, iterations=1, eval_every=1),
        callbacks=[Recorder()],
    )
    (info,) = [args[0] for name, args in seen if name == "on_train_start"]
    (quality,) = [w for w in info["warnings"] if "quality score" in w]
    assert "no independent quality score (eval_quality: _needs_missing_package)" in quality
    assert "pip install something" in quality
