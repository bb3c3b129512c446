"""HunyuanImage 2.1 (dual/single-stream DiT; Qwen2.5-VL text plus byT5 glyph text for quoted words;
a 64-channel VAE at 32x)."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.utils.checkpoint

from .base import DiffusersAdapter, Family

FAMILY = Family(
    name="hunyuanimage",
    title="HunyuanImage 2.1",
    pipelines=("HunyuanImagePipeline",),
    comfy_models=("HunyuanImage21",),
    # the default targets: both streams' attention, as for the other MMDiTs (no trainer default published)
    refused_pipelines=("HunyuanImageRefinerPipeline",),
    # the same layers in ComfyUI's names: the token refiner's and the double blocks' attention (q/k/v fused),
    # and the single blocks' linear1, whose first rows are diffusers' fused-away to_q/to_k/to_v
    comfy_targets=(
        *(f"{a}.{p}" for a in ("self_attn", "img_attn", "txt_attn") for p in ("qkv", "proj")),
        "linear1",
    ),
    notes="byT5 glyph embeddings for quoted text; the meanflow-distilled variant is refused",
)


class Adapter(DiffusersAdapter):
    family = FAMILY
    patch = 1
    default_guidance = 3.25  # the pipeline's distilled_guidance_scale

    def __init__(self, pipe, source=""):
        super().__init__(pipe, source)
        config = pipe.transformer.config
        if config.get("use_meanflow", False):
            raise ValueError(
                f"{source!r} is a meanflow-distilled HunyuanImage 2.1: its velocity depends on the next "
                "sampler step too, which NormGuard's methods do not model; use the non-distilled model"
            )
        self.patch = int(config.patch_size[0])
        self.guidance_distilled = bool(config.guidance_embeds)

    def encode_prompts(self, prompts, device):
        embeds, mask, glyph, glyph_mask = self.pipe.encode_prompt(
            prompt=list(prompts), device=device, batch_size=len(prompts)
        )
        return {"prompt_embeds": embeds, "prompt_mask": mask, "glyph_embeds": glyph, "glyph_mask": glyph_mask}

    def predict(self, module, x, sigma, cond, guidance):
        g = None
        if guidance is not None:
            g = torch.full((x.shape[0],), guidance, device=x.device, dtype=x.dtype) * 1000.0
        return module(
            hidden_states=x,
            timestep=(sigma.to(x.device, torch.float32) * 1000).to(x.dtype),
            encoder_hidden_states=cond["prompt_embeds"],
            encoder_attention_mask=cond["prompt_mask"],
            encoder_hidden_states_2=cond["glyph_embeds"],
            encoder_attention_mask_2=cond["glyph_mask"],
            guidance=g,
            return_dict=False,
        )[0]

    def enable_gradient_checkpointing(self):
        """diffusers' checkpoint function takes positional arguments only, but this transformer passes its
        blocks keyword arguments (attention_mask, image_rotary_emb): use torch's non-reentrant checkpoint,
        which forwards them."""
        transformer = self.pipe.transformer
        transformer.enable_gradient_checkpointing()
        transformer._gradient_checkpointing_func = functools.partial(
            torch.utils.checkpoint.checkpoint, use_reentrant=False
        )

    def timestep_kwargs(self, steps, tokens):
        return {"sigmas": np.linspace(1.0, 0.0, steps + 1)[:-1]}

    def architecture(self):
        return "hunyuan-image-2.1"
