"""NormGuard: a hinge on the velocity norm that acts only when ||v_theta|| exceeds ||v_ref||.

RL fine-tuning of flow models inflates the per-step velocity norm above the frozen reference's
(PAPER.md, claim 1). The penalty removes only that excess: it is zero, with zero gradient, while
the policy's norm stays at or below the reference's (+ margin), and above it its gradient is
parallel to v_theta, so it shrinks the magnitude without rotating the direction.
"""

from __future__ import annotations

from typing import Literal

import torch

Reduction = Literal["sample", "token"]
Form = Literal["linear", "squared", "paper"]


def resolve_form(form: str, relative: bool) -> tuple[str, bool]:
    """(hinge, relative) for a form name: "paper" is exactly the abstract's penalty, the linear hinge
    on the absolute difference relu(||v_theta|| - ||v_ref||), whatever `relative` says."""
    return ("linear", False) if form == "paper" else (form, relative)


def penalty_label(weight: float, form: str = "paper", relative: bool = True, margin: float = 0.0) -> str:
    """The penalty in words, e.g. "paper form (linear absolute), weight 0.03" or "squared relative hinge,
    weight 10, margin 0.1"; "off" at weight 0. The paper form has neither a relative variant nor a margin."""
    if weight == 0:
        return "off"
    if form == "paper":
        return f"paper form (linear absolute), weight {weight:g}"
    kind = "relative" if relative else "absolute"
    return f"{form} {kind} hinge, weight {weight:g}" + (f", margin {margin:g}" if margin else "")


def velocity_norms(v: torch.Tensor, reduction: Reduction = "sample") -> torch.Tensor:
    """L2 norms of velocities shaped [B, ...], computed in fp32.

    "sample": one norm over all latent dims of each sample -> [B].
    "token": one norm per token -> [B, N]; tokens are the last dim of a [B, N, D] layout, or the
    channel vector at each spatial position of a [B, C, H, W] latent.
    """
    v = v.float()
    if reduction == "sample":
        return v.flatten(1).norm(dim=1)
    if reduction == "token":
        if v.ndim == 3:
            return v.norm(dim=-1)
        if v.ndim >= 4:
            return v.norm(dim=1).flatten(1)
        raise ValueError(
            f"reduction='token' needs [B, N, D] or [B, C, H, W] velocities, got {tuple(v.shape)}"
        )
    raise ValueError(f"unknown norm reduction {reduction!r}; use 'sample' or 'token'")


def hinge_excess(
    n_theta: torch.Tensor, n_ref: torch.Tensor, *, relative: bool = True, margin: float = 0.0
) -> torch.Tensor:
    """How far the policy's norm exceeds the reference's (negative when it does not)."""
    if relative:
        return n_theta / n_ref.clamp_min(1e-12) - 1.0 - margin
    return n_theta - n_ref - margin


def normguard_penalty(
    v_theta: torch.Tensor,
    v_ref: torch.Tensor | None,
    weight: float = 0.03,
    *,
    form: Form = "paper",
    relative: bool = True,
    margin: float = 0.0,
    reduction: Reduction = "sample",
) -> torch.Tensor:
    """weight * mean over samples of h(||v_theta||, ||v_ref||), a float32 scalar.

    form: "paper" (the default, as in TrainConfig: the abstract's relu(||v_theta|| - ||v_ref||):
    linear, absolute, no margin; its weight is in velocity-norm units), "linear" relu(excess) or
    "squared" relu(excess)^2 (weights around 10 when relative); relative: excess measured as
    ||v_theta|| / ||v_ref|| - 1 (scale-free across resolutions) instead of the difference;
    margin: tolerance before the hinge activates; reduction: see velocity_norms. v_ref is
    detached: the reference is frozen. With weight 0 this returns an exact zero that depends on
    nothing, so the total loss is exactly the base method's.
    """
    if weight == 0:
        return torch.zeros((), device=v_theta.device, dtype=torch.float32)
    if v_ref is None:
        raise ValueError("normguard_penalty needs v_ref (the frozen reference's velocity) when weight > 0")
    if v_theta.shape != v_ref.shape:
        raise ValueError(f"v_theta {tuple(v_theta.shape)} and v_ref {tuple(v_ref.shape)} differ in shape")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if form not in ("linear", "squared", "paper"):
        raise ValueError(f"unknown penalty form {form!r}; use 'linear', 'squared' or 'paper'")
    if form == "paper" and margin > 0:
        raise ValueError("the 'paper' penalty form has no margin; set margin to 0 or use form 'linear'")
    form, relative = resolve_form(form, relative)
    n_theta = velocity_norms(v_theta, reduction)
    n_ref = velocity_norms(v_ref.detach(), reduction)
    h = torch.relu(hinge_excess(n_theta, n_ref, relative=relative, margin=margin))
    if form == "squared":
        h = h.square()
    per_sample = h.flatten(1).mean(dim=1) if h.ndim > 1 else h
    return weight * per_sample.mean()


@torch.no_grad()
def norm_stats(
    v_theta: torch.Tensor,
    v_ref: torch.Tensor,
    *,
    relative: bool = True,
    margin: float = 0.0,
    reduction: Reduction = "sample",
) -> dict[str, float]:
    """Free by-products of the penalty for logging: mean ratio and the hinge's active fraction."""
    norm_theta, norm_ref = velocity_norms(v_theta, "sample"), velocity_norms(v_ref, "sample")
    n_theta, n_ref = (
        (norm_theta, norm_ref)
        if reduction == "sample"
        else (velocity_norms(v_theta, reduction), velocity_norms(v_ref, reduction))
    )
    active = hinge_excess(n_theta, n_ref, relative=relative, margin=margin) > 0
    return {
        "train_rho": (norm_theta / norm_ref.clamp_min(1e-12)).mean().item(),
        "hinge_active": active.float().mean().item(),
        "v_norm": norm_theta.mean().item(),
        "v_ref_norm": norm_ref.mean().item(),
    }
