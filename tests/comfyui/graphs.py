"""API-format graph builders for the tiny kit (see kit.py): loaders, training, sampling, probing."""

from __future__ import annotations

from typing import Any

from .family_specs import SPECS

Graph = dict[str, dict[str, Any]]

KIT = {
    "sd3": {"unet": "tiny_sd3.safetensors", "clip_type": "sd3"},
    "flux": {"unet": "tiny_flux.safetensors", "clip_type": "stable_diffusion"},
    # test-only loaders (kit_families.py: ComfyUI's detection refuses these families at tiny sizes)
    **{
        name: {"unet": f"tiny_{name}.safetensors", "clip": f"tiny_{name}_te.safetensors", "family": name}
        for name in SPECS
    },
}
PROMPTS = "a red cube\na blue ball on grass"


def loaders(kind: str, weight_dtype: str = "default") -> Graph:
    kit = KIT[kind]
    if "family" in kit:
        spec = SPECS[kind]
        return {
            "unet": {
                "class_type": "UNETLoader",
                "inputs": {"unet_name": kit["unet"], "weight_dtype": weight_dtype},
            }
            if spec.stock_unet
            else {
                "class_type": "NormGuardTestTinyUNET",
                "inputs": {"family": kit["family"], "unet_name": kit["unet"]},
            },
            "clip": {
                "class_type": "NormGuardTestTinyCLIP",
                "inputs": {"family": kit["family"], "clip_name": kit["clip"]},
            },
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": SPECS[kind].vae}},
        }
    return {
        "unet": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": kit["unet"], "weight_dtype": weight_dtype},
        },
        "clip": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": "tiny_clip_l.safetensors", "type": kit["clip_type"]},
        },
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_vae16.safetensors"}},
    }


def train(
    kind: str,
    name: str,
    *,
    iterations: int = 2,
    model: list | None = None,
    options: dict | None = None,
    **inputs: Any,
) -> Graph:
    """Loaders + a reward + NormGuardTrainLoRA (node id "train"); tiny, fast settings."""
    g = loaders(kind)
    g["reward"] = {"class_type": "NormGuardRewardJpegIncompressibility", "inputs": {"weight": 1.0}}
    g["options"] = {
        "class_type": "NormGuardTrainOptions",
        "inputs": {
            "groups_per_iteration": 1,
            "train_timesteps": 1,
            "timestep_fraction": 0.8,
            "micro_batch_size": 2,
            "normguard_form": "linear",
            "normguard_relative": True,
            "normguard_margin": 0.0,
            "normguard_reduction": "sample",
            "kl_weight": 0.0,
            "lora_alpha": 0.0,
            "lora_targets": "",
            "guidance": 0.0,
            "gradient_checkpointing": False,
            "checkpoint_every": 1,
            "eval_every": 0,
            "eval_samples": 1,
            "eval_few_steps": 0,
            "warn_rho": 1.1,
            "stop_on_warning": False,
            "init_lora": "none",
            "reward_normalize_each": False,
            "lora_format": "comfyui",
            "extra": "",
            **(options or {}),
        },
    }
    g["train"] = {
        "class_type": "NormGuardTrainLoRA",
        "inputs": {
            "model": model or ["unet", 0],
            "clip": ["clip", 0],
            "vae": ["vae", 0],
            "reward": ["reward", 0],
            "prompts": PROMPTS,
            "method": "nft",
            "normguard_weight": 1.0,
            "iterations": iterations,
            "group_size": 2,
            "sample_steps": 2,
            "cfg": 1.0,
            "width": 64,
            "height": 64,
            "lora_rank": 4,
            "learning_rate": 0.02,
            "seed": 0,
            "lora_name": name,
            "options": ["options", 0],
            **inputs,
        },
    }
    return g


def sample(
    g: Graph,
    kind: str,
    model: list,
    prefix: str,
    *,
    node: str = "ks",
    sampler: str = "euler",
    steps: int = 3,
    cfg: float = 1.0,
    batch: int = 1,
    seed: int = 7,
) -> Graph:
    """Adds prompt encoding, an empty latent, a KSampler (id `node`) and SaveLatent (prefix)."""
    g.setdefault(
        "pos", {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a red cube"}}
    )
    g.setdefault("neg", {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": ""}})
    g.setdefault(
        "latent",
        {
            "class_type": SPECS[kind].latent if kind in SPECS else "EmptySD3LatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": batch},
        },
    )
    positive = ["pos", 0]
    if kind == "flux":
        g.setdefault(
            "guid", {"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": 3.5}}
        )
        positive = ["guid", 0]
    g[node] = {
        "class_type": "KSampler",
        "inputs": {
            "model": model,
            "seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler_name": sampler,
            "scheduler": "simple",
            "positive": positive,
            "negative": ["neg", 0],
            "latent_image": ["latent", 0],
            "denoise": 1.0,
        },
    }
    g[f"{node}_save"] = {
        "class_type": "SaveLatent",
        "inputs": {"samples": [node, 0], "filename_prefix": prefix},
    }
    return g
