"""The paper's claims, measured on the shipped TinyFlow model (or any local flow model).

For each RL method (NFT, AWM, DPO), each reward (one that pays for magnitude, `saturation`, and one
that does not, `centring` on prompts that name no position) and each seed, one LoRA is trained
without and one with NormGuard from the same seed. Then, on fixed prompts and noise:

  1. rho (||v_theta|| / ||v_ref|| per sampler step, on the policy's own trajectory), with and without;
  2. the reward gain kept with NormGuard, as a fraction of the unguarded gain;
  3. quality the reward does not see -- the judge network's attribute accuracy (does the image show
     what the prompt asked for) and the Fréchet distance of its features to real scenes (the
     training data; for `centring`, real scenes with the object in the centre) --
     at the full and at a few-step schedule;
  4. the unguarded LoRA sampled with its velocity rescaled to ||v_ref|| at every step;
  5. the unguarded run's own earlier checkpoint at the guarded run's reward (early stopping).

Every cell of the table is mean +- std over seeds; each claim gets a verdict by the fixed rules in
`verdicts` (docs/paper_claims.md states them). Results are cached per run under --out, so an
interrupted benchmark resumes and a finished one re-renders instantly.

    python benchmarks/paper_claims.py                      # full run -> docs/paper_claims.md
    python benchmarks/paper_claims.py --smoke --doc /tmp/claims.md   # CI: seconds, one seed
    python benchmarks/paper_claims.py --sweep              # also the penalty sweep (form, weight, margin)
    python benchmarks/paper_claims.py --model /models/sd3 --height 512 --width 512   # a diffusers model
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from normguard.trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
REWARDS = ("saturation", "centring")
# What each reward leaves to the prompt, and which real scenes it asks for: `centring` decides the
# position itself, so its prompts name none and its Fréchet reference is real scenes with the object
# in the centre (the distribution a perfect policy would draw); the others keep the full data.
PROMPT_OMITS = {"centring": ("position",)}
REFERENCE_FIXED = {"centring": {"position": "centre"}}
METHODS = ("nft", "awm", "dpo")
EVAL_SEED = 1000  # the final evaluation's prompts and noise: the same for every run


@dataclass(frozen=True)
class Recipe:
    """How one (method, reward) is trained; the defaults are shared, lr and iterations are tuned."""

    lr: float
    iterations: int = 40
    group_size: int = 8
    groups_per_iteration: int = 2
    sample_steps: int = 10
    train_timesteps: int = 4
    lora_rank: int = 16
    train_prompts: int = 32


# Tuned so that every unguarded run drifts clearly within 40 iterations without collapsing to flat
# colour (at 3e-3 AWM and DPO reach that within 20); the guarded runs use the same recipe.
RECIPES: dict[tuple[str, str], Recipe] = {
    ("nft", "saturation"): Recipe(lr=2e-3),
    ("awm", "saturation"): Recipe(lr=1e-3),
    ("dpo", "saturation"): Recipe(lr=1.5e-3),
    ("nft", "centring"): Recipe(lr=2e-3),
    ("awm", "centring"): Recipe(lr=1e-3),
    ("dpo", "centring"): Recipe(lr=1.5e-3),
}
SMOKE = dict(
    iterations=2, group_size=2, groups_per_iteration=2, sample_steps=2, train_timesteps=1, train_prompts=4
)


@dataclass(frozen=True)
class Guard:
    """NormGuard's settings for one arm (weight 0 = the unguarded base method). Always relative."""

    weight: float
    form: str = "linear"
    margin: float = 0.0

    @property
    def name(self) -> str:
        return "off" if self.weight == 0 else f"{self.form}-w{self.weight:g}-m{self.margin:g}"


OFF = Guard(0.0)


def default_guard() -> Guard:
    d = TrainConfig()
    return Guard(d.normguard_weight, d.normguard_form, d.normguard_margin)


SWEEP = (  # the penalty grid behind the defaults (every method, both rewards, the first seed)
    Guard(1.0),
    Guard(3.0),
    Guard(10.0),
    Guard(1.0, margin=0.02),
    Guard(10.0, "squared"),
    Guard(100.0, "squared"),
)


@dataclass(frozen=True)
class Bench:
    """What every job needs to know about the benchmark as a whole."""

    model: str = "builtin"
    out: str = "runs/paper_claims"
    samples: int = 128  # final evaluation images per model and schedule
    match_samples: int = 32  # the subset that early stopping matches rewards on
    full_steps: int = 10  # the step count the runs were trained at
    few_steps: int = 4
    snapshots: int = 8  # unguarded checkpoints kept for early stopping
    height: int | None = None
    width: int | None = None
    smoke: bool = False


# --- one training run and its evaluations (runs in a worker process) --------------------------------


def run_key(bench: Bench, method: str, reward: str, seed: int, guard: Guard) -> str:
    """The run's name in the cache; it holds the recipe, so a changed recipe never reads an old result."""
    r = recipe_for(bench, method, reward)
    return f"{method}-{reward}-lr{r.lr:g}-it{r.iterations}-s{seed}-{guard.name}"


def early_key(bench: Bench, method: str, reward: str, seed: int, iteration: int) -> str:
    return f"early-{run_key(bench, method, reward, seed, OFF)}-i{iteration}"


def recipe_for(bench: Bench, method: str, reward: str) -> Recipe:
    recipe = RECIPES[(method, reward)]
    return replace(recipe, **SMOKE) if bench.smoke else recipe


def train_config(bench: Bench, method: str, reward: str, seed: int, guard: Guard, out: Path) -> TrainConfig:
    from normguard.trainer.scene_eval import scene_prompts

    r = recipe_for(bench, method, reward)
    return TrainConfig(
        model=bench.model,
        device=device(),
        prompts=scene_prompts(r.train_prompts, seed, PROMPT_OMITS.get(reward, ())),
        rewards=[reward],
        method=method,
        iterations=r.iterations,
        lr=r.lr,
        group_size=r.group_size,
        groups_per_iteration=r.groups_per_iteration,
        sample_steps=r.sample_steps,
        train_timesteps=r.train_timesteps,
        micro_batch_size=r.group_size * r.groups_per_iteration,
        lora_rank=r.lora_rank,
        normguard_weight=guard.weight,
        normguard_form=guard.form,
        normguard_margin=guard.margin,
        normguard_relative=True,
        height=bench.height,
        width=bench.width,
        eval_every=0,
        checkpoint_every=max(1, r.iterations),
        keep_checkpoints=1,
        keep_best="none",
        tensorboard=False,
        seed=seed,
        out=str(out),
    )


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _setup_worker() -> None:
    torch.set_num_threads(1)  # one thread per run: deterministic, and two runs fill two cores


def _reference_path(bench: Bench, reward: str) -> Path:
    return Path(bench.out) / f"reference-{reward}.pt"


def _judge(bench: Bench, reward: str):
    """The judge, with the Fréchet reference the base job saved for this reward (if any)."""
    from normguard.trainer.scene_eval import SceneJudge

    judge = SceneJudge()
    ref = _reference_path(bench, reward)
    if ref.is_file():
        judge.reference = tuple(torch.load(ref, weights_only=True))
    return judge


def _evalset(bench: Bench, backend, reward: str):
    from normguard.trainer.scene_eval import EvalSet, scene_prompts

    prompts = scene_prompts(bench.samples, EVAL_SEED, PROMPT_OMITS.get(reward, ()))
    return EvalSet.for_backend(backend, bench.samples, EVAL_SEED, prompts, size=_size(bench, backend))


def _size(bench: Bench, backend) -> tuple[int, int]:
    h, w = backend.default_size()
    return (bench.height or h, bench.width or w)


def _eval_both(bench: Bench, backend, rewards, judge, evalset, rescale: bool = False) -> dict[str, Any]:
    """Full-step (with rho) and few-step metrics; full also keeps the match-subset reward."""
    from normguard.trainer.scene_eval import evaluate_policy

    full, images = evaluate_policy(backend, evalset, bench.full_steps, rewards, judge, rescale=rescale)
    few, _ = evaluate_policy(
        backend, evalset, bench.few_steps, rewards, judge, rescale=rescale, record_norms=False
    )
    full["match_reward"] = float(
        rewards(images[: bench.match_samples], evalset.prompts[: bench.match_samples]).mean()
    )
    return {"full": full, "few": few}


def base_job(bench: Bench, reward: str) -> dict[str, Any]:
    """The base model's numbers on the evaluation set, after saving this reward's Fréchet reference:
    real scenes (with REFERENCE_FIXED attributes) for the builtin model; for any other model, which
    was not trained on the scenes, its own full-step samples."""
    from normguard.trainer.backends import load_backend
    from normguard.trainer.rewards import RewardSpec, build_rewards
    from normguard.trainer.scene_eval import evaluate_policy, real_scene_stats

    _setup_worker()
    backend = load_backend(bench.model, device())
    judge, evalset = _judge(bench, reward), _evalset(bench, backend, reward)
    rewards = build_rewards([RewardSpec(reward)])
    if bench.model != "builtin":
        _, images = evaluate_policy(backend, evalset, bench.full_steps, rewards, judge, record_norms=False)
        judge.set_reference(images)
    elif reward in REFERENCE_FIXED:
        judge.reference = real_scene_stats(judge.judge, REFERENCE_FIXED[reward], 512 if bench.smoke else 4096)
    torch.save(list(judge.reference), _reference_path(bench, reward))
    return _eval_both(bench, backend, rewards, judge, evalset)


class _Snapshots:
    """Keeps the adapter every `every` iterations (exported form) for the early-stopping claim."""

    def __init__(self, every: int):
        from normguard.trainer.callbacks import Callback

        self.every, self.saved, self.trainer = max(1, every), {}, None
        outer = self

        class Hook(Callback):
            def on_iteration_end(self, iteration: int, metrics: dict[str, Any]) -> None:
                if iteration % outer.every == 0:
                    outer.saved[iteration] = outer.trainer.backend.lora_state_dict()

        self.callback = Hook()


def train_job(bench: Bench, method: str, reward: str, seed: int, guard: Guard) -> dict[str, Any]:
    """Train one arm and evaluate its final LoRA; the unguarded arm is also evaluated with
    inference-time rescaling, and its snapshots' rewards on the match subset are recorded."""
    import shutil

    from safetensors.torch import save_file

    from normguard.trainer.loop import Trainer
    from normguard.trainer.scene_eval import EvalSet, evaluate_policy

    _setup_worker()
    key = run_key(bench, method, reward, seed, guard)
    run_dir = Path(bench.out) / "runs" / key
    shutil.rmtree(run_dir, ignore_errors=True)  # no cached result: whatever is there is incomplete
    cfg = train_config(bench, method, reward, seed, guard, run_dir)
    snaps = _Snapshots(cfg.iterations // bench.snapshots) if guard.weight == 0 else None
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = Trainer(cfg, callbacks=[snaps.callback] if snaps else [])
    if snaps:
        snaps.trainer = trainer
    trainer.run()
    train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    judge, evalset = _judge(bench, reward), _evalset(bench, trainer.backend, reward)
    result = {"key": key, "train_wall": train_wall, "train_cpu": train_cpu}
    result |= _eval_both(bench, trainer.backend, trainer.rewards, judge, evalset)
    if snaps:
        result["rescaled"] = _eval_both(bench, trainer.backend, trainer.rewards, judge, evalset, rescale=True)
        final = trainer.backend.lora_state_dict()
        match = EvalSet(evalset.prompts[: bench.match_samples], evalset.noise[: bench.match_samples])
        result["snapshots"] = {}
        for it, state in sorted(snaps.saved.items()):
            trainer.backend.load_lora_state_dict(state)
            m, _ = evaluate_policy(
                trainer.backend, match, bench.full_steps, trainer.rewards, judge, record_norms=False
            )
            result["snapshots"][str(it)] = m["reward"]
            save_file(state, str(run_dir / f"snapshot-{it:05d}.safetensors"))
        trainer.backend.load_lora_state_dict(final)
    result["eval_cpu"] = time.process_time() - c0 - train_cpu
    return result


def early_job(bench: Bench, method: str, reward: str, seed: int, iteration: int) -> dict[str, Any]:
    """The unguarded run's snapshot at `iteration`, evaluated like a final LoRA."""
    from safetensors.torch import load_file

    from normguard.trainer.backends import load_backend
    from normguard.trainer.rewards import RewardSpec, build_rewards

    _setup_worker()
    run_dir = Path(bench.out) / "runs" / run_key(bench, method, reward, seed, OFF)
    backend = load_backend(bench.model, device())
    backend.add_lora(recipe_for(bench, method, reward).lora_rank)
    backend.load_lora_state_dict(load_file(str(run_dir / f"snapshot-{iteration:05d}.safetensors")))
    judge, evalset = _judge(bench, reward), _evalset(bench, backend, reward)
    out = _eval_both(bench, backend, build_rewards([RewardSpec(reward)]), judge, evalset)
    return {"iteration": iteration, **out}


def pick_early_stop(snapshots: dict[str, float], target: float) -> int | None:
    """The first snapshot whose match-subset reward reaches `target` (the guarded run's final one),
    or the closer of it and the one before; None when the unguarded run never reached it."""
    items = sorted((int(k), v) for k, v in snapshots.items())
    for i, (it, r) in enumerate(items):
        if r >= target:
            if i > 0 and abs(items[i - 1][1] - target) < abs(r - target):
                return items[i - 1][0]
            return it
    return None


# --- orchestration ------------------------------------------------------------------------------------


class Runner:
    """Runs jobs in worker processes (spawned, one torch thread each) and caches each result as JSON."""

    def __init__(self, bench: Bench, jobs: int):
        self.bench, self.jobs = bench, jobs
        self.cache = Path(bench.out) / "results"
        self.cache.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.cache / f"{name}.json"

    def run(self, tasks: dict[str, tuple]) -> dict[str, dict]:
        """tasks: name -> (function, *args); cached names are read back instead of run."""
        todo = {n: t for n, t in tasks.items() if not self.path(n).is_file()}
        if todo:
            print(f"running {len(todo)} job(s) ({len(tasks) - len(todo)} cached) on {self.jobs} worker(s)")
        if todo and self.jobs > 1:
            with ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn")) as pool:
                futures = {n: pool.submit(t[0], *t[1:]) for n, t in todo.items()}
                for n, f in futures.items():
                    self._store(n, f.result())
        else:
            for n, t in todo.items():
                self._store(n, t[0](*t[1:]))
        return {n: json.loads(self.path(n).read_text()) for n in tasks}

    def _store(self, name: str, result: dict) -> None:
        self.path(name).write_text(json.dumps(result))
        print(f"  done {name}", flush=True)


def run_benchmark(
    bench: Bench, methods: list[str], rewards: list[str], seeds: list[int], guards: list[Guard], jobs: int
) -> dict[str, Any]:
    runner = Runner(bench, jobs)
    base = runner.run({f"base-{r}": (base_job, bench, r) for r in rewards})
    arms = [OFF, *guards]
    trained = runner.run(
        {
            run_key(bench, m, r, s, g): (train_job, bench, m, r, s, g)
            for m in methods
            for r in rewards
            for s in seeds
            for g in arms
        }
    )
    early_tasks, early_iters = {}, {}
    for m in methods:
        for r in rewards:
            for s in seeds:
                un = trained[run_key(bench, m, r, s, OFF)]
                for g in guards:
                    it = pick_early_stop(
                        un["snapshots"], trained[run_key(bench, m, r, s, g)]["full"]["match_reward"]
                    )
                    early_iters[run_key(bench, m, r, s, g)] = it
                    if it is not None:
                        early_tasks[early_key(bench, m, r, s, it)] = (early_job, bench, m, r, s, it)
    early = runner.run(early_tasks)
    return {"bench": bench, "base": base, "trained": trained, "early": early, "early_iters": early_iters}


# --- statistics and verdicts ----------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def fmt(values: list[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return "n/a"
    if len([v for v in values if v is not None and not math.isnan(v)]) == 1:
        return f"{m:.{digits}f}"  # one seed: no spread to show
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def gain_kept(base: float, unguarded: float, guarded: float) -> float:
    gain = unguarded - base
    return (guarded - base) / gain if gain > 0 else math.nan


@dataclass
class Cell:
    """Per-seed numbers of one (method, reward, guard) comparison."""

    rho_off: list[float]
    rho_on: list[float]
    reward_off: list[float]
    reward_on: list[float]
    kept: list[float]
    # quality at "full" and "few": accuracy (higher better) and frechet (lower better), per arm
    q: dict[str, dict[str, list[float]]]
    early_iteration: list[int | None]
    early_is_final: list[bool]  # the checkpoint picked is the unguarded run's last one: no stopping at all


def collect(results: dict[str, Any], method: str, reward: str, seeds: list[int], guard: Guard) -> Cell:
    base = results["base"][f"base-{reward}"]
    q: dict[str, dict[str, list[float]]] = {}
    rho_off, rho_on, r_off, r_on, kept, its, final = [], [], [], [], [], [], []
    for s in seeds:
        bench = results["bench"]
        off = results["trained"][run_key(bench, method, reward, s, OFF)]
        on = results["trained"][run_key(bench, method, reward, s, guard)]
        it = results["early_iters"].get(run_key(bench, method, reward, s, guard))
        early = results["early"].get(early_key(bench, method, reward, s, it)) if it is not None else None
        rho_off.append(off["full"]["rho_mean"])
        rho_on.append(on["full"]["rho_mean"])
        r_off.append(off["full"]["reward"])
        r_on.append(on["full"]["reward"])
        kept.append(gain_kept(base["full"]["reward"], off["full"]["reward"], on["full"]["reward"]))
        its.append(it)
        final.append(it is not None and it == max(int(k) for k in off.get("snapshots", {"0": 0})))
        arms = {"base": base, "off": off, "on": on, "rescaled": off["rescaled"], "early": early}
        for arm, res in arms.items():
            for sched in ("full", "few"):
                for metric in ("accuracy", "frechet", "reward"):
                    v = res[sched][metric] if res is not None else math.nan
                    q.setdefault(f"{arm}/{sched}/{metric}", []).append(v)
    return Cell(rho_off, rho_on, r_off, r_on, kept, q, its, final)


# The smallest differences that count as "better" (below them two models are a tie): the Fréchet
# distance must be lower by 5% of the larger one, the judge accuracy higher by 1 point, the reward
# higher by 5% of the unguarded run's gain.
MIN_FD_FRACTION, MIN_ACCURACY, MIN_REWARD_FRACTION = 0.05, 0.01, 0.05


def beats(x: float, y: float, metric: str, gain: float = 0.0) -> bool:
    """x is better than y on `metric` by at least the minimum difference."""
    if metric == "frechet":
        return y - x > MIN_FD_FRACTION * max(x, y)
    if metric == "accuracy":
        return x - y > MIN_ACCURACY
    return x - y > MIN_REWARD_FRACTION * abs(gain)


def better_every_seed(a: list[float], b: list[float], metric: str, gains: list[float] | None = None) -> bool:
    """a beats b at every seed where both exist (and there is at least one)."""
    gains = gains or [0.0] * len(a)
    triples = [(x, y, g) for x, y, g in zip(a, b, gains, strict=True) if not (math.isnan(x) or math.isnan(y))]
    return bool(triples) and all(beats(x, y, metric, g) for x, y, g in triples)


def quality_verdict(c: Cell, better: str, worse: str) -> dict[str, bool]:
    """Is `better` better than `worse` at every seed: FD (lower) and accuracy (higher), per schedule."""
    return {
        f"{metric}/{sched}": better_every_seed(
            c.q[f"{better}/{sched}/{metric}"], c.q[f"{worse}/{sched}/{metric}"], metric
        )
        for sched in ("full", "few")
        for metric in ("frechet", "accuracy")
    }


def verdicts(c: Cell) -> dict[str, str]:
    """One verdict per claim, by fixed rules (stated in docs/paper_claims.md)."""
    out = {}
    rho, _ = mean_std(c.rho_off)
    rho_on, _ = mean_std(c.rho_on)
    if rho >= 1.05:
        v1 = "holds" if rho <= 1.15 else "holds, stronger than the paper's 5-15%"
    elif rho > 1.0 and all(r > 1.0 for r in c.rho_off):
        v1 = "partly: inflation at every seed, but below the paper's 5%"
    else:
        v1 = "does not hold: no inflation"
    guard_ok = rho_on <= 1.01
    out["1"] = (
        f"{v1}; NormGuard {'holds rho at or below 1.01' if guard_ok else 'does not hold rho at 1'} ({rho_on:.3f})"
    )

    kept, _ = mean_std(c.kept)
    if math.isnan(kept):
        out["2"] = "n/a: the unguarded run gained no reward"
    elif kept >= 0.9:
        out["2"] = f"holds: {100 * kept:.0f}% of the gain kept"
    elif kept >= 0.5:
        out["2"] = f"partly: {100 * kept:.0f}% of the gain kept (paper: the whole gain)"
    else:
        out["2"] = f"does not hold: {100 * kept:.0f}% of the gain kept"

    qv = quality_verdict(c, "on", "off")
    fd_full, fd_few = qv["frechet/full"], qv["frechet/few"]
    acc = qv["accuracy/full"] and qv["accuracy/few"]
    gain = [
        mean_std(c.q[f"off/{s}/frechet"])[0] - mean_std(c.q[f"on/{s}/frechet"])[0] for s in ("full", "few")
    ]
    grows = gain[1] > gain[0]
    if fd_full and fd_few:
        v3 = "holds: closer to the data at every seed, full and few steps"
    elif fd_full or fd_few:
        v3 = f"partly: closer to the data at every seed only at {'full' if fd_full else 'few'} steps"
    else:
        v3 = "does not hold: not closer to the data at every seed"
    v3 += f"; judge accuracy {'higher' if acc else 'not higher'} at every seed (full and few)"
    v3 += (
        f"; the FD gain {'grows' if grows else 'does not grow'} at few steps ({gain[0]:.1f} -> {gain[1]:.1f})"
    )
    out["3"] = v3

    rescale_fixes = quality_verdict(c, "rescaled", "off")
    gains = [u - b for u, b in zip(c.reward_off, c.q["base/full/reward"], strict=True)]
    reward_up = better_every_seed(c.q["rescaled/full/reward"], c.q["off/full/reward"], "reward", gains)
    fixed = [k for k, v in rescale_fixes.items() if v]
    if not reward_up and not fixed:
        out["4"] = "holds: rescaling raised neither the reward nor any quality measure at every seed"
    else:
        parts = (["the reward"] if reward_up else []) + [f"{k.replace('/', ' at ')} steps" for k in fixed]
        out["4"] = "does not hold: rescaling improved " + ", ".join(parts) + " at every seed"

    if any(i is None for i in c.early_iteration):
        n = sum(i is None for i in c.early_iteration)
        out["5"] = f"n/a at {n} seed(s): the unguarded run never reached the guarded reward"
        if n == len(c.early_iteration):
            return out
    if all(c.early_is_final):
        out["5"] = (
            "n/a: the unguarded run first reached the guarded reward at its last checkpoint at every seed "
            "(NormGuard kept the whole gain), so there was nothing to stop early"
        )
        return out
    ev = quality_verdict(c, "on", "early")
    wins = [k for k, v in ev.items() if v]
    fd_both = ev["frechet/full"] and ev["frechet/few"]
    prefix = out.get("5", "")
    if fd_both:
        v5 = "holds: the guarded run is closer to the data than early stopping at every seed, full and few steps"
    elif wins:
        v5 = "partly: the guarded run beats early stopping at every seed only in " + ", ".join(
            k.replace("/", " at ") for k in wins
        )
    else:
        v5 = "does not hold: early stopping at the same reward matches the guarded run's quality"
    out["5"] = f"{prefix}; {v5}" if prefix else v5
    return out


# --- the document --------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[1]:.1f} when written (other jobs shared the cores)"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, Python {platform.python_version()}{load}"


def claims_table(
    results: dict[str, Any], methods: list[str], reward: str, seeds: list[int], guard: Guard
) -> str:
    rows = [
        "| method | arm | mean rho | reward | gain kept | judge acc. (full) | judge acc. (few) "
        "| FD (full) | FD (few) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = results["base"][f"base-{reward}"]
    rows.append(
        f"| - | base model | 1 | {base['full']['reward']:.4f} | - | {base['full']['accuracy']:.3f} "
        f"| {base['few']['accuracy']:.3f} | {base['full']['frechet']:.1f} | {base['few']['frechet']:.1f} |"
    )
    for m in methods:
        c = collect(results, m, reward, seeds, guard)
        for arm, label, rho, kept in (
            ("off", "without NormGuard", fmt(c.rho_off), "-"),
            ("on", "with NormGuard", fmt(c.rho_on), fmt(c.kept, 2)),
            ("rescaled", "without, rescaled to ‖v_ref‖ (4)", "1 (forced)", "-"),
            ("early", "without, early-stopped at the guarded reward (5)", "-", "-"),
        ):
            rows.append(
                f"| {m.upper()} | {label} | {rho} | {fmt(c.q[f'{arm}/full/reward'], 4)} | {kept} "
                f"| {fmt(c.q[f'{arm}/full/accuracy'])} | {fmt(c.q[f'{arm}/few/accuracy'])} "
                f"| {fmt(c.q[f'{arm}/full/frechet'], 1)} | {fmt(c.q[f'{arm}/few/frechet'], 1)} |"
            )
    return "\n".join(rows)


def verdict_table(
    results: dict[str, Any], methods: list[str], reward: str, seeds: list[int], guard: Guard
) -> str:
    names = {
        "1": "(1) RL inflates rho by 5-15%; NormGuard holds it at 1",
        "2": "(2) NormGuard keeps the reward gain",
        "3": "(3) NormGuard improves quality the reward does not see, more at few steps",
        "4": "(4) rescaling to ‖v_ref‖ at inference recovers neither reward nor quality",
        "5": "(5) early stopping at the same reward does not match NormGuard's quality",
    }
    rows = ["| claim | " + " | ".join(m.upper() for m in methods) + " |", "|---|" + "---|" * len(methods)]
    per_method = {m: verdicts(collect(results, m, reward, seeds, guard)) for m in methods}
    for k, name in names.items():
        rows.append(f"| {name} | " + " | ".join(per_method[m][k] for m in methods) + " |")
    return "\n".join(rows)


def sweep_table(
    results: dict[str, Any], methods: list[str], reward: str, seeds: list[int], guards: list[Guard]
) -> str:
    rows = [
        "| method | penalty | mean rho | gain kept | FD (full) | FD (few) | judge acc. (full) | judge acc. (few) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        c0 = collect(results, m, reward, seeds, guards[0])
        rows.append(
            f"| {m.upper()} | off | {fmt(c0.rho_off)} | 1 | {fmt(c0.q['off/full/frechet'], 1)} "
            f"| {fmt(c0.q['off/few/frechet'], 1)} | {fmt(c0.q['off/full/accuracy'])} | {fmt(c0.q['off/few/accuracy'])} |"
        )
        for g in guards:
            c = collect(results, m, reward, seeds, g)
            rows.append(
                f"| {m.upper()} | {g.form}, weight {g.weight:g}, margin {g.margin:g} | {fmt(c.rho_on)} "
                f"| {fmt(c.kept, 2)} | {fmt(c.q['on/full/frechet'], 1)} | {fmt(c.q['on/few/frechet'], 1)} "
                f"| {fmt(c.q['on/full/accuracy'])} | {fmt(c.q['on/few/accuracy'])} |"
            )
    return "\n".join(rows)


MAGNITUDE_FREE = ("centring", "position")


def relative_fd(c: Cell) -> float:
    """The guarded FD over the unguarded FD, summed over full and few steps, mean over seeds."""
    ratios = [
        (c.q["on/full/frechet"][i] + c.q["on/few/frechet"][i])
        / (c.q["off/full/frechet"][i] + c.q["off/few/frechet"][i])
        for i in range(len(c.rho_on))
    ]
    return mean_std(ratios)[0]


def pick_default(kept: dict[Guard, float], score: dict[Guard, float]) -> Guard:
    """The defaults rule: among the settings that keep >= 90% of the unguarded reward gain on the
    magnitude-free rewards (where the paper says the penalty should cost nothing), the one whose
    images are closest to the data (lowest `score`, the FD relative to the unguarded run); when none
    keeps 90%, the one that keeps the most."""
    eligible = [g for g in kept if kept[g] >= 0.9] or [max(kept, key=lambda g: kept[g])]
    return min(eligible, key=lambda g: score[g])


def recommend(
    sweep: dict[str, Any], methods: list[str], rewards: list[str], guards: list[Guard]
) -> tuple[Guard, str]:
    """pick_default on the sweep's numbers (the worst method's kept gain, the mean relative FD over
    methods and rewards); returns the setting and the reason in words."""
    free = [r for r in rewards if r in MAGNITUDE_FREE]
    cells = {
        (g, m, r): collect(sweep, m, r, sweep["seeds"], g) for g in guards for m in methods for r in rewards
    }
    kept = {
        g: min((mean_std(cells[g, m, r].kept)[0] for m in methods for r in free), default=1.0) for g in guards
    }
    score = {
        g: statistics.fmean(relative_fd(cells[g, m, r]) for m in methods for r in rewards) for g in guards
    }
    best = pick_default(kept, score)
    why = (
        f"{best.form} hinge, weight {best.weight:g}, margin {best.margin:g}: it keeps "
        f"{100 * kept[best]:.0f}% of the gain on {', '.join(free) or 'no magnitude-free reward'} (worst method) "
        f"and brings the FD to {100 * score[best]:.0f}% of the unguarded run's (mean over methods, rewards, "
        "full and few steps)"
    )
    return best, why


def render(
    results: dict[str, Any],
    bench: Bench,
    methods: list[str],
    rewards: list[str],
    seeds: list[int],
    guard: Guard,
    sweep: dict[str, Any] | None,
    wall: float,
    jobs: int,
) -> str:
    trained = results["trained"].values()
    cpu = sum(r["train_cpu"] + r["eval_cpu"] for r in trained)
    lines = [
        "# The paper's claims, measured" + (" (SMOKE RUN: numbers mean nothing)" if bench.smoke else ""),
        "",
        f"Machine: {machine()}. Model: `{bench.model}`. Seeds: {', '.join(map(str, seeds))}. "
        f"Penalty: {guard.form} relative hinge, weight {guard.weight:g}, margin {guard.margin:g}. "
        f"{bench.samples} evaluation images per model at {bench.full_steps} (full) and {bench.few_steps} (few) "
        f"Euler steps, the same prompts and noise for every model. {cpu / 60:.1f} CPU-min in training and "
        f"evaluation on {jobs} worker process(es) of one torch thread (about {cpu / 60 / jobs:.0f} min of wall "
        f"time; this invocation took {wall / 60:.0f} min, finished runs are read back from the cache).",
        "",
        "Reproduce: `python benchmarks/paper_claims.py"
        + (" --smoke" if bench.smoke else "")
        + f" --seeds {' '.join(map(str, seeds))}"
        + (" --sweep" if sweep else "")
        + f"` (results are cached in `{bench.out}/results`; "
        "every run is deterministic given its seed).",
        "",
    ]
    for reward in rewards:
        kind = "pays for magnitude" if reward in ("saturation", "contrast") else "magnitude-free"
        lines += [
            f"## Reward `{reward}` ({kind})",
            "",
            "Mean ± std over seeds. rho: mean over the full-step sampler steps of ||v_theta|| / ||v_ref|| on "
            "the policy's own trajectory. Gain kept: (guarded - base) / (unguarded - base) reward, per seed. "
            "Judge acc.: fraction of the prompt's attributes the judge sees. FD: Fréchet distance of the "
            "judge's features to "
            + (
                "the base model's own full-step samples (this model was not trained on the scenes)"
                if bench.model != "builtin"
                else "real scenes"
                + (
                    " with " + ", ".join(f"{k} = {v}" for k, v in REFERENCE_FIXED[reward].items())
                    if reward in REFERENCE_FIXED
                    else ""
                )
                + (
                    f"; the prompts name no {', '.join(PROMPT_OMITS[reward])}"
                    if reward in PROMPT_OMITS
                    else ""
                )
            )
            + " (lower = closer).",
            "",
            claims_table(results, methods, reward, seeds, guard),
            "",
            "Recipes (per method): "
            + "; ".join(
                f"{m.upper()} lr {recipe_for(bench, m, reward).lr:g}, {recipe_for(bench, m, reward).iterations} it"
                for m in methods
            )
            + ".",
            "",
            "### Verdicts",
            "",
            verdict_table(results, methods, reward, seeds, guard),
            "",
        ]
    if sweep is not None:
        lines += [f"## Penalty sweep (seed {', '.join(map(str, sweep['seeds']))})", ""]
        for reward in rewards:
            table = sweep_table(sweep, methods, reward, sweep["seeds"], list(SWEEP))
            lines += [f"Reward `{reward}`:", "", table, ""]
        best, why = recommend(sweep, methods, rewards, list(SWEEP))
        lines += [
            "Rule for the defaults (fixed before the numbers): among the settings that keep >= 90% of the "
            "unguarded reward gain on the magnitude-free reward with every method, take the one whose images "
            "are closest to the data (lowest FD relative to the unguarded run, mean over methods, rewards, "
            "full and few steps). "
            f"By this rule: **{why}**. The config defaults are {guard.form}, weight {guard.weight:g}, "
            f"margin {guard.margin:g}"
            + (" (the same)." if best == guard else " (they differ: see the text)."),
            "",
        ]
    lines += [
        "## Verdict rules",
        "",
        "Fixed before the numbers, applied by `verdicts()` in the script:",
        "",
        "- (1) holds when the mean unguarded rho is >= 1.05; 'partly' when it is above 1 at every seed but "
        "below 1.05. NormGuard 'holds rho' when the guarded mean is <= 1.01.",
        "- (2) holds when the mean gain kept is >= 90%, 'partly' from 50%.",
        "- (3), (4), (5): a model is better than another on a measure only when it is better at every seed "
        "(with 3 seeds, a coin would manage that 1 time in 8), and by at least a minimum difference: FD lower "
        f"by {100 * MIN_FD_FRACTION:g}% of the larger one, judge accuracy higher by {100 * MIN_ACCURACY:g} "
        f"point(s), reward higher by {100 * MIN_REWARD_FRACTION:g}% of the unguarded gain; smaller "
        "differences are ties. (3) holds when the guarded LoRA's FD is lower "
        "at full and at few steps; the judge accuracy and whether the FD gain grows at few steps are "
        "reported beside it. (4) holds when rescaling improves neither the reward nor any quality measure. "
        "(5) holds when the guarded LoRA's FD beats the early-stopped checkpoint's at full and few steps.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin", help="'builtin' or a local diffusers flow model folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument(
        "--rewards",
        nargs="+",
        default=list(REWARDS),
        choices=["saturation", "contrast", "centring", "position"],
    )
    ap.add_argument("--smoke", action="store_true", help="one seed, tiny runs: checks that everything runs")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="also the penalty sweep, first seed only (the defaults' evidence)",
    )
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    ap.add_argument("--out", default=None, help="cache folder (default runs/paper_claims[-smoke])")
    ap.add_argument("--doc", default=None, help="markdown output (default docs/paper_claims.md)")
    ap.add_argument("--samples", type=int, default=None, help="evaluation images per model (default 128)")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    args = ap.parse_args(argv)
    for m in args.methods:
        for r in args.rewards:
            if (m, r) not in RECIPES:
                RECIPES[(m, r)] = RECIPES[(m, "saturation")]
    seeds = args.seeds[:1] if args.smoke else args.seeds
    bench = Bench(
        model=args.model,
        out=args.out or ("runs/paper_claims-smoke" if args.smoke else "runs/paper_claims"),
        samples=args.samples or (8 if args.smoke else 128),
        match_samples=4 if args.smoke else 32,
        full_steps=3 if args.smoke else 10,
        few_steps=1 if args.smoke else 4,
        snapshots=2 if args.smoke else 8,
        height=args.height,
        width=args.width,
        smoke=args.smoke,
    )
    Path(bench.out).mkdir(parents=True, exist_ok=True)
    (Path(bench.out) / "bench.json").write_text(json.dumps(asdict(bench)))
    guard = default_guard()
    t0 = time.perf_counter()
    results = run_benchmark(bench, args.methods, args.rewards, seeds, [guard], args.jobs)
    sweep = None
    if args.sweep:
        sweep_seeds = seeds[:1]
        sweep = run_benchmark(bench, args.methods, args.rewards, sweep_seeds, list(SWEEP), args.jobs)
        sweep["seeds"] = sweep_seeds
    wall = time.perf_counter() - t0
    doc = Path(args.doc) if args.doc else ROOT / "docs" / "paper_claims.md"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(results, bench, args.methods, args.rewards, seeds, guard, sweep, wall, args.jobs))
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
