"""Z-Image / Z-Image-Turbo (single-stream S3-DiT, Qwen3 text encoder; Lumina 2 is its parent)."""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from .base import ATTENTION_TARGETS, DiffusersAdapter, Family

FAMILY = Family(
    name="zimage",
    title="Z-Image / Z-Image-Turbo",
    pipelines=("ZImagePipeline",),
    comfy_models=("ZImage",),
    # ai-toolkit and musubi-tuner adapt every Linear of the transformer blocks (ZImageTransformerBlock):
    # attention and the SwiGLU feed-forward
    lora_targets=(*ATTENTION_TARGETS, "w1", "w2", "w3"),
    targets_from="ai-toolkit / musubi-tuner (all Linears of the blocks, not adaLN)",
    # ComfyUI fuses to_q/k/v into attention.qkv; the refiner blocks are blocks of the same class
    comfy_targets=("attention.qkv", "attention.out", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"),
    refused_pipelines=(
        "ZImageImg2ImgPipeline",
        "ZImageInpaintPipeline",
        "ZImageControlNetPipeline",
        "ZImageControlNetInpaintPipeline",
        "ZImageOmniPipeline",
    ),
    distilled_names=("turbo",),
    notes="Turbo is step-distilled (told by the model name); variable-length text, no padding tokens",
)


def padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prompt token rows of different lengths -> zero-padded [B, L, D] and a bool mask [B, L]."""
    mask = pad_sequence(
        [torch.ones(len(r), dtype=torch.bool, device=r.device) for r in rows], batch_first=True
    )
    return pad_sequence(rows, batch_first=True), mask


class Adapter(DiffusersAdapter):
    family = FAMILY
    max_sequence_length = 512

    def __init__(self, pipe, source=""):
        super().__init__(pipe, source)
        self.step_distilled = "turbo" in source.lower()

    def encode_prompts(self, prompts, device):
        # the pipeline keeps each prompt's valid tokens only (a list of [L_i, D])
        rows = self.pipe._encode_prompt(
            list(prompts), device=device, max_sequence_length=self.max_sequence_length
        )
        embeds, mask = padded(rows)
        return {"prompt_embeds": embeds, "prompt_mask": mask}

    def predict(self, module, x, sigma, cond, guidance):
        caps = [e[m.bool()] for e, m in zip(cond["prompt_embeds"], cond["prompt_mask"], strict=True)]
        # the scheduler's timestep t = 1000 sigma; Z-Image counts time the other way: (1000 - t) / 1000
        t = (1000 - sigma.to(x.device, torch.float32) * 1000) / 1000
        out = module(list(x.unsqueeze(2).unbind(0)), t, caps, return_dict=False)[0]
        return -torch.stack(out).squeeze(2).to(x.dtype)  # it predicts x0 - eps

    def architecture(self):
        return "z-image-turbo" if self.step_distilled else "z-image"

    @property
    def native_resolution(self):
        return 1024
