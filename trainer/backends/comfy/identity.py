"""Which MODEL this is: whether NormGuard can train it (a CONST flow model making images) and a short
fingerprint of the weights it computes with (a run resumes only on the same fingerprint)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from .families import comfy_class, family_of, supported_classes


def flow_model_problem(patcher: Any) -> str | None:
    """Why this MODEL cannot be trained by NormGuard, or None when it is a flow-matching model."""
    import comfy.model_sampling as ms

    sampling = patcher.get_model_object("model_sampling")
    kind = type(patcher.model).__name__
    kinds = "+".join(c.__name__ for c in type(sampling).__mro__[1:] if c.__module__.startswith("comfy."))
    img2img = getattr(ms, "IMG_TO_IMG_FLOW", None)
    if img2img is not None and isinstance(sampling, img2img):
        return (
            f"this MODEL ({kind}) uses IMG_TO_IMG_FLOW sampling, where the network predicts the image "
            "itself, not a velocity; NormGuard trains text-to-image flow models (CONST sampling: "
            "SD3/SD3.5, FLUX.1, ...)"
        )
    if not isinstance(sampling, ms.CONST):
        model_type = getattr(getattr(patcher.model, "model_type", None), "name", "?")
        return (
            f"this MODEL ({kind}, model_type {model_type}, sampling {kinds or type(sampling).__name__}) is "
            "not a flow-matching model; NormGuard trains models with CONST (flow) sampling: SD3/SD3.5, "
            "FLUX.1 and other rectified-flow models. (A ModelSamplingDiscrete node in front of a flow "
            "model also turns it into a non-flow model.)"
        )
    if family_of(patcher.model) is not None:
        if getattr(getattr(patcher.model.diffusion_model, "params", None), "meanflow", False):
            return (
                f"this MODEL ({kind}) is meanflow-distilled (HunyuanImage 2.1's distilled model): its "
                "velocity depends on the next sampler step too, which NormGuard's methods do not model; "
                "use the non-distilled model"
            )
        return None  # (Qwen-Image's latents have a frame axis of length 1: checked by family, not by shape)
    dims = getattr(patcher.model.latent_format, "latent_dimensions", 2)
    if dims != 2:
        return f"this MODEL ({kind}) makes {dims}-D latents (video/audio); NormGuard trains image models"
    return (
        f"this MODEL is a {comfy_class(patcher.model)}, not a model family NormGuard supports "
        f"(edit, inpaint and pixel-space variants are not); supported: {supported_classes()}"
    )


def check_flow_model(patcher: Any, who: str = "NormGuard") -> None:
    problem = flow_model_problem(patcher)
    if problem:
        raise ValueError(f"{who}: {problem}.")


def model_fingerprint(patcher: Any) -> str:
    """A short id of the weights a MODEL computes with: its class and config, a few unpatched weights,
    every weight patch (e.g. LoRAs loaded before the trainer) and the sampling shift. Resuming a run
    requires the same fingerprint, so another model starts a new run."""
    h = hashlib.sha1()
    h.update(type(patcher.model).__name__.encode())
    h.update(repr(sorted((k, repr(v)) for k, v in patcher.model.model_config.unet_config.items())).encode())
    sd = patcher.model.diffusion_model.state_dict()
    plain = [
        k for k in sorted(sd) if f"diffusion_model.{k}" not in patcher.patches and sd[k].is_floating_point()
    ]
    for k in plain[:: max(1, len(plain) // 4)][:5]:
        t = sd[k].detach().float()
        h.update(f"{k}{tuple(t.shape)}{t.sum().item():.6e}{t.abs().sum().item():.6e}".encode())
    for key in sorted(patcher.patches):
        for entry in patcher.patches[key]:
            strength, data, strength_model, offset = entry[:4]
            weights = getattr(data, "weights", data)
            tensors = [w for w in (weights if isinstance(weights, (list, tuple)) else [weights])]
            sums = [f"{w.float().sum().item():.6e}" for w in tensors if isinstance(w, torch.Tensor)]
            h.update(f"{key}{strength}{strength_model}{offset}{type(data).__name__}{sums}".encode())
    sampling = patcher.get_model_object("model_sampling")
    h.update(
        f"{type(sampling).__name__}{getattr(sampling, 'shift', '')}{getattr(sampling, 'multiplier', '')}".encode()
    )
    return h.hexdigest()[:12]
