"""The benchmark scripts run (tiny settings): they print their tables and do not rot unnoticed.
Their figures are measured by running them for real, never asserted here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_gpu_check_runs_end_to_end_on_tiny_shapes(tmp_path):
    """The prepared GPU check, --tiny on CPU: the CLI path's table (real_arch.py), then the ComfyUI path,
    which says why it is skipped when COMFYUI_PATH is unset (CI) and prints its table otherwise."""
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", "--iterations", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    real_arch = (tmp_path / "real_arch.txt").read_text()
    for line in (
        "1. NormGuard overhead, nft",
        "1. NormGuard overhead, dpo",
        "2. rollout step, fused LoRA / base",
        "3. iteration / model passes",
        "FLUX.1-dev iteration (s)",
    ):
        assert line in real_arch
    comfy = (tmp_path / "comfyui_gpu.txt").read_text()
    if os.environ.get("COMFYUI_PATH"):
        rows = json.loads((tmp_path / "comfyui_gpu.json").read_text())
        assert {(r["model"], r["trainer"]) for r in rows} == {
            (m, t) for m in ("tiny_sd3", "tiny_flux") for t in ("NormGuardTrainLoRA", "TrainLoraNode")
        }
        assert all(r.get("s_per_it", 0) > 0 for r in rows), rows
    else:
        assert "ComfyUI path skipped: COMFYUI_PATH is not set" in comfy


@pytest.mark.parametrize(
    "script,args,expect",
    [
        ("normguard_overhead.py", ["--rounds", "1", "--iterations", "2", "--methods", "awm", "dpo"], "ratio"),
        (
            "iteration_breakdown.py",
            ["--iterations", "1", "--group-size", "2", "--sample-steps", "2"],
            "iteration / model passes",
        ),
        (
            "rollout_speed.py",
            ["--layers", "1", "--size", "64", "--batch", "1", "--rank", "4", "--repeats", "1"],
            "fused LoRA (ours)",
        ),
    ],
)
def test_cpu_benchmarks_print_their_tables(tiny_model_dir, script, args, expect):
    model = ["--model", tiny_model_dir] if script != "rollout_speed.py" else []
    assert expect in run(script, *model, *args)


def test_memory_estimate_prints_the_iteration_table():
    out = run("memory_estimate.py", "--skip-flux", "--skip-anchors")  # SD3.5-M on fake tensors: seconds
    assert "One NFT iteration with NormGuard" in out and "SD3.5-Medium" in out
