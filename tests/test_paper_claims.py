"""benchmarks/paper_claims.py: the verdict rules on known numbers, and the smoke run end to end."""

from __future__ import annotations

import importlib
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
        [0, 1, 2],
        [rho_off] * 3,
        [rho_on] * 3,
        [rho_off] * 3,
        [rho_on] * 3,
        [r_off] * 3,
        [r_on] * 3,
        kept,
        q,
        list(early_it),
        [early_final] * 3,
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
    assert v["1"].startswith("holds (1.100 full") and "holds rho" in v["1"]
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
    assert v["3"].startswith("does not hold") and v["4"].startswith("not testable (no inflation)")
    assert v["5"].startswith("does not hold: early stopping was closer to the data at every seed")
    c.rho_off = [1.03] * 3  # inflated: now rescaling can be judged
    assert pc.verdicts(c)["4"].startswith("does not hold: rescaling improved the reward")


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
    v5 = pc.verdicts(c)["5"]
    assert v5.startswith("n/a: at 3 seed(s) it first reached it at its last checkpoint") and "kept 100%" in v5


def test_early_stopping_that_beats_the_guarded_run_is_reported_with_its_direction():
    c = cell(
        1.06,
        1.0,
        base=(0.2, 0.9, 5.0),
        off=(0.6, 0.5, 80.0),
        on=(0.5, 0.57, 63.0),
        rescaled=(0.6, 0.5, 80.0),
        early=(0.5, 0.64, 55.0),
    )
    v5 = pc.verdicts(c)["5"]
    assert v5.startswith("does not hold: early stopping was closer to the data at every seed")
    assert "judge accuracy was higher at every seed" in v5 and "-8.0 / -8.0 / -8.0" in v5


def test_no_inflation_makes_claim_4_not_testable_and_growth_needs_to_beat_the_seed_spread():
    c = cell(
        1.005, 1.0, (0.2, 0.9, 5.0), (0.6, 0.6, 30.0), (0.6, 0.6, 30.0), (0.6, 0.6, 30.0), (0.6, 0.6, 30.0)
    )
    assert pc.verdicts(c)["4"].startswith("not testable (no inflation)")
    assert pc.grows([0.5, 0.6, 0.4]) and not pc.grows([0.1, 0.1, -0.05]) and not pc.grows([0.05, 1.0, 0.02])


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
    assert pc.verdicts(c)["5"].startswith("n/a: at 3 seed(s) the unguarded run never reached")


@pytest.mark.slow
def test_smoke_run_writes_the_table_and_verdicts_and_rebuilds_from_its_results(tmp_path, capsys):
    args = ["--smoke", "--out", str(tmp_path / "cache"), "--doc", str(tmp_path / "claims.md"), "--jobs", "2"]
    assert pc.main(args) == 0
    doc = (tmp_path / "claims.md").read_text()
    assert doc.count("### Verdicts") == 4 and "SMOKE RUN" in doc and "Machine:" in doc
    assert "## Penalty sweep\n\nNFT, reward `saturation`, tuning seeds 10 (never" in doc
    for reward in ("saturation", "centring"):
        assert f"## Reward `{reward}`" in doc
    for method in ("NFT", "AWM", "DPO", "GRPO"):
        assert f"| {method} | with NormGuard: squared relative hinge, weight 10 |" in doc
        assert f"| {method} | with NormGuard: paper form (linear absolute)" in doc
    verdict_rows = [line for line in doc.splitlines() if re.match(r"\| \(\d\) ", line)]
    assert len(verdict_rows) == 20 and all(line.count("|") == 6 for line in verdict_rows)
    assert all(re.search(r"holds|does not hold|partly|n/a|not testable", line) for line in verdict_rows)
    runs = tmp_path / "cache" / "runs"
    assert (next(runs.glob("nft-saturation-*-s0-off")) / "snapshot-00001.safetensors").is_file()
    capsys.readouterr()
    check = [
        "--check",
        "--results",
        str(tmp_path / "cache" / "results"),
        "--doc",
        str(tmp_path / "claims.md"),
    ]
    assert pc.main(check) == 0  # the doc, rebuilt from the result files alone, byte for byte
    (tmp_path / "claims.md").write_text(doc.replace("holds", "held", 1))
    assert pc.main(check) == 1 and "does not match" in capsys.readouterr().out


def test_the_committed_claims_doc_is_rebuilt_byte_for_byte_from_the_committed_results():
    assert pc.main(["--check"]) == 0  # cheap: reads benchmarks/results/*.json, trains nothing


def test_the_defaults_rule_takes_the_paper_form_within_the_best_settings_spread():
    squared, p1, p2 = pc.Guard(10.0, "squared"), pc.Guard(0.01, "paper"), pc.Guard(0.03, "paper")
    best, paper, default = pc.choose_default(
        {squared: [0.2, 0.3, 0.1], p1: [0.0, 0.1, 0.05], p2: [0.1, 0.2, 0.15]}
    )
    assert (best, paper, default) == (squared, p2, True)  # 0.15 >= 0.2 - 0.1
    best, paper, default = pc.choose_default(
        {squared: [0.3, 0.31, 0.29], p1: [0.0, 0.1, 0.05], p2: [0.1, 0.2, 0.1]}
    )
    assert (best, paper, default) == (squared, p2, False)
    assert pc.Guard.from_name(p2.name) == p2 and pc.Guard.from_name("off") == pc.OFF


def test_early_stopping_with_one_comparable_seed_is_no_verdict():
    """'At every seed' over the one seed where the unguarded run reached the guarded reward is a coin flip."""
    c = cell(
        1.06,
        1.0,
        base=(0.2, 0.9, 5.0),
        off=(0.6, 0.5, 80.0),
        on=(0.5, 0.57, 40.0),
        rescaled=(0.6, 0.5, 80.0),
        early=(0.5, 0.5, 76.0),
        early_it=(None, None, 35),
    )
    for key in [k for k in c.q if k.startswith("early/")]:
        c.q[key][:2] = [float("nan")] * 2
    v5 = pc.verdicts(c)["5"]
    assert v5.startswith("n/a: 1 of 3 seeds comparable") and "+36.0" in v5
    assert "at 2 seed(s) the unguarded run never reached the guarded reward" in v5
