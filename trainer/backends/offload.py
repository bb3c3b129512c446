"""Streaming a transformer's frozen blocks from host memory during training (the `offload` setting).

diffusers' group offloading (diffusers.hooks.apply_group_offloading, block level) does the work: each
transformer block's weights live in host memory and are copied to the device just before the block
runs and dropped right after, so the device holds one block's weights at a time (plus the modules
outside the blocks, which stay loaded while the transformer runs). Gradient checkpointing re-runs a
block through the same hooks in backward, so its weights are copied in again there; the backend turns
off checkpointing's early stop, which would end the recomputation before the hook that sends the
weights back (DiffusersBackend._forward).

Two things diffusers does not do for training, done here:
- the adapter stays on the device. diffusers moves whole blocks (`block.to()`), which would move the
  LoRA parameters inside them, and their gradients, back and forth under the optimizer (and with
  streams restore them from a pinned copy taken at set-up, undoing every update). Each group is
  narrowed to its frozen parameters and buffers before anything moves.
- no streams: copies are synchronous, so a weight that autograd keeps for backward is never a buffer
  that the next copy reuses.
"""

from __future__ import annotations

import torch
from torch import nn


def offload_frozen_blocks(module: nn.Module, device: torch.device, host: torch.device | str = "cpu") -> list:
    """Stream `module`'s frozen weights block by block between `host` and `device`; the trainable
    parameters stay on `device`. Returns diffusers' module groups (one per block, one for the rest)."""
    from diffusers.hooks import apply_group_offloading
    from diffusers.hooks.group_offloading import GroupOffloadingHook

    # offload_device = the device at first, so that diffusers' initial block.to() moves nothing
    apply_group_offloading(
        module, onload_device=device, offload_device=device, offload_type="block_level",
        num_blocks_per_group=1, use_stream=False,
    )  # fmt: skip
    groups = {}
    for m in module.modules():
        registry = getattr(m, "_diffusers_hook", None)
        hook = registry.get_hook("group_offloading") if registry is not None else None
        if isinstance(hook, GroupOffloadingHook):
            groups[id(hook.group)] = hook.group
    for group in groups.values():
        params = [p for m in group.modules for p in m.parameters()] + list(group.parameters)
        buffers = [b for m in group.modules for b in m.buffers()] + list(group.buffers)
        group.parameters = list(dict.fromkeys(p for p in params if not p.requires_grad))
        group.buffers = list(dict.fromkeys(buffers))
        group.modules = []  # the hooks stay on the modules; only what moves is narrowed
        group.offload_device = torch.device(host)
        group.offload_()
    return list(groups.values())
