"""Velocity-local base losses. Each is a pure function of velocities at given (x_t, t)."""

from .awm import awm_loss
from .dpo import dpo_loss
from .grpo import grpo_loss
from .nft import nft_loss, nft_reward_weight

__all__ = ["awm_loss", "dpo_loss", "grpo_loss", "nft_loss", "nft_reward_weight"]
