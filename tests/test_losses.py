"""Base losses against plainly written per-sample computations, and their behaviour."""

import math

import torch

from normguard.trainer import normguard_penalty
from normguard.trainer.losses import awm_loss, dpo_loss, grpo_loss, nft_loss, nft_reward_weight
from normguard.trainer.sde import gaussian_log_prob, sde_step_mean

B, SHAPE = 4, (3, 4, 4)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_nft_matches_plain_computation():
    v, v_old, x_t, x0 = (
        rand(B, *SHAPE, seed=1),
        rand(B, *SHAPE, seed=2),
        rand(B, *SHAPE, seed=3),
        rand(B, *SHAPE, seed=4),
    )
    sigma, adv = torch.tensor([0.9, 0.5, 0.3, 0.7]), torch.tensor([2.0, -1.0, 7.0, -9.0])
    beta, amax = 0.5, 5.0
    total = 0.0
    for i in range(B):
        a = max(-amax, min(amax, adv[i].item()))
        r = min(1.0, max(0.0, a / amax / 2 + 0.5))
        vp = beta * v[i] + (1 - beta) * v_old[i]
        vn = (1 + beta) * v_old[i] - beta * v[i]
        lp = ((x_t[i] - sigma[i] * vp - x0[i]) ** 2).mean() / (x_t[i] - sigma[i] * vp - x0[i]).abs().mean()
        ln = ((x_t[i] - sigma[i] * vn - x0[i]) ** 2).mean() / (x_t[i] - sigma[i] * vn - x0[i]).abs().mean()
        total += (r * lp + (1 - r) * ln) / beta * amax
    r = nft_reward_weight(adv, amax)
    got = nft_loss(v, v_old, x_t, x0, sigma, r, beta=beta, adv_clip=amax)
    assert torch.allclose(got, torch.as_tensor(total / B), rtol=1e-5)


def test_awm_matches_plain_computation():
    v, u, adv, w = (
        rand(B, *SHAPE, seed=1),
        rand(B, *SHAPE, seed=2),
        torch.tensor([1.0, -2.0, 8.0, 0.5]),
        torch.rand(B),
    )
    expected = sum(max(-5, min(5, adv[i].item())) * w[i] * ((v[i] - u[i]) ** 2).mean() for i in range(B)) / B
    assert torch.allclose(awm_loss(v, u, adv, time_weight=w), torch.as_tensor(expected), rtol=1e-5)


def test_dpo_matches_plain_computation():
    vw, vrw, uw, vl, vrl, ul = (rand(2, *SHAPE, seed=s) for s in range(6))
    beta = 50.0
    expected = 0.0
    for i in range(2):
        d = (((vw[i] - uw[i]) ** 2).mean() - ((vrw[i] - uw[i]) ** 2).mean()) - (
            ((vl[i] - ul[i]) ** 2).mean() - ((vrl[i] - ul[i]) ** 2).mean()
        )
        expected += -math.log(1 / (1 + math.exp(0.5 * beta * d.item())))
    got = dpo_loss(vw, vrw, uw, vl, vrl, ul, beta=beta)
    assert math.isclose(got.item(), expected / 2, rel_tol=1e-4)


def test_sde_step_matches_plain_formula_and_log_prob_is_gaussian():
    x, v = rand(2, *SHAPE, seed=1), rand(2, *SHAPE, seed=2)
    sigma, nxt, eta = torch.tensor([1.0, 0.6]), torch.tensor([0.8, 0.4]), 0.7
    mean, std = sde_step_mean(x, v, sigma, nxt, eta=eta, sigma_max=0.95)
    for i in range(2):
        # flow_grpo's first step: sigma_max stands in for sigma = 1 only in g's denominator
        t = sigma[i].item()
        g = eta * math.sqrt(t / (1 - (0.95 if t == 1 else t)))
        dt = (nxt[i] - sigma[i]).item()
        drift = v[i] + g**2 / (2 * t) * (x[i] + (1 - t) * v[i])
        assert torch.allclose(mean[i], x[i] + drift * dt, atol=1e-5)
        assert math.isclose(std[i].item(), g * math.sqrt(-dt), rel_tol=1e-5)
    x_next = mean + std.view(-1, 1, 1, 1) * rand(2, *SHAPE, seed=3)
    expected = torch.distributions.Normal(mean, std.view(-1, 1, 1, 1)).log_prob(x_next).flatten(1).mean(1)
    assert torch.allclose(gaussian_log_prob(x_next, mean, std), expected, atol=1e-5)
    # eta -> 0 is the Euler ODE step
    mean0, _ = sde_step_mean(x, v, torch.tensor([0.9, 0.6]), nxt, eta=1e-8, sigma_max=0.95)
    assert torch.allclose(mean0, x + (nxt - torch.tensor([0.9, 0.6])).view(-1, 1, 1, 1) * v, atol=1e-5)


def test_grpo_matches_plain_computation():
    mean, x_next, mean_ref = rand(B, *SHAPE, seed=1), rand(B, *SHAPE, seed=2), rand(B, *SHAPE, seed=3)
    std, lp_old, adv = (
        torch.full((B,), 0.5),
        torch.tensor([-1.0, -1.2, -0.9, -1.1]),
        torch.tensor([1.0, -1.0, 2.0, -6.0]),
    )
    clip, kl_w = 0.2, 0.1
    expected = 0.0
    for i in range(B):
        lp = (-((x_next[i] - mean[i]) ** 2) / (2 * 0.25) - math.log(0.5) - 0.5 * math.log(2 * math.pi)).mean()
        ratio = torch.exp(lp - lp_old[i])
        a = max(-5.0, min(5.0, adv[i].item()))
        expected += max(-a * ratio.item(), -a * min(max(ratio.item(), 1 - clip), 1 + clip))
        expected += kl_w * (((mean[i] - mean_ref[i]) ** 2) / (2 * 0.25)).mean().item()
    got, stats = grpo_loss(mean, std, x_next, lp_old, adv, clip_range=clip, kl_weight=kl_w, mean_ref=mean_ref)
    assert math.isclose(got.item(), expected / B, rel_tol=1e-4)
    assert "kl" in stats and "clip_frac" in stats


def _descend(loss_fn, v, steps=20, lr=0.05):
    v = v.clone().requires_grad_(True)
    for _ in range(steps):
        (g,) = torch.autograd.grad(loss_fn(v), v)
        v = (v - lr * g).detach().requires_grad_(True)
    return v.detach()


def test_awm_positive_advantage_pulls_towards_target_negative_pushes_away():
    v0, u = rand(1, *SHAPE, seed=1), rand(1, *SHAPE, seed=2)
    d0 = (v0 - u).norm()
    pos = _descend(lambda v: awm_loss(v, u, torch.tensor([1.0])), v0)
    neg = _descend(lambda v: awm_loss(v, u, torch.tensor([-1.0])), v0)
    assert (pos - u).norm() < d0 < (neg - u).norm()


def test_nft_positive_advantage_pulls_towards_target_negative_pushes_away():
    x0, eps = rand(1, *SHAPE, seed=1), rand(1, *SHAPE, seed=2)
    sigma = torch.tensor([0.6])
    x_t, u = (1 - sigma) * x0 + sigma * eps, eps - x0
    v_old = u + 0.5 * rand(1, *SHAPE, seed=3)  # the old policy: near the target
    d0 = (v_old - u).norm()

    def run(adv):
        r = nft_reward_weight(torch.tensor([adv]))
        return _descend(lambda v: nft_loss(v, v_old, x_t, x0, sigma, r), v_old, lr=0.01)

    assert (run(5.0) - u).norm() < d0 < (run(-5.0) - u).norm()


def test_dpo_pulls_winner_towards_and_pushes_loser_from_its_target():
    vw0, vl0, uw, ul = (rand(1, *SHAPE, seed=s) for s in range(4))
    v = _descend(
        lambda v: dpo_loss(v[:1], vw0, uw, v[1:], vl0, ul, beta=10.0), torch.cat([vw0, vl0]), steps=5
    )
    assert (v[:1] - uw).norm() < (vw0 - uw).norm()
    assert (v[1:] - ul).norm() > (vl0 - ul).norm()


def test_grpo_positive_advantage_raises_the_step_probability():
    x, x_next = rand(1, *SHAPE, seed=1), rand(1, *SHAPE, seed=2)
    s, s_next = torch.tensor([0.8]), torch.tensor([0.6])
    v0 = rand(1, *SHAPE, seed=3)

    def logp(v):
        m, sd = sde_step_mean(x, v, s, s_next, eta=0.7, sigma_max=0.95)
        return gaussian_log_prob(x_next, m, sd)

    def loss(v, adv):
        m, sd = sde_step_mean(x, v, s, s_next, eta=0.7, sigma_max=0.95)
        return grpo_loss(m, sd, x_next, logp(v0).detach(), torch.tensor([adv]), clip_range=10.0)[0]

    lp0 = logp(v0)
    assert logp(_descend(lambda v: loss(v, 1.0), v0, steps=3, lr=1e-3)) > lp0
    assert logp(_descend(lambda v: loss(v, -1.0), v0, steps=3, lr=1e-3)) < lp0


def test_penalty_composes_additively_with_each_base_loss():
    """d(base + penalty)/dv = d base/dv + d penalty/dv for every method."""
    v = rand(B, *SHAPE, seed=1).requires_grad_(True)
    v_ref, u, x0 = rand(B, *SHAPE, seed=2) * 0.5, rand(B, *SHAPE, seed=3), rand(B, *SHAPE, seed=4)
    sigma, adv = torch.full((B,), 0.5), torch.tensor([1.0, -1.0, 0.5, -0.5])
    bases = {
        "awm": lambda v: awm_loss(v, u, adv),
        "nft": lambda v: nft_loss(
            v, v_ref, x0 + sigma.view(-1, 1, 1, 1) * u, x0, sigma, nft_reward_weight(adv)
        ),
        "dpo": lambda v: dpo_loss(v[:2], v_ref[:2], u[:2], v[2:], v_ref[2:], u[2:]),
    }
    for name, base in bases.items():
        (g_sum,) = torch.autograd.grad(base(v) + normguard_penalty(v, v_ref, 0.7), v)
        (g_b,) = torch.autograd.grad(base(v), v)
        (g_p,) = torch.autograd.grad(normguard_penalty(v, v_ref, 0.7), v)
        assert torch.allclose(g_sum, g_b + g_p, atol=1e-6), name
        assert g_p.abs().sum() > 0
