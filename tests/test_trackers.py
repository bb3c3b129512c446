"""Experiment trackers through accelerate: names resolved and refused clearly, and a Weights & Biases
run in offline mode (no network) whose files hold the metrics and the evaluation grid."""

from __future__ import annotations

import json
import math
import re

import pytest

from normguard import train
from normguard.trainer.trackers import installed_trackers, resolve_trackers, scalars


def test_tracker_names_are_resolved_or_refused_by_name():
    assert resolve_trackers([]) == [] and resolve_trackers(["none"]) == []
    assert resolve_trackers(["all"]) == installed_trackers()
    with pytest.raises(ValueError, match="log_with: unknown tracker"):
        resolve_trackers(["tensorbored"])
    missing = next((n for n in ("trackio", "mlflow", "aim") if n not in installed_trackers()), None)
    if missing:
        with pytest.raises(ValueError, match=f"{missing} is not installed"):
            resolve_trackers([missing])


def test_scalars_keep_finite_numbers_and_split_rho_per_step():
    out = scalars({"reward_mean": 0.5, "loss": math.nan, "rho_per_step": [1.0, 1.1], "flag": True, "s": "x"})
    assert out == {"reward_mean": 0.5, "rho_step/00": 1.0, "rho_step/01": 1.1}


def logged_numbers(blob: bytes, key: str) -> list[float]:
    """The values logged under `key` in a W&B run file (.wandb: protobuf records, each history or
    summary item a key string then its value as JSON)."""
    k = key.encode()
    found = []
    for m in re.finditer(rb"\x12" + bytes([len(k)]) + re.escape(k) + rb"\x82\x01(.)", blob, re.S):
        try:
            found.append(float(blob[m.end() : m.end() + m.group(1)[0]]))
        except ValueError:
            pass
    return found


def test_wandb_offline_run_holds_the_metrics_and_the_grid(tiny_config, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb)")
    result = train(tiny_config.replace(log_with=["wandb"], eval_every=1))
    wandb.teardown()  # the W&B service writes the run file after finish() returns: wait for it
    runs = sorted((result.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    blob = next(runs[0].glob("run-*.wandb")).read_bytes()
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward_mean", "train_rho", "rho_mean", "eval_reward"):
        expected = [r[key] for r in rows if key in r]
        logged = logged_numbers(blob, key)
        assert expected and all(any(abs(v - e) < 1e-6 for v in logged) for e in expected), (
            key,
            expected,
            logged,
        )
    assert b"normguard_weight" in blob and b"jpeg_incompressibility" in blob, "the config is stored"
    assert b"eval/grid" in blob
    assert list((runs[0] / "files" / "media" / "images" / "eval").glob("grid_*.png")), "the grids as images"
