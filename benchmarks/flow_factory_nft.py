"""Our NFT trainer against Flow-Factory's DiffusionNFT trainer (X-GenGroup/Flow-Factory) at equal
model, resolution, prompts x group size, sampler steps, trained timesteps, LoRA rank and targets,
measured side by side in one run: train time per sample, RL-iteration time per sample (with the
rollout and reward phases shown apart) and each process's peak RSS.

    python benchmarks/flow_factory_nft.py --ff-python /path/to/ff-venv/bin/python --model SD3_DIR \\
        [--size 256] [--prompts 2] [--group-size 4] [--sample-steps 4] [--train-timesteps 4] \\
        [--rank 16] [--iterations 5] [--repeats 2]

Flow-Factory is not shipped here and nothing installs it: --ff-python is the python of a venv where
you installed it yourself (`import flow_factory` must work there). --model is a local SD3 diffusers
folder (model_index.json); both trainers load it in fp32 on the CPU (`--device` to change ours and
theirs alike is not offered: this is a CPU comparison). At run time the script writes into a temp dir
Flow-Factory's YAML config, the prompt files, a JPEG-compressibility reward equal to ours
(-(JPEG kB at quality 95)) and a small timing driver that imports flow_factory, wraps
DiffusionNFTTrainer.sample / prepare_feedback / optimize and the adapter's ema_step with
perf_counter timers (setattr) and calls flow_factory.train.main(). Our trainer runs as
`<this python> -m normguard.trainer.cli train ...`.

Variants: ours with NormGuard at its default weight, ours with --normguard-weight 0, Flow-Factory.
Every run is a fresh process with OMP_NUM_THREADS=1; the variants rotate order in every repeat so a
shared machine's load hits all alike; the table shows medians over repeats, the first iteration of
every run left out (warm-up). Figures, per sample (prompts x group size samples per iteration):
  train      ours: time_train_passes + time_optimizer (forward/backward passes, clip, AdamW step and
             the old-policy EMA update); theirs: optimize() + ema_step() (the EMA update is a
             separate call there; it is a few ms).
  rollout    ours: time_sample + time_decode; theirs: sample() (sampling + VAE decoding).
  reward     ours: time_reward; theirs: prepare_feedback() (rewards + advantages).
  iteration  ours: time_iteration; theirs: start of one sample() to the next (the whole loop body,
             EMA parameter swap included), the last iteration to the end of its ema_step().
  peak RSS   the process's maximum resident set size (GNU time -v if /usr/bin/time exists, else
             VmHWM polled from /proc/<pid>/status).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from normguard.trainer.callbacks import read_metrics_rows
from normguard.trainer.families.sd3 import FAMILY as SD3
from normguard.trainer.models.diffusers_shapes import SENTENCES

PROMPTS = SENTENCES
# Our diffusers backend's default LoRA targets for SD3; Flow-Factory is given the same list.
LORA_TARGETS = list(SD3.lora_targets)
MIB = 1024 * 1024
GNU_TIME = "/usr/bin/time"

VARIANTS = {
    "ng": "ours, NormGuard default w",
    "ng0": "ours, w=0",
    "ff": "Flow-Factory",
}
FIGURES = {
    "train": "train / sample (ms)",
    "rollout": "rollout / sample (ms)",
    "reward": "reward / sample (ms)",
    "iteration": "RL iteration / sample (ms)",
    "peak_rss": "peak RSS (MiB)",
}

REWARD_MODULE = '''"""JPEG compressibility for Flow-Factory: -(JPEG size in kB at quality 95), as normguard's."""

import io

import torch
from flow_factory.rewards.abc import PointwiseRewardModel, RewardModelOutput


class JpegCompressibility(PointwiseRewardModel):
    required_fields = ("image", "prompt")
    use_tensor_inputs = False

    def __call__(self, prompt, image=None, **kwargs):
        sizes = []
        for im in image:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=95)
            sizes.append(buf.tell() / 1024.0)
        return RewardModelOutput(rewards=-torch.tensor(sizes, dtype=torch.float32), extra_info={})
'''

DRIVER = '''"""Runs Flow-Factory's trainer with wall-clock timers on the NFT trainer's phases.

    python driver.py CONFIG.yaml TIMES.json
"""

import json
import sys
import time

from flow_factory import train
from flow_factory.models.abc import BaseAdapter
from flow_factory.trainers.nft import DiffusionNFTTrainer

EVENTS = []  # [name, start, end] in call order


def timed(cls, name):
    fn = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(self, *args, **kwargs)
        finally:
            EVENTS.append([name, t0, time.perf_counter()])

    setattr(cls, name, wrapper)


for name in ("sample", "prepare_feedback", "optimize"):
    timed(DiffusionNFTTrainer, name)
timed(BaseAdapter, "ema_step")

config, times = sys.argv[1], sys.argv[2]
sys.argv = [sys.argv[0], config]
try:
    train.main()
finally:
    with open(times, "w") as f:
        json.dump(EVENTS, f)
'''


@dataclass(frozen=True)
class Settings:
    size: int
    prompts: int  # prompts (groups) per iteration
    group_size: int
    sample_steps: int
    train_timesteps: int
    timestep_fraction: float
    rank: int
    iterations: int
    seed: int = 0

    @property
    def samples(self) -> int:
        return self.prompts * self.group_size


def ff_config(s: Settings, model: Path, work: Path) -> str:
    """Flow-Factory's YAML: DiffusionNFT on the CPU in fp32, settings equal to ours.

    The old-policy EMA: piecewise_linear with its defaults (flat 0 steps, ramp 0.001 per step) up to
    ema_decay 0.5, i.e. our nft_ema_rate 0.001 / nft_ema_max 0.5."""
    targets = json.dumps(LORA_TARGETS)
    return f"""launcher: "accelerate"
num_processes: 1
mixed_precision: "no"
data:
  dataset_dir: "{work / "data"}"
  preprocessing_batch_size: {s.samples}
  dataloader_num_workers: 0
  force_reprocess: true
  cache_dir: "{work / "cache"}"
  sampler_type: "auto"
model:
  finetune_type: "lora"
  lora_rank: {s.rank}
  lora_alpha: {s.rank}
  target_modules: {targets}
  model_name_or_path: "{model}"
  model_type: "sd3-5"
  master_weight_dtype: "fp32"
  resume_path: null
log:
  logging_backend: "none"
  save_dir: "{work / "saves"}"
  save_freq: 0
train:
  trainer_type: "nft"
  advantage_aggregation: "sum"
  global_std: false
  nft_beta: 1.0
  off_policy: true
  ema_decay_schedule: "piecewise_linear"
  ema_decay: 0.5
  ema_update_interval: 1
  ema_device: "cpu"
  num_train_timesteps: {s.train_timesteps}
  time_sampling_strategy: discrete
  time_shift: 3.0
  timestep_range: {s.timestep_fraction}
  kl_beta: 0
  ref_param_device: "cpu"
  adv_clip_range: 5.0
  resolution: {s.size}
  num_inference_steps: {s.sample_steps}
  guidance_scale: 1.0
  per_device_batch_size: {s.samples}
  group_size: {s.group_size}
  unique_sample_num_per_epoch: {s.prompts}
  gradient_step_per_epoch: 1
  max_epochs: {s.iterations}
  learning_rate: 1.0e-4
  adam_weight_decay: 1.0e-4
  max_grad_norm: 1.0
  enable_gradient_checkpointing: false
  latent_storage_dtype: "fp32"
  seed: {s.seed}
scheduler:
  dynamics_type: "ODE"
eval:
  resolution: {s.size}
  per_device_batch_size: {s.group_size}
  guidance_scale: 1.0
  num_inference_steps: {s.sample_steps}
  eval_freq: 0
rewards:
  - name: "jpeg"
    reward_model: "ffjpeg_reward.JpegCompressibility"
    batch_size: {s.samples}
    device: "cpu"
    dtype: float32
"""


def ours_command(s: Settings, model: Path, prompts: Path, out: Path, weight: float | None) -> list[str]:
    cmd = [sys.executable, "-m", "normguard.trainer.cli", "train", "--model", str(model)]
    cmd += ["--device", "cpu", "--precision", "fp32", "--method", "nft", "--reward", "jpeg_compressibility"]
    cmd += ["--prompts-file", str(prompts), "--steps", str(s.iterations), "--group-size", str(s.group_size)]
    cmd += ["--groups-per-iteration", str(s.prompts), "--sample-steps", str(s.sample_steps)]
    cmd += ["--height", str(s.size), "--width", str(s.size), "--train-timesteps", str(s.train_timesteps)]
    cmd += ["--timestep-fraction", str(s.timestep_fraction), "--micro-batch-size", str(s.samples)]
    cmd += ["--lora-rank", str(s.rank), "--lora-targets", *LORA_TARGETS, "--seed", str(s.seed)]
    cmd += ["--eval-every", "0", "--no-tensorboard", "--checkpoint-every", str(s.iterations + 100)]
    cmd += ["--out", str(out)]
    if weight is not None:
        cmd += ["--normguard-weight", str(weight)]
    return cmd


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_child(cmd: list[str], cwd: Path, log: Path, timeout: float) -> int:
    """Runs cmd (output to log); returns its peak RSS in bytes. Exits with the log's tail on failure."""
    use_time = os.access(GNU_TIME, os.X_OK)
    rss_file = log.with_suffix(".rusage")
    full = [GNU_TIME, "-v", "-o", str(rss_file), *cmd] if use_time else cmd
    peak = [0]
    with open(log, "w") as out:
        proc = subprocess.Popen(full, cwd=cwd, env=child_env(), stdout=out, stderr=subprocess.STDOUT)

        def poll() -> None:  # VmHWM is monotonic: the last reading before exit is the peak (to 20 ms)
            status = Path(f"/proc/{proc.pid}/status")
            while proc.poll() is None:
                try:
                    m = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)
                    if m:
                        peak[0] = max(peak[0], int(m.group(1)) * 1024)
                except OSError:
                    return
                time.sleep(0.02)

        watcher = None if use_time else threading.Thread(target=poll, daemon=True)
        if watcher:
            watcher.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = -9
        if watcher:
            watcher.join()
    if rc != 0:
        tail = log.read_text(errors="replace")[-4000:]
        sys.exit(f"error: {' '.join(cmd[:4])} ... exited with {rc}; the end of its output ({log}):\n{tail}")
    if use_time:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", rss_file.read_text())
        peak[0] = int(m.group(1)) * 1024 if m else 0
    return peak[0]


def ours_figures(out: Path) -> tuple[dict[str, float], float | None]:
    """Per-iteration seconds from our metrics.jsonl (first iteration left out), and the NormGuard weight."""
    metrics = next(out.rglob("metrics.jsonl"))
    rows = read_metrics_rows(metrics)[1:]
    mean = lambda f: statistics.mean(f(r) for r in rows)  # noqa: E731
    figures = {
        "train": mean(lambda r: r["time_train_passes"] + r["time_optimizer"]),
        "rollout": mean(lambda r: r["time_sample"] + r["time_decode"]),
        "reward": mean(lambda r: r["time_reward"]),
        "iteration": mean(lambda r: r["time_iteration"]),
    }
    weight = None
    config = metrics.parent / "config.yaml"
    if config.is_file():
        m = re.search(r"^normguard_weight:\s*([0-9.eE+-]+)", config.read_text(), re.M)
        weight = float(m.group(1)) if m else None
    return figures, weight


def ff_figures(times: Path, iterations: int) -> dict[str, float]:
    """Per-iteration seconds from the driver's timers (first iteration left out)."""
    events = json.loads(times.read_text())
    epochs: list[list[tuple[str, float, float]]] = []
    for name, t0, t1 in events:
        if name == "sample":
            epochs.append([])
        if epochs:
            epochs[-1].append((name, t0, t1))
    if len(epochs) != iterations:
        sys.exit(f"error: Flow-Factory's driver saw {len(epochs)} sample() calls, expected {iterations}")
    per: dict[str, list[float]] = {k: [] for k in ("train", "rollout", "reward", "iteration")}
    for i, ep in enumerate(epochs[1:], start=1):
        spent = {n: sum(t1 - t0 for name, t0, t1 in ep if name == n) for n in ("sample", "prepare_feedback")}
        spent["train"] = sum(t1 - t0 for name, t0, t1 in ep if name in ("optimize", "ema_step"))
        start = ep[0][1]
        end = epochs[i + 1][0][1] if i + 1 < len(epochs) else max(t1 for _, _, t1 in ep)
        per["train"].append(spent["train"])
        per["rollout"].append(spent["sample"])
        per["reward"].append(spent["prepare_feedback"])
        per["iteration"].append(end - start)
    return {k: statistics.mean(v) for k, v in per.items()}


def check_flow_factory(ff_python: str) -> str:
    """Flow-Factory's version string; exits with a clear message when it cannot be imported."""
    probe = (
        "import importlib.metadata as m, flow_factory.train, flow_factory.trainers.nft, "
        "flow_factory.rewards.abc, flow_factory.models.abc\n"
        "try:\n    print(m.version('flow_factory'))\nexcept Exception:\n    print('unknown version')"
    )
    try:
        r = subprocess.run(
            [ff_python, "-c", probe], capture_output=True, text=True, env=child_env(), timeout=600
        )
    except OSError as e:
        sys.exit(f"error: --ff-python {ff_python!r} cannot be run: {e}")
    if r.returncode != 0:
        sys.exit(
            f"error: Flow-Factory is not importable from --ff-python {ff_python!r} "
            f"(install X-GenGroup/Flow-Factory into that venv first):\n{r.stderr.strip()[-2000:]}"
        )
    return r.stdout.strip().splitlines()[-1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def table(summary: dict[str, dict[str, float]], labels: dict[str, str]) -> str:
    """Markdown: one row per figure, a column per variant, then ours / Flow-Factory."""
    ours = [k for k in summary if k != "ff"]
    head = ["figure", *(labels[k] for k in summary), *(f"{labels[k]} / FF" for k in ours)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for fig, name in FIGURES.items():
        scale = 1 / MIB if fig == "peak_rss" else 1000.0
        cells = [
            f"{summary[k][fig] * scale:.0f}" if fig == "peak_rss" else f"{summary[k][fig] * scale:.1f}"
            for k in summary
        ]
        cells += [f"{summary[k][fig] / summary['ff'][fig]:.2f}" for k in ours]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--ff-python", default=os.environ.get("FLOW_FACTORY_PYTHON"), help="python with flow_factory"
    )
    ap.add_argument("--model", type=Path, required=True, help="local SD3 diffusers folder")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--prompts", type=int, default=2, help="prompts (groups) per iteration")
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--sample-steps", type=int, default=4)
    ap.add_argument("--train-timesteps", type=int, default=4)
    ap.add_argument("--timestep-fraction", type=float, default=0.8)
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = rank)")
    ap.add_argument(
        "--iterations", type=int, default=5, help="RL iterations per run (>= 2; the first is dropped)"
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {list(VARIANTS)}")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--keep", type=Path, help="work here (kept) instead of a temp dir")
    ap.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = ap.parse_args()
    if not args.ff_python:
        ap.error("--ff-python (or FLOW_FACTORY_PYTHON) is required: the python of a venv with Flow-Factory")
    if not (args.model / "model_index.json").is_file():
        ap.error(f"--model must be a local diffusers folder (model_index.json), got {str(args.model)!r}")
    if args.iterations < 2:
        ap.error(f"--iterations must be >= 2 (the first is warm-up), got {args.iterations}")
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    if "ff" not in keys or any(k not in VARIANTS for k in keys):
        ap.error(f"--variants must name some of {list(VARIANTS)}, 'ff' included")
    model = args.model.resolve()
    s = Settings(
        args.size,
        args.prompts,
        args.group_size,
        args.sample_steps,
        args.train_timesteps,
        args.timestep_fraction,
        args.rank,
        args.iterations,
    )
    ff_version = check_flow_factory(args.ff_python)
    print(
        f"SD3 {model}; {s.size}x{s.size}, {s.prompts} prompts x group {s.group_size} = {s.samples} samples per "
        f"iteration, {s.sample_steps} sampler steps, {s.train_timesteps} trained timesteps (first "
        f"{s.timestep_fraction} of the schedule), LoRA r{s.rank} on {len(LORA_TARGETS)} attention projections, "
        f"fp32 CPU, {s.iterations} iterations (first dropped) x {args.repeats} repeats; Flow-Factory "
        f"{ff_version}; OMP_NUM_THREADS=1, {os.cpu_count()} CPUs ({cpu_name()})",
        flush=True,
    )

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="ff-nft-bench-")
    work = args.keep.resolve() if args.keep else Path(tmp.name)
    try:
        work.mkdir(parents=True, exist_ok=True)
        (work / "data").mkdir(exist_ok=True)
        for split in ("train", "test"):
            (work / "data" / f"{split}.txt").write_text("\n".join(PROMPTS) + "\n")
        (work / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
        (work / "ffjpeg_reward.py").write_text(REWARD_MODULE)
        (work / "driver.py").write_text(DRIVER)
        (work / "ff.yaml").write_text(ff_config(s, model, work))

        runs: list[dict] = []
        labels = dict(VARIANTS)
        for rep in range(args.repeats):
            order = keys[rep % len(keys) :] + keys[: rep % len(keys)]
            for key in order:
                t0 = time.perf_counter()
                log = work / f"{key}-r{rep}.log"
                if key == "ff":
                    times = work / f"ff-r{rep}.json"
                    cmd = [args.ff_python, str(work / "driver.py"), str(work / "ff.yaml"), str(times)]
                    peak = run_child(cmd, work, log, args.timeout)
                    figures = ff_figures(times, s.iterations)
                else:
                    out = work / f"{key}-r{rep}"
                    weight = 0.0 if key == "ng0" else None
                    peak = run_child(
                        ours_command(s, model, work / "prompts.txt", out, weight), work, log, args.timeout
                    )
                    figures, used = ours_figures(out)
                    if key == "ng" and used is not None:
                        labels["ng"] = f"ours, w={used:g}"
                figures = {k: v / s.samples for k, v in figures.items()} | {"peak_rss": float(peak)}
                runs.append({"variant": key, "repeat": rep, **figures})
                print(
                    f"  repeat {rep} {key}: train {figures['train'] * 1000:.1f} ms/sample, iteration "
                    f"{figures['iteration'] * 1000:.1f} ms/sample, peak RSS {peak / MIB:.0f} MiB "
                    f"[{time.perf_counter() - t0:.0f} s]",
                    flush=True,
                )
    finally:
        if tmp is not None:
            tmp.cleanup()

    summary = {
        key: {fig: statistics.median(r[fig] for r in runs if r["variant"] == key) for fig in FIGURES}
        for key in keys
    }
    print()
    print(table(summary, labels))
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(s), "runs": runs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
