"""Flow-GRPO: PPO-style clipped policy gradient on the SDE sampler's Gaussian steps."""

from __future__ import annotations

import torch

from ..sde import expand_like, gaussian_log_prob


def grpo_loss(
    mean: torch.Tensor,
    std: torch.Tensor,
    x_next: torch.Tensor,
    log_prob_old: torch.Tensor,
    adv: torch.Tensor,
    *,
    clip_range: float = 1e-4,
    adv_clip: float = 5.0,
    kl_weight: float = 0.0,
    mean_ref: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate on ratio = p_theta(x_next | x) / p_old(x_next | x), plus an optional KL.

    mean is the policy's step mean (a function of v_theta), std the step's noise scale. The KL
    between two Gaussian steps of equal std is ||mean - mean_ref||^2 / (2 std^2) (per latent dim).
    """
    log_prob = gaussian_log_prob(x_next, mean, std)
    ratio = torch.exp(log_prob - log_prob_old.float())
    a = adv.float().clamp(-adv_clip, adv_clip)
    surrogate = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip_range, 1 + clip_range))
    loss = surrogate.mean()
    stats = {
        "ratio_dev": (ratio - 1).abs().mean().item(),
        "clip_frac": ((ratio - 1).abs() > clip_range).float().mean().item(),
    }
    if kl_weight > 0:
        if mean_ref is None:
            raise ValueError("grpo_loss with kl_weight > 0 needs mean_ref")
        kl = (
            ((mean - mean_ref.detach()).square() / (2 * expand_like(std, mean).square()))
            .flatten(1)
            .mean(1)
            .mean()
        )
        loss = loss + kl_weight * kl
        stats["kl"] = kl.item()
    return loss, stats
