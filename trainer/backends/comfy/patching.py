"""Patching a ComfyUI model without modifying it: the public toolkit of the trainer and the probe.

- `trainable_view`: autograd through weights ComfyUI loaded under torch.inference_mode(). Those
  weights are inference tensors, which autograd refuses to save for backward; within the block each
  inference parameter/buffer is swapped for an ordinary tensor aliasing the same memory (no copy),
  and the originals are put back on exit (the module is shared with every clone of the MODEL).
- `ForwardPatch` + `Switch`: y = f(x) + delta(x) on one module, installed through a patcher's
  injections (`patcher_injection`), so the shared module carries the patch only while that patcher is
  the one ComfyUI has loaded; a Switch turns a whole set of patches off per call (the base model).
- `checkpoint_patches`: gradient checkpointing of every transformer block, by the same mechanism.

`comfy` is imported inside functions only: importing this module never needs ComfyUI.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "ForwardPatch",
    "Switch",
    "checkpoint_patches",
    "patcher_injection",
    "plain",
    "trainable_view",
    "training_mode",
]

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
def assigned(obj: Any, attr: str, value: Any) -> Iterator[None]:
    """obj.attr = value within the block, the previous value restored on exit."""
    previous = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, previous)


def training_mode() -> AbstractContextManager[None]:
    """ComfyUI's training flag: models then use kernels that have a backward (e.g. FLUX's RoPE)."""
    import comfy.model_management as mm

    return assigned(mm, "in_training", True)


class Switch:
    """Shared on/off state of a set of bypass patches (off = the base model)."""

    def __init__(self) -> None:
        self.on = True

    def off(self) -> AbstractContextManager[None]:
        return assigned(self, "on", False)


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


BLOCK_LISTS = (
    "block",
    "layers",
    "refiner",
)  # *blocks (SD3, FLUX, Qwen), layers (Z-Image, AuraFlow), *refiner


def checkpoint_patches(diffusion_model: nn.Module) -> list[ForwardPatch]:
    """Gradient checkpointing of every transformer block (children of the model's block ModuleLists)."""
    return [
        _CheckpointPatch(block)
        for name, child in diffusion_model.named_children()
        if isinstance(child, nn.ModuleList) and any(k in name for k in BLOCK_LISTS)
        for block in child
    ]


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
