"""FLUX.2 [dev] and FLUX.2 [klein] (MMDiT with 4-axis RoPE, a 32-channel VAE whose latents are 2x2-
patchified to 128 channels and batch-normalised; dev: Mistral-3 text, guidance-distilled; klein: Qwen3
text, the distilled klein models sample in 4 steps)."""

from __future__ import annotations

import torch

from .base import JOINT_ATTENTION_TARGETS, DiffusersAdapter, Family

FAMILY = Family(
    name="flux2",
    title="FLUX.2 dev / klein",
    pipelines=("Flux2Pipeline", "Flux2KleinPipeline"),
    comfy_models=("Flux2",),
    # DiffSynth-Studio's FLUX.2 klein LoRA script: both streams' attention plus the single blocks'
    # fused qkv+mlp input projection
    lora_targets=(*JOINT_ATTENTION_TARGETS, "to_qkv_mlp_proj"),
    # ComfyUI fuses q/k/v (and, in single blocks, to_qkv_mlp_proj is linear1)
    comfy_targets=("img_attn.qkv", "img_attn.proj", "txt_attn.qkv", "txt_attn.proj", "linear1"),
    targets_from="DiffSynth-Studio FLUX.2 klein LoRA example",
    refused_pipelines=("Flux2KleinInpaintPipeline", "Flux2KleinKVPipeline"),
    distilled_names=("klein",),
    notes="dev: guidance-distilled (guidance 4); klein distilled: step-distilled (pipeline config is_distilled)",
)


def empirical_mu(image_seq_len: int, num_steps: int) -> float:
    """FLUX.2's schedule shift: fitted on token count and step count (the pipeline's compute_empirical_mu)."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if image_seq_len > 4300:
        return float(a2 * image_seq_len + b2)
    m_200, m_10 = a2 * image_seq_len + b2, a1 * image_seq_len + b1
    a = (m_200 - m_10) / 190.0
    return float(a * num_steps + m_200 - 200.0 * a)


class Adapter(DiffusersAdapter):
    family = FAMILY
    patch = 1  # the latent is already 2x2-patchified: one token per latent pixel
    max_sequence_length = 512
    default_guidance = 4.0  # Flux2Pipeline's default guidance_scale

    def __init__(self, pipe, source=""):
        super().__init__(pipe, source)
        self.klein = type(pipe).__name__.startswith("Flux2Klein")
        self.guidance_distilled = bool(pipe.transformer.config.guidance_embeds) and not self.klein
        self.step_distilled = self.klein and bool(pipe.config.get("is_distilled", False))

    @property
    def latent_channels(self):
        return self.pipe.vae.config.latent_channels * 4

    @property
    def vae_factor(self):
        return self.pipe.vae_scale_factor * 2

    def encode_prompts(self, prompts, device):
        embeds, _ = self.pipe.encode_prompt(
            prompt=list(prompts), device=device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds}

    def predict(self, module, x, sigma, cond, guidance):
        b, c, h, w = x.shape
        text = cond["prompt_embeds"]
        g = None if guidance is None else torch.full((b,), guidance, device=x.device, dtype=torch.float32)
        t = (sigma.to(x.device, torch.float32) * 1000).to(x.dtype) / 1000
        out = module(
            hidden_states=x.reshape(b, c, h * w).permute(0, 2, 1),
            timestep=t,
            guidance=g,
            encoder_hidden_states=text,
            txt_ids=self.pipe._prepare_text_ids(text).to(x.device),
            img_ids=self.pipe._prepare_latent_ids(x).to(x.device),
            return_dict=False,
        )[0]
        return out[:, : h * w].permute(0, 2, 1).reshape(b, c, h, w)

    def timestep_kwargs(self, steps, tokens):
        import numpy as np

        config = self.pipe.scheduler.config
        sigmas = None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)
        return {"sigmas": sigmas, "mu": empirical_mu(tokens, steps)}

    def _bn(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vae = self.pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(
            like.device, like.dtype
        )
        return mean, std

    def decode(self, latents):
        vae = self.pipe.vae
        z = latents.to(vae.device, vae.dtype)
        mean, std = self._bn(z)
        return vae.decode(self.pipe._unpatchify_latents(z * std + mean), return_dict=False)[0]

    def encode_images(self, images):
        vae = self.pipe.vae
        z = self.pipe._patchify_latents(vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mode())
        mean, std = self._bn(z)
        return (z - mean) / std

    def architecture(self):
        if self.klein:
            return "flux-2-klein" if self.step_distilled else "flux-2-klein-base"
        return "flux-2-dev"
