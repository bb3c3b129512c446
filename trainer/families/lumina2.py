"""Lumina-Image 2.0 (Gemma-2 text encoder, unified next-DiT; Z-Image's parent)."""

from __future__ import annotations

import torch

from .base import ATTENTION_TARGETS, DiffusersAdapter, Family

FAMILY = Family(
    name="lumina2",
    title="Lumina-Image 2.0",
    pipelines=("Lumina2Pipeline", "Lumina2Text2ImgPipeline"),
    comfy_models=("Lumina2",),
    lora_targets=ATTENTION_TARGETS,
    comfy_targets=("attention.qkv", "attention.out"),  # ComfyUI fuses to_q/k/v; refiners included
    targets_from="diffusers train_dreambooth_lora_lumina2.py",
    notes="Gemma-2 attention mask; system prompt prepended to prompts (not to the empty negative)",
)


class Adapter(DiffusersAdapter):
    family = FAMILY
    max_sequence_length = 256

    def encode_prompts(self, prompts, device):
        # the pipeline prepends its system prompt to prompts but not to the negative prompt, so the
        # empty prompt (the CFG negative) is encoded bare, as the pipeline encodes its default negative
        system = self.pipe.system_prompt + " <Prompt Start> "
        text = [p if p == "" else system + p for p in prompts]
        embeds, mask = self.pipe._get_gemma_prompt_embeds(
            text, device=device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def predict(self, module, x, sigma, cond, guidance):
        # Lumina counts time from noise (0) to image (1) and predicts x0 - eps
        t = 1 - sigma.to(x.device, torch.float32)
        out = module(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=cond["prompt_embeds"],
            encoder_attention_mask=cond["prompt_attention_mask"],
            return_dict=False,
        )[0]
        return -out

    def architecture(self):
        return "lumina-image-2"
