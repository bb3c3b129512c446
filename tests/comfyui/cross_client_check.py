"""One LoRA in both clients, run by test_comfyui_families.py with ComfyUI's python (it has diffusers):
  python cross_client_check.py COMFYUI_PATH MODELS_DIR PACKAGE_PARENT FAMILY  -> JSON on the last line

The tiny ComfyUI model of FAMILY (kit_families.py) is trained-like (a random, clearly non-zero LoRA on the
family's default ComfyUI targets) and saved in ComfyUI's format. The same weights go to the family's
diffusers transformer (diffusers' own single-file converter, or none where the names are equal) and the
same LoRA in the diffusers format, which the family's diffusers pipeline loads with load_lora_weights:
written by the product's export (lora.export_adapters, what the trainer node saves with lora_format
"diffusers") where the ComfyUI backend has the family's map, else converted here (diffusers_lora: each
fused ComfyUI layer's lora_up split exactly as the weight converter splits the weight). Both get the conditioning
ComfyUI made for one prompt; the velocities must agree to float error."""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def flux_blocks(u: dict) -> dict:
    """The diffusers config of FLUX-style blocks (FLUX.1, Chroma, FLUX.2) from ComfyUI's unet_config."""
    return {
        "patch_size": 1,
        # FLUX.1's ComfyUI in_channels counts latent channels, diffusers' the packed 2x2 patch's
        "in_channels": u["in_channels"] * (4 if u.get("image_model") == "flux" else 1),
        "num_layers": u["depth"],
        "num_single_layers": u["depth_single_blocks"],
        "attention_head_dim": u["hidden_size"] // u["num_heads"],
        "num_attention_heads": u["num_heads"],
        "joint_attention_dim": u["context_in_dim"],
    }


def mask(cond: dict, dtype: torch.dtype) -> torch.Tensor:
    """An all-ones attention mask over ComfyUI's text tokens (one prompt: nothing is padded)."""
    return torch.ones(cond["c_crossattn"].shape[:2], dtype=dtype)


# ComfyUI's HunyuanImage 2.1 names -> diffusers' (applied in order; diffusers has no single-file converter for
# this model, and its HunyuanVideo one reads the original release's names with the width 3072 written in)
HUNYUAN_RENAMES = (
    ("img_in.", "x_embedder."),
    ("time_in.in_layer", "time_guidance_embed.timestep_embedder.linear_1"),
    ("time_in.out_layer", "time_guidance_embed.timestep_embedder.linear_2"),
    ("txt_in.input_embedder", "context_embedder.proj_in"),
    ("txt_in.t_embedder.in_layer", "context_embedder.time_text_embed.timestep_embedder.linear_1"),
    ("txt_in.t_embedder.out_layer", "context_embedder.time_text_embed.timestep_embedder.linear_2"),
    ("txt_in.c_embedder.in_layer", "context_embedder.time_text_embed.text_embedder.linear_1"),
    ("txt_in.c_embedder.out_layer", "context_embedder.time_text_embed.text_embedder.linear_2"),
    ("txt_in.individual_token_refiner.blocks", "context_embedder.token_refiner.refiner_blocks"),
    ("self_attn.proj", "attn.to_out.0"),
    ("double_blocks", "transformer_blocks"),
    ("single_blocks", "single_transformer_blocks"),
    ("img_mod.lin", "norm1.linear"),
    ("txt_mod.lin", "norm1_context.linear"),
    ("modulation.lin", "norm.linear"),
    ("img_attn.proj", "attn.to_out.0"),
    ("txt_attn.proj", "attn.to_add_out"),
    ("img_attn.norm.query_norm", "attn.norm_q"),
    ("img_attn.norm.key_norm", "attn.norm_k"),
    ("txt_attn.norm.query_norm", "attn.norm_added_q"),
    ("txt_attn.norm.key_norm", "attn.norm_added_k"),
    ("norm.query_norm", "attn.norm_q"),
    ("norm.key_norm", "attn.norm_k"),
    ("img_mlp.0", "ff.net.0.proj"),
    ("img_mlp.2", "ff.net.2"),
    ("txt_mlp.0", "ff_context.net.0.proj"),
    ("txt_mlp.2", "ff_context.net.2"),
    ("mlp.0", "ff.net.0.proj"),
    ("mlp.2", "ff.net.2"),
    ("linear2", "proj_out"),
    ("final_layer.linear", "proj_out"),
    ("adaLN_modulation.1", "norm_out.linear"),
    ("byt5_in.layernorm", "context_embedder_2.norm"),
    ("byt5_in.fc1", "context_embedder_2.linear_1"),
    ("byt5_in.fc2", "context_embedder_2.linear_2"),
    ("byt5_in.fc3", "context_embedder_2.linear_3"),
)
# fused ComfyUI layers -> diffusers' parts, split along the output rows (linear1: q, k, v, then the MLP input)
HUNYUAN_SPLITS = {
    "self_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
}


def hunyuanimage_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    hidden = sd["final_layer.linear.weight"].shape[1]
    out = {}
    for key, value in sd.items():
        layer, _, kind = key.rpartition(".")
        fused = next((f for f in HUNYUAN_SPLITS if layer.endswith("." + f)), None)
        if fused is not None:
            parts = HUNYUAN_SPLITS[fused]
            sizes = [hidden] * 3 + [value.shape[0] - 3 * hidden] * (len(parts) - 3)
            prefix = layer[: -len(fused)]
            for part, tensor in zip(parts, value.split(sizes), strict=True):
                out[rename(prefix + part) + "." + kind] = tensor
            continue
        if layer == "final_layer.adaLN_modulation.1":  # ComfyUI's (shift, scale) is diffusers' (scale, shift)
            shift, scale = value.chunk(2)
            value = torch.cat([scale, shift])
            layer = "norm_out.linear"
        out[rename(layer) + "." + kind] = value
    return out


def rename(layer: str) -> str:
    for old, new in HUNYUAN_RENAMES:
        layer = layer.replace(old, new)
    return layer


# family -> (diffusers pipeline, transformer, config from the ComfyUI unet_config, single-file converter
# name or None, the adapter's conditioning from ComfyUI's: the model inputs its extra_conds made)
DIFFUSERS: dict[str, tuple[str, str, Callable[[dict], dict], Any, Callable[[dict], dict]]] = {
    "sd3": (
        "StableDiffusion3Pipeline",
        "SD3Transformer2DModel",
        lambda u: {
            "sample_size": u["pos_embed_max_size"],
            "patch_size": u["patch_size"],
            "in_channels": u["in_channels"],
            "num_layers": u["depth"],
            "attention_head_dim": 64,  # MMDiT: hidden 64 x depth, depth heads
            "num_attention_heads": u["depth"],
            "joint_attention_dim": u["context_embedder_config"]["params"]["in_features"],
            "caption_projection_dim": 64 * u["depth"],
            "pooled_projection_dim": u["adm_in_channels"],
            "out_channels": u["out_channels"],
            "pos_embed_max_size": u["pos_embed_max_size"],
        },
        "convert_sd3_transformer_checkpoint_to_diffusers",
        lambda c: {"prompt_embeds": c["c_crossattn"], "pooled_prompt_embeds": c["y"]},
    ),
    "flux": (
        "FluxPipeline",
        "FluxTransformer2DModel",
        lambda u: {
            **flux_blocks(u),
            "pooled_projection_dim": u["vec_in_dim"],
            "guidance_embeds": u["guidance_embed"],
            "axes_dims_rope": tuple(u["axes_dim"]),
        },
        "convert_flux_transformer_checkpoint_to_diffusers",
        lambda c: {"prompt_embeds": c["c_crossattn"], "pooled_prompt_embeds": c["y"]},
    ),
    "qwenimage": (
        "QwenImagePipeline",
        "QwenImageTransformer2DModel",
        lambda u: {
            "patch_size": 2,
            "in_channels": u["in_channels"],
            "out_channels": u["out_channels"],
            "num_layers": u["num_layers"],
            "attention_head_dim": u["attention_head_dim"],
            "num_attention_heads": u["num_attention_heads"],
            "joint_attention_dim": u["joint_attention_dim"],
            "axes_dims_rope": tuple(u["axes_dims_rope"]),
        },
        None,
        lambda c: {"prompt_embeds": c["c_crossattn"], "prompt_embeds_mask": mask(c, torch.long)},
    ),
    "lumina2": (
        "Lumina2Pipeline",
        "Lumina2Transformer2DModel",
        lambda u: {
            "sample_size": 8,
            "patch_size": u["patch_size"],
            "in_channels": u["in_channels"],
            "hidden_size": u["dim"],
            "num_layers": u["n_layers"],
            "num_refiner_layers": 2,
            "num_attention_heads": u["n_heads"],
            "num_kv_heads": u["n_kv_heads"],
            # diffusers rounds 2/3 of 4 x dim up to multiple_of; ComfyUI's feed-forward is dim x multiplier wide
            "multiple_of": int(u["dim"] * u["ffn_dim_multiplier"]),
            "ffn_dim_multiplier": None,
            "axes_dim_rope": tuple(u["axes_dims"]),
            "axes_lens": tuple(u["axes_lens"]),
            "cap_feat_dim": u["cap_feat_dim"],
        },
        "convert_lumina2_to_diffusers",
        lambda c: {"prompt_embeds": c["c_crossattn"], "prompt_attention_mask": mask(c, torch.bool)},
    ),
    "zimage": (
        "ZImagePipeline",
        "ZImageTransformer2DModel",
        lambda u: {
            "all_patch_size": (u["patch_size"],),
            "all_f_patch_size": (1,),
            "in_channels": u["in_channels"],
            "dim": u["dim"],
            "n_layers": u["n_layers"],
            "n_refiner_layers": 2,
            "n_heads": u["n_heads"],
            "n_kv_heads": u["n_kv_heads"],
            "qk_norm": u["qk_norm"],
            "cap_feat_dim": u["cap_feat_dim"],
            "rope_theta": u["rope_theta"],
            "axes_dims": list(u["axes_dims"]),
            "axes_lens": list(u["axes_lens"]),
        },
        "convert_z_image_transformer_checkpoint_to_diffusers",
        lambda c: {"prompt_embeds": c["c_crossattn"], "prompt_mask": mask(c, torch.bool)},
    ),
    "chroma": (
        "ChromaPipeline",
        "ChromaTransformer2DModel",
        lambda u: {
            **flux_blocks(u),
            "axes_dims_rope": tuple(u["axes_dim"]),
            "approximator_num_channels": u["in_dim"],
            "approximator_hidden_dim": u["hidden_dim"],
            "approximator_layers": u["n_layers"],
        },
        "convert_chroma_transformer_checkpoint_to_diffusers",
        # float, as ChromaPipeline makes it (it extends the mask with bool ones: a long mask fails there)
        lambda c: {"prompt_embeds": c["c_crossattn"], "prompt_attention_mask": mask(c, torch.float32)},
    ),
    "auraflow": (
        "AuraFlowPipeline",
        "AuraFlowTransformer2DModel",
        lambda u: {
            "sample_size": 16,
            "patch_size": u["patch_size"],
            "in_channels": u["in_channels"],
            "num_mmdit_layers": u["n_double_layers"],
            "num_single_dit_layers": u["n_layers"] - u["n_double_layers"],
            "attention_head_dim": u["dim"] // u["n_heads"],
            "num_attention_heads": u["n_heads"],
            "joint_attention_dim": u["cond_seq_dim"],
            "caption_projection_dim": u["dim"],
            "out_channels": u["out_channels"],
            "pos_embed_max_size": u["max_seq"],
        },
        "convert_auraflow_transformer_checkpoint_to_diffusers",
        lambda c: {"prompt_embeds": c["c_crossattn"]},
    ),
    "flux2": (
        "Flux2KleinPipeline",
        "Flux2Transformer2DModel",
        lambda u: {
            **flux_blocks(u),
            "mlp_ratio": u["mlp_ratio"],
            "axes_dims_rope": tuple(u["axes_dim"]),
            "rope_theta": u["theta"],
            "guidance_embeds": u["guidance_embed"],
        },
        "convert_flux2_transformer_checkpoint_to_diffusers",
        lambda c: {"prompt_embeds": c["c_crossattn"]},
    ),
    "hunyuanimage": (
        "HunyuanImagePipeline",
        "HunyuanImageTransformer2DModel",
        lambda u: {
            "in_channels": u["in_channels"],
            "out_channels": u["out_channels"],
            "num_attention_heads": u["num_heads"],
            "attention_head_dim": u["hidden_size"] // u["num_heads"],
            "num_layers": u["depth"],
            "num_single_layers": u["depth_single_blocks"],
            "patch_size": tuple(u["patch_size"]),
            "guidance_embeds": u["guidance_embed"],
            "text_embed_dim": u["context_in_dim"],
            "text_embed_2_dim": 1472 if u["byt5"] else None,  # byT5-small's width: the glyph mapper's input
            "rope_axes_dim": tuple(u["axes_dim"]),
        },
        hunyuanimage_to_diffusers,
        # no quoted text in the prompt: no byT5 glyph tokens in either client
        lambda c: {
            "prompt_embeds": c["c_crossattn"],
            "prompt_mask": mask(c, torch.bool),
            "glyph_embeds": None,
            "glyph_mask": None,
        },
    ),
    "hidream": (
        "HiDreamImagePipeline",
        "HiDreamImageTransformer2DModel",
        lambda u: {k: v for k, v in u.items() if k != "image_model"},  # the same config keys
        None,  # ComfyUI keeps diffusers' names
        # T5's tokens, Llama's layers (batch-first, as the adapter keeps them) and the two CLIPs' pooled vector
        lambda c: {
            "prompt_embeds_t5": c["c_crossattn"],
            "prompt_embeds_llama3": c["encoder_hidden_states_llama3"],
            "pooled": c["y"],
        },
    ),
}


@contextmanager
def tiny_splits(sizes: dict[tuple[int, ...], tuple[int, ...]]) -> Iterator[None]:
    """diffusers' single-file converters split fused weights with the real models' widths written in
    (Lumina 2: q 2304, k/v 768; Chroma: 3 x 3072 + 12288). Within the block a split whose sizes do not
    fit the tensor takes the tiny model's sizes: `sizes` where given, else the real ones scaled
    proportionally (exact where the tiny model keeps the real ratios)."""
    split = torch.split

    def fitted(tensor: torch.Tensor, split_size: Any, dim: int = 0) -> Any:
        if isinstance(split_size, (list, tuple)) and sum(split_size) != tensor.shape[dim]:
            real = tuple(split_size)
            split_size = sizes.get(real) or tuple(n * tensor.shape[dim] // sum(real) for n in real)
        return split(tensor, split_size, dim)

    torch.split = fitted
    try:
        yield
    finally:
        torch.split = split


def convert(name: str | Callable | None, sd: dict[str, torch.Tensor], sizes: dict) -> dict[str, torch.Tensor]:
    if name is None:
        return dict(sd)
    if callable(name):
        return name(sd)
    import diffusers.loaders.single_file_utils as single_file

    with tiny_splits(sizes):
        return getattr(single_file, name)({k: v.clone() for k, v in sd.items()})


def split_sizes(family: str, u: dict) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Split sizes of the real model -> the tiny one's, where they are not proportional."""
    if family == "lumina2":  # 24 query heads, 8 key/value heads of 96
        kv = u["n_kv_heads"] * u["dim"] // u["n_heads"]
        return {(2304, 768, 768): (u["dim"], kv, kv)}
    return {}


def diffusers_lora(
    converter: str | None, sd: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], sizes: dict
) -> dict[str, torch.Tensor]:
    """ComfyUI-format LoRA (diffusion_model.<path>.lora_down/up) -> transformer.<diffusers path>.lora_A/B:
    each layer's up goes through the weight converter in place of its weight; the diffusers weights that
    change are that layer's parts (row slices of a fused qkv), each taking the shared down as lora_A."""
    base = convert(converter, sd, sizes)
    out = {}
    for key in [k for k in lora if k.endswith(".lora_down.weight")]:
        path = key[len("diffusion_model.") : -len(".lora_down.weight")]
        down, up = lora[key], lora[f"diffusion_model.{path}.lora_up.weight"]
        parts = {
            k: v
            for k, v in convert(converter, {**sd, f"{path}.weight": up}, sizes).items()
            if v.shape != base[k].shape
        }
        assert parts, f"{path}: no diffusers weight takes its LoRA"
        for k, b in parts.items():
            out[f"transformer.{k[: -len('.weight')]}.lora_A.weight"] = down.clone()
            out[f"transformer.{k[: -len('.weight')]}.lora_B.weight"] = b.contiguous()
    return out


# unet_config changes where the kit's width cannot serve both clients. Z-Image: diffusers' feed-forward is
# int(dim x 8 / 3) wide and its timestep MLP 1024, ComfyUI rounds the first up to a multiple of 256 and takes
# min(dim, 1024) for the second; both agree from dim 1152 on (the real 3840 too), so the check builds its own
# Z-Image there (1 layer and the 2 + 2 refiners, ~85 M parameters) where the kit's trains at 256
WIDER = {"zimage": {"dim": 1152, "n_heads": 9, "n_kv_heads": 9, "n_layers": 1}}


def wider_unet(family: str, spec: Any, folder: str) -> tuple[str, dict]:
    """The family's tiny model with WIDER's changes, written as the kit writes it; (file, unet_config)."""
    import comfy.supported_models
    from kit_families import random_weights, save_with_metadata

    config = {**spec.unet, **WIDER[family]}
    model = getattr(comfy.supported_models, spec.comfy_class)(dict(config)).get_model({})
    sd = random_weights(model.diffusion_model, spec.std, torch.Generator().manual_seed(0))
    path = f"{folder}/tiny_{family}_wide.safetensors"
    save_with_metadata(path, sd, {"normguard.unet_config": config})
    return path, config


def main(comfy_dir: str, models: str, package_parent: str, family: str) -> dict[str, Any]:
    """The check's figures (see the module docstring) as a dict."""
    sys.path[:0] = [comfy_dir, package_parent, __file__.rsplit("/", 1)[0]]
    from comfy.cli_args import args

    args.cpu = True
    import comfy.sd
    import comfy.utils
    import diffusers
    from family_specs import SPECS
    from testkit_nodes import load_clip, load_unet

    from normguard.trainer.backends.comfy import ComfyBackend
    from normguard.trainer.backends.comfy.families import diffusers_converter
    from normguard.trainer.backends.comfy.lora import export_adapters
    from normguard.trainer.families import ADAPTERS

    stock_clip = {
        "sd3": comfy.sd.CLIPType.SD3,
        "flux": comfy.sd.CLIPType.STABLE_DIFFUSION,
    }  # clip types (graphs.py)

    pipeline, transformer_class, config, converter, text_cond = DIFFUSERS[family]
    scratch = tempfile.mkdtemp(prefix="normguard-cross-")
    with torch.inference_mode():
        if family in stock_clip:  # kit.py's SD3 / FLUX.1, through the core loaders
            unet_file = f"{models}/diffusion_models/tiny_{family}.safetensors"
            model = comfy.sd.load_diffusion_model(unet_file)
            clip = comfy.sd.load_clip(
                [f"{models}/text_encoders/tiny_clip_l.safetensors"], clip_type=stock_clip[family]
            )
            vae_file = "tiny_vae16.safetensors"
            unet_config = model.model.model_config.unet_config  # as detected from the file
        else:
            spec = SPECS[family]
            unet_file, unet_config = f"{models}/diffusion_models/tiny_{family}.safetensors", spec.unet
            if family in WIDER:
                unet_file, unet_config = wider_unet(family, spec, scratch)
            model = load_unet(family, unet_file)
            clip = load_clip(family, f"{models}/text_encoders/tiny_{family}_te.safetensors")
            vae_file = spec.vae
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(f"{models}/vae/{vae_file}"))
    prompt = ["a red cube"]
    with torch.inference_mode(False), torch.no_grad():
        trainer = ComfyBackend(model, clip, vae, height=64, width=64, prompts=prompt)
        torch.manual_seed(0)
        trainer.add_lora(4, alpha=8, init="gaussian_nonzero")
        for name, p in trainer.named_trainable().items():
            if name.endswith("lora_up"):
                p.mul_(30)  # a clear effect on the std-0.02 SD3/FLUX.1 kit too
        lora = trainer.lora_state_dict()
        exported = diffusers_converter(trainer.model) is not None
        if exported:  # the node's save with lora_format "diffusers"
            lora_diffusers = export_adapters(trainer._adapters, "diffusers", trainer.model)
        cond = trainer.encode_prompts(prompt * 2)
        c, h, w = trainer.latent_shape(64, 64)
        x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(2))
        sigma = torch.tensor([0.8, 0.3])
        trained = trainer.velocity(x, sigma, cond)
        with trainer.reference():
            base = trainer.velocity(x, sigma, cond)
        trainer.release()

        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger().addHandler(handler)
        stock, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)  # LoraLoaderModelOnly's call
        logging.getLogger().removeHandler(handler)
        comfy_v = ComfyBackend(stock, clip, vae, height=64, width=64, prompts=prompt).velocity(x, sigma, cond)

        sd = {k: v.float() for k, v in comfy.utils.load_torch_file(unet_file).items()}
        # in eval mode, as from_pretrained leaves it (HiDream's transformer returns patches while training)
        module = getattr(diffusers, transformer_class)(**config(unet_config)).eval()
        sizes = split_sizes(family, unet_config)
        missing, unexpected = module.load_state_dict(convert(converter, sd, sizes), strict=False)
        cls = getattr(diffusers, pipeline)  # only the transformer matters here: no text encoders, no VAE
        components = {p: None for p in inspect.signature(cls.__init__).parameters if p != "self"}
        pipe = cls(
            **{**components, "transformer": module, "scheduler": diffusers.FlowMatchEulerDiscreteScheduler()}
        )
        adapter = ADAPTERS[pipeline].__new__(ADAPTERS[pipeline])
        adapter.pipe, adapter.source = pipe, ""
        comfy_cond = {k: v.float() for k, v in cond.items() if v.is_floating_point()}
        # FLUX.1-dev: the guidance ComfyUI's extra_conds gave (its default, 3.5)
        guidance = float(cond["guidance"][0]) if "guidance" in cond else None
        diffusers_base = adapter.predict(pipe.transformer, x, sigma, text_cond(comfy_cond), guidance)
        if not exported:
            lora_diffusers = diffusers_lora(converter, sd, lora, sizes)
        if hasattr(pipe, "load_lora_weights"):
            pipe.load_lora_weights(lora_diffusers)
        else:  # HunyuanImage's pipeline has no LoRA loader: its transformer's own
            pipe.transformer.load_lora_adapter(lora_diffusers, prefix="transformer")
        diffusers_v = adapter.predict(pipe.transformer, x, sigma, text_cond(comfy_cond), guidance)
        # peft's lora_A per adapted layer: a layer of the file that diffusers dropped is missing here
        layers_loaded = {
            n.split(".lora_A.")[0] for n, _ in pipe.transformer.named_parameters() if ".lora_A." in n
        }
    shutil.rmtree(scratch)
    return {
        "not_loaded": [r for r in records if "lora key not loaded" in r],
        "diffusers_lora_from": "export_adapters" if exported else "diffusers_lora",
        "diffusers_layers_in_file": len([k for k in lora_diffusers if k.endswith(".lora_A.weight")]),
        "diffusers_layers_loaded": len(layers_loaded),
        "weights_missing": list(missing),
        "weights_unexpected": list(unexpected),
        "lora_effect": float((trained - base).abs().max()),
        "stock_vs_trained": float((comfy_v - trained).abs().max()),
        "diffusers_vs_comfyui": float((diffusers_v - comfy_v).abs().max()),
        "base_diffusers_vs_comfyui": float((diffusers_base - base).abs().max()),  # the model alone
        "scale": float(comfy_v.abs().max()),
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
