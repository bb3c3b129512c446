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
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
SKIP_REASON = (
    "ComfyUI tests need a ComfyUI checkout: set COMFYUI_PATH (and COMFYUI_PYTHON to the python of its venv)"
)
READY_TIMEOUT = 180
# ComfyUI and the kit run single-threaded unless OMP_NUM_THREADS says otherwise: on a small, shared
# machine OpenMP threads that spin against other processes make torch ops ~100x slower.
ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def pytest_collection_modifyitems(config, items):
    if COMFYUI_PATH and (Path(COMFYUI_PATH) / "main.py").is_file():
        return
    reason = SKIP_REASON if not COMFYUI_PATH else f"COMFYUI_PATH={COMFYUI_PATH} has no main.py"
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.skip(reason=reason))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """A ComfyUI base directory: models (the tiny kit), custom_nodes/normguard -> this repository."""
    base = tmp_path_factory.mktemp("comfy-base")
    subprocess.run(
        [COMFYUI_PYTHON, str(HERE / "kit.py"), COMFYUI_PATH, str(base / "models")],
        check=True,
        capture_output=True,
        timeout=600,
        env=ENV,
    )
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "normguard").symlink_to(REPO, target_is_directory=True)
    (base / "models" / "loras").mkdir(parents=True, exist_ok=True)
    return base


@pytest.fixture(scope="session")
def server(base_dir):
    """The running server's URL (default output caching on, as users run it)."""
    port = _free_port()
    log_path = base_dir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                COMFYUI_PYTHON,
                "main.py",
                "--cpu",
                "--listen",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-api-nodes",
                "--base-directory",
                str(base_dir),
                "--database-url",
                "sqlite:///:memory:",
            ],  # fmt: skip
            cwd=COMFYUI_PATH,
            env=ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "/object_info/NormGuardTrainLoRA", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(
                        f"ComfyUI not ready in {READY_TIMEOUT} s:\n{log_path.read_text()[-3000:]}"
                    ) from None
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


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
