"""FLUX.1 dev / schnell / Krea (guidance-distilled dev, step-distilled schnell)."""

from __future__ import annotations

import torch

from .base import DiffusersAdapter, Family, pipeline_timestep

FAMILY = Family(
    name="flux",
    title="FLUX.1 dev / schnell / Krea",
    pipelines=("FluxPipeline",),
    comfy_models=("Flux", "FluxSchnell"),
    comfy_targets=("img_attn.qkv", "img_attn.proj", "txt_attn.qkv", "txt_attn.proj", "linear1", "linear2"),
    # diffusers' train_dreambooth_lora_flux.py default (ai-toolkit also targets every Linear of the
    # blocks); the names cover the double blocks' both streams and the single blocks' to_q/k/v
    targets_from="diffusers train_dreambooth_lora_flux.py",
    refused_pipelines=(
        "FluxImg2ImgPipeline",
        "FluxInpaintPipeline",
        "FluxFillPipeline",
        "FluxKontextPipeline",
        "FluxKontextInpaintPipeline",
        "FluxControlPipeline",
        "FluxControlNetPipeline",
        "FluxPriorReduxPipeline",
    ),
    notes="dev: guidance-distilled (guidance 3.5); schnell: step-distilled",
)


def architecture_name(guidance_distilled: bool) -> str:
    """modelspec.architecture of a FLUX.1 transformer (both backends): dev takes a guidance input."""
    return "flux-1-dev" if guidance_distilled else "flux-1-schnell"


class Adapter(DiffusersAdapter):
    family = FAMILY
    max_sequence_length = 512
    default_guidance = 3.5  # FluxPipeline's default guidance_scale

    def __init__(self, pipe, source=""):
        super().__init__(pipe, source)
        self.guidance_distilled = bool(pipe.transformer.config.guidance_embeds)
        self.step_distilled = not self.guidance_distilled  # schnell: no guidance input, 1-4 steps

    def encode_prompts(self, prompts, device):
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def predict(self, module, x, sigma, cond, guidance):
        b, c, h, w = x.shape
        text = cond["prompt_embeds"]
        # FluxPipeline passes (t = sigma * 1000 cast to the latent dtype) / 1000; the transformer
        # multiplies timestep and guidance by 1000 itself
        g = None if guidance is None else torch.full((b,), guidance, device=x.device, dtype=torch.float32)
        out = module(
            hidden_states=pack_latents(x),
            timestep=pipeline_timestep(sigma.to(x.device), x.dtype) / 1000,
            guidance=g,
            pooled_projections=cond["pooled_prompt_embeds"],
            encoder_hidden_states=text,
            txt_ids=torch.zeros(text.shape[1], 3, device=x.device, dtype=text.dtype),
            img_ids=latent_image_ids(h // 2, w // 2, device=x.device, dtype=x.dtype),
            return_dict=False,
        )[0]
        return unpack_latents(out, h, w)

    def architecture(self):
        return architecture_name(self.guidance_distilled)


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> FLUX tokens [B, (h/2)(w/2), 4C], each token a 2x2 patch (channel-major)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of pack_latents."""
    b, _, d = tokens.shape
    return tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def latent_image_ids(rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """FLUX's positional ids of the image tokens: (0, row, col) per token, row-major."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)
