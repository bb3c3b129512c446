"""Chroma (FLUX.1-schnell derived, T5 only, no pooled vector or guidance input, masked text)."""

from __future__ import annotations

import torch

from .base import DiffusersAdapter, Family, pipeline_timestep
from .flux import FAMILY as FLUX
from .flux import latent_image_ids, pack_latents, unpack_latents

FAMILY = Family(
    name="chroma",
    title="Chroma",
    pipelines=("ChromaPipeline",),
    comfy_models=("Chroma",),
    comfy_targets=FLUX.comfy_targets,  # Chroma's blocks are FLUX.1's (ComfyUI fuses q/k/v)
    # FLUX's attention targets (ai-toolkit's Chroma config trains the same transformer blocks)
    targets_from="diffusers train_dreambooth_lora_flux.py (same blocks)",
    refused_pipelines=("ChromaImg2ImgPipeline", "ChromaInpaintPipeline"),
    notes="T5 attention mask: all but the first padding token masked",
)


class Adapter(DiffusersAdapter):
    family = FAMILY
    max_sequence_length = 512

    def encode_prompts(self, prompts, device):
        embeds, _, mask, *_ = self.pipeline_prompts(prompts, device)
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def predict(self, module, x, sigma, cond, guidance):
        b, c, h, w = x.shape
        text, tokens = cond["prompt_embeds"], (h // 2) * (w // 2)
        mask = self.pipe._prepare_attention_mask(
            batch_size=b, sequence_length=tokens, dtype=x.dtype, attention_mask=cond["prompt_attention_mask"]
        )
        out = module(
            hidden_states=pack_latents(x),
            timestep=pipeline_timestep(sigma.to(x.device), x.dtype) / 1000,
            encoder_hidden_states=text,
            txt_ids=torch.zeros(text.shape[1], 3, device=x.device, dtype=text.dtype),
            img_ids=latent_image_ids(h // 2, w // 2, device=x.device, dtype=x.dtype),
            attention_mask=mask,
            return_dict=False,
        )[0]
        return unpack_latents(out, h, w)

    def architecture(self):
        return "chroma"
