"""Held-out evaluation: fixed seeds, grids, quality monitors, drift warnings, best LoRA, init_lora."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from normguard.trainer.callbacks import Callback
from normguard.trainer.evaluation import DriftMonitor, Evaluation, image_grid
from normguard.trainer.loop import Trainer, train
from normguard.trainer.lora import normguard_facts, read_lora_metadata


def rows(run_dir) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_evaluations_use_the_same_prompts_and_seeds_every_time(tiny_config):
    trainer = Trainer(tiny_config.replace(eval_every=2, eval_samples=3))
    a, b = trainer.evaluator(0), trainer.evaluator(7)
    assert torch.equal(a.grid, b.grid)  # the same policy and the same noise: the same images
    assert a.grid.shape == (3, 2 * 18 + 2, 3 * 18 + 2)  # rows: full steps, few steps; a column per sample
    result = trainer.run()
    grids = sorted((Path(result.run_dir) / "evals").glob("iter-*.png"))
    assert [g.name for g in grids] == ["iter-000000.png", "iter-000002.png"]
    assert np.array_equal(png(grids[0]), (a.grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert not np.array_equal(png(grids[0]), png(grids[1]))  # training changed the policy's samples


def test_evaluation_logs_rho_per_step_and_the_monitors(tiny_config):
    cfg = tiny_config.replace(
        eval_every=1, iterations=2, monitor_rewards=["jpeg_compressibility"], eval_few_steps=2
    )
    result = train(cfg)
    log = rows(result.run_dir)
    assert [r["iteration"] for r in log] == [0, 1, 2]
    for r in log:
        assert len(r["rho_per_step"]) == cfg.sample_steps and r["rho_mean"] > 0
        for key in (
            "eval_reward",
            "eval_reward_few",
            "eval_jpeg_compressibility",
            "eval_jpeg_compressibility_few",
        ):
            assert key in r, key
    assert log[0]["rho_mean"] == pytest.approx(1.0, abs=1e-6)  # the untrained adapter is the reference


def test_brisque_is_the_default_quality_score(tiny_config):
    pytest.importorskip("brisque", reason="the iqa extra is not installed")
    result = train(tiny_config.replace(eval_quality="brisque", iterations=1, eval_every=1))
    assert all("eval_brisque" in r for r in rows(result.run_dir))


def _ev(it, rho=1.0, quality=-20.0, reward=1.0):
    return Evaluation(it, {"rho_mean": rho, "eval_q": quality, "eval_reward": reward}, torch.zeros(3, 2, 2))


def test_drift_monitor_warns_on_rho_and_quality_and_keeps_the_best(tiny_config):
    cfg = tiny_config.replace(warn_rho=1.1, warn_quality_drop=5.0, keep_best="reward")
    mon = DriftMonitor(cfg, "eval_q")
    assert mon.check(_ev(0)) == [] and mon.base["eval_q"] == -20.0
    assert mon.check(_ev(2, rho=1.05, quality=-24.0)) == []
    warnings = mon.check(_ev(4, rho=1.2, quality=-26.0))
    assert len(warnings) == 2 and "rho 1.200 > warn_rho 1.1" in warnings[0] and "fell 6.00" in warnings[1]
    assert mon.is_best(_ev(2, reward=1.5, quality=-24.0))
    assert not mon.is_best(_ev(4, reward=3.0, quality=-26.0))  # more reward, but the quality fell too far
    assert not mon.is_best(_ev(6, reward=1.4, quality=-20.0))
    assert mon.best == (1.5, 2)
    restored = DriftMonitor(cfg, "eval_q")
    restored.load_state_dict(json.loads(json.dumps(mon.state_dict())))
    assert restored.best == (1.5, 2) and restored.base == mon.base


def test_stop_on_warning_stops_and_keeps_the_best_lora(tiny_config):
    cfg = tiny_config.replace(iterations=6, eval_every=2, warn_rho=0.0, stop_on_warning=True)
    result = train(cfg)
    assert result.status.startswith("stopped: iteration 2: rho") and result.iterations == 2
    best = Path(cfg.out) / "normguard_lora_best.safetensors"
    assert best.is_file() and normguard_facts(read_lora_metadata(best))["best_iteration"] == 2
    assert result.lora_path.is_file()


def test_continuing_from_a_lora_starts_from_its_weights(tiny_config, tmp_path):
    first = train(tiny_config.replace(iterations=2, eval_every=2, out=str(tmp_path / "a")))
    cfg = tiny_config.replace(
        init_lora=str(first.lora_path), iterations=1, eval_every=1, out=str(tmp_path / "b")
    )
    second = Trainer(cfg)
    exported = load_file(first.lora_path)
    assert all(torch.equal(v, exported[k]) for k, v in second.backend.lora_state_dict().items())
    second.run()
    # its first evaluation equals the LoRA's own samples (the last evaluation of the run that made it)
    assert np.array_equal(
        png(tmp_path / "b" / "evals" / "iter-000000.png"), png(tmp_path / "a" / "evals" / "iter-000002.png")
    )
    assert (
        normguard_facts(read_lora_metadata(second.run_dir.lora_path("normguard_lora")))["init_lora"]
        == first.lora_path.name
    )


def test_a_lora_of_another_rank_is_refused(tiny_config, tmp_path):
    first = train(tiny_config.replace(iterations=1, lora_rank=4, out=str(tmp_path / "a")))
    with pytest.raises(ValueError, match="lora_rank"):
        Trainer(tiny_config.replace(init_lora=str(first.lora_path), lora_rank=8, out=str(tmp_path / "b")))


def test_image_grid_layout():
    a, b = torch.zeros(2, 3, 4, 5), torch.ones(2, 3, 4, 5)
    g = image_grid([a, b], pad=1)
    assert g.shape == (3, 2 * 5 + 1, 2 * 6 + 1)
    assert g[:, 1:5, 1:6].max() == 0 and g[:, 6:10, 1:6].min() == 1


class Saturation:
    """Pays for colourfulness (max - min channel): a reward that invites velocity-norm inflation."""

    def __call__(self, images, prompts, metadata=None):
        return (images.amax(1) - images.amin(1)).flatten(1).mean(1)


@pytest.mark.parametrize("weight,warns", [(0.0, True), (5.0, False)])
def test_an_unstable_run_warns_and_the_same_run_with_normguard_does_not(tmp_path, weight, warns):
    """The shipped model, a saturation reward and a high learning rate: unguarded, rho climbs past
    warn_rho; with NormGuard it stays below 1 while the reward still rises."""
    from normguard.trainer.config import TrainConfig
    from normguard.trainer.rewards import RewardSet

    cfg = TrainConfig(
        model="builtin",
        prompts=[
            "a red circle",
            "a blue square on the left",
            "a large green ring",
            "a small yellow triangle at the top",
        ],
        rewards=["jpeg_incompressibility"],
        method="nft",
        iterations=16,
        group_size=4,
        groups_per_iteration=2,
        sample_steps=6,
        train_timesteps=2,
        lr=1e-2,
        normguard_weight=weight,
        eval_every=8,
        eval_samples=4,
        eval_few_steps=0,
        eval_quality="",
        warn_rho=1.02,
        keep_best="none",
        tensorboard=False,
        out=str(tmp_path / "run"),
    )
    seen = []

    class Warnings(Callback):
        def on_evaluation(self, evaluation):
            seen.extend(evaluation.warnings)

    train(cfg, rewards=RewardSet({"saturation": Saturation()}, {"saturation": 1.0}), callbacks=[Warnings()])
    log = rows(tmp_path / "run")
    assert log[-1]["eval_reward"] > log[0]["eval_reward"] + 0.1  # both runs raise the reward
    assert bool(seen) == warns, seen
    if warns:
        assert "rho" in seen[0] and "warn_rho 1.02" in seen[0]
