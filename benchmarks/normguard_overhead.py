"""NormGuard's cost per RL iteration: weight > 0 vs weight 0, measured side by side, per method.

Where the base method already runs a reference pass (DPO; any method with a KL term) NormGuard
reuses it and should cost nothing; elsewhere it adds one no-grad reference forward per trained batch.

    python benchmarks/normguard_overhead.py [--model builtin|PATH] [--iterations 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch

from normguard.trainer.config import TrainConfig
from normguard.trainer.loop import Trainer, generator


def iteration_times(trainer: Trainer, iterations: int) -> list[float]:
    """Seconds per iteration (rollout + rewards + training), run through the trainer's own steps."""
    times = []
    for it in range(iterations):
        t = time.perf_counter()
        gen = generator(trainer.cfg.seed, it)
        data, _ = trainer.collect(it, gen)
        trainer.optimize(data, gen)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of (weight 0, weight > 0)")
    ap.add_argument("--methods", nargs="+", default=["nft", "awm", "dpo", "grpo"])
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--sample-steps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, cuda={torch.cuda.is_available()}"
    )
    print(f"{'method':6} {'kl':>5} {'weight 0 (s/it)':>16} {'weight 1 (s/it)':>16} {'ratio':>7}")
    for method in args.methods:
        for kl in [0.0, 0.01] if method in ("awm", "grpo") else [0.0]:
            with tempfile.TemporaryDirectory() as tmp:
                base = TrainConfig(
                    model=args.model,
                    method=method,
                    prompts=["a red circle", "a blue square"],
                    rewards=["jpeg_incompressibility"],
                    group_size=args.group_size,
                    sample_steps=args.sample_steps,
                    kl_weight=kl,
                    eval_every=0,
                    tensorboard=False,
                    cfg_scale=2.0 if method == "grpo" else 1.0,
                    iterations=args.iterations,
                )
                trainers = {
                    w: Trainer(base.replace(normguard_weight=w, out=f"{tmp}/w{w}")) for w in (0.0, 1.0)
                }
                times = {0.0: [], 1.0: []}
                for _ in range(args.rounds):  # alternate, so drifts in machine load hit both alike
                    for w, tr in trainers.items():
                        times[w] += iteration_times(tr, args.iterations)[1:]  # drop the warm-up iteration
            t0, t1 = statistics.median(times[0.0]), statistics.median(times[1.0])
            print(f"{method:6} {kl:>5} {t0:>16.4f} {t1:>16.4f} {t1 / t0:>7.3f}")


if __name__ == "__main__":
    main()
