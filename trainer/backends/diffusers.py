"""Backend for diffusers flow-matching pipelines: SD3/SD3.5 and FLUX.1.

One `DiffusersBackend` drives any supported pipeline; what differs per model family (prompt
encoding, the transformer's call convention, latent packing, the timestep schedule) lives in a
small `FlowFamily` adapter. Adding a flow pipeline means writing one adapter and registering its
pipeline class in FAMILIES.

Latents are always the VAE's spatial layout [B, C, H/f, W/f] (f = VAE factor, 8 for real models),
FLUX's 2x2 token packing happens inside the forward, so velocity norms and per-token reductions
mean the same thing across families.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import Cond
from .peft_lora import PeftLoraBackend

MODEL_INDEX = "model_index.json"
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
# The joint-attention projections of SD3/SD3.5 and FLUX.1 (image and text streams). These names
# also match FLUX's single-stream blocks (to_q/k/v) and SD3.5's second attention (attn2).
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
DEFAULT_FLUX_GUIDANCE = 3.5  # FluxPipeline's default guidance_scale

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def calculate_shift(image_seq_len: int, config: Any, default_max_shift: float) -> float:
    """mu for resolution-dependent shifting: linear in the image token count (as the pipelines do)."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", default_max_shift)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len


# --- per-family adapters ---------------------------------------------------------------------------


class FlowFamily(ABC):
    """What one pipeline family does differently: prompts, transformer call, schedule, names."""

    name: str
    patch: int  # latent pixels per transformer token along each side
    max_sequence_length: int  # T5 tokens per prompt (the pipeline's __call__ default)
    guidance_distilled: bool = False  # takes a `guidance` input (FLUX.1-dev)

    def __init__(self, pipe: Any):
        self.pipe = pipe

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.latent_channels

    @abstractmethod
    def encode_prompts(self, prompts: list[str], device: torch.device) -> Cond: ...

    @abstractmethod
    def predict(
        self, module: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, guidance: float | None
    ) -> torch.Tensor:
        """The transformer's output for latents x [B, C, h, w] at sigma [B], in x's layout."""

    @abstractmethod
    def timestep_kwargs(self, steps: int, tokens: int) -> dict[str, Any]:
        """What the pipeline passes to scheduler.set_timesteps for `steps` steps and `tokens` image tokens."""

    @abstractmethod
    def architecture(self) -> str:
        """modelspec.architecture of the base model (best effort)."""

    @property
    @abstractmethod
    def native_resolution(self) -> int: ...

    def max_latent_side(self) -> int | None:
        """Largest latent height/width the transformer accepts (None: no limit)."""
        return None


class SD3Family(FlowFamily):
    name = "sd3"
    max_sequence_length = 256

    def __init__(self, pipe: Any):
        super().__init__(pipe)
        self.patch = pipe.transformer.config.patch_size

    def encode_prompts(self, prompts: list[str], device: torch.device) -> Cond:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def predict(self, module, x, sigma, cond, guidance):
        # the pipeline passes its scheduler's timesteps, sigma * num_train_timesteps in float32
        t = sigma.to(x.device, torch.float32) * self.pipe.scheduler.config.num_train_timesteps
        return module(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled_prompt_embeds"],
            return_dict=False,
        )[0]

    def timestep_kwargs(self, steps, tokens):
        config = self.pipe.scheduler.config
        if config.get("use_dynamic_shifting", False):
            return {"mu": calculate_shift(tokens, config, default_max_shift=1.16)}
        return {}

    def architecture(self) -> str:
        c = self.pipe.transformer.config
        if c.dual_attention_layers:
            return "stable-diffusion-3.5-medium"
        if c.qk_norm:
            return "stable-diffusion-3.5-large"
        return "stable-diffusion-3-medium" if c.num_layers == 24 else "stable-diffusion-3"

    @property
    def native_resolution(self) -> int:
        return self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor

    def max_latent_side(self) -> int | None:
        size = self.pipe.transformer.config.pos_embed_max_size
        return None if size is None else size * self.patch


class FluxFamily(FlowFamily):
    name = "flux"
    patch = 2  # FLUX packs 2x2 latent pixels into one token outside the transformer
    max_sequence_length = 512

    def __init__(self, pipe: Any):
        super().__init__(pipe)
        self.guidance_distilled = bool(pipe.transformer.config.guidance_embeds)

    def encode_prompts(self, prompts: list[str], device: torch.device) -> Cond:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def predict(self, module, x, sigma, cond, guidance):
        b, c, h, w = x.shape
        text = cond["prompt_embeds"]
        # FluxPipeline passes (t = sigma * 1000 cast to the latent dtype) / 1000; the transformer
        # multiplies timestep and guidance by 1000 itself
        t = (sigma.to(x.device, torch.float32) * 1000).to(x.dtype) / 1000
        g = None if guidance is None else torch.full((b,), guidance, device=x.device, dtype=torch.float32)
        out = module(
            hidden_states=pack_latents(x),
            timestep=t,
            guidance=g,
            pooled_projections=cond["pooled_prompt_embeds"],
            encoder_hidden_states=text,
            txt_ids=torch.zeros(text.shape[1], 3, device=x.device, dtype=text.dtype),
            img_ids=latent_image_ids(h // 2, w // 2, device=x.device, dtype=x.dtype),
            return_dict=False,
        )[0]
        return unpack_latents(out, h, w)

    def timestep_kwargs(self, steps, tokens):
        config = self.pipe.scheduler.config
        sigmas = None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)
        return {"sigmas": sigmas, "mu": calculate_shift(tokens, config, default_max_shift=1.15)}

    def architecture(self) -> str:
        return "flux-1-dev" if self.guidance_distilled else "flux-1-schnell"

    @property
    def native_resolution(self) -> int:
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> FLUX tokens [B, (h/2)(w/2), 4C], each token a 2x2 patch (channel-major)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of pack_latents."""
    b, _, d = tokens.shape
    return tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def latent_image_ids(rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """FLUX's positional ids of the image tokens: (0, row, col) per token, row-major."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


FAMILIES: dict[str, type[FlowFamily]] = {"StableDiffusion3Pipeline": SD3Family, "FluxPipeline": FluxFamily}


# --- finding and checking a pipeline -----------------------------------------------------------


def _cached_repo_folder(repo_id: str) -> Path | None:
    """The HF-cache snapshot folder of `repo_id` when its model_index.json is cached (no network)."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, MODEL_INDEX)
    except ValueError:  # not a valid repo id
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def is_diffusers_folder(path: str | Path) -> bool:
    """True for a diffusers pipeline folder (has model_index.json) or a repo id cached locally."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return (folder / MODEL_INDEX).is_file()
    return _cached_repo_folder(str(path)) is not None


def resolve_pipeline_folder(path_or_repo_id: str | Path) -> Path:
    """The local folder of a pipeline; clear errors for anything that is not one."""
    folder = Path(path_or_repo_id).expanduser()
    expected = (
        f"a diffusers pipeline folder: {MODEL_INDEX} plus transformer/, vae/, scheduler/, text_encoder*/ "
        "and tokenizer*/ subfolders (as written by pipe.save_pretrained)"
    )
    if folder.is_file():
        raise ValueError(
            f"{str(path_or_repo_id)!r} is a single file; the diffusers backend needs {expected}. "
            "Single-file checkpoints load in the ComfyUI backend."
        )
    if folder.is_dir():
        if not (folder / MODEL_INDEX).is_file():
            raise FileNotFoundError(f"{str(folder)!r} is not {expected}: it has no {MODEL_INDEX}")
        return folder
    cached = _cached_repo_folder(str(path_or_repo_id))
    if cached is None:
        raise FileNotFoundError(
            f"{str(path_or_repo_id)!r}: no such folder, and not a repo id in the local Hugging Face cache "
            f"(nothing is downloaded). Expected {expected}, or the id of a repo already downloaded."
        )
    return cached


def check_flow_pipeline(folder: Path, source: str) -> type[FlowFamily]:
    """The family adapter for the pipeline in `folder`; refuses anything not flow matching."""
    try:
        index = json.loads((folder / MODEL_INDEX).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{source!r}: cannot read {MODEL_INDEX}: {e}") from e
    class_name = index.get("_class_name")
    supported = ", ".join(FAMILIES)
    if class_name not in FAMILIES:
        kind = " (a UNet model, not flow matching)" if "unet" in index else ""
        raise ValueError(
            f"{source!r} is a {class_name}{kind}; the diffusers backend trains flow-matching pipelines "
            f"only: {supported}."
        )
    scheduler = (index.get("scheduler") or [None, None])[1]
    if scheduler not in FLOW_SCHEDULERS:
        raise ValueError(
            f"{source!r}: its scheduler is {scheduler}, not flow matching; the diffusers backend needs "
            f"{' or '.join(FLOW_SCHEDULERS)} (the {class_name} default)."
        )
    return FAMILIES[class_name]


def base_model_name(source: str) -> str:
    """A repo id as given; a local folder by its name only (LoRA files get shared: no user paths)."""
    path = Path(source).expanduser()
    return path.name if path.is_dir() else source


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """None -> bfloat16 on CUDA, float32 elsewhere; strings like 'bf16' or 'float16' accepted."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype={dtype!r} is not supported; use one of {', '.join(_DTYPES)}")


def _dtype_keyword() -> str:
    """from_pretrained's dtype argument: newer diffusers renamed torch_dtype to dtype (the old name warns)."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


# --- the backend -------------------------------------------------------------------------------


class DiffusersBackend(PeftLoraBackend):
    """A diffusers flow pipeline: frozen text encoders and VAE, LoRA on the transformer."""

    lora_prefix = "transformer."
    default_lora_targets = DEFAULT_TARGETS

    def __init__(
        self,
        pipe: Any,
        family: type[FlowFamily],
        source: str = "diffusers",
        guidance: float | None = None,
        gradient_checkpointing: bool = False,
    ):
        self.pipe = pipe
        self.family = family(pipe)
        self.name = self.family.name
        self.source = source
        self.device = pipe.transformer.device
        self.dtype = pipe.transformer.dtype
        if self.family.guidance_distilled:
            self.guidance: float | None = DEFAULT_FLUX_GUIDANCE if guidance is None else float(guidance)
        elif guidance is not None:
            raise ValueError(
                f"guidance={guidance} applies only to guidance-distilled models (FLUX.1-dev); "
                f"{source!r} has no guidance input (use classifier-free guidance, cfg, instead)"
            )
        else:
            self.guidance = None
        for component in pipe.components.values():
            if isinstance(component, nn.Module):
                component.requires_grad_(False).eval()
        if gradient_checkpointing:
            pipe.transformer.enable_gradient_checkpointing()
        pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        guidance: float | None = None,
        gradient_checkpointing: bool = False,
    ) -> DiffusersBackend:
        """Load a local pipeline folder, or a repo id already in the HF cache (never downloads)."""
        from diffusers import DiffusionPipeline

        folder = resolve_pipeline_folder(path_or_repo_id)
        family = check_flow_pipeline(folder, str(path_or_repo_id))
        device = torch.device(device)
        dtype_kwarg = {_dtype_keyword(): resolve_dtype(dtype, device)}
        pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True, **dtype_kwarg).to(device)
        return cls(
            pipe,
            family,
            source=str(path_or_repo_id),
            guidance=guidance,
            gradient_checkpointing=gradient_checkpointing,
        )

    @property
    def module(self) -> nn.Module:
        return self.pipe.transformer

    # --- conditioning and latents -----------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Cond:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be a list of strings, got {prompts!r}")
        offloaded = self._text_encoders_offloaded
        if offloaded:  # a prompt not seen before: bring the encoders back for it
            self._move_text_encoders(self.device)
        try:
            cond = self.family.encode_prompts(list(prompts), self.device)
        finally:
            if offloaded:
                self._move_text_encoders("cpu")
        return {k: v.to(self.device, self.dtype) for k, v in cond.items()}

    _text_encoders_offloaded = False

    def _move_text_encoders(self, device: torch.device | str) -> None:
        for name, component in self.pipe.components.items():
            if name.startswith("text_encoder") and isinstance(component, nn.Module):
                component.to(device)

    def offload_text_encoders(self) -> None:
        """Text encoders to the CPU: FLUX's T5-XXL alone holds about 9.5 GB in bf16."""
        if self.device.type != "cpu":
            self._move_text_encoders("cpu")
            self._text_encoders_offloaded = True

    def store_base_in_fp8(self) -> None:
        """diffusers' layerwise casting: float8 storage, self.dtype compute. Called after add_lora, so the
        adapter (excluded by name) stays in full precision and keeps training."""
        from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

        self.pipe.transformer.enable_layerwise_casting(
            storage_dtype=torch.float8_e4m3fn,
            compute_dtype=self.dtype,
            skip_modules_pattern=(*DEFAULT_SKIP_MODULES_PATTERN, "lora_A", "lora_B"),
        )

    def default_size(self) -> tuple[int, int]:
        side = self.family.native_resolution
        return (side, side)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        factor = self.pipe.vae_scale_factor
        multiple = factor * self.family.patch
        max_side = self.family.max_latent_side()
        for label, size in (("height", height), ("width", width)):
            if not isinstance(size, int) or size <= 0 or size % multiple:
                raise ValueError(
                    f"{label}={size!r}: the {self.name} model needs a positive multiple of {multiple} pixels "
                    f"(VAE factor {factor} x patch {self.family.patch})"
                )
            if max_side is not None and size // factor > max_side:
                raise ValueError(
                    f"{label}={size}: the {self.name} model makes at most {max_side * factor} pixels"
                )
        return (self.family.latent_channels, height // factor, width // factor)

    def schedule(self, steps: int, height: int, width: int) -> torch.Tensor:
        """The sigmas the pipeline's own scheduler uses at this resolution, plus the final 0."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps={steps!r}: need a positive integer")
        _, h, w = self.latent_shape(height, width)
        tokens = (h // self.family.patch) * (w // self.family.patch)
        scheduler = copy.deepcopy(self.pipe.scheduler)  # the pipeline's own stays untouched
        kwargs = self.family.timestep_kwargs(steps, tokens)
        if kwargs.get("sigmas") is not None:
            scheduler.set_timesteps(device="cpu", **kwargs)
        else:
            scheduler.set_timesteps(steps, device="cpu", **{k: v for k, v in kwargs.items() if k != "sigmas"})
        return scheduler.sigmas.float().cpu()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        z = latents.to(self.device, vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        images = vae.decode(z, return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> latents (the posterior mean: deterministic)."""
        vae = self.pipe.vae
        posterior = vae.encode(images.to(self.device, vae.dtype) * 2 - 1).latent_dist
        z = (posterior.mean - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor
        return z.to(self.dtype)

    # --- the model ----------------------------------------------------------------------------
    def _forward(self, module: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self.family.predict(module, x.to(self.dtype), sigma, cond, self.guidance)

    def step_distilled(self) -> bool:
        return self.family.architecture() == "flux-1-schnell"

    def lora_metadata(self) -> dict[str, str]:
        side = self.family.native_resolution
        meta = {
            "modelspec.architecture": f"{self.family.architecture()}/lora",
            "modelspec.implementation": "diffusers",
            "modelspec.resolution": f"{side}x{side}",
            "normguard.base_model": base_model_name(self.source),
        }
        if self.guidance is not None:
            meta["normguard.guidance"] = str(self.guidance)
        return meta
