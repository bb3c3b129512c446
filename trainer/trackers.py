"""Experiment trackers through accelerate's tracker classes (TensorBoard, Weights & Biases, MLflow,
Trackio, ...; `log_with` in the config): the run's config once, every iteration's scalars, and each
evaluation's grid as an image (an artifact file for MLflow).

Each tracker keeps its files in the run folder where it can: TensorBoard in tensorboard/, W&B in
wandb/ (offline runs too: WANDB_MODE=offline), MLflow in mlflow.db with its artifacts in mlruns/
(unless MLFLOW_TRACKING_URI names another store). Trackio writes to its own local database
(TRACKIO_DIR, default ~/.cache/huggingface/trackio), where `trackio show` finds it. A resumed run
continues the same W&B, MLflow and Trackio run, and TensorBoard drops the events a crashed run wrote
after its last checkpoint (purge_step), so no curve is drawn twice. Nothing here reaches the network
unless asked: W&B's mode, a Trackio Space and an MLflow server are the user's settings, and MLflow's
usage telemetry is off unless MLFLOW_DISABLE_TELEMETRY says otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .callbacks import Callback

log = logging.getLogger("normguard")
PROJECT = "normguard"
# the trackers accelerate knows, and the module each needs
TRACKER_MODULES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "trackio": ("trackio",),
    "aim": ("aim",),
    "comet_ml": ("comet_ml",),
    "clearml": ("clearml",),
    "dvclive": ("dvclive",),
}


def installed_trackers() -> list[str]:
    return [n for n, mods in TRACKER_MODULES.items() if any(importlib.util.find_spec(m) for m in mods)]


def resolve_trackers(names: list[str]) -> list[str]:
    """`log_with` as tracker names: "all" is every installed one, "none" (or nothing) none. An unknown or
    uninstalled name is an error naming the key and what to install."""
    names = [n.strip().lower() for n in names if n.strip()]
    if not names or names == ["none"]:
        return []
    if names == ["all"]:
        return installed_trackers()
    unknown = sorted(set(names) - set(TRACKER_MODULES))
    if unknown:
        raise ValueError(
            f"log_with: unknown tracker {unknown}; known: all, none, {', '.join(TRACKER_MODULES)}"
        )
    missing = [n for n in names if n not in installed_trackers()]
    if missing:
        raise ValueError(
            f"log_with: {', '.join(missing)} is not installed (pip install {' '.join(missing)}); "
            f"installed: {', '.join(installed_trackers()) or 'none'}"
        )
    return list(dict.fromkeys(names))


def tracker_problem(names: list[str]) -> str:
    """Why `log_with` cannot be used ('' when it can)."""
    try:
        resolve_trackers(names)
    except ValueError as e:
        return str(e)
    return ""


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Finite numbers, and rho per sampler step as rho_step/NN."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
        elif k == "rho_per_step" and isinstance(v, list):
            out |= {
                f"rho_step/{i:02d}": float(r) for i, r in enumerate(v) if r is not None and math.isfinite(r)
            }
    return out


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """Config values trackers accept as hyperparameters (bool, int, float, str); lists and mappings as text."""
    return {
        k: v if isinstance(v, (bool, int, float, str)) else ("" if v is None else str(v))
        for k, v in config.items()
    }


def wandb_run_id(run_dir: Path) -> str:
    """One W&B run per run folder, so a resume continues it."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def grid_hwc(grid: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> uint8 [H, W, 3]."""
    return (grid.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def use_mlflow_store(run_dir: Path) -> None:
    """Point MLflow at mlflow.db in the run folder (its default is ./mlflow.db in whatever folder the
    process started in), unless MLFLOW_TRACKING_URI names a store; and keep its telemetry off."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(f"sqlite:///{(Path(run_dir).resolve() / 'mlflow.db').as_posix()}")


def mlflow_run_id(run_dir: Path) -> str | None:
    """The MLflow run this run folder logged to before (tagged with the folder), to continue it."""
    import mlflow

    folder = str(Path(run_dir).resolve())
    runs = mlflow.search_runs(
        experiment_names=[PROJECT], order_by=["attributes.start_time DESC"], output_format="list"
    )  # compared here rather than in a filter string, which a quote in the path would break
    return next((r.info.run_id for r in runs if r.data.tags.get("normguard.run_dir") == folder), None)


def mlflow_unchanged_params(run_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """MLflow refuses to change a logged param, so a resumed run keeps its first values as params and
    records the changed ones (a raised `iterations`, say) as tags `changed.<key>`."""
    import mlflow

    logged = mlflow.get_run(run_id).data.params
    changed = {k: str(v) for k, v in values.items() if k in logged and logged[k] != str(v)}
    if changed:
        mlflow.set_tags({f"changed.{k}": v for k, v in changed.items()})
    return {k: v for k, v in values.items() if k not in changed}


class Trackers(Callback):
    """Logs to accelerate trackers (the trainer attaches it on the main process only)."""

    def __init__(self, names: list[str], run_dir: Path, config: dict[str, Any], resume_at: int | None = None):
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        self.run_dir = Path(run_dir)
        self.trackers = []
        for name in names:
            if name == "mlflow":
                use_mlflow_store(self.run_dir)
            args, kwargs = self._init(name, resume_at)
            tracker = LOGGER_TYPE_TO_CLASS[name](*args, **kwargs)
            if hasattr(tracker, "start"):  # newer accelerate creates the writer or run in start()
                tracker.start()
            values = flat_config(config)
            if name == "mlflow":
                values = mlflow_unchanged_params(tracker.active_run.info.run_id, values)
            tracker.store_init_configuration(values)
            self.trackers.append(tracker)

    def _init(self, name: str, resume_at: int | None) -> tuple[tuple, dict[str, Any]]:
        root = self.run_dir
        if name == "tensorboard":  # <run>/tensorboard; a resume drops what was logged after its checkpoint
            return ("tensorboard", str(root)), {"purge_step": 0 if resume_at is None else resume_at + 1}
        if name == "wandb":
            return (PROJECT,), {
                "dir": str(root),
                "name": root.name,
                "id": wandb_run_id(root),
                "resume": "allow",
            }
        if name == "mlflow":
            tag = {"normguard.run_dir": str(root.resolve())}
            run_id = None if resume_at is None else mlflow_run_id(root)
            return (PROJECT,), {
                "logging_dir": str(root / "mlruns"),
                "run_name": root.name,
                "run_id": run_id,
                "tags": tag,
            }
        if name == "trackio":
            return (PROJECT,), {"name": root.name, "resume": "never" if resume_at is None else "allow"}
        return (PROJECT,), {}

    def log(self, values: dict[str, float], step: int) -> None:
        if values:
            for t in self.trackers:
                t.log(values, step=step)

    def on_iteration_end(self, iteration: int, metrics: dict[str, Any]) -> None:
        self.log(scalars(metrics), iteration)

    def on_evaluation(self, evaluation: Any) -> None:
        if evaluation.iteration == 0:  # the base model's numbers; later ones come with their iteration
            self.log(scalars(evaluation.metrics), 0)
        image = grid_hwc(evaluation.grid)
        png = self.run_dir / "evals" / f"iter-{evaluation.iteration:06d}.png"
        for t in self.trackers:
            if t.name == "tensorboard":
                t.log_images({"eval/grid": image[None]}, step=evaluation.iteration, dataformats="NHWC")
            elif t.name == "mlflow" and png.is_file():
                t.log_artifact(str(png), artifact_path="evals")
            elif t.name == "trackio":
                import trackio

                t.log({"eval/grid": trackio.Image(image)}, step=evaluation.iteration)
            elif hasattr(t, "log_images"):
                t.log_images({"eval/grid": [image]}, step=evaluation.iteration)

    def on_train_end(self, result: Any) -> None:
        for t in self.trackers:
            t.finish()


def run_trackers(
    log_with: list[str], tensorboard: bool, root: Path, config: dict[str, Any], resume_at: int | None
) -> list[Callback]:
    """log_with's trackers, plus TensorBoard when `tensorboard` is on and it is installed."""
    names = resolve_trackers(log_with)
    if tensorboard and "tensorboard" not in names:
        if "tensorboard" in installed_trackers():
            names.append("tensorboard")
        else:
            log.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
    return [Trackers(names, root, config, resume_at)] if names else []
