"""Stable Diffusion 3 / 3.5 (MMDiT; SD3.5-Medium adds self-attention blocks, attn2)."""

from __future__ import annotations

import torch

from .base import DiffusersAdapter, Family, calculate_shift

FAMILY = Family(
    name="sd3",
    title="SD3 / SD3.5",
    pipelines=("StableDiffusion3Pipeline",),
    comfy_models=("SD3",),
    comfy_targets=("attn.qkv", "attn.proj", "attn2.qkv", "attn2.proj"),  # the joint blocks' attention
    # diffusers' train_dreambooth_lora_sd3.py: the joint attention of both streams (these names also
    # match SD3.5-Medium's second attention, attn2)
    targets_from="diffusers train_dreambooth_lora_sd3.py",
    refused_pipelines=(
        "StableDiffusion3Img2ImgPipeline",
        "StableDiffusion3InpaintPipeline",
        "StableDiffusion3ControlNetPipeline",
        "StableDiffusion3ControlNetInpaintingPipeline",
    ),
)


def architecture_name(layers: int = 0, dual_attention: bool = False, qk_norm: bool = False) -> str:
    """modelspec.architecture of an SD3 transformer (both backends)."""
    if dual_attention:
        return "stable-diffusion-3.5-medium"
    if qk_norm:
        return "stable-diffusion-3.5-large"
    return "stable-diffusion-3-medium" if layers == 24 else "stable-diffusion-3"


class Adapter(DiffusersAdapter):
    family = FAMILY
    max_sequence_length = 256  # T5 tokens (the pipeline's default)

    def __init__(self, pipe, source=""):
        super().__init__(pipe, source)
        self.patch = pipe.transformer.config.patch_size

    def encode_prompts(self, prompts, device):
        embeds, _, pooled, _ = self.pipeline_prompts(prompts, device, prompt_2=None, prompt_3=None)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def predict(self, module, x, sigma, cond, guidance):
        # the pipeline passes its scheduler's timesteps, sigma * num_train_timesteps in float32
        t = sigma.to(x.device, torch.float32) * self.pipe.scheduler.config.num_train_timesteps
        return module(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled_prompt_embeds"],
            return_dict=False,
        )[0]

    def timestep_kwargs(self, steps, tokens):
        config = self.pipe.scheduler.config
        if config.get("use_dynamic_shifting", False):
            return {"mu": calculate_shift(tokens, config, default_max_shift=1.16)}
        return {}

    def architecture(self):
        c = self.pipe.transformer.config
        return architecture_name(c.num_layers, bool(c.dual_attention_layers), bool(c.qk_norm))

    @property
    def native_resolution(self):
        return self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor

    def max_latent_side(self):
        size = self.pipe.transformer.config.pos_embed_max_size
        return None if size is None else size * self.patch
