"""Charts as images (numpy uint8 [H, W, 3]) with matplotlib's Agg canvas: no window, no pyplot state.

`probe_chart` draws velocity-norm probe logs (the ComfyUI graph node, the CLI's report);
`metric_chart` draws training curves from metrics.jsonl rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _figure(width: int, height: int, rows: int) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


def _render(fig: Any) -> np.ndarray:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _xy(xs: Sequence[Any], ys: Sequence[Any]) -> tuple[list[Any], list[float]]:
    """Drop points whose value is missing (None), as the probe leaves unmeasured quantities."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]


def probe_chart(logs: Sequence[Mapping[str, Any]], width: int = 800, height: int = 600) -> np.ndarray:
    """||v|| per sampler step (solid; dashed: ||v_ref||) and, when any log has a reference, the ratio
    ||v|| / ||v_ref|| per step with the line ratio = 1.

    Each log is a mapping with "label", "step" and "norm", optionally "norm_ref" and "ratio" (lists
    with one value or None per step), as ProbeLog.series() returns.
    """
    if not logs:
        raise ValueError("probe_chart needs at least one log")
    has_ratio = any(any(v is not None for v in log.get("ratio") or []) for log in logs)
    fig, axes = _figure(width, height, 2 if has_ratio else 1)
    colors = [f"C{i}" for i in range(10)]
    for i, log in enumerate(logs):
        color, label = colors[i % 10], str(log.get("label") or f"log {i + 1}")
        steps = log["step"]
        axes[0].plot(*_xy(steps, log["norm"]), color=color, marker="o", markersize=3, label=f"{label} ||v||")
        ref = log.get("norm_ref") or []
        if any(v is not None for v in ref):
            axes[0].plot(*_xy(steps, ref), color=color, linestyle="--", label=f"{label} ||v_ref||")
        if has_ratio and any(v is not None for v in log.get("ratio") or []):
            axes[1].plot(*_xy(steps, log["ratio"]), color=color, marker="o", markersize=3, label=label)
    axes[0].set_ylabel("velocity norm")
    axes[0].set_title("Velocity norm per sampler step")
    axes[0].legend(fontsize="small")
    axes[0].grid(alpha=0.3)
    if has_ratio:
        axes[1].axhline(1.0, color="gray", linewidth=1)
        axes[1].set_ylabel("||v|| / ||v_ref||")
        axes[1].legend(fontsize="small")
        axes[1].grid(alpha=0.3)
    axes[-1].set_xlabel("sampler step")
    return _render(fig)


def metric_chart(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("reward_mean", "train_rho", "penalty"),
    width: int = 800,
    height: int = 600,
) -> np.ndarray:
    """One panel per metric key against the iteration (rows as in metrics.jsonl)."""
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
    if not keys:
        raise ValueError("metric_chart: none of the requested metrics occurs in the rows")
    fig, axes = _figure(width, height, len(keys))
    for ax, key in zip(axes, keys, strict=True):
        xs = [r.get("iteration", i + 1) for i, r in enumerate(rows)]
        ys = [r.get(key) if isinstance(r.get(key), (int, float)) else None for r in rows]
        ax.plot(*_xy(xs, ys), marker="o", markersize=3)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("iteration")
    return _render(fig)
