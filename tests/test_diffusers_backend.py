"""DiffusersBackend on tiny SD3 and FLUX.1 pipelines, checked against the diffusers pipelines themselves.

The pipelines' own __call__ (their scheduler, transformer call convention, latent packing and VAE
post-processing) is the reference: our sigmas, Euler steps, samples, decoded images and exported
LoRA files must reproduce what diffusers computes.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline, FluxPipeline
from safetensors import safe_open
from safetensors.torch import save_file

from normguard.trainer.backends.diffusers import DiffusersBackend, is_diffusers_folder
from normguard.trainer.families import FAMILIES
from normguard.trainer.families.flux import pack_latents, unpack_latents
from normguard.trainer.rollout import guided_velocity, sample

H = W = 64
PROMPTS = ["a photo of a cat", "a sign that says hello world"]
TIGHT = {"atol": 2e-5, "rtol": 1e-4}  # fp32: same math, possibly different op order


@pytest.fixture(params=["sd3", "flux"])
def folder(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue({"sd3": "tiny_sd3_dir", "flux": "tiny_flux_dir"}[request.param])


def load(folder: Path, **kwargs) -> DiffusersBackend:
    return DiffusersBackend.from_pretrained(str(folder), **kwargs)


def noise_for(backend: DiffusersBackend, n: int = len(PROMPTS), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *backend.latent_shape(H, W), generator=torch.Generator().manual_seed(seed))


def run_pipeline(pipe, noise: torch.Tensor, steps: int, **kwargs):
    """The pipeline's own trajectory from `noise` (recorded by its step callback) and its images."""
    flux = isinstance(pipe, FluxPipeline)
    states, timesteps = [noise], []

    def record(p, i, t, tensors):
        lat = tensors["latents"]
        states.append(FluxPipeline._unpack_latents(lat, H, W, p.vae_scale_factor) if flux else lat)
        timesteps.append(float(t))
        return {}

    b, c, h, w = noise.shape
    latents = FluxPipeline._pack_latents(noise, b, c, h, w) if flux else noise
    images = pipe(
        prompt=PROMPTS,
        height=H,
        width=W,
        num_inference_steps=steps,
        latents=latents,
        output_type="pt",
        callback_on_step_end=record,
        **kwargs,
    ).images
    return torch.stack(states), torch.tensor(timesteps), images


def pipeline_guidance(backend: DiffusersBackend) -> dict:
    """Pipeline kwargs for the guidance our sampler uses: SD3 none (cfg = 1), FLUX its distilled guidance."""
    return {"guidance_scale": backend.guidance} if backend.name == "flux" else {"guidance_scale": 1.0}


def make_nonzero_adapter(backend: DiffusersBackend, seed: int = 0) -> None:
    """A LoRA with alpha != rank (so the export's alpha/r scaling matters) and a sizeable effect."""
    torch.manual_seed(seed)
    backend.add_lora(rank=4, alpha=8, targets=backend.default_lora_targets, init="gaussian_nonzero")
    with torch.no_grad():
        for name, p in backend.named_trainable().items():
            if "lora_B" in name:
                p.mul_(10)


# --- loading, conditioning, shapes ----------------------------------------------------------------


def test_loads_encodes_and_predicts_with_frozen_base(folder):
    backend = load(folder)
    assert backend.dtype == torch.float32 and backend.device == torch.device("cpu")
    assert backend.default_lora_targets == FAMILIES[backend.name].lora_targets
    cond = backend.encode_prompts([*PROMPTS, ""])  # "" is the CFG negative
    assert set(cond) == {"prompt_embeds", "pooled_prompt_embeds"}
    for v in cond.values():
        assert v.shape[0] == 3 and v.dtype == torch.float32 and torch.isfinite(v).all()
    assert not torch.equal(cond["prompt_embeds"][0], cond["prompt_embeds"][2])

    x = noise_for(backend, 3)
    assert x.shape == (3, 4, H // 8, W // 8)
    v = backend.velocity(x, torch.tensor([0.9, 0.5, 0.1]), cond)
    assert v.shape == x.shape and v.dtype == torch.float32 and v.abs().mean() > 0.05

    assert not any(p.requires_grad for p in backend.pipe.transformer.parameters())
    backend.add_lora(rank=2, targets=backend.default_lora_targets)
    trainable = {n for c in backend.pipe.components.values() if isinstance(c, torch.nn.Module)
                 for n, p in c.named_parameters() if p.requires_grad}  # fmt: skip
    assert trainable and all("lora_" in n for n in trainable)
    names = backend.named_trainable()
    assert len(names) == len(trainable)
    # both streams of the joint attention get the adapter
    assert any(".attn.to_q.lora_A" in n for n in names) and any(".attn.add_k_proj.lora_B" in n for n in names)


def test_bf16_load(tiny_flux_dir):
    backend = load(tiny_flux_dir, dtype="bf16")
    assert backend.dtype == torch.bfloat16 and backend.pipe.vae.dtype == torch.bfloat16
    cond = backend.encode_prompts(PROMPTS)
    assert all(v.dtype == torch.bfloat16 for v in cond.values())
    v = backend.velocity(noise_for(backend), torch.tensor([0.8, 0.2]), cond)
    assert v.dtype == torch.bfloat16 and torch.isfinite(v).all()


def test_latent_shape_validates_the_resolution(tiny_sd3_dir, tiny_flux_dir):
    for folder in (tiny_sd3_dir, tiny_flux_dir):
        backend = load(folder)
        assert backend.latent_shape(128, 64) == (4, 16, 8)
        with pytest.raises(ValueError, match=r"height=72: .* multiple of 16"):
            backend.latent_shape(72, 64)
        with pytest.raises(ValueError, match="width=0"):
            backend.latent_shape(64, 0)
    # SD3's position embedding has a maximum size (pos_embed_max_size 16 x patch 2 x VAE 8 = 256 px)
    with pytest.raises(ValueError, match="height=272: .* at most 256 pixels"):
        load(tiny_sd3_dir).latent_shape(272, 64)


# --- conventions against the pipeline ----------------------------------------------------------


def test_schedule_is_the_pipelines(folder):
    backend = load(folder)
    used = {}
    for side in (64, 128):
        backend.pipe(prompt="a cat", height=side, width=side, num_inference_steps=4, output_type="latent")
        used[side] = backend.pipe.scheduler.sigmas.clone()
        ours = backend.schedule(4, side, side)
        assert ours.dtype == torch.float32 and ours.shape == (5,)
        assert ours[-1] == 0 and ours[0] == pytest.approx(1.0) and (ours.diff() < 0).all()
        torch.testing.assert_close(ours, used[side], atol=1e-6, rtol=0)
    if backend.name == "flux":  # resolution-dependent shift: more tokens, more time at high noise
        assert (used[128][1:-1] > used[64][1:-1]).all()
    with pytest.raises(ValueError, match="steps=0"):
        backend.schedule(0, 64, 64)


def test_sd3_schedule_with_dynamic_shifting_is_the_pipelines(tiny_sd3_dir, tmp_path):
    folder = tmp_path / "sd3-dynamic"
    shutil.copytree(tiny_sd3_dir, folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "use_dynamic_shifting": True}))
    backend = load(folder)
    backend.pipe(prompt="a cat", height=128, width=128, num_inference_steps=4, output_type="latent")
    ours = backend.schedule(4, 128, 128)
    torch.testing.assert_close(ours, backend.pipe.scheduler.sigmas, atol=1e-6, rtol=0)
    assert not torch.allclose(ours, load(tiny_sd3_dir).schedule(4, 128, 128))  # the shift did change


@pytest.fixture(scope="module", params=["sd3", "flux"])
def base_run(request: pytest.FixtureRequest):
    """A base-model backend and the pipeline's own 3-step run from fixed noise (shared, not mutated)."""
    backend = load(request.getfixturevalue({"sd3": "tiny_sd3_dir", "flux": "tiny_flux_dir"}[request.param]))
    run = run_pipeline(backend.pipe, noise_for(backend), 3, **pipeline_guidance(backend))
    return (backend, *run)


def test_euler_step_matches_the_pipelines_scheduler_step(base_run):
    """x_{k+1} = x_k + (sigma_{k+1} - sigma_k) v(x_k, sigma_k) reproduces every step the pipeline takes
    with its transformer output: same sign, scale and timestep convention (SD3 t = 1000 sigma; FLUX
    passes sigma and the transformer scales it)."""
    backend, states, timesteps, _ = base_run
    sigmas = backend.schedule(3, H, W)
    torch.testing.assert_close(timesteps, sigmas[:-1] * 1000)
    cond = backend.encode_prompts(PROMPTS)
    for k in range(3):
        s = sigmas[k].expand(len(PROMPTS))
        ours = states[k] + (sigmas[k + 1] - sigmas[k]) * backend.velocity(states[k], s, cond)
        torch.testing.assert_close(ours, states[k + 1], **TIGHT)
        assert (states[k + 1] - states[k]).abs().mean() > 100 * TIGHT["atol"]  # the step moved: not vacuous


def test_decode_matches_the_pipeline_and_is_in_unit_range(base_run):
    backend, states, _, images = base_run
    decoded = backend.decode(states[-1])
    assert decoded.shape == (len(PROMPTS), 3, H, W) and decoded.dtype == torch.float32
    assert decoded.min() >= 0 and decoded.max() <= 1
    assert ((decoded > 0.01) & (decoded < 0.99)).float().mean() > 0.2  # not saturated: a real comparison
    torch.testing.assert_close(decoded, images.float(), **TIGHT)
    latents = backend.encode_images(decoded)
    assert latents.shape == states[-1].shape and torch.isfinite(latents).all()


def test_pack_unpack_are_inverse_and_match_diffusers():
    x = torch.randn(2, 4, 6, 8)
    packed = pack_latents(x)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(x, 2, 4, 6, 8), atol=0, rtol=0)
    torch.testing.assert_close(unpack_latents(packed, 6, 8), x, atol=0, rtol=0)


# --- the adapter -----------------------------------------------------------------------------


def test_reference_is_the_base_model_and_the_adapter_changes_the_output(folder):
    backend = load(folder)
    cond = backend.encode_prompts(PROMPTS)
    x, s = noise_for(backend), torch.tensor([0.7, 0.4])
    base = backend.velocity(x, s, cond)
    backend.add_lora(rank=4, targets=backend.default_lora_targets)  # default init: B = 0, a no-op
    torch.testing.assert_close(backend.velocity(x, s, cond), base, atol=0, rtol=0)
    with torch.no_grad():  # as if trained
        for name, p in backend.named_trainable().items():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    tuned = backend.velocity(x, s, cond)
    with backend.reference():
        ref = backend.velocity(x, s, cond)
    torch.testing.assert_close(ref, base, atol=0, rtol=0)
    assert (tuned - base).abs().max() > 0.05


def test_exported_lora_loads_in_diffusers_and_reproduces_the_tuned_model(folder, tmp_path):
    """Issue 2 item 8: our LoRA file, loaded by diffusers into a fresh pipeline, gives the same
    transformer outputs and the same end-to-end samples and images as our backend with the adapter."""
    backend = load(folder)
    make_nonzero_adapter(backend)
    state = backend.lora_state_dict()
    suffixes = (".lora_A.weight", ".lora_B.weight")
    assert all(k.startswith("transformer.") and k.endswith(suffixes) for k in state)
    assert not any("alpha" in k for k in state)
    name = next(k for k in state if k.endswith(".lora_B.weight"))
    param = backend.named_trainable()[name.removeprefix("transformer.")]
    torch.testing.assert_close(state[name], param.detach() * 2)  # alpha / r = 8 / 4
    file = tmp_path / "tuned.safetensors"
    metadata = {**backend.lora_metadata(), "normguard.lora_rank": "4", "normguard.lora_alpha": "8"}
    save_file(state, str(file), metadata=metadata)
    with safe_open(str(file), "pt") as f:
        assert f.metadata()["modelspec.architecture"] == metadata["modelspec.architecture"]

    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(file))

    # SD3 with classifier-free guidance (negative ""), FLUX-dev with its distilled guidance
    cfg = 4.0 if backend.name == "sd3" else 1.0
    kwargs = {"guidance_scale": cfg} if backend.name == "sd3" else pipeline_guidance(backend)
    noise = noise_for(backend, seed=1)
    states, _, images = run_pipeline(pipe, noise, 3, **kwargs)

    cond, uncond = backend.encode_prompts(PROMPTS), backend.encode_prompts([""] * len(PROMPTS))
    sigmas = backend.schedule(3, H, W)
    rollout = sample(backend, cond, noise, sigmas, uncond=uncond, cfg=cfg, record_trajectory=True)
    torch.testing.assert_close(rollout.states, states, **TIGHT)
    torch.testing.assert_close(backend.decode(rollout.latents), images.float(), **TIGHT)

    # per step, and not vacuous: the base model's step is clearly different from the tuned one
    s = sigmas[1].expand(len(PROMPTS))
    tuned = guided_velocity(backend, states[1], s, cond, uncond, cfg)
    with backend.reference():
        base = guided_velocity(backend, states[1], s, cond, uncond, cfg)
    step = sigmas[2] - sigmas[1]
    torch.testing.assert_close(states[1] + step * tuned, states[2], **TIGHT)
    assert (step * (tuned - base)).abs().max() > 100 * TIGHT["atol"]


def test_gradient_checkpointing_gives_the_same_lora_gradients(tiny_sd3_dir):
    grads = []
    for checkpointing in (False, True):
        backend = load(tiny_sd3_dir, gradient_checkpointing=checkpointing)
        assert backend.module.gradient_checkpointing is checkpointing
        make_nonzero_adapter(backend)
        cond = backend.encode_prompts(PROMPTS)
        backend.velocity(noise_for(backend), torch.tensor([0.6, 0.3]), cond).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in backend.named_trainable().items()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-4)
    assert any(g.abs().max() > 0 for g in grads[0].values())


# --- guidance-distilled FLUX -----------------------------------------------------------------


def test_flux_guidance_is_an_input_shared_by_policy_and_reference(tiny_flux_dir, tiny_flux_schnell_dir):
    dev = load(tiny_flux_dir)
    assert dev.guidance == 3.5
    assert dev.lora_metadata()["modelspec.architecture"] == "flux-1-dev/lora"
    cond, x, s = dev.encode_prompts(PROMPTS), noise_for(dev), torch.tensor([0.7, 0.4])
    v35 = dev.velocity(x, s, cond)
    v5 = load(tiny_flux_dir, guidance=5.0).velocity(x, s, cond)
    assert (v5 - v35).abs().max() > 1e-3
    dev.add_lora(rank=2, targets=dev.default_lora_targets)  # B = 0: policy == reference, both at 3.5
    with dev.reference():
        torch.testing.assert_close(dev.velocity(x, s, cond), v35, atol=0, rtol=0)

    schnell = load(tiny_flux_schnell_dir)
    assert schnell.guidance is None
    assert schnell.lora_metadata()["modelspec.architecture"] == "flux-1-schnell/lora"
    assert schnell.velocity(x, s, schnell.encode_prompts(PROMPTS)).shape == x.shape
    with pytest.raises(ValueError, match="guidance=3.0 applies only to guidance-distilled"):
        load(tiny_flux_schnell_dir, guidance=3.0)


def test_sd3_metadata(tiny_sd3_dir):
    meta = load(tiny_sd3_dir).lora_metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-3.5-medium/lora"  # dual attention: SD3.5-M
    assert meta["modelspec.resolution"] == "64x64" and meta["modelspec.implementation"] == "diffusers"
    assert meta["normguard.base_model"] == tiny_sd3_dir.name  # a folder's name, not the user's path


# --- what is not a supported model --------------------------------------------------------------


def test_is_diffusers_folder(tiny_sd3_dir, tiny_nonflow_dir, tmp_path):
    assert is_diffusers_folder(tiny_sd3_dir) and is_diffusers_folder(str(tiny_sd3_dir))
    assert is_diffusers_folder(tiny_nonflow_dir)  # a diffusers folder, refused later with a reason
    assert not is_diffusers_folder(tmp_path) and not is_diffusers_folder(tmp_path / "missing")
    assert not is_diffusers_folder("nobody/not-a-cached-repo")


def test_loads_a_repo_id_from_the_local_hf_cache(tiny_flux_schnell_dir, tmp_path, monkeypatch):
    """A repo id already downloaded loads offline from the cache's snapshot folder."""
    import huggingface_hub.constants

    repo = tmp_path / "models--tiny-org--tiny-flux"
    shutil.copytree(tiny_flux_schnell_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert is_diffusers_folder("tiny-org/tiny-flux")
    backend = load("tiny-org/tiny-flux")
    assert backend.name == "flux" and backend.lora_metadata()["normguard.base_model"] == "tiny-org/tiny-flux"
    with pytest.raises(FileNotFoundError, match="not a repo id in the local Hugging Face cache"):
        load("tiny-org/other-model")


def test_refuses_non_flow_models_and_non_pipelines(tiny_sd3_dir, tiny_nonflow_dir, tmp_path):
    with pytest.raises(ValueError, match=r"StableDiffusionPipeline \(a UNet model.*StableDiffusion3Pipeline"):
        load(tiny_nonflow_dir)

    swapped = tmp_path / "sd3-euler"
    shutil.copytree(tiny_sd3_dir, swapped)
    index = json.loads((swapped / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
    (swapped / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="scheduler is EulerDiscreteScheduler, not flow matching"):
        load(swapped)

    with pytest.raises(FileNotFoundError, match="no such folder.*model_index.json"):
        load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*has no model_index.json"):
        load(tmp_path / "empty")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="single file"):
        load(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="dtype='int8'"):
        load(tiny_sd3_dir, dtype="int8")
    with pytest.raises(ValueError, match="guidance=3.5 applies only"):
        load(tiny_sd3_dir, guidance=3.5)


def _saved_for_backward(backend, x, sigma, cond) -> tuple[torch.Tensor, list[torch.Tensor]]:
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        v = backend.velocity(x, sigma, cond)
    return v, saved


def _kept_bytes(saved: list[torch.Tensor]) -> int:
    """Bytes autograd keeps alive: each storage once (a layer's input is saved by the base and the adapter)."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}.values())


def test_bf16_adapter_trains_in_mixed_precision_without_fp32_copies_of_activations(tiny_sd3_dir):
    """fp32 LoRA weights over a bf16 model: computed in bf16 (as autocast would), so autograd keeps no
    fp32 copy of an adapted layer's input -- peft's own forward keeps one per layer."""
    from peft.tuners.lora import Linear as LoraLinear

    backend = load(tiny_sd3_dir, dtype="bf16")
    backend.add_lora(rank=4, init="gaussian_nonzero")
    assert all(p.dtype == torch.float32 for p in backend.named_trainable().values())
    cond = backend.encode_prompts(PROMPTS)
    x, sigma = noise_for(backend), torch.tensor([0.8, 0.2])
    v, saved = _saved_for_backward(backend, x, sigma, cond)
    v.float().square().mean().backward()
    grads = {n: p.grad.clone() for n, p in backend.named_trainable().items()}
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())

    layers = [m for m in backend.module.modules() if isinstance(m, LoraLinear)]
    for layer in layers:  # peft's own forward: casts x to fp32
        layer.forward = LoraLinear.forward.__get__(layer)
    for p in backend.named_trainable().values():
        p.grad = None
    v_peft, saved_peft = _saved_for_backward(backend, x, sigma, cond)
    fp32 = [Counter(tuple(t.shape) for t in s if t.dtype == torch.float32) for s in (saved, saved_peft)]
    assert not fp32[0] - fp32[1]  # we save no fp32 tensor peft does not
    assert _kept_bytes(saved) < 0.85 * _kept_bytes(saved_peft)  # ours keeps fewer bytes alive than peft's
    v_peft.float().square().mean().backward()
    assert (v.float() - v_peft.float()).abs().max() <= 0.05 * v_peft.float().abs().max()
    scale = max(p.grad.norm() for p in backend.named_trainable().values())
    assert scale > 0
    for n, p in backend.named_trainable().items():  # bf16 rounding apart, the same gradients
        assert (grads[n] - p.grad).norm() <= 0.05 * max(p.grad.norm(), 0.1 * scale), n


def test_fp32_adapter_forward_is_peft_exactly_and_survives_sampling(tiny_sd3_dir):
    from peft.tuners.lora import Linear as LoraLinear

    backend = load(tiny_sd3_dir)
    backend.add_lora(rank=4, init="gaussian_nonzero")
    cond = backend.encode_prompts(PROMPTS)
    x, sigma = noise_for(backend), torch.tensor([0.8, 0.2])
    layers = [m for m in backend.module.modules() if isinstance(m, LoraLinear)]
    ours = [layer.forward for layer in layers]
    with backend.sampling():
        pass
    assert [layer.forward for layer in layers] == ours  # the fused sampling forward is undone
    with torch.no_grad():
        v = backend.velocity(x, sigma, cond)
        for layer in layers:
            del layer.forward
        v_peft = backend.velocity(x, sigma, cond)
    assert torch.allclose(v, v_peft, atol=1e-6, rtol=1e-5)


def test_fp8_base_stores_frozen_weights_in_float8_and_the_adapter_still_trains(tiny_sd3_dir):
    """fp8_base: the frozen weights of the adapted layers are stored as float8 and cast per call; the
    adapter stays fp32 and trainable; velocities move only by fp8 rounding; sampling and the reference
    switch still work (rollouts fall back to the unfused adapter on cast-on-the-fly layers)."""
    from peft.tuners.lora import Linear as LoraLinear

    backend = load(tiny_sd3_dir, dtype="bf16")
    make_nonzero_adapter(backend)
    cond, x, s = backend.encode_prompts(PROMPTS), noise_for(backend), torch.tensor([0.7, 0.4])
    with torch.no_grad():
        v_bf16 = backend.velocity(x, s, cond).float()
        with backend.reference():
            ref_bf16 = backend.velocity(x, s, cond).float()
    bytes_before = sum(p.numel() * p.element_size() for p in backend.module.parameters())
    backend.store_base_in_fp8()
    layers = [m for m in backend.module.modules() if isinstance(m, LoraLinear)]
    assert layers and all(m.base_layer.weight.dtype == torch.float8_e4m3fn for m in layers)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in backend.named_trainable().values())
    assert sum(p.numel() * p.element_size() for p in backend.module.parameters()) < bytes_before
    with torch.no_grad():
        v_fp8 = backend.velocity(x, s, cond).float()
        with backend.reference():
            ref_fp8 = backend.velocity(x, s, cond).float()
        with backend.sampling():
            v_sampling = backend.velocity(x, s, cond).float()
    assert torch.equal(v_sampling, v_fp8)
    for fp8, bf16 in ((v_fp8, v_bf16), (ref_fp8, ref_bf16)):
        error = (fp8 - bf16).norm() / bf16.norm()
        assert 0 < error < 0.1, error  # fp8 rounding moved it, a little
    assert (v_fp8 - ref_fp8).abs().max() > 0.1 * (v_bf16 - ref_bf16).abs().max()  # the adapter acts
    backend.velocity(x, s, cond).float().square().mean().backward()
    grads = [p.grad for p in backend.named_trainable().values()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(
        g.abs().max() > 0 for g in grads
    )
