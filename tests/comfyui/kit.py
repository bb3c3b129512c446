"""Write a tiny, download-free text-to-image kit in the formats ComfyUI's stock loaders detect.

Run with ComfyUI's python:  python kit.py COMFYUI_PATH MODELS_DIR [--sd3-depth 2] [--real]
  diffusion_models/tiny_sd3.safetensors   SD3 MMDiT: depth D (hidden 64 D, D heads; default 2),
                                          context 4096, pooled 2048
  diffusion_models/tiny_flux.safetensors  FLUX: hidden 128, 1 double + 1 single block, context/pooled 768
  text_encoders/tiny_clip_l.safetensors   full-size CLIP-L (its config is fixed), random, fp16
  vae/tiny_vae16.safetensors              diffusers AutoencoderKL with 16 latent channels, random, fp16
CLIPLoader type "sd3" turns one CLIP-L into SD3's conditioning (4096 zero-padded, pooled 2048) and type
"stable_diffusion" gives the 768/768 the tiny FLUX takes.
--real adds the GPU check's files (benchmarks/comfyui_gpu.py), built on CUDA when present:
  diffusion_models/sd35m.safetensors         SD3.5-Medium MMDiT at its real shape, bf16 (2.2 B)
  diffusion_models/flux1dev_fp8.safetensors  FLUX.1-dev at its real shape, float8_e4m3fn (11.9 B), but
                                             for txt_in: 768 text features (CLIP-L) instead of T5-XXL's 4096 Weights are random but finite everywhere
(comfy ops allocate with torch.empty, and MMDiT saves its pos_embed buffer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

TINY_FLUX = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "hidden_size": 128,
    "num_heads": 1,
    "mlp_ratio": 4.0,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [16, 56, 56],
    "theta": 10000,
    "qkv_bias": True,
    "guidance_embed": True,
    "context_in_dim": 768,
    "vec_in_dim": 768,
    "txt_ids_dims": [],
}
# FLUX.1-dev's shape, but for the 768 text features of CLIP-L (T5-XXL gives 4096)
FLUX_DEV = {**TINY_FLUX, "hidden_size": 3072, "num_heads": 24, "depth": 19, "depth_single_blocks": 38}


def sd3_config(depth: int, pos_embed_max_size: int = 32, self_attn_layers: list[int] = (), **extra) -> dict:
    """ComfyUI's MMDiT config: hidden 64 x depth, depth heads, context 4096, pooled 2048."""
    return {
        "in_channels": 16,
        "out_channels": 16,
        "patch_size": 2,
        "depth": depth,
        "adm_in_channels": 2048,
        "context_embedder_config": {
            "target": "torch.nn.Linear",
            "params": {"in_features": 4096, "out_features": 64 * depth},
        },
        "pos_embed_max_size": pos_embed_max_size,
        "num_patches": pos_embed_max_size**2,
        "pos_embed_scaling_factor": None,
        "input_size": None,
        "x_block_self_attn_layers": list(self_attn_layers),
        **extra,
    }


def rms_norm_scales(module: Any, sd: dict) -> dict:
    """`sd` with every RMSNorm weight named `<path>.scale`, as the released files of BFL's FLUX code (FLUX.1,
    FLUX.2, Chroma) name them; ComfyUI's process_unet_state_dict and diffusers' converters read that name."""

    def name(key: str) -> str:
        path, _, leaf = key.rpartition(".")
        owner = module.get_submodule(path) if path else module
        return f"{path}.scale" if leaf == "weight" and "RMSNorm" in type(owner).__name__ else key

    return {name(k): v for k, v in sd.items()}


def main(comfy_dir: str, models_dir: str, sd3_depth: int = 2, real: bool = False) -> None:
    sys.path.insert(0, comfy_dir)
    import torch
    from comfy.cli_args import args
    from safetensors.torch import save_file

    if not torch.cuda.is_available():
        args.cpu = True  # before comfy.model_management is imported
    import comfy.clip_model
    import comfy.model_detection
    import comfy.ops
    import comfy.supported_models

    gen = torch.Generator().manual_seed(0)

    def randomize(module: torch.nn.Module, std: float = 0.02) -> None:
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif p.ndim == 1 and ("norm" in name or "ln_" in name):
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
            for _, b in module.named_buffers():
                if b.is_floating_point():
                    b.copy_(torch.randn(b.shape, generator=gen) * std)

    def save(sd: dict, path: str, dtype: torch.dtype | None = None) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cast = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
            for k, v in sd.items()
        }
        save_file(cast, path)

    def diffusion_model(
        config_cls,
        cfg: dict,
        expect: str,
        file: str,
        dtype: torch.dtype | None = None,
        norm_scale: bool = False,
    ) -> None:
        model = config_cls(cfg).get_model({})
        randomize(model.diffusion_model)
        sd = model.diffusion_model.state_dict()
        if norm_scale:
            sd = rms_norm_scales(model.diffusion_model, sd)
        detected = comfy.model_detection.model_config_from_unet(sd, "")
        assert type(detected).__name__ == expect, f"{file} is detected as {detected}"
        save(sd, os.path.join(models_dir, "diffusion_models", file), dtype)

    def real_model(config_cls, cfg: dict, expect: str, file: str, dtype: torch.dtype) -> None:
        """Built in bf16 on the GPU when there is one (FLUX.1-dev is 24 GB in bf16), saved in `dtype`."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(device):
                model = config_cls(cfg).get_model({}, device=device)
                with torch.no_grad():
                    for name, p in model.diffusion_model.named_parameters():
                        if name.endswith("bias"):
                            p.zero_()
                        elif p.ndim == 1:
                            p.fill_(1.0)
                        else:
                            p.normal_(0, 0.02)
        finally:
            torch.set_default_dtype(previous)
        sd = {
            k: v.to(dtype) if v.is_floating_point() else v
            for k, v in model.diffusion_model.state_dict().items()
        }
        detected = comfy.model_detection.model_config_from_unet(sd, "")
        assert type(detected).__name__ == expect, f"{file} is detected as {detected}"
        save({k: v.cpu() for k, v in sd.items()}, os.path.join(models_dir, "diffusion_models", file))
        del model, sd
        if device == "cuda":
            torch.cuda.empty_cache()

    if real:
        sd35m = sd3_config(24, pos_embed_max_size=384, self_attn_layers=list(range(13)), qk_norm="rms")
        real_model(comfy.supported_models.SD3, sd35m, "SD3", "sd35m.safetensors", torch.bfloat16)
        real_model(
            comfy.supported_models.Flux, FLUX_DEV, "Flux", "flux1dev_fp8.safetensors", torch.float8_e4m3fn
        )

    diffusion_model(comfy.supported_models.SD3, sd3_config(sd3_depth), "SD3", "tiny_sd3.safetensors")
    diffusion_model(comfy.supported_models.Flux, TINY_FLUX, "Flux", "tiny_flux.safetensors", norm_scale=True)

    with open(os.path.join(comfy_dir, "comfy", "sd1_clip_config.json")) as f:
        clip_config = json.load(f)
    clip = comfy.clip_model.CLIPTextModel(
        clip_config, dtype=torch.float32, device="cpu", operations=comfy.ops.manual_cast
    )
    randomize(clip)
    save(
        clip.state_dict(), os.path.join(models_dir, "text_encoders", "tiny_clip_l.safetensors"), torch.float16
    )

    write_vae(os.path.join(models_dir, "vae", "tiny_vae16.safetensors"), 16)


def write_vae(path: str, latent_channels: int, batch_norm: bool = False) -> None:
    """A random diffusers-format AutoencoderKL (ComfyUI fixes the encoder at 128 base channels, x8) in fp16.
    batch_norm: FLUX.2's VAE layout (latents 2x2-patchified to 4x the channels and batch-normalised, x16),
    which ComfyUI recognises by its bn.running_mean/var keys and applies only in the class it builds for
    files with quant convs, as the real FLUX.2 VAE has (diffusers' AutoencoderKLFlux2 default)."""
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        use_quant_conv=batch_norm,
        use_post_quant_conv=batch_norm,
    )
    sd = {k: v.half().contiguous() for k, v in vae.state_dict().items()}
    if batch_norm:
        sd["bn.running_mean"] = (torch.randn(4 * latent_channels) * 0.3).half()
        sd["bn.running_var"] = (torch.rand(4 * latent_channels) * 1.5 + 0.5).half()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(sd, path)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Write the tiny ComfyUI kit.")
    ap.add_argument("comfy_dir")
    ap.add_argument("models_dir")
    ap.add_argument("--sd3-depth", type=int, default=2, help="SD3 joint blocks (hidden = 64 x depth)")
    ap.add_argument(
        "--real", action="store_true", help="also SD3.5-Medium and FLUX.1-dev (fp8) at real shapes"
    )
    a = ap.parse_args()
    main(a.comfy_dir, a.models_dir, a.sd3_depth, a.real)
