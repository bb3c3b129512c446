"""The RL loop: rollouts -> rewards -> group advantages -> base loss + NormGuard -> AdamW.

Every random draw of iteration i comes from generators seeded by (seed, i, group, sample), so a
resumed run repeats the uninterrupted one and the samples do not depend on how groups are split
over processes. Data-parallel training is accelerate's: each process rolls out whole groups, the
adapter's gradients are all-reduced by the prepared (DDP/FSDP) module.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from safetensors.torch import load_file

from .backends import FlowBackend, cond_cat, load_backend, training_attention
from .callbacks import Callback, CallbackList, MetricsWriter
from .checkpoint import Checkpoint, RunDir
from .config import TrainConfig
from .distributed import full_tensor, load_optimizer_state, optimizer_state, shard, shard_like, uses_fsdp
from .dtypes import resolve_dtype
from .evaluation import DriftMonitor, Evaluation, Evaluator, load_monitors, quality_key, save_png
from .lora import NonFiniteLoRA, all_finite, build_metadata, save_lora
from .methods import Method, RolloutData, batch_size, make_method, select, step_distillation_warning
from .old_policy import OldPolicy
from .penalty import norm_stats, normguard_penalty, resolve_form
from .rewards import RewardSet, build_rewards
from .rollout import guided_velocity, randn, sample
from .trackers import Trackers, installed_trackers, resolve_trackers

log = logging.getLogger("normguard")


@dataclass
class TrainResult:
    run_dir: Path
    lora_path: Path | None
    iterations: int  # completed iterations
    status: str  # "finished", "interrupted" or "stopped: <why>"
    metrics: dict[str, Any] = field(default_factory=dict)  # the last iteration's


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of integers (independent streams per tuple)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(parts)).generate_state(1)[0]))


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    return Accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available())


class Trainer:
    """Holds what one run needs; `run()` is the loop. Use `train(cfg)` unless you embed it."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        backend: FlowBackend | None = None,
        rewards: RewardSet | None = None,
        callbacks: Sequence[Callback] = (),
        accelerator: Accelerator | None = None,
        new_run: bool = False,
    ):
        cfg.validate()
        self.cfg, self.prompts = cfg, cfg.load_prompts()
        self._own_accelerator = accelerator is None
        self.acc = acc = accelerator or make_accelerator(cfg)
        world, rank = acc.num_processes, acc.process_index
        if cfg.groups_per_iteration % world:
            raise ValueError(
                f"groups_per_iteration ({cfg.groups_per_iteration}) must be a multiple of the number "
                f"of processes ({world}): every process samples whole groups"
            )
        per = cfg.groups_per_iteration // world
        self.fsdp = uses_fsdp(acc)
        if self.fsdp and cfg.eval_every:
            raise ValueError(
                "eval_every must be 0 under FSDP: evaluation runs on the main process only, and a sharded "
                "model needs every process for each forward; evaluate the saved LoRA afterwards"
            )
        self.local_groups = range(rank * per, (rank + 1) * per)
        self.device = acc.device if (cfg.device == "auto" or world > 1) else torch.device(cfg.device)
        # the run folder: decided by the main process, shared with the others
        root = [str(RunDir.open(cfg.out, cfg, new_run=new_run).root) if acc.is_main_process else None]
        broadcast_object_list(root)
        self.run_dir = RunDir(Path(root[0]))

        torch.manual_seed(cfg.seed)  # LoRA init draws from the global generator
        self.backend = backend or load_backend(
            cfg.model,
            self.device,
            resolve_dtype(cfg.precision, self.device),
            guidance=cfg.guidance,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        if not self.backend.named_trainable():
            self.backend.add_lora(cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_targets or ()))
            if cfg.init_lora:  # a checkpoint, when there is one, overrides this below
                if not Path(cfg.init_lora).is_file():
                    raise FileNotFoundError(f"init_lora {cfg.init_lora} does not exist")
                self.backend.load_lora_state_dict(load_file(cfg.init_lora), f"init_lora {cfg.init_lora}")
            if cfg.fp8_base:
                self.backend.store_base_in_fp8()
        self.rewards = rewards or build_rewards(
            cfg.rewards, cfg.reward_device or self.device, cfg.reward_normalize_each
        )
        self.method: Method = make_method(cfg)
        self.warnings = [w for w in [step_distillation_warning(cfg, self.backend.step_distilled())] if w]
        for w in self.warnings:
            log.warning(w)
        self.needs_ref = self.method.needs_ref or cfg.normguard_weight > 0
        self.named = self.backend.named_trainable()
        self.params = list(self.named.values())
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.old = (
            OldPolicy(self.named, cfg.nft_ema_rate, cfg.nft_ema_max, self.method.old_schedule())
            if self.method.needs_old
            else None
        )
        self.state = {"iteration": 0, "optimizer_steps": 0, "nonfinite_streak": 0, "nonfinite_total": 0}
        self.resumed_from = self.run_dir.newest_readable_checkpoint()
        optimizer_saved = self._restore(self.resumed_from) if self.resumed_from is not None else None
        if self.fsdp:
            self._shard(optimizer_saved)
        else:
            if world > 1:
                self.backend.wrap_for_training(acc.prepare_model)
            self.optimizer = acc.prepare_optimizer(self.optimizer)
        self.height, self.width = (
            cfg.height or self.backend.default_size()[0],
            cfg.width or self.backend.default_size()[1],
        )
        self.latent_shape = self.backend.latent_shape(self.height, self.width)
        self.sigmas = self.backend.schedule(cfg.sample_steps, self.height, self.width)
        self._cond_cache: dict[str, Any] = {}
        eval_prompts = cfg.load_eval_prompts(self.prompts)
        self.encode([*self.prompts, *eval_prompts, ""])  # every prompt once; the encoders can then leave
        if cfg.offload_text_encoders:
            self.backend.offload_text_encoders()
        self.evaluator, self.drift = None, DriftMonitor(cfg, None)
        if cfg.eval_every and acc.is_main_process:  # evaluation runs on the main process only
            monitors = load_monitors(cfg, self.device, self.warnings)
            self.drift = DriftMonitor(cfg, quality_key(cfg, monitors))
            self.evaluator = Evaluator(
                cfg,
                self.backend,
                self.encode,
                self.decode,
                self.rewards,
                monitors,
                eval_prompts,
                self.latent_shape,
                self.height,
                self.width,
            )
        if "drift" in self.state:
            self.drift.load_state_dict(self.state["drift"])
        resume_at = self.state["iteration"] if self.resumed_from is not None else None
        writers = (
            [MetricsWriter(self.run_dir.root, resume_at), *self._trackers(resume_at)]
            if acc.is_main_process
            else []
        )
        self.callbacks = CallbackList([*writers, *callbacks] if acc.is_main_process else [])

    def _trackers(self, resume_at: int | None) -> list[Callback]:
        """log_with's trackers, plus TensorBoard when `tensorboard` is on and it is installed."""
        names = resolve_trackers(self.cfg.log_with)
        if self.cfg.tensorboard and "tensorboard" not in names:
            if "tensorboard" in installed_trackers():
                names.append("tensorboard")
            else:
                log.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        if not names:
            return []
        return [Trackers(names, self.run_dir.root, self.cfg.to_dict(), resume_at)]

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, state = self.cfg, self.state
        result = TrainResult(self.run_dir.root, None, state["iteration"], "finished")
        self.callbacks(
            "on_train_start",
            {
                "iterations": cfg.iterations,
                "start_iteration": state["iteration"],
                "run_dir": str(self.run_dir.root),
                "method": cfg.method,
                "warnings": self.warnings,
            },
        )
        consistent = True  # the weights match state["iteration"] (false only while an update is applied)
        saved = False  # not the LoRA path: that is None on all but the main process
        try:
            if self.drift.base is None:
                self.evaluate(0)  # the base model's numbers: what drift is measured against
            for it in range(state["iteration"], cfg.iterations):
                t0 = self._clock()
                gen = generator(cfg.seed, it)
                data, metrics = self.collect(it, gen)
                consistent = False
                metrics |= self.optimize(data, gen)
                if not all_finite(self.params):
                    result.status = (
                        f"failed: the LoRA weights became non-finite at iteration {it + 1}; nothing was saved "
                        f"after iteration {self._saved_iteration()} (its LoRA and checkpoint are kept)"
                    )
                    log.error(result.status)
                    break
                state["iteration"] = it + 1
                consistent = True
                metrics["time_iteration"] = self._clock() - t0
                if self.device.type == "cuda":  # what the iteration held at most, per process
                    metrics["memory_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                    torch.cuda.reset_peak_memory_stats(self.device)
                stop = None
                if cfg.eval_every and ((it + 1) % cfg.eval_every == 0 or it + 1 == cfg.iterations):
                    ev = self.evaluate(it + 1)
                    if ev is not None:
                        metrics |= ev.metrics
                        if ev.warnings and cfg.stop_on_warning:
                            stop = ev.warnings[0]
                    stop = self._agree(stop)
                if state["nonfinite_streak"] >= cfg.max_nonfinite:
                    stop = (
                        f"{state['nonfinite_streak']} non-finite steps in a row; the LoRA holds the last "
                        f"good weights (iteration {it + 1})"
                    )
                result.metrics, result.iterations = metrics, it + 1
                self.callbacks("on_iteration_end", it + 1, metrics)
                if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations or stop:
                    result.lora_path, saved = self.save(), True
                if stop:
                    result.status = f"stopped: {stop}"
                    break
            if result.status.startswith("failed"):
                result.lora_path = self._last_lora()
            elif not saved:
                result.lora_path = self.save(checkpoint=False)
        except NonFiniteLoRA as e:
            result.status, result.lora_path = f"failed: {e}", self._last_lora()
            log.error(result.status)
        except BaseException as e:
            result.status = "interrupted"
            # under FSDP saving needs every process: the last checkpoint stands
            if not self.fsdp and all_finite(self.params):
                try:  # keep the last good LoRA; a full disk must not hide the first error
                    result.lora_path = self.save(checkpoint=consistent)
                except Exception as save_error:
                    log.error("could not save at the interruption (%s): %s", type(e).__name__, save_error)
            raise
        finally:
            self.callbacks("on_train_end", result)
            self._close_process_group(wait=result.status != "interrupted")
        return result

    def _close_process_group(self, wait: bool) -> None:
        """Ranks finish together and the process group is torn down before the interpreter exits (a gloo
        group left to interpreter teardown can abort the process). Only for an accelerator we made.
        The DDP wrapper goes first: its reducer keeps the gloo group alive past destroy_process_group,
        and a gloo group freed during interpreter teardown aborts ("terminate called without an
        active exception": 2 of 25 two-rank CPU runs under load before this, 0 of 60 after)."""
        if self._own_accelerator and torch.distributed.is_available() and torch.distributed.is_initialized():
            if wait:
                self.acc.wait_for_everyone()
            self.backend.unwrap_for_training()
            self.acc.free_memory()  # also collects garbage
            torch.distributed.destroy_process_group()

    def collect(self, it: int, gen: torch.Generator) -> tuple[RolloutData, dict[str, Any]]:
        """Roll out this process's groups, score them, and turn rewards into advantages."""
        cfg, b = self.cfg, self.backend
        order = torch.randperm(len(self.prompts), generator=gen)
        group_prompts = [self.prompts[order[g % len(self.prompts)]] for g in self.local_groups]
        prompts = [p for p in group_prompts for _ in range(cfg.group_size)]
        gens = [generator(cfg.seed, it, g, j) for g in self.local_groups for j in range(cfg.group_size)]
        cond = self.encode(prompts)
        uncond = (
            self.encode([""] * len(prompts)) if (cfg.cfg_scale > 1 or self.method.train_cfg > 1) else None
        )
        t_sample = self._clock()
        # DiffusionNFT collects data with its old policy, offline DPO with the frozen reference
        rollout_model = {
            "old": self.old.swapped_in if self.old is not None else None,
            "reference": b.reference,
        }
        with (rollout_model.get(self.method.samples_with) or nullcontext)():
            roll = sample(
                b,
                cond,
                randn(self.latent_shape, gens, self.device),
                self.sigmas,
                uncond=uncond,
                cfg=cfg.cfg_scale,
                sde_eta=self.method.sde_eta,
                generators=gens,
                on_step=lambda k, n: self.callbacks("on_sample_step", k, n),
            )
        t_decode = self._clock()
        images = self.decode(roll.latents)
        t_reward = self._clock()
        parts = self.rewards.score(images, prompts)
        total = self.rewards.total(parts)
        adv = self.rewards.advantages(
            parts,
            cfg.group_size,
            std=cfg.adv_std,
            batch_std=lambda r: self.acc.gather(r.to(self.device)).float().std().cpu(),
        )
        self.callbacks("on_rollout", it + 1, images.float().cpu(), prompts, total)
        everyone = self.acc.gather(total.to(self.device)).float()
        metrics = {
            "reward_mean": everyone.mean().item(),
            "reward_std": everyone.std().item(),
            "time_sample": t_decode - t_sample,
            "time_decode": t_reward - t_decode,
            "time_reward": self._clock() - t_reward,
        }
        if len(parts) > 1:
            metrics |= {
                f"reward/{k}": self.acc.gather(v.to(self.device)).float().mean().item()
                for k, v in parts.items()
            }
        data = RolloutData(
            x0=roll.latents,
            cond=cond,
            uncond=uncond,
            adv=adv.to(self.device),
            group_size=cfg.group_size,
            sigmas=self.sigmas,
            states=roll.states,
            log_probs=roll.log_probs,
            generators=gens,
        )
        return data, metrics

    def optimize(self, data: RolloutData, gen: torch.Generator) -> dict[str, Any]:
        """One optimizer step over K timesteps x micro-batches of this iteration's samples."""
        cfg, state = self.cfg, self.state
        batches = self.method.batches(data, gen)
        unit = self.method.units_per_row
        mb = max(unit, cfg.micro_batch_size // unit * unit)
        chunks = [select(b, slice(i, i + mb)) for b in batches for i in range(0, batch_size(b), mb)]
        rows = sum(batch_size(c) for c in chunks)
        sums: dict[str, float] = {}
        t_passes = self._clock()
        for i, chunk in enumerate(chunks):
            n = batch_size(chunk)
            last = i == len(chunks) - 1
            wrapper = self.backend.training_wrapper()
            sync = nullcontext() if (last or wrapper is None) else self.acc.no_sync(wrapper)
            with sync:
                loss, stats = self.loss(chunk)
                with training_attention():  # checkpointed blocks re-run their forward in backward
                    self.acc.backward(loss * (n / rows))
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v * n / rows
            self.callbacks("on_train_step", i + 1, len(chunks))
        t_step = self._clock()
        grad_norm = float(self.acc.clip_grad_norm_(self.params, cfg.grad_clip))
        # the clipped gradients, not only the norm: a NaN clip factor turns finite gradients into NaN
        finite = math.isfinite(grad_norm) and all_finite(p.grad for p in self.params if p.grad is not None)
        if finite:
            self.optimizer.step()
            state["optimizer_steps"] += 1
            state["nonfinite_streak"] = 0
            if self.old is not None:
                self.old.update(state["optimizer_steps"])
        else:  # skip the step: a NaN/inf would poison the adapter and the optimizer state
            state["nonfinite_streak"] += 1
            state["nonfinite_total"] += 1
        self.optimizer.zero_grad(set_to_none=True)
        keys = sorted(sums)
        means = self.acc.reduce(torch.tensor([sums[k] for k in keys], device=self.device), "mean").tolist()
        return {
            **dict(zip(keys, means, strict=True)),
            "grad_norm": grad_norm,
            "skipped_step": int(not finite),
            "nonfinite_total": state["nonfinite_total"],
            "time_train_passes": t_step - t_passes,
            "time_optimizer": self._clock() - t_step,
        }

    def loss(self, b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Base loss + NormGuard on one micro-batch; each model pass runs at most once."""
        cfg = self.cfg

        def forward() -> torch.Tensor:
            return guided_velocity(
                self.backend,
                b["x_t"],
                b["sigma"],
                b["cond"],
                b.get("uncond"),
                self.method.train_cfg,
                detach_uncond=self.method.detach_uncond,
            )

        v_old = v_ref = None
        with torch.no_grad():  # no-grad passes first: the old policy is swapped into the adapter's weights
            if self.old is not None:
                with self.old.swapped_in():
                    v_old = forward()
            if self.needs_ref:
                with self.backend.reference():
                    v_ref = forward()
        v = forward()
        base, stats = self.method.loss(b, v, v_ref, v_old)
        penalty = normguard_penalty(
            v,
            v_ref,
            cfg.normguard_weight,
            form=cfg.normguard_form,
            relative=cfg.normguard_relative,
            margin=cfg.normguard_margin,
            reduction=cfg.normguard_reduction,
        )
        total = base + penalty
        stats |= {
            "loss": total.item(),
            "loss_base": base.item(),
            "penalty": penalty.item(),
            "nonfinite_loss": float(not math.isfinite(total.item())),
        }
        if v_ref is not None:
            stats |= norm_stats(
                v,
                v_ref,
                relative=resolve_form(cfg.normguard_form, cfg.normguard_relative)[1],
                margin=cfg.normguard_margin,
                reduction=cfg.normguard_reduction,
            )
        return total, stats

    # --- helpers ----------------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Encode prompts once per run: text encoders are frozen, so embeddings never change."""
        missing = sorted({p for p in prompts if p not in self._cond_cache})
        if missing:
            enc = self.backend.encode_prompts(missing)
            for i, p in enumerate(missing):
                self._cond_cache[p] = {k: v[i : i + 1] for k, v in enc.items()}
        return cond_cat([self._cond_cache[p] for p in prompts])

    def _clock(self) -> float:
        """Wall time after the device has finished its queued work (CUDA runs asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE decoding in chunks of decode_batch_size (its activations dominate peak memory)."""
        return torch.cat([self.backend.decode(c) for c in latents.split(self.cfg.decode_batch_size)])

    def evaluate(self, iteration: int) -> Evaluation | None:
        """Held-out evaluation (main process): grid, metrics, drift warnings, best LoRA."""
        if self.evaluator is None:
            return None
        ev = self.evaluator(iteration)
        ev.warnings = self.drift.check(ev)
        for w in ev.warnings:
            log.warning(w)
        save_png(ev.grid, self.run_dir.root / "evals" / f"iter-{iteration:06d}.png")
        if self.drift.is_best(ev):
            self.save_lora(f"{self.cfg.lora_name}_best", {"best_iteration": iteration})
        self.state["drift"] = self.drift.state_dict()
        self.callbacks("on_evaluation", ev)
        return ev

    def _agree(self, stop: str | None) -> str | None:
        """The main process's stop decision, shared so that every process stops together."""
        box = [stop]
        if self.acc.num_processes > 1:
            broadcast_object_list(box)
        return box[0]

    def _saved_iteration(self) -> int:
        ckpts = self.run_dir.checkpoints()
        return int(ckpts[-1].name.split("-")[1]) if ckpts else 0

    def _last_lora(self) -> Path | None:
        path = self.run_dir.lora_path(self.cfg.lora_name)
        return path if path.is_file() else None

    def save(self, checkpoint: bool = True) -> Path | None:
        """Export the LoRA (and a checkpoint) from the main process; returns the LoRA's path. Under FSDP
        every process calls it: the sharded tensors are gathered first."""
        if not (self.acc.is_main_process or self.fsdp):
            return None
        lora = self.backend.lora_state_dict() if self.fsdp else None
        if checkpoint:
            tensors = {"adapter": {k: full_tensor(p.detach()) for k, p in self.named.items()}}
            if self.old is not None:
                tensors["old_policy"] = {k: full_tensor(v) for k, v in self.old.shadow.items()}
            optimizer = (
                optimizer_state(self.backend.module, self.optimizer)
                if self.fsdp
                else self.optimizer.state_dict()
            )
        if not self.acc.is_main_process:
            return None
        path = self.save_lora(self.cfg.lora_name, tensors=lora)
        if checkpoint:
            it = self.state["iteration"]
            self.run_dir.save_checkpoint(it, tensors, optimizer, dict(self.state), self.cfg.keep_checkpoints)
            self.callbacks("on_checkpoint", it, path)
        return path

    def save_lora(
        self, name: str, extra: dict[str, Any] | None = None, tensors: dict[str, torch.Tensor] | None = None
    ) -> Path:
        """The adapter (or `tensors`, its export already gathered) as a LoRA file with the run's facts."""
        cfg = self.cfg
        facts = {
            "method": cfg.method,
            "weight": cfg.normguard_weight,
            "form": cfg.normguard_form,
            "relative": cfg.normguard_relative,
            "margin": cfg.normguard_margin,
            "reduction": cfg.normguard_reduction,
            "reward": [{"name": r.name, "weight": r.weight} for r in cfg.rewards],
            "iterations": self.state["iteration"],
            "sample_steps": cfg.sample_steps,
            "cfg": cfg.cfg_scale,
            "lora_rank": cfg.lora_rank,
            "lora_alpha": getattr(self.backend, "lora_alpha", cfg.lora_alpha),
            "seed": cfg.seed,
            **({"init_lora": Path(cfg.init_lora).name} if cfg.init_lora else {}),
            **(extra or {}),
        }
        base = {"normguard.base_model": Path(cfg.model).name, **self.backend.lora_metadata()}  # no user paths
        meta = build_metadata(base, facts, title=name, resolution=f"{self.width}x{self.height}")
        # raises NonFiniteLoRA rather than write NaN/inf (a cast to fp16 can overflow)
        tensors = self.backend.lora_state_dict() if tensors is None else tensors
        return save_lora(self.run_dir.lora_path(name), tensors, meta, cfg.lora_dtype)

    def _restore(self, ckpt: Checkpoint) -> dict[str, Any] | None:
        """Load a checkpoint; under FSDP returns the optimizer state, set once the optimizer is sharded."""
        tensors, optimizer, state = ckpt.tensors, ckpt.optimizer, ckpt.state
        with torch.no_grad():
            for k, p in self.named.items():
                p.copy_(tensors["adapter"][k])
            if self.old is not None:
                for k, v in tensors["old_policy"].items():
                    self.old.shadow[k].copy_(v)
        self.state.update(state)
        if self.acc.is_main_process:
            msg = f"resuming {self.run_dir.root} from iteration {state['iteration']} (checkpoint {ckpt.path})"
            if ckpt.skipped:
                msg += "; newer checkpoints did not read cleanly: " + "; ".join(ckpt.skipped)
            print(f"normguard: {msg}", flush=True)
            log.info(msg)
        if self.fsdp:
            return optimizer
        self.optimizer.load_state_dict(optimizer)
        return None

    def _shard(self, optimizer_saved: dict[str, Any] | None) -> None:
        """FSDP2: shard the denoiser in place. Its parameters become new (sharded) objects, so the adapter's
        handles, the optimizer's and the old policy's copy are taken again from the sharded ones."""
        self.optimizer = shard(self.acc, self.backend.module, self.optimizer)
        self.backend.adopt_sharded_module()
        self.named = self.backend.named_trainable()
        self.params = list(self.named.values())
        if self.old is not None:
            self.old.named = self.named
            self.old.shadow = {k: shard_like(self.old.shadow[k], p) for k, p in self.named.items()}
        if optimizer_saved is not None:
            load_optimizer_state(self.backend.module, self.optimizer, optimizer_saved)


def train(cfg: TrainConfig, **kwargs: Any) -> TrainResult:
    """Run (or resume) RL LoRA training as configured. kwargs: see Trainer."""
    return Trainer(cfg, **kwargs).run()
