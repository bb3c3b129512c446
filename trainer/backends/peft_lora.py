"""LoRA through peft on any torch denoiser: add, switch off for the reference, export."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..distributed import full_tensor
from .adapter import check_fits, check_shape, export_weight, lora_alpha, lora_delta
from .base import FlowBackend

ADAPTER = "default"


class PeftLoraBackend(FlowBackend):
    """A FlowBackend whose adapter is a peft LoRA injected into `self.module`.

    The reference is the same module with the adapter disabled, so it costs no extra memory.
    """

    lora_prefix: str = ""  # export key prefix, e.g. "transformer." for diffusers pipelines

    def __init__(self) -> None:
        self._trainable: dict[str, nn.Parameter] = {}
        self.lora_rank, self.lora_alpha = 0, 0.0

    def add_lora(
        self, rank: int, alpha: float | None = None, targets: Sequence[str] | str = (), init: str = "default"
    ) -> None:
        """Inject a rank-`rank` LoRA into the modules named by `targets` (peft target_modules).

        `init="default"` starts with B = 0 (the adapter is a no-op, so policy == reference);
        "gaussian_nonzero" gives a random non-zero adapter (tests).
        """
        alpha = lora_alpha(rank, alpha)
        targets = targets or self.default_lora_targets
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            target_modules=list(targets) if not isinstance(targets, str) else targets,
            init_lora_weights=True,
            lora_dropout=0.0,
        )
        module = self.module
        module.requires_grad_(False)
        try:
            inject_adapter_in_model(config, module, adapter_name=ADAPTER)
        except ValueError as e:
            raise ValueError(f"lora_targets {targets!r} match no layer of the {self.name} model: {e}") from e
        for layer in self._lora_layers():
            if _plain(layer):
                layer.forward = _low_precision_forward(layer)
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.data = p.data.float()  # fp32 adapter over a bf16/fp16 base: stable AdamW updates
                p.requires_grad_(True)
        self._collect_trainable()
        if init == "gaussian_nonzero":
            with torch.no_grad():
                for name, p in self._trainable.items():
                    if "lora_B" in name:
                        p.normal_(0, 0.02)
        self.lora_rank, self.lora_alpha = rank, alpha

    def _collect_trainable(self) -> None:
        self._trainable = {
            name.replace(f".{ADAPTER}.", "."): p
            for name, p in self.module.named_parameters()
            if "lora_" in name
        }

    def adopt_sharded_module(self) -> None:
        self._collect_trainable()
        self._runner = self.module

    def _lora_layers(self) -> list[BaseTunerLayer]:
        return [m for m in self.module.modules() if isinstance(m, BaseTunerLayer)]

    @contextmanager
    def reference(self) -> Iterator[None]:
        layers = self._lora_layers()
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    @contextmanager
    def sampling(self) -> Iterator[None]:
        """Fuse each LoRA into its layer's weight on the fly: W + s B A is formed per call, so a
        rollout step runs one matmul per layer instead of three, at base-model speed, and the base
        weights are never modified (no merge/unmerge drift, nothing to restore)."""
        layers = {m: m.__dict__.get("forward") for m in self._lora_layers() if _fusable(m)}
        for layer in layers:
            layer.forward = _fused_forward(layer)  # the instance attribute shadows LoraLinear.forward
        try:
            yield
        finally:
            for layer, forward in layers.items():  # back to the training forward, or to the class's
                if forward is None:
                    del layer.forward
                else:
                    layer.forward = forward

    def named_trainable(self) -> dict[str, nn.Parameter]:
        return self._trainable

    def load_lora_state_dict(self, tensors: dict[str, torch.Tensor], source: str = "the LoRA") -> None:
        """Start the adapter from an exported LoRA (the inverse of lora_state_dict)."""
        scale = self.lora_alpha / self.lora_rank
        missing = [self.lora_prefix + k for k in self._trainable if self.lora_prefix + k not in tensors]
        check_fits(source, missing, len(self._trainable), "keys")
        with torch.no_grad():
            for name, p in self._trainable.items():
                t = tensors[self.lora_prefix + name]
                check_shape(source, name, t.shape, p.shape, self.lora_rank)
                p.copy_(t.float() / scale if ".lora_B." in name else t.float())

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """prefix + module path + .lora_A/.lora_B.weight, lora_B times alpha / r (backends/adapter.py)."""
        scale = self.lora_alpha / self.lora_rank
        return {
            self.lora_prefix + name: export_weight(full_tensor(p), scale if ".lora_B." in name else 1.0)
            for name, p in self._trainable.items()
        }


def _plain(layer: nn.Module) -> bool:
    """A plain LoRA (no DoRA or other variant, no dropout) on a Linear."""
    return (
        isinstance(layer, LoraLinear)
        and ADAPTER in layer.lora_A
        and not layer.lora_variant
        and isinstance(layer.lora_dropout[ADAPTER], nn.Identity)
    )


def _low_precision_forward(layer: LoraLinear):
    """base(x) + s B A x computed in the layer's dtype, where peft casts x to fp32 instead and so makes
    autograd keep an fp32 copy of every adapted layer's input (see backends/adapter.py; the memory
    saved is in docs/benchmarks.md, section 4). With an fp32 model it is peft's math."""

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = layer.base_layer(x, *args, **kwargs)
        if layer.disable_adapters or layer.merged:
            return y
        a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
        return y + lora_delta(x, a, b, layer.scaling[ADAPTER], y.dtype)

    return forward


def _fusable(layer: nn.Module) -> bool:
    """Plain LoRA on a plain Linear whose weight is used as stored (no casting hooks, e.g. fp8 storage)."""
    if not _plain(layer):
        return False
    base = layer.base_layer
    return (
        type(base) is nn.Linear
        and base.weight.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and not base._forward_pre_hooks
        and not base._forward_hooks
        and not hasattr(base, "_diffusers_hook")
    )


def _fused_forward(layer: LoraLinear):
    base, scale = layer.base_layer, layer.scaling[ADAPTER]

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if layer.disable_adapters:
            return base(x)
        # looked up per call: FSDP2 swaps in the gathered parameters only for the duration of a forward
        a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
        w = torch.addmm(base.weight, b.to(base.weight.dtype), a.to(base.weight.dtype), alpha=scale)
        return F.linear(x, w, base.bias)

    return forward
