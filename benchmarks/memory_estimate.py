"""Peak memory of an RL iteration at the real architectures, estimated on a CPU: no GPU, no weights.

The real diffusers models (SD3.5-Medium and FLUX.1-dev shapes, from real_arch.py) and our backend's
own passes run on fake tensors (torch's FakeTensorMode: shapes and dtypes, no data, no arithmetic)
while a dispatch mode counts the bytes of every tensor storage alive. That is what
torch.cuda.max_memory_allocated reports on a GPU, less the caching allocator's rounding and the
CUDA context, so the script first replays the H100 measurements of ANCHORS.md (one LoRA
forward+backward) to show how close the count comes, then estimates one NFT iteration phase by phase:

- static: base weights (bf16, or fp8 storage), VAE, LoRA (fp32), AdamW's two moments and the old
  policy's copy of the adapter (NFT); the adapter's gradients live only from backward to the
  optimizer step (the trainer sets them to None), so they count in the training phase;
- rollout: one no-grad sampler step over the group with the LoRA fused (the latents of the group live
  throughout);
- decode: the VAE decoding `decode_batch_size` latents;
- train: per micro-batch, the no-grad old-policy and reference forwards, then the trained
  forward+backward (gradient checkpointing as configured) with the NFT loss and NormGuard.

    python benchmarks/memory_estimate.py                      # under a minute on 2 CPU cores
    python benchmarks/memory_estimate.py --skip-flux --micro-batch-size 2 --no-checkpointing

Estimates, not measurements: real_arch.py measures the same on a GPU.
"""

from __future__ import annotations

import argparse
import re
import time

import torch
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
from memory_count import ATTENTION, GIB, LiveBytes, inputs, make_fake, nft_iteration
from real_arch import build
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.attention import sdpa_kernel

from normguard.trainer.backends.diffusers import DiffusersBackend

CAST_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def fp8_storage(module: nn.Module, skip: tuple[str, ...], prefix: str = "") -> None:
    """diffusers' layerwise casting (float8 storage, bf16 compute per layer call), with the same choice
    of layers, but swapping tensors into `_parameters` by hook instead of module.to(): torch refuses
    to swap a fake tensor into an existing Parameter. The bf16 copy lives as long as autograd keeps it,
    as in diffusers."""
    if any(re.search(p, prefix) for p in skip):
        return
    if isinstance(module, CAST_LAYERS):
        stored = {k: p.to(torch.float8_e4m3fn) for k, p in module._parameters.items() if p is not None}
        module._parameters.update(stored)
        module.fp8_stored = stored  # what stream_blocks moves

        def cast(m: nn.Module, args: tuple) -> None:
            m._parameters.update({k: p.to(torch.bfloat16) for k, p in stored.items()})

        def restore(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            m._parameters.update(stored)

        module.register_forward_pre_hook(cast)
        module.register_forward_hook(restore)
        return
    for name, child in module.named_children():
        fp8_storage(child, skip, f"{prefix}.{name}" if prefix else name)


def stream_blocks(module: nn.Module) -> None:
    """The `offload` setting's memory behaviour (trainer/backends/offload.py, diffusers' block-level
    group offloading narrowed to frozen weights), in a form fake tensors allow: each transformer
    block's frozen weights (as stored: fp8 where fp8_storage applies) are host placeholders on the meta
    device (not counted), replaced by fresh device tensors when the block starts and by placeholders
    again when it ends; a device copy lives on while autograd holds it, as with diffusers' `.data`
    swaps. Checkpointing's recomputation calls the block again, so its weights come back for backward.
    The modules outside the blocks stay loaded (diffusers loads them for each transformer call)."""

    def slots(block: nn.Module) -> list[tuple[dict, str]]:
        out = []
        for m in block.modules():
            store = getattr(m, "fp8_stored", None)
            if store is not None:
                out += [(store, k) for k in store]
            else:
                out += [
                    (m._parameters, k)
                    for k, p in m._parameters.items()
                    if p is not None and not p.requires_grad
                ]
            out += [(m._buffers, k) for k, b in m._buffers.items() if b is not None]
        return out

    def place(block: nn.Module, device: str) -> None:
        for store, k in block.stream_slots:
            t = store[k]
            store[k] = torch.empty(t.shape, dtype=t.dtype, device=device)
        for m in block.modules():
            if getattr(m, "fp8_stored", None) is not None:
                m._parameters.update(m.fp8_stored)

    for child in module.children():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            for block in child:
                block.stream_slots = slots(block)
                place(block, "meta")
                block.register_forward_pre_hook(lambda b, args: place(b, "cpu"))
                block.register_forward_hook(lambda b, args, out: place(b, "meta"))


def fake_backend(
    family: str,
    *,
    rank: int,
    checkpointing: bool,
    fp8: bool,
    mode: FakeTensorMode,
    tiny: bool = False,
    offload: bool = False,
) -> DiffusersBackend:
    """The real_arch model with our LoRA (and fp8 storage, checkpointing, block streaming) as the
    trainer sets it up."""
    backend = build(family, torch.device("meta"), torch.bfloat16, tiny=tiny)
    backend.add_lora(rank=rank, alpha=rank)
    if checkpointing:
        backend.module.enable_gradient_checkpointing()
    make_fake([backend.pipe.transformer, backend.pipe.vae], mode)
    if fp8:  # what backend.store_base_in_fp8() does, in a form fake tensors allow
        with mode:
            fp8_storage(backend.module, (*DEFAULT_SKIP_MODULES_PATTERN, "lora_A", "lora_B"))
    if offload:
        with mode:
            stream_blocks(backend.module)
        backend.streamed = True  # what offload_frozen_blocks sets: full recomputation, post-hooks included
    backend.device = torch.device("cpu")
    return backend


def train_step_gib(backend: DiffusersBackend, batch: int, size: int, counter: LiveBytes) -> float:
    """Peak of one LoRA forward+backward above nothing: the ANCHORS.md measurement."""
    counter.add(backend.module.parameters())
    counter.add(backend.module.buffers())
    with counter, sdpa_kernel(ATTENTION):
        x, sigma, cond = inputs(backend, batch, size)
        v = backend.velocity(x, sigma, cond)
        v.float().square().mean().backward()
    return counter.peak / GIB


# ANCHORS.md, one H100 (bf16, 512 px, diffusers + peft LoRA r32): peak of one forward+backward
ANCHORS = [
    ("sd3", 8, False, False, 21.9),
    ("sd3", 8, True, False, 6.2),
    ("flux", 4, False, False, 48.4),
    ("flux", 4, True, False, 25.3),
    ("flux", 4, True, True, 17.4),
    ("flux", 2, True, True, 16.0),
]
NAMES = {"sd3": "SD3.5-Medium", "flux": "FLUX.1-dev"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--skip-flux", action="store_true")
    ap.add_argument("--skip-anchors", action="store_true", help="only the NFT iteration estimates")
    ap.add_argument("--group-size", type=int, help="default: 8 (SD3.5-M), 4 (FLUX)")
    ap.add_argument("--micro-batch-size", type=int, help="default: 8 (SD3.5-M), 2 (FLUX)")
    ap.add_argument("--decode-batch-size", type=int, help="default: the group size")
    ap.add_argument("--no-checkpointing", action="store_true", help="gradient checkpointing off")
    ap.add_argument(
        "--low-vram",
        action="store_true",
        help="the smallest settings without offloading (fp8 base, micro-batch 1, decode 1) for 24/16/12 GB",
    )
    ap.add_argument(
        "--offload",
        action="store_true",
        help="the low-VRAM settings with the `offload` setting (block streaming)",
    )
    args = ap.parse_args()
    ckpt = not args.no_checkpointing
    families = ["sd3"] if args.skip_flux else ["sd3", "flux"]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    if not args.skip_anchors:
        print("One LoRA r32 forward+backward at 512 px: counted here vs measured on an H100 (ANCHORS.md)")
        print(
            f"{'model':14} {'batch':>5} {'ckpt':>5} {'fp8':>4} {'counted GiB':>12} {'H100 (GB)':>10} {'ratio':>6}"
        )
        for family, batch, ckpt, fp8, measured in ANCHORS:
            if family not in families:
                continue
            mode = FakeTensorMode()
            backend = fake_backend(family, rank=32, checkpointing=ckpt, fp8=fp8, mode=mode)
            with mode:
                gib = train_step_gib(backend, batch, 512, LiveBytes())
            print(
                f"{NAMES[family]:14} {batch:5} {ckpt!s:>5} {fp8!s:>4} {gib:12.1f} {measured:10.1f} {gib / measured:6.2f}"
            )
            del backend
    runs = [("sd3", (8, 8), False, 16)] + ([("flux", (4, 2), True, 24)] if "flux" in families else [])
    if args.low_vram:  # what each lever buys, down to the floor: static memory (weights) is what stays
        args.decode_batch_size = args.decode_batch_size or 1
        runs = [("sd3", (8, 2), False, 12), ("sd3", (8, 1), True, 12)]
        runs += [("flux", (4, 1), True, 16), ("flux", (2, 1), True, 12)] if "flux" in families else []
    runs = [(*r, False) for r in runs]
    if args.offload:  # block streaming: the frozen blocks leave; the rest of the static memory stays
        args.decode_batch_size = args.decode_batch_size or 1
        runs = [("sd3", (8, 1), False, 12, True)]
        runs += (
            [("flux", (4, 1), True, 12, True), ("flux", (4, 1), False, 12, True)]
            if "flux" in families
            else []
        )
    print(
        f"\nOne NFT iteration with NormGuard, {args.size} px, LoRA r{args.rank}, "
        f"gradient checkpointing {'on' if ckpt else 'off'} (GiB)"
    )
    print(
        f"{'model':14} {'group':>5} {'micro':>5} {'fp8':>4} {'offload':>7} {'static':>7} {'rollout':>8} {'decode':>7} {'train':>6} {'peak':>6} target"
    )
    for family, (group, micro), fp8, target, offload in runs:
        group = args.group_size or group
        micro = min(args.micro_batch_size or micro, group)
        shape = dict(group=group, micro=micro, decode=min(args.decode_batch_size or group, group))
        mode = FakeTensorMode()
        backend = fake_backend(
            family, rank=args.rank, checkpointing=ckpt, fp8=fp8, mode=mode, offload=offload
        )
        with mode:
            resident = (backend.pipe.transformer, backend.pipe.vae)  # what is on the device (cpu) counts
            r = nft_iteration(backend, resident, size=args.size, counter=LiveBytes("cpu"), **shape)
        peak = max(r["rollout"], r["decode"], r["train"])
        print(
            f"{NAMES[family]:14} {shape['group']:5} {shape['micro']:5} {fp8!s:>4} {offload!s:>7} {r['static']:7.1f} "
            f"{r['rollout']:8.1f} {r['decode']:7.1f} {r['train']:6.1f} {peak:6.1f} <= {target}"
        )
        del backend
    print(f"\n({time.perf_counter() - t0:.0f} s; fake tensors on {torch.__version__}, nothing computed)")


if __name__ == "__main__":
    main()
