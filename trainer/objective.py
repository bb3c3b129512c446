"""The training objective of one micro-batch: the method's base loss plus the NormGuard penalty, with
the statistics the run logs."""

from __future__ import annotations

import math
from typing import Any

import torch

from .backends import FlowBackend
from .config import TrainConfig
from .methods import Method
from .old_policy import OldPolicy
from .penalty import norm_stats, normguard_penalty, resolve_form
from .rollout import guided_velocity


def guarded_loss(
    cfg: TrainConfig,
    backend: FlowBackend,
    method: Method,
    b: dict[str, Any],
    old: OldPolicy | None,
    needs_ref: bool,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Base loss + NormGuard on micro-batch `b`; each model pass (old policy, reference, current) runs at
    most once."""

    def forward() -> torch.Tensor:
        return guided_velocity(
            backend,
            b["x_t"],
            b["sigma"],
            b["cond"],
            b.get("uncond"),
            method.train_cfg,
            detach_uncond=method.detach_uncond,
        )

    v_old = v_ref = None
    with torch.no_grad():  # no-grad passes first: the old policy is swapped into the adapter's weights
        if old is not None:
            with old.swapped_in():
                v_old = forward()
        if needs_ref:
            with backend.reference():
                v_ref = forward()
    v = forward()
    base, stats = method.loss(b, v, v_ref, v_old)
    penalty = normguard_penalty(
        v,
        v_ref,
        cfg.normguard_weight,
        form=cfg.normguard_form,
        relative=cfg.normguard_relative,
        margin=cfg.normguard_margin,
        reduction=cfg.normguard_reduction,
    )
    total = base + penalty
    stats |= {
        "loss": total.item(),
        "loss_base": base.item(),
        "penalty": penalty.item(),
        "nonfinite_loss": float(not math.isfinite(total.item())),
    }
    if v_ref is not None:
        stats |= norm_stats(
            v,
            v_ref,
            relative=resolve_form(cfg.normguard_form, cfg.normguard_relative)[1],
            margin=cfg.normguard_margin,
            reduction=cfg.normguard_reduction,
        )
    return total, stats
