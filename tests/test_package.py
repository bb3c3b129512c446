"""Packaging facts: the library never imports ComfyUI, and the code is ruff-clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_library_never_imports_comfyui():
    code = (
        "import sys, normguard, normguard.trainer, normguard.trainer.loop, normguard.trainer.cli; "
        "bad = [m for m in sys.modules if m == 'comfy' or m.startswith(('comfy.', 'comfy_api', 'folder_paths'))]; "
        "print(bad); sys.exit(bool(bad))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_python_m_normguard_is_the_cli():
    r = subprocess.run([sys.executable, "-m", "normguard", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
    reason="ruff is not installed (pip install -e .[dev])",
)
def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    r = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout
