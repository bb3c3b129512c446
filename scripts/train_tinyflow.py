"""Train the shipped TinyFlow model on procedural scenes (rectified flow matching), one command:

    python scripts/train_tinyflow.py                      # -> trainer/models/assets/tinyflow/
    python scripts/train_tinyflow.py --smoke --out /tmp/tf  # a few steps, to check the script runs

Data are rendered on the fly (trainer/models/scenes.py), so nothing is downloaded. The prompt is
dropped for a fraction of samples so classifier-free guidance works, and single attributes are
left out of prompts so partial prompts work. The exponential moving average of the weights is
what gets saved.

The run is bounded by --steps and by --minutes (the machine may be shared): the learning-rate
schedule follows whichever is further along, so a slow machine still finishes the whole schedule
in time. When the steps bound it, the result is deterministic given --seed and --threads.
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
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from normguard.trainer.models.scenes import scene_batches
from normguard.trainer.models.tinyflow import TinyFlowConfig, TinyFlowModel

ASSET_DIR = Path(__file__).resolve().parents[1] / "trainer" / "models" / "assets" / "tinyflow"
TINYFLOW_KEYS = {f.name for f in fields(TinyFlowConfig)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ASSET_DIR, help="folder for config.json + model.safetensors")
    p.add_argument("--steps", type=int, default=3500)
    p.add_argument("--minutes", type=float, default=55.0, help="wall-clock budget (schedule compresses)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    p.add_argument("--cfg-drop", type=float, default=0.1, help="fraction of samples trained without prompt")
    p.add_argument("--omit", type=float, default=0.1, help="chance to leave each attribute out of a prompt")
    p.add_argument("--shift", type=float, default=2.0, help="sampling-schedule shift stored in the config")
    p.add_argument("--conv-widths", type=int, nargs="+", default=TinyFlowConfig().conv_widths)
    p.add_argument("--hidden", type=int, default=TinyFlowConfig.hidden)
    p.add_argument("--depth", type=int, default=TinyFlowConfig.depth)
    p.add_argument("--heads", type=int, default=TinyFlowConfig.heads)
    p.add_argument("--mlp-ratio", type=float, default=TinyFlowConfig.mlp_ratio)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it)")
    p.add_argument("--save-every", type=int, default=1000, help="also save the EMA every N steps")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--smoke", action="store_true", help="4 steps of batch 8: checks that the script runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.warmup, args.log_every, args.save_every = 4, 8, 1, 1, 0
    for name in ("steps", "batch", "log_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def flow_matching_loss(
    model: TinyFlowModel, x0: torch.Tensor, tokens: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Rectified flow: x_t = (1 - t) x0 + t eps with logit-normal t, regress v on u = eps - x0."""
    eps = torch.randn(x0.shape, generator=gen)
    t = torch.sigmoid(torch.randn(x0.shape[0], generator=gen))
    tb = t[:, None, None, None]
    v = model((1 - tb) * x0 + tb * eps, t, tokens)
    return torch.mean((v - (eps - x0)) ** 2)


def lr_at(step: int, progress: float, args: argparse.Namespace) -> float:
    """Linear warm-up over --warmup steps, then cosine decay to 10% of --lr as progress goes to 1."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def ema_update(ema: TinyFlowModel, model: TinyFlowModel, step: int, decay: float) -> None:
    d = min(decay, (1 + step) / (10 + step))  # short memory early, so the EMA is usable soon
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1 - d)


def save(ema: TinyFlowModel, args: argparse.Namespace, step: int, seconds: float) -> None:
    ema.save_pretrained(args.out)
    facts = {
        "script": "scripts/train_tinyflow.py",
        "steps_done": step,
        "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in ema.parameters()),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
    }
    (Path(args.out) / "training.json").write_text(json.dumps(facts, indent=1))


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # the architecture flags are named like TinyFlowConfig's fields
    config = replace(TinyFlowConfig(), **{k: v for k, v in vars(args).items() if k in TINYFLOW_KEYS})
    model = TinyFlowModel(config)
    ema = TinyFlowModel(config)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    tokenize = model.tokenizer()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "emb" in name or "pos" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),
    )
    gen = torch.Generator().manual_seed(args.seed)
    drop_rng = np.random.default_rng(args.seed + 1)
    batches = scene_batches(args.seed, args.batch, omit_prob=args.omit)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"TinyFlow {n_params / 1e6:.2f}M parameters, {args.steps} steps of batch {args.batch}", flush=True)
    start, running, step = time.time(), 0.0, 0
    while True:
        progress = max(step / args.steps, (time.time() - start) / 60 / args.minutes)
        if progress >= 1:
            break
        images, prompts, _ = next(batches)
        prompts = ["" if drop_rng.random() < args.cfg_drop else p for p in prompts]
        x0 = torch.from_numpy(images) * 2 - 1
        for group in opt.param_groups:
            group["lr"] = lr = lr_at(step, progress, args)
        loss = flow_matching_loss(model, x0, tokenize(prompts), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, step, args.ema)
        running += loss.item()
        step += 1
        if step % args.log_every == 0:
            elapsed = time.time() - start
            print(
                f"step {step} loss {running / args.log_every:.4f} lr {lr:.2e} "
                f"{elapsed / step:.3f} s/step elapsed {elapsed / 60:.1f} min",
                flush=True,
            )
            running = 0.0
        if args.save_every and step % args.save_every == 0:
            save(ema, args, step, time.time() - start)
    save(ema, args, step, time.time() - start)
    print(f"saved {args.out} after {(time.time() - start) / 60:.1f} min", flush=True)
    return Path(args.out)


if __name__ == "__main__":
    main()
