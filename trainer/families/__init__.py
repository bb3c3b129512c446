"""Flow model families as data: one module per family, each a `Family` descriptor plus its diffusers
`Adapter`. Adding a family means adding its module here (and its tiny test model).

The default LoRA targets of every family, in one table (README "Model families" repeats it):

| family    | default targets (peft target_modules, diffusers names)                        |
|-----------|-------------------------------------------------------------------------------|
| sd3       | to_q to_k to_v to_out.0 add_q_proj add_k_proj add_v_proj to_add_out            |
| flux      | to_q to_k to_v to_out.0 add_q_proj add_k_proj add_v_proj to_add_out            |
| flux2     | to_q to_k to_v to_out.0 add_q_proj add_k_proj add_v_proj to_add_out to_qkv_mlp_proj |
| chroma    | to_q to_k to_v to_out.0 add_q_proj add_k_proj add_v_proj to_add_out            |
| zimage    | to_q to_k to_v to_out.0 w1 w2 w3                                              |
| lumina2   | to_q to_k to_v to_out.0                                                       |
| qwenimage | to_q to_k to_v to_out.0                                                       |
| hidream   | to_q to_k to_v to_out                                                         |
| auraflow  | to_q to_k to_v to_out.0 add_q_proj add_k_proj add_v_proj to_add_out            |
| hunyuanimage | to_q to_k to_v to_out.0 add_q_proj add_k_proj add_v_proj to_add_out         |

tests/test_families.py checks this table against the descriptors.
"""

from __future__ import annotations

from . import auraflow, chroma, flux, flux2, hidream, hunyuanimage, lumina2, qwenimage, sd3, zimage
from .base import DiffusersAdapter, Family

__all__ = [
    "ADAPTERS",
    "FAMILIES",
    "DiffusersAdapter",
    "Family",
    "adapter_for_pipeline",
    "supported_pipelines",
]

_MODULES = (sd3, flux, flux2, chroma, zimage, lumina2, qwenimage, hidream, auraflow, hunyuanimage)
FAMILIES: dict[str, Family] = {m.FAMILY.name: m.FAMILY for m in _MODULES}
ADAPTERS: dict[str, type[DiffusersAdapter]] = {p: m.Adapter for m in _MODULES for p in m.FAMILY.pipelines}
_REFUSED: dict[str, Family] = {p: m.FAMILY for m in _MODULES for p in m.FAMILY.refused_pipelines}


def supported_pipelines() -> str:
    """'StableDiffusion3Pipeline (SD3 / SD3.5), ...': what error messages list."""
    return ", ".join(f"{p} ({f.title})" for f in FAMILIES.values() for p in f.pipelines)


def adapter_for_pipeline(class_name: str | None, source: str, unet: bool = False) -> type[DiffusersAdapter]:
    """The adapter of a diffusers pipeline class; a clear refusal, naming the supported list, otherwise."""
    if class_name in ADAPTERS:
        return ADAPTERS[class_name]
    if class_name in _REFUSED:
        why = f" (a {_REFUSED[class_name].title} variant that needs an image input: edit, inpaint or control)"
    elif unet:
        why = " (a UNet model, not flow matching)"
    else:
        why = ""
    raise ValueError(
        f"{source!r} is a {class_name}{why}; the diffusers backend trains text-to-image flow-matching "
        f"pipelines only: {supported_pipelines()}."
    )
