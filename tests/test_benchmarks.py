"""The benchmark scripts run (tiny settings): they print their tables and do not rot unnoticed.
Their figures are measured by running them for real, never asserted here."""

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


def test_real_arch_code_path_on_tiny_shapes():
    out = run("real_arch.py", "--tiny", "--iterations", "2", "--skip-flux")
    for line in (
        "1. NormGuard overhead, nft",
        "1. NormGuard overhead, dpo",
        "2. rollout step, fused LoRA / base",
        "3. iteration / model passes",
    ):
        assert line in out


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
