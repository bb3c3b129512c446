"""Measure a TinyFlow model with the judge: prompt-attribute accuracy and Fréchet distance to the
data at several step counts and schedule shifts, the CPU time of one rollout, and a sample grid.

    python scripts/eval_tinyflow.py                          # the shipped model
    python scripts/eval_tinyflow.py --model DIR --shifts 1 2 3 --grid out.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from normguard.trainer.backends.tinyflow import TinyFlowBackend
from normguard.trainer.models.judge import Judge
from normguard.trainer.models.scenes import ATTRIBUTES, prompt_for, random_attributes
from normguard.trainer.rollout import sample
from PIL import Image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="TinyFlow folder (default: the shipped one)")
    p.add_argument("--judge", type=Path, default=None, help="judge folder (default: the shipped one)")
    p.add_argument("--n", type=int, default=512, help="samples per setting")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 4])
    p.add_argument("--shifts", type=float, nargs="+", default=None, help="default: the model's own")
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0])
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grid", type=Path, default=None, help="PNG of 64 samples per step count")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    return p.parse_args(argv)


def schedule(steps: int, shift: float) -> torch.Tensor:
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def generate(
    backend: TinyFlowBackend,
    prompts: list[str],
    steps: int,
    shift: float,
    cfg: float,
    seed: int,
    chunk: int = 128,
) -> torch.Tensor:
    """Images [N, 3, H, W] in [0, 1] from the Euler ODE (seeded noise, optional CFG)."""
    size = backend.model.config.image_size
    noise = torch.randn(
        (len(prompts), *backend.latent_shape(size, size)), generator=torch.Generator().manual_seed(seed)
    )
    out = []
    for i in range(0, len(prompts), chunk):
        part = prompts[i : i + chunk]
        uncond = backend.encode_prompts([""] * len(part)) if cfg != 1.0 else None
        roll = sample(
            backend,
            backend.encode_prompts(part),
            noise[i : i + chunk],
            schedule(steps, shift),
            uncond=uncond,
            cfg=cfg,
        )
        out.append(backend.decode(roll.latents))
    return torch.cat(out)


def save_grid(images: torch.Tensor, path: Path, columns: int = 8, zoom: int = 3) -> None:
    n = images.shape[0] - images.shape[0] % columns
    rows = n // columns
    arr = (images[:n].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    _, c, h, w = arr.shape
    grid = arr.reshape(rows, columns, c, h, w).transpose(0, 3, 1, 4, 2).reshape(rows * h, columns * w, c)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((columns * w * zoom, rows * h * zoom), Image.NEAREST).save(path)


def rollout_ms(backend: TinyFlowBackend, repeats: int = 7) -> float:
    """Median wall time of one rollout of 8 images x 10 Euler steps (no CFG)."""
    cond = backend.encode_prompts(["a small red circle on the left, dark warm background"] * 8)
    noise = torch.randn(8, *backend.latent_shape(32, 32))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample(backend, cond, noise, backend.schedule(10, 32, 32))
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    backend = TinyFlowBackend.from_pretrained(args.model)
    judge = Judge.load(args.judge)
    rng = np.random.default_rng(args.seed)
    prompts = [prompt_for(random_attributes(rng)) for _ in range(args.n)]
    results: dict = {"rollout_8x10_ms": round(rollout_ms(backend), 1), "settings": []}
    print(f"rollout of 8 images x 10 steps: {results['rollout_8x10_ms']} ms", flush=True)
    for steps in args.steps:
        for shift in args.shifts or [backend.model.config.shift]:
            for cfg in args.cfg:
                images = generate(backend, prompts, steps, shift, cfg, args.seed)
                hits = judge.attribute_hits(images, prompts)
                row = {
                    "steps": steps,
                    "shift": shift,
                    "cfg": cfg,
                    "accuracy": round(float(judge.attribute_accuracy(images, prompts).mean()), 4),
                    "all_correct": round(float(np.mean([all(h.values()) for h in hits])), 4),
                    "per_attribute": {k: round(float(np.mean([h[k] for h in hits])), 3) for k in ATTRIBUTES},
                    "frechet": round(judge.frechet_to_data(images), 3),
                }
                results["settings"].append(row)
                print(json.dumps(row), flush=True)
                if args.grid is not None and shift == (args.shifts or [shift])[0] and cfg == args.cfg[0]:
                    save_grid(
                        images[:64], args.grid.with_name(f"{args.grid.stem}_{steps}steps{args.grid.suffix}")
                    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
