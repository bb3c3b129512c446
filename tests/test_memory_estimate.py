"""benchmarks/memory_estimate.py: its byte counter is exact on real tensors, and fake tensors (no data)
count what real ones do, so its figures at the real architectures are what a GPU would allocate."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from memory_count import LiveBytes  # noqa: E402
from memory_estimate import fake_backend, train_step_gib  # noqa: E402
from real_arch import build  # noqa: E402

MB = 2**20


def test_live_bytes_counts_each_storage_once_until_it_is_freed():
    counter = LiveBytes()
    with counter:
        a = torch.ones(1024, 256)  # 1 MiB
        view = a[:512]  # a view: no new memory
        a.mul_(2)  # in place: none either
        b = a + 1  # 1 MiB more
        assert counter.now == 2 * MB and view.shape[0] == 512
        del b
        assert counter.now == MB
        c = torch.ones(1024, 512)  # 2 MiB: the peak is 3 MiB
        del c, a, view
    assert (counter.now, counter.peak) == (0, 3 * MB)


def test_live_bytes_sees_what_autograd_keeps_for_backward():
    w = torch.randn(256, 256, requires_grad=True)
    counter = LiveBytes()
    counter.add([w])
    with counter:
        x = torch.randn(1024, 256)
        y = torch.tanh(x @ w)  # tanh keeps its output for backward
        loss = y.sum()
        del x, y
        kept = counter.now
        loss.backward()
    assert kept >= w.nbytes + 2 * 1024 * 256 * 4  # w, and x and tanh's output kept alive by the graph
    assert counter.now == 2 * w.nbytes + loss.nbytes  # after backward: w, its gradient and the loss


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fake_tensors_count_the_bytes_real_ones_use(checkpointing):
    """The same LoRA forward+backward of a tiny SD3 on real bf16 tensors and on fake ones: equal peaks."""
    real = build("sd3", torch.device("cpu"), torch.bfloat16, tiny=True)
    real.add_lora(rank=4, alpha=4)
    if checkpointing:
        real.module.enable_gradient_checkpointing()
    real_peak = train_step_gib(real, 2, 128, LiveBytes())
    mode = FakeTensorMode()
    fake = fake_backend("sd3", rank=4, checkpointing=checkpointing, fp8=False, mode=mode, tiny=True)
    with mode:
        fake_peak = train_step_gib(fake, 2, 128, LiveBytes())
    assert real_peak > 0 and fake_peak == pytest.approx(real_peak, rel=1e-6)


def test_comfyui_estimate_runs_through_the_comfy_backend():
    """benchmarks/memory_comfy.py --tiny: ComfyUI's own model classes, our ComfyBackend, fake tensors."""
    comfy, python = os.environ.get("COMFYUI_PATH"), os.environ.get("COMFYUI_PYTHON")
    if not (comfy and python):
        pytest.skip("needs a ComfyUI checkout: set COMFYUI_PATH and COMFYUI_PYTHON (CI has no ComfyUI)")
    with tempfile.TemporaryDirectory() as parent:
        (Path(parent) / "normguard").symlink_to(ROOT, target_is_directory=True)
        env = {**os.environ, "PYTHONPATH": parent, "COMFYUI_PATH": comfy}
        proc = subprocess.run(
            [python, str(ROOT / "benchmarks" / "memory_comfy.py"), "--tiny"],
            capture_output=True, text=True, timeout=1800, env=env, cwd=ROOT / "benchmarks",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.split()}
    for name in ("SD3.5-Medium", "FLUX.1-dev", "Z-Image", "Qwen-Image"):
        static, train = float(rows[name][5]), float(rows[name][8])
        assert 0 < static < train, rows[name]  # tiny models: the counts are small but not zero
