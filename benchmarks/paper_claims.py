"""The paper's claims, measured on the shipped TinyFlow model (or any local flow model).

For each RL method (NFT, AWM, DPO, GRPO), each reward (one that pays for magnitude, `saturation`, and
one that does not, `centring` on prompts that name no position) and each evaluation seed, one LoRA
is trained without NormGuard and one with each penalty form -- the squared relative hinge and the
abstract's linear absolute hinge -- from the same seed. Then, on fixed prompts and noise:

  1. rho (||v_theta|| / ||v_ref|| per sampler step, on the policy's own trajectory), at the full and
     at a few-step schedule, with and without;
  2. the reward gain kept with NormGuard, as a fraction of the unguarded gain;
  3. quality the reward does not see -- the judge network's attribute accuracy (does the image show
     what the prompt asked for) and the Fréchet distance of its features to real scenes (the
     training data; for `centring`, real scenes with the object in the centre) --
     at the full and at a few-step schedule;
  4. the unguarded LoRA sampled with its velocity rescaled to ||v_ref|| at every step;
  5. the unguarded run's own earlier checkpoint whose reward on the whole evaluation set is nearest
     the guarded run's (early stopping).

Before that, the penalty sweep picks the default form on separate tuning seeds (`choose_default`).
Every cell is mean +- std over seeds; each claim gets a verdict by the fixed rules in `verdicts`.
Each job's result is one small JSON file under --results (benchmarks/results/ for the real run, in
the repository), so an interrupted benchmark resumes, and `--check` rebuilds docs/paper_claims.md
from those files alone, byte for byte, without training anything.

    python benchmarks/paper_claims.py                      # full run -> docs/paper_claims.md
    python benchmarks/paper_claims.py --check              # the doc from benchmarks/results/ (CI)
    python benchmarks/paper_claims.py --smoke --doc /tmp/claims.md   # seconds, one seed
    python benchmarks/paper_claims.py --model /models/sd3 --height 512 --width 512   # a diffusers model
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from normguard.trainer.config import TrainConfig, config_fields
from normguard.trainer.penalty import penalty_label

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "paper_claims.md"
REWARDS = ("saturation", "centring")
MAGNITUDE_REWARDS = ("saturation", "contrast")
# What each reward leaves to the prompt, and which real scenes it asks for: `centring` decides the
# position itself, so its prompts name none and its Fréchet reference is real scenes with the object
# in the centre (the distribution a perfect policy would draw); the others keep the full data.
PROMPT_OMITS = {"centring": ("position",)}
REFERENCE_FIXED = {"centring": {"position": "centre"}}
METHODS = ("nft", "awm", "dpo", "grpo")
EVAL_SEEDS = (0, 1, 2)
TUNING_SEEDS = (10, 11, 12)  # the penalty sweep's seeds: never used for the claims
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
    ("grpo", "saturation"): Recipe(lr=3e-3),
    ("nft", "centring"): Recipe(lr=2e-3),
    ("awm", "centring"): Recipe(lr=1e-3),
    ("dpo", "centring"): Recipe(lr=1.5e-3),
    ("grpo", "centring"): Recipe(lr=3e-3),
}
SMOKE = dict(
    iterations=2, group_size=2, groups_per_iteration=2, sample_steps=2, train_timesteps=1, train_prompts=4
)


@dataclass(frozen=True)
class Guard:
    """NormGuard's settings for one arm (weight 0 = the unguarded base method). 'linear' and 'squared'
    are relative hinges; 'paper' is the abstract's relu(||v_theta|| - ||v_ref||)."""

    weight: float
    form: str = "linear"
    margin: float = 0.0

    @property
    def name(self) -> str:
        return "off" if self.weight == 0 else f"{self.form}-w{self.weight:g}-m{self.margin:g}"

    @property
    def label(self) -> str:
        return penalty_label(self.weight, self.form, relative=True, margin=self.margin)

    @staticmethod
    def from_name(name: str) -> Guard:
        if name == "off":
            return OFF
        form, w, m = name.split("-")
        return Guard(float(w[1:]), form, float(m[1:]))


OFF = Guard(0.0)
SQUARED = Guard(
    10.0, "squared"
)  # the earlier default, chosen by a seed-0 sweep before the paper form was tried
PAPER_WEIGHTS = (0.01, 0.03, 0.1)  # ||v_ref|| is ~55-65 on TinyFlow: about 0.6-6 in relative-hinge units
SWEEP_METHOD, SWEEP_REWARD = "nft", "saturation"
SWEEP = (SQUARED, *(Guard(w, "paper") for w in PAPER_WEIGHTS))
# The paper form in the claims tables: the middle of the sweep's grid, fixed before any number because
# the claims runs had to start before the sweep could finish on two shared cores.
PAPER = Guard(0.03, "paper")


@dataclass(frozen=True)
class Bench:
    """What every job needs to know about the benchmark as a whole."""

    model: str = "builtin"
    out: str = "runs/paper_claims"  # training runs and snapshots (not kept)
    results: str = str(RESULTS)  # one JSON per job (kept: the doc is built from these)
    samples: int = 128  # final evaluation images per model and schedule
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
    recipe = RECIPES.get((method, reward), RECIPES[(method, "saturation")])
    return replace(recipe, **SMOKE) if bench.smoke else recipe


# What every run shares besides the Recipe fields named like TrainConfig keys.
RUN_BASE = TrainConfig(
    normguard_relative=True,  # 'paper' ignores it
    eval_every=0,
    keep_checkpoints=1,
    keep_best="none",
    tensorboard=False,
)


def train_config(bench: Bench, method: str, reward: str, seed: int, guard: Guard, out: Path) -> TrainConfig:
    from normguard.trainer.scene_eval import scene_prompts

    r = recipe_for(bench, method, reward)
    return RUN_BASE.replace(
        **config_fields(r),
        model=bench.model,
        device=device(),
        prompts=scene_prompts(r.train_prompts, seed, PROMPT_OMITS.get(reward, ())),
        rewards=[reward],
        method=method,
        micro_batch_size=r.group_size * r.groups_per_iteration,
        normguard_weight=guard.weight,
        normguard_form=guard.form if guard.weight else "squared",
        normguard_margin=guard.margin,
        height=bench.height,
        width=bench.width,
        checkpoint_every=max(1, r.iterations),
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
    """Full-step and few-step metrics, rho at both (claim 3 is about few-step quality)."""
    from normguard.trainer.scene_eval import evaluate_policy

    full, _ = evaluate_policy(backend, evalset, bench.full_steps, rewards, judge, rescale=rescale)
    few, _ = evaluate_policy(backend, evalset, bench.few_steps, rewards, judge, rescale=rescale)
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


def train_job(
    bench: Bench, method: str, reward: str, seed: int, guard: Guard, extras: bool = True
) -> dict[str, Any]:
    """Train one arm and evaluate its final LoRA. With extras, the unguarded arm is also evaluated with
    inference-time rescaling, and its snapshots' rewards on the whole evaluation set are recorded."""
    import shutil

    from safetensors.torch import save_file

    from normguard.trainer.loop import Trainer
    from normguard.trainer.scene_eval import evaluate_policy

    _setup_worker()
    key = run_key(bench, method, reward, seed, guard)
    run_dir = Path(bench.out) / "runs" / key
    shutil.rmtree(run_dir, ignore_errors=True)  # no cached result: whatever is there is incomplete
    cfg = train_config(bench, method, reward, seed, guard, run_dir)
    extras = extras and guard.weight == 0
    snaps = _Snapshots(cfg.iterations // bench.snapshots) if extras else None
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
        result["snapshots"] = {}
        for it, state in sorted(snaps.saved.items()):
            if it == cfg.iterations:  # the final LoRA: already evaluated
                result["snapshots"][str(it)] = result["full"]["reward"]
            else:
                trainer.backend.load_lora_state_dict(state)
                m, _ = evaluate_policy(
                    trainer.backend, evalset, bench.full_steps, trainer.rewards, judge, record_norms=False
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
    """The first snapshot whose reward (on the whole evaluation set) reaches `target` (the guarded
    run's), or the one before it when that one is closer; None when the unguarded run never got there."""
    items = sorted((int(k), v) for k, v in snapshots.items())
    for i, (it, r) in enumerate(items):
        if r >= target:
            if i > 0 and abs(items[i - 1][1] - target) < abs(r - target):
                return items[i - 1][0]
            return it
    return None


# --- orchestration ------------------------------------------------------------------------------------


class Runner:
    """Runs jobs in worker processes (spawned, one torch thread each) and keeps each result as JSON."""

    def __init__(self, bench: Bench, jobs: int):
        self.bench, self.jobs = bench, jobs
        self.cache = Path(bench.results)
        self.cache.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.cache / f"{name}.json"

    def run(self, tasks: dict[str, tuple]) -> None:
        """tasks: name -> (function, *args); names with a result file are not run again (nor any
        with jobs = 0: the doc is then written from the results there are)."""
        todo = {n: t for n, t in tasks.items() if not self.path(n).is_file()}
        if self.jobs == 0:
            return
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

    def _store(self, name: str, result: dict) -> None:
        tmp = self.path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(_rounded(result), indent=1, sort_keys=True) + "\n")
        tmp.replace(self.path(name))
        print(f"  done {name}", flush=True)


def _rounded(x: Any) -> Any:
    """Floats to 6 significant digits: the files stay small and far finer than any verdict."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def load_results(folder: str | Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


def arm_tasks(
    bench: Bench, methods: list[str], rewards: list[str], seeds: list[int], guards: list[Guard], extras: bool
) -> dict[str, tuple]:
    """In the order they run: by reward, method (as given: first = most wanted) and seed, every arm of a
    seed together, so a run stopped part way leaves whole comparisons."""
    return {
        run_key(bench, m, r, s, g): (train_job, bench, m, r, s, g, extras)
        for r in rewards
        for m in methods
        for s in seeds
        for g in guards
    }


def early_tasks(
    bench: Bench,
    res: dict[str, dict],
    methods: list[str],
    rewards: list[str],
    seeds: list[int],
    guards: list[Guard],
) -> dict[str, tuple]:
    tasks = {}
    for m in methods:
        for r in rewards:
            for s in seeds:
                off = res.get(run_key(bench, m, r, s, OFF))
                for g in guards:
                    on = res.get(run_key(bench, m, r, s, g))
                    if off is None or on is None:
                        continue
                    it = pick_early_stop(off["snapshots"], on["full"]["reward"])
                    if it is not None and it < max(int(k) for k in off["snapshots"]):  # final: no stopping
                        tasks[early_key(bench, m, r, s, it)] = (early_job, bench, m, r, s, it)
    return tasks


# --- statistics ----------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def fmt(values: list[float], digits: int = 3, expected: int | None = None) -> str:
    """mean ± std; the number of seeds when fewer than `expected` (or than len(values)) had a value."""
    m, s = mean_std(values)
    if math.isnan(m):
        return "n/a"
    n = len([v for v in values if v is not None and not math.isnan(v)])
    text = f"{m:.{digits}f}" if n == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"
    return text if n >= (expected or len(values)) else f"{text} (n={n})"


def per_seed(values: list[float], digits: int = 1, signed: bool = True) -> str:
    """Per-seed values 'a / b / c' (n/a where a seed has none)."""
    sign = "+" if signed else ""
    return " / ".join("n/a" if v is None or math.isnan(v) else f"{v:{sign}.{digits}f}" for v in values)


def gain_kept(base: float, unguarded: float, guarded: float) -> float:
    gain = unguarded - base
    return (guarded - base) / gain if gain > 0 else math.nan


@dataclass
class Cell:
    """Per-seed numbers of one (method, reward, guard) comparison; seeds without results are left out."""

    seeds: list[int]
    rho_off: list[float]
    rho_on: list[float]
    rho_off_few: list[float]
    rho_on_few: list[float]
    reward_off: list[float]
    reward_on: list[float]
    kept: list[float]
    # quality at "full" and "few": reward, accuracy (higher better), frechet (lower better), per arm
    q: dict[str, dict[str, list[float]]]
    early_iteration: list[int | None]
    early_is_final: list[bool]  # the checkpoint picked is the unguarded run's last one: no stopping at all


def collect(
    res: dict[str, dict], bench: Bench, method: str, reward: str, seeds: list[int], guard: Guard
) -> Cell:
    base = res[f"base-{reward}"]
    q: dict[str, list[float]] = {
        f"{arm}/{sched}/{metric}": []
        for arm in ("base", "off", "on", "rescaled", "early")
        for sched in ("full", "few")
        for metric in ("accuracy", "frechet", "reward")
    }
    c = Cell([], [], [], [], [], [], [], [], q, [], [])
    for s in seeds:
        off = res.get(run_key(bench, method, reward, s, OFF))
        on = res.get(run_key(bench, method, reward, s, guard))
        if off is None or on is None:
            continue
        c.seeds.append(s)
        it = pick_early_stop(off["snapshots"], on["full"]["reward"]) if "snapshots" in off else None
        early = res.get(early_key(bench, method, reward, s, it)) if it is not None else None
        c.rho_off.append(off["full"]["rho_mean"])
        c.rho_on.append(on["full"]["rho_mean"])
        c.rho_off_few.append(off["few"].get("rho_mean", math.nan))
        c.rho_on_few.append(on["few"].get("rho_mean", math.nan))
        c.reward_off.append(off["full"]["reward"])
        c.reward_on.append(on["full"]["reward"])
        c.kept.append(gain_kept(base["full"]["reward"], off["full"]["reward"], on["full"]["reward"]))
        c.early_iteration.append(it)
        c.early_is_final.append(it is not None and it == max(int(k) for k in off["snapshots"]))
        arms = {"base": base, "off": off, "on": on, "rescaled": off.get("rescaled"), "early": early}
        for arm, r in arms.items():
            for sched in ("full", "few"):
                for metric in ("accuracy", "frechet", "reward"):
                    q[f"{arm}/{sched}/{metric}"].append(r[sched][metric] if r is not None else math.nan)
    return c


# --- verdicts --------------------------------------------------------------------------------------------

# The smallest differences that count as "better" (below them two models are a tie): the Fréchet
# distance must be lower by 5% of the larger one, the judge accuracy higher by 1 point, the reward
# higher by 5% of the unguarded run's gain.
MIN_FD_FRACTION, MIN_ACCURACY, MIN_REWARD_FRACTION = 0.05, 0.01, 0.05
# Below this mean unguarded rho there is no inflation for rescaling (claim 4) to undo: the same
# bound NormGuard is held to in claim 1.
RHO_TOLERANCE = 1.01


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


def diffs(c: Cell, a: str, b: str, key: str) -> list[float]:
    """Per seed: arm a minus arm b on `key` ('full/frechet', ...)."""
    return [x - y for x, y in zip(c.q[f"{a}/{key}"], c.q[f"{b}/{key}"], strict=True)]


def grows(d: list[float]) -> bool:
    """A per-seed difference 'grows' when it is positive at every seed and its mean exceeds the seeds'
    spread (std) of it: the growth must stand out of the seed-to-seed noise."""
    vals = [x for x in d if not math.isnan(x)]
    if len(vals) < 2:
        return False
    m, s = mean_std(vals)
    return all(x > 0 for x in vals) and m > s


def verdicts(c: Cell) -> dict[str, str]:
    """One verdict per claim, by fixed rules (stated in docs/paper_claims.md)."""
    out = {}
    if not c.seeds:
        return {k: "n/a: no results" for k in "12345"}
    rho, _ = mean_std(c.rho_off)
    rho_on, _ = mean_std(c.rho_on)
    rho_few, _ = mean_std(c.rho_off_few)
    if rho >= 1.05:
        v1 = "holds" if rho <= 1.15 else "holds, stronger than the paper's 5-15%"
    elif rho > 1.0 and all(r > 1.0 for r in c.rho_off):
        v1 = "partly: inflation at every seed, but below the paper's 5%"
    else:
        v1 = "does not hold: no inflation at every seed"
    held = rho_on <= RHO_TOLERANCE
    out["1"] = (
        f"{v1} ({rho:.3f} full, {rho_few:.3f} few steps); NormGuard "
        f"{'holds rho at or below' if held else 'does not hold rho at'} {RHO_TOLERANCE:g} ({rho_on:.3f})"
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
    # the FD gain (unguarded - guarded) at few steps minus the one at full steps, per seed
    gain_full, gain_few = diffs(c, "off", "on", "full/frechet"), diffs(c, "off", "on", "few/frechet")
    growth = [f - g for f, g in zip(gain_few, gain_full, strict=True)]
    if fd_full and fd_few:
        v3 = "holds: closer to the data at every seed, full and few steps"
    elif fd_full or fd_few:
        v3 = f"partly: closer to the data at every seed only at {'full' if fd_full else 'few'} steps"
    else:
        v3 = "does not hold: not closer to the data at every seed"
    v3 += f"; judge accuracy {'higher' if acc else 'not higher'} at every seed (full and few)"
    v3 += (
        f"; the FD gain {'grows' if grows(growth) else 'does not grow'} at few steps "
        f"({mean_std(gain_full)[0]:.1f} -> {mean_std(gain_few)[0]:.1f}; per seed {per_seed(growth)})"
    )
    out["3"] = v3

    if rho < RHO_TOLERANCE:
        out["4"] = f"not testable (no inflation): the unguarded mean rho is {rho:.3f}, nothing to rescale"
    else:
        rescale_fixes = quality_verdict(c, "rescaled", "off")
        gains = [u - b for u, b in zip(c.reward_off, c.q["base/full/reward"], strict=True)]
        reward_up = better_every_seed(c.q["rescaled/full/reward"], c.q["off/full/reward"], "reward", gains)
        fixed = [k for k, v in rescale_fixes.items() if v]
        if not reward_up and not fixed:
            out["4"] = "holds: rescaling raised neither the reward nor any quality measure at every seed"
        else:
            parts = (["the reward"] if reward_up else []) + [f"{k.replace('/', ' at ')} steps" for k in fixed]
            out["4"] = "does not hold: rescaling improved " + ", ".join(parts) + " at every seed"
    out["5"] = early_verdict(c, kept)
    return out


MIN_EARLY_SEEDS = 2  # seeds where early stopping applies that claim 5 needs for a verdict


def early_verdict(c: Cell, kept: float) -> str:
    """Claim 5 from the per-seed differences early-stopped minus guarded (FD: negative = early better)."""
    missing = sum(i is None for i in c.early_iteration)
    final = [s for s, f in zip(c.seeds, c.early_is_final, strict=True) if f]
    usable = len(c.seeds) - missing - len(final)
    notes = []
    if missing:
        notes.append(f"at {missing} seed(s) the unguarded run never reached the guarded reward")
    if final:
        notes.append(
            f"at {len(final)} seed(s) it first reached it at its last checkpoint (the guarded run kept "
            f"{100 * kept:.0f}% of the gain), so there was nothing to stop early"
        )
    if usable == 0:
        return "n/a: " + "; ".join(notes)
    fd = {k: diffs(c, "early", "on", f"{k}/frechet") for k in ("full", "few")}
    detail = f"FD early - guarded per seed: {per_seed(fd['full'])} (full), {per_seed(fd['few'])} (few)"
    if usable < MIN_EARLY_SEEDS:  # "at every seed" over one seed is a coin flip
        return f"n/a: {usable} of {len(c.seeds)} seeds comparable ({detail}); " + "; ".join(notes)
    ev_on = quality_verdict(c, "on", "early")
    ev_early = quality_verdict(c, "early", "on")
    if ev_on["frechet/full"] and ev_on["frechet/few"]:
        v5 = "holds: the guarded run is closer to the data than early stopping at every seed, full and few steps"
    elif ev_early["frechet/full"] and ev_early["frechet/few"]:
        v5 = "does not hold: early stopping was closer to the data at every seed, full and few steps"
    else:
        v5 = "does not hold: neither is closer to the data at every seed (full and few steps)"
    if ev_early["accuracy/full"] and ev_early["accuracy/few"]:
        v5 += "; early stopping's judge accuracy was higher at every seed"
    elif ev_on["accuracy/full"] and ev_on["accuracy/few"]:
        v5 += "; the guarded run's judge accuracy was higher at every seed"
    v5 += f" ({detail})"
    return v5 + ("; " + "; ".join(notes) if notes else "")


# --- the penalty sweep (tuning seeds) and the rule for the default --------------------------------------


def sweep_scores(c: Cell) -> list[float]:
    """Per tuning seed: the reward gain kept minus the fraction of the unguarded run's Fréchet distance
    (full + few steps) that is left. 0 for the unguarded run itself; a penalty scores above 0 when
    the distance it removes is a larger fraction than the gain it costs."""
    return [
        k
        - (c.q["on/full/frechet"][i] + c.q["on/few/frechet"][i])
        / (c.q["off/full/frechet"][i] + c.q["off/few/frechet"][i])
        for i, k in enumerate(c.kept)
    ]


# Why the config does not follow the rule when the rule picks the paper form (a reason that holds
# before any number: PAPER.md notes it): an absolute hinge's gradient has norm `weight` whatever the
# latent size, while the base losses average over latent dims, so its pull grows with sqrt(dims).
SCALE_NOTE = (
    "The paper form's weight is in velocity-norm units, so its pull against the base loss grows with the "
    "square root of the latent size -- about 9x from TinyFlow's 3,072 latent values to the 262,144 of a "
    "1024 px SD3.5 latent: on large models the same weight holds harder; the relative hinges are "
    "scale-free."
)


def choose_default(scores: dict[Guard, list[float]]) -> tuple[Guard, Guard, bool]:
    """The rule, fixed before the sweep was run: the best setting is the one with the highest mean
    score over the tuning seeds; the paper form's weight is the paper-form setting with the highest
    mean score; the paper form becomes the default when its mean is within the best setting's
    spread (one std over the tuning seeds) of the best mean. Returns (best, paper, paper_is_default)."""

    def mean(g: Guard) -> float:
        m = mean_std(scores[g])[0]
        return -math.inf if math.isnan(m) else m

    best = max(scores, key=mean)
    paper = max((g for g in scores if g.form == "paper"), key=mean)
    m_best, s_best = mean_std(scores[best])
    return best, paper, mean_std(scores[paper])[0] >= m_best - s_best


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
        load = f", load average {os.getloadavg()[1]:.1f} during the run (other jobs shared the cores)"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, Python {platform.python_version()}{load}"


ARMS = (
    ("off", "without NormGuard"),
    ("on", "with NormGuard: {guard}"),
    ("rescaled", "without, rescaled to ‖v_ref‖ (4)"),
    ("early", "without, early-stopped at the reward of {guard} (5)"),
)


def claims_table(res, bench, methods, reward, seeds, guards) -> str:
    rows = [
        "| method | arm | rho (full) | rho (few) | reward | gain kept | judge acc. (full) | judge acc. (few) "
        "| FD (full) | FD (few) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = res[f"base-{reward}"]
    rows.append(
        f"| - | base model | 1 | 1 | {base['full']['reward']:.4f} | - | {base['full']['accuracy']:.3f} "
        f"| {base['few']['accuracy']:.3f} | {base['full']['frechet']:.1f} | {base['few']['frechet']:.1f} |"
    )
    n = len(seeds)
    for m in methods:
        cells = [collect(res, bench, m, reward, seeds, g) for g in guards]
        if not cells[0].seeds:
            rows.append(f"| {m.upper()} | no results | | | | | | | | |")
            continue
        lines = [
            (
                "off",
                cells[0],
                "without NormGuard",
                fmt(cells[0].rho_off, 3, n),
                fmt(cells[0].rho_off_few, 3, n),
                "-",
            )
        ]
        lines += [
            (
                "on",
                c,
                f"with NormGuard: {g.label}",
                fmt(c.rho_on, 3, n),
                fmt(c.rho_on_few, 3, n),
                fmt(c.kept, 2, n),
            )
            for g, c in zip(guards, cells, strict=True)
        ]
        lines.append(
            ("rescaled", cells[0], "without, rescaled to ‖v_ref‖ (4)", "1 (forced)", "1 (forced)", "-")
        )
        lines += [
            ("early", c, f"without, early-stopped at the reward of the {g.form} run (5)", "-", "-", "-")
            for g, c in zip(guards, cells, strict=True)
        ]
        for arm, c, label, rho, rho_few, kept in lines:
            rows.append(
                f"| {m.upper()} | {label} | {rho} | {rho_few} | {fmt(c.q[f'{arm}/full/reward'], 4, n)} | {kept} "
                f"| {fmt(c.q[f'{arm}/full/accuracy'], 3, n)} | {fmt(c.q[f'{arm}/few/accuracy'], 3, n)} "
                f"| {fmt(c.q[f'{arm}/full/frechet'], 1, n)} | {fmt(c.q[f'{arm}/few/frechet'], 1, n)} |"
            )
    return "\n".join(rows)


def early_table(res, bench, methods, reward, seeds, guards) -> str:
    rows = [
        "| method | penalty | stopped at iteration | reward: early - guarded | FD (full): early - guarded "
        "| FD (few): early - guarded | judge acc. (full): early - guarded |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        for g in guards:
            c = collect(res, bench, m, reward, seeds, g)
            if not c.seeds:
                continue
            its = " / ".join("never" if i is None else str(i) for i in c.early_iteration)
            rows.append(
                f"| {m.upper()} | {g.form} | {its} | {per_seed(diffs(c, 'early', 'on', 'full/reward'), 4)} "
                f"| {per_seed(diffs(c, 'early', 'on', 'full/frechet'))} "
                f"| {per_seed(diffs(c, 'early', 'on', 'few/frechet'))} "
                f"| {per_seed(diffs(c, 'early', 'on', 'full/accuracy'), 3)} |"
            )
    return "\n".join(rows)


CLAIMS = {
    "1": "(1) RL inflates rho by 5-15%; NormGuard holds it at 1",
    "2": "(2) NormGuard keeps the reward gain",
    "3": "(3) NormGuard improves quality the reward does not see, more at few steps",
    "4": "(4) rescaling to ‖v_ref‖ at inference recovers neither reward nor quality",
    "5": "(5) early stopping at the same reward does not match NormGuard's quality",
}


def verdict_table(res, bench, methods, reward, seeds, guard) -> str:
    rows = ["| claim | " + " | ".join(m.upper() for m in methods) + " |", "|---|" + "---|" * len(methods)]
    per_method = {}
    for m in methods:
        c = collect(res, bench, m, reward, seeds, guard)
        v = verdicts(c)
        if c.seeds and len(c.seeds) < len(seeds):
            v = {k: f"{t} [{len(c.seeds)} of {len(seeds)} seeds]" for k, t in v.items()}
        per_method[m] = v
    for k, name in CLAIMS.items():
        rows.append(f"| {name} | " + " | ".join(per_method[m][k] for m in methods) + " |")
    return "\n".join(rows)


def sweep_section(res, bench, meta) -> list[str]:
    seeds = meta["tuning_seeds"]
    guards = [Guard.from_name(n) for n in meta["sweep"]]
    head = _sweep_head(seeds)
    rows = [
        "| penalty | rho (full) | rho (few) | gain kept | FD (full) | FD (few) | judge acc. (full) | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    n = len(seeds)
    c0 = collect(res, bench, SWEEP_METHOD, SWEEP_REWARD, seeds, guards[0])
    rows.append(
        f"| off | {fmt(c0.rho_off, 3, n)} | {fmt(c0.rho_off_few, 3, n)} | 1 | {fmt(c0.q['off/full/frechet'], 1, n)} "
        f"| {fmt(c0.q['off/few/frechet'], 1, n)} | {fmt(c0.q['off/full/accuracy'], 3, n)} | 0 |"
    )
    scores, incomplete = {}, []
    for g in guards:
        c = collect(res, bench, SWEEP_METHOD, SWEEP_REWARD, seeds, g)
        score = sweep_scores(c)
        if len(c.seeds) == n:
            scores[g] = score
        else:
            incomplete.append(f"{g.label} ({len(c.seeds)} of {n} seeds)")
        rows.append(
            f"| {g.label} | {fmt(c.rho_on, 3, n)} | {fmt(c.rho_on_few, 3, n)} | {fmt(c.kept, 2, n)} "
            f"| {fmt(c.q['on/full/frechet'], 1, n)} | {fmt(c.q['on/few/frechet'], 1, n)} "
            f"| {fmt(c.q['on/full/accuracy'], 3, n)} | {fmt(score, 3, n)} ({per_seed(score, 3)}) |"
        )
    if not any(g.form == "paper" for g in scores):
        return [*head, "\n".join(rows), "", "No paper-form setting has results at every tuning seed yet.", ""]
    best, paper, paper_default = choose_default(scores)
    d = TrainConfig()
    config_default = Guard(d.normguard_weight, d.normguard_form, d.normguard_margin)
    m_best, s_best = mean_std(scores[best])
    outcome = (
        f"The best setting is the {best.label} (score {m_best:.3f} ± {s_best:.3f}); the best paper-form weight "
        f"is {paper.weight:g} (score {mean_std(scores[paper])[0]:.3f}), "
        + (
            "within the best setting's spread: by the rule, the paper form is the default."
            if paper_default
            else f"below the best mean minus its spread ({m_best - s_best:.3f}): by the rule, the {best.label} "
            "is the default."
        )
        + f" **The config default is the {config_default.label}.** "
        + SCALE_NOTE
        + " `normguard_form: paper` sets the abstract's form."
        + (
            " Not considered, for want of results at every tuning seed: " + "; ".join(incomplete) + "."
            if incomplete
            else ""
        )
    )
    return [*head, "\n".join(rows), "", outcome, ""]


def _sweep_head(seeds: list[int]) -> list[str]:
    return [
        "## Penalty sweep",
        "",
        f"{SWEEP_METHOD.upper()}, reward `{SWEEP_REWARD}`, tuning seeds {', '.join(map(str, seeds))} (never "
        "used for the claims above).",
        "",
        "Why one method and one reward: the sweep has to finish on two shared CPU cores, and NFT on the "
        "magnitude-paying reward is the cell where the unguarded run inflates rho most, so the penalty "
        "forms differ most there; the claims tables above then report both forms for every method and "
        "both rewards on the evaluation seeds, which checks the choice where it was not made.",
        "",
        "Rule (written into `choose_default()` before the sweep ran): score each setting per tuning seed "
        "as the reward gain it keeps minus the fraction of the unguarded run's Fréchet distance (full + "
        "few steps) it leaves; the best setting has the highest mean score; the paper form's weight is "
        "its best-scoring weight; the paper form becomes the default if its mean score is within one "
        "std (over the tuning seeds) of the best setting's mean.",
        "",
    ]


def coverage(res, bench, methods, rewards, seeds, guards, meta) -> list[str]:
    """What the result files hold against what the run planned (empty when complete)."""
    lines = []
    for reward in rewards:
        for m in methods:
            done = [s for s in seeds if all(run_key(bench, m, reward, s, g) in res for g in (OFF, *guards))]
            done = done if f"base-{reward}" in res else []
            if len(done) < len(seeds):
                lines.append(f"{m.upper()} on `{reward}`: {len(done)} of {len(seeds)} seeds")
    sweep = [Guard.from_name(n) for n in meta.get("sweep", [])]
    for g in [OFF, *sweep] if sweep else []:
        n = sum(run_key(bench, SWEEP_METHOD, SWEEP_REWARD, s, g) in res for s in meta["tuning_seeds"])
        if n < len(meta["tuning_seeds"]):
            lines.append(f"sweep, {g.label}: {n} of {len(meta['tuning_seeds'])} tuning seeds")
    if not lines:
        return []
    return [
        "**Incomplete run.** The run behind this page was stopped before it finished (the jobs run in "
        "order of importance: the sweep's core, then NFT, GRPO, AWM, DPO on `saturation`, then "
        "`centring`); rows without results say so, and the script resumes where it stopped. "
        "Missing: " + "; ".join(lines) + ".",
        "",
    ]


def render(res: dict[str, dict], bench: Bench, meta: dict[str, Any]) -> str:
    methods = [m for m in METHODS if m in meta["methods"]]
    rewards, seeds = meta["rewards"], meta["seeds"]
    guards = [Guard.from_name(n) for n in meta["guards"]]
    trained = [r for k, r in res.items() if "train_cpu" in r]
    cpu = sum(r["train_cpu"] + r["eval_cpu"] for r in trained)
    default = TrainConfig()
    default_label = (
        Guard(default.normguard_weight, default.normguard_form, default.normguard_margin).label
        if default.normguard_form == "paper" or default.normguard_relative
        else "an absolute hinge"
    )
    lines = [
        "# The paper's claims, measured on a 6 MB toy model (not the paper's setting)"
        + (" (SMOKE RUN: numbers mean nothing)" if bench.smoke else ""),
        "",
        "**Scale.** These are measurements on the shipped TinyFlow model (6 MB) generating 32 px "
        "procedural scenes of coloured shapes, trained for 40 iterations of 16 images, with one reward "
        "chosen to pay for magnitude (`saturation`) beside one that does not (`centring`), and learning "
        "rates chosen so that unguarded runs drift within those 40 iterations. The paper's setting is "
        "SD3.5 and FLUX at 512-1024 px with learned rewards; these tables test whether the mechanisms "
        "behind its claims appear at this scale, not its numbers.",
        "",
        f"Machine: {meta['machine']}. Model: `{bench.model}`. Evaluation seeds: {', '.join(map(str, seeds))}; "
        f"the penalty sweep used separate tuning seeds ({', '.join(map(str, meta['tuning_seeds']))}). "
        f"Penalties: {'; '.join(g.label for g in guards)}; the config default is the {default_label}. "
        f"{bench.samples} evaluation images per model at {bench.full_steps} (full) and {bench.few_steps} (few) "
        f"Euler steps, the same prompts and noise for every model. {cpu / 60:.0f} CPU-min in training and "
        f"evaluation, on {meta['jobs']} worker process(es) of one torch thread.",
        "",
        "Reproduce: `python benchmarks/paper_claims.py` (one JSON per run lands in `benchmarks/results/`; "
        "every run is deterministic given its seed). `python benchmarks/paper_claims.py --check` rebuilds "
        "this file from those JSONs without training and fails if it differs; CI runs it. The previous run "
        "(an older version of this script, without per-seed files) is kept in "
        "[paper_claims_previous.md](paper_claims_previous.md) with the corrections its verdicts need.",
        "",
        *coverage(res, bench, methods, rewards, seeds, guards, meta),
    ]
    for reward in rewards:
        kind = "pays for magnitude" if reward in MAGNITUDE_REWARDS else "magnitude-free"
        if f"base-{reward}" not in res:
            lines += [f"## Reward `{reward}` ({kind})", "", "No results for this reward yet.", ""]
            continue
        fd_ref = (
            "the base model's own full-step samples (this model was not trained on the scenes)"
            if bench.model != "builtin"
            else "real scenes"
            + (
                " with " + ", ".join(f"{k} = {v}" for k, v in REFERENCE_FIXED[reward].items())
                if reward in REFERENCE_FIXED
                else ""
            )
            + (f"; the prompts name no {', '.join(PROMPT_OMITS[reward])}" if reward in PROMPT_OMITS else "")
        )
        lines += [
            f"## Reward `{reward}` ({kind})",
            "",
            "Mean ± std over seeds ((n=k) where only k seeds have the number). rho: mean over the sampler "
            "steps of ||v_theta|| / ||v_ref|| on the policy's own trajectory, at the full and the few-step "
            "schedule. Gain kept: (guarded - base) / (unguarded - base) reward, per seed. Judge acc.: "
            "fraction of the prompt's attributes the judge sees. FD: Fréchet distance of the judge's "
            f"features to {fd_ref} (lower = closer).",
            "",
            claims_table(res, bench, methods, reward, seeds, guards),
            "",
            "Recipes (per method): "
            + "; ".join(
                f"{m.upper()} lr {recipe_for(bench, m, reward).lr:g}, {recipe_for(bench, m, reward).iterations} it"
                for m in methods
            )
            + ".",
            "",
            "Early stopping (5), per seed: the unguarded run's checkpoint (every "
            f"{recipe_for(bench, methods[0], reward).iterations // bench.snapshots} iterations) whose reward on the "
            "whole evaluation set is nearest the guarded run's, and how it compares (FD: negative = early "
            "stopping closer to the data).",
            "",
            early_table(res, bench, methods, reward, seeds, guards),
            "",
        ]
        for g in guards:
            lines += [
                f"### Verdicts: {g.label}",
                "",
                verdict_table(res, bench, methods, reward, seeds, g),
                "",
            ]
    if meta.get("sweep"):
        lines += sweep_section(res, bench, meta)
    lines += [
        "## Verdict rules",
        "",
        "Fixed before the numbers, applied by `verdicts()` in the script:",
        "",
        "- (1) holds when the mean unguarded rho (full steps) is >= 1.05; 'partly' when it is above 1 at "
        f"every seed but below 1.05. NormGuard 'holds rho' when the guarded mean is <= {RHO_TOLERANCE:g}.",
        "- (2) holds when the mean gain kept is >= 90%, 'partly' from 50%.",
        "- (3), (4), (5): a model is better than another on a measure only when it is better at every seed "
        "(with 3 seeds, a coin would manage that 1 time in 8), and by at least a minimum difference: FD lower "
        f"by {100 * MIN_FD_FRACTION:g}% of the larger one, judge accuracy higher by {100 * MIN_ACCURACY:g} "
        f"point(s), reward higher by {100 * MIN_REWARD_FRACTION:g}% of the unguarded gain; smaller "
        "differences are ties. (3) holds when the guarded LoRA's FD is lower at full and at few steps; the "
        "judge accuracy is reported beside it, and the FD gain 'grows' at few steps only when the per-seed "
        "growth is positive at every seed and its mean exceeds its std over seeds. (4) is 'not testable' "
        f"when the unguarded mean rho is below {RHO_TOLERANCE:g} (nothing to rescale); otherwise it holds when "
        "rescaling improves neither the reward nor any quality measure. (5) holds when the guarded LoRA's "
        "FD beats the early-stopped checkpoint's at full and few steps, and says so when early stopping "
        f"beats the guarded run instead; it needs at least {MIN_EARLY_SEEDS} seeds where the unguarded run "
        "reached the guarded reward before its last checkpoint (added after the first full run, where one "
        "cell had a single such seed), otherwise it is n/a.",
        "",
    ]
    return "\n".join(lines)


def bench_from(meta: dict[str, Any]) -> Bench:
    return Bench(**meta["bench"])


def check(results: Path, doc: Path, write: bool = False) -> int:
    """Rebuild the doc from the result files and compare it with the committed one, byte for byte (or,
    with `write`, replace it: after a change of the page's code or of the config defaults it shows)."""
    meta = json.loads((results / "meta.json").read_text())
    res = load_results(results)
    res.pop("meta", None)
    text = render(res, bench_from(meta), meta)
    if write:
        doc.write_text(text, encoding="utf-8")
        print(f"wrote {doc} from {results}")
        return 0
    if doc.is_file() and doc.read_text(encoding="utf-8") == text:
        print(f"{doc} matches {results}")
        return 0
    old = doc.read_text(encoding="utf-8").splitlines() if doc.is_file() else []
    sys.stdout.writelines(
        line + "\n" for line in difflib.unified_diff(old, text.splitlines(), str(doc), "rebuilt", lineterm="")
    )
    print(f"{doc} does not match what {results} gives (diff above)")
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin", help="'builtin' or a local diffusers flow model folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(EVAL_SEEDS))
    ap.add_argument("--tuning-seeds", type=int, nargs="+", default=list(TUNING_SEEDS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument(
        "--rewards",
        nargs="+",
        default=list(REWARDS),
        choices=["saturation", "contrast", "centring", "position"],
    )
    ap.add_argument("--smoke", action="store_true", help="one seed, tiny runs: checks that everything runs")
    ap.add_argument("--no-sweep", action="store_true", help="skip the penalty sweep (both forms still run)")
    ap.add_argument("--check", action="store_true", help="rebuild the doc from --results only and compare")
    ap.add_argument(
        "--rebuild", action="store_true", help="rewrite the doc from --results only (no training)"
    )
    ap.add_argument(
        "--no-run", action="store_true", help="run nothing: write the doc from the results there are"
    )
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    ap.add_argument("--out", default=None, help="training runs (default runs/paper_claims[-smoke])")
    ap.add_argument("--results", default=None, help="result JSONs (default benchmarks/results)")
    ap.add_argument("--doc", default=None, help="markdown output (default docs/paper_claims.md)")
    ap.add_argument("--samples", type=int, default=None, help="evaluation images per model (default 128)")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    args = ap.parse_args(argv)
    out = args.out or ("runs/paper_claims-smoke" if args.smoke else "runs/paper_claims")
    results = Path(args.results or (Path(out) / "results" if args.smoke else RESULTS))
    doc = Path(args.doc) if args.doc else DOC
    if args.check or args.rebuild:
        return check(results, doc, write=args.rebuild)
    seeds = args.seeds[:1] if args.smoke else args.seeds
    tuning = args.tuning_seeds[:1] if args.smoke else args.tuning_seeds
    bench = Bench(
        model=args.model,
        out=out,
        results=str(results),
        samples=args.samples or (8 if args.smoke else 128),
        full_steps=3 if args.smoke else 10,
        few_steps=1 if args.smoke else 4,
        snapshots=2 if args.smoke else 8,
        height=args.height,
        width=args.width,
        smoke=args.smoke,
    )
    Path(bench.out).mkdir(parents=True, exist_ok=True)
    runner = Runner(bench, 0 if args.no_run else args.jobs)
    t0 = time.perf_counter()
    guards = [SQUARED, PAPER]
    sweep = [] if args.no_sweep else list(SWEEP)
    core = [g for g in (OFF, SQUARED, PAPER) if g in (OFF, *sweep)]
    # Training blocks in order of importance, so that a run stopped part way leaves whole comparisons:
    # the sweep's core and the first method on the first reward, then the rest of the sweep and the
    # second method, then the other methods, then the other rewards. Each block also runs the
    # early-stopping evaluations that the finished runs allow.
    first, others = args.rewards[0], args.rewards[1:]
    blocks = [
        (None, arm_tasks(bench, [SWEEP_METHOD], [SWEEP_REWARD], tuning, core, extras=False) if sweep else {}),
        (None, arm_tasks(bench, args.methods[:1], [first], seeds, [OFF, *guards], extras=True)),
        (
            None,
            arm_tasks(
                bench, [SWEEP_METHOD], [SWEEP_REWARD], tuning, [g for g in sweep if g not in core], False
            ),
        ),
        (None, arm_tasks(bench, args.methods[1:2], [first], seeds, [OFF, *guards], extras=True)),
        (None, arm_tasks(bench, args.methods[2:], [first], seeds, [OFF, *guards], extras=True)),
        *((r, arm_tasks(bench, args.methods, [r], seeds, [OFF, *guards], extras=True)) for r in others),
    ]
    write_meta(results, bench, args, seeds, tuning, guards, sweep, t0)
    runner.run({f"base-{first}": (base_job, bench, first)})
    pending: dict[str, tuple] = {}
    for reward, tasks in blocks:
        if reward is not None:  # its Fréchet reference must exist before its runs are evaluated
            runner.run(pending | {f"base-{reward}": (base_job, bench, reward)})
            pending = {}
        pending |= tasks
        if len(pending) >= 2 * args.jobs or reward is not None:
            early = early_tasks(bench, load_results(results), args.methods, args.rewards, seeds, guards)
            runner.run(early | pending)
            pending = {}
    runner.run(pending)
    runner.run(early_tasks(bench, load_results(results), args.methods, args.rewards, seeds, guards))
    write_meta(results, bench, args, seeds, tuning, guards, sweep, t0)
    res = load_results(results)
    res.pop("meta", None)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(res, bench, json.loads((results / "meta.json").read_text())), encoding="utf-8")
    print(f"wrote {doc}")
    return 0


def write_meta(results: Path, bench: Bench, args, seeds, tuning, guards, sweep, t0: float) -> None:
    """What the doc is built from besides the result files (written first, so a stopped run renders)."""
    meta = {
        "bench": {k: v for k, v in asdict(bench).items() if k not in ("out", "results")},
        "machine": machine(),
        "jobs": args.jobs,
        "wall": time.perf_counter() - t0,
        "methods": args.methods,
        "rewards": args.rewards,
        "seeds": seeds,
        "tuning_seeds": tuning,
        "guards": [g.name for g in guards],
        "sweep": [g.name for g in sweep],
    }
    (results / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
