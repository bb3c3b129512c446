"""Rewards: images + prompts -> one score per image. Importing a module registers its rewards."""

from . import jpeg  # noqa: F401  (registers jpeg_compressibility / jpeg_incompressibility)
from .base import REGISTRY, Reward, RewardSet, RewardSpec, build_rewards, load_reward, register

__all__ = ["REGISTRY", "Reward", "RewardSet", "RewardSpec", "build_rewards", "load_reward", "register"]
