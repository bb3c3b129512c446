"""NormGuardVelocityNormProbe's cost: ComfyUI sampling with vs without the probe (no reference), side by side.

Runs inside a real ComfyUI (python of its venv; COMFYUI_PATH = its checkout). The model is an SD3
MMDiT built in memory from a config (random weights, no files), sampled with ComfyUI's own
comfy.sample.sample and random text conditioning; both variants use the same seeds and alternate
(ABAB...) so drift hits both. Target: ratio <= 1.05.

    COMFYUI_PATH=... python benchmarks/probe_overhead.py [--depth 4] [--size 256] [--steps 20]
        [--sampler euler] [--cfg 3.0] [--batch 1] [--rounds 5] [--reference]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_imports() -> None:
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path or not (Path(comfy_path) / "main.py").is_file():
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout and run with the python of its venv")
    parent = Path(tempfile.mkdtemp(prefix="normguard-bench-"))
    (parent / "normguard").symlink_to(REPO, target_is_directory=True)  # the repo root is the package
    sys.path[:0] = [comfy_path, str(parent)]
    import torch
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True  # before comfy.model_management is imported


def build_model(depth: int):
    """A randomly initialised SD3 MMDiT (hidden 64 * depth) in a ModelPatcher, as UNETLoader makes one."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    config = comfy.supported_models.SD3(
        {
            "in_channels": 16,
            "out_channels": 16,
            "patch_size": 2,
            "depth": depth,
            "adm_in_channels": 2048,
            "context_embedder_config": {
                "target": "torch.nn.Linear",
                "params": {"in_features": 4096, "out_features": 64 * depth},
            },
            "pos_embed_max_size": 96,
            "num_patches": 96 * 96,
            "pos_embed_scaling_factor": None,
            "input_size": None,
            "x_block_self_attn_layers": [],
        }
    )
    model = config.get_model({}, device=mm.get_torch_device())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in [*model.diffusion_model.parameters(), *model.diffusion_model.buffers()]:
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=gen).to(p.device) * 0.02)
    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=4, help="MMDiT depth (hidden = 64 * depth)")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (latent side = size / 8)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (plain, probed)")
    ap.add_argument(
        "--reference", action="store_true", help="also time the probe with a reference (2x passes)"
    )
    a = ap.parse_args()
    setup_imports()
    import comfy.model_management as mm
    import comfy.sample
    import torch

    from normguard.nodes.probe import probed_model
    from normguard.nodes.probe_log import ProbeLog

    torch.set_grad_enabled(False)
    model = build_model(a.depth)
    gen = torch.Generator().manual_seed(1)

    def conditioning():
        return [
            [torch.randn(1, 77, 4096, generator=gen), {"pooled_output": torch.randn(1, 2048, generator=gen)}]
        ]

    positive, negative = conditioning(), conditioning()
    latent = torch.zeros(a.batch, 16, a.size // 8, a.size // 8)
    logs = {"probe": ProbeLog("bench")}
    variants = {"plain": model, "probe": probed_model(model, None, logs["probe"], rescale=False)}
    if a.reference:
        logs["probe+reference"] = ProbeLog("bench-ref", has_reference=True)
        variants["probe+reference"] = probed_model(model, model, logs["probe+reference"], rescale=False)

    def sample(m, seed: int) -> float:
        noise = comfy.sample.prepare_noise(latent, seed)
        t = time.perf_counter()
        comfy.sample.sample(
            m,
            noise,
            a.steps,
            a.cfg,
            a.sampler,
            "simple",
            positive,
            negative,
            latent,
            seed=seed,
            disable_pbar=True,
        )
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t

    with torch.inference_mode():
        for m in variants.values():  # warm-up: loading, allocator, kernels
            sample(m, 0)
        times = {k: [] for k in variants}
        for r in range(a.rounds):
            for k, m in variants.items():
                times[k].append(sample(m, 100 + r))
    for k, log in logs.items():
        assert len(log.records) == a.steps, f"{k}: {len(log.records)} records for {a.steps} steps"
    device = mm.get_torch_device()
    print(
        f"device: {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}"
    )
    print(
        f"SD3 MMDiT depth {a.depth} (hidden {64 * a.depth}), {a.size}x{a.size} px, batch {a.batch}, "
        f"{a.sampler} {a.steps} steps, cfg {a.cfg}, {a.rounds} rounds"
    )
    base = statistics.median(times["plain"])
    print(f"{'variant':<18}{'median s':>10}{'min s':>10}{'ratio':>8}{'ms/step extra':>15}")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"{k:<18}{med:>10.4f}{min(ts):>10.4f}{med / base:>8.3f}{(med - base) * 1000 / a.steps:>15.3f}")


if __name__ == "__main__":
    main()
