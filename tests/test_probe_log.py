"""The probe's per-step bookkeeping (pure: no ComfyUI), driven the way ComfyUI's samplers call it."""

from __future__ import annotations

import math

import pytest
import torch

from normguard.nodes.probe_log import ProbeLog


def norms(value: float, batch: int = 2, ref: float | None = None) -> dict[str, torch.Tensor]:
    out = {"norm": torch.full((batch,), value), "norm_cond": torch.full((batch,), value + 1)}
    if ref is not None:
        out["norm_ref"] = torch.full((batch,), ref)
    return out


def heun_run(log: ProbeLog, sigmas: list[float], ref: float | None = None) -> None:
    """Heun as k-diffusion runs it: eval at sigma_i, callback(i), corrector eval at sigma_i+1
    (skipped when sigma_i+1 == 0). The step's own eval carries value 10 + i, correctors 100 + i."""
    log.start_run()
    for i in range(len(sigmas) - 1):
        log.add_eval(torch.tensor([sigmas[i]] * 2), norms(10 + i, ref=ref))
        log.end_step(i)
        if sigmas[i + 1] > 0:
            log.add_eval(torch.tensor([sigmas[i + 1]] * 2), norms(100 + i, ref=ref))
    log.finish_run()


def test_heun_gives_one_record_per_step_from_the_step_own_evaluation():
    log = ProbeLog("heun", has_reference=True)
    sigmas = [1.0, 0.75, 0.5, 0.25, 0.0]
    heun_run(log, sigmas, ref=5.0)
    assert [r["step"] for r in log.records] == [0, 1, 2, 3]
    assert [r["norm"] for r in log.records] == [10, 11, 12, 13], "the corrector evaluations are not records"
    assert [r["sigma"] for r in log.records] == sigmas[:-1]
    assert [r["evals"] for r in log.records] == [1, 2, 2, 2]
    assert [r["ratio"] for r in log.records] == pytest.approx([2.0, 2.2, 2.4, 2.6])
    assert log.records[0]["norm_samples"] == [10.0, 10.0]


def test_each_run_starts_afresh():
    log = ProbeLog()
    heun_run(log, [1.0, 0.5, 0.0])
    heun_run(log, [1.0, 0.6, 0.3, 0.0])
    assert len(log.records) == 3 and log.runs == 2, "a cached probe must not accumulate records across runs"


def test_quantities_not_measured_are_none():
    log = ProbeLog()
    log.start_run()
    log.add_eval(torch.tensor([0.5]), norms(3.0, batch=1))
    log.end_step(0)
    log.finish_run()
    record = log.records[0]
    assert record["norm_uncond"] is None and record["norm_ref"] is None and record["ratio"] is None
    series = log.series()
    assert series["norm"] == [3.0] and series["ratio"] == [None] and series["label"] == ""


def test_ratio_is_the_mean_of_per_sample_ratios_and_non_finite_values_become_none():
    log = ProbeLog(has_reference=True)
    log.start_run()
    log.add_eval(
        torch.tensor([0.0, 0.0]),
        {"norm": torch.tensor([2.0, math.inf]), "norm_ref": torch.tensor([1.0, 4.0])},
    )
    log.add_eval(
        torch.tensor([0.9, 0.9]), {"norm": torch.tensor([2.0, 6.0]), "norm_ref": torch.tensor([1.0, 4.0])}
    )
    log.end_step(0)
    log.finish_run()
    assert log.records[0]["ratio"] == (2.0 + 1.5) / 2
    assert log.records[0]["ratio_samples"] == [2.0, 1.5]


def test_a_sampler_without_step_callbacks_records_every_evaluation():
    log = ProbeLog()
    log.start_run()
    for i in range(3):
        log.add_eval(torch.tensor([1.0 - i / 3]), norms(float(i), batch=1))
    log.finish_run()
    assert [r["norm"] for r in log.records] == [0.0, 1.0, 2.0]
    assert [r["step"] for r in log.records] == [0, 1, 2]


def test_evaluations_outside_a_run_are_ignored():
    log = ProbeLog()
    log.add_eval(torch.tensor([1.0]), norms(1.0, batch=1))
    log.end_step(0)
    log.finish_run()
    assert log.records == [] and log.runs == 0


def test_live_step_points_equal_the_finished_records():
    log = ProbeLog("live", has_reference=True, node="12")
    assert log.last_step() is None
    log.start_run()
    live = []
    sigmas = [1.0, 0.5, 0.0]
    for i in range(len(sigmas) - 1):
        log.add_eval(torch.tensor([sigmas[i]] * 2), norms(10 + i, ref=5.0))
        log.end_step(i)
        live.append(log.last_step())
        if sigmas[i + 1] > 0:
            log.add_eval(torch.tensor([sigmas[i + 1]] * 2), norms(100 + i, ref=5.0))
    log.finish_run()
    assert log.last_step() is None, "no live point outside a run"
    assert [p["norm"] for p in live] == [r["norm"] for r in log.records] == [10.0, 11.0]
    assert [p["ratio"] for p in live] == pytest.approx([2.0, 2.2])
    assert log.series()["node"] == "12"
