"""The reward protocol, the registry of rewards by id, and weighted sets of rewards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Reward(Protocol):
    """images [B, 3, H, W] float in [0, 1] (any device) + prompts -> one float32 score per image."""

    def __call__(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]] | None = None
    ) -> torch.Tensor: ...


@dataclass
class RewardSpec:
    """One reward as the user names it: id, weight in the sum, weights on disk, device."""

    name: str
    weight: float = 1.0
    path: str | None = None
    device: str | None = None


RewardFactory = Callable[[RewardSpec, torch.device], Reward]
REGISTRY: dict[str, RewardFactory] = {}


def register(name: str) -> Callable[[RewardFactory], RewardFactory]:
    def deco(factory: RewardFactory) -> RewardFactory:
        REGISTRY[name] = factory
        return factory

    return deco


def load_reward(spec: RewardSpec, device: torch.device | str = "cpu") -> Reward:
    if spec.name not in REGISTRY:
        raise ValueError(f"unknown reward {spec.name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[spec.name](spec, torch.device(spec.device or device))


class RewardSet:
    """Several rewards with weights. Calling it gives the weighted sum (the Reward protocol);
    `score` gives each reward's own scores, which the trainer turns into advantages."""

    def __init__(self, rewards: dict[str, Reward], weights: dict[str, float], normalize_each: bool = False):
        if not rewards:
            raise ValueError("at least one reward is needed")
        self.rewards, self.weights, self.normalize_each = rewards, weights, normalize_each

    @torch.no_grad()
    def score(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]] | None = None
    ) -> dict[str, torch.Tensor]:
        return {k: r(images, prompts, metadata).float().cpu() for k, r in self.rewards.items()}

    def __call__(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]] | None = None
    ) -> torch.Tensor:
        parts = self.score(images, prompts, metadata)
        return sum(self.weights[k] * v for k, v in parts.items())


def build_rewards(
    specs: list[RewardSpec], device: torch.device | str = "cpu", normalize_each: bool = False
) -> RewardSet:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"each reward may be named once, got {names}")
    rewards = {s.name: load_reward(s, device) for s in specs}
    return RewardSet(rewards, {s.name: s.weight for s in specs}, normalize_each)
