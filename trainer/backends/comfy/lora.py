"""The ComfyUI backend's LoRA adapter and its two file formats.

The adapter is a bypass patch, y = f(x) + s * up(down(x)), installed with patching.ForwardPatch. It
is not ComfyUI's own training adapter (comfy.weight_adapter: `LoRAAdapter.create_train` -> LoraDiff,
attached by `BypassInjectionManager`, as TrainLoraNode does), because that one lacks what the trainer
needs:
- an off-switch: BypassForwardHook always adds the adapter; the reference pass (v_ref, every
  iteration) would have to zero `adapter.multiplier` on every layer, and still pay the adapter's
  matmuls;
- computing in the layer's dtype: LoraDiff.h multiplies x by its fp32 weights as they are, so a
  bf16/fp16 model fails ("expected m1 and m2 to have the same dtype") unless the whole step runs
  under torch.autocast, which TrainLoraNode does and which would change the base model's own math;
- peft's initialisation (down random, up zero), which the diffusers backend uses: create_train
  makes up random and down zero, so the two backends would start from differently shaped adapters;
- a clean eject: BypassForwardHook.eject leaves `forward` set on the shared module's instance, where
  ForwardPatch restores the class's; and inject moves the adapter to ComfyUI's torch device, where the
  optimizer expects it on the patcher's load device.

Formats (`lora_format`): "comfyui", ComfyUI's own `diffusion_model.<layer>.lora_down/lora_up.weight`;
"diffusers" (families.DIFFUSERS_FORMAT), `transformer.<diffusers layer>.lora_A/lora_B.weight`. Both follow
backends/adapter.py's export rule (up times alpha / rank, no .alpha key). "kohya" (SD3/SD3.5, FLUX.1),
kohya sd-scripts' `lora_unet_<layer, dots as underscores>.lora_down/lora_up.weight` plus `.alpha`, as
Forge and the kohya-based tools read it: their layer names for these two families are the original
MMDiT/FLUX names, which are ComfyUI's; up is stored as trained and `.alpha` carries the scale.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..adapter import check_fits, check_shape, export_weight, lora_delta
from .families import DIFFUSERS_FORMAT, diffusers_converter, has_kohya_names, model_name

LORA_FORMATS = ("comfyui", "diffusers", "kohya")
KOHYA_PREFIX = "lora_unet_"


def kohya_name(name: str) -> str:
    """diffusion_model.joint_blocks.0.x_block.attn.qkv -> lora_unet_joint_blocks_0_x_block_attn_qkv"""
    return KOHYA_PREFIX + name.removeprefix("diffusion_model.").replace(".", "_")


class LoraAdapter(nn.Module):
    """(alpha / rank) * up(down(x)): fp32 parameters computed in x's dtype (see backends/adapter.py)."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, device: torch.device):
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=torch.float32))
        self.up = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))  # peft's default; up = 0: starts as a no-op
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lora_delta(x, self.down, self.up, self.scale)


def export_adapters(
    adapters: dict[str, LoraAdapter], lora_format: str, model: Any
) -> dict[str, torch.Tensor]:
    """The adapters as a LoRA file's tensors. In the diffusers format a fused ComfyUI layer (qkv, FLUX's
    linear1) becomes one LoRA per diffusers projection sharing lora_A, each lora_B the matching rows
    of up (exact)."""
    if lora_format == "kohya":
        check_kohya(model)
        out = {}
        for name, a in adapters.items():
            key = kohya_name(name)
            out[f"{key}.lora_down.weight"] = export_weight(a.down)
            out[f"{key}.lora_up.weight"] = export_weight(a.up)
            out[f"{key}.alpha"] = torch.tensor(a.scale * a.down.shape[0], dtype=torch.float32)
        return out
    pairs = {name: (export_weight(a.down), export_weight(a.up, a.scale)) for name, a in adapters.items()}
    if lora_format == "comfyui":
        return {
            key: tensor
            for name, (down, up) in pairs.items()
            for key, tensor in ((f"{name}.lora_down.weight", down), (f"{name}.lora_up.weight", up))
        }
    layers = diffusers_layer_names(model)
    out = {}
    for name, (down, up) in pairs.items():
        for layer, rows in diffusers_parts(layers, f"{name}.weight", up.shape[0]):
            out[f"transformer.{layer}.lora_A.weight"] = down.clone()
            out[f"transformer.{layer}.lora_B.weight"] = up[rows].contiguous()
    return out


def import_adapters(
    adapters: dict[str, LoraAdapter], tensors: dict[str, torch.Tensor], model: Any, source: str
) -> None:
    """Set the adapters from a LoRA file in either format (the inverse of export_adapters).
    ComfyUI-format files may carry .alpha keys (e.g. from TrainLoraNode): their scale is honoured."""
    layers = diffusers_layer_names(model) if any(k.startswith("transformer.") for k in tensors) else None
    pairs = {}
    for name, adapter in adapters.items():
        pair = _read_pair(tensors, name, adapter.up.shape[0], layers, source)
        if pair is not None:
            pairs[name] = pair
    check_fits(source, [name for name in adapters if name not in pairs], len(adapters), "layers")
    with torch.no_grad():
        for name, (down, up) in pairs.items():
            adapter = adapters[name]
            rank = adapter.down.shape[0]
            check_shape(source, f"{name}.lora_down", down.shape, adapter.down.shape, rank)
            check_shape(source, f"{name}.lora_up", up.shape, adapter.up.shape, rank)
            adapter.down.copy_(down)
            adapter.up.copy_(up / adapter.scale)


def check_kohya(model: Any) -> None:
    """kohya's names are defined for SD3/SD3.5 and FLUX.1 (refused before training for other models)."""
    if not has_kohya_names(model):
        raise ValueError(
            f"lora_format 'kohya' exists for SD3/SD3.5 and FLUX.1 models, not {model_name(model)}; use 'comfyui'"
        )


def diffusers_layer_names(model: Any) -> dict[str, list[tuple[str, tuple | None]]]:
    """For every ComfyUI weight key of a model with a diffusers map (families.diffusers_converter), the diffusers layers that hold it:
    [(diffusers layer, (dim, first row, rows) or None for the whole weight)] (ComfyUI's own map)."""
    convert = diffusers_converter(model)
    if convert is None:
        raise ValueError(
            f"lora_format 'diffusers' exists for {', '.join(DIFFUSERS_FORMAT)} models, not {model_name(model)}; "
            "use 'comfyui'"
        )
    names: dict[str, list[tuple[str, tuple | None]]] = {}
    for key, target in convert(model.model_config.unet_config, output_prefix="diffusion_model.").items():
        if not key.endswith(".weight"):
            continue
        if isinstance(target, str):
            names.setdefault(target, []).append((key[: -len(".weight")], None))
        elif len(target) == 2 and target[1] is not None:  # a slice; entries with a function are not exact
            names.setdefault(target[0], []).append((key[: -len(".weight")], target[1]))
    return names


def diffusers_parts(names: dict[str, list], weight_key: str, rows: int) -> list[tuple[str, slice]]:
    """The diffusers layers covering a ComfyUI weight and the output rows each takes: row slices when they
    tile the weight exactly (to_q/to_k/to_v of a fused qkv), else the first whole-weight name."""
    entries = names.get(weight_key, [])
    sliced = sorted(((off[1], off[2], layer) for layer, off in entries if off is not None and off[0] == 0))
    if (
        sliced
        and [s[0] for s in sliced] == [0, *[s[0] + s[1] for s in sliced[:-1]]]
        and sum(s[1] for s in sliced) == rows
    ):
        return [(layer, slice(start, start + size)) for start, size, layer in sliced]
    whole = [layer for layer, off in entries if off is None]
    if whole:
        return [(whole[0], slice(None))]
    raise ValueError(
        f"lora_format 'diffusers': {weight_key} has no diffusers name; use lora_format 'comfyui'"
    )


def _read_pair(
    tensors: dict[str, torch.Tensor], name: str, rows: int, layers: dict | None, source: str
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(down, effective up) of one adapted layer from a LoRA file, or None when the file lacks it."""
    if layers is None:  # ComfyUI's or kohya's keys
        if f"{name}.lora_down.weight" not in tensors and f"{kohya_name(name)}.lora_down.weight" in tensors:
            name = kohya_name(name)
        down, up = tensors.get(f"{name}.lora_down.weight"), tensors.get(f"{name}.lora_up.weight")
        if down is None or up is None:
            return None
        alpha = tensors.get(f"{name}.alpha")
        return down.float(), up.float() * (float(alpha) / down.shape[0] if alpha is not None else 1.0)
    keys = [f"transformer.{layer}.lora_" for layer, _ in diffusers_parts(layers, f"{name}.weight", rows)]
    if any(f"{k}A.weight" not in tensors or f"{k}B.weight" not in tensors for k in keys):
        return None
    downs = [tensors[f"{k}A.weight"].float() for k in keys]
    if any(not torch.equal(d, downs[0]) for d in downs[1:]):
        raise ValueError(
            f"{source}: the diffusers layers of {name} have different lora_A, so they are not one LoRA"
        )
    return downs[0], torch.cat([tensors[f"{k}B.weight"].float() for k in keys])
