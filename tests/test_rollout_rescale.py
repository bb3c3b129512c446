"""Inference-time rescaling of the velocity to the reference's norm (PAPER.md, claim 3)."""

import torch

from normguard.trainer.backends.tinyflow import TinyFlowBackend
from normguard.trainer.models import TinyFlowConfig, TinyFlowModel
from normguard.trainer.penalty import velocity_norms
from normguard.trainer.rollout import randn, rescale_to_norm, sample


def _backend() -> TinyFlowBackend:
    torch.manual_seed(0)
    model = TinyFlowModel(
        TinyFlowConfig(
            image_size=16, conv_widths=[8], hidden=16, depth=1, heads=2, max_words=4, vocab=["red"]
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    backend = TinyFlowBackend(model)
    backend.add_lora(4, 4)
    return backend


def test_rescale_to_norm_keeps_direction_and_takes_the_reference_norm():
    v, v_ref = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4) * 3
    out = rescale_to_norm(v, v_ref)
    assert torch.allclose(velocity_norms(out), velocity_norms(v_ref), rtol=1e-5)
    cos = torch.nn.functional.cosine_similarity(out.flatten(1), v.flatten(1))
    assert torch.allclose(cos, torch.ones(3), atol=1e-6)


def test_rescaled_sampling_follows_the_reference_norm_and_is_a_no_op_for_the_reference():
    backend = _backend()
    cond = backend.encode_prompts(["red", "red"])
    noise = randn((3, 16, 16), [torch.Generator().manual_seed(i) for i in range(2)], backend.device)
    sigmas = backend.schedule(4, 16, 16)
    plain = sample(backend, cond, noise, sigmas)
    assert torch.allclose(
        sample(backend, cond, noise, sigmas, rescale_to_reference=True).latents, plain.latents, atol=1e-5
    )
    with torch.no_grad():
        for name, p in backend.named_trainable().items():
            if "lora_B" in name:
                p.normal_(0, 3.0)  # a policy whose norm differs from the reference's
    inflated = sample(backend, cond, noise, sigmas, record_norms=True)
    rescaled = sample(backend, cond, noise, sigmas, rescale_to_reference=True, record_trajectory=True)
    assert (inflated.rho - 1).abs().max() > 1e-3
    assert (rescaled.latents - inflated.latents).abs().max() > 1e-4
    # every step moved by exactly |dsigma| * ||v_ref|| at the rescaled run's own states
    with torch.no_grad(), backend.reference():
        for k in range(4):
            s = torch.full((2,), float(sigmas[k]))
            ref_norm = velocity_norms(backend.velocity(rescaled.states[k], s, cond))
            step = velocity_norms(rescaled.states[k + 1] - rescaled.states[k])
            assert torch.allclose(step, (sigmas[k] - sigmas[k + 1]).abs() * ref_norm, rtol=1e-4)
