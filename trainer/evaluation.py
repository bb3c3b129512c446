"""Held-out evaluation during training, and early warnings of reward hacking.

Every `eval_every` iterations (and before the first, for the base model's numbers) the policy
samples a fixed set of prompts with fixed seeds, at the training step count and at a few-step
count, so drift is visible in the saved grids. It logs the training reward, quality scores that
the reward does not see (a no-reference IQA, plus any "monitor only" rewards) and rho at every
sampler step on the policy's own trajectory — the one place the per-step reference pass is paid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .backends import Cond, FlowBackend
from .config import TrainConfig
from .files import atomic_write
from .rewards import Reward, RewardSet, RewardSpec, load_reward
from .rollout import randn, sample

log = logging.getLogger("normguard")
EVAL_STREAM = 2**31 - 1  # seed component of the fixed evaluation noise


@dataclass
class Evaluation:
    iteration: int
    metrics: dict[str, Any]
    grid: torch.Tensor  # [3, H, W] in [0, 1]: one column per sample, rows = full steps, few steps
    warnings: list[str] = field(default_factory=list)


def image_grid(rows: list[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """Rows of images [N, 3, H, W] -> one [3, H', W'] image with a white gutter."""
    n = max(r.shape[0] for r in rows)
    _, _, h, w = rows[0].shape
    grid = torch.ones(3, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[:, top : top + h, left : left + w] = img.float().cpu().clamp(0, 1)
    return grid


def save_png(image: torch.Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (image.permute(1, 2, 0).nan_to_num(0.0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def _number(value: Any) -> float:
    """A metric as a float; NaN where it is missing or null (a non-finite value saved as JSON)."""
    return float(value) if isinstance(value, (int, float)) else math.nan


# how far each quality score may fall below the base model's before a warning (warn_quality_drop
# unset): NIQE rose by 0.6-2.7 when scikit-image's photos were over-sharpened and by 0-1.1 when their
# saturation was doubled (scripts/fit_niqe.py); BRISQUE's scale is about ten times wider
QUALITY_TOLERANCE = {"niqe": 1.0, "brisque": 10.0}


def quality_tolerance(cfg: TrainConfig) -> float:
    if cfg.warn_quality_drop is not None:
        return cfg.warn_quality_drop
    return QUALITY_TOLERANCE.get(cfg.eval_quality, 10.0)


def load_monitors(
    cfg: TrainConfig, device: torch.device, warnings: list[str] | None = None
) -> dict[str, Reward]:
    """The independent quality score (if its package is installed) and the monitor-only rewards. A
    quality score that cannot load is reported in `warnings` (shown on the ComfyUI node) and the log."""
    monitors: dict[str, Reward] = {}
    if cfg.eval_quality:
        try:
            monitors[cfg.eval_quality] = load_reward(RewardSpec(cfg.eval_quality), device)
        except ImportError as e:  # optional extra not installed: evaluate without it, say so
            message = f"no independent quality score (eval_quality: {cfg.eval_quality}): {e}"
            log.warning(message)
            if warnings is not None:
                warnings.append(message)
    for spec in cfg.monitor_rewards:
        monitors[spec.name] = load_reward(spec, cfg.reward_device or device)
    return monitors


class Evaluator:
    """Samples the fixed evaluation set and scores it; `__call__(iteration)` -> Evaluation."""

    def __init__(
        self,
        cfg: TrainConfig,
        backend: FlowBackend,
        encode: Callable[[list[str]], Cond],
        decode: Callable[[torch.Tensor], torch.Tensor],
        rewards: RewardSet,
        monitors: dict[str, Reward],
        prompts: list[str],
        latent_shape: tuple[int, ...],
        height: int,
        width: int,
    ):
        self.cfg, self.backend, self.encode, self.decode = cfg, backend, encode, decode
        self.rewards, self.monitors = rewards, monitors
        n = cfg.eval_samples
        self.prompts = [prompts[i % len(prompts)] for i in range(n)]
        gens = [
            torch.Generator().manual_seed(
                int(np.random.SeedSequence([cfg.seed, EVAL_STREAM, i]).generate_state(1)[0])
            )
            for i in range(n)
        ]
        self.noise = randn(latent_shape, gens, backend.device)
        self.schedules = {"": backend.schedule(cfg.sample_steps, height, width)}
        if cfg.eval_few_steps:
            self.schedules["_few"] = backend.schedule(cfg.eval_few_steps, height, width)

    @torch.no_grad()
    def __call__(self, iteration: int) -> Evaluation:
        cond = self.encode(self.prompts)
        uncond = self.encode([""] * len(self.prompts)) if self.cfg.cfg_scale > 1 else None
        metrics: dict[str, Any] = {}
        rows = []
        for suffix, sigmas in self.schedules.items():
            full = suffix == ""
            roll = sample(
                self.backend,
                cond,
                self.noise,
                sigmas,
                uncond=uncond,
                cfg=self.cfg.cfg_scale,
                record_norms=full,
            )
            images = self.decode(roll.latents).float().cpu()
            rows.append(images)
            parts = self.rewards.score(images, self.prompts)
            metrics[f"eval_reward{suffix}"] = float(self.rewards.total(parts).mean())
            for name, monitor in self.monitors.items():
                metrics[f"eval_{name}{suffix}"] = float(monitor(images, self.prompts).float().mean())
            if full:
                metrics["rho_per_step"] = roll.rho.tolist()
                metrics["rho_mean"] = float(roll.rho.mean())
        return Evaluation(iteration, metrics, image_grid(rows))


class DriftMonitor:
    """Compares each evaluation with the base model's (iteration 0) and tracks the best checkpoint.

    Warns when rho_mean exceeds warn_rho or the quality score falls more than warn_quality_drop
    below the base model's. The best evaluation is the highest eval_reward among those whose
    quality stayed within the tolerance (keep_best="reward"), or the highest quality ("quality").
    """

    def __init__(self, cfg: TrainConfig, quality_key: str | None):
        self.cfg, self.quality_key = cfg, quality_key
        self.base: dict[str, Any] | None = None
        self.best: tuple[float, int] | None = None  # (score, iteration)

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state.get("best")
        self.base = state.get("base")
        # a best score saved as NaN (or null) by an earlier version would block every later one
        self.best = (best[0], best[1]) if best and math.isfinite(_number(best[0])) else None

    def check(self, ev: Evaluation) -> list[str]:
        m = ev.metrics
        if self.base is None:
            self.base = dict(m)
            return []
        out = []
        rho = _number(m.get("rho_mean", 1.0))
        if not math.isfinite(rho):
            out.append(f"iteration {ev.iteration}: rho is {rho}: the policy's velocities are not finite")
        elif rho > self.cfg.warn_rho:
            out.append(
                f"iteration {ev.iteration}: rho {rho:.3f} > warn_rho {self.cfg.warn_rho}: the "
                "velocity norm is inflating above the reference's"
            )
        drop = self.quality_drop(m)
        if not math.isfinite(drop):
            out.append(
                f"iteration {ev.iteration}: {self.quality_key} is not a number (the base model's: "
                f"{_number(self.base.get(self.quality_key))}): images may be degrading"
            )
        elif drop > quality_tolerance(self.cfg):
            out.append(
                f"iteration {ev.iteration}: {self.quality_key} fell {drop:.2f} below the base "
                f"model's (> warn_quality_drop {quality_tolerance(self.cfg)}): images may be degrading"
            )
        return out

    def quality_drop(self, m: dict[str, Any]) -> float:
        """How far the quality score fell below the base model's; NaN when either is not a number."""
        k = self.quality_key
        if k is None or self.base is None or k not in m or k not in self.base:
            return 0.0
        return _number(self.base[k]) - _number(m[k])

    def is_best(self, ev: Evaluation) -> bool:
        """True when this evaluation beats the best so far under the keep_best criterion."""
        mode = self.cfg.keep_best
        if mode == "none" or ev.iteration == 0:
            return False
        if mode == "reward":
            if not self.quality_drop(ev.metrics) <= quality_tolerance(self.cfg):  # NaN drop: not best
                return False
            score = _number(ev.metrics.get("eval_reward"))
        else:
            score = _number(ev.metrics.get(self.quality_key))
        if not math.isfinite(score):  # NaN would never compare greater, and freeze the best forever
            return False
        if self.best is None or score > self.best[0]:
            self.best = (score, ev.iteration)
            return True
        return False


def quality_key(cfg: TrainConfig, monitors: dict[str, Reward]) -> str | None:
    return f"eval_{cfg.eval_quality}" if cfg.eval_quality and cfg.eval_quality in monitors else None
