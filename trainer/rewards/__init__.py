"""Rewards: images + prompts -> one score per image. Importing a module registers its rewards; heavy
or optional packages (transformers models, rapidocr, brisque, open_clip) load only when a reward
is built."""

from . import clip, hps, iqa, jpeg, niqe, ocr, scene  # noqa: F401  (register their rewards)
from .base import (
    REGISTRY,
    Reward,
    RewardInfo,
    RewardSet,
    RewardSpec,
    available_rewards,
    build_rewards,
    clear_reward_cache,
    load_reward,
    register,
)

__all__ = [
    "REGISTRY",
    "Reward",
    "RewardInfo",
    "RewardSet",
    "RewardSpec",
    "available_rewards",
    "build_rewards",
    "clear_reward_cache",
    "load_reward",
    "register",
]
