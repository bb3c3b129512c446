"""Advantage Weighted Matching: on-policy, the flow-matching loss weighted by the advantage."""

from __future__ import annotations

import torch

GHUBER_EPS = 1e-10  # the AWM code's offset inside the power (keeps the gradient finite at mse = 0)


def awm_loss(
    v: torch.Tensor,
    u: torch.Tensor,
    adv: torch.Tensor,
    *,
    time_weight: torch.Tensor | None = None,
    adv_clip: float = 5.0,
    ghuber_power: float | None = None,
    advantage_max: float = 0.0,
) -> torch.Tensor:
    """mean over samples of clip(A) * w(t) * d(mse), mse = mean((v - u)^2).

    u = eps - x0 is the flow-matching target of the sample's own rollout: a positive advantage
    pulls v towards it, a negative one pushes v away (hence the clip). d is the identity, or with
    ghuber_power p the AWM code's generalised Huber ((mse + eps)^p - eps^p) / p, which damps the
    samples with large errors (its default, with w = t). advantage_max rescales the clipped
    advantages to [-advantage_max, advantage_max] as the AWM code does (0 leaves them as they are).

    On policy the AWM code's loss is the PPO surrogate -A * ratio with ratio = exp(logp - logp_old)
    and logp = -w d(mse); its gradient at ratio = 1 is this loss's, and this trainer takes one
    optimizer step per batch of rollouts, so the ratio is 1 wherever a gradient is taken and its
    clip never acts.
    """
    mse = (v.float() - u.float()).square().flatten(1).mean(dim=1)
    if ghuber_power is not None:
        mse = ((mse + GHUBER_EPS).pow(ghuber_power) - GHUBER_EPS**ghuber_power) / ghuber_power
    w = adv.float().clamp(-adv_clip, adv_clip)
    if advantage_max > 0:
        w = w / adv_clip * advantage_max
    if time_weight is not None:
        w = w * time_weight.float()
    return (w * mse).mean()
