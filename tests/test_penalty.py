"""NormGuard penalty: the properties PAPER.md requires of every option."""

import itertools

import pytest
import torch

from normguard.trainer import normguard_penalty, velocity_norms

OPTIONS = [
    dict(form=f, relative=r, margin=m, reduction=red)
    for f, r, m, red in itertools.product(
        ["linear", "squared"], [True, False], [0.0, 0.05], ["sample", "token"]
    )
]


def _pair(scale: float, shape=(3, 4, 5, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    v_ref = torch.randn(shape, generator=g)
    v = (v_ref * scale).clone().requires_grad_(True)
    return v, v_ref


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_zero_value_and_gradient_at_or_below_reference(opts):
    for scale in (0.5, 0.9, 1.0):
        v, v_ref = _pair(scale)
        p = normguard_penalty(v, v_ref, 2.0, **opts)
        p.backward()
        assert p.item() == 0.0
        assert torch.count_nonzero(v.grad) == 0


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_above_reference_gradient_is_parallel_to_v(opts):
    v, v_ref = _pair(1.3)
    p = normguard_penalty(v, v_ref, 1.0, **opts)
    p.backward()
    assert p.item() > 0
    g = v.grad
    if opts["reduction"] == "sample":  # one vector per sample: grad = c_i * v_i with c_i > 0
        gf, vf = g.flatten(1), v.detach().flatten(1)
    else:  # per token (the channel vector at each position): per-token parallel
        gf, vf = g.movedim(1, -1).reshape(-1, g.shape[1]), v.detach().movedim(1, -1).reshape(-1, g.shape[1])
    cos = torch.nn.functional.cosine_similarity(gf, vf, dim=1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)


def test_only_the_excess_is_penalised_per_sample():
    """Sample 0 above its reference, sample 1 below: only sample 0 gets a gradient."""
    v_ref = torch.randn(2, 8)
    v = torch.stack([v_ref[0] * 1.2, v_ref[1] * 0.8]).requires_grad_(True)
    normguard_penalty(v, v_ref, 1.0).backward()
    assert v.grad[0].abs().sum() > 0 and v.grad[1].abs().sum() == 0


def test_values_match_plain_formulas():
    v_ref = torch.randn(4, 10)
    v = v_ref * torch.tensor([1.5, 0.7, 1.1, 2.0])[:, None]
    n, nr = v.norm(dim=1), v_ref.norm(dim=1)
    rel = torch.relu(n / nr - 1 - 0.05)
    ab = torch.relu(n - nr - 0.05)
    linear = dict(form="linear", margin=0.05)
    assert torch.allclose(normguard_penalty(v, v_ref, 3.0, **linear), 3.0 * rel.mean())
    assert torch.allclose(normguard_penalty(v, v_ref, 3.0, relative=False, **linear), 3.0 * ab.mean())
    assert torch.allclose(normguard_penalty(v, v_ref, 1.0, form="squared", margin=0.05), (rel**2).mean())


def test_token_reduction_matches_plain_formula():
    v_ref = torch.randn(2, 3, 4, 4)
    v = v_ref * (1 + 0.3 * torch.rand(2, 1, 4, 4))
    n, nr = v.norm(dim=1).flatten(1), v_ref.norm(dim=1).flatten(1)
    expected = (torch.relu(n / nr - 1) ** 2).mean(dim=1).mean()
    assert torch.allclose(
        normguard_penalty(v, v_ref, 10.0, form="squared", reduction="token"), 10.0 * expected
    )
    tokens = torch.randn(2, 5, 7)  # [B, N, D] layout: norms over D
    assert velocity_norms(tokens, "token").shape == (2, 5)
    assert torch.allclose(velocity_norms(tokens, "token"), tokens.norm(dim=-1))


def test_relative_form_is_scale_free():
    v, v_ref = _pair(1.2)
    a = normguard_penalty(v.detach(), v_ref, form="squared")
    b = normguard_penalty(v.detach() * 100, v_ref * 100, form="squared")
    assert torch.allclose(a, b, rtol=1e-5)


def test_the_defaults_are_the_abstracts_penalty_and_the_configs():
    """`normguard_penalty(v, v_ref)` is weight * relu(||v|| - ||v_ref||), the config's default penalty."""
    import inspect

    from normguard.trainer.config import TrainConfig

    v_ref = torch.randn(4, 10)
    v = v_ref * torch.tensor([1.5, 0.7, 1.1, 2.0])[:, None]
    d = TrainConfig()
    expected = d.normguard_weight * torch.relu(v.norm(dim=1) - v_ref.norm(dim=1)).mean()
    assert torch.allclose(normguard_penalty(v, v_ref), expected)
    params = inspect.signature(normguard_penalty).parameters
    assert (params["weight"].default, params["form"].default) == (d.normguard_weight, d.normguard_form)


def test_weight_zero_is_exactly_the_base_loss():
    v, v_ref = _pair(2.0)
    base = (v**2).mean()
    total = base + normguard_penalty(v, v_ref, 0.0)
    assert total.item() == base.item()
    (g_total,) = torch.autograd.grad(total, v)
    (g_base,) = torch.autograd.grad((v**2).mean(), v)
    assert torch.equal(g_total, g_base)
    assert normguard_penalty(v, None, 0.0).item() == 0.0  # no reference pass is needed at weight 0


def test_samples_are_independent():
    v, v_ref = _pair(1.5, shape=(3, 6))
    normguard_penalty(v, v_ref).backward()
    g0 = v.grad[0].clone()
    v2 = v.detach().clone()
    v2[1:] *= 3.0  # change the other samples only
    v2.requires_grad_(True)
    normguard_penalty(v2, v_ref).backward()
    assert torch.allclose(v2.grad[0], g0)


def test_no_gradient_into_reference():
    v, v_ref = _pair(1.5)
    v_ref.requires_grad_(True)
    normguard_penalty(v, v_ref).backward()
    assert v_ref.grad is None


def test_bad_inputs_are_named():
    v, v_ref = _pair(1.5)
    with pytest.raises(ValueError, match="v_ref"):
        normguard_penalty(v, None, 1.0)
    with pytest.raises(ValueError, match="shape"):
        normguard_penalty(v, v_ref[:2])
    with pytest.raises(ValueError, match="form"):
        normguard_penalty(v, v_ref, form="cubic")
    with pytest.raises(ValueError, match="margin"):
        normguard_penalty(v, v_ref, margin=-1)
    with pytest.raises(ValueError, match="reduction"):
        normguard_penalty(v, v_ref, reduction="pixel")
