"""Advantage Weighted Matching: on-policy, the flow-matching loss weighted by the advantage."""

from __future__ import annotations

import torch


def awm_loss(
    v: torch.Tensor,
    u: torch.Tensor,
    adv: torch.Tensor,
    *,
    time_weight: torch.Tensor | None = None,
    adv_clip: float = 5.0,
) -> torch.Tensor:
    """mean over samples of clip(A) * w(t) * mean((v - u)^2).

    u = eps - x0 is the flow-matching target of the sample's own rollout: a positive advantage
    pulls v towards it, a negative one pushes v away (hence the clip).
    """
    mse = (v.float() - u.float()).square().flatten(1).mean(dim=1)
    w = adv.float().clamp(-adv_clip, adv_clip)
    if time_weight is not None:
        w = w * time_weight.float()
    return (w * mse).mean()
