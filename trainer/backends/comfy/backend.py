"""ComfyBackend: the FlowBackend over a model ComfyUI already loaded (a MODEL, a CLIP and a VAE).

- The MODEL is never modified: training runs on `model.clone()`, which shares the nn.Module (and
  so costs no weight memory). The LoRA (lora.py) is a set of bypass patches (patching.py) installed
  through the clone's injections: ComfyUI puts them into the shared module when it loads the clone
  and takes them out when it loads anything else. Base weights are never touched, so fp8 /
  quantized / offloaded weights work unchanged, and `reference()` is a switch that skips the
  adapters per call: the frozen base velocity, with no re-patching and no second copy.
- Gradient passes run inside `trainable_view` (ComfyUI's weights are inference tensors). Memory
  cost of training = the adapter, its optimizer state and the activations: no second copy of the
  model (ComfyUI's TrainLoraNode reloads one with force_deepcopy).
- Prompts become the model's own inputs exactly as a KSampler builds them (conditioning.py), so
  any CONST (flow-matching) model ComfyUI supports gets the right inputs. What stays per family is
  in families.py.
- v = (x - denoised) / sigma from `BaseModel.apply_model` (CONST: denoised = x - sigma v); the
  core never evaluates at sigma = 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..adapter import lora_alpha
from ..base import Cond, FlowBackend, check_image_size, check_prompts, check_steps, cond_select
from .conditioning import PromptConditioning
from .families import (
    adds_residuals_in_place,
    architecture,
    default_targets,
    match_targets,
    model_name,
    step_distilled,
)
from .identity import check_flow_model
from .lora import (
    LORA_FORMATS,
    LoraAdapter,
    check_kohya,
    diffusers_layer_names,
    export_adapters,
    import_adapters,
)
from .patching import (
    ForwardPatch,
    Switch,
    checkpoint_patches,
    patcher_injection,
    plain,
    trainable_view,
    training_mode,
)

log = logging.getLogger("normguard")


def check_fully_loaded(patcher: Any) -> None:
    """Refuse ComfyUI's partial ("lowvram") loading. Its offloaded layers are cast to the GPU per call
    into one reused buffer per CUDA stream (model_management.get_cast_buffer), which the next layer
    overwrites while autograd still holds the previous weight for backward; ComfyUI's own
    TrainLoraNode needs a per-layer recomputing autograd function for it (nodes_train.py)."""
    if not getattr(patcher.model, "model_lowvram", False):
        return
    gib = 2**30
    raise ValueError(
        f"NormGuard: ComfyUI loaded only {patcher.loaded_size() / gib:.1f} of the model's "
        f'{patcher.model_size() / gib:.1f} GiB onto {patcher.load_device} (partial "lowvram" loading), '
        "and training through partially loaded weights is not supported. Make it fit: load the model "
        "with UNETLoader's weight_dtype fp8_e4m3fn, lower group_size (trainer node) and "
        "micro_batch_size (options node), or close other GPU programs. "
        "docs/benchmarks.md lists the memory each family needs."
    )


def check_vae_fits(model: Any, vae: Any) -> None:
    """Refuse a VAE whose latents the model does not take (e.g. FLUX.1's 16-channel VAE on FLUX.2, which
    takes 128), before training: else the first decode, after the whole first rollout, fails on a shape."""
    wanted = getattr(getattr(model.model, "latent_format", None), "latent_channels", None)
    made = getattr(vae, "latent_channels", None)
    if isinstance(wanted, int) and isinstance(made, int) and wanted != made:
        raise ValueError(
            f"NormGuard: the VAE makes {made}-channel latents but the {model_name(model.model)} model takes "
            f"{wanted}-channel latents; connect the VAE made for this model (the one its sampling workflow "
            "decodes with)"
        )


# --- the backend -----------------------------------------------------------------------------------


class ComfyBackend(FlowBackend):
    """FlowBackend over ComfyUI's MODEL + CLIP + VAE (see the module docstring).

    prompts: the training prompts, encoded once up front (the CLIP is loaded a single time and the
    text-token counts of all prompts are made equal, as ComfyUI does when it batches conds).
    guidance: the distilled guidance of guidance-distilled models (FLUX.1-dev; None = ComfyUI's default).
    """

    name = "comfyui"

    def __init__(
        self,
        model: Any,
        clip: Any,
        vae: Any,
        *,
        height: int,
        width: int,
        prompts: Sequence[str] = (),
        guidance: float | None = None,
        scheduler: str = "simple",
        gradient_checkpointing: bool = False,
        lora_format: str = "comfyui",
    ):
        import comfy.model_management as mm

        check_flow_model(model)
        if clip is None:
            raise ValueError("NormGuard: the CLIP input is empty (the checkpoint has no text encoder?)")
        if vae is None:
            raise ValueError("NormGuard: the VAE input is empty (the checkpoint has no VAE?)")
        check_vae_fits(model, vae)
        if model.is_dynamic():
            # ComfyUI's dynamic VRAM (the GPU default) streams weights through buffers that autograd
            # cannot use; its documented way out is a plain patcher, which reloads the weights from
            # the file once (a second copy in RAM; VRAM holds only what is loaded for training)
            try:
                self.patcher = model.clone(disable_dynamic=True)
            except RuntimeError as e:
                raise ValueError(
                    "NormGuard: this MODEL uses ComfyUI's dynamic VRAM loading and was not made by a core "
                    "loader (UNETLoader, CheckpointLoaderSimple), so no trainable copy can be made; load it "
                    f"with a core loader or start ComfyUI with --disable-dynamic-vram ({e})"
                ) from e
        else:
            self.patcher = model.clone()  # shares the nn.Module: no weight copy
        self.model = self.patcher.model  # comfy BaseModel
        self.clip, self.vae = clip, vae
        self.device = mm.get_torch_device()
        self.dtype = torch.float32  # latents; the denoiser casts to its compute dtype itself
        self.guidance = guidance
        self.scheduler = scheduler
        self.gradient_checkpointing = gradient_checkpointing
        if lora_format not in LORA_FORMATS:
            raise ValueError(f"lora_format must be one of {', '.join(LORA_FORMATS)}, got {lora_format!r}")
        if lora_format == "diffusers":
            diffusers_layer_names(self.model)  # refuses families without a diffusers layout, before training
        if lora_format == "kohya":
            check_kohya(self.model)
        self.lora_format = lora_format
        self.height, self.width = height, width
        # image families whose latents carry a frame axis of length 1 (Qwen-Image's Wan latents): the
        # sampler adds it (comfy.sample.fix_empty_latent_channels); the core keeps [B, C, h, w]
        self._frames = getattr(self.model.latent_format, "latent_dimensions", 2) == 3
        self.switch = Switch()
        self._adapters: dict[str, LoraAdapter] = {}
        self._loaded = False
        self.latent_shape(height, width)  # validate early
        self.conditioning = PromptConditioning(self.model, clip, self.device, guidance, height, width)
        if prompts:
            self._encode(list(dict.fromkeys([*prompts, ""])))

    # --- conditioning and latents ---------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> Cond:
        check_prompts(prompts)
        if missing := self.conditioning.missing(prompts):
            self._encode(missing)
        return {k: v.to(self.device) for k, v in self.conditioning.batch(prompts).items()}

    def _encode(self, prompts: list[str]) -> None:
        self._loaded = False  # encoding may move the denoiser out of the device
        self.conditioning.encode(prompts, self.latent_shape(self.height, self.width))

    def default_size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        factor = (
            self.vae.spacial_compression_decode() if hasattr(self.vae, "spacial_compression_decode") else 8
        )
        check_image_size(height, width, factor * 2)  # VAE factor x the 2x2 patch of SD3/FLUX-style models
        return (self.model.latent_format.latent_channels, height // factor, width // factor)

    def schedule(self, steps: int, height: int, width: int) -> torch.Tensor:
        """The sigmas a KSampler would use with this MODEL (its model_sampling, incl. any shift patch)."""
        import comfy.samplers

        check_steps(steps)
        sampling = self.patcher.get_model_object("model_sampling")
        return comfy.samplers.calculate_sigmas(sampling, self.scheduler, steps).float().cpu()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            z = self.model.process_latent_out(self._to_model(latents.float()))
            if z.ndim == 5 and getattr(self.vae, "latent_dim", 2) == 2:
                z = z.squeeze(2)  # an image VAE given frame-axis latents
            images = self.vae.decode(z)
        self._loaded = False
        images = images.reshape(-1, *images.shape[-3:])  # video VAEs return [B, T, H, W, C]
        return plain(images.movedim(-1, 1).float().clamp(0, 1))

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2) if self._frames else x

    # --- the model ------------------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        return self.model

    def _ensure_loaded(self, rows: int) -> None:
        if self._loaded:
            return
        import comfy.model_management as mm

        c, h, w = self.latent_shape(self.height, self.width)
        with torch.inference_mode():
            mm.load_models_gpu(
                [self.patcher], memory_required=self.patcher.memory_required([2 * rows, c, h, w])
            )
        check_fully_loaded(self.patcher)
        self._loaded = True

    def _max_rows(self, x: torch.Tensor) -> int:
        """How many rows of a no-grad pass fit in free memory (ComfyUI's estimate, as its sampler)."""
        import comfy.model_management as mm

        if mm.is_device_cpu(x.device):
            return x.shape[0]
        free = mm.get_free_memory(x.device)
        rows = x.shape[0]
        while rows > 1 and self.model.memory_required([rows, *x.shape[1:]]) * 1.5 > free:
            rows = (rows + 1) // 2
        return rows

    def _forward(self, module: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._ensure_loaded(x.shape[0])
        options = dict(self.patcher.model_options.get("transformer_options", {}))
        if torch.is_grad_enabled():
            with trainable_view(self.model.diffusion_model):
                denoised = self._apply(x, sigma, cond, options)
        else:
            step = self._max_rows(x)
            denoised = torch.cat(
                [
                    self._apply(
                        x[i : i + step], sigma[i : i + step], cond_select(cond, slice(i, i + step)), options
                    )
                    for i in range(0, x.shape[0], step)
                ]
            )
        s = sigma.to(denoised.device, denoised.dtype).view(-1, *([1] * (x.ndim - 1)))
        return (x.to(denoised.dtype) - denoised) / s

    def _apply(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, options: dict) -> torch.Tensor:
        """The denoised batch, one apply_model call per group of rows (conditioning.py)."""
        parts = []
        for rows, inputs in self.conditioning.split(cond):
            rows = rows.to(x.device)
            with training_mode():  # rollouts too: the same kernels as the gradient passes (GRPO log-probs)
                out = self.model.apply_model(
                    self._to_model(x[rows]), sigma[rows.to(sigma.device)].to(x.device),
                    transformer_options=options, **inputs,
                )  # fmt: skip
            parts.append((rows, out.squeeze(2) if self._frames else out))
        if len(parts) == 1:
            return parts[0][1]
        denoised = parts[0][1].new_zeros((x.shape[0], *parts[0][1].shape[1:]))
        for rows, out in parts:
            denoised = denoised.index_copy(0, rows.to(denoised.device), out)
        return denoised

    # --- the adapter ----------------------------------------------------------------------------
    @contextmanager
    def reference(self) -> Iterator[None]:
        with self.switch.off():
            yield

    @property
    def default_lora_targets(self) -> tuple[str, ...]:  # type: ignore[override]
        return default_targets(self.model, self._linear_names())

    def _linear_names(self) -> list[str]:
        return [
            n
            for n, m in self.model.diffusion_model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim == 2 and n
        ]

    def add_lora(self, rank: int, alpha: float | None = None, targets=(), init: str = "default") -> None:
        """Attach bypass LoRA adapters to the targeted Linear layers (inside the patcher clone only)."""
        alpha = lora_alpha(rank, alpha)
        targets = tuple(targets or self.default_lora_targets)
        names = match_targets(self._linear_names(), targets)
        if not names:
            raise ValueError(
                f"lora_targets {list(targets)} match no Linear layer of the {type(self.model).__name__} model"
            )
        modules = dict(self.model.diffusion_model.named_modules())
        device = self.patcher.load_device
        self._adapters, patches = {}, []
        for n in names:
            out_features, in_features = modules[n].weight.shape
            adapter = LoraAdapter(in_features, out_features, rank, alpha, device)
            if init == "gaussian_nonzero":
                with torch.no_grad():
                    adapter.up.normal_(0, 0.02)
            self._adapters[f"diffusion_model.{n}"] = adapter
            patches.append(ForwardPatch(modules[n], adapter, self.switch))
        injections = [patcher_injection(patches)]
        if not self.gradient_checkpointing and adds_residuals_in_place(self.model.diffusion_model):
            log.info(
                "NormGuard: %s adds residuals in place; training it with gradient checkpointing",
                type(self.model).__name__,
            )
            self.gradient_checkpointing = True
        if self.gradient_checkpointing:
            injections.append(patcher_injection(checkpoint_patches(self.model.diffusion_model)))
        self.patcher.set_injections("normguard_lora", injections)
        self.lora_rank, self.lora_alpha = rank, alpha
        self._loaded = False

    def named_trainable(self) -> dict[str, nn.Parameter]:
        out = {}
        for name, adapter in self._adapters.items():
            out[f"{name}.lora_down"] = adapter.down
            out[f"{name}.lora_up"] = adapter.up
        return out

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter in `lora_format` (see lora.py)."""
        return export_adapters(self._adapters, self.lora_format, self.model)

    def load_lora_state_dict(self, tensors: dict[str, torch.Tensor], source: str = "the LoRA") -> None:
        """Start the adapter from a LoRA file in either format."""
        import_adapters(self._adapters, tensors, self.model, source)

    def store_base_in_fp8(self) -> None:
        raise ValueError(
            "fp8_base: in ComfyUI the loader decides the weight storage; load the model with UNETLoader's "
            "weight_dtype fp8_e4m3fn (training computes in the model's compute dtype)"
        )

    def offload_frozen_blocks(self) -> None:
        raise ValueError(
            "offload: in ComfyUI the weights' placement is ComfyUI's (model_management); the trainer needs "
            "the model fully loaded (partial loading is refused), so lower its memory with fp8 weights and "
            "smaller batches instead"
        )

    def release(self) -> None:
        """Take the adapters out of the shared module now. ComfyUI ejects them when it loads another
        clone, but once this patcher is garbage collected its loaded-model entry passes to the parent
        MODEL, which would then run with the adapters still in place."""
        self.patcher.eject_model()
        self.patcher.remove_injections("normguard_lora")

    def step_distilled(self) -> bool:
        return step_distilled(self.patcher)

    def lora_metadata(self) -> dict[str, str]:
        return {
            "modelspec.architecture": f"{architecture(self.patcher)}/lora",
            "modelspec.implementation": {"diffusers": "diffusers", "kohya": "sd-scripts"}.get(
                self.lora_format, "comfyui"
            ),
            "normguard.lora_format": self.lora_format,
        }
