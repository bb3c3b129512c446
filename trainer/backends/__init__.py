"""Model backends: one protocol (base.FlowBackend), one implementation per way of loading a model
(TinyFlow, a diffusers pipeline, a ComfyUI MODEL); model families are data in trainer/families/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from ..dtypes import resolve_dtype
from .base import Cond, FlowBackend, PromptCache, cond_cat, cond_select, cond_to, training_attention

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = [
    "Cond",
    "FlowBackend",
    "PromptCache",
    "cond_cat",
    "cond_select",
    "cond_to",
    "load_backend",
    "load_trainable",
    "training_attention",
]


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


def load_trainable(cfg: TrainConfig, device: torch.device, backend: FlowBackend | None = None) -> FlowBackend:
    """The model (`backend`, or loaded from cfg.model) with its LoRA adapter: the backend's own when it has
    one, else a new one, started from cfg.init_lora when set (a run's checkpoint overrides that later)."""
    torch.manual_seed(cfg.seed)  # LoRA init draws from the global generator
    backend = backend or load_backend(
        cfg.model,
        device,
        resolve_dtype(cfg.precision, device),
        guidance=cfg.guidance,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )
    if backend.named_trainable():
        return backend
    backend.add_lora(cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_targets or ()))
    if cfg.init_lora:
        if not Path(cfg.init_lora).is_file():
            raise FileNotFoundError(f"init_lora {cfg.init_lora} does not exist")
        backend.load_lora_state_dict(load_file(cfg.init_lora), f"init_lora {cfg.init_lora}")
    if cfg.fp8_base:  # after add_lora: the adapter's layers exist, so fp8 storage can leave them out
        backend.store_base_in_fp8()
    if cfg.offload:  # after fp8: the blocks move as stored
        backend.offload_frozen_blocks()
    return backend
