"""Data-parallel training through accelerate: DDP, or FSDP2 sharding the denoiser in place, and turning its
sharded tensors into whole ones for LoRA files and checkpoints (and back), so a checkpoint does not depend
on the number of processes.

Every function that gathers or scatters is a collective: all processes call it, in the same order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

if TYPE_CHECKING:
    from .backends import FlowBackend
    from .old_policy import OldPolicy


def uses_fsdp(acc: Accelerator) -> bool:
    """True when accelerate was launched with FSDP (version 2); FSDP1 is refused with what to change."""
    if acc.distributed_type != DistributedType.FSDP:
        return False
    if not acc.is_fsdp2:
        raise ValueError(
            "accelerate is configured for FSDP version 1; NormGuard trains under FSDP2 only (it shards the "
            "frozen base model and keeps the LoRA trainable in place): set `fsdp_version: 2` in the "
            "accelerate config, or pass `--fsdp_version 2` to accelerate launch"
        )
    return True


def prepare(
    acc: Accelerator,
    backend: FlowBackend,
    optimizer: torch.optim.Optimizer,
    old: OldPolicy | None,
    saved_optimizer: dict[str, Any] | None,
) -> torch.optim.Optimizer:
    """The adapter and its optimizer made ready for this launch: as they are on one process, under DDP
    across several, or with the denoiser sharded by FSDP2. Sharding makes the parameters new objects, so the
    old policy's copy is cut like them and `saved_optimizer` (a whole state from a checkpoint; without FSDP
    it is loaded before this) is set on the sharded optimizer. Take the adapter's parameters from the backend
    again afterwards."""
    if not uses_fsdp(acc):
        if acc.num_processes > 1:
            backend.wrap_for_training(acc.prepare_model)
        return acc.prepare_optimizer(optimizer)
    optimizer = shard(acc, backend.module, optimizer)
    backend.adopt_sharded_module()
    if old is not None:
        old.named = backend.named_trainable()
        old.shadow = {k: shard_like(old.shadow[k], p) for k, p in old.named.items()}
    if saved_optimizer is not None:
        load_optimizer_state(backend.module, optimizer, saved_optimizer)
    return optimizer


def shard(acc: Accelerator, module: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """fully_shard `module` in place with accelerate's plugin settings; the returned optimizer holds the
    sharded parameters (the module's parameters are new objects afterwards)."""
    _, prepared = acc.prepare(module, optimizer)
    return prepared


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (an FSDP2 shard) as the whole tensor, gathered from every process; others as they are."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def shard_like(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A whole tensor cut the way `like` (a DTensor parameter) is; every process holds the same `t`, so
    each keeps its own piece without communication."""
    if not hasattr(like, "device_mesh"):
        return t
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(
        t.to(like.device, like.dtype), like.device_mesh, like.placements, src_data_rank=None
    )


def _options(**kw: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The whole optimizer state keyed by parameter name, on the main process (empty on the others)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, _inner(optimizer), options=_options(cpu_offload=True))


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Set the sharded optimizer state from a whole one (every process passes the same `state`)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(module, _inner(optimizer), state, options=_options())


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
