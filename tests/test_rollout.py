"""Samplers: Euler ODE and Flow-GRPO SDE over a real (tiny) backend, CFG, and norm recording."""

import torch

from normguard.trainer.rollout import guided_velocity, randn, sample
from normguard.trainer.sde import gaussian_log_prob, sde_step_mean


def _setup(backend, n=2, steps=4):
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    cond = backend.encode_prompts(["red circle", "blue square"][:n])
    uncond = backend.encode_prompts([""] * n)
    noise = randn(backend.latent_shape(16, 16), gens, backend.device)
    return cond, uncond, noise, backend.schedule(steps, 16, 16)


def test_euler_matches_a_plain_loop(tiny_backend):
    tiny_backend.add_lora(4, 4)
    cond, _, noise, sigmas = _setup(tiny_backend)
    roll = sample(tiny_backend, cond, noise, sigmas)
    x = noise.clone()
    with torch.no_grad():
        for k in range(len(sigmas) - 1):
            v = tiny_backend.velocity(x, torch.full((2,), float(sigmas[k])), cond)
            x = x + (sigmas[k + 1] - sigmas[k]) * v
    assert torch.allclose(roll.latents, x, atol=1e-6)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and torch.all(sigmas[1:] < sigmas[:-1])


def test_cfg_is_the_guidance_formula(tiny_backend):
    tiny_backend.add_lora(4, 4)
    cond, uncond, noise, _ = _setup(tiny_backend)
    s = torch.full((2,), 0.7)
    with torch.no_grad():
        g = guided_velocity(tiny_backend, noise, s, cond, uncond, 4.0)
        vc, vu = tiny_backend.velocity(noise, s, cond), tiny_backend.velocity(noise, s, uncond)
        assert torch.allclose(g, vu + 4.0 * (vc - vu), atol=1e-5)
        assert torch.equal(guided_velocity(tiny_backend, noise, s, cond, uncond, 1.0), vc)


def test_rho_is_one_for_a_fresh_adapter_and_moves_for_a_trained_one(tiny_backend):
    tiny_backend.add_lora(4, 4)  # B = 0: the policy is the reference
    cond, uncond, noise, sigmas = _setup(tiny_backend)
    roll = sample(tiny_backend, cond, noise, sigmas, uncond=uncond, cfg=3.0, record_norms=True)
    assert roll.rho.shape == (4,) and torch.allclose(roll.rho, torch.ones(4), atol=1e-6)
    with torch.no_grad():
        for name, p in tiny_backend.named_trainable().items():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    roll = sample(tiny_backend, cond, noise, sigmas, uncond=uncond, cfg=3.0, record_norms=True)
    assert (roll.rho - 1).abs().max() > 1e-3
    # the recorded norms are the policy's and the reference's at the policy's own states
    traj = sample(tiny_backend, cond, noise, sigmas, uncond=uncond, cfg=3.0, record_trajectory=True).states
    k, s = 2, torch.full((2,), float(sigmas[2]))
    with torch.no_grad():
        v = guided_velocity(tiny_backend, traj[k], s, cond, uncond, 3.0)
        with tiny_backend.reference():
            v_ref = guided_velocity(tiny_backend, traj[k], s, cond, uncond, 3.0)
    assert torch.allclose(roll.v_norms[k], v.flatten(1).norm(dim=1), rtol=1e-5)
    assert torch.allclose(roll.ref_norms[k], v_ref.flatten(1).norm(dim=1), rtol=1e-5)


def test_sde_records_consistent_log_probs_and_is_reproducible(tiny_backend):
    tiny_backend.add_lora(4, 4, init="gaussian_nonzero")
    cond, _, noise, sigmas = _setup(tiny_backend)

    def run():
        gens = [torch.Generator().manual_seed(10 + i) for i in range(2)]
        return sample(tiny_backend, cond, noise, sigmas, sde_eta=0.7, generators=gens)

    a, b = run(), run()
    assert torch.equal(a.latents, b.latents)
    assert a.states.shape == (5, 2, 3, 16, 16) and a.log_probs.shape == (4, 2)
    ode = sample(tiny_backend, cond, noise, sigmas)
    assert (a.latents - ode.latents).abs().max() > 1e-3  # the SDE injects noise
    with torch.no_grad():
        for k in range(4):
            s, s2 = torch.full((2,), float(sigmas[k])), torch.full((2,), float(sigmas[k + 1]))
            v = tiny_backend.velocity(a.states[k], s, cond)
            m, sd = sde_step_mean(a.states[k], v, s, s2, eta=0.7, sigma_max=float(sigmas[1]))
            assert torch.allclose(gaussian_log_prob(a.states[k + 1], m, sd), a.log_probs[k], atol=1e-4)
