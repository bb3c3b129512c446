"""The NormGuard ComfyUI node pack (V3 API, category "NormGuard").

Nodes (ids are public API): NormGuardTrainLoRA, NormGuardTrainOptions, NormGuardLoadPrompts,
NormGuardRewardCombine,
NormGuardScoreImages, VelocityNormProbe, VelocityNormGraph, NormGuardLoraLoader, and one
NormGuardReward<CamelCaseId> per registered reward: NormGuardRewardJpegCompressibility,
NormGuardRewardJpegIncompressibility, NormGuardRewardClipScore, NormGuardRewardPickscore,
NormGuardRewardAesthetic, NormGuardRewardHps, NormGuardRewardOcr, NormGuardRewardBrisque.
Weight-based rewards pick a file or folder of ComfyUI's models/rewards folder (registered with
folder_paths; extra_model_paths.yaml may add locations under the key "rewards").
Socket types: NORMGUARD_REWARD (list of RewardSpec), NORMGUARD_OPTIONS (dict of TrainConfig keys),
NORMGUARD_PROBE_LOG (nodes.probe_log.ProbeLog).

Websocket events (PromptServer.send_sync to the client that queued the prompt; listen in the
frontend with `api.addEventListener(name, e => e.detail)`):

- "normguard.train", from NormGuardTrainLoRA; every payload has "node" (the node's id in the graph)
  and "phase":
    start:      {iterations, start_iteration, method, warnings: [...] (set-up problems, e.g. no
                 quality score; also shown as the node's text)}
    iteration:  {iteration, iterations, metrics: {reward_mean, reward_std, loss, penalty, train_rho,
                 v_norm, v_ref_norm, grad_norm, time_*, and after an evaluation its metrics too:
                 eval_reward, rho_mean, rho_per_step: [...], ...}}  (one per finished iteration;
                 non-finite numbers are null)
    evaluation: {iteration, metrics, warnings: [...]}  (every eval_every iterations and at 0 for
                 the base model: held-out samples, rho per sampler step, drift warnings)
    checkpoint: {iteration}
    end:        {status ("finished", "interrupted", "stopped: ..."), iteration, lora (file name in
                 the loras folder)}
- "normguard.probe", from a VelocityNormProbe'd MODEL at the end of every sampling run:
    {label, node (the probe node's id), reference, rescale, step: [...], sigma: [...], evals: [...],
     norm: [...], norm_cond: [...], norm_uncond: [...], norm_ref: [...], ratio: [...],
     norm_samples: [[...]], ratio_samples: [[...]]}  (one entry per sampler step; null where not
     measured). VelocityNormGraph's ui output "normguard_probe" is the list of these for its logs.
- "normguard.probe.step", from the same MODEL after every sampler step (a live chart point):
    {node, label, steps (the run's step count), step, evals, sigma, norm, norm_cond, norm_uncond,
     norm_ref, ratio, norm_samples, ratio_samples}

Only `probe_log` is importable without ComfyUI; NormGuardExtension is resolved lazily.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "NormGuardExtension":
        from .extension import NormGuardExtension

        return NormGuardExtension
    raise AttributeError(name)
