"""Every flow family on the diffusers backend, each checked against its own diffusers pipeline.

For each family a tiny random pipeline (tests/diffusers_kit.py, tests/family_kit.py) is saved and
loaded the way a user's model folder is. The pipeline's own __call__ is the reference: our
conditioning (pooled vectors, guidance, masks, position ids), transformer call, sign and timestep
convention, latent packing and schedule must reproduce its denoising steps; every method trains a
LoRA on it; the LoRA loads through the pipeline's load_lora_weights and gives our velocity.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers_kit import build_tiny_flux, build_tiny_sd3
from family_kit import BUILDERS
from safetensors.torch import save_file
from test_train_diffusers import tiny_run

from normguard.trainer import families
from normguard.trainer.backends.diffusers import DiffusersBackend
from normguard.trainer.config import TrainConfig
from normguard.trainer.families.flux import pack_latents, unpack_latents
from normguard.trainer.loop import train
from normguard.trainer.lora import normguard_facts, read_lora_metadata
from normguard.trainer.rollout import guided_velocity

H = W = 64
PROMPTS = ["a photo of a cat", "a sign that says hello world"]
TIGHT = {"atol": 2e-5, "rtol": 1e-4}  # fp32: same math, possibly different op order
ALL = ["sd3", "flux", *BUILDERS]
PACKED = {"flux", "chroma", "qwenimage"}  # the pipeline's latents are 2x2-packed tokens
# pipeline kwargs that make its step a single conditional evaluation (our sampler at cfg = 1)
NO_CFG = {
    "sd3": {"guidance_scale": 1.0},
    "flux": {"guidance_scale": 3.5},  # the distilled guidance our backend uses by default
    "chroma": {"guidance_scale": 1.0},
    "zimage": {"guidance_scale": 0.0},
    "lumina2": {"guidance_scale": 1.0},
    "qwenimage": {"true_cfg_scale": 1.0},
    "auraflow": {"guidance_scale": 1.0},
    "flux2": {"guidance_scale": 1.0},
    "hidream": {"guidance_scale": 1.0},
    "hunyuanimage": {},  # no guider component: the pipeline runs one conditional evaluation
}
_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def family_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


def folder_of(name: str, root: Path) -> Path:
    """The tiny pipeline folder of a family, built once per session."""
    if name not in _BUILT:
        build = {"sd3": build_tiny_sd3, "flux": build_tiny_flux, **BUILDERS}[name]
        _BUILT[name] = build(root / name)
    return _BUILT[name]


@pytest.fixture(params=ALL)
def family(request: pytest.FixtureRequest, family_root: Path) -> tuple[str, Path]:
    return request.param, folder_of(request.param, family_root)


def load(folder: Path) -> DiffusersBackend:
    return DiffusersBackend.from_pretrained(str(folder))


def pipeline_run(
    name: str, pipe, noise: torch.Tensor, steps: int, prompts: list[str] = PROMPTS, **kwargs
) -> torch.Tensor:
    """The pipeline's own latents after each step from `noise` (spatial layout), noise first."""
    states = [noise]
    h, w = noise.shape[-2:]
    if name == "hidream":  # its pipeline rescales every request to default_sample_size^2 latent pixels
        pipe.default_sample_size = h

    def record(p, i, t, tensors):
        lat = tensors["latents"]
        if name == "flux2":  # tokens in row-major order, channels last
            lat = lat.permute(0, 2, 1).reshape(lat.shape[0], -1, h, w)
        states.append(unpack_latents(lat, h, w) if name in PACKED else lat)
        return {}

    pipe(
        prompt=list(prompts),  # Z-Image's pipeline rewrites the list it is given in place
        height=H,
        width=W,
        num_inference_steps=steps,
        latents=pack_latents(noise) if name in PACKED else noise,
        output_type="latent",
        callback_on_step_end=record,
        **(kwargs or NO_CFG[name]),
    )
    return torch.stack(states)


def test_every_family_has_a_tiny_pipeline_and_a_descriptor():
    assert set(ALL) == set(families.FAMILIES)
    for fam in families.FAMILIES.values():
        assert fam.pipelines and fam.lora_targets and fam.comfy_models and fam.targets_from


def test_euler_steps_reproduce_the_pipelines_own(family):
    """Our conditioning, transformer call (sign, timestep direction, packing, masks, ids, guidance) and
    schedule: x_{k+1} = x_k + (sigma_{k+1} - sigma_k) v(x_k, sigma_k) is the pipeline's step k."""
    name, folder = family
    backend = load(folder)
    assert backend.name == name
    noise = torch.randn(len(PROMPTS), *backend.latent_shape(H, W), generator=torch.Generator().manual_seed(0))
    states = pipeline_run(name, backend.pipe, noise, 3)
    sigmas = backend.schedule(3, H, W)
    cond = backend.encode_prompts(PROMPTS)
    for k in range(3):
        v = backend.velocity(states[k], sigmas[k].expand(len(PROMPTS)), cond)
        ours = states[k] + (sigmas[k + 1] - sigmas[k]) * v
        torch.testing.assert_close(ours, states[k + 1], **TIGHT)
        if sigmas[k] - sigmas[k + 1] > 0.05:  # the step moved: the comparison is not vacuous
            assert (states[k + 1] - states[k]).abs().mean() > 100 * TIGHT["atol"]
    # the two prompts condition differently (the text reaches the transformer)
    x, s = noise[:1].expand(2, -1, -1, -1), sigmas[:1].expand(2)
    v = backend.velocity(x, s, cond)
    assert (v[0] - v[1]).abs().max() > 1e-5


# pipeline kwargs for plain classifier-free guidance uncond + 2 (cond - uncond) with the "" negative prompt
CFG2 = {
    "sd3": {"guidance_scale": 2.0},
    "chroma": {"guidance_scale": 2.0},
    "zimage": {
        "guidance_scale": 1.0,
        "cfg_normalization": False,
        "cfg_truncation": 1.0,
    },  # pos + g (pos - neg)
    "lumina2": {"guidance_scale": 2.0, "cfg_normalization": False, "cfg_trunc_ratio": 1.0},
    "auraflow": {"guidance_scale": 2.0},
    "flux2": {"guidance_scale": 2.0},
    "hidream": {"guidance_scale": 2.0},
}


@pytest.mark.parametrize("name", sorted(CFG2))
def test_guided_steps_reproduce_the_pipelines_cfg(name, family_root):
    """With cfg = 2 our sampler's guided velocity (the "" prompt as the negative) is the pipeline's own
    guided step: the negative conditioning is what the pipeline builds for it."""
    backend = load(folder_of(name, family_root))
    noise = torch.randn(len(PROMPTS), *backend.latent_shape(H, W), generator=torch.Generator().manual_seed(4))
    states = pipeline_run(name, backend.pipe, noise, 2, **CFG2[name])
    sigmas = backend.schedule(2, H, W)
    cond, uncond = backend.encode_prompts(PROMPTS), backend.encode_prompts(["", ""])
    for k in range(2):
        v = guided_velocity(backend, states[k], sigmas[k].expand(len(PROMPTS)), cond, uncond, 2.0)
        torch.testing.assert_close(states[k] + (sigmas[k + 1] - sigmas[k]) * v, states[k + 1], **TIGHT)
    unguided = backend.velocity(states[0], sigmas[0].expand(len(PROMPTS)), cond)
    assert (
        guided_velocity(backend, states[0], sigmas[0].expand(2), cond, uncond, 2.0) - unguided
    ).abs().max() > 1e-4


def test_decode_is_the_pipelines(family):
    name, folder = family
    backend = load(folder)
    noise = torch.randn(1, *backend.latent_shape(H, W), generator=torch.Generator().manual_seed(1))
    pipe = backend.pipe
    if name == "hidream":
        pipe.default_sample_size = noise.shape[-1]
    out = pipe(
        prompt=PROMPTS[:1],  # a copy
        height=H,
        width=W,
        num_inference_steps=1,
        latents=pack_latents(noise) if name in PACKED else noise,
        output_type="pt",
        **NO_CFG[name],
    ).images
    x1 = pipeline_run(name, pipe, noise, 1, PROMPTS[:1])[-1]
    torch.testing.assert_close(backend.decode(x1), out.float(), **TIGHT)


def make_nonzero_adapter(backend: DiffusersBackend) -> None:
    torch.manual_seed(0)
    backend.add_lora(rank=4, alpha=8, init="gaussian_nonzero")
    with torch.no_grad():
        for n, p in backend.named_trainable().items():
            if "lora_B" in n:
                p.mul_(10)


def test_lora_loads_in_the_pipeline_and_gives_our_velocity(family, tmp_path):
    """The exported file (diffusers keys, alpha folded into lora_B) through the family pipeline's own
    load_lora_weights: its transformer gives the tuned backend's velocity, and it differs from the base."""
    name, folder = family
    backend = load(folder)
    make_nonzero_adapter(backend)
    assert all(
        any(n.endswith(f"{t}.lora_A.weight") for n in backend.lora_state_dict())
        for t in backend.family.lora_targets
    )  # fmt: skip  (every default target exists here)
    file = tmp_path / "lora.safetensors"
    save_file(backend.lora_state_dict(), str(file), metadata=backend.lora_metadata())
    cond = backend.encode_prompts(PROMPTS)
    x = torch.randn(2, *backend.latent_shape(H, W), generator=torch.Generator().manual_seed(2))
    s = torch.tensor([0.8, 0.3])
    ours = backend.velocity(x, s, cond)
    with backend.reference():
        base = backend.velocity(x, s, cond)
    assert (ours - base).abs().max() > 1e-2

    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    if hasattr(pipe, "load_lora_weights"):
        pipe.load_lora_weights(str(file))
    else:  # HunyuanImagePipeline (diffusers 0.42) has no LoRA loader: its transformer's peft one
        assert name == "hunyuanimage"
        pipe.transformer.load_lora_adapter(str(file), prefix="transformer")
    loaded = backend.adapter.predict(pipe.transformer, x, s, cond, backend.guidance)
    torch.testing.assert_close(loaded, ours, **TIGHT)


@pytest.mark.parametrize("method", ["nft", "awm", "dpo", "grpo"])
def test_every_method_trains_on_every_family(family, method, tmp_path):
    name, folder = family
    result = train(tiny_run(folder, tmp_path, method=method).replace(sample_steps=2, lora_rank=2))
    assert result.status == "finished" and result.iterations == 2
    facts = normguard_facts(read_lora_metadata(result.lora_path))
    assert facts["method"] == method
    backend = load(folder)
    backend.add_lora(rank=2)
    from safetensors.torch import load_file

    backend.load_lora_state_dict(load_file(result.lora_path))
    cond = backend.encode_prompts(PROMPTS)
    x = torch.randn(2, *backend.latent_shape(H, W), generator=torch.Generator().manual_seed(3))
    tuned = backend.velocity(x, torch.tensor([0.7, 0.4]), cond)
    with backend.reference():
        base = backend.velocity(x, torch.tensor([0.7, 0.4]), cond)
    assert torch.isfinite(tuned).all() and (tuned - base).abs().max() > 1e-6, "training changed nothing"


def test_image_input_variants_are_refused_naming_the_family_and_the_supported_list(tmp_path, family_root):
    folder = tmp_path / "edit"
    shutil.copytree(folder_of("qwenimage", family_root), folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "QwenImageEditPipeline"}))
    with pytest.raises(
        ValueError, match="QwenImageEditPipeline .a Qwen-Image variant that needs an image"
    ) as e:
        load(folder)
    for pipeline in ("ZImagePipeline", "ChromaPipeline", "QwenImagePipeline", "StableDiffusion3Pipeline"):
        assert pipeline in str(e.value)


def test_step_distilled_variants_are_recognised(tmp_path, family_root):
    """FLUX.2 klein (the pipeline's is_distilled) and Z-Image-Turbo (by name: its config is the base
    model's) are step-distilled, so NFT and GRPO runs on them warn; the base models are not."""
    from family_kit import build_tiny_flux2_klein

    from normguard.trainer.methods import step_distillation_warning

    klein = load(build_tiny_flux2_klein(tmp_path / "klein-4b", distilled=True))
    assert klein.step_distilled() and klein.lora_metadata()["modelspec.architecture"] == "flux-2-klein/lora"
    assert not load(folder_of("flux2", family_root)).step_distilled()
    turbo = tmp_path / "Z-Image-Turbo"
    shutil.copytree(folder_of("zimage", family_root), turbo)
    assert load(turbo).step_distilled() and not load(folder_of("zimage", family_root)).step_distilled()
    cfg = TrainConfig(model=str(turbo), prompts=["a"], rewards=["jpeg_compressibility"], method="nft")
    assert "step-distilled" in step_distillation_warning(cfg, load(turbo).step_distilled())


def test_the_targets_table_in_the_code_is_the_descriptors():
    rows = [line.split("|")[1:3] for line in families.__doc__.splitlines() if line.startswith("| ")]
    table = {name.strip(): tuple(targets.split()) for name, targets in rows[1:]}
    assert table == {name: fam.lora_targets for name, fam in families.FAMILIES.items()}


def test_bf16_with_gradient_checkpointing_trains(family):
    """The memory settings of a real run: bf16 compute, checkpointed blocks, an fp32 adapter that gets
    finite gradients (masks keep their integer/bool dtype: the transformers index with them)."""
    name, folder = family
    backend = DiffusersBackend.from_pretrained(str(folder), dtype="bf16", gradient_checkpointing=True)
    backend.add_lora(rank=2, init="gaussian_nonzero")
    cond = backend.encode_prompts(PROMPTS)
    assert all(v.dtype in (torch.bfloat16, torch.bool, torch.int64) for v in cond.values())
    x = torch.randn(2, *backend.latent_shape(H, W), generator=torch.Generator().manual_seed(5))
    backend.pipe.transformer.train()
    v = backend.velocity(x, torch.tensor([0.6, 0.2]), cond)
    v.float().square().mean().backward()
    grads = [p.grad for p in backend.trainable_parameters()]
    assert v.dtype == torch.bfloat16 and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().max() > 0 for g in grads)
