"""Rollout step cost with a LoRA: plain peft (unfused) vs fused (W + sBA per call) vs the base model.

The target (issue: fast and lean) is a fused step within 1.05x the base model's forward; plain peft
LoRA runs three matmuls per adapted layer. Measured side by side on an SD3.5-Medium-shaped transformer
(real width and heads, fewer blocks so it runs on a CPU), random weights, batch B, no_grad.

    python benchmarks/rollout_speed.py [--layers 4] [--size 256] [--batch 2] [--rank 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from diffusers import SD3Transformer2DModel

from normguard.trainer.backends.peft_lora import PeftLoraBackend
from normguard.trainer.families.sd3 import FAMILY as SD3
from normguard.trainer.models.diffusers_shapes import SD35M


class Bare(PeftLoraBackend):
    """Just enough backend around a transformer to use the production adapter code."""

    name = "sd3-arch"

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    @property
    def module(self):
        return self.transformer

    def _forward(self, module, x, sigma, cond):
        return module(
            hidden_states=x,
            timestep=sigma * 1000,
            encoder_hidden_states=cond["ctx"],
            pooled_projections=cond["pooled"],
            return_dict=False,
        )[0]

    encode_prompts = latent_shape = schedule = decode = None


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    shape = dict(SD35M, num_layers=args.layers, pos_embed_max_size=192, dual_attention_layers=(0,))
    tr = SD3Transformer2DModel(**shape | {"sample_size": args.size // 8}).eval()
    b = Bare(tr)
    x = torch.randn(args.batch, 16, args.size // 8, args.size // 8)
    sigma = torch.full((args.batch,), 0.6)
    cond = {"ctx": torch.randn(args.batch, 77, 4096), "pooled": torch.randn(args.batch, 2048)}
    with torch.no_grad():
        base = timed(lambda: b.velocity(x, sigma, cond), args.repeats)
        b.add_lora(args.rank, args.rank, SD3.lora_targets, init="gaussian_nonzero")
        unfused = timed(lambda: b.velocity(x, sigma, cond), args.repeats)
        with b.sampling():
            fused = timed(lambda: b.velocity(x, sigma, cond), args.repeats)
            v_fused = b.velocity(x, sigma, cond)
        v_plain = b.velocity(x, sigma, cond)
    params = sum(p.numel() for p in tr.parameters()) / 1e6
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"SD3.5-M-shaped transformer, {args.layers} blocks ({params:.0f} M params), {args.size}px, batch "
        f"{args.batch}, LoRA r{args.rank} on {len(SD3.lora_targets)} attention projections"
    )
    print(f"{'variant':22} {'s/step':>8} {'vs base':>8}")
    for name, t in (("base model", base), ("peft LoRA (unfused)", unfused), ("fused LoRA (ours)", fused)):
        print(f"{name:22} {t:8.4f} {t / base:8.3f}")
    print(
        f"max |fused - unfused| = {(v_fused - v_plain).abs().max().item():.2e} (|v| max "
        f"{v_plain.abs().max().item():.2f})"
    )


if __name__ == "__main__":
    main()
