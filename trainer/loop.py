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
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from .backends import FlowBackend, PromptCache, load_trainable, training_attention
from .callbacks import Callback, CallbackList, MetricsWriter
from .config import TrainConfig
from .distributed import optimizer_state, prepare, uses_fsdp
from .evaluation import DriftMonitor, Evaluation, Evaluator, load_monitors, quality_key, save_png
from .lora import NonFiniteLoRA, all_finite, build_metadata, run_facts, save_lora
from .methods import Method, RolloutData, batch_size, make_method, step_distillation_warning
from .objective import guarded_loss
from .old_policy import OldPolicy
from .processes import agree, close_process_group, make_accelerator, process_share, shared_run_dir
from .rewards import RewardSet, build_rewards
from .rollout import randn, sample
from .trackers import run_trackers
from .train_state import TrainResult, TrainState, checkpoint_tensors, generator, load_weights, resume_message

__all__ = ["TrainResult", "TrainState", "Trainer", "generator", "train"]

log = logging.getLogger("normguard")


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
        self.acc = accelerator or make_accelerator(cfg)
        self.fsdp = uses_fsdp(self.acc)
        self.local_groups, self.device = process_share(cfg, self.acc)
        self.run_dir = shared_run_dir(cfg, self.acc, new_run)
        if cfg.offload and self.acc.num_processes > 1:
            raise ValueError(
                "offload: single-process runs only (DDP and FSDP keep every weight on the device)"
            )
        self.backend = load_trainable(cfg, self.device, backend)
        self.rewards = rewards or build_rewards(
            cfg.rewards, cfg.reward_device or self.device, cfg.reward_normalize_each
        )
        self._build_optimizer()
        # restore before preparing: the checkpoint holds the plain AdamW's state and the unwrapped
        # adapter, which is what DDP/FSDP and accelerate's optimizer wrapper must start from
        self.optimizer = prepare(self.acc, self.backend, self.optimizer, self.old, self._restore())
        self.named = self.backend.named_trainable()  # FSDP made new (sharded) parameter objects
        self.params = list(self.named.values())
        self._plan_sampling()
        self._encode_prompts()
        self._build_evaluation()
        resume_at = self.state.iteration if self.resumed_from is not None else None
        self.callbacks = CallbackList([])  # the main process writes the metrics and the trackers
        if self.acc.is_main_process:
            root = self.run_dir.root
            trackers = run_trackers(cfg.log_with, cfg.tensorboard, root, cfg.to_dict(), resume_at)
            self.callbacks = CallbackList([MetricsWriter(root, resume_at), *trackers, *callbacks])

    # --- the steps of __init__, in order -----------------------------------------------------------
    def _build_optimizer(self) -> None:
        """The method (and its warnings), AdamW over the adapter, and the old policy's copy of the
        adapter (NFT, AWM's EMA)."""
        cfg = self.cfg
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

    def _restore(self) -> dict[str, Any] | None:
        """The newest checkpoint that reads, into the adapter, old policy and optimizer, and its counters
        (fresh ones without a checkpoint). Under FSDP returns the optimizer state: it is set once the
        optimizer is sharded."""
        self.state, self.resumed_from = TrainState(), self.run_dir.newest_readable_checkpoint()
        if (ckpt := self.resumed_from) is None:
            return None
        self.state = load_weights(ckpt, self.named, self.old)
        if self.acc.is_main_process:
            msg = resume_message(self.run_dir.root, ckpt)
            print(f"normguard: {msg}", flush=True)
            log.info(msg)
        if self.fsdp:
            return ckpt.optimizer
        self.optimizer.load_state_dict(ckpt.optimizer)
        return None

    def _plan_sampling(self) -> None:
        """Image size (the model's own unless configured), latent shape and sigma schedule."""
        cfg = self.cfg
        self.height = cfg.height or self.backend.default_size()[0]
        self.width = cfg.width or self.backend.default_size()[1]
        self.latent_shape = self.backend.latent_shape(self.height, self.width)
        self.sigmas = self.backend.schedule(cfg.sample_steps, self.height, self.width)

    def _encode_prompts(self) -> None:
        """Every prompt (training, evaluation, the empty one for guidance) once, and only then may the
        text encoders leave the device: the cached embeddings are all the run needs from them."""
        self.encode = PromptCache(self.backend.encode_prompts)
        self.eval_prompts = self.cfg.load_eval_prompts(self.prompts)
        self.encode([*self.prompts, *self.eval_prompts, ""])
        if self.cfg.offload_text_encoders:
            self.backend.offload_text_encoders()

    def _build_evaluation(self) -> None:
        """The held-out evaluation and the drift monitor (main process only; the others get a monitor
        that never warns). A resumed run keeps its base-model numbers and best score."""
        cfg = self.cfg
        self.evaluator, self.drift = None, DriftMonitor(cfg, None)
        if cfg.eval_every and self.acc.is_main_process:
            monitors = load_monitors(cfg, self.device, self.warnings)
            self.drift = DriftMonitor(cfg, quality_key(cfg, monitors))
            self.evaluator = Evaluator(
                cfg, self.backend, self.encode, self.decode, self.rewards, monitors, self.eval_prompts,
                self.latent_shape, self.height, self.width,
            )  # fmt: skip
        if self.state.drift is not None:
            self.drift.load_state_dict(self.state.drift)

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, state = self.cfg, self.state
        result = TrainResult(self.run_dir.root, None, state.iteration, "finished")
        info = dict(iterations=cfg.iterations, start_iteration=state.iteration, method=cfg.method)
        self.callbacks(
            "on_train_start", info | {"run_dir": str(self.run_dir.root), "warnings": self.warnings}
        )
        consistent = True  # the weights match state.iteration (false only while an update is applied)
        saved = False  # not the LoRA path: that is None on all but the main process
        try:
            if self.drift.base is None:
                self.evaluate(0)  # the base model's numbers: what drift is measured against
            for it in range(state.iteration, cfg.iterations):
                t0 = self._clock()
                gen = generator(cfg.seed, it)
                data, metrics = self.collect(it, gen)
                consistent = False
                metrics |= self.optimize(data, gen)
                if not all_finite(self.params):
                    result.status = (
                        f"failed: the LoRA weights became non-finite at iteration {it + 1}; nothing was saved "
                        f"after iteration {self.run_dir.saved_iteration()} (its LoRA and checkpoint are kept)"
                    )
                    log.error(result.status)
                    break
                state.iteration, consistent = it + 1, True
                metrics["time_iteration"] = self._clock() - t0
                if self.device.type == "cuda":  # what the iteration held at most, per process
                    metrics["memory_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                    torch.cuda.reset_peak_memory_stats(self.device)
                due = cfg.eval_every > 0 and ((it + 1) % cfg.eval_every == 0 or it + 1 == cfg.iterations)
                ev = self.evaluate(it + 1) if due else None
                metrics |= ev.metrics if ev is not None else {}
                stop = self.stop_reason(ev, due)
                result.metrics, result.iterations = metrics, it + 1
                self.callbacks("on_iteration_end", it + 1, metrics)
                if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations or stop:
                    result.lora_path, saved = self.save(), True
                if stop:
                    result.status = f"stopped: {stop}"
                    break
            if result.status.startswith("failed"):
                result.lora_path = self.run_dir.existing_lora(self.cfg.lora_name)
            elif not saved:
                result.lora_path = self.save(checkpoint=False)
        except NonFiniteLoRA as e:
            result.status, result.lora_path = f"failed: {e}", self.run_dir.existing_lora(self.cfg.lora_name)
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
            if self._own_accelerator:
                close_process_group(self.acc, self.backend, wait=result.status != "interrupted")
        return result

    def stop_reason(self, ev: Evaluation | None, evaluated: bool) -> str | None:
        """Why training stops after this iteration (None: it goes on); every process gets the same
        answer. `ev` is this iteration's evaluation, `evaluated` whether one was due."""
        stop = None
        if evaluated:  # the evaluation ran on the main process only: every process takes its verdict
            warned = ev is not None and ev.warnings and self.cfg.stop_on_warning
            stop = agree(self.acc, ev.warnings[0] if warned else None)
        if self.state.nonfinite_streak >= self.cfg.max_nonfinite:  # the same count on every process
            stop = (
                f"{self.state.nonfinite_streak} non-finite steps in a row; the LoRA holds the last "
                f"good weights (iteration {self.state.iteration})"
            )
        return stop

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
        adv = self.rewards.advantages(
            parts, cfg.group_size, std=cfg.adv_std, batch_std=lambda r: self._everyone(r).std().cpu()
        )
        self.callbacks("on_rollout", it + 1, images.float().cpu(), prompts, self.rewards.total(parts))
        metrics = self.rewards.summary(parts, self._everyone) | {
            "time_sample": t_decode - t_sample,
            "time_decode": t_reward - t_decode,
            "time_reward": self._clock() - t_reward,
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
        chunks = self.method.micro_batches(self.method.batches(data, gen), cfg.micro_batch_size)
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
        state.count_step(applied=finite)
        if finite:  # else skip the step: a NaN/inf would poison the adapter and the optimizer state
            self.optimizer.step()
            if self.old is not None:
                self.old.update(state.optimizer_steps)
        self.optimizer.zero_grad(set_to_none=True)
        keys = sorted(sums)
        means = self.acc.reduce(torch.tensor([sums[k] for k in keys], device=self.device), "mean").tolist()
        return {
            **dict(zip(keys, means, strict=True)),
            "grad_norm": grad_norm,
            "skipped_step": int(not finite),
            "nonfinite_total": state.nonfinite_total,
            "time_train_passes": t_step - t_passes,
            "time_optimizer": self._clock() - t_step,
        }

    def loss(self, b: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Base loss + NormGuard on one micro-batch (see objective.guarded_loss)."""
        return guarded_loss(self.cfg, self.backend, self.method, b, self.old, self.needs_ref)

    # --- helpers ----------------------------------------------------------------------------------
    def _everyone(self, t: torch.Tensor) -> torch.Tensor:
        """This process's values and every other process's, as float32 on the device (a collective)."""
        return self.acc.gather(t.to(self.device)).float()

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
        self.state.drift = self.drift.state_dict()
        self.callbacks("on_evaluation", ev)
        return ev

    def save(self, checkpoint: bool = True) -> Path | None:
        """Export the LoRA (and a checkpoint) from the main process; returns the LoRA's path. Under FSDP
        every process calls it: the sharded tensors are gathered first."""
        if not (self.acc.is_main_process or self.fsdp):
            return None
        lora = self.backend.lora_state_dict() if self.fsdp else None
        if checkpoint:
            tensors = checkpoint_tensors(self.named, self.old)
            module, opt = self.backend.module, self.optimizer
            optimizer = optimizer_state(module, opt) if self.fsdp else opt.state_dict()
        if not self.acc.is_main_process:
            return None
        path = self.save_lora(self.cfg.lora_name, tensors=lora)
        if checkpoint:
            it = self.state.iteration
            self.run_dir.save_checkpoint(
                it, tensors, optimizer, self.state.to_json(), self.cfg.keep_checkpoints
            )
            self.callbacks("on_checkpoint", it, path)
        return path

    def save_lora(
        self, name: str, extra: dict[str, Any] | None = None, tensors: dict[str, torch.Tensor] | None = None
    ) -> Path:
        """The adapter (or `tensors`, its export already gathered) as a LoRA file with the run's facts."""
        cfg = self.cfg
        alpha = getattr(self.backend, "lora_alpha", cfg.lora_alpha)
        facts = run_facts(cfg, self.state.iteration, alpha) | (extra or {})
        base = {"normguard.base_model": Path(cfg.model).name, **self.backend.lora_metadata()}  # no user paths
        meta = build_metadata(base, facts, title=name, resolution=f"{self.width}x{self.height}")
        # raises NonFiniteLoRA rather than write NaN/inf (a cast to fp16 can overflow)
        tensors = self.backend.lora_state_dict() if tensors is None else tensors
        return save_lora(self.run_dir.lora_path(name), tensors, meta, cfg.lora_dtype)


def train(cfg: TrainConfig, **kwargs: Any) -> TrainResult:
    """Run (or resume) RL LoRA training as configured. kwargs: see Trainer."""
    return Trainer(cfg, **kwargs).run()
