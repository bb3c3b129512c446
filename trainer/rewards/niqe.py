"""NIQE (Mittal, Soundararajan and Bovik, "Making a completely blind image quality analyzer", 2013): a
no-reference quality score, the distance between an image's natural-scene statistics and those of
pristine photographs. It is the default independent quality score of evaluations because it needs
only torch: the pristine model (a 36-feature mean and covariance, assets/niqe_pristine.json) ships
with the package, fitted by scripts/fit_niqe.py on the photographs bundled with scikit-image, so it
installs with the node pack and never downloads. The reward is -NIQE (higher is better; NIQE is
about 3-6 for sharp natural photos and grows with blur, noise, ringing and over-sharpening).

Per patch and at two scales: the generalised Gaussian fit (shape, variance) of the mean-subtracted
contrast-normalised (MSCN) luminance, and the asymmetric generalised Gaussian fits (shape, mean, left
and right variance) of the products of horizontally, vertically and diagonally neighbouring MSCN
coefficients: 18 features a scale. An image's score compares the mean and covariance of its patches'
features with the pristine ones.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import RewardSpec, register
from .images import check_images
from .options import check_options

ASSET = Path(__file__).resolve().parents[1] / "models" / "assets" / "niqe" / "pristine.json"
PATCH = 96  # pixels at full scale (the paper's); smaller images use a smaller patch
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
ALPHAS = torch.arange(0.2, 10.0, 0.001, dtype=torch.float64)


def _gauss_window(size: int = 7, sigma: float = 7 / 6) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    w = torch.outer(g, g)
    return (w / w.sum())[None, None]


def mscn(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSCN coefficients, local deviation) of [N, 1, H, W] luminance in 0..255."""
    w = _gauss_window().to(gray)
    mu = F.conv2d(F.pad(gray, (3, 3, 3, 3), mode="replicate"), w)
    var = F.conv2d(F.pad(gray * gray, (3, 3, 3, 3), mode="replicate"), w) - mu * mu
    sigma = var.abs().sqrt()
    return (gray - mu) / (sigma + 1.0), sigma


def _ggd_ratio(a: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.lgamma(1 / a) + torch.lgamma(3 / a) - 2 * torch.lgamma(2 / a))


def _lookup(table: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The shape parameter whose moment ratio in `table` is nearest to each value."""
    return ALPHAS.to(values)[(table.to(values)[None] - values[:, None]).abs().argmin(dim=1)]


def ggd_features(x: torch.Tensor) -> torch.Tensor:
    """[P, n] samples -> [P, 2]: generalised Gaussian shape and variance (moment matching)."""
    var = (x * x).mean(1)
    rho = var / x.abs().mean(1).clamp_min(1e-12) ** 2
    return torch.stack([_lookup(_ggd_ratio(ALPHAS), rho), var], 1)


def aggd_features(x: torch.Tensor) -> torch.Tensor:
    """[P, n] samples -> [P, 4]: asymmetric generalised Gaussian shape, mean, left and right variance."""
    neg, pos = (x < 0).to(x), (x > 0).to(x)
    left = ((x * x * neg).sum(1) / neg.sum(1).clamp_min(1)).sqrt()
    right = ((x * x * pos).sum(1) / pos.sum(1).clamp_min(1)).sqrt()
    g = left / right.clamp_min(1e-12)
    r = x.abs().mean(1) ** 2 / (x * x).mean(1).clamp_min(1e-12)
    big_r = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    table = torch.exp(2 * torch.lgamma(2 / ALPHAS) - torch.lgamma(1 / ALPHAS) - torch.lgamma(3 / ALPHAS))
    a = _lookup(table, big_r)
    mean = (right - left) * torch.exp(torch.lgamma(2 / a) - torch.lgamma(1 / a))
    mean = mean * torch.exp(0.5 * (torch.lgamma(1 / a) - torch.lgamma(3 / a)))
    return torch.stack([a, mean, left**2, right**2], 1)


def _patches(t: torch.Tensor, p: int) -> torch.Tensor:
    """[1, 1, H, W] -> [n_patches, p * p] (non-overlapping, the image cropped to whole patches)."""
    h, w = t.shape[-2] // p * p, t.shape[-1] // p * p
    return t[..., :h, :w].unfold(2, p, p).unfold(3, p, p).reshape(-1, p * p)


def patch_features(gray: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, 1, H, W] luminance (0..255) -> ([n, 36] features at full and half scale, [n] sharpness)."""
    feats, sharp = [], None
    for scale in (1, 2):
        img = gray if scale == 1 else F.interpolate(gray, scale_factor=0.5, mode="bicubic", antialias=True)
        m, sigma = mscn(img)
        p = patch // scale
        if sharp is None:
            sharp = _patches(sigma, p).mean(1)
        cols = [ggd_features(_patches(m, p))]
        for dy, dx in SHIFTS:
            shifted = torch.roll(m, shifts=(-dy, -dx), dims=(2, 3))
            cols.append(aggd_features(_patches(m * shifted, p)))
        feats.append(torch.cat(cols, 1))
    return torch.cat(feats, 1), sharp


def luminance(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [0, 1] -> [1, 1, H, W] in 0..255 (ITU-R BT.601 luma, as the reference code)."""
    r, g, b = image.double().clamp(0, 1) * 255
    return (0.299 * r + 0.587 * g + 0.114 * b)[None, None]


def patch_size(height: int, width: int) -> int:
    """96 px, or a quarter of the shorter side for small images (at least 8, even)."""
    return max(8, min(PATCH, min(height, width) // 4 // 2 * 2))


def niqe_distance(features: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    """Distance of the features' Gaussian to the pristine one (the paper's eq. 10)."""
    ok = torch.isfinite(features).all(1)
    features = features[ok]
    mu = features.mean(0)
    c = torch.cov(features.T) if len(features) > 1 else torch.zeros_like(cov)
    d = mean - mu
    return float(torch.sqrt(d @ torch.linalg.pinv((cov + c) / 2) @ d))


@lru_cache(maxsize=1)
def pristine_model() -> tuple[torch.Tensor, torch.Tensor]:
    data = json.loads(ASSET.read_text(encoding="utf-8"))
    return torch.tensor(data["mean"], dtype=torch.float64), torch.tensor(data["cov"], dtype=torch.float64)


def niqe(image: torch.Tensor) -> float:
    """NIQE of one [3, H, W] image in [0, 1] (lower is more natural)."""
    mean, cov = pristine_model()
    feats, _ = patch_features(luminance(image.cpu()), patch_size(*image.shape[-2:]))
    return niqe_distance(feats, mean, cov)


class NiqeReward:
    @torch.no_grad()
    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        return torch.tensor([-niqe(im) for im in images], dtype=torch.float32)


@register(
    "niqe",
    description="-NIQE no-reference naturalness (monitoring; ignores the prompt; installs with the pack)",
    cost="torch patch statistics, CPU: 0.7 CPU-s per 512 px image on a 2-core CPU",
)
def _niqe(spec: RewardSpec, device: torch.device) -> NiqeReward:
    check_options(spec, set())
    return NiqeReward()
