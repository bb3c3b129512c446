"""The run directory: saved config, checkpoints, metrics, the exported LoRA; resume and refusal.

An existing run directory with the same config is resumed from its newest complete checkpoint;
with a different config it is refused (nothing is deleted); `new_run` starts over in a fresh
subfolder instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from .config import RESUMABLE_CHANGES, TrainConfig, canonical_keys

CONFIG_FILE = "config.yaml"
CKPT_DIR = "checkpoints"


class RunDirError(ValueError):
    pass


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys (besides RESUMABLE_CHANGES) whose values differ; a saved file may use old key names."""
    saved, current = canonical_keys(saved), canonical_keys(current)
    keys = sorted((set(saved) | set(current)) - RESUMABLE_CHANGES)
    return [
        f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)
    ]


class RunDir:
    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def open(cls, out: str | Path, cfg: TrainConfig, *, new_run: bool = False, create: bool = True) -> RunDir:
        """Resolve `out` to the run to continue or start (creating it when `create`)."""
        root = Path(out)
        if new_run:
            n = 1
            while (root / f"run-{n:03d}").exists():
                n += 1
            root = root / f"run-{n:03d}"
        saved = root / CONFIG_FILE
        if saved.is_file():
            diff = config_differences(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}, cfg.to_dict())
            if diff:
                raise RunDirError(
                    f"--out {root} holds a run with another config; resuming it would mix two runs.\n  "
                    + "\n  ".join(diff)
                    + "\nUse another --out, or --new-run to start over in a new subfolder (nothing is deleted)."
                )
        elif root.exists() and any(root.iterdir()):
            raise RunDirError(
                f"--out {root} exists and is not a NormGuard run (no {CONFIG_FILE}); choose an empty or new folder,"
                " or pass --new-run to create a run subfolder inside it"
            )
        run = cls(root)
        if create:
            try:
                root.mkdir(parents=True, exist_ok=True)
                probe = root / ".write-test"
                probe.write_text("")
                probe.unlink()
            except OSError as e:
                raise RunDirError(f"--out {root} is not writable: {e}") from e
            if not saved.is_file():
                saved.write_text(cfg.to_yaml(), encoding="utf-8")
        return run

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    def lora_path(self, name: str) -> Path:
        return self.root / f"{name}.safetensors"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (state.json is written last), oldest first."""
        d = self.root / CKPT_DIR
        return sorted(p for p in d.glob("iter-*") if (p / "state.json").is_file()) if d.is_dir() else []

    def save_checkpoint(
        self,
        iteration: int,
        tensors: dict[str, dict[str, torch.Tensor]],
        optimizer: dict[str, Any],
        state: dict[str, Any],
        keep: int,
    ) -> Path:
        """Write into a temporary folder and rename it: a checkpoint is either whole or absent."""
        final = self.root / CKPT_DIR / f"iter-{iteration:06d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, group in tensors.items():
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in group.items()}, str(tmp / f"{name}.safetensors")
            )
        torch.save(optimizer, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load_checkpoint(
        path: Path,
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any], dict[str, Any]]:
        tensors = {p.stem: load_file(str(p)) for p in path.glob("*.safetensors")}
        optimizer = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
        state = json.loads((path / "state.json").read_text())
        return tensors, optimizer, state
