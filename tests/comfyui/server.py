"""A headless ComfyUI with the tiny kit and this repository as a custom node pack (stdlib only), shared
by the tests (conftest.py) and the peer benchmark (benchmarks/comfyui_peers.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
READY_TIMEOUT = 420  # a loaded 2-core machine imports ComfyUI and its nodes slowly
# ComfyUI and the kit run single-threaded unless OMP_NUM_THREADS says otherwise: on a small, shared
# machine OpenMP threads that spin against other processes make torch ops many times slower.
ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_base(base: Path, comfy_path: str, python: str, sd3_depth: int = 2) -> Path:
    """A ComfyUI base directory: models (the tiny kit, see kit.py), custom_nodes/normguard -> this
    repository, an empty loras folder."""
    base.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [python, str(HERE / "kit.py"), comfy_path, str(base / "models"), "--sd3-depth", str(sd3_depth)],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kit.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    proc = subprocess.run(
        [python, str(HERE / "kit_families.py"), comfy_path, str(base / "models")],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kit_families.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (base / "custom_nodes").mkdir(exist_ok=True)
    (base / "custom_nodes" / "normguard").symlink_to(REPO, target_is_directory=True)
    # loaders for the family models the stock loaders refuse at tiny sizes (kit_families.py)
    (base / "custom_nodes" / "normguard_testkit").symlink_to(HERE / "testkit_nodes", target_is_directory=True)
    (base / "models" / "loras").mkdir(parents=True, exist_ok=True)
    return base


@dataclass
class Server:
    url: str
    pid: int  # ComfyUI's python process itself (its /proc entry gives the memory figures)
    log: Path


@contextmanager
def comfyui_server(
    base: Path, comfy_path: str, python: str, env: dict[str, str] = ENV, cpu: bool = True
) -> Iterator[Server]:
    """Start `python main.py [--cpu]` on a free port over `base`; yield once the pack's nodes are listed;
    stop it on exit. Default output caching stays on, as users run it."""
    port = free_port()
    log_path = base / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                python,
                "main.py",
                *(["--cpu"] if cpu else []),
                "--listen",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-api-nodes",
                "--base-directory",
                str(base),
                "--database-url",
                "sqlite:///:memory:",
            ],  # fmt: skip
            cwd=comfy_path,
            env=env,
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
        yield Server(url, proc.pid, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
