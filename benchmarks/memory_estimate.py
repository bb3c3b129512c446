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
import weakref
from collections.abc import Iterable

import torch
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
from real_arch import build
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from normguard.trainer.backends.diffusers import DiffusersBackend
from normguard.trainer.config import TrainConfig
from normguard.trainer.methods import NFT
from normguard.trainer.old_policy import OldPolicy
from normguard.trainer.penalty import normguard_penalty

GIB = 2**30
CAST_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
ATTENTION = [SDPBackend.FLASH_ATTENTION]  # what diffusers gets on an H100: no attention matrix is kept


class LiveBytes(TorchDispatchMode):
    """Bytes of all tensor storages alive (counted once per storage, views included) and their peak.

    A storage is counted when an op first returns it (or when `add` is given it) and uncounted when
    it is freed: torch keeps a storage's Python object alive as long as the storage, so a weakref
    finalizer fires exactly when the memory would be released, also for tensors autograd saved."""

    def __init__(self) -> None:
        super().__init__()
        self.now = self.peak = 0
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def add(self, tensors: Iterable[torch.Tensor]) -> None:
        for t in tensors:
            self._count(t.untyped_storage())

    def reset_peak(self) -> None:
        self.peak = self.now

    def _count(self, storage: torch.UntypedStorage) -> None:
        if storage in self._seen:
            return
        n = storage.nbytes()
        self._seen[storage] = n
        self.now += n
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._free, n)

    def _free(self, n: int) -> None:
        self.now -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._count(t.untyped_storage())
        return out


def make_fake(modules: Iterable[nn.Module], mode: FakeTensorMode) -> None:
    """Give every parameter and buffer of `modules` (built on the meta device) a fake CPU tensor of its
    shape and dtype. New Parameter objects: torch refuses to swap a fake tensor into an existing one."""
    with mode:
        for module in modules:
            for m in module.modules():
                for k, p in m._parameters.items():
                    if p is not None:
                        m._parameters[k] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
                for k, b in m._buffers.items():
                    if b is not None:
                        m._buffers[k] = torch.empty(b.shape, dtype=b.dtype)


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

        def cast(m: nn.Module, args: tuple) -> None:
            m._parameters.update({k: p.to(torch.bfloat16) for k, p in stored.items()})

        def restore(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            m._parameters.update(stored)

        module.register_forward_pre_hook(cast)
        module.register_forward_hook(restore)
        return
    for name, child in module.named_children():
        fp8_storage(child, skip, f"{prefix}.{name}" if prefix else name)


def fake_backend(
    family: str, *, rank: int, checkpointing: bool, fp8: bool, mode: FakeTensorMode, tiny: bool = False
) -> DiffusersBackend:
    """The real_arch model with our LoRA (and fp8 storage, checkpointing) as the trainer sets it up."""
    backend = build(family, torch.device("meta"), torch.bfloat16, tiny=tiny)
    backend.add_lora(rank=rank, alpha=rank)
    if checkpointing:
        backend.module.enable_gradient_checkpointing()
    make_fake([backend.pipe.transformer, backend.pipe.vae], mode)
    if fp8:  # what backend.store_base_in_fp8() does, in a form fake tensors allow
        with mode:
            fp8_storage(backend.module, (*DEFAULT_SKIP_MODULES_PATTERN, "lora_A", "lora_B"))
    backend.device = torch.device("cpu")
    return backend


def trainable(backend: DiffusersBackend) -> dict[str, nn.Parameter]:
    """The adapter's parameters as they are now (make_fake replaced the ones add_lora recorded)."""
    return {n: p for n, p in backend.module.named_parameters() if p.requires_grad}


def inputs(backend: DiffusersBackend, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Latents, sigmas and text conditioning of the real shapes (encoders offloaded: only their output)."""
    x = torch.randn(batch, *backend.latent_shape(size, size), dtype=torch.bfloat16)
    cond = backend.encode_prompts([f"prompt {i}" for i in range(batch)])
    return x, torch.full((batch,), 0.5), cond


def train_step_gib(backend: DiffusersBackend, batch: int, size: int, counter: LiveBytes) -> float:
    """Peak of one LoRA forward+backward above nothing: the ANCHORS.md measurement."""
    counter.add(backend.module.parameters())
    counter.add(backend.module.buffers())
    with counter, sdpa_kernel(ATTENTION):
        x, sigma, cond = inputs(backend, batch, size)
        v = backend.velocity(x, sigma, cond)
        v.float().square().mean().backward()
    return counter.peak / GIB


def nft_iteration(
    backend: DiffusersBackend, group: int, micro: int, decode: int, size: int, counter: LiveBytes
) -> dict:
    """Peak of each phase of one NFT iteration (with NormGuard), and the static memory under them."""
    named = trainable(backend)
    counter.add(
        p for m in (backend.pipe.transformer, backend.pipe.vae) for p in [*m.parameters(), *m.buffers()]
    )
    out = {}
    with counter, sdpa_kernel(ATTENTION):
        optimizer_state = [torch.zeros_like(p) for p in named.values() for _ in range(2)]  # AdamW: m and v
        old = OldPolicy(named, rate=0.0, ceiling=0.0)  # its copy of the adapter; gradients are set to None
        out["static"] = counter.now / GIB
        x, sigma, cond = inputs(backend, group, size)
        counter.reset_peak()
        with torch.no_grad(), old.swapped_in(), backend.sampling():  # NFT samples with the old policy
            backend.velocity(x, sigma, cond)
        out["rollout"] = counter.peak / GIB
        counter.reset_peak()
        with torch.no_grad():
            backend.decode(x[:decode])
        out["decode"] = counter.peak / GIB
        counter.reset_peak()
        b = {"x_t": x[:micro], "x0": x[:micro], "sigma": sigma[:micro], "adv": torch.zeros(micro)}
        b["cond"] = {k: v[:micro] for k, v in cond.items()}
        with torch.no_grad():
            with old.swapped_in():
                v_old = backend.velocity(b["x_t"], b["sigma"], b["cond"])
            with backend.reference():
                v_ref = backend.velocity(b["x_t"], b["sigma"], b["cond"])
        v = backend.velocity(b["x_t"], b["sigma"], b["cond"])
        loss, _ = NFT(TrainConfig()).loss(b, v, v_ref, v_old)
        (loss + normguard_penalty(v, v_ref)).backward()
        out["train"] = counter.peak / GIB
        del optimizer_state, old
    return out


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
    print(
        f"\nOne NFT iteration with NormGuard, {args.size} px, LoRA r{args.rank}, "
        f"gradient checkpointing {'on' if ckpt else 'off'} (GiB)"
    )
    print(
        f"{'model':14} {'group':>5} {'micro':>5} {'fp8':>4} {'static':>7} {'rollout':>8} {'decode':>7} {'train':>6} {'peak':>6} target"
    )
    for family, (group, micro), fp8, target in runs:
        group = args.group_size or group
        micro = min(args.micro_batch_size or micro, group)
        shape = dict(group=group, micro=micro, decode=min(args.decode_batch_size or group, group))
        mode = FakeTensorMode()
        backend = fake_backend(family, rank=args.rank, checkpointing=ckpt, fp8=fp8, mode=mode)
        with mode:
            r = nft_iteration(backend, size=args.size, counter=LiveBytes(), **shape)
        peak = max(r["rollout"], r["decode"], r["train"])
        print(
            f"{NAMES[family]:14} {shape['group']:5} {shape['micro']:5} {fp8!s:>4} {r['static']:7.1f} "
            f"{r['rollout']:8.1f} {r['decode']:7.1f} {r['train']:6.1f} {peak:6.1f} <= {target}"
        )
        del backend
    print(f"\n({time.perf_counter() - t0:.0f} s; fake tensors on {torch.__version__}, nothing computed)")


if __name__ == "__main__":
    main()
