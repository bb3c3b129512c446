"""LoRA files: one safetensors file that ComfyUI's LoraLoader and diffusers both load, with metadata."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .dtypes import DTYPES
from .files import atomic_write

if TYPE_CHECKING:
    from .config import TrainConfig


def build_metadata(
    base: dict[str, str], facts: dict[str, Any], title: str, resolution: str | None = None
) -> dict[str, str]:
    """modelspec.* (the customary LoRA model card keys) plus normguard.* training facts, all strings."""
    meta = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.title": title,
        "modelspec.date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **base,
        **({"modelspec.resolution": resolution} if resolution else {}),
    }
    for k, v in facts.items():
        meta[f"normguard.{k}"] = v if isinstance(v, str) else json.dumps(v)
    return meta


class NonFiniteLoRA(ValueError):
    """A LoRA holds NaN or inf: it is never written, the previous file stays."""


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def run_facts(cfg: TrainConfig, iteration: int, lora_alpha: float | None) -> dict[str, Any]:
    """The training facts a LoRA's metadata records as normguard.* (names other tools read: stable)."""
    return {
        "method": cfg.method,
        "weight": cfg.normguard_weight,
        "form": cfg.normguard_form,
        "relative": cfg.normguard_relative,
        "margin": cfg.normguard_margin,
        "reduction": cfg.normguard_reduction,
        "reward": [{"name": r.name, "weight": r.weight} for r in cfg.rewards],
        "iterations": iteration,
        "sample_steps": cfg.sample_steps,
        "cfg": cfg.cfg_scale,
        "lora_rank": cfg.lora_rank,
        "lora_alpha": lora_alpha,
        "seed": cfg.seed,
        **({"init_lora": Path(cfg.init_lora).name} if cfg.init_lora else {}),
    }


def save_lora(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], dtype: str = "fp32"
) -> Path:
    """Write the LoRA atomically (a crash leaves the previous file intact); refuse NaN/inf weights."""
    cast = {k: v.to(DTYPES[dtype]).contiguous() for k, v in tensors.items()}
    if not all_finite(cast.values()):
        bad = sorted(k for k, v in cast.items() if not torch.isfinite(v).all())
        raise NonFiniteLoRA(
            f"the LoRA holds non-finite values in {len(bad)} tensor(s) (e.g. {bad[0]}"
            f"{'; fp16 overflow?' if dtype == 'fp16' else ''}); {Path(path).name} was not written, "
            "the last good one is kept"
        )
    return atomic_write(path, lambda tmp: save_file(cast, str(tmp), metadata=metadata))


def read_lora_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def normguard_facts(metadata: dict[str, str]) -> dict[str, Any]:
    """The normguard.* entries of a LoRA file's metadata, decoded."""
    out = {}
    for k, v in metadata.items():
        if k.startswith("normguard."):
            try:
                out[k[len("normguard.") :]] = json.loads(v)
            except json.JSONDecodeError:
                out[k[len("normguard.") :]] = v
    return out
