"""What every backend's LoRA adapter shares, whoever implements it (peft, ComfyUI bypass patches).

- fp32 parameters over a base model that may compute in bf16/fp16: the adapter computes in the base
  layer's dtype (mixed precision as torch.autocast does it), so autograd keeps the low-precision input
  the base layer already saved rather than an fp32 copy of every adapted layer's input, while the
  gradients still accumulate into the fp32 parameters.
- Export: B (up) pre-multiplied by alpha / rank and no .alpha key, so ComfyUI's LoraLoader (scale 1.0
  without .alpha) and diffusers' load_lora_weights (which rejects .alpha) both apply the trained scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def lora_alpha(rank: int, alpha: float | None) -> float:
    """The adapter's alpha (default: rank, i.e. scale 1), after checking the rank."""
    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    return float(rank if alpha is None else alpha)


def lora_delta(
    x: torch.Tensor, down: torch.Tensor, up: torch.Tensor, scale: float, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """scale * up(down(x)) computed in `dtype` (default x's): the fp32 weights are cast, not x."""
    dtype = dtype or x.dtype
    return F.linear(F.linear(x.to(dtype), down.to(dtype)), up.to(dtype)) * scale


def export_weight(t: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """An adapter weight as the exported file holds it: fp32 on the CPU, B times alpha / rank."""
    return (t.detach().float().cpu() * scale).contiguous()


def check_fits(source: str, missing: Sequence[str], total: int, unit: str) -> None:
    """Refuse a LoRA file that lacks some of the adapter's layers (`unit`: what `total` counts)."""
    if missing:
        raise ValueError(
            f"{source} does not fit this model's adapter: {len(missing)} of {total} {unit} are missing "
            f"(e.g. {missing[0]}); was it trained on this model with the same lora_targets?"
        )


def check_shape(source: str, name: str, found: torch.Size, expected: torch.Size, rank: int) -> None:
    """Refuse a LoRA tensor whose shape is not the adapter's (another rank, or another model)."""
    if tuple(found) != tuple(expected):
        raise ValueError(
            f"{source}: {name} has shape {tuple(found)}, the adapter {tuple(expected)} (lora_rank {rank}); "
            "set lora_rank to the file's rank and use the model it was trained on"
        )
