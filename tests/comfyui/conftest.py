"""Tests against a real ComfyUI: COMFYUI_PATH (a ComfyUI checkout) and COMFYUI_PYTHON (its python,
default this one). Without COMFYUI_PATH every test here is skipped (CI has no ComfyUI).

The session builds the tiny kit (kit.py) with ComfyUI's python, starts the server headless on a free
port with this repository symlinked into custom_nodes, and talks to it over HTTP and websocket only,
so pytest itself may run under any python. Run:
  COMFYUI_PATH=... COMFYUI_PYTHON=.../bin/python python -m pytest tests/comfyui -q
(tests/comfyui/pytest.ini makes that invocation independent of tests/conftest.py, which needs the
library installed in the running python.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .server import HERE, REPO, build_base, comfyui_server

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
SKIP_REASON = (
    "ComfyUI tests need a ComfyUI checkout: set COMFYUI_PATH (and COMFYUI_PYTHON to the python of its venv)"
)


def pytest_collection_modifyitems(config, items):
    if COMFYUI_PATH and (Path(COMFYUI_PATH) / "main.py").is_file():
        return
    reason = SKIP_REASON if not COMFYUI_PATH else f"COMFYUI_PATH={COMFYUI_PATH} has no main.py"
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """A ComfyUI base directory: models (the tiny kit), custom_nodes/normguard -> this repository."""
    return build_base(tmp_path_factory.mktemp("comfy-base"), COMFYUI_PATH, COMFYUI_PYTHON)


@pytest.fixture(scope="session")
def server(base_dir):
    """The running server's URL (default output caching on, as users run it)."""
    with comfyui_server(base_dir, COMFYUI_PATH, COMFYUI_PYTHON) as running:
        yield running.url


@pytest.fixture
def comfy(server):
    from .client import Comfy

    return Comfy(server)


@pytest.fixture(scope="session")
def loras(base_dir) -> Path:
    return base_dir / "models" / "loras"


@pytest.fixture(scope="session")
def output_dir(base_dir) -> Path:
    return base_dir / "output"


@pytest.fixture(scope="session")
def package_parent(tmp_path_factory) -> Path:
    """A folder whose `normguard` is this repository: what check scripts put on ComfyUI's python's path."""
    parent = tmp_path_factory.mktemp("pkg")
    (parent / "normguard").symlink_to(REPO, target_is_directory=True)
    return parent
