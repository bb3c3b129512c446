"""The scene rewards, the judge-based evaluation and `normguard demo` end to end (tiny settings)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from normguard.trainer.backends.tinyflow import TinyFlowBackend
from normguard.trainer.cli import build_parser, main
from normguard.trainer.demo import DemoSettings, arm_config, run_demo
from normguard.trainer.models.scenes import parse_prompt, render_batch
from normguard.trainer.report import findings, read_metrics, running_mean
from normguard.trainer.rewards import RewardSpec, build_rewards, load_reward
from normguard.trainer.rewards.scene import object_centroid, target_position
from normguard.trainer.scene_eval import EvalSet, SceneJudge, evaluate_policy

SCENE = {"size": "small", "colour": "red", "shape": "circle", "light": "dark", "tone": "cool"}
TINY = DemoSettings(
    iterations=2,
    group_size=2,
    groups_per_iteration=1,
    sample_steps=2,
    few_steps=1,
    train_timesteps=1,
    train_prompts=2,
    eval_every=1,
    eval_samples=2,
    final_samples=4,
)


def _untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in rows]


def _scenes(position: str, n: int = 8) -> torch.Tensor:
    scenes = [{**SCENE, "position": position}] * n
    return torch.from_numpy(render_batch(scenes, np.random.default_rng(0)))


def test_saturation_and_contrast_pay_for_magnitude_position_does_not():
    images = _scenes("left")
    prompts = ["a small red circle on the left"] * 8
    rewards = build_rewards([RewardSpec("saturation"), RewardSpec("contrast"), RewardSpec("position")])
    before = rewards.score(images, prompts)
    # push every pixel away from the image's mean colour: more magnitude, same layout
    mean = images.mean(dim=(2, 3), keepdim=True)
    after = rewards.score((mean + 1.5 * (images - mean)).clamp(0, 1), prompts)
    assert torch.all(after["saturation"] > before["saturation"] + 0.02)
    assert torch.all(after["contrast"] > before["contrast"] + 0.01)
    assert torch.allclose(after["position"], before["position"], atol=0.02)
    grey = torch.full((2, 3, 32, 32), 0.5)
    assert torch.allclose(load_reward(RewardSpec("saturation"))(grey, ["a", "b"]), torch.zeros(2))
    assert torch.allclose(load_reward(RewardSpec("contrast"))(grey, ["a", "b"]), torch.zeros(2), atol=1e-6)


def test_position_finds_the_object_where_the_prompt_asks_for_it():
    position = load_reward(RewardSpec("position"))
    left, right = _scenes("left"), _scenes("right")
    on_left = ["a small red circle on the left"] * 8
    assert torch.all(position(left, on_left) > -0.07)  # within ~2 px of 32 (the scenes jitter 1.5 px)
    assert torch.all(position(right, on_left) < -0.4)
    cx = object_centroid(left)[:, 0]
    assert torch.all(cx < 0.35) and torch.all(object_centroid(right)[:, 0] > 0.65)
    assert target_position("a large blue square") == (0.5, 0.5)
    assert target_position("a small blue square at the top")[1] < 0.5
    flat = torch.full((1, 3, 32, 32), 0.3)  # nothing stands out: the centroid is the centre
    assert torch.allclose(object_centroid(flat), torch.tensor([[0.5, 0.5]]))


def test_rewards_reject_bad_images_and_options():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        load_reward(RewardSpec("saturation"))(torch.zeros(2, 32, 32), ["a", "b"])
    with pytest.raises(ValueError, match="no option"):
        load_reward(RewardSpec("position", options={"sigma": 1}))


def test_scene_judge_sees_real_scenes_and_misses_noise():
    judge = SceneJudge()
    images = _scenes("left")
    prompts = ["a small red circle on the left, dark cool background"] * 8
    assert judge.accuracy(images, prompts) > 0.9
    noise = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert judge.accuracy(noise, prompts) < 0.7
    monitor = load_reward(RewardSpec("scene_judge"))
    assert monitor(images, prompts).min() > 0.8
    # a 64 px image of the same scenes is resized for the judge
    big = torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")
    assert judge.accuracy(big, prompts) > 0.9


def test_evaluation_of_the_base_model_is_reproducible_and_unit_rho():
    torch.manual_seed(0)
    backend = TinyFlowBackend.from_pretrained()
    evalset = EvalSet.for_backend(backend, 4, seed=3)
    rewards, judge = build_rewards([RewardSpec("saturation")]), SceneJudge()
    a, images = evaluate_policy(backend, evalset, 2, rewards, judge)
    b, _ = evaluate_policy(backend, evalset, 2, rewards, judge, batch_size=3)
    assert a["rho_per_step"] == pytest.approx([1.0, 1.0]) and a["reward"] == pytest.approx(
        b["reward"], abs=1e-6
    )
    assert images.shape == (4, 3, 32, 32) and 0 <= a["accuracy"] <= 1 and math.isfinite(a["frechet"])
    assert a["reward"] == pytest.approx(a["chroma"], abs=1e-6)  # saturation is the mean chroma


def test_arms_differ_only_in_the_penalty(tmp_path):
    off, on = (arm_config(tmp_path, TINY, arm).to_dict() for arm in ("unguarded", "normguard"))
    differ = {k for k in off if off[k] != on[k]}
    assert differ == {"normguard_weight", "out", "lora_name"}
    assert off["normguard_weight"] == 0 and on["normguard_weight"] > 0


@pytest.mark.slow
def test_demo_end_to_end_same_numbers_in_one_or_two_processes(tmp_path):
    one = run_demo(tmp_path / "one", TINY, jobs=1, progress=False)
    two = run_demo(tmp_path / "two", TINY, jobs=2, progress=False)
    s1, s2 = (json.loads((p.parent / "summary.json").read_text()) for p in (one, two))
    assert s1["final"] == s2["final"]  # deterministic: scheduling does not change a number
    for arm in ("unguarded", "normguard"):
        rows = read_metrics(tmp_path / "one" / arm)
        assert _untimed(rows) == _untimed(read_metrics(tmp_path / "two" / arm))
        assert [r["iteration"] for r in rows] == [0, 1, 2]
        assert "rho_per_step" in rows[-1] and "eval_scene_judge_few" in rows[-1]
        lora = load_file(str(tmp_path / "one" / arm / f"demo_{arm}.safetensors"))
        assert lora and all(torch.isfinite(t).all() for t in lora.values())
    assert s1["final"]["base"]["full"]["rho_mean"] == pytest.approx(1.0)
    assert s1["wall_seconds"] > 0 and s1["cpu_seconds"] > 0
    report = one.read_text()
    for plot in ("reward", "rho", "judge_accuracy", "samples_full", "samples_few"):
        path = tmp_path / "one" / "plots" / f"{plot}.png"
        assert path.stat().st_size > 5000 and f"plots/{plot}.png" in report
    # the table and the findings carry the run's own numbers
    assert f"{s1['final']['unguarded']['full']['reward']:.4f}" in report
    for line in findings(s1["final"]):
        assert line in report
    assert "demo_normguard.safetensors" in report and "demo_unguarded.safetensors" in report
    # the trainer's evaluation grids at the start and the end of each run are shown
    for arm in ("unguarded", "normguard"):
        for it in (0, 2):
            grid = f"{arm}/evals/iter-{it:06d}.png"
            assert (tmp_path / "one" / grid).is_file() and f"]({grid})" in report


def test_findings_say_what_the_numbers_say():
    def m(reward, rho, acc, fd):
        entry = {
            "reward": reward,
            "accuracy": acc,
            "frechet": fd,
            "rho_mean": rho,
            "rho_per_step": [rho, rho],
        }
        return {"full": entry, "few": dict(entry)}

    text = " ".join(
        findings(
            {
                "base": m(0.2, 1.0, 0.9, 5.0),
                "unguarded": m(0.6, 1.1, 0.5, 50.0),
                "normguard": m(0.4, 1.0, 0.8, 20.0),
            }
        )
    )
    assert "kept 50% of the unguarded gain" in text and "are closer to the data" in text
    text = " ".join(
        findings(
            {
                "base": m(0.2, 1.0, 0.9, 5.0),
                "unguarded": m(0.6, 1.1, 0.5, 50.0),
                "normguard": m(0.4, 1.0, 0.4, 60.0),
            }
        )
    )
    assert "no closer to the data" in text
    assert running_mean([1, 2, 3, 4], 2).tolist() == [1, 1.5, 2.5, 3.5]


def test_demo_cli_flags_and_a_clear_error_for_a_bad_out(tmp_path, capsys):
    args = build_parser().parse_args(["demo", "--out", "x", "--iterations", "3", "--jobs", "1"])
    assert (args.out, args.iterations, args.jobs) == ("x", 3, 1)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="is a file"):
        run_demo(blocker, TINY, jobs=1, progress=False)
    taken = tmp_path / "taken" / "unguarded"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("someone else's")
    assert main(["demo", "--out", str(tmp_path / "taken"), "--iterations", "1", "--jobs", "1"]) == 2
    assert "not a NormGuard run" in capsys.readouterr().err


def test_a_centring_demo_trains_on_prompts_that_leave_the_position_to_the_reward(tmp_path):
    cfg = arm_config(tmp_path, DemoSettings(reward="centring"), "normguard")
    assert cfg.rewards[0].name == "centring" and len(cfg.prompts) == 32
    assert all("position" not in parse_prompt(p) for p in [*cfg.prompts, *cfg.eval_prompts])
    assert any("position" in parse_prompt(p) for p in arm_config(tmp_path, TINY, "normguard").prompts)
