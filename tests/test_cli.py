"""The `normguard` command as a user runs it (a real subprocess)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PROMPTS
from safetensors.torch import load_file

EXE = shutil.which("normguard") or str(Path(sys.executable).with_name("normguard"))


def run_cli(*args, cwd=None):
    return subprocess.run(
        [EXE, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture
def config_file(tmp_path, tiny_model_dir):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": tiny_model_dir,
                "prompts": PROMPTS[:2],
                "rewards": [{"name": "jpeg_compressibility", "weight": 2.0}],
                "iterations": 2,
                "groups_per_iteration": 2,
                "group_size": 4,
                "sample_steps": 4,
                "train_timesteps": 2,
                "eval_every": 0,
                "tensorboard": False,
                "device": "cpu",
            }
        )
    )
    return path


def test_train_with_config_and_flag_overrides(config_file, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my prompts\nred circle\n\nblue square left\n", encoding="utf-8")
    out = tmp_path / "out"
    r = run_cli(
        "train",
        "--config",
        config_file,
        "--method",
        "dpo",
        "--normguard-weight",
        "0",
        "--steps",
        "3",
        "--prompts",
        prompts,
        "--reward",
        "jpeg_incompressibility=0.5",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"] == "dpo" and saved["normguard_weight"] == 0 and saved["iterations"] == 3
    assert saved["rewards"] == [
        {"name": "jpeg_incompressibility", "weight": 0.5, "path": None, "device": None, "options": {}}
    ]
    assert saved["prompts_file"] == str(prompts)
    lora = out / "normguard_lora.safetensors"
    assert lora.is_file() and str(lora) in r.stdout and load_file(lora)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["penalty"] == 0 for r in rows)
    assert "dpo RL" in r.stderr  # the tqdm progress bar


def test_print_config_shows_the_resolved_values(config_file):
    r = run_cli(
        "train", "--config", config_file, "--lora-rank", "8", "--no-normguard-relative", "--print-config"
    )
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert cfg["lora_rank"] == 8 and cfg["normguard_relative"] is False
    assert cfg["rewards"][0]["name"] == "jpeg_compressibility" and cfg["rewards"][0]["weight"] == 2.0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--reward", "nope"], "unknown reward 'nope'"),
        (["--group-size", "1"], "group_size must be an integer from 2 to 256, got 1"),
        (["--method", "ppo"], "argument --method: invalid choice: 'ppo'"),
        (["--grad-clip", "nan"], "grad_clip must be a finite number > 0"),
        (["--steps", "0"], "iterations must be an integer from 1"),
        (["--keep-checkpoints", "0"], "keep_checkpoints must be an integer from 1"),
        (["--groups-per-iteration", "1000000"], "groups_per_iteration must be an integer from 1 to 1024"),
        (["--reward-path", "pickscore", "C:/weights,x"], "--reward-path pickscore: no reward named"),
        (["--reward", "jpeg_compressibility=heavy"], "weight after '=' must be a number"),
        (["--prompts", "/no/such/prompts.txt"], "prompts_file /no/such/prompts.txt does not exist"),
    ],
)
def test_bad_input_exits_with_a_clear_message(config_file, tmp_path, args, message):
    r = run_cli("train", "--config", config_file, "--out", tmp_path / "o", *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_old_key_cfg_loads_from_yaml_and_as_a_flag(config_file, tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(config_file.read_text() + "cfg: 2.5\n")
    r = run_cli("train", "--config", old, "--print-config")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["cfg_scale"] == 2.5
    r = run_cli("train", "--config", config_file, "--cfg", "3", "--print-config")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["cfg_scale"] == 3.0


def test_missing_config_file(tmp_path):
    r = run_cli("train", "--config", tmp_path / "none.yaml")
    assert r.returncode == 2 and "none.yaml does not exist" in r.stderr


def test_rewards_lists_the_builtin_rewards():
    r = run_cli("rewards")
    assert r.returncode == 0 and "jpeg_compressibility" in r.stdout


def test_reward_paths_and_options_are_never_parsed_out_of_one_string(config_file):
    r = run_cli(
        "train",
        "--config",
        config_file,
        "--reward",
        "aesthetic=0.5",
        "--reward-path",
        "aesthetic",
        "C:/models/clip,l:14",
        "--reward-option",
        "aesthetic",
        "head",
        "D:/heads/a,b.pth",
        "--reward-option",
        "aesthetic",
        "batch_size",
        "8",
        "--monitor-reward",
        "jpeg_compressibility",
        "--print-config",
    )
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert cfg["rewards"] == [
        {
            "name": "aesthetic",
            "weight": 0.5,
            "path": "C:/models/clip,l:14",
            "device": None,
            "options": {"head": "D:/heads/a,b.pth", "batch_size": 8},
        }
    ]
    assert cfg["monitor_rewards"][0]["name"] == "jpeg_compressibility"
