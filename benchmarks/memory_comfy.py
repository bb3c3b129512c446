"""Peak accelerator memory of NormGuardTrainLoRA at real sizes, through ComfyUI, estimated on a CPU.

ComfyUI's own classes build each model on the meta device (comfy.supported_models.X(unet_config)
.get_model(), the unet_config as model_detection writes it for the released checkpoint, weights in
the dtype UNETLoader gives them: bf16, or float8_e4m3fn computed in bf16 by ComfyUI's casting ops)
inside a real ModelPatcher. Fake tensors (memory_count.py) stand for the weights. Our ComfyBackend
trains it through its own code: prompts through `extra_conds`, the bypass LoRA patches injected by
ComfyUI's load_models_gpu, block checkpointing, the reference pass with the adapters switched off,
one NFT iteration phase by phase as in memory_estimate.py. Only the text encoder's output is
synthetic (a stand-in CLIP returns conditioning of the real shapes and token counts).

What ComfyUI holds besides the diffusion model is counted from the same classes on the meta device:
the text encoder (used once, to encode the prompts up front; ComfyUI evicts it when memory is
needed), the VAE (ComfyUI's decoder, run on fake tensors for the decode phase) and the reward model
(a plain torch module on the GPU that ComfyUI does not manage: it stays).

    COMFYUI_PATH=/path/to/ComfyUI  /path/to/comfy-venv/bin/python benchmarks/memory_comfy.py
    ... memory_comfy.py --tiny     # the same code path at tiny widths, in seconds (CI runs it)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from memory_count import GIB, LiveBytes, make_fake, module_bytes, nft_iteration
from torch._subclasses.fake_tensor import FakeTensorMode

BF16, FP8 = torch.bfloat16, torch.float8_e4m3fn
VAE_KL16 = {  # comfy.sd.VAE's config for the 16-channel KL VAE of SD3 / FLUX.1 / Z-Image
    "double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}  # fmt: skip
WAN21 = {  # comfy.sd.VAE's config for the Wan 2.1 VAE (Qwen-Image)
    "dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
    "temperal_downsample": [False, True, True], "image_channels": 3, "conv_out_channels": 3, "dropout": 0.0,
}  # fmt: skip


@dataclass
class Family:
    """One released model as ComfyUI loads it: its class, unet_config, weights and text shapes."""

    name: str
    cls: str  # comfy.supported_models class
    unet: dict
    tiny: dict  # unet_config overrides at tiny width
    weights: torch.dtype
    tokens: int  # text tokens ComfyUI's tokenizer gives a short prompt
    context: int  # text feature width
    pooled: int | None  # pooled vector width (CLIP), or None
    text_encoder: str  # "module.function_or_class" of the text-encoder class, with its dtype
    te_dtype: torch.dtype
    vae: str  # "kl16" or "wan21"
    guidance: float | None = None
    extra: dict = field(default_factory=dict)
    tiny_context: int | None = None  # text feature width of the tiny model (None: the real width)


SD35M_UNET = {
    "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 24, "input_size": None,
    "adm_in_channels": 2048, "pos_embed_scaling_factor": None, "qk_norm": "rms",
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 1536}},
    "num_patches": 147456, "pos_embed_max_size": 384, "x_block_self_attn_layers": list(range(13)),
}  # fmt: skip
FLUX_UNET = {
    "image_model": "flux", "axes_dim": [16, 56, 56], "num_heads": 24, "mlp_ratio": 4.0, "theta": 10000,
    "out_channels": 16, "qkv_bias": True, "txt_ids_dims": [], "in_channels": 16, "hidden_size": 3072,
    "context_in_dim": 4096, "patch_size": 2, "vec_in_dim": 768, "depth": 19, "depth_single_blocks": 38,
    "guidance_embed": True, "yak_mlp": False,
}  # fmt: skip
ZIMAGE_UNET = {
    "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "cap_feat_dim": 2560,
    "n_layers": 30, "qk_norm": True, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
    "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32,
}  # fmt: skip
QWEN_UNET = {"image_model": "qwen_image", "in_channels": 64, "num_layers": 60}

FAMILIES = {
    "sd35m": Family(
        "SD3.5-Medium", "SD3", SD35M_UNET,
        {"depth": 2, "x_block_self_attn_layers": [0], "pos_embed_max_size": 64, "num_patches": 4096,
         "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}}},
        BF16, 154, 4096, 2048, "sd3_clip.sd3_clip", torch.float16, "kl16",
    ),
    "flux": Family(
        "FLUX.1-dev", "Flux", FLUX_UNET, {"depth": 1, "depth_single_blocks": 1, "hidden_size": 128, "num_heads": 1},
        FP8, 256, 4096, 768, "flux.flux_clip", torch.float16, "kl16", guidance=3.5,
    ),
    "zimage": Family(
        "Z-Image", "ZImage", ZIMAGE_UNET, {"dim": 256, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2},
        BF16, 128, 2560, None, "z_image.te", BF16, "kl16", tiny_context=256,
    ),
    # ComfyUI's Qwen-Image template: qwen_image_fp8_e4m3fn + qwen_2.5_vl_7b_fp8_scaled (fp8 weights) + Wan 2.1 VAE
    "qwenimage": Family(
        "Qwen-Image", "QwenImage", QWEN_UNET,
        {"num_layers": 2, "attention_head_dim": 32, "num_attention_heads": 4, "joint_attention_dim": 128,
         "axes_dims_rope": [8, 12, 12]},
        FP8, 128, 3584, None, "qwen_image.te", FP8, "wan21", tiny_context=128,
    ),
}  # fmt: skip


def comfy_setup() -> None:
    """Import ComfyUI from COMFYUI_PATH, on the CPU (the fake tensors stand for the GPU)."""
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    from comfy.cli_args import args

    args.cpu = True
    args.use_pytorch_cross_attention = True  # ComfyUI's choice on a GPU: SDPA, no attention matrix kept


class SyntheticClip:
    """ComfyUI's CLIP interface for ComfyBackend: conditioning of the family's real shapes."""

    def __init__(self, fam: Family, mode: FakeTensorMode, tiny: dict | None):
        self.fam, self.mode = fam, mode
        self.context = (tiny or {}).get("context", fam.context)

    def tokenize(self, prompt: str) -> str:
        return prompt

    def encode_from_tokens(self, tokens: str, return_pooled: bool, return_dict: bool) -> dict:
        with self.mode:
            out = {"cond": torch.zeros(1, self.fam.tokens, self.context)}
            if self.fam.pooled:
                out["pooled_output"] = torch.zeros(1, self.fam.pooled)
        return out


class FakeVAE:
    """ComfyUI's VAE decoder (its own classes) on fake tensors, as comfy.sd.VAE.decode runs it: in
    bf16, under no_grad, output to the CPU (ComfyUI's intermediate device: not counted)."""

    def __init__(self, kind: str, mode: FakeTensorMode, tiny: bool):
        if kind == "wan21":
            from comfy.ldm.wan.vae import WanVAE

            cfg = dict(WAN21, dim=8) if tiny else WAN21
            with torch.device("meta"):
                self.model = WanVAE(**cfg).to(BF16)
        else:
            from comfy.ldm.models.autoencoder import AutoencoderKL

            cfg = dict(VAE_KL16, ch=32, ch_mult=[1, 1, 1, 1]) if tiny else VAE_KL16
            with torch.device("meta"):
                self.model = AutoencoderKL(ddconfig=cfg, embed_dim=16).to(BF16)
        self.kind, self.mode = kind, mode
        make_fake([self.model], mode)

    def spacial_compression_decode(self) -> int:
        return 8

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = []
        for z in latents.split(1):  # ComfyUI batches by its own estimate; one at a time is its floor
            z = z.to(BF16)
            if self.kind == "wan21":
                z = z.unsqueeze(2) if z.ndim == 4 else z
            out = self.model.decode(z)
            images.append(out.reshape(out.shape[0], 3, *out.shape[-2:]).movedim(1, -1).to("meta"))
        return torch.cat(images)


def text_encoder_bytes(fam: Family) -> int:
    """Bytes of the family's text encoder as ComfyUI builds it (its own class, on the meta device)."""
    import importlib

    module, name = fam.text_encoder.rsplit(".", 1)
    factory = getattr(importlib.import_module(f"comfy.text_encoders.{module}"), name)
    with torch.device("meta"):
        te = factory()(device="meta", dtype=fam.te_dtype)
    return module_bytes(te)


def reward_bytes() -> int:
    """PickScore / HPSv2.1 size: CLIP ViT-H-14 (text and image towers) in fp16, on the meta device."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                     "num_hidden_layers": 24},
        vision_config={"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 16,
                       "num_hidden_layers": 32, "patch_size": 14},
        projection_dim=1024,
    )  # fmt: skip
    with torch.device("meta"):
        return module_bytes(CLIPModel(config).to(torch.float16))


def fake_patcher(fam: Family, mode: FakeTensorMode, tiny: bool) -> Any:
    """The diffusion model as UNETLoader builds it, with fake weights, in a plain ModelPatcher."""
    import comfy.model_patcher
    import comfy.supported_models

    unet = dict(fam.unet, **(fam.tiny if tiny else {}))
    if tiny and fam.cls == "Flux":
        unet["axes_dim"] = [16, 56, 56]
        unet["num_heads"] = unet["hidden_size"] // 128
    if tiny and "cap_feat_dim" in unet:
        unet["cap_feat_dim"] = 256
        unet["axes_dims"] = [32, 48, 48]
    config = getattr(comfy.supported_models, fam.cls)(unet)
    config.set_inference_dtype(fam.weights, BF16 if fam.weights == FP8 else None)
    model = config.get_model({}, "", device=torch.device("meta"))
    make_fake([model], mode)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def fake_backend(*args: Any, **kwargs: Any) -> Any:
    """ComfyBackend with two steps that fake tensors cannot take, replaced by what they amount to here:
    - loading only injects the LoRA patches: ComfyUI's load_models_gpu would move the weights to the
      GPU with module.to(), which cannot swap fake tensors into parameters (they already stand for
      GPU memory);
    - one apply_model call for the whole batch: the row grouping reads group ids from the data
      (unique()), and every prompt here has the same token count, so there is one group."""
    from normguard.trainer.backends.comfy.backend import ComfyBackend
    from normguard.trainer.backends.comfy.conditioning import GROUP_KEY
    from normguard.trainer.backends.comfy.patching import training_mode

    class Fake(ComfyBackend):
        def _ensure_loaded(self, rows: int) -> None:
            self.patcher.inject_model()

        def _apply(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict, options: dict) -> torch.Tensor:
            (constants, _lengths), *more = self.conditioning.groups
            assert not more, "prompts of one token count make one group"
            inputs = {k: v for k, v in cond.items() if k != GROUP_KEY}
            with training_mode():
                out = self.model.apply_model(
                    self._to_model(x), sigma, transformer_options=options, **inputs, **constants
                )
            return out.squeeze(2) if self._frames else out  # Qwen-Image's latents have a frame axis

    return Fake(*args, **kwargs)


def estimate(key: str, *, group: int, micro: int, size: int, rank: int, tiny: bool) -> dict:
    """One NFT iteration of NormGuardTrainLoRA (checkpointing on) on the family at `size` px."""
    fam = FAMILIES[key]
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    patcher = fake_patcher(fam, mode, tiny)
    clip = SyntheticClip(fam, mode, {"context": fam.tiny_context} if tiny and fam.tiny_context else None)
    vae = FakeVAE(fam.vae, mode, tiny)
    with mode:
        backend = fake_backend(
            patcher, clip, vae, height=size, width=size, guidance=fam.guidance, gradient_checkpointing=True
        )
        backend.add_lora(rank=rank, alpha=rank)
        counter = LiveBytes()
        r = nft_iteration(backend, [patcher.model, vae.model], group, micro, 1, size, counter)
    backend.release()
    r["model"] = module_bytes(patcher.model) / GIB
    r["vae"] = module_bytes(vae.model) / GIB
    return r


CARDS = (24, 16, 12)
HEADROOM = 1.0  # GiB a card loses to the CUDA context and ComfyUI's reserve (EXTRA_RESERVED_VRAM 0.4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny widths: checks the code path in seconds")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--micro-batch-size", type=int, default=1)
    args = ap.parse_args()
    comfy_setup()
    t0 = time.perf_counter()
    size, rank = (64, 4) if args.tiny else (args.size, args.rank)
    reward = reward_bytes() / GIB
    print(
        f"NormGuardTrainLoRA, NFT + NormGuard, {size} px, LoRA r{rank}, group {args.group_size}, micro-batch "
        f"{args.micro_batch_size}, decode 1, checkpointing on (GiB; reward: CLIP ViT-H fp16 {reward:.1f})"
    )
    print(
        f"{'model':13} {'weights':>8} {'model':>6} {'VAE':>5} {'text enc':>8} {'static':>7} {'rollout':>8} "
        f"{'decode':>7} {'train':>6} {'all kept':>8} {'minimum':>8} fits (+{HEADROOM:.0f} GiB)"
    )
    for key in args.families:
        fam = FAMILIES[key]
        r = estimate(
            key, group=args.group_size, micro=args.micro_batch_size, size=size, rank=rank, tiny=args.tiny
        )
        te = text_encoder_bytes(fam) / GIB
        peak = max(r["rollout"], r["decode"], r["train"])
        minimum = peak + reward  # the text encoder is evicted after encoding; the reward model stays
        fits = [str(c) for c in CARDS if minimum + HEADROOM <= c]
        d = 3 if args.tiny else 1  # GiB decimals: tiny models need more to show
        cells = [
            r["model"],
            r["vae"],
            te,
            r["static"],
            r["rollout"],
            r["decode"],
            r["train"],
            peak + te + reward,
        ]
        widths = [6, 5, 8, 7, 8, 7, 6, 8]
        print(
            f"{fam.name:13} {'fp8' if fam.weights == FP8 else 'bf16':>8} "
            + " ".join(f"{v:{w}.{d}f}" for v, w in zip(cells, widths, strict=True))
            + f" {minimum:8.{d}f} {', '.join(fits) or 'none'}"
        )
    print(f"({time.perf_counter() - t0:.0f} s; fake tensors on torch {torch.__version__}, nothing computed)")


if __name__ == "__main__":
    main()
