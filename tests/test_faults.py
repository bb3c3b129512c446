"""Real runs of the built-in model under faults: SIGKILL at every write of a save (with the flushed
file cut in half, as a power cut would leave it), seeded random kills anywhere in the run, a real
full disk (tmpfs) at every write of a save, NaN rewards and NaN settings. After each fault the same
command resumes the run and ends bit-identical to the uninterrupted run; no published file holds a
non-finite value. Faults are injected from tests/faults.py, in a forked child, never in the product."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PROMPTS
from faults import WritePoints, run_forked
from safetensors.torch import load_file

from normguard.trainer import cli
from normguard.trainer.callbacks import Callback, read_metrics_rows
from normguard.trainer.checkpoint import RunDir
from normguard.trainer.config import TrainConfig
from normguard.trainer.loop import Trainer, train
from normguard.trainer.rewards import RewardSet, load_reward

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="faults are injected into a forked child")
ITERATIONS = 3


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, tiny_model_dir) -> Path:
    path = tmp_path_factory.mktemp("faults") / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": tiny_model_dir,
                "prompts": PROMPTS,
                "rewards": ["jpeg_incompressibility"],
                "method": "nft",  # it also checkpoints its old policy
                "iterations": ITERATIONS,
                "groups_per_iteration": 2,
                "group_size": 4,
                "sample_steps": 4,
                "train_timesteps": 2,
                "micro_batch_size": 4,
                "lr": 1e-3,
                "eval_every": 0,
                "eval_quality": "",
                "tensorboard": False,
                "checkpoint_every": 1,
                "device": "cpu",
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def straight(config_file, tmp_path_factory):
    """The uninterrupted run, and the write points it went through (labels, in order)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    points = WritePoints()
    with points.installed():
        assert cli.main(["train", "--config", str(config_file), "--out", str(out)]) == 0
    return out, points.points


def save_points(points: list[str], iteration: int) -> list[int]:
    """1-based indices of the write points of the save at `iteration` (LoRA, then checkpoint)."""
    prev = [
        i for i, p in enumerate(points) if p.startswith("rename") and f"iter-{iteration - 1:06d}.tmp" in p
    ]
    end = next(i for i, p in enumerate(points) if p.startswith("rename") and f"iter-{iteration:06d}.tmp" in p)
    start = prev[-1] + 2 if prev else 0  # after that save's rename and its folder's flush
    return list(range(start + 1, end + 3))


def assert_same_as_straight(out: Path, straight_out: Path) -> None:
    a, b = (
        load_file(straight_out / "normguard_lora.safetensors"),
        load_file(out / "normguard_lora.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = read_metrics_rows(straight_out / "metrics.jsonl"), read_metrics_rows(out / "metrics.jsonl")
    assert [r["iteration"] for r in rb] == list(range(1, ITERATIONS + 1))  # trimmed back: no repeats
    assert [r["reward_mean"] for r in ra] == [r["reward_mean"] for r in rb]
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not leftovers
    assert all(RunDir.load_checkpoint(c) for c in RunDir(out).checkpoints())


def resume(config_file: Path, out: Path) -> int:
    return cli.main(["train", "--config", str(config_file), "--out", str(out)])


def test_the_save_has_write_points_for_every_file(straight):
    _, points = straight
    labels = [points[i - 1] for i in save_points(points, 2)]
    for name in (
        "normguard_lora.safetensors",
        "adapter.safetensors",
        "old_policy",
        "optimizer.pt",
        "state.json",
    ):
        assert any(name in p for p in labels), name


def test_a_kill_at_each_write_of_a_save_resumes_bit_identical(config_file, straight, tmp_path, capsys):
    """SIGKILL at every flush and rename of the second save; a flushed file is first cut in half
    (what a power cut leaves of unflushed data; a plain kill leaves less damage)."""
    straight_out, points = straight
    action = "torn"
    for n in save_points(points, 2):
        out = tmp_path / f"{action}-{n}" / "run"
        assert (
            run_forked(["train", "--config", str(config_file), "--out", str(out)], WritePoints(n, action))
            == -9
        )
        capsys.readouterr()
        assert resume(config_file, out) == 0, points[n - 1]
        said = capsys.readouterr().out
        assert f"resuming {out} from iteration " in said and "(checkpoint " in said, points[n - 1]
        assert_same_as_straight(out, straight_out)


def test_seeded_random_kills_anywhere_then_resume(config_file, straight, tmp_path):
    """Up to 5 kills in a row on one run folder: at a write point or mid-iteration (sampler and
    training steps); each restart resumes where the last finished checkpoint left off."""
    straight_out, points = straight
    rng = random.Random(1234)
    out = tmp_path / "run"
    argv = ["train", "--config", str(config_file), "--out", str(out)]
    kills = 0
    for _ in range(5):
        if rng.random() < 0.5:
            code = run_forked(argv, WritePoints(rng.randint(1, len(points)), rng.choice(["kill", "torn"])))
        else:
            code = run_forked(argv, step_kill=rng.randint(1, 4 * ITERATIONS))
        if code == 0:
            break
        assert code == -9
        kills += 1
    assert kills >= 2
    assert resume(config_file, out) == 0
    assert_same_as_straight(out, straight_out)


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB filesystem (tmpfs) that the test can fill."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True)
    if r.returncode:
        pytest.skip(f"mounting a tmpfs is not allowed here: {r.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_at_each_write_of_a_save_resumes_bit_identical(config_file, straight, small_disk, capsys):
    """The disk fills up just before each write of the second save (so also just before state.json,
    the 0-byte file of the bug report); after freeing the space the same command finishes the run."""
    straight_out, points = straight
    out = small_disk / "run"
    argv = ["train", "--config", str(config_file), "--out", str(out)]
    for n in save_points(points, 2):
        with WritePoints(n, "fill", small_disk).installed():
            code = cli.main(argv)
        err = capsys.readouterr().err
        assert code == 1, points[n - 1]  # a message, not a traceback
        assert "No space left on device" in err and "run the same command again to resume" in err, err
        (small_disk / "ballast").unlink()  # "enlarge the disk"
        assert resume(config_file, out) == 0, points[n - 1]
        assert_same_as_straight(out, straight_out)
        subprocess.run(["rm", "-rf", str(out)], check=True)


class NanAt(Callback):
    """A reward that is NaN at the chosen iterations (it learns the iteration from the callbacks)."""

    def __init__(self, iterations: set[int]):
        self.nan, self.iteration = iterations, 0
        self.inner = load_reward(TrainConfig(rewards=["jpeg_incompressibility"]).rewards[0])

    def on_train_start(self, info):
        self.iteration = info["start_iteration"] + 1

    def on_iteration_end(self, iteration, metrics):
        self.iteration = iteration + 1

    def __call__(self, images, prompts, metadata=None):
        scores = self.inner(images, prompts)
        return scores * float("nan") if self.iteration in self.nan else scores


def nan_run(cfg: TrainConfig, nan_at: set[int]):
    reward = NanAt(nan_at)
    return train(cfg, rewards=RewardSet({"r": reward}, {"r": 1.0}), callbacks=[reward])


def test_a_nan_reward_skips_its_step_and_a_killed_run_still_resumes_exactly(tiny_config, tmp_path):
    cfg = tiny_config.replace(iterations=4, eval_every=0, checkpoint_every=1)
    a = nan_run(cfg.replace(out=str(tmp_path / "a")), {2})
    assert a.status == "finished"
    assert [r["skipped_step"] for r in read_metrics_rows(a.run_dir / "metrics.jsonl")] == [0, 1, 0, 0]
    out = tmp_path / "b"
    pid = os.fork()
    if pid == 0:  # killed in iteration 3, after the NaN one was checkpointed
        from faults import KillAtStep

        try:
            reward = NanAt({2})
            train(
                cfg.replace(out=str(out)),
                rewards=RewardSet({"r": reward}, {"r": 1.0}),
                callbacks=[reward, KillAtStep(2 * (cfg.sample_steps + 1) + 2)],
            )
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 9  # SIGKILL
    b = nan_run(cfg.replace(out=str(out)), {2})
    assert b.status == "finished"
    la, lb = load_file(a.lora_path), load_file(b.lora_path)
    assert all(torch.equal(la[k], lb[k]) and torch.isfinite(lb[k]).all() for k in la)


def test_a_lasting_nan_reward_stops_with_the_last_good_lora_and_a_failure_exit(tiny_config):
    result = nan_run(tiny_config.replace(iterations=10, max_nonfinite=2, eval_every=0), set(range(2, 11)))
    assert result.status.startswith("stopped: 2 non-finite steps")
    lora = load_file(result.lora_path)
    assert all(torch.isfinite(v).all() for v in lora.values())
    for line in (result.run_dir / "metrics.jsonl").read_text().splitlines():  # strict JSON: no bare NaN
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


def test_a_nan_clip_setting_never_reaches_the_weights(tiny_config):
    """The clip factor of a NaN grad_clip makes every gradient NaN while their norm is finite: the step
    is skipped (the check looks at the clipped gradients), the LoRA stays finite, the run stops."""
    trainer = Trainer(tiny_config.replace(iterations=5, max_nonfinite=2, eval_every=0))
    trainer.cfg.grad_clip = float("nan")  # what an unchecked setting would do
    result = trainer.run()
    assert result.status.startswith("stopped: 2 non-finite steps")
    assert all(torch.isfinite(v).all() for v in load_file(result.lora_path).values())


class PoisonWeights(Callback):
    """Turns the LoRA weights NaN during the chosen iteration's training (a stand-in for any cause)."""

    def __init__(self, trainer_ref: list, iteration: int):
        self.ref, self.iteration, self.current = trainer_ref, iteration, 0

    def on_iteration_end(self, iteration, metrics):
        self.current = iteration

    def on_train_step(self, step, total):
        if self.current + 1 == self.iteration:
            with torch.no_grad():
                next(iter(self.ref[0].named.values())).fill_(float("nan"))


def test_non_finite_weights_are_never_saved_and_the_run_fails(tiny_config, tmp_path):
    ref: list = []
    trainer = Trainer(tiny_config.replace(iterations=4, eval_every=0), callbacks=[PoisonWeights(ref, 3)])
    ref.append(trainer)
    result = trainer.run()
    assert result.status.startswith("failed: the LoRA weights became non-finite at iteration 3")
    assert result.iterations == 2
    good = train(tiny_config.replace(iterations=2, eval_every=0, out=str(tmp_path / "two")))
    la, lb = load_file(good.lora_path), load_file(result.lora_path)
    assert all(torch.equal(la[k], lb[k]) for k in la)  # the last good LoRA, kept
    assert [c.name for c in RunDir(result.run_dir).checkpoints()][-1] == "iter-000002"
