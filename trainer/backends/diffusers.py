"""Backend for diffusers flow-matching text-to-image pipelines (the families in trainer/families).

One `DiffusersBackend` drives any supported pipeline; what differs per model family (prompt
encoding, the transformer's call convention, latent packing and layout, the timestep schedule)
lives in that family's adapter (trainer/families/<family>.py).

Latents are always the spatial layout [B, C, H/f, W/f] (f = the family's VAE factor); token
packing happens inside the forward, so velocity norms and per-token reductions mean the same
thing across families.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..dtypes import resolve_dtype
from ..families import DiffusersAdapter, adapter_for_pipeline
from .base import Cond, check_image_size, check_prompts, check_steps
from .offload import offload_frozen_blocks
from .peft_lora import PeftLoraBackend

MODEL_INDEX = "model_index.json"
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)

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


def check_flow_pipeline(folder: Path, source: str) -> type[DiffusersAdapter]:
    """The family adapter for the pipeline in `folder`; refuses anything not a supported flow family."""
    try:
        index = json.loads((folder / MODEL_INDEX).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{source!r}: cannot read {MODEL_INDEX}: {e}") from e
    class_name = index.get("_class_name")
    adapter = adapter_for_pipeline(class_name, source, unet="unet" in index)
    scheduler = (index.get("scheduler") or [None, None])[1]
    if scheduler not in FLOW_SCHEDULERS:
        raise ValueError(
            f"{source!r}: its scheduler is {scheduler}, not flow matching; the diffusers backend needs "
            f"{' or '.join(FLOW_SCHEDULERS)} (the {class_name} default)."
        )
    return adapter


def base_model_name(source: str) -> str:
    """A repo id as given; a local folder by its name only (LoRA files get shared: no user paths)."""
    path = Path(source).expanduser()
    return path.name if path.is_dir() else source


def _dtype_keyword() -> str:
    """from_pretrained's dtype argument: newer diffusers renamed torch_dtype to dtype (the old name warns)."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


# --- the backend -------------------------------------------------------------------------------


class DiffusersBackend(PeftLoraBackend):
    """A diffusers flow pipeline: frozen text encoders and VAE, LoRA on the transformer."""

    lora_prefix = "transformer."

    def __init__(
        self,
        pipe: Any,
        adapter: type[DiffusersAdapter],
        source: str = "diffusers",
        guidance: float | None = None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.pipe = pipe
        self.adapter = adapter(pipe, source)
        self.family = self.adapter.family
        self.name = self.family.name
        self.default_lora_targets = self.family.lora_targets
        self.source = source
        self.device = pipe.transformer.device
        self.dtype = pipe.transformer.dtype
        if self.adapter.guidance_distilled:
            default = self.adapter.default_guidance
            self.guidance: float | None = default if guidance is None else float(guidance)
        elif guidance is not None:
            raise ValueError(
                f"guidance={guidance} applies only to guidance-distilled models (e.g. FLUX.1-dev); "
                f"{source!r} ({self.family.title}) has no guidance input (use classifier-free guidance, cfg, "
                "instead)"
            )
        else:
            self.guidance = None
        for component in pipe.components.values():
            if isinstance(component, nn.Module):
                component.requires_grad_(False).eval()
        if gradient_checkpointing:
            self.adapter.enable_gradient_checkpointing()
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
        adapter = check_flow_pipeline(folder, str(path_or_repo_id))
        device = torch.device(device)
        dtype_kwarg = {_dtype_keyword(): resolve_dtype(dtype, device)}
        pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True, **dtype_kwarg).to(device)
        return cls(
            pipe,
            adapter,
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
        check_prompts(prompts)
        offloaded = self._text_encoders_offloaded
        if offloaded:  # a prompt not seen before: bring the encoders back for it
            self._move_text_encoders(self.device)
        try:
            cond = self.adapter.encode_prompts(list(prompts), self.device)
        finally:
            if offloaded:
                self._move_text_encoders("cpu")
        # embeddings in the model's dtype; masks keep theirs (bool/int: the transformers index with them)
        return {
            k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype) for k, v in cond.items()
        }

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

    def offload_frozen_blocks(self) -> None:
        """The frozen transformer blocks in CPU memory, streamed in one block at a time (offload.py);
        after add_lora and fp8 storage, so the adapter stays on the device and blocks move as stored."""
        offload_frozen_blocks(self.pipe.transformer, self.device)
        self.streamed = True

    def default_size(self) -> tuple[int, int]:
        side = self.adapter.native_resolution
        return (side, side)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        factor, patch = self.adapter.vae_factor, self.adapter.patch
        multiple = factor * patch
        max_side = self.adapter.max_latent_side()
        check_image_size(
            height, width, multiple, f"the {self.name} model", f" (VAE factor {factor} x patch {patch})"
        )
        for label, size in (("height", height), ("width", width)):
            if max_side is not None and size // factor > max_side:
                raise ValueError(
                    f"{label}={size}: the {self.name} model makes at most {max_side * factor} pixels"
                )
        return (self.adapter.latent_channels, height // factor, width // factor)

    def schedule(self, steps: int, height: int, width: int) -> torch.Tensor:
        """The sigmas the pipeline's own scheduler uses at this resolution, plus the final 0."""
        check_steps(steps)
        _, h, w = self.latent_shape(height, width)
        tokens = (h // self.adapter.patch) * (w // self.adapter.patch)
        scheduler = copy.deepcopy(self.pipe.scheduler)  # the pipeline's own stays untouched
        kwargs = self.adapter.timestep_kwargs(steps, tokens)
        if kwargs.get("sigmas") is not None:
            scheduler.set_timesteps(device="cpu", **kwargs)
        else:
            scheduler.set_timesteps(steps, device="cpu", **{k: v for k, v in kwargs.items() if k != "sigmas"})
        return scheduler.sigmas.float().cpu()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.adapter.decode(latents)
        return (images.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> latents (the posterior mean: deterministic)."""
        return self.adapter.encode_images(images * 2 - 1).to(self.dtype)

    # --- the model ----------------------------------------------------------------------------
    streamed = False  # offload_frozen_blocks was called

    def _forward(self, module: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        if not self.streamed:
            return self.adapter.predict(module, x.to(self.dtype), sigma, cond, self.guidance)
        # checkpointing stops a block's recomputation once backward has what it needs, before the block's
        # post-forward hook would send its weights back: every block would stay on the device
        with torch.utils.checkpoint.set_checkpoint_early_stop(False):
            return self.adapter.predict(module, x.to(self.dtype), sigma, cond, self.guidance)

    def step_distilled(self) -> bool:
        return self.adapter.step_distilled

    def lora_metadata(self) -> dict[str, str]:
        side = self.adapter.native_resolution
        meta = {
            "modelspec.architecture": f"{self.adapter.architecture()}/lora",
            "modelspec.implementation": "diffusers",
            "modelspec.resolution": f"{side}x{side}",
            "normguard.base_model": base_model_name(self.source),
        }
        if self.guidance is not None:
            meta["normguard.guidance"] = str(self.guidance)
        return meta
