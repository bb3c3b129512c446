"""Options that follow the reference implementations: flow_grpo's CFG branch and fp32 states, the AWM
code's stabilisers, the DPO regimes, the advantage std, and the step-distilled warning."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PROMPTS

from normguard.trainer.advantages import group_advantages
from normguard.trainer.config import TrainConfig
from normguard.trainer.loop import Trainer, generator
from normguard.trainer.losses import awm_loss
from normguard.trainer.methods import batch_size, select, step_distillation_warning
from normguard.trainer.old_policy import OldPolicy
from normguard.trainer.rollout import guided_velocity, sample
from normguard.trainer.sde import gaussian_log_prob, sde_step_mean


def _lora_backend(tiny_backend):
    tiny_backend.add_lora(4, 4, init="gaussian_nonzero")
    return tiny_backend


def _inputs(backend, n=2):
    cond = backend.encode_prompts(PROMPTS[:n])
    uncond = backend.encode_prompts([""] * n)
    x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return cond, uncond, x, torch.full((n,), 0.7)


def _grads(backend, loss):
    params = list(backend.named_trainable().values())
    return torch.autograd.grad(loss, params)


def test_detached_uncond_carries_gradient_only_through_the_conditional_branch(tiny_backend):
    backend = _lora_backend(tiny_backend)
    cond, uncond, x, s = _inputs(backend)
    cfg = 3.0
    got = _grads(
        backend, guided_velocity(backend, x, s, cond, uncond, cfg, detach_uncond=True).square().sum()
    )
    with torch.no_grad():
        v_u = backend.velocity(x, s, uncond)
    v_c = backend.velocity(x, s, cond)
    want = _grads(backend, (v_u + cfg * (v_c - v_u)).square().sum())
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(got, want, strict=True))
    both = _grads(backend, guided_velocity(backend, x, s, cond, uncond, cfg).square().sum())
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(got, both, strict=True))  # the choice matters
    # the value is the guided velocity either way
    with torch.no_grad():
        assert torch.equal(
            guided_velocity(backend, x, s, cond, uncond, cfg, detach_uncond=True),
            guided_velocity(backend, x, s, cond, uncond, cfg),
        )


@pytest.mark.parametrize("detach", [True, False])
def test_grpo_ratio_is_one_at_the_first_inner_step_with_cfg(tiny_config, detach):
    cfg = tiny_config.replace(
        method="grpo",
        cfg_scale=3.0,
        grpo_detach_uncond=detach,
        eval_every=0,
        micro_batch_size=4,
        train_timesteps=3,
    )
    trainer = Trainer(cfg)
    gen = generator(cfg.seed, 0)
    data, _ = trainer.collect(0, gen)
    assert data.uncond is not None and data.states.dtype == torch.float32
    for b in trainer.method.batches(data, gen):
        for i in range(0, batch_size(b), cfg.micro_batch_size):
            _, stats = trainer.loss(select(b, slice(i, i + cfg.micro_batch_size)))
            assert stats["ratio_dev"] < 1e-6 and stats["clip_frac"] == 0.0


def test_sde_states_stay_float32_in_a_bf16_model_and_reproduce_their_log_probs(tiny_backend):
    backend = _lora_backend(tiny_backend)
    backend.model.to(torch.bfloat16)
    backend.dtype = torch.bfloat16
    cond, _, noise, _ = _inputs(backend)
    sigmas = backend.schedule(4, 16, 16)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(2)]
    roll = sample(backend, cond, noise, sigmas, sde_eta=0.7, generators=gens)
    assert roll.states.dtype == torch.float32
    with torch.no_grad():
        for k in range(4):
            s, s2 = torch.full((2,), float(sigmas[k])), torch.full((2,), float(sigmas[k + 1]))
            v = guided_velocity(backend, roll.states[k], s, cond, None, 1.0)
            m, sd = sde_step_mean(roll.states[k], v, s, s2, eta=0.7, sigma_max=float(sigmas[1]))
            ratio = torch.exp(gaussian_log_prob(roll.states[k + 1], m, sd) - roll.log_probs[k])
            assert (ratio - 1).abs().max() < 1e-6
            # a bf16 copy of the next state (what was stored before) moves the ratio by ~1e-4
            lp_bf16 = gaussian_log_prob(roll.states[k + 1].bfloat16(), m, sd)
            assert (torch.exp(lp_bf16 - roll.log_probs[k]) - 1).abs().max() > 1e-6


def test_awm_ghuber_weighting_and_advantage_max_match_the_awm_code():
    torch.manual_seed(0)
    v, u = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    adv, t = torch.tensor([7.0, -2.0, 0.5, -9.0]), torch.tensor([0.9, 0.5, 0.3, 0.7])
    p = 0.25
    got = awm_loss(v, u, adv, time_weight=t, ghuber_power=p, advantage_max=1.0)
    want = 0.0
    for i in range(4):
        mse = ((v[i] - u[i]) ** 2).mean().item()
        log_prob = -((mse + 1e-10) ** p - 1e-10**p) * t[i].item() / p  # the AWM code's ghuber log-prob
        a = max(-5.0, min(5.0, adv[i].item())) / 5.0 * 1.0
        want += -a * log_prob  # -A * ratio has this gradient at ratio = 1
    assert math.isclose(got.item(), want / 4, rel_tol=1e-5)
    plain = awm_loss(v, u, adv)  # the defaults are the plain advantage-weighted loss
    assert math.isclose(
        plain.item(), (adv.clamp(-5, 5) * ((v - u) ** 2).flatten(1).mean(1)).mean().item(), rel_tol=1e-6
    )


def test_awm_ema_kl_starts_at_zero_and_the_ema_lags_the_policy(tiny_config):
    cfg = tiny_config.replace(method="awm", awm_ema_kl_weight=1.0, awm_time_weight="ghuber", eval_every=0)
    trainer = Trainer(cfg)
    assert trainer.old is not None and trainer.method.samples_with == "policy"
    gen = generator(cfg.seed, 0)
    data, _ = trainer.collect(0, gen)
    stats = trainer.optimize(data, gen)
    assert stats["ema_kl"] == 0.0  # the EMA equals the policy before the first step
    data, _ = trainer.collect(1, generator(cfg.seed, 1))
    stats = trainer.optimize(data, generator(cfg.seed, 1))
    assert stats["ema_kl"] > 0  # after a step the EMA (decay ramping to awm_ema_max) lags behind


def test_dpo_offline_rolls_out_the_frozen_reference(tiny_config):
    cfg = tiny_config.replace(method="dpo", dpo_regime="offline", eval_every=0)
    trainer = Trainer(cfg)
    with torch.no_grad():
        for p in trainer.params:
            p.add_(torch.randn_like(p) * 0.5)  # a policy far from the reference
    off, _ = trainer.collect(0, generator(cfg.seed, 0))
    mixed = Trainer(cfg.replace(dpo_regime="mixed", out=cfg.out + "-mixed"))
    with torch.no_grad():
        for p, q in zip(mixed.params, trainer.params, strict=True):
            p.copy_(q)
    on, _ = mixed.collect(0, generator(cfg.seed, 0))
    ref = Trainer(cfg.replace(out=cfg.out + "-ref"))  # fresh adapter: B = 0, the reference itself
    base, _ = ref.collect(0, generator(cfg.seed, 0))
    assert torch.allclose(off.x0, base.x0, atol=1e-5) and (off.x0 - on.x0).abs().max() > 1e-3


def test_dpo_online_syncs_its_reference_every_n_steps(tiny_config):
    cfg = tiny_config.replace(method="dpo", dpo_regime="online", dpo_ref_sync_every=2, eval_every=0)
    trainer = Trainer(cfg)
    start = {k: v.clone() for k, v in trainer.old.shadow.items()}
    for it in range(2):
        gen = generator(cfg.seed, it)
        data, _ = trainer.collect(it, gen)
        trainer.optimize(data, gen)
        current = {k: p.detach() for k, p in trainer.named.items()}
        synced = all(torch.equal(trainer.old.shadow[k], current[k]) for k in current)
        kept = all(torch.equal(trainer.old.shadow[k], start[k]) for k in start)
        assert (kept, synced) == ((True, False) if it == 0 else (False, True))


def test_old_policy_schedule_overrides_the_ramp():
    p = torch.nn.Parameter(torch.zeros(2))
    old = OldPolicy({"p": p}, 0.001, 0.5, schedule=lambda step: 0.0 if step % 3 == 0 else 1.0)
    with torch.no_grad():
        p.fill_(1.0)
    old.update(1)
    assert torch.equal(old.shadow["p"], torch.zeros(2))
    old.update(3)
    assert torch.equal(old.shadow["p"], torch.ones(2))


def test_batch_std_divides_every_group_by_one_std():
    r = torch.tensor([0.0, 1.0, 10.0, 30.0])
    group = group_advantages(r, 2, std="group")
    batch = group_advantages(r, 2, std="batch")
    assert torch.allclose(group, torch.tensor([-1.0, 1.0, -1.0, 1.0]) / math.sqrt(2), atol=1e-3)
    assert torch.allclose(batch, torch.tensor([-0.5, 0.5, -10.0, 10.0]) / (r.std() + 1e-4), atol=1e-5)


def test_step_distilled_warning_for_nft_and_grpo_only():
    base = TrainConfig(sample_steps=10)
    assert step_distillation_warning(base.replace(method="nft"), distilled=True).startswith("NFT on a step")
    assert "schnell" in step_distillation_warning(base.replace(method="grpo"), distilled=True)
    assert "4 sampler steps" in step_distillation_warning(base.replace(method="nft", sample_steps=4), False)
    assert step_distillation_warning(base.replace(method="nft"), distilled=False) is None
    assert step_distillation_warning(base.replace(method="awm"), distilled=True) is None


def test_trainer_reports_the_step_distilled_warning(tiny_config, caplog):
    cfg = tiny_config.replace(method="nft", sample_steps=3, iterations=1, eval_every=0)
    with caplog.at_level("WARNING", logger="normguard"):
        trainer = Trainer(cfg)
    assert trainer.warnings and "step-distilled" in caplog.text


def test_tiny_flux_schnell_is_step_distilled(tiny_flux_schnell_dir, tiny_flux_dir):
    from normguard.trainer.backends import load_backend

    assert load_backend(tiny_flux_schnell_dir, "cpu").step_distilled()
    assert not load_backend(tiny_flux_dir, "cpu").step_distilled()
