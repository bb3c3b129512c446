"""The model protocol: what the training core needs from any flow-matching model.

A backend wraps one denoiser with a LoRA adapter. Conventions (ComfyUI/diffusers flow models):
sigma in [0, 1], x_sigma = (1 - sigma) x0 + sigma eps, velocity v = eps - x0. Conditioning is a
dict of batch-first tensors (`Cond`) so the core can slice, repeat and concatenate it without
knowing the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

Cond = dict[str, torch.Tensor]


def cond_select(cond: Cond, index: torch.Tensor | slice | Sequence[int]) -> Cond:
    """Rows `index` of every tensor in cond."""
    if not isinstance(index, slice):
        index = torch.as_tensor(index, dtype=torch.long)
    return {k: v[index.to(v.device) if isinstance(index, torch.Tensor) else index] for k, v in cond.items()}


def cond_cat(conds: Sequence[Cond]) -> Cond:
    """Concatenate conditionings along the batch dim (keys must match). Text of different lengths
    (families that keep only each prompt's valid tokens, with a mask) is zero-padded along dim 1:
    padding is masked out, as when the pipeline batches those prompts itself."""
    out = {}
    for k in conds[0]:
        parts = [c[k] for c in conds]
        if parts[0].dim() >= 2 and len({p.shape[1] for p in parts}) > 1:
            length = max(p.shape[1] for p in parts)
            parts = [pad_dim1(p, length) for p in parts]
        out[k] = torch.cat(parts)
    return out


def pad_dim1(t: torch.Tensor, length: int) -> torch.Tensor:
    """t with zeros appended along dim 1 up to `length`."""
    if t.shape[1] == length:
        return t
    return torch.cat([t, t.new_zeros((t.shape[0], length - t.shape[1], *t.shape[2:]))], dim=1)


def cond_to(cond: Cond, device: torch.device | str) -> Cond:
    return {k: v.to(device) for k, v in cond.items()}


class PromptCache:
    """`encode_prompts` with each prompt encoded once: the text encoders are frozen, so a prompt's embeddings
    never change during a run."""

    def __init__(self, encode_prompts: Callable[[list[str]], Cond]):
        self._encode, self._cache = encode_prompts, {}

    def __call__(self, prompts: list[str]) -> Cond:
        missing = sorted({p for p in prompts if p not in self._cache})
        if missing:
            enc = self._encode(missing)
            for i, p in enumerate(missing):
                self._cache[p] = {k: v[i : i + 1] for k, v in enc.items()}
        return cond_cat([self._cache[p] for p in prompts])


# --- input checks every backend makes, with the same messages --------------------------------------


def check_prompts(prompts: Sequence[str]) -> None:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompts must be a list of strings, got {prompts!r}")


def check_image_size(height: int, width: int, multiple: int, model: str = "the model", why: str = "") -> None:
    """Both sides a positive multiple of `multiple` pixels (`why`: where that multiple comes from)."""
    for label, size in (("height", height), ("width", width)):
        if not isinstance(size, int) or size <= 0 or size % multiple:
            raise ValueError(f"{label}={size!r}: {model} needs a positive multiple of {multiple} pixels{why}")


def check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}: need a positive integer")


@contextmanager
def training_attention() -> Iterator[None]:
    """No cuDNN scaled-dot-product attention while gradients are taken: its backward crashed with an
    illegal memory access on FLUX-sized attention (H100, torch 2.11 + CUDA 13, ANCHORS.md). Flash and
    memory-efficient attention remain; no-grad passes (rollouts) keep cuDNN's fast forward. Enter it
    around the backward too: gradient checkpointing re-runs the forward there. No effect on CPU."""
    enabled = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(enabled)


class FlowBackend(ABC):
    """A flow-matching denoiser with one trainable LoRA adapter.

    `velocity` runs the policy (adapter on); inside `reference()` it runs the frozen base model.
    """

    name: str = "flow"
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    # --- conditioning and latents -------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Cond:
        """Encode prompts into batch-first conditioning tensors on self.device."""

    @abstractmethod
    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of one sample's latent for an image of height x width pixels."""

    def default_size(self) -> tuple[int, int]:
        """(height, width) the model was trained at: the default for rollouts."""
        return (512, 512)

    @abstractmethod
    def schedule(self, steps: int, height: int, width: int) -> torch.Tensor:
        """steps + 1 decreasing sigmas from (about) 1 to 0, float32, on CPU."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images [B, 3, H, W] float in [0, 1]."""

    # --- the model -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The denoiser holding the adapter (what a data-parallel wrapper wraps)."""

    @abstractmethod
    def _forward(self, module: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """One denoiser call through `module` (the raw module or its training wrapper) -> v."""

    _runner: nn.Module | None = None

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v(x, sigma, cond) for a batch; sigma is [B]. Gradient passes go through the wrapper and run
        with the attention kernels that are safe to train with (`training_attention`)."""
        if not torch.is_grad_enabled():
            return self._forward(self.module, x, sigma, cond)
        with training_attention():
            return self._forward(self._runner if self._runner is not None else self.module, x, sigma, cond)

    def wrap_for_training(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Route gradient-carrying forwards through wrap(module), e.g. accelerate's DDP/FSDP."""
        self._runner = wrap(self.module)

    def training_wrapper(self) -> nn.Module | None:
        """The module wrap_for_training made (None when unwrapped), e.g. for accelerate's no_sync."""
        return self._runner

    def adopt_sharded_module(self) -> None:
        """FSDP2 sharded `module` in place: its parameters are new objects; route gradient passes through it."""
        raise NotImplementedError(f"the {self.name} backend does not train under FSDP")

    def unwrap_for_training(self) -> None:
        """Drop the training wrapper (and the process group a DDP reducer holds on to)."""
        self._runner = None

    # --- the adapter ---------------------------------------------------------------------------
    @abstractmethod
    def reference(self) -> AbstractContextManager[None]:
        """Context in which velocity() is the frozen reference (adapter disabled)."""

    @contextmanager
    def sampling(self) -> Iterator[None]:
        """Context for no-grad rollouts; backends may merge the adapter here for speed."""
        yield

    @abstractmethod
    def named_trainable(self) -> dict[str, nn.Parameter]:
        """The adapter's parameters by stable name (checkpoints, EMA, optimizer)."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.named_trainable().values())

    @abstractmethod
    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter in the export format (keys and scaling that loaders expect)."""

    default_lora_targets: tuple[str, ...] = ()

    @abstractmethod
    def add_lora(self, rank: int, alpha: float | None = None, targets=(), init: str = "default") -> None:
        """Attach a fresh trainable LoRA adapter (targets: module names; empty = the backend's default)."""

    def store_base_in_fp8(self) -> None:
        """Keep the frozen base weights in float8 (computed in self.dtype): about half the memory."""
        raise NotImplementedError(f"the {self.name} backend cannot store its base weights in fp8")

    def offload_frozen_blocks(self) -> None:
        """Keep the frozen transformer blocks in host memory, streamed in per block (`offload`)."""
        raise ValueError(
            f"offload: the {self.name} backend cannot stream its blocks (the diffusers backend can)"
        )

    def offload_text_encoders(self) -> None:
        """Move text encoders off the accelerator once the prompts are encoded (embeddings are cached)."""
        return None

    @abstractmethod
    def load_lora_state_dict(self, tensors: dict[str, torch.Tensor], source: str = "the LoRA") -> None:
        """Set the adapter from tensors in the export format (continue from a saved LoRA)."""

    def lora_metadata(self) -> dict[str, str]:
        """Facts about the base model for the LoRA file's metadata (modelspec.*)."""
        return {}

    def step_distilled(self) -> bool:
        """Whether the model is distilled to sample in a few steps (FLUX.1-schnell)."""
        return False
