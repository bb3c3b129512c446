"""The Flow-GRPO reverse-time SDE step for rectified flow, and its Gaussian log-density.

With x_t = (1 - t) x0 + t eps and v = eps - x0 the score is -(x_t + (1 - t) v) / t, so the
reverse SDE with diffusion g_t = eta * sqrt(t / (1 - t)) has drift v + g_t^2 / (2 t) (x_t + (1 - t) v).
One Euler-Maruyama step from sigma to sigma_next (< sigma) is Gaussian: its mean depends on v,
so the policy's log-probability of a recorded step is differentiable in v.

The first step starts at sigma = 1, where t / (1 - t) is infinite. We follow flow_grpo
(flow_grpo/diffusers_patch/sd3_sde_with_logprob.py, ``std_dev_t = sqrt(sigma / (1 - where(sigma == 1,
sigma_max, sigma))) * noise_level`` with ``sigma_max = scheduler.sigmas[1]``): sigma_max replaces sigma
only in the denominator of g, and every other coefficient keeps sigma = 1 -- so the first step's
mean is x + (v + g^2 / 2 x) dt, the exact drift at t = 1 with a finite stand-in for g. (Putting
sigma_max into every coefficient instead evaluates the drift at t = sigma_max: a different step.)
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
    """Mean and std of x_next given x at sigma (per-sample sigmas shaped [B]), in float32.

    sigma_max (the schedule's second sigma) replaces sigma = 1 in the denominator of g_t only,
    as flow_grpo does (module docstring).
    """
    s = sigma.float()
    g = eta * torch.sqrt(s / (1.0 - torch.where(s >= 1.0, torch.full_like(s, sigma_max), s)))
    dt = (sigma_next - sigma).float()
    x, v = x.float(), v.float()
    a = expand_like(1.0 + g.square() * dt / (2.0 * s), x)
    b = expand_like((1.0 + g.square() * (1.0 - s) / (2.0 * s)) * dt, x)
    mean = x * a + v * b
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
