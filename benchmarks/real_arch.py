"""Speed and memory at the real architectures (random weights): the GPU check of "fast and lean".

Builds SD3.5-Medium- and FLUX.1-dev-shaped transformers and VAEs with random weights (text encoders are
replaced by fixed random embeddings of the right shapes: they run once per prompt and leave the GPU),
runs the production Trainer on them and prints one table:

1. NormGuard's overhead per RL iteration, weight 1 vs 0 (NFT: own reference pass; DPO: reused);
2. a rollout step with the LoRA fused vs the base model's forward (and plain peft LoRA);
3. the whole iteration vs its model passes (rollouts, reference/old forwards, trained fwd+bwd);
4. peak memory: SD3.5-M NFT 512px group 8 r32 (target <= 16 GB), FLUX.1-dev with fp8 base weights
   and gradient checkpointing (target <= 24 GB).

    python benchmarks/real_arch.py            # on a GPU: about 3-5 minutes on one H100
    python benchmarks/real_arch.py --tiny     # the same code path with tiny shapes, on CPU, in seconds
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import tempfile
import time

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

from normguard.trainer.backends.diffusers import DiffusersBackend
from normguard.trainer.config import TrainConfig
from normguard.trainer.families import flux, sd3
from normguard.trainer.loop import Trainer, generator
from normguard.trainer.models.diffusers_shapes import FLUX_DEV, SD35M, flux_pipeline, sd3_pipeline
from normguard.trainer.models.diffusers_shapes import VAE_16CH as VAE

TINY = {
    "sd3": dict(
        SD35M,
        num_layers=2,
        num_attention_heads=2,
        caption_projection_dim=128,
        joint_attention_dim=64,
        pooled_projection_dim=32,
        dual_attention_layers=(0,),
        pos_embed_max_size=64,
    ),
    "flux": dict(
        FLUX_DEV,
        num_layers=1,
        num_single_layers=1,
        num_attention_heads=1,
        joint_attention_dim=64,
        pooled_projection_dim=32,
    ),
    "vae": dict(VAE, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4),
}


class SyntheticText(DiffusersBackend):
    """The real transformer and VAE; prompts map to fixed random embeddings (no text encoders)."""

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tr = self.pipe.transformer.config
        tokens = 333 if self.name == "sd3" else 512  # CLIP 77 + T5 256 (SD3); T5 512 (FLUX)
        out = {"prompt_embeds": [], "pooled_prompt_embeds": []}
        for p in prompts:
            g = torch.Generator().manual_seed(int(hashlib.sha256(p.encode()).hexdigest()[:8], 16))
            out["prompt_embeds"].append(torch.randn(tokens, tr.joint_attention_dim, generator=g))
            out["pooled_prompt_embeds"].append(torch.randn(tr.pooled_projection_dim, generator=g))
        return {k: torch.stack(v).to(self.device, self.dtype) for k, v in out.items()}


def build(family: str, device: torch.device, dtype: torch.dtype, tiny: bool) -> SyntheticText:
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build directly in the compute dtype: FLUX is 48 GB in fp32
    try:
        with torch.device(device):
            vae = AutoencoderKL(**(TINY["vae"] if tiny else VAE))
            if family == "sd3":
                pipe = sd3_pipeline(SD3Transformer2DModel(**(TINY["sd3"] if tiny else SD35M)), vae)
                fam = sd3.Adapter
            else:
                pipe = flux_pipeline(FluxTransformer2DModel(**(TINY["flux"] if tiny else FLUX_DEV)), vae)
                fam = flux.Adapter
    finally:
        torch.set_default_dtype(prev)
    return SyntheticText(pipe, fam, source=f"{family}-random", guidance=3.5 if family == "flux" else None)


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def run_iterations(trainer: Trainer, n: int) -> list[dict]:
    rows = []
    for it in range(n):
        t = clock(trainer.device)
        gen = generator(trainer.cfg.seed, it)
        data, metrics = trainer.collect(it, gen)
        metrics |= trainer.optimize(data, gen)
        metrics["time_iteration"] = clock(trainer.device) - t
        rows.append(metrics)
    return rows[1:] if n > 1 else rows  # the first warms up


def config(tmp: str, **kw) -> TrainConfig:
    base = dict(
        model="synthetic",
        prompts=["a red circle", "a blue square"],
        rewards=["jpeg_incompressibility"],
        eval_every=0,
        tensorboard=False,
        out=f"{tmp}/run-{time.time_ns()}",
        lora_rank=32,
        lora_alpha=32,
    )
    return TrainConfig(**(base | kw))


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (checks the code path)")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--skip-flux", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = 64 if args.tiny else 512
    table: list[tuple[str, str, str]] = []
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.machine()
    print(
        f"device: {name}, torch {torch.__version__}, {dtype}, {size}px{' (tiny shapes)' if args.tiny else ''}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        backend = build("sd3", device, dtype, args.tiny)
        common = dict(
            height=size,
            width=size,
            group_size=8,
            groups_per_iteration=1,
            sample_steps=10,
            train_timesteps=4,
            micro_batch_size=8,
            device=device.type,
        )
        # 1 + 3: NormGuard overhead (alternating), and the iteration breakdown
        for method in ("nft", "dpo"):
            times = {0.0: [], 1.0: []}
            for w in (0.0, 1.0, 0.0, 1.0):
                b = build("sd3", device, dtype, args.tiny) if times[0.0] or times[1.0] else backend
                rows = run_iterations(
                    Trainer(config(tmp, method=method, normguard_weight=w, **common), backend=b),
                    args.iterations,
                )
                times[w] += [r["time_iteration"] for r in rows]
                if method == "nft" and w == 1.0 and len(times[1.0]) == len(rows):
                    passes = median(rows, "time_sample") + median(rows, "time_train_passes")
                    ratio = median(rows, "time_iteration") / passes
                    table.append(("3. iteration / model passes (SD3.5-M, NFT)", f"{ratio:.3f}", "<= 1.2"))
            ratio = statistics.median(times[1.0]) / statistics.median(times[0.0])
            target = "<= 1.15" if method == "nft" else "<= 1.02"
            table.append((f"1. NormGuard overhead, {method} (weight 1 / 0)", f"{ratio:.3f}", target))
        # 2: rollout step, fused vs base
        b = build("sd3", device, dtype, args.tiny)
        x = torch.randn(8, *b.latent_shape(size, size), device=device, dtype=dtype)
        s = torch.full((8,), 0.7, device=device)
        cond = b.encode_prompts(["a red circle"] * 8)

        def step_time(backend: SyntheticText) -> float:
            for _ in range(2):
                backend.velocity(x, s, cond)
            t = clock(device)
            for _ in range(5):
                backend.velocity(x, s, cond)
            return (clock(device) - t) / 5

        with torch.no_grad():
            base = step_time(b)
            b.add_lora(32, 32, init="gaussian_nonzero")
            unfused = step_time(b)
            v_plain = b.velocity(x, s, cond)
            with b.sampling():
                fused = step_time(b)
                v_fused = b.velocity(x, s, cond)
        table.append(
            ("2. rollout step, peft LoRA / base (SD3.5-M, batch 8)", f"{unfused / base:.3f}", "(1.32 seen)")
        )
        table.append(("2. rollout step, fused LoRA / base", f"{fused / base:.3f}", "<= 1.05"))
        table.append(
            ("2. max |fused - unfused| velocity", f"{(v_fused - v_plain).abs().max().item():.2e}", "rounding")
        )
        del b, backend
        # 4: memory
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            sd3 = build("sd3", device, dtype, args.tiny)
            run_iterations(
                Trainer(config(tmp, method="nft", gradient_checkpointing=True, **common), backend=sd3), 2
            )
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            table.append(("4. peak memory SD3.5-M NFT 512px g8 r32, ckpt (GB)", f"{peak:.1f}", "<= 16"))
            del sd3
        if not args.skip_flux:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            flux = build("flux", device, dtype, args.tiny)
            flux_cfg = dict(common, group_size=4, micro_batch_size=2)
            rows = run_iterations(
                Trainer(
                    config(tmp, method="nft", gradient_checkpointing=True, fp8_base=True, **flux_cfg),
                    backend=flux,
                ),
                2,
            )
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**30
                table.append(
                    ("4. peak memory FLUX.1-dev NFT 512px g4 r32, fp8+ckpt (GB)", f"{peak:.1f}", "<= 24")
                )
            table.append(("   FLUX.1-dev iteration (s)", f"{median(rows, 'time_iteration'):.2f}", ""))
    print(f"\n{'measure':62} {'value':>10}  target")
    for k, v, t in table:
        print(f"{k:62} {v:>10}  {t}")


if __name__ == "__main__":
    main()
