"""benchmarks/paper_claims.py: the verdict rules on known numbers, and the smoke run end to end."""

from __future__ import annotations

import importlib
import json
import math
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # importable by name, also in the spawned workers
pc = importlib.import_module("paper_claims")


def cell(rho_off, rho_on, base, off, on, rescaled, early, early_it=(10, 10, 10), early_final=False):
    """A Cell over 3 seeds; base/off/on/rescaled/early are (reward, accuracy, frechet) per seed,
    the same at full and few steps unless given as a dict {"full": ..., "few": ...}."""
    q = {}
    for arm, vals in (("base", base), ("off", off), ("on", on), ("rescaled", rescaled), ("early", early)):
        per_sched = vals if isinstance(vals, dict) else {"full": vals, "few": vals}
        for sched, (reward, acc, fd) in per_sched.items():
            q[f"{arm}/{sched}/reward"] = [reward] * 3
            q[f"{arm}/{sched}/accuracy"] = [acc] * 3
            q[f"{arm}/{sched}/frechet"] = [fd] * 3
    r_base, r_off, r_on = (q[f"{arm}/full/reward"][0] for arm in ("base", "off", "on"))
    kept = [pc.gain_kept(r_base, r_off, r_on)] * 3
    return pc.Cell(
        [rho_off] * 3, [rho_on] * 3, [r_off] * 3, [r_on] * 3, kept, q, list(early_it), [early_final] * 3
    )


def test_the_papers_regime_gets_holds_everywhere():
    c = cell(
        1.10,
        0.99,
        base=(0.2, 0.9, 5.0),
        off={"full": (0.6, 0.6, 30.0), "few": (0.6, 0.5, 60.0)},
        on={"full": (0.59, 0.85, 10.0), "few": (0.59, 0.85, 12.0)},
        rescaled={"full": (0.6, 0.6, 30.5), "few": (0.6, 0.5, 59.0)},
        early=(0.59, 0.7, 25.0),
    )
    v = pc.verdicts(c)
    assert v["1"].startswith("holds;") and "holds rho" in v["1"]
    assert v["2"].startswith("holds: 98%")
    assert v["3"].startswith("holds") and "accuracy higher" in v["3"] and "grows" in v["3"]
    assert v["4"].startswith("holds")
    assert v["5"].startswith("holds")


def test_the_opposite_numbers_get_does_not_hold():
    c = cell(
        1.0,
        1.0,
        base=(0.2, 0.9, 5.0),
        off=(0.6, 0.6, 30.0),
        on=(0.3, 0.6, 30.0),
        rescaled=(0.7, 0.8, 10.0),
        early=(0.3, 0.9, 5.0),
    )
    v = pc.verdicts(c)
    assert v["1"].startswith("does not hold") and v["2"].startswith("does not hold: 25%")
    assert v["3"].startswith("does not hold") and v["4"].startswith(
        "does not hold: rescaling improved the reward"
    )
    assert v["5"].startswith("does not hold")


def test_early_stopping_at_the_last_checkpoint_is_no_verdict():
    c = cell(
        1.06,
        1.0,
        base=(0.2, 0.9, 5.0),
        off=(0.6, 0.6, 30.0),
        on=(0.6, 0.6, 30.0),
        rescaled=(0.6, 0.6, 30.0),
        early=(0.6, 0.6, 30.0),
        early_it=(40, 40, 40),
        early_final=True,
    )
    assert pc.verdicts(c)["5"].startswith(
        "n/a: the unguarded run first reached the guarded reward at its last"
    )


def test_ties_within_the_minimum_differences_are_not_wins():
    assert not pc.beats(29.0, 30.0, "frechet")  # 3% lower: a tie
    assert pc.beats(27.0, 30.0, "frechet")
    assert not pc.beats(0.905, 0.9, "accuracy") and pc.beats(0.92, 0.9, "accuracy")
    assert not pc.beats(0.61, 0.6, "reward", gain=0.4) and pc.beats(0.63, 0.6, "reward", gain=0.4)
    assert not pc.better_every_seed([1.0, 2.0], [3.0, 1.0], "frechet")
    assert math.isnan(pc.gain_kept(0.5, 0.4, 0.6))


def test_early_stop_picks_the_snapshot_nearest_the_guarded_reward():
    snaps = {"5": 0.30, "10": 0.40, "15": 0.55, "20": 0.70}
    assert pc.pick_early_stop(snaps, 0.52) == 15
    assert pc.pick_early_stop(snaps, 0.42) == 10
    assert pc.pick_early_stop(snaps, 0.2) == 5
    assert pc.pick_early_stop(snaps, 0.9) is None
    c = cell(
        1.1,
        1.0,
        (0.2, 0.9, 5.0),
        (0.6, 0.6, 30.0),
        (0.7, 0.8, 10.0),
        (0.6, 0.6, 30.0),
        (math.nan,) * 3,
        (None,) * 3,
    )
    assert pc.verdicts(c)["5"].startswith("n/a at 3 seed(s)")


@pytest.mark.slow
def test_smoke_run_writes_the_table_and_verdicts_and_reruns_from_cache(tmp_path, capsys):
    args = ["--smoke", "--out", str(tmp_path / "cache"), "--doc", str(tmp_path / "claims.md"), "--jobs", "2"]
    assert pc.main(args) == 0
    doc = (tmp_path / "claims.md").read_text()
    assert doc.count("### Verdicts") == 2 and "SMOKE RUN" in doc and "Machine:" in doc
    for reward in ("saturation", "centring"):
        assert f"## Reward `{reward}`" in doc
    for method in ("NFT", "AWM", "DPO"):
        assert f"| {method} | with NormGuard |" in doc
    verdict_rows = [line for line in doc.splitlines() if re.match(r"\| \(\d\) ", line)]
    assert len(verdict_rows) == 10 and all(line.count("|") == 5 for line in verdict_rows)
    assert all(re.search(r"holds|does not hold|partly|n/a", line) for line in verdict_rows)
    runs = tmp_path / "cache" / "runs"
    assert (next(runs.glob("nft-saturation-*-s0-off")) / "snapshot-00001.safetensors").is_file()
    capsys.readouterr()
    assert pc.main(args) == 0  # everything cached: no job runs again, the same verdicts come out
    assert "running" not in capsys.readouterr().out
    again = (tmp_path / "claims.md").read_text()
    assert [line for line in again.splitlines() if line.startswith("| (")] == verdict_rows


@pytest.mark.slow
def test_smoke_run_on_a_diffusers_model_compares_with_its_own_samples(tmp_path, tiny_sd3_dir):
    out, doc = tmp_path / "cache", tmp_path / "claims.md"
    args = ["--smoke", "--model", str(tiny_sd3_dir), "--methods", "nft", "--rewards", "saturation"]
    args += ["--height", "64", "--width", "64", "--jobs", "1", "--out", str(out), "--doc", str(doc)]
    assert pc.main(args) == 0
    text = doc.read_text()
    assert f"Model: `{tiny_sd3_dir}`" in text and "| NFT | with NormGuard |" in text
    # no judge data for this model: the Fréchet reference is the base model's own full-step samples
    assert (out / "reference-saturation.pt").is_file()
    base = json.loads((out / "results" / "base-saturation.json").read_text())
    assert abs(base["full"]["frechet"]) < 1e-3 and base["few"]["frechet"] > base["full"]["frechet"]


def test_the_defaults_rule_prefers_data_closeness_among_settings_that_keep_the_gain():
    light, strong, squared = pc.Guard(0.3), pc.Guard(3.0), pc.Guard(10.0, "squared")
    kept = {light: 0.97, strong: 0.7, squared: 0.92}
    score = {light: 0.8, strong: 0.5, squared: 0.6}  # FD relative to the unguarded run
    assert pc.pick_default(kept, score) == squared  # strong is closest to the data but costs reward
    assert pc.pick_default({strong: 0.7, light: 0.8}, {strong: 0.5, light: 0.9}) == light
