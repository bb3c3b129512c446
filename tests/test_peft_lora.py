"""The peft adapter: reference switch, fused sampling, export scaling."""

import torch

from normguard.trainer.rollout import randn, sample


def _trained(backend):
    backend.add_lora(4, 8)
    with torch.no_grad():
        for name, p in backend.named_trainable().items():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return backend


def test_fused_sampling_matches_the_unfused_adapter_and_leaves_weights_untouched(tiny_backend):
    b = _trained(tiny_backend)
    before = {k: v.clone() for k, v in b.module.state_dict().items()}
    cond = b.encode_prompts(["red circle", "blue square"])
    noise = randn((3, 16, 16), [torch.Generator().manual_seed(i) for i in range(2)], b.device)
    sigmas = b.schedule(4, 16, 16)
    fused = sample(b, cond, noise, sigmas)  # sample() runs inside backend.sampling()
    with torch.no_grad():  # the plain unfused loop
        x = noise.clone()
        for k in range(4):
            x = x + (sigmas[k + 1] - sigmas[k]) * b.velocity(x, torch.full((2,), float(sigmas[k])), cond)
    assert torch.allclose(fused.latents, x, atol=1e-5)
    assert (fused.latents - sample(b, cond, noise, sigmas, record_norms=True).latents).abs().max() < 1e-5
    after = b.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with b.sampling():  # the fused layers still honour the reference switch
        with torch.no_grad(), b.reference():
            v_ref_fused = b.velocity(noise, torch.full((2,), 0.5), cond)
    with torch.no_grad(), b.reference():
        v_ref = b.velocity(noise, torch.full((2,), 0.5), cond)
    assert torch.equal(v_ref_fused, v_ref)


def test_reference_is_the_base_model(tiny_backend, tiny_model_dir):
    from normguard.trainer.backends.tinyflow import TinyFlowBackend

    b = _trained(tiny_backend)
    plain = TinyFlowBackend.from_pretrained(tiny_model_dir)
    x, s = torch.randn(2, 3, 16, 16), torch.full((2,), 0.4)
    cond = b.encode_prompts(["red", "blue"])
    with torch.no_grad():
        with b.reference():
            v_ref = b.velocity(x, s, cond)
        v_base, v_policy = plain.velocity(x, s, cond), b.velocity(x, s, cond)
    assert torch.equal(v_ref, v_base)
    assert (v_policy - v_base).abs().max() > 1e-3


def test_export_premultiplies_lora_b_by_alpha_over_rank(tiny_backend):
    b = _trained(tiny_backend)
    sd = b.lora_state_dict()
    name = next(k for k in b.named_trainable() if "lora_B" in k)
    assert torch.equal(sd[name], b.named_trainable()[name].detach() * 2.0)  # alpha 8 / rank 4
    assert not any(k.endswith(".alpha") for k in sd)
