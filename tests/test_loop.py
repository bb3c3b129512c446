"""The RL loop on a tiny real model: every method trains, resume is exact, bad input is named."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from normguard.trainer.backends.tinyflow import TinyFlowBackend
from normguard.trainer.callbacks import Callback
from normguard.trainer.checkpoint import RunDirError
from normguard.trainer.loop import Trainer, TrainState, train
from normguard.trainer.lora import normguard_facts, read_lora_metadata
from normguard.trainer.rewards import RewardSet


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["nft", "awm", "dpo", "grpo"])
def test_each_method_trains_a_lora(tiny_config, method):
    cfg = tiny_config.replace(
        method=method,
        cfg_scale=2.0 if method == "grpo" else 1.0,
        kl_weight=0.01 if method in ("grpo", "awm") else 0.0,
    )
    result = train(cfg)
    assert result.status == "finished" and result.iterations == 2
    lora = load_file(result.lora_path)
    assert lora and all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in lora)
    assert max(v.abs().max().item() for k, v in lora.items() if "lora_B" in k) > 0  # trained away from B = 0
    facts = normguard_facts(read_lora_metadata(result.lora_path))
    assert facts["method"] == method and facts["weight"] == cfg.normguard_weight and facts["iterations"] == 2
    assert facts["reward"] == [{"name": "jpeg_incompressibility", "weight": 1.0}]
    rows = metrics(result.run_dir)
    assert [r["iteration"] for r in rows] == [0, 1, 2]  # 0: the base model's evaluation
    assert rows[0]["rho_mean"] == pytest.approx(1.0) and "eval_reward_few" in rows[0]
    for key in (
        "reward_mean",
        "reward_std",
        "loss",
        "loss_base",
        "penalty",
        "train_rho",
        "hinge_active",
        "grad_norm",
    ):
        assert key in rows[-1], key
    assert len(rows[-1]["rho_per_step"]) == cfg.sample_steps


class CountingBackend(TinyFlowBackend):
    """The real tiny backend, counting reference and gradient passes."""

    refs = grads = 0

    def reference(self):
        CountingBackend.refs += 1
        return super().reference()

    def velocity(self, x, sigma, cond):
        CountingBackend.grads += torch.is_grad_enabled()
        return super().velocity(x, sigma, cond)


@pytest.mark.parametrize(
    "method,weight,refs_per_pass", [("dpo", 1.0, 1), ("awm", 0.0, 0), ("awm", 1.0, 1), ("nft", 1.0, 1)]
)
def test_one_reference_pass_per_trained_batch_at_most(
    tiny_config, tiny_model_dir, method, weight, refs_per_pass
):
    cfg = tiny_config.replace(method=method, normguard_weight=weight, iterations=1, eval_every=0)
    backend = CountingBackend.from_pretrained(tiny_model_dir)
    CountingBackend.refs = CountingBackend.grads = 0
    train(cfg, backend=backend)
    assert CountingBackend.grads > 0
    assert CountingBackend.refs == refs_per_pass * CountingBackend.grads


def test_resume_continues_exactly(tiny_config, tmp_path):
    base = tiny_config.replace(method="nft", iterations=4, checkpoint_every=2)
    straight = train(base.replace(out=str(tmp_path / "a")))
    first = train(base.replace(out=str(tmp_path / "b"), iterations=2))
    assert first.iterations == 2
    resumed = train(base.replace(out=str(tmp_path / "b")))
    assert resumed.iterations == 4
    a, b = metrics(straight.run_dir), metrics(resumed.run_dir)
    assert len(b) == 5  # appended, not rewritten (the base model's evaluation is not repeated)
    for ra, rb in zip(a[1:], b[1:], strict=True):
        for k in ("reward_mean", "loss", "penalty", "grad_norm", "train_rho"):
            assert ra[k] == rb[k], (ra["iteration"], k)
    la, lb = load_file(straight.lora_path), load_file(resumed.lora_path)
    assert all(torch.equal(la[k], lb[k]) for k in la)
    # state.json keeps its format (checkpoints of earlier versions resume): the counters and drift
    state = json.loads(
        (sorted((resumed.run_dir / "checkpoints").glob("iter-*"))[-1] / "state.json").read_text()
    )
    assert set(state) == {"iteration", "optimizer_steps", "nonfinite_streak", "nonfinite_total", "drift"}
    assert state["iteration"] == state["optimizer_steps"] == 4
    assert TrainState.from_json(state).to_json() == state


class StopAt(Callback):
    def __init__(self, iteration):
        self.iteration = iteration

    def on_iteration_end(self, iteration, metrics):
        if iteration == self.iteration:
            raise KeyboardInterrupt


def test_interrupted_run_keeps_its_lora_and_resumes(tiny_config, tmp_path):
    cfg = tiny_config.replace(iterations=4, checkpoint_every=10, out=str(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StopAt(3)])
    lora = Path(cfg.out) / "normguard_lora.safetensors"
    assert lora.is_file() and normguard_facts(read_lora_metadata(lora))["iterations"] == 3
    resumed = train(cfg)
    assert resumed.iterations == 4 and [r["iteration"] for r in metrics(cfg.out)] == [0, 1, 2, 3, 4]
    straight = train(cfg.replace(out=str(tmp_path / "straight")))
    a, b = load_file(straight.lora_path), load_file(resumed.lora_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


class NanReward:
    def __call__(self, images, prompts, metadata=None):
        return torch.full((images.shape[0],), float("nan"))


def test_non_finite_steps_are_skipped_then_training_stops_with_the_last_good_lora(tiny_config):
    cfg = tiny_config.replace(iterations=10, max_nonfinite=3, eval_every=0)
    result = train(cfg, rewards=RewardSet({"nan": NanReward()}, {"nan": 1.0}))
    assert result.status.startswith("stopped: 3 non-finite steps")
    assert result.iterations == 3
    rows = metrics(result.run_dir)
    assert [r["skipped_step"] for r in rows if r["iteration"]] == [1, 1, 1]
    lora = load_file(result.lora_path)
    assert all(torch.isfinite(v).all() for v in lora.values())
    assert all(v.abs().max() == 0 for k, v in lora.items() if "lora_B" in k)  # never stepped


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(prompts=[]), "no prompts"),
        (dict(prompts=["  ", ""]), "no prompts"),
        (dict(group_size=1), "group_size must be an integer from 2 to 256"),
        (dict(rewards=["no_such_reward"]), "unknown reward 'no_such_reward'"),
        (dict(rewards=[]), "no reward"),
        (dict(method="ppo"), "method must be one of"),
        (dict(prompts_file="/nonexistent/prompts.txt"), "prompts_file /nonexistent/prompts.txt"),
        (dict(groups_per_iteration=3, normguard_form="cubic"), "normguard_form"),
        (dict(lora_name="../evil"), "lora_name"),
    ],
)
def test_bad_config_is_refused_naming_the_input(tiny_config, change, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        train(tiny_config.replace(**change))


def test_unwritable_output_folder_is_refused(tiny_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="not writable"):
        train(tiny_config.replace(out=str(blocker / "run")))


def test_unknown_model_is_refused(tiny_config, tmp_path):
    with pytest.raises((ValueError, FileNotFoundError), match="model_index.json|not a"):
        Trainer(tiny_config.replace(model=str(tmp_path)))


def test_existing_run_with_other_config_is_refused_and_new_run_starts_beside_it(tiny_config):
    train(tiny_config.replace(iterations=1))
    with pytest.raises(RunDirError, match="lr: saved 0.001, now 0.01"):
        train(tiny_config.replace(lr=0.01))
    fresh = train(tiny_config.replace(lr=0.01, iterations=1), new_run=True)
    assert fresh.run_dir == Path(tiny_config.out) / "run-001"
    assert (Path(tiny_config.out) / "normguard_lora.safetensors").is_file()  # the first run is untouched


def test_non_run_folder_is_not_used(tiny_config, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user data")
    with pytest.raises(RunDirError, match="is not a NormGuard run"):
        train(tiny_config.replace(out=str(tmp_path / "mine")))


def test_metrics_reach_tensorboard(tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tiny_config.replace(tensorboard=True))
    acc = EventAccumulator(str(Path(result.run_dir) / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("reward_mean", "penalty", "train_rho", "hinge_active", "rho_mean", "rho_step/00"):
        assert tag in tags, tag
    assert [e.step for e in acc.Scalars("reward_mean")] == [1, 2]
