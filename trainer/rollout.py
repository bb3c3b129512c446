"""Samplers over any backend's velocity: Euler ODE and the Flow-GRPO SDE, with optional CFG.

On request they also run the frozen reference on the policy's own trajectory and record both
per-step velocity norms, which gives the inflation ratio rho_k (PAPER.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .backends.base import Cond, FlowBackend, cond_cat
from .penalty import velocity_norms
from .sde import gaussian_log_prob, sde_step_mean


@dataclass
class Rollout:
    latents: torch.Tensor  # final samples (sigma = 0) [B, ...]
    noise: torch.Tensor  # the starting noise [B, ...]
    sigmas: torch.Tensor  # the schedule [S + 1]
    states: torch.Tensor | None = None  # trajectory [S + 1, B, ...] (record_trajectory)
    log_probs: torch.Tensor | None = None  # per-step log-probabilities [S, B] (SDE)
    v_norms: torch.Tensor | None = None  # ||v_theta|| per step [S, B] (record_norms)
    ref_norms: torch.Tensor | None = None  # ||v_ref|| per step [S, B] (record_norms)

    @property
    def rho(self) -> torch.Tensor | None:
        """Per-step inflation ratio: mean over samples of ||v_theta|| / ||v_ref|| -> [S]."""
        if self.v_norms is None:
            return None
        return (self.v_norms / self.ref_norms.clamp_min(1e-12)).mean(dim=1)


def randn(shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device) -> torch.Tensor:
    """One standard-normal sample per generator (on CPU, so results do not depend on the device)."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators]).to(device)


def rescale_to_norm(v: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    """v with each sample's L2 norm set to that of v_ref (direction kept): inference-time rescaling,
    the CFG-rescale idea applied to the velocity norm (PAPER.md, claim 3)."""
    scale = velocity_norms(v_ref) / velocity_norms(v).clamp_min(1e-12)
    return v * scale.to(v.dtype).view(-1, *([1] * (v.ndim - 1)))


def guided_velocity(
    backend: FlowBackend,
    x: torch.Tensor,
    sigma: torch.Tensor,
    cond: Cond,
    uncond: Cond | None,
    cfg: float,
    *,
    detach_uncond: bool = False,
) -> torch.Tensor:
    """v_uncond + cfg (v_cond - v_uncond), with both branches in one batched call; cfg = 1 is v_cond.

    x is cast to the backend's dtype (GRPO keeps its states in float32). detach_uncond stops the
    gradient through the unconditional branch, as flow_grpo's compute_log_prob does.
    """
    x = x.to(backend.dtype)
    if cfg == 1.0 or uncond is None:
        return backend.velocity(x, sigma, cond)
    v = backend.velocity(torch.cat([x, x]), torch.cat([sigma, sigma]), cond_cat([cond, uncond]))
    v_c, v_u = v.chunk(2)
    if detach_uncond:
        v_u = v_u.detach()
    return v_u + cfg * (v_c - v_u)


@torch.no_grad()
def sample(
    backend: FlowBackend,
    cond: Cond,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    uncond: Cond | None = None,
    cfg: float = 1.0,
    sde_eta: float = 0.0,
    generators: Sequence[torch.Generator] | None = None,
    record_norms: bool = False,
    record_trajectory: bool = False,
    rescale_to_reference: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> Rollout:
    """Integrate from noise (sigma = sigmas[0]) to sigmas[-1] with the policy.

    sde_eta > 0 uses the Flow-GRPO SDE (needs one generator per sample for its step noise) and
    records log-probabilities and the trajectory; 0 is the deterministic Euler ODE. The SDE's
    states stay in float32 -- the exact states its log-probabilities were computed on, as flow_grpo
    keeps them -- and are cast to the model's dtype only as its input: a bf16 copy would move each
    recorded log-probability by about as much as GRPO's 1e-4 clip range.
    record_norms also evaluates the reference (same x, same guidance) at every step: about twice
    the cost, so the trainer does it only on its periodic evaluation set.
    rescale_to_reference sets ||v|| to ||v_ref|| at every step before it is used (it also needs
    the reference pass); the recorded v_norms are then those before rescaling.
    """
    if sde_eta > 0 and (generators is None or len(generators) != noise.shape[0]):
        raise ValueError("the SDE sampler needs one torch.Generator per sample")
    b, steps = noise.shape[0], len(sigmas) - 1
    x = noise.to(backend.device, torch.float32 if sde_eta > 0 else backend.dtype)
    states = [x] if (record_trajectory or sde_eta > 0) else None
    log_probs, v_norms, ref_norms = [], [], []
    sigma_max = float(sigmas[1]) if len(sigmas) > 1 else 1.0
    needs_ref = record_norms or rescale_to_reference
    # a merged adapter cannot be switched off: only merge when no reference pass is needed; and the
    # SDE's log-probabilities must come from the forward that GRPO's training pass runs (a fused
    # adapter rounds differently: ~1e-5 ratio error in bf16, a tenth of the clip range)
    with nullcontext() if (needs_ref or sde_eta > 0) else backend.sampling():
        for k in range(steps):
            s = torch.full((b,), float(sigmas[k]), device=backend.device)
            s_next = torch.full((b,), float(sigmas[k + 1]), device=backend.device)
            v = guided_velocity(backend, x, s, cond, uncond, cfg)
            if needs_ref:
                with backend.reference():
                    v_ref = guided_velocity(backend, x, s, cond, uncond, cfg)
                if record_norms:
                    v_norms.append(velocity_norms(v))
                    ref_norms.append(velocity_norms(v_ref))
                if rescale_to_reference:
                    v = rescale_to_norm(v, v_ref)
            if sde_eta > 0:
                mean, std = sde_step_mean(x, v, s, s_next, eta=sde_eta, sigma_max=sigma_max)
                x_next = mean + std.view(-1, *([1] * (x.ndim - 1))) * randn(x.shape[1:], generators, x.device)
                log_probs.append(gaussian_log_prob(x_next, mean, std))
                x = x_next
            else:
                x = x + (s_next - s).to(x.dtype).view(-1, *([1] * (x.ndim - 1))) * v.to(x.dtype)
            if states is not None:
                states.append(x)
            if on_step is not None:
                on_step(k + 1, steps)
    return Rollout(
        latents=x,
        noise=noise,
        sigmas=sigmas,
        states=torch.stack(states) if states is not None else None,
        log_probs=torch.stack(log_probs) if log_probs else None,
        v_norms=torch.stack(v_norms) if record_norms else None,
        ref_norms=torch.stack(ref_norms) if record_norms else None,
    )
