"""A headless ComfyUI with the tiny kit and this repository as a custom node pack (stdlib only), shared
by the tests (conftest.py) and the peer benchmark (benchmarks/comfyui_peers.py)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
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
READY_TIMEOUT = 900  # a loaded 2-core machine imports ComfyUI and its nodes slowly (>7 min seen at load 15)
# ComfyUI and the kit run single-threaded unless OMP_NUM_THREADS says otherwise: on a small, shared
# machine OpenMP threads that spin against other processes make torch ops many times slower.
ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KIT_SOURCES = ("kit.py", "kit_families.py", "family_specs.py")
KIT_TIMEOUT = 1800  # the kit builds in ~1 min on an idle 2-core machine, many times that when it is shared


def run_check(python: str, script: Path, *args: str | Path, timeout: int) -> dict:
    """Run a check script under ComfyUI's python (it has ComfyUI's torch and diffusers); the script prints
    its JSON result as the last line of stdout."""
    proc = subprocess.run(
        [python, str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_kit(models: Path, comfy_path: str, python: str, sd3_depth: int = 2) -> None:
    """Write the tiny kit (kit.py, kit_families.py) into `models`."""
    for script, extra in (("kit.py", ["--sd3-depth", str(sd3_depth)]), ("kit_families.py", [])):
        proc = subprocess.run(
            [python, str(HERE / script), comfy_path, str(models), *extra],
            capture_output=True,
            text=True,
            timeout=KIT_TIMEOUT,
            env=ENV,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def cached_kit(cache: Path, comfy_path: str, python: str, sd3_depth: int) -> Path:
    """The kit's models folder under `cache`, built once per version of the kit's sources."""
    key = hashlib.sha1(f"{comfy_path}{sd3_depth}".encode())
    for name in KIT_SOURCES:
        key.update((HERE / name).read_bytes())
    folder = cache / key.hexdigest()[:12]
    folder.parent.mkdir(parents=True, exist_ok=True)
    # one builder at a time: a second test run waits for the first's kit instead of deleting it mid-build
    with open(cache / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            build_kit(folder / "models", comfy_path, python, sd3_depth)
            (folder / "done").touch()
    return folder / "models"


def build_base(base: Path, comfy_path: str, python: str, sd3_depth: int = 2) -> Path:
    """A ComfyUI base directory: models (the tiny kit, see kit.py), custom_nodes/normguard -> this
    repository, an empty loras folder. With NORMGUARD_KIT_CACHE set, the kit is built once into that
    folder and its files are linked in (tests may add files to the base's folders, never to the cache)."""
    base.mkdir(parents=True, exist_ok=True)
    cache = os.environ.get("NORMGUARD_KIT_CACHE")
    if cache:
        models = cached_kit(Path(cache), comfy_path, python, sd3_depth)
        for file in models.rglob("*.safetensors"):
            link = base / "models" / file.relative_to(models)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(file)
    else:
        build_kit(base / "models", comfy_path, python, sd3_depth)
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
