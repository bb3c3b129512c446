"""The reward protocol, the registry of rewards by id, a cache of loaded rewards, and weighted sets."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ..advantages import StdMode, combined_advantages


@runtime_checkable
class Reward(Protocol):
    """images [B, 3, H, W] float in [0, 1] (any device) + prompts -> one float32 score per image (CPU)."""

    def __call__(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]] | None = None
    ) -> torch.Tensor: ...


@dataclass
class RewardSpec:
    """One reward as the user names it: id, weight in the sum, weights on disk, device, and settings
    only that reward understands (e.g. {"processor": folder} for PickScore, {"head": file} for the
    aesthetic MLP, {"arch": "ViT-H-14"} for HPS, {"dtype": "float16", "batch_size": 8})."""

    name: str
    weight: float = 1.0
    path: str | None = None
    device: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardInfo:
    """What a user must know to pick a reward: does it need weights on disk, what it pays for,
    what it costs, and which optional extra (pip install "comfyui-normguard[extra]") it needs."""

    id: str
    needs_path: bool
    description: str
    cost: str
    extra: str | None = None


RewardFactory = Callable[[RewardSpec, torch.device], Reward]
REGISTRY: dict[str, RewardFactory] = {}
INFO: dict[str, RewardInfo] = {}
_CACHE: dict[tuple[str, str | None, str, str], Reward] = {}


def register(
    name: str,
    *,
    needs_path: bool = False,
    description: str = "",
    cost: str = "",
    extra: str | None = None,
) -> Callable[[RewardFactory], RewardFactory]:
    """Decorator: make a factory (spec, device) -> Reward loadable by its id."""

    def deco(factory: RewardFactory) -> RewardFactory:
        REGISTRY[name] = factory
        INFO[name] = RewardInfo(name, needs_path, description, cost, extra)
        return factory

    return deco


def available_rewards() -> list[dict[str, Any]]:
    """Every registered reward as {id, needs_path, description, cost, extra}, sorted by id."""
    return [vars(INFO[k]).copy() for k in sorted(INFO)]


def _cache_key(spec: RewardSpec, device: torch.device) -> tuple[str, str | None, str, str]:
    try:
        options = json.dumps(spec.options, sort_keys=True)
    except TypeError as err:
        raise ValueError(
            f"reward {spec.name!r}: options must be plain JSON values, got {spec.options!r}"
        ) from err
    return (spec.name, spec.path, str(device), options)


def load_reward(spec: RewardSpec, device: torch.device | str = "cpu") -> Reward:
    """Build a reward on spec.device (if set) or `device`. The same id, path, device and options
    give back the same loaded object, so re-running a ComfyUI node or a new iteration does not
    load the weights again (clear_reward_cache frees them)."""
    if spec.name not in REGISTRY:
        raise ValueError(f"unknown reward {spec.name!r}; available: {', '.join(sorted(REGISTRY))}")
    if INFO[spec.name].needs_path and not spec.path:
        raise ValueError(f"reward {spec.name!r} needs weights on disk: give their folder or file as its path")
    dev = torch.device(spec.device or device)
    key = _cache_key(spec, dev)
    if key not in _CACHE:
        _CACHE[key] = REGISTRY[spec.name](spec, dev)
    return _CACHE[key]


def clear_reward_cache() -> None:
    """Forget every loaded reward (their models are freed once nothing else holds them)."""
    _CACHE.clear()


class RewardSet:
    """Several rewards with weights. Calling it gives the weighted sum (the Reward protocol);
    `score` gives each reward's own scores and `advantages` turns them into group advantages,
    normalising each reward first when normalize_each is set."""

    def __init__(self, rewards: dict[str, Reward], weights: dict[str, float], normalize_each: bool = False):
        if not rewards:
            raise ValueError("at least one reward is needed")
        missing = set(rewards) - set(weights)
        if missing:
            raise ValueError(f"no weight given for reward(s) {sorted(missing)}")
        self.rewards, self.weights, self.normalize_each = rewards, weights, normalize_each

    @torch.no_grad()
    def score(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]] | None = None
    ) -> dict[str, torch.Tensor]:
        return {k: r(images, prompts, metadata).float().cpu() for k, r in self.rewards.items()}

    def __call__(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]] | None = None
    ) -> torch.Tensor:
        return self.total(self.score(images, prompts, metadata))

    def total(self, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of per-reward scores (as returned by `score`)."""
        return sum(self.weights[k] * v.float() for k, v in scores.items())

    def advantages(
        self,
        scores: Mapping[str, torch.Tensor],
        group_size: int,
        *,
        std: StdMode = "group",
        batch_std: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Group advantages of the weighted sum of `scores` (as returned by `score`)."""
        return combined_advantages(
            scores, self.weights, group_size, normalize_each=self.normalize_each, std=std, batch_std=batch_std
        )

    def summary(
        self, scores: Mapping[str, torch.Tensor], gather: Callable[[torch.Tensor], torch.Tensor]
    ) -> dict[str, float]:
        """The mean and std of the weighted sum over all processes, and each reward's mean when there are
        several. `gather`: this process's values -> every process's (a collective: all processes call it)."""
        everyone = gather(self.total(scores))
        out = {"reward_mean": everyone.mean().item(), "reward_std": everyone.std().item()}
        if len(scores) > 1:
            out |= {f"reward/{k}": gather(v).mean().item() for k, v in scores.items()}
        return out


def build_rewards(
    specs: list[RewardSpec], device: torch.device | str = "cpu", normalize_each: bool = False
) -> RewardSet:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"each reward may be named once, got {names}")
    rewards = {s.name: load_reward(s, device) for s in specs}
    return RewardSet(rewards, {s.name: s.weight for s in specs}, normalize_each)
