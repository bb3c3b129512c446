"""Callbacks: how the loop reports progress, metrics and samples without knowing who listens.

The CLI attaches a tqdm bar and the metrics writers; ComfyUI attaches its progress bar, previews and
cancel check. A callback may raise to stop training (the loop saves the last good LoRA first).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch


class Callback:
    def on_train_start(self, info: dict[str, Any]) -> None:
        """info: iterations, start_iteration, run_dir, method, ..."""

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


class MetricsWriter(Callback):
    """metrics.jsonl (appended, one line per iteration) and TensorBoard scalars."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def on_iteration_end(self, iteration: int, metrics: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, iteration)
                elif isinstance(v, list) and k == "rho_per_step":
                    for step, r in enumerate(v):
                        self.tb.add_scalar(f"rho_step/{step:02d}", r, iteration)
            self.tb.flush()

    def on_evaluation(self, evaluation: Any) -> None:
        if evaluation.iteration == 0:  # the base model's evaluation has no training metrics to join
            self.on_iteration_end(0, evaluation.metrics)
        if self.tb is not None:
            self.tb.add_image("eval/grid", evaluation.grid, evaluation.iteration)

    def on_train_end(self, result: Any) -> None:
        if self.tb is not None:
            self.tb.close()


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
