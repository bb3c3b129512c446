"""benchmarks/flow_factory_nft.py runs against a real Flow-Factory install (tiny settings) and prints
its table. Flow-Factory is never installed by this repo: set FLOW_FACTORY_PYTHON to the python of a
venv where you installed it, and FLOW_FACTORY_MODEL to a local SD3 diffusers folder (default: a tiny
random one built by the tests' fixture). Figures are checked to be positive, never compared."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FF_PYTHON = os.environ.get("FLOW_FACTORY_PYTHON")
ROWS = ["train / sample (ms)", "rollout / sample (ms)", "reward / sample (ms)", "RL iteration / sample (ms)"]

pytestmark = pytest.mark.skipif(
    not FF_PYTHON,
    reason="FLOW_FACTORY_PYTHON is not set (the python of a venv with Flow-Factory installed)",
)


def test_flow_factory_benchmark_prints_its_table(request):
    model = os.environ.get("FLOW_FACTORY_MODEL") or request.getfixturevalue("tiny_sd3_dir")
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "flow_factory_nft.py"),
            "--ff-python",
            FF_PYTHON,
            "--model",
            str(model),
            "--size",
            "128",
            "--iterations",
            "3",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    rows = {
        line.split("|")[1].strip(): [float(c) for c in line.strip().strip("|").split("|")[1:]]
        for line in r.stdout.splitlines()
        if line.startswith("| ") and re.search(r"\d \|$", line.strip())
    }
    for name in [*ROWS, "peak RSS (MiB)"]:
        assert name in rows, r.stdout
        assert len(rows[name]) == 5, rows[name]  # 3 variants, 2 ratios
        assert all(x > 0 for x in rows[name]), (name, rows[name])
