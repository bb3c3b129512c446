"""BRISQUE (monitoring reward) through the brisque package's bundled SVM."""

from __future__ import annotations

import pytest
import torch

from normguard.trainer.rewards import RewardSpec, clear_reward_cache, load_reward

pytest.importorskip("brisque", reason="the iqa extra (brisque) is not installed")


def pink_noise(seed: int, side: int = 128) -> torch.Tensor:
    """A colour texture with a 1/f spectrum: the statistics of natural images, which BRISQUE models."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(side)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt().clamp_min(1 / side)
    x = torch.fft.ifft2(torch.randn(3, side, side, generator=g, dtype=torch.complex64) / radius).real
    lo, hi = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
    return (x - lo) / (hi - lo)


def box_blur(x: torch.Tensor, k: int = 7) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x[None], k, stride=1, padding=k // 2, count_include_pad=False)[0]


@pytest.fixture(scope="module")
def brisque():
    clear_reward_cache()
    yield load_reward(RewardSpec("brisque"))
    clear_reward_cache()


def test_noise_and_blur_lower_the_score(brisque):
    clean = torch.stack([pink_noise(s) for s in range(2)])
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(9))).clamp(0, 1)
    blurred = torch.stack([box_blur(c) for c in clean])
    scores = brisque(torch.cat([clean, noisy, blurred]), ["ignored"] * 6).view(3, 2)
    assert scores.dtype == torch.float32
    assert (scores[0] > scores[1]).all() and (scores[0] > scores[2]).all()


def test_batches_equal_singles_and_repeat_exactly(brisque):
    images = torch.stack([pink_noise(s, 96) for s in (3, 4, 5)])
    batch = brisque(images, ["a", "b", "c"])
    assert torch.equal(batch, torch.cat([brisque(images[i : i + 1], ["a"]) for i in range(3)]))
    assert torch.equal(batch, brisque(images, ["x", "y", "z"]))  # the prompt plays no part
