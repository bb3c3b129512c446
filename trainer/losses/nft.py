"""DiffusionNFT (arXiv 2509.16117): negative-aware fine-tuning on the forward process."""

from __future__ import annotations

import torch


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


def nft_reward_weight(adv: torch.Tensor, adv_clip: float = 5.0) -> torch.Tensor:
    """Optimality probability r in [0, 1] from advantages clipped to [-adv_clip, adv_clip]."""
    a = adv.clamp(-adv_clip, adv_clip)
    return (a / adv_clip / 2 + 0.5).clamp(0.0, 1.0)


def _adaptive_x0_error(x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """mean((x0_hat - x0)^2) / sg(mean|x0_hat - x0|) per sample: scale-free across timesteps."""
    diff = x0_hat.float() - x0.float()
    with torch.no_grad():
        scale = diff.abs().flatten(1).mean(dim=1).clamp_min(1e-5)
    return _per_sample_mean(diff.square()) / scale


def nft_loss(
    v: torch.Tensor,
    v_old: torch.Tensor,
    x_t: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    r: torch.Tensor,
    *,
    beta: float = 1.0,
    adv_clip: float = 5.0,
) -> torch.Tensor:
    """mean[r l(v+) + (1 - r) l(v-)] / beta * adv_clip.

    v+ = beta v + (1 - beta) v_old and v- = (1 + beta) v_old - beta v are the implicit positive and
    negative policies around the slowly updated old policy. The factor adv_clip is DiffusionNFT's
    own (its loss is scaled by the advantage clip), kept so public learning rates transfer.
    """
    v_old = v_old.detach()
    s = sigma.to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
    v_pos = beta * v + (1 - beta) * v_old
    v_neg = (1 + beta) * v_old - beta * v
    l_pos = _adaptive_x0_error(x_t - s * v_pos, x0)
    l_neg = _adaptive_x0_error(x_t - s * v_neg, x0)
    per_sample = (r * l_pos + (1 - r) * l_neg) / beta
    return (per_sample * adv_clip).mean()
