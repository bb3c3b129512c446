"""The frontend's chart maths (web/charts.js) under node's own test runner, so `pytest` covers it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[1] / "web"
NODE = shutil.which("node")


@pytest.mark.skipif(
    NODE is None, reason="node (Node.js >= 20) is not on PATH; web/tests need its test runner"
)
def test_chart_functions_pass_node_test():
    proc = subprocess.run(
        [NODE, "--test", str(WEB / "tests")], capture_output=True, text=True, timeout=120, cwd=WEB
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout and "# pass 0" not in proc.stdout
