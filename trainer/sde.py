"""The Flow-GRPO reverse-time SDE step for rectified flow, and its Gaussian log-density.

With x_t = (1 - t) x0 + t eps and v = eps - x0 the score is -(x_t + (1 - t) v) / t, so the
reverse SDE with diffusion g_t = eta * sqrt(t / (1 - t)) has drift v + g_t^2 / (2 t) (x_t + (1 - t) v).
One Euler-Maruyama step from sigma to sigma_next (< sigma) is Gaussian: its mean depends on v,
so the policy's log-probability of a recorded step is differentiable in v.
"""

from __future__ import annotations

import math

import torch


def expand_like(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return s.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def sde_step_mean(
    x: torch.Tensor,
    v: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    *,
    eta: float,
    sigma_max: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of x_next given x at sigma (per-sample sigmas shaped [B]).

    sigma_max replaces sigma = 1 in g_t, where sqrt(t / (1 - t)) is infinite.
    """
    s = torch.where(sigma >= 1.0, torch.full_like(sigma, sigma_max), sigma).float()
    g = eta * torch.sqrt(s / (1.0 - s))
    dt = (sigma_next - sigma).float()
    a = expand_like(1.0 + g.square() * dt / (2.0 * s), x)
    b = expand_like((1.0 + g.square() * (1.0 - s) / (2.0 * s)) * dt, x)
    mean = x.float() * a + v.float() * b
    std = g * torch.sqrt(-dt)
    return mean, std


def gaussian_log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-sample log-density of x_next under N(mean, std^2 I), averaged over latent dims -> [B]."""
    std_b = expand_like(std, mean).float()
    lp = (
        -((x_next.float() - mean) ** 2) / (2 * std_b.square())
        - torch.log(std_b)
        - 0.5 * math.log(2 * math.pi)
    )
    return lp.flatten(1).mean(dim=1)
