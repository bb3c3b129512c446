"""Our ComfyUI trainer (NormGuardTrainLoRA) against ComfyUI's built-in TrainLoraNode at equal model,
resolution, batch and LoRA rank, side by side in one run: training time per optimizer step per
trained sample, and the server's peak memory (issue "fast and lean", item 5).

    python benchmarks/comfyui_peers.py --comfyui-path /work/comfyui --comfyui-python .../bin/python \\
        [--depth 4] [--size 256] [--batch 4] [--rank 8] [--steps 6] [--repeats 2]

Runs under any python (stdlib only; ComfyUI runs in its own process). Every run of a variant gets a
fresh server, so the process's memory figures are that variant's alone:
  1. a preparation graph loads the models (SD3 MMDiT of --depth joint blocks, CLIP-L, VAE), encodes
     the prompt and VAE-encodes a --size image: the process's RSS afterwards is the baseline;
  2. the peak-RSS mark is reset (/proc/<pid>/clear_refs, "5"), the training graph runs (it reuses the
     cached loader outputs), and VmHWM is the training peak.
Time per step: TrainLoraNode's own progress events (one per optimizer step, timed on arrival; the
first step is left out as warm-up); ours from its metrics.jsonl, "step" = time_train_passes +
time_optimizer (reference / old-policy forwards + trained forward/backward + optimizer) and
"iteration" = time_iteration (adds the rollout: sampling, VAE decoding, reward), first iteration
left out. Variants run in rotating order in every repeat so a shared machine's load hits all alike;
the table shows medians over repeats and ratios against TrainLoraNode.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from comfyui.client import Comfy, EventStream  # noqa: E402
from comfyui.server import ENV, build_base, comfyui_server  # noqa: E402

PROMPT = "a red cube on a wooden table"
UNET, CLIP, VAE = "tiny_sd3.safetensors", "tiny_clip_l.safetensors", "tiny_vae16.safetensors"
MIB = 1024 * 1024
EVENT = "normguard.train"  # the trainer node's websocket event (nodes/train.py)


@dataclass(frozen=True)
class Settings:
    size: int  # image side in pixels (latents are size / 8)
    batch: int  # samples per optimizer step
    rank: int
    steps: int  # optimizer steps (TrainLoraNode steps = our iterations)
    sample_steps: int  # our rollout's sampler steps
    lr: float = 5e-4  # TrainLoraNode's default


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    kind: str  # "peer" | "ours"
    inputs: dict[str, Any] = field(default_factory=dict)  # the trainer node's
    options: dict[str, Any] = field(default_factory=dict)  # ours: NormGuardTrainOptions'


VARIANTS = {
    v.key: v
    for v in (
        Variant("tln", "TrainLoraNode (defaults: bf16)", "peer"),
        Variant("tln_fp32", "TrainLoraNode (fp32)", "peer", {"training_dtype": "fp32", "lora_dtype": "fp32"}),
        Variant("ng1", "NormGuardTrainLoRA nft, w=10", "ours", {"normguard_weight": 10.0}),
        Variant("ng0", "NormGuardTrainLoRA nft, w=0", "ours", {"normguard_weight": 0.0}),
        Variant(
            "ng1_dec1",
            "NormGuardTrainLoRA nft, w=10, decode_batch_size 1",
            "ours",
            {"normguard_weight": 10.0},
            {"extra": "decode_batch_size: 1"},
        ),
    )
}


# --- graphs ------------------------------------------------------------------------------------------


def prepare_graph(s: Settings) -> dict[str, Any]:
    """Loaders, the encoded prompt and B VAE-encoded images: everything both trainers start from."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP, "type": "sd3"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": PROMPT}},
        "image": {
            "class_type": "EmptyImage",
            "inputs": {"width": s.size, "height": s.size, "batch_size": s.batch, "color": 0xC83C28},
        },
        "latents": {"class_type": "VAEEncode", "inputs": {"pixels": ["image", 0], "vae": ["vae", 0]}},
        # output nodes, so that ComfyUI runs (and caches) every node above
        "save_latents": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["latents", 0], "filename_prefix": "bench/x"},
        },
        "save_cond": {"class_type": "PreviewAny", "inputs": {"source": ["pos", 0]}},
        "save_models": {
            "class_type": "PreviewAny",
            "inputs": {"source": ["unet", 0]},
        },
    }


def peer_graph(s: Settings, v: Variant, name: str) -> dict[str, Any]:
    g = prepare_graph(s)
    g["train"] = {
        "class_type": "TrainLoraNode",
        "inputs": {
            "model": ["unet", 0], "latents": ["latents", 0], "positive": ["pos", 0], "batch_size": s.batch,
            "grad_accumulation_steps": 1, "steps": s.steps, "learning_rate": s.lr, "rank": s.rank,
            "optimizer": "AdamW", "loss_function": "MSE", "seed": 0, "training_dtype": "bf16",
            "lora_dtype": "bf16", "quantized_backward": False, "algorithm": "LoRA",
            "gradient_checkpointing": True, "checkpoint_depth": 1, "offloading": False,
            "existing_lora": "[None]", "bucket_mode": False, "bypass_mode": False, **v.inputs,
        },
    }  # fmt: skip
    g["save_lora"] = {"class_type": "SaveLoRA", "inputs": {"lora": ["train", 0], "prefix": f"bench/{name}"}}
    return g


def ours_graph(s: Settings, v: Variant, name: str) -> dict[str, Any]:
    g = prepare_graph(s)
    g["reward"] = {"class_type": "NormGuardRewardJpegIncompressibility", "inputs": {"weight": 1.0}}
    g["options"] = {
        "class_type": "NormGuardTrainOptions",
        "inputs": {
            "groups_per_iteration": 1, "train_timesteps": 1, "timestep_fraction": 0.8,
            "micro_batch_size": s.batch, "normguard_form": "linear", "normguard_relative": True,
            "normguard_margin": 0.0, "normguard_reduction": "sample", "kl_weight": 0.0, "lora_alpha": 0.0,
            "lora_targets": "", "guidance": 0.0, "gradient_checkpointing": True,
            "checkpoint_every": s.steps, "eval_every": 0, "eval_samples": 1, "eval_few_steps": 0,
            "warn_rho": 1.1, "stop_on_warning": False, "init_lora": "none",
            "reward_normalize_each": False, "lora_format": "comfyui", "extra": "", **v.options,
        },
    }  # fmt: skip
    g["train"] = {
        "class_type": "NormGuardTrainLoRA",
        "inputs": {
            "model": ["unet", 0], "clip": ["clip", 0], "vae": ["vae", 0], "reward": ["reward", 0],
            "prompts": PROMPT, "method": "nft", "normguard_weight": 1.0, "iterations": s.steps,
            "group_size": s.batch, "sample_steps": s.sample_steps, "cfg": 1.0, "width": s.size,
            "height": s.size, "lora_rank": s.rank, "learning_rate": s.lr, "seed": 0, "lora_name": name,
            "options": ["options", 0], **v.inputs,
        },
    }  # fmt: skip
    return g


# --- measuring ---------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid: int) -> None:
    """Lower the process's peak-RSS mark (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as e:
        raise RuntimeError(
            f"cannot reset the peak RSS of ComfyUI (pid {pid}) through /proc/{pid}/clear_refs: {e}; "
            "this benchmark needs Linux and a server process owned by this user"
        ) from e


class Events:
    """ComfyUI's websocket messages with their arrival times (a background thread)."""

    def __init__(self, url: str, client_id: str):
        self.stream = EventStream(url, client_id, timeout=3600)
        self.items: list[tuple[float, dict[str, Any]]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                msg = self.stream.message()
                if msg is not None:
                    self.items.append((time.perf_counter(), msg))
        except (OSError, ValueError):
            return

    def close(self) -> None:
        self.stream.close()
        self.thread.join(timeout=5)


class RssSampler:
    """The process's RSS every `period` seconds (a background thread): per-phase peaks, which VmHWM
    (one mark for the whole graph) cannot give."""

    def __init__(self, pid: int, period: float = 0.01):
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, int]] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            self.samples.append((time.perf_counter(), proc_status(self.pid)["VmRSS"]))
            time.sleep(self.period)

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=5)

    def peak(self, windows: list[tuple[float, float]]) -> int:
        inside = [rss for t, rss in self.samples if any(a <= t <= b for a, b in windows)]
        if not inside:
            raise RuntimeError(f"no RSS sample inside the training windows {windows}")
        return max(inside)


def peer_progress(events: list[tuple[float, dict[str, Any]]], node: str, steps: int) -> dict[int, float]:
    """Arrival time of TrainLoraNode's progress update for each step it reported (one per optimizer
    step; ComfyUI drops updates < 0.1 s apart except the first and the last)."""
    times: dict[int, float] = {}
    for t, m in events:
        d = m.get("data", {})
        if m.get("type") == "progress" and d.get("node") == node and d.get("max") == steps:
            times.setdefault(int(d["value"]), t)
    if len(times) < 2 or max(times) != steps:
        raise RuntimeError(f"TrainLoraNode sent progress for steps {sorted(times)}; need 1..{steps}")
    return times


def peer_step_seconds(times: dict[int, float]) -> float:
    """Median time per step over steps 2..N (step 1 warms up)."""
    seen = sorted(times)
    return statistics.median((times[b] - times[a]) / (b - a) for a, b in zip(seen, seen[1:], strict=False))


def ours_windows(events: list[tuple[float, dict[str, Any]]], node: str) -> list[tuple[float, float]]:
    """When each iteration's training passes + optimizer step ran: they end just before the node's
    per-iteration event, which carries their durations."""
    windows = []
    for t, m in events:
        d = m.get("data", {})
        if m.get("type") == EVENT and d.get("node") == node and d.get("phase") == "iteration":
            train = d["metrics"]["time_train_passes"] + d["metrics"]["time_optimizer"]
            windows.append((t - train - 0.02, t))
    return windows


def ours_seconds(metrics_file: Path) -> tuple[float, float, dict[str, float]]:
    """(training step, whole iteration, every phase) medians from the run's metrics.jsonl, first
    iteration left out."""
    rows = []
    for line in metrics_file.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    rows = [r for r in rows if "time_iteration" in r][1:]
    if not rows:
        raise RuntimeError(f"{metrics_file} has fewer than 2 iterations (use --steps >= 3)")
    step = statistics.median(r["time_train_passes"] + r["time_optimizer"] for r in rows)
    phases = {k[5:]: statistics.median(r[k] for r in rows) for k in rows[0] if k.startswith("time_")}
    return step, statistics.median(r["time_iteration"] for r in rows), phases


@dataclass
class Result:
    variant: str
    step_per_sample: float  # seconds per optimizer step per trained sample
    iteration_per_sample: float | None  # ours: the whole RL iteration
    baseline: int  # RSS with the models loaded (bytes)
    load_peak: int  # peak while loading them
    step_peak: int  # highest sampled RSS while training steps ran
    run_peak: int  # peak of the whole training graph (VmHWM)


def run_variant(base: Path, args: argparse.Namespace, s: Settings, v: Variant, tag: str) -> Result:
    name = f"bench_{v.key}_{tag}"
    with comfyui_server(base, args.comfyui_path, args.comfyui_python) as server:
        comfy = Comfy(server.url)
        comfy.run(prepare_graph(s), timeout=args.timeout)
        loaded = proc_status(server.pid)
        reset_peak(server.pid)
        events, rss = Events(server.url, comfy.client_id), RssSampler(server.pid)
        try:
            graph = peer_graph(s, v, name) if v.kind == "peer" else ours_graph(s, v, name)
            comfy.run(graph, timeout=args.timeout)
        finally:
            rss.close()
            events.close()
        run_peak = proc_status(server.pid)["VmHWM"]
    if v.kind == "peer":
        times = peer_progress(events.items, "train", s.steps)
        step, iteration = peer_step_seconds(times), None
        windows = [(min(times.values()) - step, max(times.values()))]
    else:
        step, iteration, phases = ours_seconds(base / "output" / "normguard" / name / "metrics.jsonl")
        print(
            f"    {v.key} phases (s per iteration): " + ", ".join(f"{k} {t:.3f}" for k, t in phases.items())
        )
        windows = ours_windows(events.items, "train")
    return Result(
        v.key,
        step / s.batch,
        None if iteration is None else iteration / s.batch,
        loaded["VmRSS"],
        loaded["VmHWM"],
        rss.peak(windows),
        run_peak,
    )


def mmdit_facts(path: Path) -> tuple[int, int]:
    """(joint blocks, parameters) of an SD3 MMDiT safetensors file, from its header alone."""
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    header.pop("__metadata__", None)
    depth = header["x_embedder.proj.weight"]["shape"][0] // 64  # ComfyUI's own detection rule
    return depth, sum(math.prod(t["shape"]) for t in header.values())


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


# --- report ------------------------------------------------------------------------------------------


def summarize(results: list[Result]) -> dict[str, dict[str, float | None]]:
    """Per variant: medians over repeats (memory as increments over the loaded models)."""
    out: dict[str, dict[str, float | None]] = {}
    for key in dict.fromkeys(r.variant for r in results):
        rs = [r for r in results if r.variant == key]
        its = [r.iteration_per_sample for r in rs if r.iteration_per_sample is not None]
        out[key] = {
            "step": statistics.median(r.step_per_sample for r in rs),
            "iteration": statistics.median(its) if its else None,
            "loaded": statistics.median(r.baseline for r in rs),
            "step_peak": statistics.median(r.step_peak - r.baseline for r in rs),
            "run_peak": statistics.median(r.run_peak - r.baseline for r in rs),
            "runs": len(rs),
        }
    return out


def tables(summary: dict[str, dict[str, float | None]], references: list[str]) -> str:
    """Markdown: absolute numbers per variant, then ours / each TrainLoraNode variant."""
    lines = [
        "| variant | train step / sample (s) | RL iteration / sample (s) | models loaded (MiB) | "
        "+ peak in training steps (MiB) | + peak of the run (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, m in summary.items():
        it = "-" if m["iteration"] is None else f"{m['iteration']:.3f}"
        lines.append(
            f"| {VARIANTS[key].label} | {m['step']:.3f} | {it} | {m['loaded'] / MIB:.0f} | "
            f"{m['step_peak'] / MIB:.0f} | {m['run_peak'] / MIB:.0f} |"
        )
    ours = [k for k in summary if VARIANTS[k].kind == "ours"]
    if ours:
        cols = [(q, ref) for q in ("step", "step_peak", "run_peak") for ref in references]
        names = {"step": "step time", "step_peak": "+ step peak", "run_peak": "+ run peak"}
        lines += ["", "| ours / peer | " + " | ".join(f"{names[q]} / {ref}" for q, ref in cols) + " |"]
        lines.append("|---|" + "---:|" * len(cols))
        for key in ours:
            cells = [f"{summary[key][q] / summary[ref][q]:.2f}" for q, ref in cols]
            lines.append(f"| {VARIANTS[key].label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui-path", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout")
    ap.add_argument("--comfyui-python", default=os.environ.get("COMFYUI_PYTHON", sys.executable))
    ap.add_argument("--base-dir", type=Path, help="an existing base dir with the kit (skips building it)")
    ap.add_argument("--depth", type=int, default=4, help="SD3 joint blocks (hidden 64 x depth)")
    ap.add_argument("--size", type=int, default=256, help="image side (latents are size / 8)")
    ap.add_argument("--batch", type=int, default=4, help="samples per optimizer step")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank (TrainLoraNode's default)")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per run (>= 3)")
    ap.add_argument("--sample-steps", type=int, default=4, help="our rollout's sampler steps")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {list(VARIANTS)}")
    ap.add_argument("--references", default="tln,tln_fp32", help="the peer variants ratios divide by")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per graph")
    ap.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = ap.parse_args()
    if not args.comfyui_path or not (Path(args.comfyui_path) / "main.py").is_file():
        ap.error(f"--comfyui-path (or COMFYUI_PATH) must be a ComfyUI checkout, got {args.comfyui_path!r}")
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    refs = [k for k in (k.strip() for k in args.references.split(",")) if k in keys]
    if any(k not in VARIANTS for k in keys) or not refs or any(VARIANTS[k].kind != "peer" for k in refs):
        ap.error(f"--variants must name some of {list(VARIANTS)}, with a TrainLoraNode one of --references")
    if args.steps < 3:
        ap.error(f"--steps must be >= 3 (the first step is warm-up), got {args.steps}")
    s = Settings(args.size, args.batch, args.rank, args.steps, args.sample_steps)

    with tempfile.TemporaryDirectory(prefix="comfy-peers-") as tmp:
        base = args.base_dir or build_base(
            Path(tmp) / "base", args.comfyui_path, args.comfyui_python, args.depth
        )
        depth, params = mmdit_facts(base / "models" / "diffusion_models" / UNET)
        print(
            f"SD3 MMDiT: depth {depth}, {params / 1e6:.1f} M parameters (fp32); {s.size}x{s.size} images "
            f"({s.size // 8}x{s.size // 8} latents), batch {s.batch}, LoRA rank {s.rank}, {s.steps} steps, our "
            f"rollout {s.sample_steps} sampler steps; OMP_NUM_THREADS={ENV['OMP_NUM_THREADS']}, "
            f"{os.cpu_count()} CPUs ({cpu_name()})",
            flush=True,
        )
        results = []
        for rep in range(args.repeats):
            order = keys[rep % len(keys) :] + keys[: rep % len(keys)]
            for key in order:
                t0 = time.perf_counter()
                r = run_variant(base, args, s, VARIANTS[key], f"r{rep}")
                results.append(r)
                print(
                    f"  repeat {rep} {key}: step/sample {r.step_per_sample:.3f} s, loaded {r.baseline / MIB:.0f} "
                    f"MiB, + step peak {(r.step_peak - r.baseline) / MIB:.0f} MiB, + run peak "
                    f"{(r.run_peak - r.baseline) / MIB:.0f} MiB [{time.perf_counter() - t0:.0f} s]",
                    flush=True,
                )
    summary = summarize(results)
    print()
    print(tables(summary, refs))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"settings": vars(s), "runs": [vars(r) for r in results], "summary": summary}, indent=1
            )
        )


if __name__ == "__main__":
    main()
