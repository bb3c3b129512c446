"""Train the shipped judge (trainer/models/judge.py) on procedural scenes, one command:

    python scripts/train_judge.py                        # -> trainer/models/assets/judge/
    python scripts/train_judge.py --smoke --out /tmp/j   # a few steps, to check the script runs

It learns the attributes (cross-entropy) and the continuous style parameters each scene was
rendered with (mean squared error on standardised values). Half of each batch is blurred or
sharpened by a random amount, which it also regresses: so it reads soft few-step samples correctly
and its features see over-sharpening instead of being taught to ignore it. Afterwards it stores the
reference feature statistics of real scenes and writes its held-out accuracy per attribute, the
R^2 of each style parameter and baseline Fréchet distances to training.json.
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
from normguard.trainer.models.judge import (
    STYLE_TARGETS,
    Judge,
    JudgeConfig,
    JudgeNet,
    feature_stats,
    frechet_distance,
    sharpen,
)
from normguard.trainer.models.scenes import (
    ATTRIBUTES,
    STYLE_PARAMS,
    random_attributes,
    render_batch_with_style,
)

ASSET_DIR = Path(__file__).resolve().parents[1] / "trainer" / "models" / "assets" / "judge"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ASSET_DIR)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--style-weight", type=float, default=1.0, help="weight of the style regression loss")
    p.add_argument("--reference", type=int, default=20000, help="real scenes for the reference statistics")
    p.add_argument("--heldout", type=int, default=4000, help="real scenes to measure the accuracy on")
    p.add_argument("--style-sample", type=int, default=4096, help="scenes to standardise style targets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--smoke", action="store_true", help="4 small steps and small statistics sets")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.reference, args.heldout, args.style_sample = 4, 16, 128, 64, 128
        args.log_every = 1
    for name in ("steps", "batch", "log_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def labels(attrs: list[dict[str, str]]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([ATTRIBUTES[k].index(a[k]) for a in attrs]) for k in ATTRIBUTES}


def scenes_with_style(
    rng: np.random.Generator, n: int, degrade: bool = True
) -> tuple[torch.Tensor, list[dict], torch.Tensor]:
    """n random scenes: images, attributes and style targets [n, S] in STYLE_TARGETS order. With
    degrade, half of the images are blurred or sharpened by a random amount (the last target)."""
    attrs = [random_attributes(rng) for _ in range(n)]
    images, style = render_batch_with_style(attrs, rng)
    amount = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(-1.0, 2.0, n)) if degrade else np.zeros(n)
    targets = np.stack([*(style[k] for k in STYLE_PARAMS), amount], axis=1).astype(np.float32)
    images = sharpen(torch.from_numpy(images), torch.from_numpy(amount).float())
    return images, attrs, torch.from_numpy(targets)


@torch.no_grad()
def heldout_scores(
    net: JudgeNet, images: torch.Tensor, attrs: list[dict[str, str]], targets: torch.Tensor
) -> tuple[dict[str, float], dict[str, float]]:
    """Accuracy per attribute and R^2 per style target (targets standardised like in training)."""
    logits, predicted = net(images)
    truth = labels(attrs)
    accuracy = {k: float((logits[k].argmax(-1) == truth[k]).float().mean()) for k in ATTRIBUTES}
    r2 = 1 - (predicted - targets).pow(2).mean(0) / targets.var(0)
    return accuracy, {k: round(float(v), 4) for k, v in zip(STYLE_TARGETS, r2, strict=True)}


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net = JudgeNet(JudgeConfig())
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)
    targets_all = scenes_with_style(np.random.default_rng(args.seed + 7), args.style_sample)[2]
    target_mean, target_std = targets_all.mean(0), targets_all.std(0)
    start, running = time.time(), 0.0
    for step in range(args.steps):
        images, attrs, targets = scenes_with_style(rng, args.batch)
        for group in opt.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        logits, predicted = net(images)
        truth = labels(attrs)
        loss = sum(F.cross_entropy(logits[k], truth[k]) for k in ATTRIBUTES)
        loss = loss + args.style_weight * F.mse_loss(predicted, (targets - target_mean) / target_std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        if (step + 1) % args.log_every == 0:
            seconds = time.time() - start
            print(f"step {step + 1} loss {running / args.log_every:.4f} {seconds:.0f}s", flush=True)
            running = 0.0
    net.eval()
    rng = np.random.default_rng(args.seed + 1_000_003)  # scenes the judge never trained on
    held_images, held_attrs, held_targets = scenes_with_style(rng, args.heldout)
    accuracy, r2 = heldout_scores(net, held_images, held_attrs, (held_targets - target_mean) / target_std)
    clean, clean_attrs, _ = scenes_with_style(rng, args.heldout, degrade=False)
    clean_accuracy, _ = heldout_scores(net, clean, clean_attrs, held_targets)
    with torch.no_grad():  # the reference: real scenes, neither blurred nor sharpened
        reference = scenes_with_style(rng, args.reference, degrade=False)[0]
        raw = torch.cat([net.features(part) for part in reference.split(1000)])
    feature_mean, feature_std = raw.mean(0), raw.std(0).clamp_min(1e-6)
    judge = Judge(net, feature_mean, feature_std, *feature_stats((raw - feature_mean) / feature_std))
    judge.save(args.out)
    n = min(512, args.heldout // 2)
    clean_feats = judge.features(clean)
    facts = {
        "script": "scripts/train_judge.py",
        "train_seconds": round(time.time() - start, 1),
        "parameters": sum(p.numel() for p in net.parameters()),
        "heldout_accuracy": clean_accuracy,
        "heldout_accuracy_half_blurred_or_sharpened": accuracy,
        "heldout_style_r2": r2,
        f"frechet_real_{n}_vs_reference": judge.frechet_to_data(clean[:n]),
        f"frechet_real_{n}_vs_real_{n}": frechet_distance(clean_feats[:n], clean_feats[n : 2 * n]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
    }
    (Path(args.out) / "training.json").write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts, indent=1), flush=True)
    return Path(args.out)


if __name__ == "__main__":
    main()
