"""What a flow model family is: one descriptor (facts both backends share) and one diffusers adapter.

A family's whole story lives in one module of this package: its `Family` descriptor (pipelines and
ComfyUI classes it covers, default LoRA targets, native size, distillation) and its `DiffusersAdapter`
(how its pipeline encodes prompts, calls the transformer, lays out latents and schedules sigmas).
The adapters read the pipeline object they are given; nothing here imports diffusers or ComfyUI.

Conventions every adapter keeps: latents are the spatial layout [B, C, h, w] (any token packing
happens inside `predict`), and `predict` returns the flow velocity v = eps - x0 at sigma in [0, 1],
whatever sign or timestep direction the family's transformer uses, so velocity norms and per-token
reductions mean the same thing across families.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Cond = dict[str, torch.Tensor]


# The attention projections in diffusers' names (the image stream's, or a single-stream block's).
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# Both streams of a joint-attention (MMDiT-style) block: what diffusers' SD3/FLUX DreamBooth LoRA scripts
# train, and our default wherever a family has such blocks.
JOINT_ATTENTION_TARGETS = (*ATTENTION_TARGETS, "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


# Why JOINT_ATTENTION_TARGETS are the default targets of a family that states none.
JOINT_TARGETS_FROM = "joint attention, as diffusers' SD3/FLUX DreamBooth LoRA scripts"


@dataclass(frozen=True)
class Family:
    """Facts about one model family, shared by the diffusers and the ComfyUI backend. A descriptor states
    what sets its family apart; the defaults are what the joint-attention (MMDiT) families share."""

    name: str  # short id, e.g. "zimage"
    title: str  # what users call it, e.g. "Z-Image / Z-Image-Turbo"
    pipelines: tuple[str, ...]  # diffusers text-to-image pipeline classes it trains
    comfy_models: tuple[str, ...]  # comfy.supported_models classes of the family
    lora_targets: tuple[str, ...] = JOINT_ATTENTION_TARGETS  # default peft target_modules (diffusers names)
    targets_from: str = JOINT_TARGETS_FROM  # whose defaults these are (the popular trainer followed)
    refused_pipelines: tuple[str, ...] = ()  # same family, but needs an image input (edit, inpaint, ...)
    # default LoRA targets in ComfyUI's module names (suffixes, as peft matches them): the same layers as
    # lora_targets; empty: every attention Linear of the ComfyUI model
    comfy_targets: tuple[str, ...] = ()
    # words in a model file's name that mark a step-distilled variant whose weights and config are the base
    # model's shape (Z-Image-Turbo, FLUX.2 klein); a name that also says "base" is the undistilled model
    distilled_names: tuple[str, ...] = ()
    notes: str = ""


def calculate_shift(image_seq_len: int, config: Any, default_max_shift: float = 1.15) -> float:
    """mu for resolution-dependent shifting: linear in the image token count (as the pipelines do)."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", default_max_shift)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len


def pipeline_timestep(sigma: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The scheduler's timestep (1000 sigma, float32) cast to the latent dtype, as most pipelines pass it."""
    return (sigma.float() * 1000).to(dtype)


def trim_to_mask(cond: Cond, embeds: str, mask: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Text embeddings and mask cut to the longest prompt in the batch: cond_cat pads rows of different
    prompts to a common length, and a pipeline given the same batch pads only that far."""
    m = cond[mask]
    length = int(m.bool().sum(1).max()) if m.numel() else 0
    return cond[embeds][:, :length], m[:, :length]


class DiffusersAdapter(ABC):
    """How one pipeline family is driven: prompts, transformer call, schedule, latents, names."""

    family: Family
    patch: int = 2  # latent pixels per transformer token along each side
    guidance_distilled: bool = False  # takes a distilled `guidance` input (FLUX.1-dev)
    default_guidance: float | None = None  # the pipeline's default for that input
    step_distilled: bool = False  # sampled in a few steps (FLUX.1-schnell, Z-Image-Turbo, FLUX.2 klein)
    max_sequence_length: int | None = None  # text tokens the pipeline's prompt encoding keeps

    def __init__(self, pipe: Any, source: str = ""):
        self.pipe = pipe
        self.source = source

    # --- latents -------------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.latent_channels

    @property
    def vae_factor(self) -> int:
        """Image pixels per latent pixel along each side."""
        return self.pipe.vae_scale_factor

    @property
    def native_resolution(self) -> int:
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor

    def max_latent_side(self) -> int | None:
        """Largest latent height/width the transformer accepts (None: no limit)."""
        return None

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1] (the VAE's output range); a KL VAE with scaling and shift."""
        vae = self.pipe.vae
        z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor + (
            vae.config.get("shift_factor") or 0.0
        )
        return vae.decode(z, return_dict=False)[0]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> latents (the posterior mean: deterministic)."""
        vae = self.pipe.vae
        posterior = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
        return (posterior.mean - (vae.config.get("shift_factor") or 0.0)) * vae.config.scaling_factor

    # --- the model -----------------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, prompts: list[str], device: torch.device) -> Cond:
        """Batch-first conditioning tensors, exactly what the pipeline hands its transformer."""

    def pipeline_prompts(self, prompts: list[str], device: torch.device, **kwargs: Any) -> tuple:
        """The pipeline's own `encode_prompt` for `prompts` alone, at max_sequence_length: no negative
        prompt (the core encodes the empty prompt itself when it guides). kwargs: the family's extras."""
        return self.pipe.encode_prompt(
            prompt=list(prompts),
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            **kwargs,
        )

    @abstractmethod
    def predict(
        self, module: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, guidance: float | None
    ) -> torch.Tensor:
        """The velocity v = eps - x0 for latents x [B, C, h, w] at sigma [B], in x's layout."""

    def timestep_kwargs(self, steps: int, tokens: int) -> dict[str, Any]:
        """What the pipeline passes to scheduler.set_timesteps (most: linear sigmas, shift by token count)."""
        import numpy as np

        config = self.pipe.scheduler.config
        sigmas = None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)
        return {"sigmas": sigmas, "mu": calculate_shift(tokens, config)}

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each transformer block in backward (diffusers' own switch)."""
        self.pipe.transformer.enable_gradient_checkpointing()

    @abstractmethod
    def architecture(self) -> str:
        """modelspec.architecture of the base model (best effort)."""
