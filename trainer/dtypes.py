"""Precision names: the one table the config, the CLI, the backends, LoRA files and rewards read."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LONG_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # torch's spelling, also accepted
NAMES = ", ".join([*DTYPES, *LONG_NAMES])


def _lookup(name: object) -> torch.dtype | None:
    if not isinstance(name, str):
        return None
    return DTYPES.get(LONG_NAMES.get(name.lower(), name.lower()))


def dtype_named(name: str, what: str = "dtype") -> torch.dtype:
    """'bf16' or 'bfloat16' -> torch.bfloat16 (likewise fp32, fp16); `what` names the input in errors."""
    dtype = _lookup(name)
    if dtype is None:
        raise ValueError(f"{what} {name!r} is not one of {NAMES}")
    return dtype


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device | str) -> torch.dtype:
    """None or 'auto' -> bfloat16 on CUDA, float32 elsewhere; else a name (see dtype_named) or a dtype."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    found = _lookup(dtype)
    if found is None:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {NAMES}")
    return found
