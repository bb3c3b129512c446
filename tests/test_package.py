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


def test_every_python_package_folder_is_listed_for_the_wheel():
    """setuptools' explicit package list: a folder left out installs in editable mode but is missing
    from the wheel a registry or `pip install .` builds."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    skip = {"tests", "benchmarks", "scripts", "web", "docs"}
    found = {
        ".".join(("normguard", *init.parent.relative_to(ROOT).parts)).rstrip(".")
        for init in ROOT.rglob("__init__.py")
        if not ({*init.relative_to(ROOT).parts} & skip) and not any(p.startswith(".") for p in init.parts)
    }
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"
