"""Backend over a model ComfyUI already loaded: a MODEL (ModelPatcher), a CLIP and a VAE.

This is the only module under trainer/ that touches ComfyUI, and it imports `comfy` lazily, inside
functions, so the library never needs ComfyUI. Design (see also nodes/train.py):

- The MODEL is never modified: training runs on `model.clone()`, which shares the nn.Module (and
  so costs no weight memory). The LoRA is a set of bypass adapters, y = f(x) + s * up(down(x)),
  installed through the clone's ComfyUI injections: ComfyUI puts them into the shared module when
  it loads the clone and takes them out when it loads anything else. Base weights are never
  touched, so fp8 / quantized / offloaded weights work unchanged (compute runs in the dtype the
  model's own layers compute in), and `reference()` is a switch that skips the adapters per call:
  the frozen base velocity, with no re-patching and no second copy.
- ComfyUI loads weights inside torch.inference_mode(), so they are inference tensors, which
  autograd refuses to save for backward. For each gradient-carrying forward, `trainable_view`
  swaps every inference parameter and buffer of the denoiser for an ordinary tensor that aliases
  the same memory (no copy) and restores the originals right after the forward; autograd keeps
  the aliases. Memory cost of training = the adapter, its optimizer state and the activations:
  no second copy of the model (ComfyUI's TrainLoraNode reloads one with force_deepcopy).
- Prompts are encoded with the CLIP into ComfyUI conditioning and turned into the model's own
  inputs by `BaseModel.extra_conds`, exactly as a KSampler does, so any CONST (flow-matching)
  model ComfyUI supports gets the right inputs (SD3/SD3.5: context + pooled `y`; FLUX.1: context,
  pooled `y` and `guidance`).
- v = (x - denoised) / sigma from `BaseModel.apply_model` (CONST: denoised = x - sigma v); the
  core never evaluates at sigma = 0.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Cond, FlowBackend, cond_select

log = logging.getLogger("normguard")

# Default LoRA targets (suffixes of module names inside the denoiser, as peft matches them).
MMDIT_TARGETS = ("attn.qkv", "attn.proj", "attn2.qkv", "attn2.proj")  # SD3 / SD3.5 joint blocks
FLUX_TARGETS = ("img_attn.qkv", "img_attn.proj", "txt_attn.qkv", "txt_attn.proj", "linear1", "linear2")
CROSSATTN_KEYS = ("c_crossattn", "crossattn_controlnet")  # conds whose dim 1 counts text tokens
LORA_FORMATS = ("comfyui", "diffusers")


# --- checks ----------------------------------------------------------------------------------------


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
    dims = getattr(patcher.model.latent_format, "latent_dimensions", 2)
    if dims != 2:
        return f"this MODEL ({kind}) makes {dims}-D latents (video/audio); NormGuard trains image models"
    return None


def check_flow_model(patcher: Any, who: str = "NormGuard") -> None:
    problem = flow_model_problem(patcher)
    if problem:
        raise ValueError(f"{who}: {problem}.")


# --- autograd through inference-mode weights -------------------------------------------------------

_warned_copy = False


def _alias(t: torch.Tensor) -> torch.Tensor:
    """An ordinary tensor over the same memory as inference tensor t (a copy if torch refuses)."""
    global _warned_copy
    try:
        with torch.inference_mode(False):
            return torch.empty(0, dtype=t.dtype, device=t.device).set_(
                t.untyped_storage(), t.storage_offset(), t.size(), t.stride()
            )
    except RuntimeError as e:  # a torch that forbids it: pay a copy per forward instead
        if not _warned_copy:
            warnings.warn(f"NormGuard: copying inference weights for backward ({e})", stacklevel=2)
            _warned_copy = True
        with torch.inference_mode(False):
            return t.clone()


def plain(t: torch.Tensor) -> torch.Tensor:
    """An ordinary copy of a tensor made under inference mode (safe to mix into autograd)."""
    with torch.inference_mode(False):
        return t.detach().clone()


@contextmanager
def trainable_view(module: nn.Module) -> Iterator[None]:
    """Within the block, `module`'s inference parameters/buffers are ordinary aliases of themselves,
    so autograd can save them; the original objects are put back on exit (the module is shared)."""
    swapped = []
    for m in module.modules():
        for store in (m._parameters, m._buffers):
            for name, t in store.items():
                if t is None or not t.is_inference() or t.device.type == "meta":
                    continue
                if type(t.data) is not torch.Tensor:  # quantized subclasses: ComfyUI casts them anyway
                    continue
                alias = _alias(t.data)
                store[name] = (
                    nn.Parameter(alias, requires_grad=False) if isinstance(t, nn.Parameter) else alias
                )
                swapped.append((store, name, t))
    try:
        yield
    finally:
        for store, name, t in reversed(swapped):
            store[name] = t


@contextmanager
def training_mode() -> Iterator[None]:
    """ComfyUI's training flag: models then use kernels that have a backward (e.g. FLUX's RoPE)."""
    import comfy.model_management as mm

    previous, mm.in_training = mm.in_training, True
    try:
        yield
    finally:
        mm.in_training = previous


# --- bypass adapters -------------------------------------------------------------------------------


class Switch:
    """Shared on/off state of a set of bypass patches (off = the base model)."""

    def __init__(self) -> None:
        self.on = True

    @contextmanager
    def off(self) -> Iterator[None]:
        previous, self.on = self.on, False
        try:
            yield
        finally:
            self.on = previous


class ForwardPatch:
    """Adds delta(x) to a module's output while the switch is on, by replacing `module.forward`.

    inject/eject are called by ComfyUI (PatcherInjection) when it loads/unloads the patcher, so the
    shared module only carries the patch while this patcher is the one in use."""

    def __init__(self, module: nn.Module, delta: Callable[[torch.Tensor], torch.Tensor], switch: Switch):
        self.module, self.delta, self.switch = module, delta, switch
        self.original: Callable | None = None
        self.had_instance_forward = False

    def _forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = self.original(x, *args, **kwargs)
        if not self.switch.on:
            return y
        return y + self.delta(x).to(y.dtype)

    def inject(self) -> None:
        if self.original is not None:
            return
        self.had_instance_forward = "forward" in self.module.__dict__
        self.original = self.module.forward
        self.module.forward = self._forward

    def eject(self) -> None:
        if self.original is None:
            return
        if self.module.__dict__.get("forward") == self._forward:
            if self.had_instance_forward:
                self.module.forward = self.original
            else:
                del self.module.forward
        self.original = None


def patcher_injection(patches: Sequence[ForwardPatch]) -> Any:
    """One ComfyUI PatcherInjection that installs/removes all `patches`."""
    from comfy.patcher_extension import PatcherInjection

    def inject(_patcher: Any) -> None:
        for p in patches:
            p.inject()

    def eject(_patcher: Any) -> None:
        for p in patches:
            p.eject()

    return PatcherInjection(inject=inject, eject=eject)


class LoraAdapter(nn.Module):
    """y += (alpha / rank) * up(down(x)): fp32 parameters, computed in x's dtype (mixed precision as
    torch.autocast does it), so autograd keeps the x the base layer saved, not an fp32 copy of it."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, device: torch.device):
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=torch.float32))
        self.up = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))  # peft's default; up = 0: starts as a no-op
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype)) * self.scale


def match_targets(names: Sequence[str], targets: Sequence[str]) -> list[str]:
    """Names equal to a target or ending in '.' + target (peft's rule for target_modules)."""
    return [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]


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
        self.lora_format = lora_format
        self.height, self.width = height, width
        self.switch = Switch()
        self._adapters: dict[str, LoraAdapter] = {}
        self._loaded = False
        self._conds: dict[str, Cond] = {}
        self._constants: dict[str, Any] = {}
        self._tokens: dict[str, int] = {}  # text-token count per cross-attention key
        self.latent_shape(height, width)  # validate early
        if prompts:
            self._encode_all(list(dict.fromkeys([*prompts, ""])))

    # --- conditioning and latents ---------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> Cond:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be a list of strings, got {prompts!r}")
        missing = [p for p in dict.fromkeys(prompts) if p not in self._conds]
        if missing:
            self._encode_all(missing)
        rows = [self._conds[p] for p in prompts]
        return {k: torch.cat([r[k] for r in rows]).to(self.device) for k in rows[0]}

    def _encode_all(self, prompts: list[str]) -> None:
        """CLIP -> ComfyUI conditioning -> the model's own inputs (extra_conds), one row per prompt."""
        import comfy.conds

        fresh: dict[str, Cond] = {}
        for prompt in prompts:
            with torch.inference_mode():
                tokens = self.clip.tokenize(prompt)
                out = self.clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
                cross = out.pop("cond")
                if self.guidance is not None:
                    out["guidance"] = self.guidance
                c, h, w = self.latent_shape(self.height, self.width)
                conds = self.model.extra_conds(
                    cross_attn=cross,
                    noise=torch.zeros(1, c, h, w),
                    device=self.device,
                    width=self.width,
                    height=self.height,
                    prompt_type="positive",
                    **out,
                )
            row: Cond = {}
            for key, cond in conds.items():
                if isinstance(cond, comfy.conds.CONDConstant):
                    if key in self._constants and not comfy.conds.is_equal(self._constants[key], cond.cond):
                        raise ValueError(f"NormGuard: conditioning {key!r} differs between prompts")
                    self._constants[key] = cond.cond
                elif type(cond) in (comfy.conds.CONDRegular, comfy.conds.CONDCrossAttn):
                    row[key] = plain(cond.cond)
                else:
                    raise ValueError(
                        f"NormGuard: the model needs conditioning {key!r} of kind {type(cond).__name__}, "
                        "which the trainer does not support (only text conditioning)"
                    )
            fresh[prompt] = row
        self._loaded = False  # encoding may have moved the denoiser out of the device
        for key in {k for row in fresh.values() for k in row if k in CROSSATTN_KEYS}:
            lengths = {row[key].shape[1] for row in fresh.values()}
            if key in self._tokens:
                lengths.add(self._tokens[key])
            self._tokens[key] = target = math.lcm(*lengths)
            for prompt, row in [*fresh.items(), *self._conds.items()]:
                n = row[key].shape[1]
                if n != target:
                    if prompt in self._conds:  # already handed out at another length
                        raise ValueError(
                            f"NormGuard: prompt {prompt!r} was encoded to {n} text tokens before a longer "
                            f"prompt needed {target}; list every prompt up front"
                        )
                    # repeating the tokens leaves cross-attention unchanged (ComfyUI pads conds so)
                    row[key] = row[key].repeat(1, target // n, *([1] * (row[key].ndim - 2)))
        self._conds.update(fresh)

    def default_size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        factor = (
            self.vae.spacial_compression_decode() if hasattr(self.vae, "spacial_compression_decode") else 8
        )
        multiple = factor * 2  # VAE factor x the 2x2 patch of SD3/FLUX-style transformers
        for label, size in (("height", height), ("width", width)):
            if not isinstance(size, int) or size <= 0 or size % multiple:
                raise ValueError(
                    f"{label}={size!r}: the model needs a positive multiple of {multiple} pixels"
                )
        return (self.model.latent_format.latent_channels, height // factor, width // factor)

    def schedule(self, steps: int, height: int, width: int) -> torch.Tensor:
        """The sigmas a KSampler would use with this MODEL (its model_sampling, incl. any shift patch)."""
        import comfy.samplers

        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps={steps!r}: need a positive integer")
        sampling = self.patcher.get_model_object("model_sampling")
        return comfy.samplers.calculate_sigmas(sampling, self.scheduler, steps).float().cpu()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            images = self.vae.decode(self.model.process_latent_out(latents.float()))
        self._loaded = False
        return plain(images.movedim(-1, 1).float().clamp(0, 1))

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
        with training_mode():  # rollouts too: the same kernels as the gradient passes (GRPO log-probs)
            return self.model.apply_model(
                x, sigma.to(x.device), transformer_options=options, **cond, **self._constants
            )

    # --- the adapter ----------------------------------------------------------------------------
    @contextmanager
    def reference(self) -> Iterator[None]:
        with self.switch.off():
            yield

    @property
    def default_lora_targets(self) -> tuple[str, ...]:  # type: ignore[override]
        names = self._linear_names()
        for targets in (FLUX_TARGETS, MMDIT_TARGETS):
            if match_targets(names, targets):
                return targets
        attention = tuple(n for n in names if "attn" in n or "attention" in n)
        if not attention:
            raise ValueError(
                f"NormGuard: no default LoRA targets for {type(self.model).__name__}; give lora_targets "
                "(module names inside the diffusion model) in the training options"
            )
        return attention

    def _linear_names(self) -> list[str]:
        return [
            n
            for n, m in self.model.diffusion_model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim == 2 and n
        ]

    def add_lora(self, rank: int, alpha: float | None = None, targets=(), init: str = "default") -> None:
        """Attach bypass LoRA adapters to the targeted Linear layers (inside the patcher clone only)."""
        if rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {rank}")
        alpha = float(rank if alpha is None else alpha)
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
        """lora_format "comfyui": ComfyUI's own keys, `diffusion_model.<layer>.lora_down/lora_up.weight`.
        "diffusers" (SD3/SD3.5, FLUX.1): `transformer.<diffusers layer>.lora_A/lora_B.weight`; a fused
        ComfyUI layer (qkv, FLUX's linear1) becomes one LoRA per diffusers projection sharing lora_A,
        each lora_B the matching rows of up (exact). Either way up (B) is pre-multiplied by alpha / rank
        and there is no .alpha key, so ComfyUI and diffusers both apply the trained scale."""
        adapters = {
            name: (
                a.down.detach().float().cpu().contiguous(),
                (a.up.detach().float() * a.scale).cpu().contiguous(),
            )
            for name, a in self._adapters.items()
        }
        if self.lora_format == "comfyui":
            return {
                key: tensor
                for name, (down, up) in adapters.items()
                for key, tensor in ((f"{name}.lora_down.weight", down), (f"{name}.lora_up.weight", up))
            }
        layers = diffusers_layer_names(self.model)
        out = {}
        for name, (down, up) in adapters.items():
            for layer, rows in diffusers_parts(layers, f"{name}.weight", up.shape[0]):
                out[f"transformer.{layer}.lora_A.weight"] = down.clone()
                out[f"transformer.{layer}.lora_B.weight"] = up[rows].contiguous()
        return out

    def load_lora_state_dict(self, tensors: dict[str, torch.Tensor], source: str = "the LoRA") -> None:
        """Start the adapter from a LoRA file in either export format (the inverse of lora_state_dict).
        ComfyUI-format files may carry .alpha keys (e.g. from TrainLoraNode): their scale is honoured."""
        layers = (
            diffusers_layer_names(self.model) if any(k.startswith("transformer.") for k in tensors) else None
        )
        pairs, missing = {}, []
        for name, adapter in self._adapters.items():
            pair = _read_pair(tensors, name, adapter.up.shape[0], layers, source)
            if pair is None:
                missing.append(name)
            else:
                pairs[name] = pair
        if missing:
            raise ValueError(
                f"{source} does not fit this model's adapter: {len(missing)} of {len(self._adapters)} layers are "
                f"missing (e.g. {missing[0]}); was it trained on this model with the same lora_targets?"
            )
        with torch.no_grad():
            for name, (down, up) in pairs.items():
                adapter = self._adapters[name]
                if down.shape != adapter.down.shape or up.shape != adapter.up.shape:
                    raise ValueError(
                        f"{source}: {name} has rank {down.shape[0]}, the adapter {adapter.down.shape[0]} (or the "
                        "layer sizes differ); set lora_rank to the file's rank and use the model it was trained on"
                    )
                adapter.down.copy_(down)
                adapter.up.copy_(up / adapter.scale)

    def store_base_in_fp8(self) -> None:
        raise ValueError(
            "fp8_base: in ComfyUI the loader decides the weight storage; load the model with UNETLoader's "
            "weight_dtype fp8_e4m3fn (training computes in the model's compute dtype)"
        )

    def release(self) -> None:
        """Take the adapters out of the shared module now. ComfyUI ejects them when it loads another
        clone, but once this patcher is garbage collected its loaded-model entry passes to the parent
        MODEL, which would then run with the adapters still in place."""
        self.patcher.eject_model()
        self.patcher.remove_injections("normguard_lora")

    def step_distilled(self) -> bool:
        return architecture(self.patcher) == "flux-1-schnell"

    def lora_metadata(self) -> dict[str, str]:
        return {
            "modelspec.architecture": f"{architecture(self.patcher)}/lora",
            "modelspec.implementation": "diffusers" if self.lora_format == "diffusers" else "comfyui",
            "normguard.lora_format": self.lora_format,
        }


def diffusers_layer_names(model: Any) -> dict[str, list[tuple[str, tuple | None]]]:
    """For every ComfyUI weight key of an SD3/FLUX.1 model, the diffusers layers that hold it:
    [(diffusers layer, (dim, first row, rows) or None for the whole weight)] (ComfyUI's own map)."""
    import comfy.model_base
    import comfy.utils

    converters = {
        comfy.model_base.SD3: comfy.utils.mmdit_to_diffusers,
        comfy.model_base.Flux: comfy.utils.flux_to_diffusers,
    }
    convert = converters.get(type(model))
    if convert is None:
        raise ValueError(
            f"lora_format 'diffusers' exists for SD3/SD3.5 and FLUX.1 models, not {type(model).__name__}; use 'comfyui'"
        )
    names: dict[str, list[tuple[str, tuple | None]]] = {}
    for key, target in convert(model.model_config.unet_config, output_prefix="diffusion_model.").items():
        if not key.endswith(".weight"):
            continue
        if isinstance(target, str):
            names.setdefault(target, []).append((key[: -len(".weight")], None))
        elif len(target) == 2 and target[1] is not None:  # a slice; entries with a function are not exact
            names.setdefault(target[0], []).append((key[: -len(".weight")], target[1]))
    return names


def diffusers_parts(names: dict[str, list], weight_key: str, rows: int) -> list[tuple[str, slice]]:
    """The diffusers layers covering a ComfyUI weight and the output rows each takes: row slices when they
    tile the weight exactly (to_q/to_k/to_v of a fused qkv), else the first whole-weight name."""
    entries = names.get(weight_key, [])
    sliced = sorted(((off[1], off[2], layer) for layer, off in entries if off is not None and off[0] == 0))
    if (
        sliced
        and [s[0] for s in sliced] == [0, *[s[0] + s[1] for s in sliced[:-1]]]
        and sum(s[1] for s in sliced) == rows
    ):
        return [(layer, slice(start, start + size)) for start, size, layer in sliced]
    whole = [layer for layer, off in entries if off is None]
    if whole:
        return [(whole[0], slice(None))]
    raise ValueError(
        f"lora_format 'diffusers': {weight_key} has no diffusers name; use lora_format 'comfyui'"
    )


def _read_pair(
    tensors: dict[str, torch.Tensor], name: str, rows: int, layers: dict | None, source: str
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(down, effective up) of one adapted layer from a LoRA file, or None when the file lacks it."""
    if layers is None:  # ComfyUI keys
        down, up = tensors.get(f"{name}.lora_down.weight"), tensors.get(f"{name}.lora_up.weight")
        if down is None or up is None:
            return None
        alpha = tensors.get(f"{name}.alpha")
        return down.float(), up.float() * (float(alpha) / down.shape[0] if alpha is not None else 1.0)
    keys = [f"transformer.{layer}.lora_" for layer, _ in diffusers_parts(layers, f"{name}.weight", rows)]
    if any(f"{k}A.weight" not in tensors or f"{k}B.weight" not in tensors for k in keys):
        return None
    downs = [tensors[f"{k}A.weight"].float() for k in keys]
    if any(not torch.equal(d, downs[0]) for d in downs[1:]):
        raise ValueError(
            f"{source}: the diffusers layers of {name} have different lora_A, so they are not one LoRA"
        )
    return downs[0], torch.cat([tensors[f"{k}B.weight"].float() for k in keys])


def architecture(patcher: Any) -> str:
    """modelspec.architecture of a ComfyUI model (best effort)."""
    kind = type(patcher.model).__name__
    if kind == "SD3":
        return "stable-diffusion-3"
    if kind.startswith("Flux"):
        guided = getattr(patcher.model.diffusion_model, "params", None)
        return "flux-1-dev" if getattr(guided, "guidance_embed", False) else "flux-1-schnell"
    return f"comfyui-{kind.lower()}"


def checkpoint_patches(diffusion_model: nn.Module) -> list[ForwardPatch]:
    """Gradient checkpointing of every transformer block (children of *blocks ModuleLists)."""
    return [
        _CheckpointPatch(block)
        for name, child in diffusion_model.named_children()
        if isinstance(child, nn.ModuleList) and "block" in name
        for block in child
    ]


def adds_residuals_in_place(diffusion_model: nn.Module) -> bool:
    """FLUX-style blocks do `img += ...` on tensors autograd saved, so they only train checkpointed."""
    names = {n for n, _ in diffusion_model.named_children()}
    return {"double_blocks", "single_blocks"} <= names


class _CheckpointPatch(ForwardPatch):
    """Runs a block under torch.utils.checkpoint: its activations are recomputed in backward, inside
    `trainable_view` (the block's weights are inference tensors). Inputs that carry gradients are
    cloned inside the checkpointed function, so blocks that add residuals in place (FLUX) change
    only the clone and the recomputation starts from the true inputs."""

    def __init__(self, module: nn.Module):
        super().__init__(module, lambda x: x, Switch())

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.original(*args, **kwargs)
        from torch.utils.checkpoint import checkpoint

        def own(v: Any) -> Any:
            return v.clone() if isinstance(v, torch.Tensor) and v.is_floating_point() else v

        def run(*a: Any, **kw: Any) -> Any:
            with trainable_view(self.module), training_mode():
                return self.original(*[own(v) for v in a], **{k: own(v) for k, v in kw.items()})

        return checkpoint(run, *args, use_reentrant=False, **kwargs)


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
