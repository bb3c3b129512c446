"""One dataclass for a training run; the YAML file and the CLI flags both map onto it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .rewards import REGISTRY, RewardSpec

METHODS = ("nft", "awm", "dpo", "grpo")

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
}


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class TrainConfig:
    # --- model --------------------------------------------------------------------------------
    model: str = _help(
        "'builtin' (the shipped TinyFlow model), or a diffusers SD3/FLUX.1 folder or cached repo id",
        default="builtin",
    )
    device: str = _help("'auto' (CUDA if present), 'cpu', 'cuda', 'cuda:1'...", default="auto")
    precision: str = _help("'auto' (bf16 on CUDA, fp32 on CPU), 'fp32', 'bf16' or 'fp16'", default="auto")
    gradient_checkpointing: bool = _help(
        "recompute activations in backward: less memory, ~1.3x slower", default=False
    )
    fp8_base: bool = _help(
        "store the frozen base weights in float8 (about half the memory; ~1.1x slower)", default=False
    )
    offload_text_encoders: bool = _help(
        "move text encoders to the CPU once the prompts are encoded", default=True
    )
    decode_batch_size: int = _help("images the VAE decodes at once (lower saves memory)", default=8)
    guidance: float | None = _help(
        "distilled guidance for guidance-distilled models (FLUX.1-dev)", default=None
    )
    lora_rank: int = _help("LoRA rank", default=16)
    lora_alpha: float | None = _help("LoRA alpha (default: equal to the rank, i.e. scale 1)", default=None)
    lora_targets: list[str] | None = _help(
        "module names the LoRA adapts (default: attention projections)", default=None
    )
    init_lora: str | None = _help(
        "start from this LoRA file (exported by normguard, same rank/targets)", default=None
    )
    lora_dtype: str = _help("precision of the saved LoRA file: fp32, bf16 or fp16", default="fp32")
    lora_name: str = _help("file name (without .safetensors) of the exported LoRA", default="normguard_lora")
    # --- data and rewards ---------------------------------------------------------------------
    prompts: list[str] = _help("training prompts", default_factory=list)
    prompts_file: str | None = _help(
        "UTF-8 file, one prompt per line (blank lines and # comments ignored)", default=None
    )
    rewards: list[RewardSpec] = _help("rewards with weights", default_factory=list)
    reward_normalize_each: bool = _help(
        "turn each reward into advantages before the weighted sum", default=False
    )
    reward_device: str | None = _help("device for reward models (default: the training device)", default=None)
    height: int | None = _help("image height (default: the model's native size)", default=None)
    width: int | None = _help("image width (default: the model's native size)", default=None)
    # --- RL -----------------------------------------------------------------------------------
    method: str = _help("base RL method: nft, awm, dpo or grpo", default="nft")
    iterations: int = _help("RL iterations (rollouts -> rewards -> one optimizer step)", default=100)
    groups_per_iteration: int = _help("prompts per iteration, over all processes", default=2)
    group_size: int = _help("samples per prompt (group-relative advantages need >= 2)", default=8)
    sample_steps: int = _help("sampler steps per rollout", default=10)
    cfg: float = _help("classifier-free guidance scale of rollouts (1 = off)", default=1.0)
    train_timesteps: int = _help("timesteps (or SDE steps for grpo) trained per sample", default=4)
    timestep_fraction: float = _help(
        "train on timesteps from this first (noisiest) fraction of the schedule", default=0.8
    )
    micro_batch_size: int = _help("samples per forward/backward pass", default=8)
    lr: float = _help("AdamW learning rate", default=1e-4)
    weight_decay: float = _help("AdamW weight decay", default=1e-4)
    grad_clip: float = _help("max gradient norm", default=1.0)
    adv_std: str = _help("advantage normalisation: 'group' std or 'batch' std", default="group")
    adv_clip: float = _help("advantage clip (also NFT's A_max)", default=5.0)
    kl_weight: float = _help(
        "KL-to-reference weight (awm, grpo; reuses NormGuard's reference pass)", default=0.0
    )
    nft_beta: float = _help("DiffusionNFT guidance strength beta", default=1.0)
    nft_ema_rate: float = _help("old-policy EMA decay ramp per optimizer step", default=0.001)
    nft_ema_max: float = _help("old-policy EMA decay ceiling", default=0.5)
    awm_time_weight: str = _help(
        "AWM timestep weighting: 'uniform', 'sigma', or 'ghuber' (the AWM code's default: "
        "sigma * mse^p / p, p = awm_ghuber_power)",
        default="uniform",
    )
    awm_ghuber_power: float = _help("power p of AWM's generalised-Huber weighting", default=0.25)
    awm_advantage_max: float = _help(
        "AWM advantage scaling: clipped advantages are rescaled to [-this, this] (the AWM code uses 1; "
        "0 = off)",
        default=0.0,
    )
    awm_ema_kl_weight: float = _help(
        "AWM EMA-KL: weight of ||v - v_ema||^2 towards an EMA of the adapter (the AWM code uses 1; 0 = off)",
        default=0.0,
    )
    awm_ema_max: float = _help(
        "decay ceiling of AWM's EMA (ramps by nft_ema_rate per step, as NFT's old policy)", default=0.3
    )
    dpo_beta: float = _help("flow Diffusion-DPO beta", default=100.0)
    dpo_regime: str = _help(
        "DPO data and reference: 'mixed' (policy rollouts, frozen reference), 'offline' (rollouts "
        "from the frozen reference), 'online' (policy rollouts, reference synced to the policy every "
        "dpo_ref_sync_every iterations)",
        default="mixed",
    )
    dpo_ref_sync_every: int = _help("online DPO: iterations between reference syncs", default=10)
    grpo_eta: float = _help("Flow-GRPO SDE noise level a", default=0.7)
    grpo_clip_range: float = _help("Flow-GRPO PPO clip range", default=1e-4)
    grpo_detach_uncond: bool = _help(
        "with cfg > 1, no gradient through the unconditional branch (flow_grpo since July 2025)",
        default=True,
    )
    # --- NormGuard ----------------------------------------------------------------------------
    # Defaults chosen by benchmarks/paper_claims.py (docs/paper_claims.md, "Penalty sweep"): the squared
    # hinge at weight 10 keeps >= 97% of the reward gain on a magnitude-free reward with NFT, AWM and
    # DPO; the linear hinge at weight 1 cost AWM 16% of it. Raise the weight for more protection.
    normguard_weight: float = _help("NormGuard penalty weight lambda (0 turns it off)", default=10.0)
    normguard_form: str = _help(
        "hinge form: 'linear', 'squared', or 'paper' (exactly the abstract's relu(||v|| - ||v_ref||): "
        "linear, absolute, no margin; normguard_relative is ignored)",
        default="squared",
    )
    normguard_relative: bool = _help(
        "hinge on ||v||/||v_ref|| - 1 (scale-free) instead of the difference", default=True
    )
    normguard_margin: float = _help("tolerance before the hinge activates", default=0.0)
    normguard_reduction: str = _help("norm over each 'sample' or per 'token'", default="sample")
    # --- run ----------------------------------------------------------------------------------
    out: str = _help(
        "run directory (an existing run with the same config is resumed)", default="runs/normguard"
    )
    seed: int = _help("seed of every random draw (rollout noise, prompts, timesteps)", default=0)
    checkpoint_every: int = _help("save a checkpoint and the LoRA every N iterations", default=10)
    keep_checkpoints: int = _help("how many recent checkpoints to keep", default=2)
    max_nonfinite: int = _help("stop after this many non-finite steps in a row", default=3)
    tensorboard: bool = _help("also log metrics to TensorBoard", default=True)
    # --- evaluation and early warnings ----------------------------------------------------------
    eval_every: int = _help("evaluate on the fixed held-out set every N iterations (0 = never)", default=10)
    eval_prompts: list[str] = _help(
        "evaluation prompts (default: the training prompts)", default_factory=list
    )
    eval_prompts_file: str | None = _help("file of evaluation prompts, one per line", default=None)
    eval_samples: int = _help("images per evaluation (fixed prompts and seeds)", default=4)
    eval_few_steps: int = _help("also evaluate at this few-step count (0 = skip)", default=4)
    eval_quality: str = _help(
        "independent no-reference quality score logged at evaluations ('' = none)", default="brisque"
    )
    monitor_rewards: list[RewardSpec] = _help(
        "rewards scored at evaluations but never trained on", default_factory=list
    )
    warn_rho: float = _help("warn when the evaluation's mean per-step rho exceeds this", default=1.10)
    warn_quality_drop: float = _help(
        "warn when the quality score falls this far below the base model's", default=10.0
    )
    stop_on_warning: bool = _help("stop training at the first warning (the best LoRA is kept)", default=False)
    keep_best: str = _help(
        "also keep the best LoRA: 'reward' (highest eval reward with quality within "
        "warn_quality_drop of the base), 'quality', or 'none'",
        default="reward",
    )

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.rewards = [_reward_spec(r) for r in self.rewards or []]
        self.monitor_rewards = [_reward_spec(r) for r in self.monitor_rewards or []]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
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
            path = Path(self.prompts_file)
            if not path.exists() or path.is_dir():  # exists(): pipes such as <(...) are fine
                raise FileNotFoundError(f"prompts_file {path} does not exist")
            prompts += read_prompt_lines(path.read_text(encoding="utf-8"))
        prompts = [p.strip() for p in prompts if p.strip()]
        if not prompts:
            raise ValueError("no prompts: give `prompts` in the config or a non-empty --prompts FILE")
        return prompts

    def load_eval_prompts(self, training: list[str]) -> list[str]:
        """`eval_prompts` plus the lines of `eval_prompts_file`; the training prompts if both are empty."""
        prompts = list(self.eval_prompts)
        if self.eval_prompts_file:
            path = Path(self.eval_prompts_file)
            if not path.exists() or path.is_dir():
                raise FileNotFoundError(f"eval_prompts_file {path} does not exist")
            prompts += read_prompt_lines(path.read_text(encoding="utf-8"))
        return [p.strip() for p in prompts if p.strip()] or training

    def validate(self) -> None:
        """Reject impossible settings before any model is loaded, naming the key."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.method in METHODS, f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        need(
            self.group_size >= 2,
            f"group_size must be >= 2 for group-relative advantages, got {self.group_size}",
        )
        need(self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}")
        need(
            self.groups_per_iteration >= 1,
            f"groups_per_iteration must be >= 1, got {self.groups_per_iteration}",
        )
        need(self.sample_steps >= 1, f"sample_steps must be >= 1, got {self.sample_steps}")
        need(self.train_timesteps >= 1, f"train_timesteps must be >= 1, got {self.train_timesteps}")
        need(
            0 < self.timestep_fraction <= 1,
            f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}",
        )
        need(self.micro_batch_size >= 1, f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        need(
            self.method != "dpo" or self.micro_batch_size >= 2,
            "micro_batch_size must be >= 2 for dpo (a pair per pass)",
        )
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.normguard_weight >= 0, f"normguard_weight must be >= 0, got {self.normguard_weight}")
        need(self.normguard_margin >= 0, f"normguard_margin must be >= 0, got {self.normguard_margin}")
        need(
            self.normguard_form in ("linear", "squared", "paper"),
            f"normguard_form must be 'linear', 'squared' or 'paper', got {self.normguard_form!r}",
        )
        need(
            self.normguard_form != "paper" or self.normguard_margin == 0,
            "normguard_form 'paper' has no margin: set normguard_margin to 0 (or use form 'linear')",
        )
        need(
            self.normguard_reduction in ("sample", "token"),
            f"normguard_reduction must be 'sample' or 'token', got {self.normguard_reduction!r}",
        )
        need(self.adv_std in ("group", "batch"), f"adv_std must be 'group' or 'batch', got {self.adv_std!r}")
        need(
            self.awm_time_weight in ("uniform", "sigma", "ghuber"),
            f"awm_time_weight must be 'uniform', 'sigma' or 'ghuber', got {self.awm_time_weight!r}",
        )
        need(self.awm_ghuber_power > 0, f"awm_ghuber_power must be > 0, got {self.awm_ghuber_power}")
        need(self.awm_advantage_max >= 0, f"awm_advantage_max must be >= 0, got {self.awm_advantage_max}")
        need(self.awm_ema_kl_weight >= 0, f"awm_ema_kl_weight must be >= 0, got {self.awm_ema_kl_weight}")
        need(0 <= self.awm_ema_max < 1, f"awm_ema_max must be in [0, 1), got {self.awm_ema_max}")
        need(
            self.dpo_regime in ("mixed", "offline", "online"),
            f"dpo_regime must be 'mixed', 'offline' or 'online', got {self.dpo_regime!r}",
        )
        need(self.dpo_ref_sync_every >= 1, f"dpo_ref_sync_every must be >= 1, got {self.dpo_ref_sync_every}")
        need(
            self.precision in ("auto", "fp32", "bf16", "fp16"),
            f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}",
        )
        need(
            self.lora_dtype in ("fp32", "bf16", "fp16"),
            f"lora_dtype must be fp32, bf16 or fp16, got {self.lora_dtype!r}",
        )
        need(self.cfg >= 1.0, f"cfg must be >= 1 (1 = no guidance), got {self.cfg}")
        need(
            self.keep_best in ("none", "reward", "quality"),
            f"keep_best must be 'none', 'reward' or 'quality', got {self.keep_best!r}",
        )
        need(
            self.eval_every >= 0 and self.eval_samples >= 1 and self.eval_few_steps >= 0,
            "eval_every and eval_few_steps must be >= 0 and eval_samples >= 1",
        )
        need(bool(self.rewards), "no reward: name at least one (--reward NAME or `rewards:` in the config)")
        need(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        for spec in [*self.rewards, *self.monitor_rewards]:
            need(
                spec.name in REGISTRY,
                f"unknown reward {spec.name!r}; available: {', '.join(sorted(REGISTRY))}",
            )
        need(
            self.lora_name
            and "/" not in self.lora_name
            and "\\" not in self.lora_name
            and self.lora_name not in (".", ".."),
            f"lora_name must be a plain file name, got {self.lora_name!r}",
        )


def read_prompt_lines(text: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are ignored."""
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


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
