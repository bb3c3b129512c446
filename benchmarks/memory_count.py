"""Counting the accelerator memory of a training iteration on a CPU, with fake tensors (no data).

Shared by memory_estimate.py (diffusers models) and memory_comfy.py (ComfyUI's models): a dispatch
mode that counts the bytes of every tensor storage alive, fake parameters for modules built on the
meta device, and one NFT iteration of a FlowBackend, phase by phase.

Fake tensors stand for the accelerator's memory; weights a setting keeps in host memory are fake
tensors on the meta device, which LiveBytes(device="cpu") leaves out: moving them in and out of
"the accelerator" (cpu) is then a real `.to()` that the count sees.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from normguard.trainer.backends.base import FlowBackend
from normguard.trainer.config import TrainConfig
from normguard.trainer.methods import NFT
from normguard.trainer.old_policy import OldPolicy
from normguard.trainer.penalty import normguard_penalty

GIB = 2**30
ATTENTION = [SDPBackend.FLASH_ATTENTION]  # what diffusers gets on an H100: no attention matrix is kept


class LiveBytes(TorchDispatchMode):
    """Bytes of all tensor storages alive (counted once per storage, views included) and their peak.

    A storage is counted when an op first returns it (or when `add` is given it) and uncounted when
    it is freed: torch keeps a storage's Python object alive as long as the storage, so a weakref
    finalizer fires exactly when the memory would be released, also for tensors autograd saved.
    device: count only tensors on this device type (None: all)."""

    def __init__(self, device: str | None = None) -> None:
        super().__init__()
        self.now = self.peak = 0
        self.device = device
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def add(self, tensors: Iterable[torch.Tensor]) -> None:
        for t in tensors:
            self._count(t)

    def reset_peak(self) -> None:
        self.peak = self.now

    def _count(self, t: torch.Tensor) -> None:
        if self.device is not None and t.device.type != self.device:
            return
        storage = t.untyped_storage()
        if storage in self._seen:
            return
        n = storage.nbytes()
        self._seen[storage] = n
        self.now += n
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._free, n)

    def _free(self, n: int) -> None:
        self.now -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._count(t)
        return out


def make_fake(modules: Iterable[nn.Module], mode: FakeTensorMode) -> None:
    """Give every parameter and buffer of `modules` (built on the meta device) a fake CPU tensor of its
    shape and dtype. New Parameter objects: torch refuses to swap a fake tensor into an existing one."""
    with mode:
        for module in modules:
            for m in module.modules():
                for k, p in m._parameters.items():
                    if p is not None:
                        m._parameters[k] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
                for k, b in m._buffers.items():
                    if b is not None:
                        m._buffers[k] = torch.empty(b.shape, dtype=b.dtype)


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (on any device, meta included)."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def trainable(backend: FlowBackend) -> dict[str, nn.Parameter]:
    """The adapter's parameters as they are now: peft's in the module (make_fake replaced the ones
    add_lora recorded), or the backend's own (ComfyUI's bypass adapters live outside the model)."""
    found = {n: p for n, p in backend.module.named_parameters() if p.requires_grad}
    return found or dict(backend.named_trainable())


def inputs(backend: FlowBackend, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Latents (in the backend's latent dtype), sigmas and text conditioning of the real shapes."""
    x = torch.randn(batch, *backend.latent_shape(size, size), dtype=backend.dtype)
    cond = backend.encode_prompts([f"prompt {i}" for i in range(batch)])
    return x, torch.full((batch,), 0.5), cond


def nft_iteration(
    backend: FlowBackend,
    resident: Iterable[nn.Module],
    group: int,
    micro: int,
    decode: int,
    size: int,
    counter: LiveBytes,
) -> dict:
    """Peak of each phase of one NFT iteration (with NormGuard), and the static memory under them.

    resident: the modules whose weights stay on the accelerator throughout (the model, the VAE)."""
    named = trainable(backend)
    counter.add(t for m in resident for t in [*m.parameters(), *m.buffers()])
    counter.add(named.values())
    out = {}
    with counter, sdpa_kernel(ATTENTION):
        optimizer_state = [torch.zeros_like(p) for p in named.values() for _ in range(2)]  # AdamW: m and v
        old = OldPolicy(named, rate=0.0, ceiling=0.0)  # its copy of the adapter; gradients are set to None
        out["static"] = counter.now / GIB
        x, sigma, cond = inputs(backend, group, size)
        counter.reset_peak()
        with torch.no_grad(), old.swapped_in(), backend.sampling():  # NFT samples with the old policy
            backend.velocity(x, sigma, cond)
        out["rollout"] = counter.peak / GIB
        counter.reset_peak()
        with torch.no_grad():
            backend.decode(x[:decode])
        out["decode"] = counter.peak / GIB
        counter.reset_peak()
        b = {"x_t": x[:micro], "x0": x[:micro], "sigma": sigma[:micro], "adv": torch.zeros(micro)}
        b["cond"] = {k: v[:micro] for k, v in cond.items()}
        with torch.no_grad():
            with old.swapped_in():
                v_old = backend.velocity(b["x_t"], b["sigma"], b["cond"])
            with backend.reference():
                v_ref = backend.velocity(b["x_t"], b["sigma"], b["cond"])
        v = backend.velocity(b["x_t"], b["sigma"], b["cond"])
        loss, _ = NFT(TrainConfig()).loss(b, v, v_ref, v_old)
        (loss + normguard_penalty(v, v_ref)).backward()
        out["train"] = counter.peak / GIB
        del optimizer_state, old
    return out
