"""The demo's report: markdown with PNG plots (matplotlib, Agg backend), every number from the run.

Plots: reward curves of both runs, rho at each evaluation and per sampler step, the judge's
accuracy over training, and sample grids (base / without / with NormGuard, same prompts and noise)
at the full and at the few-step schedule. The text under the table is generated from the numbers
themselves, whichever way they point.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .callbacks import read_metrics_rows
from .files import write_text
from .penalty import penalty_label

ARM_STYLE = {"unguarded": ("without NormGuard", "tab:red"), "normguard": ("with NormGuard", "tab:blue")}
MODEL_LABEL = {"base": "base model", "unguarded": "without NormGuard", "normguard": "with NormGuard"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl of a run (iteration 0 is the base model's evaluation)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: was the run trained?")
    return read_metrics_rows(path)


def running_mean(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over up to `window` values (shorter at the start)."""
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_rewards(runs: dict[str, list[dict]], path: Path, reward: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, rows in runs.items():
        label, colour = ARM_STYLE[arm]
        train = [(r["iteration"], r["reward_mean"]) for r in rows if "reward_mean" in r]
        if train:
            it, rw = zip(*train, strict=True)
            ax.plot(it, rw, color=colour, alpha=0.25, lw=1)
            ax.plot(
                it,
                running_mean(list(rw), 5),
                color=colour,
                lw=2,
                label=f"{label}: training rollouts (mean of 5)",
            )
        ev = [(r["iteration"], r["eval_reward"]) for r in rows if "eval_reward" in r]
        if ev:
            it, rw = zip(*ev, strict=True)
            ax.plot(it, rw, "o--", color=colour, ms=4, lw=1, label=f"{label}: held-out evaluation")
    ax.set_xlabel("RL iteration")
    ax.set_ylabel(f"reward ({reward})")
    ax.set_title("Reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_rho(runs: dict[str, list[dict]], final: dict[str, dict], path: Path) -> Path:
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, rows in runs.items():
        label, colour = ARM_STYLE[arm]
        ev = [(r["iteration"], r["rho_mean"]) for r in rows if "rho_mean" in r]
        if ev:
            it, rho = zip(*ev, strict=True)
            a.plot(it, rho, "o-", color=colour, ms=4, label=label)
        per_step = final.get(arm, {}).get("full", {}).get("rho_per_step")
        if per_step:
            b.plot(range(1, len(per_step) + 1), per_step, "o-", color=colour, ms=4, label=label)
    for ax in (a, b):
        ax.axhline(1.0, color="grey", lw=1, ls=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_ylabel("rho = ||v_theta|| / ||v_ref||")
    a.set_xlabel("RL iteration")
    a.set_title("Mean rho over the sampler steps, at each evaluation")
    b.set_xlabel("sampler step (1 = pure noise)")
    b.set_title("rho per sampler step, final LoRAs")
    return _save(fig, path)


def plot_judge(runs: dict[str, list[dict]], path: Path) -> Path | None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for arm, rows in runs.items():
        label, colour = ARM_STYLE[arm]
        for key, style, what in (
            ("eval_scene_judge", "o-", "full steps"),
            ("eval_scene_judge_few", "s:", "few steps"),
        ):
            ev = [(r["iteration"], r[key]) for r in rows if key in r]
            if ev:
                it, acc = zip(*ev, strict=True)
                ax.plot(it, acc, style, color=colour, ms=4, label=f"{label}, {what}")
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("RL iteration")
    ax.set_ylabel("judge: fraction of prompt attributes shown")
    ax.set_title("Does the image still show what the prompt asked for?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_samples(images: dict[str, np.ndarray], prompts: list[str], path: Path, title: str) -> Path:
    """Rows = models (base, without, with NormGuard), columns = the same prompt and noise."""
    plt = _pyplot()
    names = [n for n in ("base", "unguarded", "normguard") if n in images]
    cols = min(len(prompts), *(images[n].shape[0] for n in names))
    fig, axes = plt.subplots(
        len(names), cols, figsize=(1.35 * cols + 1.2, 1.45 * len(names) + 0.6), squeeze=False
    )
    for i, name in enumerate(names):
        for j in range(cols):
            ax = axes[i][j]
            ax.imshow(np.clip(images[name][j].transpose(1, 2, 0), 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(MODEL_LABEL[name], fontsize=8)
            if i == 0:
                ax.set_title(_wrap(prompts[j]), fontsize=5.5)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join([*lines, line])


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def metrics_table(final: dict[str, dict]) -> str:
    """One row per model: reward, judge accuracy, Fréchet distance (full / few steps), rho, chroma, contrast."""
    head = (
        "| model | reward (full) | reward (few) | judge accuracy (full) | judge accuracy (few) "
        "| Fréchet dist. (full) | Fréchet dist. (few) | mean rho | chroma | contrast |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for name in ("base", "unguarded", "normguard"):
        if name not in final:
            continue
        f, w = final[name]["full"], final[name]["few"]
        rows.append(
            f"| {MODEL_LABEL[name]} | {_fmt(f['reward'], 4)} | {_fmt(w['reward'], 4)} | {_fmt(f['accuracy'])} "
            f"| {_fmt(w['accuracy'])} | {_fmt(f['frechet'], 1)} | {_fmt(w['frechet'], 1)} "
            f"| {_fmt(f.get('rho_mean'))} | {_fmt(f['chroma'])} | {_fmt(f['contrast'])} |"
        )
    return head + "\n".join(rows) + "\n"


def findings(final: dict[str, dict]) -> list[str]:
    """Plain sentences read off the final numbers (no claim is made that the numbers do not show)."""
    b, u, g = (final[k]["full"] for k in ("base", "unguarded", "normguard"))
    bf, uf, gf = (final[k]["few"] for k in ("base", "unguarded", "normguard"))
    out = []
    gain_u, gain_g = u["reward"] - b["reward"], g["reward"] - b["reward"]
    if gain_u > 0:
        out.append(
            f"Without NormGuard the reward rose by {gain_u:.4f} (from {b['reward']:.4f} to {u['reward']:.4f}); "
            f"with it by {gain_g:.4f}: NormGuard kept {100 * gain_g / gain_u:.0f}% of the unguarded gain."
        )
    else:
        out.append(f"Without NormGuard the reward did not rise ({b['reward']:.4f} -> {u['reward']:.4f}).")
    out.append(
        f"Velocity norm: mean rho {u['rho_mean']:.3f} without NormGuard (max over steps "
        f"{max(u['rho_per_step']):.3f}), {g['rho_mean']:.3f} with it (max {max(g['rho_per_step']):.3f})."
    )
    for label, (x, y, z) in (("full", (b, u, g)), ("few", (bf, uf, gf))):
        closer = "closer to" if z["frechet"] < y["frechet"] else "no closer to"
        out.append(
            f"At {label} steps the judge finds the prompt's attributes in {100 * x['accuracy']:.0f}% (base), "
            f"{100 * y['accuracy']:.0f}% (without) and {100 * z['accuracy']:.0f}% (with NormGuard); the "
            f"Fréchet distance to the data is {x['frechet']:.1f}, {y['frechet']:.1f} and {z['frechet']:.1f}: "
            f"the guarded LoRA's images are {closer} the data than the unguarded one's."
        )
    return out


def write_demo_report(
    out: Path, summary: dict[str, Any], images: dict[str, dict[str, np.ndarray]], prompts: list[str]
) -> Path:
    """out/report.md and out/plots/*.png from the demo's summary, its run folders and final samples."""
    out = Path(out)
    s, final = summary["settings"], summary["final"]
    runs = {arm: read_metrics(out / arm) for arm in ("unguarded", "normguard")}
    plots = out / "plots"
    files = {
        "reward": plot_rewards(runs, plots / "reward.png", s["reward"]),
        "rho": plot_rho(runs, final, plots / "rho.png"),
        "judge": plot_judge(runs, plots / "judge_accuracy.png"),
        "full": plot_samples(
            {k: v["full"] for k, v in images.items()},
            prompts,
            plots / "samples_full.png",
            f"{s['sample_steps']} sampling steps (as trained)",
        ),
        "few": plot_samples(
            {k: v["few"] for k, v in images.items()},
            prompts,
            plots / "samples_few.png",
            f"{s['few_steps']} sampling steps",
        ),
    }
    ng = summary["normguard"]
    penalty = penalty_label(
        ng["normguard_weight"], ng["normguard_form"], ng["normguard_relative"], ng["normguard_margin"]
    )
    lines = [
        "# NormGuard demo",
        "",
        f"Two LoRA runs of the builtin TinyFlow model ({s['method'].upper()}, reward `{s['reward']}`, "
        f"{s['iterations']} iterations of {s['groups_per_iteration']} x {s['group_size']} samples, lr {s['lr']}, "
        f"LoRA rank {s['lora_rank']}, seed {s['seed']}), identical except for the NormGuard penalty: "
        f"{penalty}. "
        f"The final LoRAs and the base model are compared on {s['final_samples']} fixed prompts and noises, "
        f"at {s['sample_steps']} and {s['few_steps']} sampling steps, by the reward and by a judge network "
        "trained on the scenes that the reward never sees (attribute accuracy: does the image show what "
        "the prompt asked for; Fréchet distance of its features to real scenes: lower is closer to the data).",
        "",
        f"Time: {summary['wall_seconds'] / 60:.1f} min wall, {summary['cpu_seconds'] / 60:.1f} min CPU "
        f"({summary['jobs']} worker process(es), {summary['torch_threads_per_run']} torch thread each).",
        "",
        "## Final numbers",
        "",
        metrics_table(final),
        *[f"- {line}" for line in findings(final)],
        "",
        f"![samples at full steps](plots/{files['full'].name})",
        "",
        f"![samples at few steps](plots/{files['few'].name})",
        "",
        "## Training",
        "",
        f"![reward curves](plots/{files['reward'].name})",
        "",
        f"![rho](plots/{files['rho'].name})",
        "",
    ]
    if files["judge"] is not None:
        lines += [f"![judge accuracy](plots/{files['judge'].name})", ""]
    lines += _eval_grid_lines(out, summary["arms"])
    lines += [
        "## Files",
        "",
        *[
            f"- LoRA {MODEL_LABEL[arm]}: `{_relative(a['lora'], out)}` ({a['status']})"
            for arm, a in summary["arms"].items()
        ],
        "- per-iteration metrics: `unguarded/metrics.jsonl`, `normguard/metrics.jsonl`; "
        "evaluation grids over training: `*/evals/iter-*.png` (top row full steps, bottom row few steps)",
        "- all numbers above: `summary.json`; the final samples: `final_samples.npz`",
        "",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _eval_grid_lines(out: Path, arms: dict[str, Any]) -> list[str]:
    """The trainer's evaluation grids (same prompts and seeds each time) at the start, middle and end of
    each run, so the drift is seen as it happened."""
    lines = []
    for arm in arms:
        grids = sorted((out / arm / "evals").glob("iter-*.png"))
        picked = sorted({grids[0], grids[len(grids) // 2], grids[-1]}) if grids else []
        for g in picked:
            if not lines:
                lines = [
                    "## Evaluation grids over training",
                    "",
                    "The same held-out prompts and noise at every evaluation; top row full steps, "
                    "bottom row few steps.",
                    "",
                ]
            it = int(g.stem.split("-")[1])
            lines += [
                f"{MODEL_LABEL[arm][0].upper()}{MODEL_LABEL[arm][1:]}, iteration {it}:",
                "",
                f"![{arm} {it}]({arm}/evals/{g.name})",
                "",
            ]
    return lines


def _relative(path: str, folder: Path) -> str:
    """path relative to folder when it lies inside it (the report then survives moving the folder)."""
    try:
        return str(Path(path).resolve().relative_to(Path(folder).resolve()))
    except ValueError:
        return str(path)
