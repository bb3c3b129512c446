"""How good a policy's images are, measured by the judge network rather than by the reward.

The demo and the paper-claims benchmark both ask the same questions of a trained LoRA: what reward
does it earn, does each image still show what its prompt asked for (the judge's attribute
accuracy), how far have its images drifted from the data (Fréchet distance in the judge's
features), and how much has its velocity norm inflated (rho per sampler step) -- at the full and at
a few-step sampling schedule, optionally with the velocity rescaled to the reference's norm at
inference. The prompts and the starting noise are fixed by a seed, so two policies are compared on
exactly the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .backends import FlowBackend
from .models.judge import Judge, feature_stats, frechet_from_stats
from .models.scenes import prompt_for, random_attributes, render_batch
from .rewards import RewardSet
from .rewards.scene import chroma, luma_contrast
from .rollout import randn, sample

# What each toy reward leaves to the prompt, and which real scenes it asks for: `centring` decides
# the position itself, so its prompts name none and the Fréchet reference is real scenes with the
# object in the centre (what a perfect policy would draw); the other rewards keep the full data.
PROMPT_OMITS: dict[str, tuple[str, ...]] = {"centring": ("position",)}
REFERENCE_FIXED: dict[str, dict[str, str]] = {"centring": {"position": "centre"}}


def scene_prompts(n: int, seed: int, omit: tuple[str, ...] = ()) -> list[str]:
    """n prompts naming every attribute of a random scene (the training data's prompt form) except
    those in `omit` (e.g. ("position",) for a reward that decides the position itself)."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n):
        attrs = random_attributes(rng)
        prompts.append(prompt_for({k: v for k, v in attrs.items() if k not in omit}))
    return prompts


def real_scene_stats(
    judge: Judge, fixed: dict[str, str], n: int = 4096, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Judge-feature statistics of n real scenes whose attributes in `fixed` are set (the rest random):
    the data a reward that decides those attributes asks for (e.g. {"position": "centre"})."""
    rng = np.random.default_rng(seed)
    scenes = [{**random_attributes(rng), **fixed} for _ in range(n)]
    images = torch.from_numpy(render_batch(scenes, rng))
    return feature_stats(torch.cat([judge.features(c) for c in images.split(512)]))


def fixed_noise(n: int, seed: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """n starting latents, sample i drawn from its own stream (seed, i): the same for every policy."""
    gens = [
        torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
        for i in range(n)
    ]
    return randn(shape, gens, device)


@dataclass
class EvalSet:
    """Fixed prompts and noise on which policies are compared."""

    prompts: list[str]
    noise: torch.Tensor

    @classmethod
    def for_backend(
        cls,
        backend: FlowBackend,
        n: int,
        seed: int,
        prompts: list[str] | None = None,
        size: tuple[int, int] | None = None,
    ) -> EvalSet:
        """n prompts (scene prompts drawn from seed unless given; cycled) and their noise at `size`
        (height, width; default the model's native size)."""
        h, w = size or backend.default_size()
        prompts = prompts or scene_prompts(n, seed)
        prompts = [prompts[i % len(prompts)] for i in range(n)]
        return cls(prompts, fixed_noise(n, seed, backend.latent_shape(h, w), backend.device))


class SceneJudge:
    """The judge's two measures on any image size (images are area-resized to the judge's input).

    The Fréchet distance is to the real scenes' feature statistics (the training distribution of
    the builtin model), or, after set_reference(images), to those images' statistics -- for a model
    that was not trained on the scenes, the base model's own samples are the only reference."""

    def __init__(self, judge: Judge | None = None):
        self.judge = judge or Judge.load()
        self.reference: tuple[torch.Tensor, torch.Tensor] = (self.judge.ref_mu, self.judge.ref_cov)

    def _fit(self, images: torch.Tensor) -> torch.Tensor:
        size = self.judge.net.config.image_size
        images = images.detach().float().cpu()
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="area")
        return images

    def set_reference(self, images: torch.Tensor) -> None:
        self.reference = feature_stats(self.judge.features(self._fit(images)))

    def accuracy(self, images: torch.Tensor, prompts: list[str]) -> float:
        """Mean fraction of the attributes each prompt names that the judge sees in its image."""
        return float(np.nanmean(self.judge.attribute_accuracy(self._fit(images), prompts).numpy()))

    def frechet(self, images: torch.Tensor) -> float:
        return frechet_from_stats(*feature_stats(self.judge.features(self._fit(images))), *self.reference)


def _image_size(backend: FlowBackend, latent: tuple[int, ...]) -> tuple[int, int]:
    """The (height, width) whose latent has this shape (the native size, or a multiple of it)."""
    h, w = backend.default_size()
    native = backend.latent_shape(h, w)
    return h * latent[-2] // native[-2], w * latent[-1] // native[-1]


@torch.no_grad()
def evaluate_policy(
    backend: FlowBackend,
    evalset: EvalSet,
    steps: int,
    rewards: RewardSet,
    judge: SceneJudge,
    *,
    rescale: bool = False,
    record_norms: bool = True,
    batch_size: int = 64,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Sample the eval set with the backend's current policy at `steps` Euler steps and score it
    (at the size the eval set's noise was drawn for).

    Returns (metrics, images [N, 3, H, W] in [0, 1] on the CPU). metrics: reward (and reward/<id>
    per reward when there are several), accuracy, frechet, chroma, contrast and, with
    record_norms, rho_per_step and rho_mean (on the policy's own trajectory)."""
    h, w = _image_size(backend, evalset.noise.shape[1:])
    sigmas = backend.schedule(steps, h, w)
    images, v_norms, ref_norms = [], [], []
    for i in range(0, len(evalset.prompts), batch_size):
        prompts = evalset.prompts[i : i + batch_size]
        roll = sample(
            backend,
            backend.encode_prompts(prompts),
            evalset.noise[i : i + batch_size],
            sigmas,
            record_norms=record_norms,
            rescale_to_reference=rescale,
        )
        images.append(backend.decode(roll.latents).float().cpu())
        if record_norms:
            v_norms.append(roll.v_norms)
            ref_norms.append(roll.ref_norms)
    images_t = torch.cat(images)
    parts = rewards.score(images_t, evalset.prompts)
    metrics: dict[str, Any] = {"reward": float(rewards.total(parts).mean())}
    if len(parts) > 1:
        metrics |= {f"reward/{k}": float(v.mean()) for k, v in parts.items()}
    metrics |= {
        "accuracy": judge.accuracy(images_t, evalset.prompts),
        "frechet": judge.frechet(images_t),
        "chroma": float(chroma(images_t).mean()),
        "contrast": float(luma_contrast(images_t).mean()),
    }
    if record_norms:
        rho = (torch.cat(v_norms, dim=1) / torch.cat(ref_norms, dim=1).clamp_min(1e-12)).mean(dim=1)
        metrics |= {"rho_per_step": rho.tolist(), "rho_mean": float(rho.mean())}
    return metrics, images_t
