"""Qwen-Image (MMDiT, Qwen2.5-VL text encoder, the Wan-style video VAE used one frame at a time)."""

from __future__ import annotations

import torch

from .base import ATTENTION_TARGETS, DiffusersAdapter, Family, pipeline_timestep, trim_to_mask
from .flux import pack_latents, unpack_latents

FAMILY = Family(
    name="qwenimage",
    title="Qwen-Image",
    pipelines=("QwenImagePipeline",),
    comfy_models=("QwenImage",),
    lora_targets=ATTENTION_TARGETS,
    comfy_targets=tuple(f"attn.{t}" for t in ATTENTION_TARGETS),  # ComfyUI keeps diffusers' names
    targets_from="diffusers train_dreambooth_lora_qwen_image.py",
    refused_pipelines=(
        "QwenImageEditPipeline",
        "QwenImageEditPlusPipeline",
        "QwenImageEditInpaintPipeline",
        "QwenImageImg2ImgPipeline",
        "QwenImageInpaintPipeline",
        "QwenImageControlNetPipeline",
        "QwenImageControlNetInpaintPipeline",
        "QwenImageLayeredPipeline",
    ),
    notes="variable-length text with a mask; latents normalised by the VAE's per-channel mean/std",
)


class Adapter(DiffusersAdapter):
    family = FAMILY
    max_sequence_length = 1024

    def __init__(self, pipe, source=""):
        super().__init__(pipe, source)
        self.guidance_distilled = bool(pipe.transformer.config.get("guidance_embeds", False))

    @property
    def latent_channels(self):
        return self.pipe.vae.config.z_dim

    def encode_prompts(self, prompts, device):
        embeds, mask = self.pipe.encode_prompt(
            prompt=list(prompts), device=device, max_sequence_length=self.max_sequence_length
        )
        if mask is None:  # the pipeline drops an all-true mask
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return {"prompt_embeds": embeds, "prompt_embeds_mask": mask}

    def predict(self, module, x, sigma, cond, guidance):
        b, c, h, w = x.shape
        text, mask = trim_to_mask(cond, "prompt_embeds", "prompt_embeds_mask")
        g = None if guidance is None else torch.full((b,), guidance, device=x.device, dtype=torch.float32)
        out = module(
            hidden_states=pack_latents(x),
            timestep=pipeline_timestep(sigma.to(x.device), x.dtype) / 1000,
            guidance=g,
            encoder_hidden_states_mask=None if mask.all() else mask,
            encoder_hidden_states=text,
            img_shapes=[[(1, h // 2, w // 2)]] * b,
            return_dict=False,
        )[0]
        return unpack_latents(out, h, w)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.pipe.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(like.device, like.dtype)
        return mean, torch.tensor(config.latents_std).view(shape).to(like.device, like.dtype)

    def decode(self, latents):
        vae = self.pipe.vae
        z = latents.to(vae.device, vae.dtype).unsqueeze(2)  # one video frame
        mean, std = self._stats(z)
        return vae.decode(z * std + mean, return_dict=False)[0][:, :, 0]

    def encode_images(self, images):
        vae = self.pipe.vae
        z = vae.encode(images.to(vae.device, vae.dtype).unsqueeze(2)).latent_dist.mean
        mean, std = self._stats(z)
        return ((z - mean) / std)[:, :, 0]

    def architecture(self):
        return "qwen-image"
