"""Group-relative advantages: each sample's reward against the others drawn for the same prompt."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch

StdMode = Literal["group", "batch"]


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    std: StdMode = "group",
    eps: float = 1e-4,
    batch_std: torch.Tensor | None = None,
) -> torch.Tensor:
    """A = (R - mean_group(R)) / (std + eps) for rewards laid out as consecutive groups.

    std="group" divides by each group's own std; "batch" by one std over all rewards (pass
    batch_std when the batch spans several processes, so every rank divides by the same number).
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for group-relative advantages, got {group_size}")
    r = rewards.float().view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if std == "group":
        scale = r.std(dim=1, keepdim=True)
    elif std == "batch":
        scale = batch_std if batch_std is not None else rewards.float().std()
    else:
        raise ValueError(f"unknown advantage std mode {std!r}; use 'group' or 'batch'")
    return (centred / (scale + eps)).flatten()


def combined_advantages(
    components: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    group_size: int,
    *,
    normalize_each: bool = False,
    std: StdMode = "group",
    batch_std: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Advantages of a weighted sum of rewards.

    normalize_each turns each reward into advantages before the weighted sum, so one reward's
    scale cannot drown another's; otherwise the weighted rewards are summed first. batch_std maps
    a local reward tensor to its std over all processes (std="batch" only).
    """

    def adv(r: torch.Tensor) -> torch.Tensor:
        scale = batch_std(r) if (std == "batch" and batch_std is not None) else None
        return group_advantages(r, group_size, std=std, batch_std=scale)

    if normalize_each:
        return sum(weights[k] * adv(r) for k, r in components.items())
    total = sum(weights[k] * r.float() for k, r in components.items())
    return adv(total)
