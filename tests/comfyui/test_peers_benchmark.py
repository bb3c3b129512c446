"""benchmarks/comfyui_peers.py end to end at tiny settings: both trainers run on fresh servers, the
table and the ratios print, and the memory figures are consistent with each other."""

from __future__ import annotations

import json
import subprocess

from .conftest import COMFYUI_PATH, COMFYUI_PYTHON
from .server import ENV, REPO


def test_peer_benchmark_prints_the_table(base_dir, tmp_path):
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [
            COMFYUI_PYTHON,
            str(REPO / "benchmarks" / "comfyui_peers.py"),
            "--comfyui-path",
            COMFYUI_PATH,
            "--comfyui-python",
            COMFYUI_PYTHON,
            "--base-dir",
            str(base_dir),
            "--size",
            "64",
            "--batch",
            "2",
            "--steps",
            "3",
            "--sample-steps",
            "1",
            "--repeats",
            "1",
            "--variants",
            "tln,ng1",
            "--references",
            "tln",
            "--json",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "SD3 MMDiT: depth 2" in text
    assert "| TrainLoraNode (defaults: bf16) |" in text
    assert "| ours / peer | step time / tln | + step peak / tln | + run peak / tln |" in text

    result = json.loads(out.read_text())
    runs = {r["variant"]: r for r in result["runs"]}
    assert set(runs) == {"tln", "ng1"}
    for r in runs.values():
        assert 0 < r["step_per_sample"] < 60
        assert r["baseline"] > 100 * 2**20  # ComfyUI with CLIP-L and the VAE loaded
        # the sampled RSS of the training steps never exceeds the kernel's peak mark for the graph
        assert r["baseline"] - 8 * 2**20 <= r["step_peak"] <= r["run_peak"] + 4 * 2**20
    assert runs["ng1"]["iteration_per_sample"] > runs["ng1"]["step_per_sample"]  # + rollout
    ratio = runs["ng1"]["step_per_sample"] / runs["tln"]["step_per_sample"]
    assert f"| NormGuardTrainLoRA nft, w=10 | {ratio:.2f} |" in text
