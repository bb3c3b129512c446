"""Per-sampler-step bookkeeping of the velocity-norm probe (pure torch: no ComfyUI needed).

Hooks see model *evaluations*; a sampler step may take several (Heun: 2). ComfyUI's samplers call
the per-step callback right after the step's first evaluation, the one at the step's own point
(x_i, sigma_i) that an Euler step would use; any further evaluations of the step (Heun's corrector
at sigma_i+1) come after it. So each callback closes a step whose record is the last evaluation
before it. Norms stay tensors on the model's device until the run ends, so recording adds no device
synchronisation per step.
"""

from __future__ import annotations

import math
from typing import Any

import torch

NORM_KEYS = ("norm", "norm_cond", "norm_uncond", "norm_ref")


class ProbeLog:
    """The records of the latest sampling run of one probed MODEL.

    ComfyUI caches node outputs, so one ProbeLog object serves every run of a cached probe: each run
    starts with `start_run()`, which drops the previous run's records.
    """

    def __init__(
        self, label: str = "", has_reference: bool = False, rescale: bool = False, node: str | None = None
    ):
        self.label = label
        self.node = node  # the probe node's id in the graph, so the frontend can find its chart
        self.has_reference = has_reference
        self.rescale = rescale
        self.runs = 0  # sampling runs seen (across the cached lifetime)
        self.records: list[dict[str, Any]] = []
        self._pending: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []  # evals since the last step
        self._steps: list[tuple[int, int, torch.Tensor, dict[str, torch.Tensor]]] = []
        self._open = False

    # --- what the sampler hooks call --------------------------------------------------------------
    def start_run(self) -> None:
        self.records, self._pending, self._steps = [], [], []
        self.runs += 1
        self._open = True

    def add_eval(self, sigma: torch.Tensor, norms: dict[str, torch.Tensor]) -> None:
        """One model evaluation: sigma [B] and per-sample norms [B] (keys from NORM_KEYS)."""
        if self._open:
            self._pending.append((sigma, norms))

    def end_step(self, step: int) -> None:
        """The sampler's callback for step `step` (0-based): the latest evaluation is the step's.
        `evals` counts the evaluations since the previous step (Heun: the previous step's
        corrector plus this step's own)."""
        if not self._open or not self._pending:
            return
        sigma, norms = self._pending[-1]
        self._steps.append((step, len(self._pending), sigma, norms))
        self._pending = []

    def finish_run(self) -> None:
        """Turn the run's tensors into numbers (one transfer). In a run without any step callback
        (a custom sampler that calls none), every evaluation counts as a step; evaluations after
        the last callback (a final corrector) belong to the last step."""
        if not self._open:
            return
        self._open = False
        if not self._steps:
            self._steps = [(i, 1, sigma, norms) for i, (sigma, norms) in enumerate(self._pending)]
        elif self._pending:
            step, evals, sigma, norms = self._steps[-1]
            self._steps[-1] = (step, evals + len(self._pending), sigma, norms)
        self._pending = []
        self.records = [_record(step, evals, sigma, norms) for step, evals, sigma, norms in self._steps]
        self._steps = []

    # --- reading ----------------------------------------------------------------------------------
    def last_step(self) -> dict[str, Any] | None:
        """The record of the step `end_step` closed last (a live chart point; it reads the step's
        norms, so on a GPU it waits for that step's evaluation to finish)."""
        if not self._open or not self._steps:
            return None
        return _record(*self._steps[-1])

    def series(self) -> dict[str, Any]:
        """Per-step columns (JSON-ready): step, sigma, evals, norm, norm_cond, norm_uncond, norm_ref,
        ratio (None where a quantity was not measured) and the per-sample values of norm/ratio."""
        cols: dict[str, Any] = {
            "label": self.label,
            "node": self.node,
            "reference": self.has_reference,
            "rescale": self.rescale,
        }
        for key in ("step", "sigma", "evals", *NORM_KEYS, "ratio", "norm_samples", "ratio_samples"):
            cols[key] = [r.get(key) for r in self.records]
        return cols

    def __repr__(self) -> str:
        return f"ProbeLog(label={self.label!r}, steps={len(self.records)}, runs={self.runs})"


def _record(step: int, evals: int, sigma: torch.Tensor, norms: dict[str, torch.Tensor]) -> dict[str, Any]:
    keys = [k for k in NORM_KEYS if k in norms]
    values = torch.stack([norms[k].detach().float().flatten() for k in keys]).cpu()
    rec: dict[str, Any] = {"step": step, "evals": evals, "sigma": float(sigma.detach().flatten()[0])}
    for k in NORM_KEYS:
        rec[k] = None
    for k, row in zip(keys, values, strict=True):
        rec[k] = _finite(row.mean().item())
    rec["norm_samples"] = [_finite(v) for v in values[keys.index("norm")].tolist()] if "norm" in keys else []
    rec["ratio"], rec["ratio_samples"] = None, []
    if "norm" in keys and "norm_ref" in keys:
        ratios = values[keys.index("norm")] / values[keys.index("norm_ref")].clamp_min(1e-12)
        rec["ratio"] = _finite(ratios.mean().item())
        rec["ratio_samples"] = [_finite(v) for v in ratios.tolist()]
    return rec


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
