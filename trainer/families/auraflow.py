"""AuraFlow (MMDiT-style, UMT5 text encoder, the 4-channel SDXL VAE)."""

from __future__ import annotations

import torch

from .base import DiffusersAdapter, Family

FAMILY = Family(
    name="auraflow",
    title="AuraFlow",
    pipelines=("AuraFlowPipeline",),
    comfy_models=("AuraFlow",),
    # AuraFlow's original names (ComfyUI's): every attention projection, as the diffusers targets (joint
    # layers: w1* the text stream = add_*/to_add_out, w2* the image one; single layers: w1*)
    comfy_targets=tuple(f"attn.w{s}{p}" for s in "12" for p in "qkvo"),
    targets_from="SimpleTuner / diffusers SD3 script (joint attention)",  # both streams, AuraFlow's names
)


class Adapter(DiffusersAdapter):
    family = FAMILY
    max_sequence_length = 256

    def encode_prompts(self, prompts, device):
        embeds, _, _, _ = self.pipeline_prompts(prompts, device)
        return {"prompt_embeds": embeds}

    def predict(self, module, x, sigma, cond, guidance):
        # the pipeline passes t / 1000 in the latent dtype, t the scheduler's float32 timestep
        t = (sigma.to(x.device, torch.float32) * 1000 / 1000).to(x.dtype)
        return module(x, encoder_hidden_states=cond["prompt_embeds"], timestep=t, return_dict=False)[0]

    def timestep_kwargs(self, steps, tokens):
        return {}  # the pipeline lets the scheduler space the timesteps (with its fixed shift)

    def architecture(self):
        return "auraflow"

    @property
    def native_resolution(self):
        return self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor

    def max_latent_side(self):
        return int(self.pipe.transformer.config.pos_embed_max_size**0.5) * self.patch
