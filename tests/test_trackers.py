"""Experiment trackers through accelerate: names resolved and refused clearly, and runs of Weights &
Biases (offline mode), MLflow (its store in the run folder) and Trackio (its local database) made with
the network off, whose stores hold the metrics and the evaluation grids. Each tracker's test skips
when its package is not installed (CI installs none of them)."""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys

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


# Trains in a fresh interpreter (no pytest variables, which MLflow takes as a reason to stay quiet, and
# a TRACKIO_DIR that trackio reads once at import) with every connection that leaves the machine
# refused and recorded; prints the addresses it tried.
GUARDED_TRAIN = """
import json, socket, sys
from normguard import train
from normguard.trainer.config import TrainConfig

tried = []
LOCAL = ("127.0.0.1", "::1", "localhost")
real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

def connect(sock, address):
    if sock.family == socket.AF_UNIX or address[0] in LOCAL:
        return real_connect(sock, address)
    tried.append(str(address))
    raise OSError("network is off in this test")

def getaddrinfo(host, *args, **kwargs):
    if host in LOCAL or host is None:
        return real_getaddrinfo(host, *args, **kwargs)
    tried.append(str(host))
    raise OSError("network is off in this test")

socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
train(TrainConfig.from_yaml(sys.argv[1]))
print("TRIED " + json.dumps(tried))
"""


def train_guarded(config, tmp_path, env: dict[str, str]) -> list[str]:
    """Runs `config` in a child process as above; returns the outside addresses it tried."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config.to_yaml())
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CI", "MLFLOW_", "TRACKIO_"))}
    cwd = tmp_path / "cwd"  # where MLflow's own default store would land
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", GUARDED_TRAIN, str(cfg)],
        cwd=cwd,
        env={**keep, **env, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not list(cwd.iterdir()), f"files left in the working folder: {list(cwd.iterdir())}"
    return json.loads(proc.stdout.rsplit("TRIED ", 1)[1].splitlines()[0])  # trackio prints at exit


def expected_metrics(run_dir) -> dict[str, dict[int, float]]:
    """{key: {iteration: value}} of metrics.jsonl for the keys every tracker must hold."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = ("reward_mean", "train_rho", "rho_mean", "eval_reward")
    out = {k: {r["iteration"]: r[k] for r in rows if r.get(k) is not None} for k in keys}
    assert all(out.values()), out
    return out


def test_mlflow_run_in_the_run_folder_holds_the_metrics_and_grids_offline(tiny_config, tmp_path):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow)")
    from mlflow.tracking import MlflowClient

    config = tiny_config.replace(log_with=["mlflow"], eval_every=1)
    assert train_guarded(config, tmp_path, {}) == [], "MLflow reached for the network"
    run_dir = tmp_path / "run"
    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').as_posix()}")
    (run,) = client.search_runs([client.get_experiment_by_name("normguard").experiment_id])
    assert run.info.run_name == "run" and run.data.params["normguard_weight"] == str(config.normguard_weight)
    for key, by_iteration in expected_metrics(run_dir).items():
        logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert logged == pytest.approx(by_iteration, abs=1e-6), key
    grids = sorted(p.name for p in run_dir.glob(f"mlruns/{run.info.run_id}/artifacts/evals/*.png"))
    assert grids == [f"iter-{i:06d}.png" for i in range(3)], grids

    # resuming the folder continues the same MLflow run
    assert train_guarded(config.replace(iterations=3), tmp_path, {}) == []
    (resumed,) = client.search_runs([run.info.experiment_id])
    assert resumed.info.run_id == run.info.run_id
    assert resumed.data.params["iterations"] == "2" and resumed.data.tags["changed.iterations"] == "3"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reward_mean")] == [1, 2, 3]


def test_trackio_local_database_holds_the_metrics_and_grids_offline(tiny_config, tmp_path):
    pytest.importorskip("trackio", reason="trackio is not installed (pip install trackio)")
    store = tmp_path / "trackio"
    config = tiny_config.replace(log_with=["trackio"], eval_every=1)
    assert train_guarded(config, tmp_path, {"TRACKIO_DIR": str(store)}) == [], (
        "trackio reached for the network"
    )
    with sqlite3.connect(store / "normguard.db") as db:
        rows = db.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id").fetchall()
        (config_row,) = db.execute("SELECT config FROM configs").fetchall()
    assert {r[0] for r in rows} == {"run"}
    logged: dict[str, dict[int, float]] = {}
    grids = []
    for _, step, blob in rows:
        for key, value in json.loads(blob).items():
            if isinstance(value, dict) and value.get("_type") == "trackio.image":
                grids.append((step, store / "media" / value["file_path"]))
            else:
                logged.setdefault(key, {})[step] = value
    for key, by_iteration in expected_metrics(tmp_path / "run").items():
        assert {s: logged[key][s] for s in by_iteration} == pytest.approx(by_iteration, abs=1e-6), key
    assert [s for s, _ in grids] == [0, 1, 2] and all(p.is_file() for _, p in grids), grids
    assert json.loads(config_row[0])["normguard_weight"] == config.normguard_weight
