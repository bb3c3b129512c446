"""The CLI under nonsense numbers and failed starts: every bad value is refused before a model loads,
naming its key (exit 2, nothing written); a start that failed does not block its --out folder."""

from __future__ import annotations

import pytest
import test_cli
import yaml

from normguard.trainer import cli

config_file = test_cli.config_file  # the CLI tests' tiny run config (a fixture)


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--grad-clip", "nan"),  # wrote a NaN LoRA and could exit 0 with "finished"
        ("--grad-clip", "0"),
        ("--grad-clip", "-1"),
        ("--lr", "inf"),
        ("--normguard-weight", "nan"),
        ("--keep-checkpoints", "0"),  # kept every checkpoint ([:-0] is empty)
        ("--decode-batch-size", "0"),
        ("--steps", "0"),  # silently wrote an untrained LoRA
        ("--groups-per-iteration", "1000000"),  # beyond what the ComfyUI widget allows
    ],
)
def test_nonsense_numbers_are_refused_naming_the_key(config_file, tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    code = cli.main(["train", "--config", str(config_file), "--out", str(out), flag, value])
    err = capsys.readouterr().err
    assert code == 2, err
    key = "iterations" if flag == "--steps" else flag[2:].replace("-", "_")
    assert key in err and "normguard: error:" in err
    assert not out.exists() or not list(out.glob("*.safetensors"))


def test_a_failed_start_leaves_the_folder_to_the_corrected_command(config_file, tmp_path, capsys):
    out = tmp_path / "m2"
    assert (
        cli.main(["train", "--config", str(config_file), "--out", str(out), "--model", "/nonexistent"]) == 2
    )
    capsys.readouterr()
    assert cli.main(["train", "--config", str(config_file), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"normguard: taking over {out}: it holds only the config of a run that never started" in said


def test_resume_is_announced_and_extends_the_saved_config(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(config_file), "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--config", str(config_file), "--out", str(out), "--steps", "3"]) == 0
    said = capsys.readouterr().out
    assert f"resuming {out} from iteration 2 (checkpoint {out / 'checkpoints' / 'iter-000002'})" in said
    assert yaml.safe_load((out / "config.yaml").read_text())["iterations"] == 3
