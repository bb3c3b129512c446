"""`normguard demo`: what NormGuard does, shown on real RL training of the shipped model in minutes.

Two LoRA runs of the builtin TinyFlow model with identical seeds, one without and one with the
NormGuard penalty, on an offline reward that pays for magnitude (saturation by default: the kind of
reward that invites velocity-norm inflation). Then both LoRAs and the base model are sampled on the
same fixed prompts and noise, at the full and at a few-step schedule, and scored by the reward and
by the judge network the reward never sees. trainer/report.py turns it into report.md with plots.

The two runs go to two worker processes of one torch thread each (two cores: about twice as fast
as one process with two threads on these small batches), and every number is the same with
--jobs 1: each run's results depend only on its seed, never on scheduling.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import queue as queue_mod
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .callbacks import Callback
from .config import TrainConfig, config_fields
from .files import write_json

ARMS = ("unguarded", "normguard")


@dataclass
class DemoSettings:
    """What the demo trains. The defaults fit 10 minutes on 2 laptop cores (docs/demo.md)."""

    method: str = "nft"
    reward: str = "saturation"
    iterations: int = 40
    lr: float = 2e-3
    group_size: int = 8
    groups_per_iteration: int = 2
    sample_steps: int = 10
    few_steps: int = 4
    train_timesteps: int = 4
    lora_rank: int = 16
    train_prompts: int = 32
    eval_every: int = 5
    eval_samples: int = 16  # the trainer's periodic evaluation (curves, grids over training)
    final_samples: int = 128  # the final comparison (judge accuracy, Fréchet distance)
    seed: int = 0
    normguard_weight: float | None = None  # None: TrainConfig's default
    normguard_form: str | None = None
    normguard_margin: float | None = None
    model: str = "builtin"


# What both arms share besides the DemoSettings fields named like TrainConfig keys.
ARM_BASE = TrainConfig(
    device="cpu",
    monitor_rewards=["scene_judge"],
    eval_quality="",
    keep_best="none",
    keep_checkpoints=1,
    tensorboard=False,
)


def arm_config(out: Path, s: DemoSettings, arm: str) -> TrainConfig:
    """The TrainConfig of one arm; the arms differ only in normguard_weight."""
    from .scene_eval import PROMPT_OMITS, scene_prompts

    omit = PROMPT_OMITS.get(s.reward, ())
    cfg = ARM_BASE.replace(
        **config_fields(s),
        prompts=scene_prompts(s.train_prompts, s.seed, omit),
        eval_prompts=scene_prompts(s.eval_samples, s.seed + 1, omit),
        rewards=[s.reward],
        micro_batch_size=s.group_size * s.groups_per_iteration,
        eval_few_steps=s.few_steps,
        checkpoint_every=max(1, s.iterations),
        out=str(out / arm),
        lora_name=f"demo_{arm}",
    )
    return cfg.replace(normguard_weight=0.0) if arm == "unguarded" else cfg


class _Progress(Callback):
    """Forwards the loop's events to `post` (the parent's progress bars, maybe in another process)."""

    def __init__(self, arm: str, post: Callable[[tuple], None]):
        self.arm, self.post = arm, post

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.post(("start", self.arm, info["iterations"], info["start_iteration"]))

    def on_iteration_end(self, iteration: int, metrics: dict[str, Any]) -> None:
        self.post(("iteration", self.arm, iteration, metrics.get("reward_mean"), metrics.get("train_rho")))


def run_arm(
    cfg_dict: dict[str, Any], s_dict: dict[str, Any], arm: str, post: Callable[[tuple], None]
) -> dict:
    """Train one arm, then score its LoRA (and, for the unguarded arm, the base model) on the fixed
    final evaluation set. Returns metrics and images (numpy) per model and schedule."""
    from .backends import load_backend
    from .loop import Trainer
    from .rewards import RewardSpec, build_rewards
    from .scene_eval import (
        PROMPT_OMITS,
        REFERENCE_FIXED,
        EvalSet,
        SceneJudge,
        evaluate_policy,
        real_scene_stats,
        scene_prompts,
    )

    torch.set_num_threads(1)
    cpu0 = time.process_time()
    s = DemoSettings(**s_dict)
    trainer = Trainer(TrainConfig.from_dict(cfg_dict), callbacks=[_Progress(arm, post)])
    result = trainer.run()
    post(("phase", arm, "evaluating"))
    rewards, judge = build_rewards([RewardSpec(s.reward)]), SceneJudge()
    if s.reward in REFERENCE_FIXED:  # e.g. centring: compare with real scenes that have the object centred
        judge.reference = real_scene_stats(judge.judge, REFERENCE_FIXED[s.reward])
    prompts = scene_prompts(s.final_samples, s.seed + 2, PROMPT_OMITS.get(s.reward, ()))
    models = {arm: trainer.backend}
    if arm == "unguarded":  # the base model: the same weights with no adapter
        models["base"] = load_backend(s.model, "cpu")
    out: dict[str, Any] = {"arm": arm, "status": result.status, "lora": str(result.lora_path), "models": {}}
    for name, backend in models.items():
        evalset = EvalSet.for_backend(backend, s.final_samples, s.seed + 2, prompts)
        out["models"][name] = {}
        for label, steps in (("full", s.sample_steps), ("few", s.few_steps)):
            metrics, images = evaluate_policy(
                backend, evalset, steps, rewards, judge, record_norms=label == "full"
            )
            out["models"][name][label] = {"metrics": metrics, "images": images[:8].numpy()}
    out["prompts"] = prompts[:8]
    out["cpu_seconds"] = time.process_time() - cpu0
    post(("phase", arm, "done"))
    return out


def _worker(cfg_dict: dict, s_dict: dict, arm: str, q: Any) -> None:
    try:
        q.put(("result", arm, run_arm(cfg_dict, s_dict, arm, q.put)))
    except BaseException:
        q.put(("error", arm, traceback.format_exc()))


class _Bars:
    """One tqdm bar per arm, fed by the workers' messages."""

    def __init__(self, enabled: bool):
        self.enabled, self.bars = enabled, {}

    def __call__(self, msg: tuple) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        kind, arm = msg[0], msg[1]
        if kind == "start":
            self.bars[arm] = tqdm(
                total=msg[2],
                initial=msg[3],
                desc=f"{arm:>9}",
                unit="it",
                position=ARMS.index(arm),
                dynamic_ncols=True,
            )
        elif kind == "iteration" and arm in self.bars:
            self.bars[arm].update(1)
            post = {"reward": f"{msg[3]:.4g}"} if msg[3] is not None else {}
            if msg[4] is not None:
                post["rho"] = f"{msg[4]:.3f}"
            self.bars[arm].set_postfix(post)
        elif kind == "phase" and arm in self.bars:
            self.bars[arm].set_postfix_str(msg[2])

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _run_parallel(jobs: list[tuple[dict, dict, str]], bars: _Bars) -> dict[str, dict]:
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    q = ctx.Queue()
    procs = {arm: ctx.Process(target=_worker, args=(c, s, arm, q), daemon=True) for c, s, arm in jobs}
    for p in procs.values():
        p.start()
    results: dict[str, dict] = {}
    try:
        while len(results) < len(procs):
            try:
                msg = q.get(timeout=1.0)
            except queue_mod.Empty:
                dead = [a for a, p in procs.items() if a not in results and p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"demo worker {dead[0]} died (exit code {procs[dead[0]].exitcode})"
                    ) from None
                continue
            if msg[0] == "result":
                results[msg[1]] = msg[2]
            elif msg[0] == "error":
                raise RuntimeError(f"demo run {msg[1]} failed:\n{msg[2]}")
            else:
                bars(msg)
    finally:
        for p in procs.values():
            if p.is_alive() and len(results) < len(procs):
                p.terminate()
            p.join()
    return results


def run_demo(
    out: str | Path = "runs/demo",
    settings: DemoSettings | None = None,
    *,
    jobs: int = 2,
    progress: bool = True,
) -> Path:
    """Train both arms, evaluate, write out/summary.json and out/report.md; returns the report's path."""
    from .report import write_demo_report

    s = settings or DemoSettings()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the demo's runs and report")
    out.mkdir(parents=True, exist_ok=True)
    cfgs = {arm: arm_config(out, s, arm) for arm in ARMS}
    for cfg in cfgs.values():
        cfg.validate()
    jobs_list = [(cfgs[arm].to_dict(), asdict(s), arm) for arm in ARMS]
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    bars, threads = _Bars(progress), torch.get_num_threads()
    if progress:
        print(
            f"Training two LoRAs of the builtin model ({s.method.upper()}, reward {s.reward!r}, "
            f"{s.iterations} iterations), without and with NormGuard, then comparing them on "
            f"{s.final_samples} fixed prompts -> {out}",
            flush=True,
        )
    try:
        if jobs >= 2:
            results = _run_parallel(jobs_list, bars)
        else:
            results = {arm: run_arm(c, sd, arm, bars) for c, sd, arm in jobs_list}
    finally:
        bars.close()
        torch.set_num_threads(threads)
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    summary = {
        "settings": asdict(s),
        "normguard": {k: v for k, v in cfgs["normguard"].to_dict().items() if k.startswith("normguard_")},
        "jobs": jobs,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "torch_threads_per_run": 1,
        "arms": {arm: {k: results[arm][k] for k in ("status", "lora", "cpu_seconds")} for arm in ARMS},
        "final": {
            name: {label: r["metrics"] for label, r in res.items()}
            for arm in ARMS
            for name, res in results[arm]["models"].items()
        },
    }
    write_json(out / "summary.json", summary)  # atomic; a non-finite number becomes null
    images = {
        name: {label: r["images"] for label, r in res.items()}
        for arm in ARMS
        for name, res in results[arm]["models"].items()
    }
    np.savez_compressed(
        out / "final_samples.npz", **{f"{n}_{lb}": a for n, d in images.items() for lb, a in d.items()}
    )
    return write_demo_report(out, summary, images, results["unguarded"]["prompts"])


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the workers)."""
    try:
        import resource
    except ImportError:  # Windows: this process only
        return time.process_time()
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def settings_with(s: DemoSettings, **changes: Any) -> DemoSettings:
    """A copy of s with the given fields changed (None values are ignored)."""
    return dataclasses.replace(s, **{k: v for k, v in changes.items() if v is not None})
