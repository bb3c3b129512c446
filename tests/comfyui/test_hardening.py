"""What a shared API-format workflow must not get through the nodes: literal values where only a
node's output may go, alias bombs and oversized text, mistyped or out-of-range settings, reward options
that reach outside models/rewards, unsafe LoRA names; and the run folder's files surviving damage."""

from __future__ import annotations

import os
import stat
import time

import pytest

from .client import GraphError
from .graphs import train


def score_graph(reward_node: dict) -> dict:
    """A reward node scored on a blank image: the cheapest graph that executes a reward node."""
    return {
        "img": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0},
        },
        "r": reward_node,
        "s": {
            "class_type": "NormGuardScoreImages",
            "inputs": {"images": ["img", 0], "reward": ["r", 0], "prompts": ""},
        },
    }


def test_a_literal_dict_in_options_is_refused(comfy):
    """ComfyUI does not type-check custom-type inputs: a literal object reached the trainer before."""
    g = train("sd3", "t_literal", iterations=1)
    g["train"]["inputs"]["options"] = {
        "eval_prompts_file": "/etc/passwd",
        "monitor_rewards": [{"name": "clip_score", "path": "/root"}],
    }
    with pytest.raises(GraphError, match="options must come from a NormGuard Train Options node"):
        comfy.run(g)
    g = train("sd3", "t_literal", iterations=1)
    g["options"]["inputs"]["options"] = {"eval_prompts_file": "/etc/passwd"}  # the chained input too
    with pytest.raises(GraphError, match="must come from another NormGuard Train Options node"):
        comfy.run(g)
    g = train("sd3", "t_literal", iterations=1)
    g["train"]["inputs"]["reward"] = [{"name": "clip_score", "path": "/root"}, 0, 1]
    with pytest.raises(GraphError):
        comfy.run(g)


def test_a_yaml_alias_bomb_in_extra_is_refused_at_once(comfy):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
    g = train("sd3", "t_bomb", iterations=1, options={"extra": "\n".join(levels)})
    start = time.monotonic()
    with pytest.raises(GraphError, match="anchors and aliases"):
        comfy.run(g, timeout=120)
    assert time.monotonic() - start < 60  # 10**9 expanded values would take hours


@pytest.mark.parametrize(
    "extra,match",
    [
        ("nft_beta: 1.0\n#" + "x" * 20000, "at most 16384"),
        ("eval_prompts: 5", "eval_prompts must be a list of strings"),
        ("eval_prompts: [a, {b: c}]", "eval_prompts must be a list of strings"),
        ("nft_beta: yes", "nft_beta must be"),
        ("eval_prompts_file: /etc/passwd", "files come only from ComfyUI's folders"),
        ("groups_per_iteration: 1000000", "groups_per_iteration"),  # beyond the widget's max
        ("grad_clip: .nan", "grad_clip"),
        ("keep_checkpoints: 0", "keep_checkpoints"),
    ],
)
def test_bad_extra_settings_are_refused_naming_the_key(comfy, loras, extra, match):
    before = set(os.listdir(loras))
    g = train("sd3", "t_extra", iterations=1, options={"extra": extra})
    with pytest.raises(GraphError, match=match):
        comfy.run(g)
    assert set(os.listdir(loras)) == before  # nothing published


def test_oversized_prompts_are_refused(comfy):
    g = train("sd3", "t_big", iterations=1, prompts="a red cube\n" * 500_000)
    with pytest.raises(GraphError, match="prompts is .* bytes; at most"):
        comfy.run(g)


@pytest.mark.parametrize("name", ["CON", "nul.txt", "a\u202egnp.exe", "line\nbreak", "tab\there", "x\x00y"])
def test_unsafe_lora_names_are_refused(comfy, name):
    g = train("sd3", name, iterations=1)
    with pytest.raises(GraphError, match="lora_name must be a plain file name"):
        comfy.run(g)


@pytest.fixture(scope="module")
def reward_entries(base_dir):
    rewards = base_dir / "models" / "rewards"
    (rewards / "hard_clip").mkdir(parents=True, exist_ok=True)
    evil = base_dir / "models" / "rewards_evil"
    evil.mkdir(exist_ok=True)
    (evil / "x.pth").write_bytes(b"")
    if not (rewards / "sneaky").exists():
        (rewards / "sneaky").symlink_to(evil)  # an entry whose real path is a sibling folder
    return rewards


@pytest.mark.parametrize(
    "options,match",
    [
        ('{"processor": "~/x.pth"}', "give files by their name"),
        ('{"processor": "input/evil.pth"}', "give files by their name"),
        ('{"processor": "."}', "give files by their name"),
        ('{"processor": "evil.pth"}', "give files by their name"),
        ('{"nested": {"deep": ["ok", "/etc/passwd"]}}', r"option nested.deep\[1\]='/etc/passwd'"),
        ('{"processor": "sneaky"}', "resolves outside the models/rewards folder"),
        ('{"a": ' * 5000 + "1" + "}" * 5000, "at most 16384|JSON object"),
    ],
)
def test_reward_options_stay_inside_the_rewards_folder(comfy, reward_entries, options, match):
    node = {
        "class_type": "NormGuardRewardPickscore",
        "inputs": {"weight": 1.0, "path": "hard_clip", "options": options},
    }
    with pytest.raises(GraphError, match=match):
        comfy.run(score_graph(node))


def test_a_sibling_folder_entry_is_refused_as_the_path(comfy, reward_entries):
    node = {"class_type": "NormGuardRewardPickscore", "inputs": {"weight": 1.0, "path": "sneaky"}}
    with pytest.raises(GraphError, match="resolves outside the models/rewards folder"):
        comfy.run(score_graph(node))


def test_published_lora_is_readable_by_others_and_a_damaged_record_does_not_block(comfy, loras, output_dir):
    outputs = comfy.run(train("sd3", "t_mode", iterations=1))
    assert "finished: 1 iterations" in outputs["train"]["text"][0]
    published = loras / "t_mode.safetensors"
    assert stat.S_IMODE(published.stat().st_mode) & 0o044 == 0o044, oct(published.stat().st_mode)
    run = output_dir / "normguard" / "t_mode"
    for p in [*run.glob("*.safetensors"), *run.glob("checkpoints/*/*")]:
        assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044, p
    (run / "comfyui_export.json").write_text("")  # as a kill or a full disk left it before
    outputs = comfy.run(train("sd3", "t_mode", iterations=2))  # resumes and publishes
    assert "finished: 2 iterations" in outputs["train"]["text"][0]
    assert (loras / "t_mode_2.safetensors").is_file()


def test_a_start_that_failed_leaves_no_block(comfy, output_dir):
    """A run folder whose start failed after config.yaml was written is taken over, not shunted into
    a run-NNN subfolder."""
    run = output_dir / "normguard" / "t_takeover"
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text("model: something-else\n")
    outputs = comfy.run(train("sd3", "t_takeover", iterations=1))
    assert "finished: 1 iterations" in outputs["train"]["text"][0]
    assert (run / "checkpoints").is_dir() and not list(run.glob("run-*"))
