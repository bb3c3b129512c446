"""What a run carries from one iteration to the next (its counters and checkpoints), what it reports
at its end, and its seeded random streams."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import Checkpoint
from .distributed import full_tensor
from .old_policy import OldPolicy


@dataclass
class TrainState:
    """The counters a checkpoint's state.json holds (with the drift monitor's state once an evaluation
    ran); the weights and the optimizer state sit beside it as tensors."""

    iteration: int = 0  # completed iterations
    optimizer_steps: int = 0  # iterations whose update was applied (non-finite ones are skipped)
    nonfinite_streak: int = 0
    nonfinite_total: int = 0
    drift: dict[str, Any] | None = None

    def count_step(self, applied: bool) -> None:
        """An optimizer step was applied, or skipped as non-finite."""
        if applied:
            self.optimizer_steps += 1
            self.nonfinite_streak = 0
        else:
            self.nonfinite_streak += 1
            self.nonfinite_total += 1

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "drift" or v is not None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainState:
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


@dataclass
class TrainResult:
    run_dir: Path
    lora_path: Path | None
    iterations: int  # completed iterations
    status: str  # "finished", "interrupted", "stopped: <why>" or "failed: <why>"
    metrics: dict[str, Any] = field(default_factory=dict)  # the last iteration's


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of integers (independent streams per tuple)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(parts)).generate_state(1)[0]))


def checkpoint_tensors(
    named: dict[str, torch.nn.Parameter], old: OldPolicy | None
) -> dict[str, dict[str, torch.Tensor]]:
    """The adapter and the old policy (NFT, AWM's EMA) as whole tensors (gathered under FSDP)."""
    tensors = {"adapter": {k: full_tensor(p.detach()) for k, p in named.items()}}
    if old is not None:
        tensors["old_policy"] = {k: full_tensor(v) for k, v in old.shadow.items()}
    return tensors


def load_weights(ckpt: Checkpoint, named: dict[str, torch.nn.Parameter], old: OldPolicy | None) -> TrainState:
    """Copy a checkpoint's adapter and old policy into the (unwrapped) model; its counters."""
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(ckpt.tensors["adapter"][k])
        if old is not None:
            for k, v in ckpt.tensors["old_policy"].items():
                old.shadow[k].copy_(v)
    return TrainState.from_json(ckpt.state)


def resume_message(run_dir: Path, ckpt: Checkpoint) -> str:
    msg = f"resuming {run_dir} from iteration {ckpt.state['iteration']} (checkpoint {ckpt.path})"
    if ckpt.skipped:
        msg += "; newer checkpoints did not read cleanly: " + "; ".join(ckpt.skipped)
    return msg
