"""TrainConfig's declarations: every key's type, choices and range are checked by validate(), and old
key names still load."""

import dataclasses
import math

import pytest
import yaml

from normguard.trainer.checkpoint import CONFIG_FILE, RunDir, config_differences
from normguard.trainer.config import KEY_ALIASES, TrainConfig
from normguard.trainer.settings import key_types, spec

BASE = TrainConfig(prompts=["a red circle"], rewards=["contrast"])
NUMERIC = [n for n, k in key_types(TrainConfig).items() if k.base in (int, float) and not k.is_list]
FLOATS = [n for n in NUMERIC if key_types(TrainConfig)[n].base is float]


def test_every_key_is_declared_and_the_defaults_pass():
    BASE.validate()
    for f in dataclasses.fields(TrainConfig):
        s = spec(TrainConfig, f.name)
        assert s.help, f.name
        if f.name in NUMERIC:
            assert s.min is not None or s.above is not None, f"{f.name} has no lower bound"
            assert s.max is not None or s.below is not None, f"{f.name} has no upper bound"
        if s.choices is not None and f.default is not dataclasses.MISSING:
            assert f.default in s.choices, f.name


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_refuses_nan_and_inf(name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number"):
        BASE.replace(**{name: value}).validate()


@pytest.mark.parametrize("name", NUMERIC)
def test_every_number_is_bounded_where_declared(name):
    s, kind = spec(TrainConfig, name), key_types(TrainConfig)[name]
    base = (
        BASE.replace(normguard_form="squared") if name == "normguard_margin" else BASE
    )  # 'paper': no margin
    tiny = 1 if kind.base is int else 1e-9
    outside = [s.min - tiny if s.min is not None else s.above]
    outside.append(s.max + max(tiny, abs(s.max) * 1e-6) if s.max is not None else s.below)
    for value in outside:
        with pytest.raises(ValueError, match=rf"^{name} must be"):
            base.replace(**{name: kind.base(value)}).validate()
    for value in (s.max, s.min):  # the inclusive bounds themselves are allowed
        if value is not None:
            base.replace(**{name: kind.base(value)}).validate()


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"grad_clip": 0.0}, "grad_clip must be a finite number > 0"),
        ({"keep_checkpoints": 0}, "keep_checkpoints must be an integer from 1"),
        ({"decode_batch_size": 0}, "decode_batch_size must be an integer from 1"),
        ({"iterations": 0}, "iterations must be an integer from 1"),
        ({"groups_per_iteration": 1_000_000}, "groups_per_iteration must be an integer from 1 to 1024"),
        ({"eval_prompts": "a cat"}, "eval_prompts must be a list of strings, got 'a cat'"),
        ({"eval_prompts": ["a cat", 3]}, "eval_prompts must be a list of strings"),
        ({"prompts": "a cat"}, "prompts must be a list of strings"),
        ({"lora_targets": "to_q"}, "lora_targets must be a list of strings"),
        ({"iterations": 10.0}, "iterations must be an integer"),
        ({"iterations": True}, "iterations must be an integer"),
        ({"tensorboard": "yes"}, "tensorboard must be true or false"),
        ({"method": "ppo"}, "method must be one of 'nft', 'awm', 'dpo', 'grpo', got 'ppo'"),
        ({"lr": "fast"}, "lr must be a finite number"),
        ({"model": 3}, "model must be a string"),
        ({"eval_quality": "nope"}, "eval_quality must be '' or a reward id"),
        ({"rewards": [{"name": "contrast", "weight": math.nan}]}, "a reward weight must be a finite number"),
        ({"method": "dpo", "micro_batch_size": 1}, "micro_batch_size must be >= 2 for dpo"),
    ],
)
def test_bad_values_are_refused_naming_the_key(changes, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        BASE.replace(**changes).validate()


def test_a_yaml_number_without_a_dot_is_still_a_number(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-4\ngrad_clip: 2\nprompts: [a]\nrewards: [contrast]\n", encoding="utf-8")
    assert yaml.safe_load(path.read_text())["lr"] == "1e-4"  # YAML 1.1 reads it as text
    cfg = TrainConfig.from_yaml(path)
    cfg.validate()
    assert cfg.lr == 1e-4 and isinstance(cfg.grad_clip, float)
    path.write_text("grad_clip: .nan\nprompts: [a]\nrewards: [contrast]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="^grad_clip must be a finite number"):
        TrainConfig.from_yaml(path).validate()


def test_the_old_key_cfg_still_loads(tmp_path):
    assert KEY_ALIASES == {"cfg": "cfg_scale"}
    path = tmp_path / "old.yaml"
    path.write_text("cfg: 2.5\nprompts: [a]\nrewards: [contrast]\n", encoding="utf-8")
    assert TrainConfig.from_yaml(path).cfg_scale == 2.5
    assert TrainConfig.from_dict({"cfg": 3}).cfg_scale == 3.0
    with pytest.raises(ValueError, match="'cfg' is the old name of 'cfg_scale'"):
        TrainConfig.from_dict({"cfg": 3, "cfg_scale": 3})


def test_a_run_saved_with_the_old_key_resumes(tmp_path):
    cfg = BASE.replace(cfg_scale=2.0, out=str(tmp_path / "run"))
    old = cfg.to_dict()
    old["cfg"] = old.pop("cfg_scale")
    assert config_differences(old, cfg.to_dict()) == []
    assert config_differences(old, cfg.replace(cfg_scale=3.0).to_dict()) == ["cfg_scale: saved 2.0, now 3.0"]
    root = tmp_path / "run"
    root.mkdir()
    (root / CONFIG_FILE).write_text(yaml.safe_dump(old), encoding="utf-8")
    assert RunDir.open(root, cfg).root == root  # resumed, not refused
