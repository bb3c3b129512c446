"""Model backends: one protocol (base.FlowBackend), one implementation per way of loading a model
(TinyFlow, a diffusers pipeline, a ComfyUI MODEL); model families are data in trainer/families/."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Cond, FlowBackend, cond_cat, cond_select, cond_to, training_attention

__all__ = ["Cond", "FlowBackend", "cond_cat", "cond_select", "cond_to", "load_backend", "training_attention"]


def load_backend(
    model: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    guidance: float | None = None,
    gradient_checkpointing: bool = False,
) -> FlowBackend:
    """'builtin' -> the shipped TinyFlow model; a TinyFlow folder; else a diffusers flow pipeline
    (a local folder or a repo id already in the Hugging Face cache, loaded offline)."""
    from .tinyflow import TinyFlowBackend, is_tinyflow_folder

    if model in ("builtin", "tinyflow"):
        return TinyFlowBackend.from_pretrained(None, device=device)
    if Path(model).is_dir() and is_tinyflow_folder(model):
        return TinyFlowBackend.from_pretrained(model, device=device)
    from .diffusers import DiffusersBackend

    return DiffusersBackend.from_pretrained(
        model, device=device, dtype=dtype, guidance=guidance, gradient_checkpointing=gradient_checkpointing
    )
