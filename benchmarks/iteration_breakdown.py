"""Where an RL iteration's time goes: model passes vs everything else (rewards, VAE decoding, data
movement, Python). Target (issue: fast and lean): the whole iteration within 1.2x the sum of its
unavoidable model passes (rollout forwards, trained forward+backward, reference/old-policy forwards).

    python benchmarks/iteration_breakdown.py [--model builtin|PATH] [--method nft] [--iterations 5]

The per-phase times are the trainer's own metrics (time_sample: rollout passes; time_train_passes:
reference/old forwards + trained forward/backward; time_decode; time_reward; time_optimizer).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile

import torch

from normguard.trainer.config import TrainConfig
from normguard.trainer.loop import Trainer, generator

PHASES = ("time_sample", "time_train_passes", "time_decode", "time_reward", "time_optimizer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--method", default="nft")
    ap.add_argument("--reward", default="jpeg_incompressibility")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--sample-steps", type=int, default=10)
    ap.add_argument("--normguard-weight", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            model=args.model,
            method=args.method,
            rewards=[args.reward],
            prompts=["a red circle", "a blue square on the left"],
            group_size=args.group_size,
            sample_steps=args.sample_steps,
            normguard_weight=args.normguard_weight,
            eval_every=0,
            tensorboard=False,
            out=f"{tmp}/run",
            iterations=args.iterations + 1,
        )
        trainer = Trainer(cfg)
        rows = []
        for it in range(args.iterations + 1):
            t = trainer._clock()
            gen = generator(cfg.seed, it)
            data, metrics = trainer.collect(it, gen)
            metrics |= trainer.optimize(data, gen)
            metrics["time_iteration"] = trainer._clock() - t
            rows.append(metrics)
    rows = rows[1:]  # the first iteration warms up
    med = {k: statistics.median(r[k] for r in rows) for k in (*PHASES, "time_iteration")}
    passes = med["time_sample"] + med["time_train_passes"]
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"cuda={torch.cuda.is_available()}"
    )
    print(
        f"model {args.model}, {args.method}, group {args.group_size}, {args.sample_steps} steps, "
        f"normguard_weight {args.normguard_weight}; median of {len(rows)} iterations"
    )
    print(f"{'phase':20} {'seconds':>9} {'share':>7}")
    for k in (*PHASES, "time_iteration"):
        print(f"{k[5:]:20} {med[k]:9.4f} {med[k] / med['time_iteration']:7.1%}")
    print(f"iteration / model passes = {med['time_iteration'] / passes:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
