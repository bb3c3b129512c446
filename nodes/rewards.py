"""Reward nodes: one per registered reward, a combiner, and NormGuardScoreImages.

A reward node outputs a light spec (a list of RewardSpec with resolved paths), never a model: graphs
stay cheap to validate, and weights load only when a trainer or scorer runs (the rewards package
caches loaded rewards). Weight-based rewards pick a file or folder from ComfyUI's models/rewards
folder (registered with folder_paths; extra_model_paths.yaml may add more); names from a workflow
are looked up in that listing, so they cannot point anywhere else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from comfy_api.latest import io

from ..trainer import rewards as reward_lib
from ..trainer.prompt_files import read_prompt_lines
from .inputs import MAX_OPTIONS, capped
from .messages import show_text
from .types import RewardType, reward_specs

FOLDER = "rewards"


def register_folder() -> None:
    """Register models/rewards with ComfyUI (idempotent; keeps paths added by extra_model_paths)."""
    import folder_paths

    default = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(FOLDER, default, is_default=True)
    os.makedirs(default, exist_ok=True)


def reward_entries() -> list[str]:
    """Files and folders at the top of every rewards folder (weights come as files or HF folders)."""
    import folder_paths

    names = set()
    for root in folder_paths.get_folder_paths(FOLDER):
        if os.path.isdir(root):
            names.update(e for e in os.listdir(root) if not e.startswith("."))
    return sorted(names)


def resolve_entry(name: str) -> str:
    """The full path of a rewards-folder entry (one listed by reward_entries: a plain name, never
    '.', '..', a folder path or a hidden file); refuses anything that would resolve outside it."""
    import folder_paths

    if not isinstance(name, str) or name not in reward_entries():
        raise ValueError(
            f"{name!r} is not in the models/{FOLDER} folder ({', '.join(reward_entries()) or 'empty'})"
        )
    for root in folder_paths.get_folder_paths(FOLDER):
        path = os.path.join(root, name)
        real, real_root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
        # compared by path components: models/rewards_evil is not inside models/rewards
        if os.path.exists(path) and real != real_root and real.is_relative_to(real_root):
            return path
    raise ValueError(f"{name!r} resolves outside the models/{FOLDER} folder")


# suffixes of files a reward option could name; such a string must be an entry of models/rewards
FILE_SUFFIXES = {
    ".pt",
    ".pth",
    ".bin",
    ".safetensors",
    ".ckpt",
    ".json",
    ".onnx",
    ".txt",
    ".yaml",
    ".yml",
    ".npz",
}


def looks_like_path(text: str) -> bool:
    """Whether a string could reach a file: separators, '~', '.', a drive, a file suffix, or a name
    that exists relative to ComfyUI's working folder (input, models, ...)."""
    return (
        any(c in text for c in "/\\:")
        or text.startswith("~")
        or text in (".", "..")
        or os.path.isabs(text)
        or Path(text).suffix.lower() in FILE_SUFFIXES
        or (text.strip() != "" and os.path.lexists(text))
    )


def check_option_values(value: Any, where: str, entries: set[str], who: str) -> Any:
    """`value` with every string (nested ones too) that names a rewards-folder entry replaced by its
    path; any other string that could be a path is refused."""
    if isinstance(value, str):
        if value in entries:
            return resolve_entry(value)
        if looks_like_path(value):
            raise ValueError(
                f"{who}: option {where}={value!r}: give files by their name in models/{FOLDER} "
                f"({', '.join(sorted(entries)) or 'empty'})"
            )
        return value
    if isinstance(value, list):
        return [check_option_values(v, f"{where}[{i}]", entries, who) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: check_option_values(v, f"{where}.{k}", entries, who) for k, v in value.items()}
    return value


def node_id(reward_id: str) -> str:
    return "NormGuardReward" + "".join(part.capitalize() for part in reward_id.split("_"))


def parse_options(text: str, reward_id: str) -> dict[str, Any]:
    """A JSON object of reward options; strings naming a rewards-folder entry become its path."""
    who = node_id(reward_id)
    if not capped(text, MAX_OPTIONS, f"{who}: options").strip():
        return {}
    try:
        options = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{who}: options must be a JSON object: {e}") from e
    if not isinstance(options, dict):
        raise ValueError(f"{who}: options must be a JSON object, got {text!r:.200}")
    entries = set(reward_entries())
    return {k: check_option_values(v, k, entries, who) for k, v in options.items()}


def make_reward_node(info: dict[str, Any]) -> type[io.ComfyNode]:
    """A node class for one registered reward."""
    rid, needs_path = info["id"], bool(info.get("needs_path"))
    description = info.get("description") or rid.replace("_", " ")
    if info.get("cost"):
        description += f". Cost: {info['cost']}"
    if info.get("extra"):
        description += (
            f". Needs the optional packages of NormGuard's '{info['extra']}' extra (pyproject.toml)"
        )

    def define_schema(cls) -> io.Schema:
        inputs = [
            io.Float.Input(
                "weight", default=1.0, min=-100.0, max=100.0, step=0.05, tooltip="Weight in the sum."
            )
        ]
        if needs_path:
            inputs.append(
                io.Combo.Input("path", options=reward_entries(), tooltip=f"Its weights, in models/{FOLDER}.")
            )
        inputs.append(
            io.String.Input(
                "options", multiline=True, default="", optional=True, tooltip="Reward settings (JSON object)."
            )
        )
        return io.Schema(
            node_id=node_id(rid),
            display_name=f"NormGuard Reward: {rid}",
            search_aliases=["reward", "rlhf", rid.replace("_", " ")],
            category="NormGuard/rewards",
            description=description,
            inputs=inputs,
            outputs=[RewardType.Output(display_name="reward")],
        )

    def execute(cls, weight: float, path: str | None = None, options: str = "") -> io.NodeOutput:
        kwargs: dict[str, Any] = {"name": rid, "weight": float(weight)}
        if needs_path:
            kwargs["path"] = resolve_entry(path)
        kwargs["options"] = parse_options(options or "", rid)
        return io.NodeOutput([reward_lib.RewardSpec(**kwargs)])

    return type(
        node_id(rid),
        (io.ComfyNode,),
        {
            "define_schema": classmethod(define_schema),
            "execute": classmethod(execute),
            "__doc__": description,
        },
    )


class NormGuardRewardCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormGuardRewardCombine",
            display_name="NormGuard Reward Combine",
            search_aliases=["reward", "rlhf", "combine rewards"],
            category="NormGuard/rewards",
            description="Several rewards as one weighted sum (each reward's own weight applies).",
            inputs=[
                RewardType.Input("reward_1"),
                RewardType.Input("reward_2"),
                RewardType.Input("reward_3", optional=True),
                RewardType.Input("reward_4", optional=True),
            ],
            outputs=[RewardType.Output(display_name="reward")],
        )

    @classmethod
    def execute(cls, reward_1, reward_2, reward_3=None, reward_4=None) -> io.NodeOutput:
        specs = [
            s
            for r in (reward_1, reward_2, reward_3, reward_4)
            if r
            for s in reward_specs(r, "NormGuardRewardCombine")
        ]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"NormGuardRewardCombine: each reward may appear once, got {names}")
        return io.NodeOutput(specs)


def images_to_core(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] -> the core's [B, 3, H, W] in [0, 1]."""
    if images.ndim != 4:
        raise ValueError(f"expected an IMAGE batch [B, H, W, C], got shape {tuple(images.shape)}")
    return images[..., :3].movedim(-1, 1).float().clamp(0, 1)


def prompts_for(text: str, count: int, who: str) -> list[str]:
    lines = read_prompt_lines(text)
    if not lines:
        return [""] * count
    if len(lines) == 1:
        return lines * count
    if len(lines) != count:
        raise ValueError(
            f"{who}: give one prompt, or one per image ({len(lines)} prompts for {count} images)"
        )
    return lines


class NormGuardScoreImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormGuardScoreImages",
            display_name="NormGuard Score Images",
            search_aliases=["reward", "score", "image quality"],
            category="NormGuard/rewards",
            description="Scores images with a reward (the weighted sum for combined rewards).",
            inputs=[
                io.Image.Input("images"),
                RewardType.Input("reward"),
                io.String.Input(
                    "prompts", multiline=True, default="", tooltip="One prompt, or one per image."
                ),
            ],
            outputs=[
                io.Float.Output(display_name="mean"),
                io.Float.Output(display_name="scores", is_output_list=True),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, reward, prompts="") -> io.NodeOutput:
        import comfy.model_management as mm

        batch = images_to_core(images)
        texts = prompts_for(prompts, batch.shape[0], "NormGuardScoreImages")
        rewards = reward_lib.build_rewards(
            reward_specs(reward, "NormGuardScoreImages"), mm.get_torch_device()
        )
        with torch.no_grad():
            parts = rewards.score(batch, texts)
        total = rewards.total(parts)
        scores = [float(v) for v in total]
        lines = [f"mean {sum(scores) / len(scores):.4g}"] + [
            f"image {i}: {s:.4g}" for i, s in enumerate(scores)
        ]
        if len(parts) > 1:
            lines += [f"{k}: " + ", ".join(f"{float(v):.4g}" for v in vals) for k, vals in parts.items()]
        text = "\n".join(lines)
        show_text(cls.hidden.unique_id, text)
        return io.NodeOutput(
            sum(scores) / len(scores),
            scores,
            ui={
                "text": [text],
                "normguard_scores": [{"scores": scores, **{k: v.tolist() for k, v in parts.items()}}],
            },
        )


def reward_nodes() -> list[type[io.ComfyNode]]:
    register_folder()
    return [
        *(make_reward_node(info) for info in reward_lib.available_rewards()),
        NormGuardRewardCombine,
        NormGuardScoreImages,
    ]
