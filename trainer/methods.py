"""The four base methods as training recipes: which tuples they train on, which passes they need.

Each method turns one iteration's rollouts into training batches (one per trained timestep) and
computes its velocity-local loss from the velocities the trainer evaluates on a batch:
v (policy, with grad), v_ref (frozen reference, shared with NormGuard) and v_old (NFT's old
policy). The trainer runs each pass at most once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .backends.base import Cond, cond_select
from .config import TrainConfig
from .losses import awm_loss, dpo_loss, grpo_loss, nft_loss, nft_reward_weight
from .rollout import randn
from .sde import sde_step_mean

Batch = dict[str, Any]  # tensors and Conds, all batch-first


@dataclass
class RolloutData:
    """What the trainer keeps of one iteration's rollouts (this process's share)."""

    x0: torch.Tensor  # final samples [B, ...]
    cond: Cond
    uncond: Cond | None
    adv: torch.Tensor  # [B]
    group_size: int
    sigmas: torch.Tensor  # [S + 1]
    states: torch.Tensor | None = None  # [S + 1, B, ...] (grpo)
    log_probs: torch.Tensor | None = None  # [S, B] (grpo)
    generators: list[torch.Generator] | None = None  # per-sample streams for training noise


def select(batch: Batch, index: slice | torch.Tensor) -> Batch:
    """Rows of a batch: tensors and Conds alike."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = cond_select(v, index)
        elif isinstance(v, torch.Tensor) and v.ndim > 0:
            out[k] = v[index]
        else:
            out[k] = v
    return out


def batch_size(batch: Batch) -> int:
    return batch["x_t"].shape[0]


def _pick_steps(n_steps: int, fraction: float, k: int, gen: torch.Generator) -> list[int]:
    """k distinct step indices from the first (noisiest) `fraction` of an n-step schedule."""
    pool = max(1, math.ceil(n_steps * fraction))
    return sorted(torch.randperm(pool, generator=gen)[: min(k, pool)].tolist())


class Method:
    name = ""
    needs_old = False  # keeps a second copy of the adapter (OldPolicy), passed to loss() as v_old
    sde_eta = 0.0
    units_per_row = 1  # rows of a batch that form one loss unit (dpo: a pair)
    detach_uncond = False  # with train_cfg > 1: no gradient through the unconditional branch

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.needs_ref = cfg.kl_weight > 0
        self.train_cfg = 1.0  # NFT, AWM, DPO train the conditional velocity (CFG-free)
        self.samples_with = "policy"  # whose rollouts: 'policy', 'old' (the OldPolicy) or 'reference'

    def old_schedule(self) -> Callable[[int], float] | None:
        """The OldPolicy's decay per optimizer step; None = the EMA ramp (nft_ema_rate, nft_ema_max)."""
        return None

    def batches(self, data: RolloutData, gen: torch.Generator) -> list[Batch]:
        """Forward-process tuples (x_t = (1 - sigma) x0 + sigma eps) at K schedule sigmas."""
        out = []
        for k in _pick_steps(len(data.sigmas) - 1, self.cfg.timestep_fraction, self.cfg.train_timesteps, gen):
            x0 = data.x0
            eps = self._noise(x0.shape[1:], data.generators).to(x0.device, x0.dtype)
            sigma = torch.full((x0.shape[0],), float(data.sigmas[k]), device=x0.device)
            s = sigma.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
            out.append(
                {
                    "x_t": (1 - s) * x0 + s * eps,
                    "sigma": sigma,
                    "cond": data.cond,
                    "x0": x0,
                    "u": eps - x0,
                    "adv": data.adv,
                }
            )
        return out

    def micro_batches(self, batches: list[Batch], size: int) -> list[Batch]:
        """Each batch cut into micro-batches of at most `size` rows (at least one loss unit), whole units."""
        unit = self.units_per_row
        mb = max(unit, size // unit * unit)
        return [select(b, slice(i, i + mb)) for b in batches for i in range(0, batch_size(b), mb)]

    def _noise(self, shape: torch.Size, generators: list[torch.Generator]) -> torch.Tensor:
        """Training noise drawn per sample, so it does not depend on how samples are split over ranks."""
        return randn(shape, generators, torch.device("cpu"))

    def loss(
        self, b: Batch, v: torch.Tensor, v_ref: torch.Tensor | None, v_old: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


class NFT(Method):
    name, needs_old = "nft", True

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.samples_with = "old"  # DiffusionNFT collects data with its old policy

    def loss(self, b, v, v_ref, v_old):
        r = nft_reward_weight(b["adv"], self.cfg.adv_clip)
        loss = nft_loss(
            v, v_old, b["x_t"], b["x0"], b["sigma"], r, beta=self.cfg.nft_beta, adv_clip=self.cfg.adv_clip
        )
        return self._with_kl(loss, v, v_ref)

    def _with_kl(self, loss, v, v_ref):
        stats = {}
        if self.cfg.kl_weight > 0:
            kl = (v.float() - v_ref.float()).square().flatten(1).mean(1).mean()
            loss = loss + self.cfg.kl_weight * kl
            stats["kl"] = kl.item()
        return loss, stats


class AWM(NFT):
    """On-policy AWM with the AWM code's optional stabilisers: generalised-Huber weighting, advantage
    scaling, and a KL towards an EMA of the adapter (the OldPolicy, ramped up to awm_ema_max)."""

    name = "awm"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.needs_old = cfg.awm_ema_kl_weight > 0
        self.samples_with = "policy"

    def old_schedule(self):
        rate, ceiling = self.cfg.nft_ema_rate, self.cfg.awm_ema_max
        return lambda step: min(rate * step, ceiling)

    def loss(self, b, v, v_ref, v_old):
        cfg = self.cfg
        w = b["sigma"] if cfg.awm_time_weight in ("sigma", "ghuber") else None
        loss = awm_loss(
            v,
            b["u"],
            b["adv"],
            time_weight=w,
            adv_clip=cfg.adv_clip,
            ghuber_power=cfg.awm_ghuber_power if cfg.awm_time_weight == "ghuber" else None,
            advantage_max=cfg.awm_advantage_max,
        )
        loss, stats = self._with_kl(loss, v, v_ref)
        if cfg.awm_ema_kl_weight > 0:
            ema_kl = (v.float() - v_old.float()).square().flatten(1).mean(1).mean()
            loss = loss + cfg.awm_ema_kl_weight * ema_kl
            stats["ema_kl"] = ema_kl.item()
        return loss, stats


class DPO(Method):
    """Pairs (best, worst) of each group at the same eps and sigma, laid out [w0, l0, w1, l1, ...].

    Regimes (dpo_regime): 'mixed' -- policy rollouts against the frozen reference; 'offline' --
    Diffusion-DPO's setting, pairs drawn from the frozen reference (a fixed data distribution);
    'online' -- policy rollouts, the DPO reference a copy of the policy synced every
    dpo_ref_sync_every optimizer steps (Flow-Factory's online DPO keeps it frozen: that is 'mixed').
    NormGuard's v_ref is the frozen reference in every regime.
    """

    name, units_per_row = "dpo", 2

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.needs_ref = True
        self.needs_old = cfg.dpo_regime == "online"
        self.samples_with = "reference" if cfg.dpo_regime == "offline" else "policy"

    def old_schedule(self):
        every = self.cfg.dpo_ref_sync_every
        return lambda step: 0.0 if step % every == 0 else 1.0

    def batches(self, data, gen):
        r = data.adv.view(-1, data.group_size)
        base = torch.arange(r.shape[0]) * data.group_size
        win, lose = base + r.argmax(1).cpu(), base + r.argmin(1).cpu()
        order = torch.stack([win, lose], dim=1).flatten()
        paired = RolloutData(
            x0=data.x0[order.to(data.x0.device)],
            cond=cond_select(data.cond, order),
            uncond=None,
            adv=data.adv[order.to(data.adv.device)],
            group_size=2,
            sigmas=data.sigmas,
            generators=[data.generators[i] for i in order.tolist()],
        )
        return super().batches(paired, gen)

    def _noise(self, shape, generators):
        return randn(shape, generators[0::2], torch.device("cpu")).repeat_interleave(
            2, dim=0
        )  # one eps a pair

    def loss(self, b, v, v_ref, v_old):
        u, ref = b["u"], (v_old if self.needs_old else v_ref)
        loss = dpo_loss(v[0::2], ref[0::2], u[0::2], v[1::2], ref[1::2], u[1::2], beta=self.cfg.dpo_beta)
        return loss, {}


class GRPO(Method):
    """Trains on recorded SDE steps (x_k -> x_k+1) with the rollout's own log-probabilities."""

    name = "grpo"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.sde_eta = cfg.grpo_eta
        self.train_cfg = cfg.cfg_scale  # the loss is the sampling policy's log-probability: same guidance
        # flow_grpo's compute_log_prob: both branches carry the gradient in its first release
        # (May 2025), the unconditional one is detached since July 2025 (scripts/train_sd3.py,
        # `noise_pred_uncond = noise_pred_uncond.detach()`); ours follows the current one by default.
        self.detach_uncond = cfg.grpo_detach_uncond

    def batches(self, data, gen):
        sigma_max = float(data.sigmas[1])
        out = []
        for k in _pick_steps(len(data.sigmas) - 1, self.cfg.timestep_fraction, self.cfg.train_timesteps, gen):
            n = data.x0.shape[0]
            b = {
                "x_t": data.states[k],
                "x_next": data.states[k + 1],
                "cond": data.cond,
                "sigma": torch.full((n,), float(data.sigmas[k]), device=data.x0.device),
                "sigma_next": torch.full((n,), float(data.sigmas[k + 1]), device=data.x0.device),
                "log_prob_old": data.log_probs[k],
                "adv": data.adv,
                "sigma_max": sigma_max,
            }
            if data.uncond is not None:
                b["uncond"] = data.uncond
            out.append(b)
        return out

    def loss(self, b, v, v_ref, v_old):
        step = dict(sigma=b["sigma"], sigma_next=b["sigma_next"], eta=self.sde_eta, sigma_max=b["sigma_max"])
        mean, std = sde_step_mean(b["x_t"], v, **step)
        mean_ref = sde_step_mean(b["x_t"], v_ref, **step)[0] if self.cfg.kl_weight > 0 else None
        return grpo_loss(
            mean,
            std,
            b["x_next"],
            b["log_prob_old"],
            b["adv"],
            clip_range=self.cfg.grpo_clip_range,
            adv_clip=self.cfg.adv_clip,
            kl_weight=self.cfg.kl_weight,
            mean_ref=mean_ref,
        )


def step_distillation_warning(cfg: TrainConfig, distilled: bool) -> str | None:
    """A warning when NFT or GRPO is asked to train a step-distilled model (or samples in <= 4 steps,
    as such a model does); None otherwise."""
    if cfg.method not in ("nft", "grpo"):
        return None
    if distilled:
        why = "this model is step-distilled (like FLUX.1-schnell, Z-Image-Turbo, FLUX.2 klein)"
    elif cfg.sample_steps <= 4:
        why = f"rollouts use {cfg.sample_steps} sampler steps, as a step-distilled model's do"
    else:
        return None
    return (
        f"{cfg.method.upper()} on a step-distilled model: {why}. DiffusionNFT's issue tracker reports that "
        "NFT does not support step-distilled models, and Flow-GRPO's SDE assumes a many-step schedule; "
        "the reward may not improve. AWM or DPO, or the undistilled base model, avoid this."
    )


def make_method(cfg: TrainConfig) -> Method:
    return {"nft": NFT, "awm": AWM, "dpo": DPO, "grpo": GRPO}[cfg.method](cfg)
