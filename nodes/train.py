"""NormGuardTrainLoRA: RL fine-tuning of the loaded MODEL (the core's Trainer on a ComfyBackend), and
NormGuardTrainOptions, which carries the less common TrainConfig settings to it.

Run folders live in output/normguard/<lora_name>/ (or a run-NNN subfolder when that name already
holds a run with other settings): an identical graph queued again resumes its run, e.g. after Cancel.
The finished (or cancelled) LoRA is copied into the first loras folder under a free name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..trainer.backends.comfy import (
    LORA_FORMATS,
    ComfyBackend,
    architecture,
    check_flow_model,
    model_fingerprint,
)
from ..trainer.callbacks import Callback
from ..trainer.checkpoint import CONFIG_FILE, RunDir, config_differences
from ..trainer.config import TrainConfig, canonical_keys
from ..trainer.files import json_safe, read_yaml
from ..trainer.loop import Trainer
from ..trainer.prompt_files import read_prompt_lines
from ..trainer.rewards import build_rewards
from ..trainer.trackers import installed_trackers
from .inputs import MAX_EXTRA, MAX_PROMPTS, capped, plain_yaml
from .lora import apply_lora_file, publish_lora
from .messages import send_event, show_text
from .types import OptionsType, RewardType, TrainOptions, reward_specs
from .widgets import NODE_DEFAULTS, config_input

EVENT = "normguard.train"
RUNS_SUBDIR = "normguard"
EXPORT_RECORD = "comfyui_export.json"
# TrainConfig keys the trainer node sets itself (options cannot override them)
NODE_KEYS = {
    "model", "device", "precision", "out", "prompts", "prompts_file", "rewards", "lora_name", "method",
    "normguard_weight", "iterations", "group_size", "sample_steps", "cfg_scale", "width", "height", "lora_rank",
    "lr", "seed",
}  # fmt: skip
# the trainer node's inputs named otherwise than their TrainConfig key (saved workflows name them)
RENAMED_INPUTS = {"cfg": "cfg_scale", "learning_rate": "lr"}
BACKEND_KEYS = ("lora_format",)  # options for the ComfyUI backend, not TrainConfig keys
# keys naming files: from a workflow only through inputs that list ComfyUI's folders
FILE_KEYS = {"prompts_file", "eval_prompts_file", "init_lora", "monitor_rewards"}
OPTION_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - NODE_KEYS


WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"{d}{i}" for d in ("COM", "LPT") for i in range(1, 10))}


def clean_lora_name(name: str) -> str:
    """A plain file name of letters, digits, '-', '_', '.' and spaces that every OS accepts (no
    folders, no control or direction characters, no Windows device name); '.safetensors' optional."""
    name = name.strip()
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if (
        not name
        or len(name) > 200
        or not all(c.isalnum() or c in "-_. " for c in name)
        or name.startswith(".")
        or name.endswith((".", " "))
        or name.split(".")[0].strip().upper() in WINDOWS_DEVICES
    ):
        raise ValueError(
            "lora_name must be a plain file name of letters, digits, '-', '_', '.' and spaces (not starting "
            f"with '.', not a Windows device name such as CON or NUL), got {name!r}"
        )
    return name


def preview_grid(images: torch.Tensor, count: int = 4) -> Any:
    """The first `count` rollout images side by side, as a PIL image."""
    return grid_image(torch.cat(list(images[:count].float().clamp(0, 1)), dim=2))  # [3, H, count * W]


def grid_image(image: torch.Tensor) -> Any:
    """[3, H, W] in [0, 1] -> PIL image."""
    from PIL import Image

    return Image.fromarray(
        (image.float().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    )


def latest_eval_grid(run_dir: Path) -> torch.Tensor | None:
    """The newest evaluation grid of a run as an IMAGE batch [1, H, W, 3], or None."""
    from PIL import Image

    grids = sorted((run_dir / "evals").glob("iter-*.png"))
    if not grids:
        return None
    return torch.from_numpy(np.asarray(Image.open(grids[-1]).convert("RGB"))).float().div(255)[None]


class ComfyProgress(Callback):
    """ComfyUI's progress bar (sampler steps + one unit per optimizer step) with a preview of the
    latest rollout, Cancel, and per-iteration metrics events for the frontend."""

    def __init__(self, node: str | None, sample_steps: int):
        self.node, self.steps = node, sample_steps
        self.done, self.total, self.start, self.pbar = 0, 1, 0, None
        self.warnings: list[str] = []

    def _interrupt(self) -> None:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()

    def event(self, phase: str, **data: Any) -> None:
        send_event(EVENT, json_safe({"node": self.node, "phase": phase, **data}))

    def on_train_start(self, info: dict[str, Any]) -> None:
        import comfy.utils

        self.start, self.iterations = info["start_iteration"], info["iterations"]
        self.total = max(1, (self.iterations - self.start) * (self.steps + 1))
        self.pbar = comfy.utils.ProgressBar(self.total, node_id=self.node)
        self.pbar.update_absolute(0, self.total)
        self.warnings = list(info.get("warnings") or [])  # set-up problems, also kept in the summary
        self.event(
            "start",
            iterations=self.iterations,
            start_iteration=self.start,
            method=info.get("method"),
            warnings=self.warnings,
        )
        if self.warnings:
            show_text(self.node, "\n".join(self.warnings))
        self._interrupt()

    def on_sample_step(self, step: int, total: int) -> None:
        self.done += 1
        self.pbar.update_absolute(min(self.done, self.total), self.total)
        self._interrupt()

    def on_train_step(self, step: int, total: int) -> None:
        self._interrupt()  # Cancel takes effect between micro-batches, not only between iterations

    def on_rollout(
        self, iteration: int, images: torch.Tensor, prompts: list[str], rewards: torch.Tensor
    ) -> None:
        self.pbar.update_absolute(
            min(self.done, self.total), self.total, preview=("JPEG", preview_grid(images), 512)
        )

    def on_iteration_end(self, iteration: int, metrics: dict[str, Any]) -> None:
        self.done = (iteration - self.start) * (self.steps + 1)
        self.pbar.update_absolute(min(self.done, self.total), self.total)
        self.event("iteration", iteration=iteration, iterations=self.iterations, metrics=metrics)
        self._interrupt()

    def on_evaluation(self, evaluation: Any) -> None:
        self.event(
            "evaluation",
            iteration=evaluation.iteration,
            metrics=evaluation.metrics,
            warnings=evaluation.warnings,
        )
        if evaluation.warnings:
            show_text(self.node, "\n".join(evaluation.warnings))
        if self.pbar is not None:  # the held-out grid (fixed seeds: drift shows) as the node's preview
            self.pbar.update_absolute(
                min(self.done, self.total), self.total, preview=("PNG", grid_image(evaluation.grid), 768)
            )

    def on_checkpoint(self, iteration: int, lora_path: Path) -> None:
        self.event("checkpoint", iteration=iteration)


def find_run_dir(base: Path, cfg: TrainConfig) -> tuple[Path, bool]:
    """(run folder, new_run): the run under `base` whose saved config matches, else a fresh one."""
    candidates = [base, *sorted(base.glob("run-*"))] if base.is_dir() else []
    for folder in candidates:
        saved = folder / CONFIG_FILE
        if saved.is_file():
            try:
                old = read_yaml(saved, "the saved config")
            except ValueError:
                continue
            if isinstance(old, dict) and not config_differences(old, cfg.to_dict()):
                return folder, False
    if not base.exists() or not any(base.iterdir()):
        return base, False
    if (base / CONFIG_FILE).is_file() and not RunDir(base).checkpoints():
        return base, False  # a run that never got its first checkpoint: RunDir takes it over
    return base, True  # Trainer(new_run=True) creates base/run-NNN


def build_config(options: dict[str, Any] | None, **node: Any) -> TrainConfig:
    """The node's inputs plus the options node's overrides, validated."""
    if options is not None and not isinstance(options, TrainOptions):
        raise ValueError("NormGuardTrainLoRA: options must come from a NormGuard Train Options node")
    options = dict(options or {})
    files = sorted(k for k in FILE_KEYS & set(options) if k not in ("init_lora", "monitor_rewards"))
    if files:  # no input lists a folder for these: a workflow cannot name such a file at all
        raise ValueError(f"NormGuardTrainLoRA: options cannot set {files}")
    clash = sorted(set(options) & NODE_KEYS)
    if clash:
        raise ValueError(f"NormGuardTrainOptions cannot set {clash}: they are inputs of the trainer node")
    settings = {"gradient_checkpointing": NODE_DEFAULTS["gradient_checkpointing"], "tensorboard": False}
    settings |= options | node
    try:
        cfg = TrainConfig.from_dict(settings)
        cfg.validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f"NormGuardTrainLoRA: {e}") from e
    return cfg


class NormGuardTrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormGuardTrainLoRA",
            display_name="NormGuard Train LoRA (RL)",
            category="NormGuard",
            search_aliases=["reward", "rlhf", "rl", "lora train", "fine-tune", "nft", "grpo", "dpo"],
            # as ComfyUI marks its own trainer: settings and outputs may still change between versions
            is_experimental=True,
            description=(
                "Reward fine-tuning (NFT, AWM, DPO, GRPO) of the loaded flow model (SD3/SD3.5, FLUX.1, FLUX.2, "
                "Chroma, Z-Image, Lumina 2, Qwen-Image, HiDream, AuraFlow, HunyuanImage 2.1) with "
                "the NormGuard velocity-norm penalty. Saves the LoRA into the loras folder; queue the same graph "
                "again to resume a cancelled run."
            ),
            inputs=[
                io.Model.Input("model"),
                io.Clip.Input("clip"),
                io.Vae.Input("vae"),
                RewardType.Input("reward"),
                io.String.Input(
                    "prompts", multiline=True, default="", tooltip="One training prompt per line."
                ),
                config_input("method"),
                config_input(
                    "normguard_weight",
                    tooltip="Penalty weight (0 = off); the hinge form and margin are in the options node.",
                ),
                config_input("iterations"),
                config_input("group_size", tooltip="Samples per prompt per iteration."),
                config_input("sample_steps"),
                config_input("cfg_scale", "cfg"),  # input name kept: saved workflows name it
                config_input("width"),
                config_input("height"),
                config_input("lora_rank"),
                config_input("lr", "learning_rate"),
                config_input(
                    "seed",
                    # not the frontend's "randomize" default for seeds: a new seed is a new run, so
                    # queueing the graph again would start over instead of resuming
                    control_after_generate=io.ControlAfterGenerate.fixed,
                ),
                config_input("lora_name"),
                OptionsType.Input("options", optional=True, tooltip="From a NormGuard Train Options node."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL"),
                io.String.Output(display_name="lora_name"),
                io.String.Output(display_name="training_log"),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, clip, vae, reward, prompts, lora_name, options=None, **widgets) -> io.NodeOutput:
        """`widgets`: the inputs that are TrainConfig keys, by input name (see RENAMED_INPUTS)."""
        import comfy.model_management as mm
        import folder_paths

        node = cls.hidden.unique_id
        check_flow_model(model, "NormGuardTrainLoRA")
        prompt_list = read_prompt_lines(capped(prompts, MAX_PROMPTS, "NormGuardTrainLoRA: prompts"))
        if not prompt_list:
            raise ValueError("NormGuardTrainLoRA: prompts is empty; write one training prompt per line")
        if not reward:
            raise ValueError("NormGuardTrainLoRA: connect a reward node")
        reward = reward_specs(reward, "NormGuardTrainLoRA: reward")
        name = clean_lora_name(lora_name)
        device = mm.get_torch_device()
        if options is not None and not isinstance(options, TrainOptions):
            raise ValueError("NormGuardTrainLoRA: options must come from a NormGuard Train Options node")
        options = TrainOptions(options or {})
        lora_format = options.pop("lora_format", LORA_FORMATS[0])
        if options.get("init_lora"):
            options["init_lora"] = folder_paths.get_full_path_or_raise("loras", options["init_lora"])
        config = build_config(
            options,
            model=f"comfyui:{architecture(model)}:{model_fingerprint(model)}",
            device=str(device),
            prompts=prompt_list,
            rewards=[dataclasses.asdict(s) for s in reward],
            lora_name=name,
            **{RENAMED_INPUTS.get(k, k): v for k, v in widgets.items()},
        )
        base = Path(folder_paths.get_output_directory()) / RUNS_SUBDIR / name
        run_dir, new_run = find_run_dir(base, config)
        config = config.replace(out=str(run_dir))
        progress = ComfyProgress(node, config.sample_steps)
        backend = trainer = None
        with torch.inference_mode(False), torch.enable_grad():
            try:
                backend = ComfyBackend(
                    model,
                    clip,
                    vae,
                    height=config.height,
                    width=config.width,
                    prompts=prompt_list,
                    guidance=config.guidance,
                    gradient_checkpointing=config.gradient_checkpointing,
                    lora_format=lora_format,
                )
                rewards = build_rewards(
                    config.rewards, config.reward_device or device, config.reward_normalize_each
                )
                trainer = Trainer(
                    config, backend=backend, rewards=rewards, callbacks=[progress], new_run=new_run
                )
                result = trainer.run()
                if result.status.startswith("failed"):  # NaN weights: never published
                    raise RuntimeError(f"NormGuardTrainLoRA: {result.status}")
            except BaseException:  # Cancel (InterruptProcessingException) or an error
                keep_last_lora(trainer, name, progress)
                raise
            finally:
                if backend is not None:
                    backend.release()
        lora_file = publish_lora(result.lora_path, name, result.run_dir / EXPORT_RECORD, result.iterations)
        trained, patched = apply_lora_file(model, folder_paths.get_full_path_or_raise("loras", lora_file))
        metrics = result.run_dir / "metrics.jsonl"
        history = metrics.read_text(encoding="utf-8") if metrics.is_file() else ""
        summary = "\n".join([summarize(result, lora_file, patched), *progress.warnings])
        progress.event("end", status=result.status, iteration=result.iterations, lora=lora_file)
        show_text(node, summary)
        shown = {"text": [summary]}
        if (grid := latest_eval_grid(result.run_dir)) is not None:
            shown |= ui.PreviewImage(grid, cls=cls).as_dict()
        return io.NodeOutput(trained, lora_file, history, ui=shown)


def keep_last_lora(trainer: Trainer | None, name: str, progress: ComfyProgress) -> None:
    """After a cancel or an error: publish the last good LoRA the loop saved, and say so."""
    if trainer is None or not trainer.run_dir.lora_path(name).is_file():
        return
    done = trainer.state.iteration
    kept = publish_lora(trainer.run_dir.lora_path(name), name, trainer.run_dir.root / EXPORT_RECORD, done)
    progress.event("end", status="interrupted", iteration=done, lora=kept)
    show_text(progress.node, f"stopped at iteration {done}; LoRA kept as {kept}. Queue again to resume.")


def summarize(result: Any, lora_file: str, patched: int) -> str:
    m = result.metrics
    parts = [f"{result.status}: {result.iterations} iterations", f"LoRA: {lora_file} ({patched} weights)"]
    for key, label in (("reward_mean", "reward"), ("train_rho", "rho"), ("penalty", "penalty")):
        if isinstance(m.get(key), (int, float)):
            parts.append(f"{label}: {m[key]:.4g}")
    return "\n".join(parts)


class NormGuardTrainOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        import folder_paths

        return io.Schema(
            node_id="NormGuardTrainOptions",
            display_name="NormGuard Train Options",
            category="NormGuard",
            search_aliases=["lora train options", "rlhf"],
            is_experimental=True,
            description="Advanced training settings for NormGuard Train LoRA (TrainConfig keys).",
            inputs=[
                config_input("groups_per_iteration"),
                config_input("train_timesteps"),
                config_input("timestep_fraction"),
                config_input("micro_batch_size"),
                config_input("normguard_form"),
                config_input("normguard_relative"),
                config_input("normguard_margin"),
                config_input("normguard_reduction"),
                config_input("kl_weight"),
                config_input("lora_alpha", tooltip="0 = the rank."),
                io.String.Input(
                    "lora_targets", default="", tooltip="Comma-separated layer names; empty = attention."
                ),
                io.Combo.Input(
                    "init_lora",
                    options=["none", *folder_paths.get_filename_list("loras")],
                    default="none",
                    tooltip="Continue from this LoRA (same model, rank and targets).",
                ),
                io.Combo.Input(
                    "lora_format",
                    options=list(LORA_FORMATS),
                    default=LORA_FORMATS[0],
                    tooltip=(
                        "Keys of the saved file: ComfyUI's (any model); diffusers' for SD3/SD3.5, FLUX.1, Chroma, "
                        "Z-Image, Qwen-Image, HiDream-I1 and AuraFlow; kohya's (lora_unet_*, with .alpha) for "
                        "SD3/SD3.5 and FLUX.1."
                    ),
                ),
                config_input("guidance", tooltip="FLUX.1-dev guidance; 0 = default."),
                config_input("gradient_checkpointing"),
                config_input("checkpoint_every"),
                config_input("eval_every", tooltip="Held-out evaluation; 0 = never."),
                config_input("eval_samples"),
                config_input("eval_few_steps", tooltip="0 = skip."),
                config_input("warn_rho"),
                config_input("stop_on_warning"),
                config_input("reward_normalize_each"),
                RewardType.Input(
                    "monitor", optional=True, tooltip="Rewards scored at evaluations, never trained on."
                ),
                io.String.Input(
                    "extra",
                    multiline=True,
                    default="",
                    tooltip="Any other TrainConfig keys as YAML, e.g. 'nft_beta: 1.5'.",
                ),
                # new widgets go last: saved workflows keep their widget values in order
                io.String.Input(
                    "log_with",
                    default="",
                    optional=True,  # optional: API-format workflows saved before it keep validating
                    tooltip="Experiment trackers, comma-separated (empty = none): tensorboard, wandb, mlflow, "
                    f"trackio, or all; installed here: {', '.join(installed_trackers()) or 'none'}. Logs go to "
                    "the run folder (output/normguard/<lora_name>/).",
                ),
                io.String.Input(
                    "eval_prompts",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Held-out evaluation prompts, one per line (empty = the training prompts); a "
                    "NormGuard Load Prompts node can feed it from a file.",
                ),
                OptionsType.Input("options", optional=True),
            ],
            outputs=[OptionsType.Output(display_name="options")],
        )

    @classmethod
    def execute(
        cls, extra="", lora_targets="", lora_alpha=0.0, guidance=0.0, init_lora="none", monitor=None, options=None,
        log_with="", eval_prompts="", **values,
    ) -> io.NodeOutput:  # fmt: skip
        if options is not None and not isinstance(options, TrainOptions):
            raise ValueError(
                "NormGuardTrainOptions: options must come from another NormGuard Train Options node"
            )
        out = TrainOptions(options or {})
        out.update(values)
        out["lora_alpha"] = lora_alpha or None
        out["guidance"] = guidance or None
        lora_targets = capped(lora_targets, MAX_EXTRA, "NormGuardTrainOptions: lora_targets")
        out["lora_targets"] = [
            t.strip() for t in lora_targets.replace("\n", ",").split(",") if t.strip()
        ] or None
        log_with = capped(log_with, MAX_EXTRA, "NormGuardTrainOptions: log_with")
        if trackers := [t.strip() for t in log_with.replace("\n", ",").split(",") if t.strip()]:
            out["log_with"] = trackers
        if eval_list := read_prompt_lines(
            capped(eval_prompts, MAX_PROMPTS, "NormGuardTrainOptions: eval_prompts")
        ):
            out["eval_prompts"] = eval_list
        if init_lora != "none":
            out["init_lora"] = init_lora  # a name in the loras folder, resolved by the trainer node
        if monitor:
            monitor = reward_specs(monitor, "NormGuardTrainOptions: monitor")
            out["monitor_rewards"] = [dataclasses.asdict(spec) for spec in monitor]
        if capped(extra, MAX_EXTRA, "NormGuardTrainOptions: extra").strip():
            parsed = plain_yaml(extra, "NormGuardTrainOptions: extra")
            if not isinstance(parsed, dict):
                raise ValueError("NormGuardTrainOptions: extra must be a YAML mapping of TrainConfig keys")
            parsed = canonical_keys(parsed)
            files = sorted(set(parsed) & FILE_KEYS)
            if files:
                raise ValueError(
                    f"NormGuardTrainOptions: extra cannot set {files}; files come only from ComfyUI's folders "
                    "(init_lora and monitor have their own inputs)"
                )
            out.update(parsed)
        unknown = sorted(set(out) - OPTION_KEYS - set(BACKEND_KEYS) - NODE_KEYS)
        if unknown:
            raise ValueError(f"NormGuardTrainOptions: unknown keys {unknown}")
        clash = sorted(set(out) & NODE_KEYS)
        if clash:
            raise ValueError(f"NormGuardTrainOptions: {clash} are inputs of the trainer node, not options")
        return io.NodeOutput(out)
