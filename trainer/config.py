"""One dataclass for a training run; the YAML file, the CLI flags and the ComfyUI widgets map onto it.

How to declare a key: add one field to TrainConfig with `setting()` (settings.py), e.g.

    my_ratio: float = setting(0.5, "what it does, in one line", min=0.0, max=1.0, step=0.01)

The annotation is the type `validate()` checks (a float also refuses NaN and inf; `X | None` allows
None; `list[str]` a list of strings). Give every number a range: `min`/`max` (inclusive) or `above`
(exclusive lower bound); give a string with a fixed set of values its `choices`. `step` only sets a
node widget's granularity. From that one declaration `normguard train` grows `--my-ratio` with this
help and choices, and `nodes.widgets.config_input("my_ratio")` builds a ComfyUI widget with this
default, bounds and step. Rules that tie keys together go in `_cross_checks`; a key that may change
on resume goes in RESUMABLE_CHANGES; a renamed key keeps its old name in KEY_ALIASES so saved
configs and commands still load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .dtypes import DTYPES
from .prompt_files import read_prompt_file
from .rewards import REGISTRY, RewardSpec
from .settings import check_value, coerce_numbers, is_finite_number, listed, setting
from .trackers import tracker_problem

METHODS = ("nft", "awm", "dpo", "grpo")
LOSS_WEIGHT = {"min": 0.0, "max": 1000.0}  # the range of a loss term's weight (0 turns the term off)

# Keys that may change when a run is resumed (everything else must match the saved config).
RESUMABLE_CHANGES = {
    "iterations",
    "checkpoint_every",
    "keep_checkpoints",
    "device",
    "out",
    "eval_every",
    "warn_rho",
    "warn_quality_drop",
    "stop_on_warning",
    "tensorboard",
    "log_with",
}
# old name -> current name; YAML files, run folders' config.yaml and CLI flags may use either
KEY_ALIASES = {"cfg": "cfg_scale"}


@dataclass
class TrainConfig:
    # --- model --------------------------------------------------------------------------------
    model: str = setting(
        "builtin",
        "'builtin' (the shipped TinyFlow model), or a diffusers SD3/FLUX.1 folder or cached repo id",
    )
    device: str = setting("auto", "'auto' (CUDA if present), 'cpu', 'cuda', 'cuda:1'...")
    precision: str = setting(
        "auto", f"'auto' (bf16 on CUDA, fp32 on CPU), {listed(DTYPES)}", choices=("auto", *DTYPES)
    )
    gradient_checkpointing: bool = setting(
        False, "recompute activations in backward: less memory, ~1.3x slower"
    )
    fp8_base: bool = setting(
        False, "store the frozen base weights in float8 (about half the memory; ~1.1x slower)"
    )
    offload_text_encoders: bool = setting(True, "move text encoders to the CPU once the prompts are encoded")
    offload: bool = setting(
        False,
        "keep the frozen transformer blocks in CPU memory and stream them in one block at a time "
        "(diffusers backend, one process, needs gradient_checkpointing): least VRAM, slower",
    )
    decode_batch_size: int = setting(
        8, "images the VAE decodes at once (lower saves memory)", min=1, max=1024
    )
    guidance: float | None = setting(
        None, "distilled guidance for guidance-distilled models (FLUX.1-dev)", min=0.0, max=100.0, step=0.1
    )
    lora_rank: int = setting(16, "LoRA rank", min=1, max=512)
    lora_alpha: float | None = setting(
        None, "LoRA alpha (default: equal to the rank, i.e. scale 1)", above=0.0, max=4096.0, step=0.5
    )
    lora_targets: list[str] | None = setting(
        None, "module names the LoRA adapts (default: attention projections)"
    )
    init_lora: str | None = setting(
        None, "start from this LoRA file (exported by normguard, same rank/targets)"
    )
    lora_dtype: str = setting(
        "fp32", f"precision of the saved LoRA file: {listed(DTYPES)}", choices=tuple(DTYPES)
    )
    lora_name: str = setting("normguard_lora", "file name (without .safetensors) of the exported LoRA")
    # --- data and rewards ---------------------------------------------------------------------
    prompts: list[str] = setting([], "training prompts")
    prompts_file: str | None = setting(
        None, "UTF-8 file, one prompt per line (blank lines and # comments ignored)"
    )
    rewards: list[RewardSpec] = setting([], "rewards with weights")
    reward_normalize_each: bool = setting(False, "turn each reward into advantages before the weighted sum")
    reward_device: str | None = setting(None, "device for reward models (default: the training device)")
    height: int | None = setting(
        None, "image height (default: the model's native size)", min=16, max=4096, step=16
    )
    width: int | None = setting(
        None, "image width (default: the model's native size)", min=16, max=4096, step=16
    )
    # --- RL -----------------------------------------------------------------------------------
    method: str = setting("nft", f"base RL method: {listed(METHODS)}", choices=METHODS)
    iterations: int = setting(
        100, "RL iterations (rollouts -> rewards -> one optimizer step)", min=1, max=100000
    )
    groups_per_iteration: int = setting(2, "prompts per iteration, over all processes", min=1, max=1024)
    group_size: int = setting(8, "samples per prompt (group-relative advantages need >= 2)", min=2, max=256)
    sample_steps: int = setting(10, "sampler steps per rollout", min=1, max=200)
    cfg_scale: float = setting(
        1.0, "classifier-free guidance scale of rollouts (1 = off)", min=1.0, max=30.0, step=0.1
    )
    train_timesteps: int = setting(4, "timesteps (or SDE steps for grpo) trained per sample", min=1, max=200)
    timestep_fraction: float = setting(
        0.8,
        "train on timesteps from this first (noisiest) fraction of the schedule",
        min=0.01,
        max=1.0,
        step=0.01,
    )
    micro_batch_size: int = setting(8, "samples per forward/backward pass", min=1, max=1024)
    lr: float = setting(1e-4, "AdamW learning rate", min=1e-7, max=1.0, step=1e-7)
    weight_decay: float = setting(1e-4, "AdamW weight decay", min=0.0, max=10.0)
    grad_clip: float = setting(1.0, "max gradient norm", above=0.0, max=1e6)
    adv_std: str = setting(
        "group", "advantage normalisation: 'group' std or 'batch' std", choices=("group", "batch")
    )
    adv_clip: float = setting(5.0, "advantage clip (also NFT's A_max)", above=0.0, max=1e6)
    kl_weight: float = setting(
        0.0,
        "KL-to-reference weight (awm, grpo; reuses NormGuard's reference pass)",
        **LOSS_WEIGHT,
        step=0.001,
    )
    nft_beta: float = setting(1.0, "DiffusionNFT guidance strength beta", above=0.0, max=1e6)
    nft_ema_rate: float = setting(0.001, "old-policy EMA decay ramp per optimizer step", min=0.0, max=1.0)
    nft_ema_max: float = setting(0.5, "old-policy EMA decay ceiling", min=0.0, max=1.0)
    awm_time_weight: str = setting(
        "uniform",
        "AWM timestep weighting ('ghuber' is the AWM code's default: sigma * mse^p / p, p = awm_ghuber_power)",
        choices=("uniform", "sigma", "ghuber"),
    )
    awm_ghuber_power: float = setting(
        0.25, "power p of AWM's generalised-Huber weighting", above=0.0, max=10.0
    )
    awm_advantage_max: float = setting(
        0.0,
        "AWM advantage scaling: clipped advantages are rescaled to [-this, this] (the AWM code uses 1; 0 = off)",
        min=0.0,
        max=1e6,
    )
    awm_ema_kl_weight: float = setting(
        0.0,
        "AWM EMA-KL: weight of ||v - v_ema||^2 towards an EMA of the adapter (the AWM code uses 1; 0 = off)",
        **LOSS_WEIGHT,
    )
    awm_ema_max: float = setting(
        0.3,
        "decay ceiling of AWM's EMA (ramps by nft_ema_rate per step, as NFT's old policy)",
        min=0.0,
        below=1.0,
    )
    dpo_beta: float = setting(100.0, "flow Diffusion-DPO beta", above=0.0, max=1e9)
    dpo_regime: str = setting(
        "mixed",
        "DPO data and reference: 'mixed' (policy rollouts, frozen reference), 'offline' (rollouts "
        "from the frozen reference), 'online' (policy rollouts, reference synced to the policy every "
        "dpo_ref_sync_every iterations)",
        choices=("mixed", "offline", "online"),
    )
    dpo_ref_sync_every: int = setting(10, "online DPO: iterations between reference syncs", min=1, max=100000)
    grpo_eta: float = setting(0.7, "Flow-GRPO SDE noise level a", above=0.0, max=10.0)
    grpo_clip_range: float = setting(1e-4, "Flow-GRPO PPO clip range", above=0.0, max=1.0)
    grpo_detach_uncond: bool = setting(
        True, "with cfg > 1, no gradient through the unconditional branch (flow_grpo since July 2025)"
    )
    # --- NormGuard ----------------------------------------------------------------------------
    # The default penalty is the abstract's relu(||v|| - ||v_ref||) at weight 0.03: the rule written into
    # benchmarks/paper_claims.py before its sweep (docs/paper_claims.md, "Penalty sweep") makes the paper
    # form the default when it scores within the seeds' spread of the best setting, and it scored best.
    # Its weight is in velocity-norm units, so its pull against the base loss grows with sqrt(latent
    # size); the relative forms ('squared' at weight 10) are scale-free.
    normguard_weight: float = setting(
        0.03,
        "NormGuard penalty weight lambda (0 turns it off); about 0.03 for the 'paper' form, 10 for the relative "
        "'linear' and 'squared' hinges",
        **LOSS_WEIGHT,
        step=0.01,
    )
    normguard_form: str = setting(
        "paper",
        "hinge form: 'paper' (exactly the abstract's relu(||v|| - ||v_ref||): linear, absolute, no margin; "
        "normguard_relative is ignored), or a 'linear' or 'squared' hinge",
        choices=("paper", "linear", "squared"),
    )
    normguard_relative: bool = setting(
        True, "hinge on ||v||/||v_ref|| - 1 (scale-free) instead of the difference"
    )
    normguard_margin: float = setting(
        0.0, "tolerance before the hinge activates", min=0.0, max=10.0, step=0.001
    )
    normguard_reduction: str = setting(
        "sample", "norm over each 'sample' or per 'token'", choices=("sample", "token")
    )
    # --- run ----------------------------------------------------------------------------------
    out: str = setting("runs/normguard", "run directory (an existing run with the same config is resumed)")
    seed: int = setting(
        0, "seed of every random draw (rollout noise, prompts, timesteps)", min=0, max=2**31 - 1
    )
    checkpoint_every: int = setting(
        10, "save a checkpoint and the LoRA every N iterations", min=1, max=100000
    )
    keep_checkpoints: int = setting(2, "how many recent checkpoints to keep", min=1, max=1000)
    max_nonfinite: int = setting(3, "stop after this many non-finite steps in a row", min=1, max=1000)
    tensorboard: bool = setting(
        True, "also log metrics to TensorBoard (skipped with a warning if not installed)"
    )
    log_with: list[str] = setting(
        [],
        "experiment trackers (accelerate's): tensorboard, wandb, mlflow, trackio, aim, comet_ml, clearml, "
        "dvclive; 'all' = every installed one",
    )
    # --- evaluation and early warnings ----------------------------------------------------------
    eval_every: int = setting(
        10, "evaluate on the fixed held-out set every N iterations (0 = never)", min=0, max=100000
    )
    eval_prompts: list[str] = setting([], "evaluation prompts (default: the training prompts)")
    eval_prompts_file: str | None = setting(None, "file of evaluation prompts, one per line")
    eval_samples: int = setting(4, "images per evaluation (fixed prompts and seeds)", min=1, max=256)
    eval_few_steps: int = setting(4, "also evaluate at this few-step count (0 = skip)", min=0, max=200)
    eval_quality: str = setting(
        "niqe",
        "independent no-reference quality score logged at evaluations: niqe (installs with the pack), "
        "brisque ([iqa] extra), another reward id, or '' for none",
    )
    monitor_rewards: list[RewardSpec] = setting([], "rewards scored at evaluations but never trained on")
    warn_rho: float = setting(
        1.10, "warn when the evaluation's mean per-step rho exceeds this", min=0.0, max=10.0, step=0.01
    )
    warn_quality_drop: float | None = setting(
        None,
        "warn when the quality score falls this far below the base model's (null: the score's own "
        "tolerance, niqe 1.0, brisque 10)",
        min=0.0,
        max=1e6,
    )
    stop_on_warning: bool = setting(False, "stop training at the first warning (the best LoRA is kept)")
    keep_best: str = setting(
        "reward",
        "also keep the best LoRA: 'reward' (highest eval reward with quality within "
        "warn_quality_drop of the base), 'quality', or 'none'",
        choices=("reward", "quality", "none"),
    )

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        for key in ("rewards", "monitor_rewards"):
            if not isinstance(getattr(self, key), (list, tuple, type(None))):
                raise ValueError(
                    f"{key} must be a list of reward names or mappings, got {getattr(self, key)!r}"
                )
        self.rewards = [_reward_spec(r) for r in self.rewards or []]
        self.monitor_rewards = [_reward_spec(r) for r in self.monitor_rewards or []]
        coerce_numbers(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = canonical_keys(raw)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {', '.join(sorted(known))}")
        return cls(**raw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"config file {path} must hold a mapping of keys to values")
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def load_prompts(self) -> list[str]:
        """The prompt list: `prompts` plus the lines of `prompts_file`."""
        prompts = list(self.prompts)
        if self.prompts_file:
            prompts += read_prompt_file(self.prompts_file, "prompts_file")
        prompts = [p.strip() for p in prompts if p.strip()]
        if not prompts:
            raise ValueError("no prompts: give `prompts` in the config or a non-empty --prompts FILE")
        return prompts

    def load_eval_prompts(self, training: list[str]) -> list[str]:
        """`eval_prompts` plus the lines of `eval_prompts_file`; the training prompts if both are empty."""
        prompts = list(self.eval_prompts)
        if self.eval_prompts_file:
            prompts += read_prompt_file(self.eval_prompts_file, "eval_prompts_file")
        return [p.strip() for p in prompts if p.strip()] or training

    def validate(self) -> None:
        """Reject impossible settings before any model is loaded, naming the key."""
        for f in fields(self):
            check_value(TrainConfig, f.name, getattr(self, f.name))
        for ok, msg in _cross_checks(self):
            if not ok:
                raise ValueError(msg)


def _cross_checks(c: TrainConfig) -> list[tuple[bool, str]]:
    """Rules a single key's declaration cannot say: (holds, message when it does not)."""
    specs = [*c.rewards, *c.monitor_rewards]
    unknown = [s.name for s in specs if s.name not in REGISTRY]
    trackers = tracker_problem(c.log_with)
    return [
        (
            c.method != "dpo" or c.micro_batch_size >= 2,
            "micro_batch_size must be >= 2 for dpo (a pair per pass)",
        ),
        (
            c.normguard_form != "paper" or c.normguard_margin == 0,
            "normguard_form 'paper' has no margin: set normguard_margin to 0 (or use form 'linear')",
        ),
        (
            not c.offload or c.gradient_checkpointing,
            "offload needs gradient_checkpointing: without it autograd keeps every block's weights on the "
            "device until backward, so streaming them saves nothing",
        ),
        (bool(c.rewards), "no reward: name at least one (--reward NAME or `rewards:` in the config)"),
        (not unknown, f"unknown reward {(unknown or [''])[0]!r}; available: {', '.join(sorted(REGISTRY))}"),
        (
            all(is_finite_number(s.weight) for s in specs),
            f"a reward weight must be a finite number, got {[s.weight for s in specs]}",
        ),
        (
            c.eval_quality in ("", *REGISTRY),
            f"eval_quality must be '' or a reward id ({', '.join(sorted(REGISTRY))}), got {c.eval_quality!r}",
        ),
        (not trackers, trackers),
        (
            bool(c.lora_name) and not {"/", "\\"} & set(c.lora_name) and c.lora_name not in (".", ".."),
            f"lora_name must be a plain file name, got {c.lora_name!r}",
        ),
    ]


def canonical_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with old key names (KEY_ALIASES) renamed; both names at once is an error."""
    out = dict(raw)
    for old, new in KEY_ALIASES.items():
        if old in out:
            if new in out:
                raise ValueError(f"config key {old!r} is the old name of {new!r}: give only {new!r}")
            out[new] = out.pop(old)
    return out


def config_fields(settings: Any) -> dict[str, Any]:
    """The fields of dataclass `settings` named like TrainConfig keys, for TrainConfig.replace();
    None means "keep TrainConfig's default"."""
    keys = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in dataclasses.asdict(settings).items() if k in keys and v is not None}


def _reward_spec(raw: Any) -> RewardSpec:
    if isinstance(raw, RewardSpec):
        return raw
    if isinstance(raw, str):
        return RewardSpec(name=raw)
    if isinstance(raw, dict):
        known = {f.name for f in fields(RewardSpec)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in reward {raw}; known: {', '.join(sorted(known))}")
        return RewardSpec(**raw)
    raise ValueError(f"a reward is a name or a mapping with name/weight/path, got {raw!r}")
