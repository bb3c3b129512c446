"""The run directory: saved config, checkpoints, metrics, the exported LoRA; resume and refusal.

An existing run directory with the same config is resumed from its newest checkpoint that reads
cleanly; with a different config it is refused (nothing is deleted) unless it never got a first
checkpoint, in which case the new config takes it over. `new_run` starts over in a fresh subfolder.
A checkpoint is written into `iter-N.tmp`, flushed, and renamed whole: a kill or a full disk leaves
either the complete folder or a temporary that the next start deletes.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import RESUMABLE_CHANGES, TrainConfig, canonical_keys
from .files import (
    TMP_MARK,
    fsync_path,
    read_json,
    read_yaml,
    remove_stale_temporaries,
    write_json,
    write_sealed,
    write_text,
)

CONFIG_FILE = "config.yaml"
CKPT_DIR = "checkpoints"
CKPT_NAME = re.compile(r"^iter-(\d{6,})$")  # never the iter-N.tmp being written
log = logging.getLogger("normguard")


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
        run = cls(root)
        takeover = False
        if saved.is_file():
            try:
                old = read_yaml(saved, "the saved config") or {}
            except ValueError:
                old = None  # a torn config.yaml: only a run that never checkpointed can have one
            diff = (
                config_differences(old, cfg.to_dict())
                if isinstance(old, dict)
                else [f"{CONFIG_FILE} is unreadable"]
            )
            if diff and not run.checkpoints():
                takeover = True
                print(
                    f"normguard: taking over {root}: it holds only the config of a run that never "
                    "started (no checkpoint)",
                    flush=True,
                )
            elif diff:
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
        if create:
            try:
                root.mkdir(parents=True, exist_ok=True)
                probe = root / ".write-test"
                probe.write_text("")
                probe.unlink()
            except OSError as e:
                raise RunDirError(f"--out {root} is not writable: {e}") from e
            run.remove_temporaries()
            if takeover or not saved.is_file() or diff_only_resumable(saved, cfg):
                write_text(saved, cfg.to_yaml())  # on resume: shows the new iteration count, etc.
        return run

    def remove_temporaries(self) -> None:
        """Sweep what a killed save left behind (a half-written checkpoint folder, temporary files)."""
        for folder in (self.root, self.root / CKPT_DIR, self.root / "evals"):
            for p in remove_stale_temporaries(folder):
                log.info("removed %s, left by an interrupted save", p)

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    def lora_path(self, name: str) -> Path:
        return self.root / f"{name}.safetensors"

    def existing_lora(self, name: str) -> Path | None:
        """The LoRA `name` when the run has written one (the last good one after a failure)."""
        path = self.lora_path(name)
        return path if path.is_file() else None

    def saved_iteration(self) -> int:
        """The iteration of the newest committed checkpoint (0 without one)."""
        ckpts = self.checkpoints()
        return int(ckpts[-1].name.split("-")[1]) if ckpts else 0

    def checkpoints(self) -> list[Path]:
        """Committed checkpoint folders, oldest first (whether they read cleanly is checked on load)."""
        d = self.root / CKPT_DIR
        if not d.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_NAME.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found)]

    def save_checkpoint(
        self,
        iteration: int,
        tensors: dict[str, dict[str, torch.Tensor]],
        optimizer: dict[str, Any],
        state: dict[str, Any],
        keep: int,
    ) -> Path:
        """Write every file into iter-N.tmp, flush them, rename the folder: whole or absent."""
        final = self.root / CKPT_DIR / f"iter-{iteration:06d}"
        tmp = final.with_name(final.name + TMP_MARK)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, group in tensors.items():
            cpu = {k: v.detach().cpu().contiguous() for k, v in group.items()}
            write_sealed(tmp / f"{name}.safetensors", lambda f, cpu=cpu: save_file(cpu, str(f)))
        write_sealed(tmp / "optimizer.pt", lambda f: torch.save(optimizer, f))
        write_json(tmp / "state.json", state)  # last (it also flushes the folder's entries)
        if final.exists():  # the same iteration saved again (a resumed run interrupted at once)
            old = final.with_name(final.name + ".old" + TMP_MARK)
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        fsync_path(final.parent)
        # keep the newest `keep` up to this one; later ones are from a resume's abandoned future
        # (they failed to read, or the resume would have used them)
        ckpts = self.checkpoints()
        mine = [p for p in ckpts if int(CKPT_NAME.match(p.name).group(1)) <= iteration]
        for old in [p for p in ckpts if p not in mine] + mine[: -max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load_checkpoint(
        path: Path,
    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any], dict[str, Any]]:
        tensors = {p.stem: load_file(str(p)) for p in path.glob("*.safetensors")}
        optimizer = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
        state = read_json(path / "state.json", "checkpoint state")
        if not isinstance(state, dict) or not isinstance(state.get("iteration"), int):
            raise ValueError(f"{path / 'state.json'} holds no iteration count")
        return tensors, optimizer, state

    def newest_readable_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint that loads cleanly, with the newer ones that did not (and why)."""
        skipped: list[str] = []
        for path in reversed(self.checkpoints()):
            try:
                tensors, optimizer, state = self.load_checkpoint(path)
            except Exception as e:  # torn or unreadable files of any kind: try the one before
                skipped.append(f"{path.name} ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
                continue
            return Checkpoint(path, tensors, optimizer, state, skipped)
        if skipped:
            log.warning(
                "no checkpoint of %s reads cleanly (%s): starting over", self.root, "; ".join(skipped)
            )
        return None


@dataclass
class Checkpoint:
    path: Path
    tensors: dict[str, dict[str, torch.Tensor]]
    optimizer: dict[str, Any]
    state: dict[str, Any]
    skipped: list[str] = field(default_factory=list)  # newer checkpoints that failed to load, with why


def diff_only_resumable(saved: Path, cfg: TrainConfig) -> bool:
    """True when the saved config differs from `cfg` only in keys a resume may change."""
    try:
        old = read_yaml(saved, "the saved config")
    except ValueError:
        return False
    return isinstance(old, dict) and old != cfg.to_dict() and not config_differences(old, cfg.to_dict())
