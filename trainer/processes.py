"""The processes of a run (accelerate: one, or several data-parallel ones): which groups and device
each takes, decisions the main process makes for all, and a clean teardown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from .backends import FlowBackend
from .checkpoint import RunDir
from .config import TrainConfig
from .distributed import uses_fsdp


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    return Accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available())


def process_share(cfg: TrainConfig, acc: Accelerator) -> tuple[range, torch.device]:
    """This process's groups of each iteration (every process samples whole groups) and its device;
    refuses a process count or an evaluation setting the processes cannot share."""
    world, rank = acc.num_processes, acc.process_index
    if cfg.groups_per_iteration % world:
        raise ValueError(
            f"groups_per_iteration ({cfg.groups_per_iteration}) must be a multiple of the number "
            f"of processes ({world}): every process samples whole groups"
        )
    if uses_fsdp(acc) and cfg.eval_every:
        raise ValueError(
            "eval_every must be 0 under FSDP: evaluation runs on the main process only, and a sharded "
            "model needs every process for each forward; evaluate the saved LoRA afterwards"
        )
    per = cfg.groups_per_iteration // world
    device = acc.device if (cfg.device == "auto" or world > 1) else torch.device(cfg.device)
    return range(rank * per, (rank + 1) * per), device


def shared_run_dir(cfg: TrainConfig, acc: Accelerator, new_run: bool) -> RunDir:
    """The run folder: decided (and created) by the main process, shared with the others."""
    root = [str(RunDir.open(cfg.out, cfg, new_run=new_run).root) if acc.is_main_process else None]
    broadcast_object_list(root)
    return RunDir(Path(root[0]))


def agree(acc: Accelerator, value: Any) -> Any:
    """The main process's `value`, on every process (e.g. a stop decision, so that all stop together)."""
    box = [value]
    if acc.num_processes > 1:
        broadcast_object_list(box)
    return box[0]


def close_process_group(acc: Accelerator, backend: FlowBackend, wait: bool) -> None:
    """Ranks finish together and the process group is torn down before the interpreter exits (a gloo
    group left to interpreter teardown can abort the process). The DDP wrapper goes first: its reducer
    keeps the gloo group alive past destroy_process_group, and a gloo group freed during interpreter
    teardown aborts ("terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if wait:
            acc.wait_for_everyone()
        backend.unwrap_for_training()
        acc.free_memory()  # also collects garbage
        torch.distributed.destroy_process_group()
