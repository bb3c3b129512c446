"""Callbacks: how the loop reports progress, metrics and samples without knowing who listens.

The CLI attaches a tqdm bar and the metrics writers; ComfyUI attaches its progress bar, previews and
cancel check. A callback may raise to stop training (the loop saves the last good LoRA first).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .files import json_safe


class Callback:
    def on_train_start(self, info: dict[str, Any]) -> None:
        """info: iterations, start_iteration, run_dir, method, warnings (set-up problems), ..."""

    def on_sample_step(self, step: int, total: int) -> None:
        """One sampler step of the current rollout is done."""

    def on_train_step(self, step: int, total: int) -> None:
        """One micro-batch of the current optimizer step is done (forward + backward)."""

    def on_rollout(
        self, iteration: int, images: torch.Tensor, prompts: list[str], rewards: torch.Tensor
    ) -> None:
        """This iteration's rollout images [B, 3, H, W] in [0, 1] (CPU) and their rewards."""

    def on_iteration_end(self, iteration: int, metrics: dict[str, Any]) -> None:
        """Called with the iteration's metrics (1-based iteration count)."""

    def on_evaluation(self, evaluation: Any) -> None:
        """A held-out evaluation (trainer.evaluation.Evaluation: iteration, metrics, grid, warnings)."""

    def on_checkpoint(self, iteration: int, lora_path: Path) -> None:
        """A checkpoint and the LoRA file were written."""

    def on_train_end(self, result: Any) -> None:
        """Training finished, stopped or was interrupted."""


class CallbackList:
    """Fans one event out to every callback: `callbacks("on_iteration_end", it, metrics)`."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)

    def __call__(self, event: str, *args: Any) -> None:
        for c in self.callbacks:
            getattr(c, event)(*args)


def read_metrics_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl; a line cut short by a kill (or anything not a JSON object) is
    skipped, and null stands for a non-finite value."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("iteration"), int):
            rows.append(row)
    return rows


def trim_metrics(path: Path, keep_through: int | None) -> None:
    """Cut metrics.jsonl back to the rows up to iteration `keep_through` (None: no row), so that a
    resumed run does not log the iterations after its checkpoint twice. The kept prefix is never
    rewritten: the file is truncated after it (which also drops a torn last line)."""
    if not path.is_file():
        return
    data, keep, last = path.read_bytes(), 0, -1
    if keep_through is not None:
        for line in data.splitlines(keepends=True):
            try:
                it = json.loads(line)["iteration"] if line.endswith(b"\n") else None
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                it = None
            if not isinstance(it, int) or it > keep_through or it < last:
                break
            keep, last = keep + len(line), it
    if keep < len(data):
        os.truncate(path, keep)


class MetricsWriter(Callback):
    """metrics.jsonl (appended, one line per iteration, non-finite values as null; experiment trackers:
    trackers.py). `resume_at`: the checkpoint's iteration when resuming (None for a fresh start): rows
    after it are dropped, so no iteration shows twice."""

    def __init__(self, run_dir: Path, resume_at: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        trim_metrics(self.path, resume_at)

    def on_iteration_end(self, iteration: int, metrics: dict[str, Any]) -> None:
        line = json.dumps(json_safe({"iteration": iteration, **metrics}), allow_nan=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)

    def on_evaluation(self, evaluation: Any) -> None:
        if evaluation.iteration == 0:  # the base model's evaluation has no training metrics to join
            self.on_iteration_end(0, evaluation.metrics)


class TqdmProgress(Callback):
    """One bar over iterations, with the latest reward, rho and penalty in its postfix."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_start(self, info: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=info["iterations"],
            initial=info["start_iteration"],
            desc=f"{info['method']} RL",
            unit="it",
            dynamic_ncols=True,
        )

    def on_iteration_end(self, iteration: int, metrics: dict[str, Any]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(
            reward=f"{metrics['reward_mean']:.4g}",
            rho=f"{metrics.get('train_rho', 1.0):.3f}",
            penalty=f"{metrics.get('penalty', 0.0):.3g}",
        )

    def on_evaluation(self, evaluation: Any) -> None:
        for w in evaluation.warnings:
            self.bar.write(f"warning: {w}")

    def on_train_end(self, result: Any) -> None:
        if self.bar is not None:
            self.bar.close()
