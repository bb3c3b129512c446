"""The ComfyUI path on a GPU: NormGuardTrainLoRA and ComfyUI's TrainLoraNode side by side, through the API
of a headless ComfyUI, on random-weight SD3.5-Medium (bf16) and FLUX.1-dev (fp8) files at real shapes.

    COMFYUI_PATH=... COMFYUI_PYTHON=... python benchmarks/comfyui_gpu.py            # on the GPU machine
    python benchmarks/comfyui_gpu.py --tiny       # the tiny kit on CPU: the same graphs, in a minute

Per model and trainer, a fresh server: a preparation graph loads the models and encodes the prompt,
a probe node (GpuMemoryMark, installed only into this benchmark's ComfyUI folder) resets
torch.cuda.max_memory_allocated inside the server, the training graph runs (ours: NFT with NormGuard,
`--iterations` at group `--group`; TrainLoraNode: as many optimizer steps on `--group` latents, same
rank, bf16, gradient checkpointing), and the probe reads the peak. nvidia-smi's memory.used is
sampled meanwhile (what the card had in use: CUDA context and the allocator's cache included).
Seconds per iteration: ours from its metrics.jsonl (time_iteration, the last iteration), TrainLoraNode's
from its progress events (one per optimizer step, the last interval).

Text: one real-size CLIP-L (77 tokens) conditions both trainers, not CLIP-G/T5-XXL, so the text
sequence is shorter than in real use (SD3.5: 77 instead of 333 tokens; FLUX: 77 instead of 512),
and FLUX's txt_in takes 768 features. Both trainers see the same conditioning. Without COMFYUI_PATH,
or when ComfyUI's python cannot import what ComfyUI needs, it prints why it is skipped and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
import comfyui.server  # noqa: E402
from comfyui.client import Comfy  # noqa: E402
from comfyui.server import ENV, HERE, comfyui_server  # noqa: E402
from comfyui_peers import VARIANTS, Events, Settings, ours_graph, peer_graph, peer_progress  # noqa: E402

PROBE = '''"""GpuMemoryMark: reset or read torch.cuda.max_memory_allocated inside ComfyUI (benchmark only)."""
import torch


class GpuMemoryMark:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"action": (["reset", "read"],), "nonce": ("INT", {"default": 0, "min": 0})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "benchmark"

    def run(self, action, nonce):
        if not torch.cuda.is_available():
            return {"ui": {"peak": [-1]}}
        torch.cuda.synchronize()
        if action == "reset":
            torch.cuda.reset_peak_memory_stats()
        return {"ui": {"peak": [torch.cuda.max_memory_allocated()]}}


NODE_CLASS_MAPPINGS = {"GpuMemoryMark": GpuMemoryMark}
'''
MODELS = {  # name: (diffusion model file, CLIPLoader type, trainer group/batch override)
    "sd35m": ("sd35m.safetensors", "sd3"),
    "flux1dev_fp8": ("flux1dev_fp8.safetensors", "stable_diffusion"),
    "tiny_sd3": ("tiny_sd3.safetensors", "sd3"),
    "tiny_flux": ("tiny_flux.safetensors", "stable_diffusion"),
}
# ComfyUI's essential requirements (its requirements.txt) by import name
COMFY_IMPORTS = [
    "torch", "torchsde", "einops", "transformers", "safetensors", "aiohttp", "yarl", "yaml", "PIL",
    "scipy", "psutil", "alembic", "sqlalchemy", "av", "comfy_kitchen", "comfyui_frontend_package",
]  # fmt: skip


def missing_modules(python: str) -> list[str]:
    """What ComfyUI's python cannot import of what ComfyUI needs to start."""
    code = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {COMFY_IMPORTS!r} if importlib.util.find_spec(m) is None]))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout) if out.returncode == 0 else [f"(python failed: {out.stderr[-300:]})"]


def build_base(base: Path, args: argparse.Namespace) -> Path:
    """ComfyUI folder: the kit (real shapes unless --tiny), this pack and the memory probe node."""
    base.mkdir(parents=True, exist_ok=True)
    kit = [args.comfyui_python, str(HERE / "kit.py"), args.comfyui_path, str(base / "models")]
    proc = subprocess.run(
        kit + ([] if args.tiny else ["--real"]), capture_output=True, text=True, timeout=1200, env=ENV
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kit.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    nodes = base / "custom_nodes"
    nodes.mkdir(exist_ok=True)
    (nodes / "normguard").symlink_to(REPO, target_is_directory=True)
    (nodes / "gpu_memory_mark").mkdir()
    (nodes / "gpu_memory_mark" / "__init__.py").write_text(PROBE)
    (base / "models" / "loras").mkdir(parents=True, exist_ok=True)
    return base


class SmiSampler:
    """nvidia-smi's memory.used (MiB) every 0.2 s in a background thread; empty without nvidia-smi."""

    def __init__(self):
        self.samples: list[int] = []
        self.running = shutil.which("nvidia-smi") is not None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(int(out.stdout.split()[0]))
            time.sleep(0.2)

    def close(self) -> int | None:
        self.running = False
        self.thread.join(timeout=5)
        return max(self.samples) if self.samples else None


def mark(comfy: Comfy, action: str, timeout: float) -> int:
    graph = {
        "m": {"class_type": "GpuMemoryMark", "inputs": {"action": action, "nonce": time.time_ns() % 2**31}}
    }
    return int(comfy.run(graph, timeout=timeout)["m"]["peak"][0])


def measure(base: Path, args: argparse.Namespace, model: str, trainer: str) -> dict[str, Any]:
    unet, clip_type = MODELS[model]
    s = Settings(args.size, args.group, args.rank, args.iterations, args.sample_steps)
    variant = VARIANTS["tln" if trainer == "TrainLoraNode" else "ng1"]
    name = f"gpu_{model}_{variant.key}"
    graph = peer_graph(s, variant, name) if variant.kind == "peer" else ours_graph(s, variant, name)
    graph["unet"]["inputs"]["unet_name"] = unet
    graph["clip"]["inputs"]["type"] = clip_type
    if "flux" in model and variant.kind == "ours":
        graph["options"]["inputs"]["guidance"] = 3.5
    prepare = {k: v for k, v in graph.items() if k not in ("train", "save_lora", "reward", "options")}
    with comfyui_server(base, args.comfyui_path, args.comfyui_python, cpu=args.tiny) as server:
        comfy = Comfy(server.url)
        comfy.run(prepare, timeout=args.timeout)
        mark(comfy, "reset", args.timeout)
        events, smi = Events(server.url, comfy.client_id), SmiSampler()
        t0 = time.perf_counter()
        try:
            comfy.run(graph, timeout=args.timeout)
        finally:
            smi_peak = smi.close()
            events.close()
        wall = time.perf_counter() - t0
        peak = mark(comfy, "read", args.timeout)
    if variant.kind == "peer":
        times = peer_progress(events.items, "train", s.steps)
        per_it = times[s.steps] - times[s.steps - 1]
    else:
        rows = [
            json.loads(x)
            for x in (base / "output" / "normguard" / name / "metrics.jsonl").read_text().split("\n")
            if x
        ]
        per_it = rows[-1]["time_iteration"]
    return {
        "model": model,
        "trainer": trainer,
        "s_per_it": per_it,
        "s_per_sample": per_it / s.batch,
        "peak_allocated_gib": peak / 2**30 if peak >= 0 else None,
        "smi_peak_gib": smi_peak / 1024 if smi_peak is not None else None,
        "graph_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui-path", default=os.environ.get("COMFYUI_PATH"))
    ap.add_argument("--comfyui-python", default=os.environ.get("COMFYUI_PYTHON", sys.executable))
    ap.add_argument("--tiny", action="store_true", help="the tiny kit on CPU (checks the code path)")
    ap.add_argument("--size", type=int, help="image side (default 512; 64 with --tiny)")
    ap.add_argument("--group", type=int, default=8, help="our group size = TrainLoraNode's batch")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=2, help="our iterations = TrainLoraNode's steps")
    ap.add_argument("--sample-steps", type=int, default=10, help="our rollout's sampler steps")
    ap.add_argument("--models", help="comma-separated of " + ", ".join(MODELS))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per graph")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if not args.comfyui_path:
        print(
            "ComfyUI path skipped: COMFYUI_PATH is not set (a ComfyUI checkout with its python in COMFYUI_PYTHON)"
        )
        return
    if not (Path(args.comfyui_path) / "main.py").is_file():
        print(
            f"ComfyUI path skipped: COMFYUI_PATH={args.comfyui_path} has no main.py (not a ComfyUI checkout)"
        )
        return
    if missing := missing_modules(args.comfyui_python):
        print(
            f"ComfyUI path skipped: {args.comfyui_python} cannot import {', '.join(missing)} (ComfyUI needs them)"
        )
        return
    args.size = args.size or (64 if args.tiny else 512)
    comfyui.server.READY_TIMEOUT = 900  # a server on a busy CPU took over the tests' 180 s to start
    models = (args.models or ("tiny_sd3,tiny_flux" if args.tiny else "sd35m,flux1dev_fp8")).split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="comfy-gpu-") as tmp:
        t0 = time.perf_counter()
        base = build_base(Path(tmp) / "base", args)
        print(f"kit built in {time.perf_counter() - t0:.0f} s", flush=True)
        for model in models:
            for trainer in ("NormGuardTrainLoRA", "TrainLoraNode"):
                try:
                    row = measure(base, args, model.strip(), trainer)
                except Exception as e:  # one failing graph (e.g. out of memory) leaves the others' rows
                    row = {"model": model, "trainer": trainer, "error": f"{type(e).__name__}: {e}"[:2000]}
                rows.append(row)
                print(f"  {row}", flush=True)
    print(
        f"\nComfyUI, {args.size} px, group/batch {args.group}, rank {args.rank}, {args.iterations} iterations"
        f" (ours: NFT + NormGuard, {args.sample_steps} sampler steps)"
    )
    print(
        f"{'model':14} {'trainer':20} {'s/it':>8} {'s/sample':>9} {'peak alloc GiB':>15} {'nvidia-smi GiB':>15}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['model']:14} {r['trainer']:20} failed: {r['error'][:300]}")
            continue
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(
            f"{r['model']:14} {r['trainer']:20} {r['s_per_it']:8.2f} {r['s_per_sample']:9.3f} "
            f"{fmt(r['peak_allocated_gib']):>15} {fmt(r['smi_peak_gib']):>15}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
