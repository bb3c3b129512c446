"""Train the shipped judge (trainer/models/judge.py) on procedural scenes, one command:

    python scripts/train_judge.py                        # -> trainer/models/assets/judge/
    python scripts/train_judge.py --smoke --out /tmp/j   # a few steps, to check the script runs

Light noise and blur augmentation keep it reliable on generated images (a few-step sample is
softer than the data) without teaching it to ignore colour or contrast, which the Fréchet
distance must see. After training it stores the reference feature statistics of real scenes and
reports its held-out accuracy per attribute in training.json.
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that spin while waiting burn half the time slices: wait passively.
# It must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from normguard.trainer.models.judge import Judge, JudgeConfig, JudgeNet, feature_stats, frechet_distance
from normguard.trainer.models.scenes import ATTRIBUTES, sample_scenes, scene_batches

ASSET_DIR = Path(__file__).resolve().parents[1] / "trainer" / "models" / "assets" / "judge"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ASSET_DIR)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--reference", type=int, default=20000, help="real scenes for the reference statistics")
    p.add_argument("--heldout", type=int, default=4000, help="real scenes to measure the accuracy on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--smoke", action="store_true", help="4 small steps and small statistics sets")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.reference, args.heldout, args.log_every = 4, 16, 256, 64, 1
    for name in ("steps", "batch", "log_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def labels(attrs: list[dict[str, str]]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([ATTRIBUTES[k].index(a[k]) for a in attrs]) for k in ATTRIBUTES}


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random mild blur (a blend with a 3x3 box blur) and Gaussian noise, per image."""
    b = images.shape[0]
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    w = torch.rand(b, 1, 1, 1, generator=gen) * 0.6 * (torch.rand(b, 1, 1, 1, generator=gen) < 0.5)
    noise = torch.randn(images.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen) * 0.04
    return (images * (1 - w) + blurred * w + noise).clamp(0, 1)


@torch.no_grad()
def features_of(net: JudgeNet, images: np.ndarray, chunk: int = 1000) -> torch.Tensor:
    return torch.cat(
        [net.features(torch.from_numpy(images[i : i + chunk])) for i in range(0, len(images), chunk)]
    )


@torch.no_grad()
def heldout_accuracy(net: JudgeNet, images: np.ndarray, attrs: list[dict[str, str]]) -> dict[str, float]:
    logits = net(torch.from_numpy(images))
    truth = labels(attrs)
    return {k: float((logits[k].argmax(-1) == truth[k]).float().mean()) for k in ATTRIBUTES}


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net = JudgeNet(JudgeConfig())
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    batches = scene_batches(args.seed, args.batch)
    start, running = time.time(), 0.0
    for step in range(args.steps):
        images, _, attrs = next(batches)
        for group in opt.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        logits = net(augment(torch.from_numpy(images), gen))
        truth = labels(attrs)
        loss = sum(F.cross_entropy(logits[k], truth[k]) for k in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        if (step + 1) % args.log_every == 0:
            print(
                f"step {step + 1} loss {running / args.log_every:.4f} {time.time() - start:.0f}s", flush=True
            )
            running = 0.0
    net.eval()
    rng = np.random.default_rng(args.seed + 1_000_003)  # scenes the judge never trained on
    held_images, _, held_attrs = sample_scenes(rng, args.heldout)
    accuracy = heldout_accuracy(net, held_images, held_attrs)
    ref_images, _, _ = sample_scenes(rng, args.reference)
    ref_feats = features_of(net, ref_images)
    mu, cov = feature_stats(ref_feats)
    judge = Judge(net, mu, cov)
    judge.save(args.out)
    n = min(512, args.heldout // 2)
    held_feats = features_of(net, held_images)
    facts = {
        "script": "scripts/train_judge.py",
        "train_seconds": round(time.time() - start, 1),
        "parameters": sum(p.numel() for p in net.parameters()),
        "heldout_accuracy": accuracy,
        f"frechet_real_{n}_vs_reference": judge.frechet_to_data(torch.from_numpy(held_images[:n])),
        f"frechet_real_{n}_vs_real_{n}": frechet_distance(held_feats[:n], held_feats[n : 2 * n]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
    }
    (Path(args.out) / "training.json").write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts, indent=1), flush=True)
    return Path(args.out)


if __name__ == "__main__":
    main()
