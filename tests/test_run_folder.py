"""The run folder across failures: damaged checkpoints fall back, temporaries are swept, metrics and
TensorBoard are cut back to the checkpoint, a never-started folder is taken over, resume says where
it starts, files get the umask's mode, and NaN evaluations neither become best nor stay silent."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from normguard.trainer.callbacks import read_metrics_rows, trim_metrics
from normguard.trainer.checkpoint import RunDir, RunDirError
from normguard.trainer.config import TrainConfig
from normguard.trainer.evaluation import DriftMonitor, Evaluation
from normguard.trainer.loop import train
from normguard.trainer.report import read_metrics


def iterations(run_dir) -> list[int]:
    return [r["iteration"] for r in read_metrics_rows(Path(run_dir) / "metrics.jsonl")]


def same_lora(a, b) -> bool:
    la, lb = load_file(a), load_file(b)
    return la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)


@pytest.fixture
def four(tiny_config):
    """A 4-iteration run with a checkpoint every iteration."""
    return tiny_config.replace(iterations=4, eval_every=0, keep_checkpoints=4)


@pytest.mark.parametrize("damage", ["empty state.json", "torn state.json", "torn adapter", "no optimizer"])
def test_resume_falls_back_to_the_newest_checkpoint_that_reads_and_says_which(four, damage, capsys):
    cfg = four
    run = train(cfg)
    newest = RunDir(run.run_dir).checkpoints()[-1]
    assert newest.name == "iter-000004"
    if damage == "empty state.json":  # the disk filled while it was written (the bug report)
        (newest / "state.json").write_text("")
    elif damage == "torn state.json":
        (newest / "state.json").write_text('{"iteration": 4, "optim')
    elif damage == "torn adapter":
        data = (newest / "adapter.safetensors").read_bytes()
        (newest / "adapter.safetensors").write_bytes(data[: len(data) // 2])
    else:
        (newest / "optimizer.pt").unlink()
    # an earlier version's half-written checkpoint (`iter-N.tmp`) and a temporary file
    (newest.parent / "iter-000005.tmp").mkdir()
    (newest.parent / "iter-000005.tmp" / "state.json").write_text("{}")
    (run.run_dir / ".normguard_lora.safetensors.tmp-99999").write_bytes(b"half")
    capsys.readouterr()
    resumed = train(cfg.replace(iterations=5))
    said = capsys.readouterr().out
    assert f"resuming {run.run_dir} from iteration 3 (checkpoint {newest.parent / 'iter-000003'})" in said
    assert "iter-000004 (" in said  # the skipped one, and why
    assert resumed.status == "finished" and resumed.iterations == 5
    assert iterations(run.run_dir) == [1, 2, 3, 4, 5]
    assert not any(".tmp" in p.name for p in run.run_dir.rglob("*"))
    assert [c.name for c in RunDir(run.run_dir).checkpoints()][-1] == "iter-000005"
    five = train(cfg.replace(iterations=5, out=str(Path(cfg.out).parent / "five")))
    assert same_lora(resumed.lora_path, five.lora_path)  # bit-identical to an uninterrupted run


def test_the_same_iteration_saved_twice_replaces_its_checkpoint_whole(tiny_config):
    run = RunDir.open(tiny_config.out, tiny_config)
    t = {"adapter": {"w": torch.ones(2)}}
    run.save_checkpoint(3, t, {"state": {}, "param_groups": []}, {"iteration": 3}, keep=2)
    run.save_checkpoint(
        3, {"adapter": {"w": torch.zeros(2)}}, {"state": {}, "param_groups": []}, {"iteration": 3}, 2
    )
    (ckpt,) = run.checkpoints()
    assert torch.equal(load_file(ckpt / "adapter.safetensors")["w"], torch.zeros(2))
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["iter-000003"]


def test_keep_checkpoints_keeps_that_many(tiny_config):
    run = RunDir.open(tiny_config.out, tiny_config)
    for it in range(1, 5):
        run.save_checkpoint(it, {"adapter": {"w": torch.ones(1)}}, {"state": {}}, {"iteration": it}, keep=1)
    assert [c.name for c in run.checkpoints()] == ["iter-000004"]


def test_metrics_are_cut_back_to_the_checkpoint_and_a_torn_line_is_dropped(tiny_config):
    """Killed at iteration 6 with the checkpoint at 3: the log must not read 1..6, 4, 5, 6, ..."""
    cfg = tiny_config.replace(iterations=3, eval_every=2, checkpoint_every=3)
    train(cfg)
    log = Path(cfg.out) / "metrics.jsonl"
    rows = log.read_text().splitlines()
    extra = [json.dumps({"iteration": i, "reward_mean": 0.0}) for i in (4, 5, 6)]
    log.write_text("\n".join([*rows, *extra]) + '\n{"iteration": 7, "rew')  # killed mid-line
    assert [r["iteration"] for r in read_metrics(Path(cfg.out))] == [0, 1, 2, 3, 4, 5, 6]  # readers cope
    train(cfg.replace(iterations=5))
    assert iterations(cfg.out) == [0, 1, 2, 3, 4, 5]
    assert log.read_text().splitlines()[:4] == rows  # the kept rows are untouched


def test_trim_metrics_without_checkpoint_drops_every_row(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"iteration": 0}\n{"iteration": 1}\n')
    trim_metrics(log, None)
    assert log.read_text() == ""


def test_non_finite_metrics_are_written_as_null(tiny_config):
    from normguard.trainer.callbacks import MetricsWriter

    w = MetricsWriter(Path(tiny_config.out))
    Path(tiny_config.out).mkdir(parents=True, exist_ok=True)
    w.on_iteration_end(1, {"loss": math.nan, "grad_norm": math.inf, "rho_per_step": [1.0, math.nan]})
    line = (Path(tiny_config.out) / "metrics.jsonl").read_text()
    row = json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} is not JSON"))
    assert row == {"iteration": 1, "loss": None, "grad_norm": None, "rho_per_step": [1.0, None]}


def test_tensorboard_shows_one_curve_after_a_resume(tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config.replace(iterations=4, eval_every=0, checkpoint_every=2, tensorboard=True)
    train(cfg.replace(iterations=3))  # checkpoint at 2, then iteration 3 is logged and lost
    train(cfg)
    acc = EventAccumulator(str(Path(cfg.out) / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("reward_mean")]
    assert steps == [1, 2, 3, 4]


def test_a_failed_start_does_not_block_its_folder(tiny_config, tmp_path, capsys):
    """A start that fails after config.yaml was written (missing model) leaves a folder that the
    corrected command takes over, with a one-line notice."""
    out = tmp_path / "m2"
    with pytest.raises((FileNotFoundError, ValueError)):
        train(tiny_config.replace(model=str(tmp_path / "nonexistent"), out=str(out)))
    assert (out / "config.yaml").is_file()
    capsys.readouterr()
    result = train(tiny_config.replace(out=str(out), iterations=1))
    notice = [line for line in capsys.readouterr().out.splitlines() if "taking over" in line]
    assert len(notice) == 1 and "never started" in notice[0]
    assert result.status == "finished"
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == tiny_config.model


def test_a_started_run_with_another_config_is_still_refused(tiny_config):
    train(tiny_config.replace(iterations=1))
    with pytest.raises(RunDirError, match="holds a run with another config"):
        train(tiny_config.replace(iterations=1, lr=0.5))


def test_resume_says_where_it_starts_and_the_config_shows_the_new_length(tiny_config, capsys, caplog):
    cfg = tiny_config.replace(iterations=2, eval_every=0)
    train(cfg)
    capsys.readouterr()
    with caplog.at_level("INFO", logger="normguard"):
        train(cfg.replace(iterations=3))
    line = f"resuming {cfg.out} from iteration 2 (checkpoint {Path(cfg.out) / 'checkpoints' / 'iter-000002'})"
    assert line in capsys.readouterr().out
    assert line in caplog.text
    assert yaml.safe_load((Path(cfg.out) / "config.yaml").read_text())["iterations"] == 3


def test_loras_and_checkpoints_get_the_umask_mode(tiny_config):
    old = os.umask(0o022)
    try:
        result = train(tiny_config.replace(iterations=1, eval_every=1))
    finally:
        os.umask(old)
    files = [p for p in Path(result.run_dir).rglob("*") if p.is_file() and "tensorboard" not in p.parts]
    assert any(p.suffix == ".safetensors" for p in files) and any(p.name == "optimizer.pt" for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def drift(keep_best: str = "reward") -> DriftMonitor:
    monitor = DriftMonitor(TrainConfig(keep_best=keep_best, warn_rho=1.1, warn_quality_drop=10.0), "eval_q")
    monitor.check(Evaluation(0, {"eval_reward": 0.0, "eval_q": 50.0, "rho_mean": 1.0}, torch.zeros(3, 1, 1)))
    return monitor


def ev(it: int, **metrics) -> Evaluation:
    return Evaluation(
        it, {"eval_reward": 1.0, "eval_q": 50.0, "rho_mean": 1.0, **metrics}, torch.zeros(3, 1, 1)
    )


@pytest.mark.parametrize("mode,key", [("reward", "eval_reward"), ("quality", "eval_q")])
def test_a_nan_score_never_becomes_best_nor_freezes_it(mode, key):
    m = drift(mode)
    assert not m.is_best(ev(1, **{key: math.nan}))
    assert m.is_best(ev(2, **{key: 1.0}))
    assert m.is_best(ev(3, **{key: 2.0}))
    restored = DriftMonitor(m.cfg, "eval_q")
    restored.load_state_dict({"base": m.base, "best": [math.nan, 1]})  # saved by an earlier version
    assert restored.is_best(ev(4, **{key: 0.5}))


def test_nan_rho_or_quality_raises_the_drift_warning():
    m = drift()
    assert any("rho is nan" in w for w in m.check(ev(1, rho_mean=math.nan)))
    assert any("eval_q is not a number" in w for w in m.check(ev(2, eval_q=math.nan)))
    assert any("eval_q is not a number" in w for w in m.check(ev(3, eval_q=None)))  # a JSON null
    assert not m.is_best(ev(4, eval_q=math.nan))
    assert m.check(ev(5)) == []
