"""What the ComfyUI backend knows per model family; everything else works on any CONST (flow) model
ComfyUI loads, because conditioning goes through the model's own `extra_conds`.

Per family: default LoRA targets, the modelspec architecture name, the map to diffusers' layer names
(for lora_format "diffusers") and whether its blocks add residuals in place (then they train only
under gradient checkpointing).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ...families import FAMILIES, Family, flux, sd3

# comfy.supported_models class name -> its family (the model config's class: ZImage runs as a Lumina2 BaseModel)
COMFY_FAMILIES: dict[str, Family] = {c: f for f in FAMILIES.values() for c in f.comfy_models}


def supported_classes() -> str:
    """'SD3 (SD3 / SD3.5), Flux, FluxSchnell (FLUX.1), ...': what refusals list."""
    return ", ".join(f"{', '.join(f.comfy_models)} ({f.title})" for f in FAMILIES.values())


def comfy_class(model: Any) -> str:
    """The comfy.supported_models class a BaseModel was built from."""
    return type(getattr(model, "model_config", None)).__name__


def family_of(model: Any) -> Family | None:
    return COMFY_FAMILIES.get(comfy_class(model))


def model_name(model: Any) -> str:
    """What refusals call a BaseModel: its family's title (Z-Image runs as ComfyUI's Lumina2 class), else
    the class name."""
    family = family_of(model)
    return family.title if family is not None else type(model).__name__


def match_targets(names: Sequence[str], targets: Sequence[str]) -> list[str]:
    """Names equal to a target or ending in '.' + target (peft's rule for target_modules)."""
    return [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]


def default_targets(model: Any, linear_names: Sequence[str]) -> tuple[str, ...]:
    """The family's targets (trainer/families), else every attention Linear."""
    family = family_of(model)
    if family is not None and family.comfy_targets:
        return family.comfy_targets
    attention = tuple(n for n in linear_names if "attn" in n or "attention" in n)
    if not attention:
        raise ValueError(
            f"NormGuard: no default LoRA targets for {type(model).__name__}; give lora_targets "
            "(module names inside the diffusion model) in the training options"
        )
    return attention


def architecture(patcher: Any) -> str:
    """modelspec.architecture of a ComfyUI model (best effort)."""
    kind = type(patcher.model).__name__
    if kind == "SD3":
        # one name for every SD3 here: it is part of the trainer node's run key, so a finer name
        # (sd3.architecture_name of the unet_config) would stop existing runs from resuming
        return sd3.architecture_name()
    if kind == "Flux":  # FLUX.1 (dev and schnell share ComfyUI's Flux BaseModel; Flux2 is its own)
        guided = getattr(patcher.model.diffusion_model, "params", None)
        return flux.architecture_name(getattr(guided, "guidance_embed", False))
    return f"comfyui-{kind.lower()}"


def model_file(patcher: Any) -> str:
    """The file name a core loader (UNETLoader, CheckpointLoaderSimple) read the MODEL from, lower case;
    "" when unknown. ComfyUI keeps it on the patcher, and on its clones, to reload the model."""
    init = getattr(patcher, "cached_patcher_init", None)
    path = init[1][0] if init and len(init) > 1 and init[1] and isinstance(init[1][0], str) else ""
    return os.path.basename(path).lower()


def step_distilled(patcher: Any) -> bool:
    """Whether the MODEL is distilled to sample in a few steps. FLUX.1-schnell has no guidance embedding
    (ComfyUI's FluxSchnell); Z-Image-Turbo and FLUX.2 klein have the shapes of their base models, so only
    the file name tells (the family's distilled_names; "base" marks the undistilled klein)."""
    if architecture(patcher) == "flux-1-schnell":
        return True
    family = family_of(patcher.model)
    name = model_file(patcher)
    if family is None or "base" in name:
        return False
    return any(word in name for word in family.distilled_names)


# the families whose LoRA the ComfyUI backend writes in diffusers' names (lora_format "diffusers"): where
# ComfyUI has a map to the family's diffusers transformer (its LoRA loader's), or keeps diffusers' names.
# Not FLUX.2 and HunyuanImage 2.1 (ComfyUI has no map), nor Lumina 2 (ComfyUI's map for its Lumina2 class
# gives ZImageTransformer2DModel's names, not Lumina2Transformer2DModel's)
DIFFUSERS_FORMAT = ("SD3/SD3.5", "FLUX.1", "Chroma", "Z-Image", "Qwen-Image", "HiDream-I1", "AuraFlow")


def diffusers_converter(model: Any) -> Callable[..., dict] | None:
    """ComfyUI's own map from diffusers' weight keys to its own for this model, called as
    `convert(unet_config, output_prefix=...)` (None: it has none). Chroma's blocks are FLUX.1's;
    Qwen-Image and HiDream keep diffusers' names."""
    import comfy.model_base
    import comfy.utils

    if comfy_class(model) == "ZImage":  # a Lumina2 BaseModel: the class of its model config tells
        return comfy.utils.z_image_to_diffusers
    converters = {
        comfy.model_base.SD3: comfy.utils.mmdit_to_diffusers,
        comfy.model_base.Flux: comfy.utils.flux_to_diffusers,
        comfy.model_base.Chroma: comfy.utils.flux_to_diffusers,
        comfy.model_base.AuraFlow: comfy.utils.auraflow_to_diffusers,
    }
    if type(model) in (comfy.model_base.QwenImage, comfy.model_base.HiDream):
        return same_names(model.diffusion_model)
    return converters.get(type(model))


def same_names(diffusion_model: nn.Module) -> Callable[..., dict]:
    """The identity map of a model that keeps diffusers' weight names, in diffusers_converter's form."""
    keys = list(diffusion_model.state_dict(keep_vars=True))
    return lambda _unet_config, output_prefix="": {k: output_prefix + k for k in keys}


def has_kohya_names(model: Any) -> bool:
    """kohya's lora_unet_* names are defined for SD3/SD3.5 and FLUX.1 only (their original layer names,
    which ComfyUI keeps)."""
    import comfy.model_base

    return type(model) in (comfy.model_base.SD3, comfy.model_base.Flux)


def adds_residuals_in_place(diffusion_model: nn.Module) -> bool:
    """FLUX-style blocks do `img += ...` on tensors autograd saved, so they only train checkpointed."""
    names = {n for n, _ in diffusion_model.named_children()}
    return {"double_blocks", "single_blocks"} <= names
