"""Every model family in a real ComfyUI, built tiny from its own classes (kit.py: SD3, FLUX.1;
kit_families.py: the others): training with every method, the probe under cfg > 1 and a 2-evaluation
sampler, the saved LoRA in the stock LoraLoaderModelOnly (every key loaded, the output changed), and one
LoRA giving the same velocity in ComfyUI and diffusers."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open

from .client import GraphError, train_start_warnings
from .conftest import COMFYUI_PATH, COMFYUI_PYTHON
from .graphs import KIT, loaders, sample, train
from .server import HERE, run_check
from .test_comfyui_nodes import latent

FAMILIES = ["sd3", "flux", "zimage", "lumina2", "qwenimage", "chroma", "auraflow", "flux2", "hidream"]
FAMILIES += ["hunyuanimage"]
METHODS = ["nft", "awm", "dpo", "grpo"]
CROSS_CLIENT = FAMILIES  # Z-Image at a width of its own (cross_client_check.WIDER)
# the families whose diffusers-format LoRA the ComfyUI backend writes (families.DIFFUSERS_FORMAT); the others'
# cross-client LoRA is converted by the check itself. Lumina 2: ComfyUI's map for its class has Z-Image's names
DIFFUSERS_FORMAT = ["sd3", "flux", "chroma", "zimage", "qwenimage", "hidream", "auraflow"]


def server_log(base_dir) -> str:
    return "\n".join(p.read_text(errors="replace") for p in base_dir.glob("server-*.log"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_trains_two_iterations_with_every_method(comfy, loras, family, method):
    out = comfy.run(train(family, f"fam_{family}_{method}", method=method))
    assert "finished: 2 iterations" in out["train"]["text"][0]
    assert (loras / f"fam_{family}_{method}.safetensors").is_file()


@pytest.mark.parametrize("family", FAMILIES)
def test_trains_with_classifier_free_guidance(comfy, loras, family):
    """cfg > 1 in the rollouts: the empty negative prompt's conditioning (its text length, masks, pooled
    vector) goes through the model beside the prompts'."""
    out = comfy.run(train(family, f"fam_{family}_cfg", iterations=1, method="grpo", cfg=2.0))
    assert "finished: 1 iterations" in out["train"]["text"][0]
    assert (loras / f"fam_{family}_cfg.safetensors").is_file()


def test_a_vae_of_other_latents_is_refused_at_the_start(comfy, loras):
    """FLUX.2 takes 128-channel latents: a 16-channel VAE is refused before the first rollout, naming the
    family, not by a shape error in the first decode."""
    g = train("flux2", "fam_wrong_vae")
    g["vae"]["inputs"]["vae_name"] = "tiny_vae16.safetensors"
    with pytest.raises(GraphError, match="VAE makes 16-channel latents but the FLUX.2 .* takes 128"):
        comfy.run(g)
    assert not (loras / "fam_wrong_vae.safetensors").exists()


def test_a_lora_format_the_family_lacks_is_refused_naming_the_family(comfy, loras):
    """Z-Image runs as ComfyUI's Lumina2 class: the refusal names Z-Image, before the first rollout."""
    g = train("zimage", "fam_zimage_kohya", options={"lora_format": "kohya"})
    with pytest.raises(
        GraphError, match="lora_format 'kohya' exists for SD3/SD3.5 and FLUX.1 models, not Z-Image"
    ):
        comfy.run(g)
    assert not (loras / "fam_zimage_kohya.safetensors").exists()


def test_lumina2_has_no_diffusers_format(comfy, loras):
    """ComfyUI's map for its Lumina2 class gives Z-Image's diffusers names, which Lumina2Transformer2DModel
    lacks: lora_format diffusers is refused before the first rollout, naming the families that have it."""
    g = train("lumina2", "fam_lumina2_diffusers", options={"lora_format": "diffusers"})
    with pytest.raises(
        GraphError, match="exists for SD3/SD3.5, FLUX.1, Chroma, Z-Image, .* not Lumina-Image 2.0"
    ):
        comfy.run(g)
    assert not (loras / "fam_lumina2_diffusers.safetensors").exists()


@pytest.mark.parametrize("family", [f for f in DIFFUSERS_FORMAT if f not in ("sd3", "flux")])
def test_diffusers_format_lora_saves_and_loads_back(comfy, base_dir, loras, output_dir, family):
    """lora_format diffusers: the node saves transformer.* keys (the cross-client test loads the same export
    in the diffusers pipeline); the file continues a run (init_lora: import_adapters refuses a file missing
    any layer) and loads in the stock LoraLoaderModelOnly with every key, changing the samples."""
    name = f"fam_{family}_diffusers"
    comfy.run(train(family, name, options={"lora_format": "diffusers"}))
    with safe_open(str(loras / f"{name}.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("transformer.") and ".lora_" in k for k in keys)
    before = server_log(base_dir).count("lora key not loaded")
    g = train(
        family,
        f"{name}_again",
        iterations=1,
        options={"lora_format": "diffusers", "init_lora": f"{name}.safetensors"},
    )
    g["stock"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["unet", 0], "lora_name": f"{name}.safetensors", "strength_model": 1.0},
    }
    sample(g, family, ["stock", 0], f"{name}_stock", node="ks_stock")
    sample(g, family, ["unet", 0], f"{name}_base", node="ks_base")
    out = comfy.run(g)
    assert "finished: 1 iterations" in out["train"]["text"][0]
    assert server_log(base_dir).count("lora key not loaded") == before, "every key of the file is loaded"
    stock, base = (latent(output_dir, out, f"ks_{n}_save") for n in ("stock", "base"))
    assert (stock - base).abs().max() > 1e-4, "the LoRA must change the samples"


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_loads_in_the_stock_loader_with_every_key(comfy, base_dir, loras, output_dir, family):
    name = f"fam_{family}_lora.safetensors"
    comfy.run(train(family, name[: -len(".safetensors")]))
    with safe_open(str(loras / name), framework="pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("diffusion_model.") for k in keys)
    before = server_log(base_dir).count("lora key not loaded")
    g = loaders(family)
    g["stock"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["unet", 0], "lora_name": name, "strength_model": 1.0},
    }
    sample(g, family, ["stock", 0], f"fam_{family}_stock", node="ks_stock", cfg=2.0)
    sample(g, family, ["unet", 0], f"fam_{family}_base", node="ks_base", cfg=2.0)
    out = comfy.run(g)
    assert server_log(base_dir).count("lora key not loaded") == before, "every key of the file is loaded"
    stock, base = (latent(output_dir, out, f"ks_{n}_save") for n in ("stock", "base"))
    assert (stock - base).abs().max() > 1e-4, "the LoRA must change the samples"


@pytest.mark.parametrize("family", FAMILIES)
def test_probe_records_one_value_per_step_heun_cfg(comfy, family):
    g = loaders(family)
    g["p"] = {
        "class_type": "NormGuardVelocityNormProbe",
        "inputs": {"model": ["unet", 0], "reference": ["unet", 0], "rescale": False, "label": family},
    }
    sample(g, family, ["p", 0], f"fam_{family}_probe", node="ks", sampler="heun", cfg=3.0, steps=3)
    g["graph"] = {
        "class_type": "NormGuardVelocityNormGraph",
        "inputs": {"samples": ["ks", 0], "probe_log": ["p", 1]},
    }
    log = comfy.run(g)["graph"]["normguard_probe"][0]
    assert log["step"] == [0, 1, 2], "exactly one record per sampler step"
    assert log["evals"][1:] == [2, 2], "heun evaluates twice per step"
    assert log["ratio"] == [1.0, 1.0, 1.0] and all(u is not None for u in log["norm_uncond"])
    assert all(torch.isfinite(torch.tensor(log["norm"])))


# (family, model file name, step-distilled?): Z-Image-Turbo and FLUX.2 klein have their base models'
# shapes, so the trainer tells them by the file name ComfyUI keeps on the MODEL
DISTILLED = [
    ("zimage", "z_image_turbo_tiny.safetensors", True),
    ("zimage", "z_image_tiny.safetensors", False),
    ("flux2", "flux-2-klein-4b-tiny.safetensors", True),
    ("flux2", "flux-2-klein-base-4b-tiny.safetensors", False),
]


@pytest.mark.parametrize("family, file, distilled", DISTILLED)
def test_step_distilled_variants_warn_for_nft_and_grpo(comfy, server, base_dir, family, file, distilled):
    unets = base_dir / "models" / "diffusion_models"
    if not (unets / file).exists():
        shutil.copy(unets / KIT[family]["unet"], unets / file)
    g = train(
        family, f"fam_distilled_{file[: -len('.safetensors')]}", iterations=1, method="grpo", sample_steps=5
    )
    g["unet"]["inputs"]["unet_name"] = file
    warnings = train_start_warnings(comfy, server, g)
    assert bool(warnings) == distilled
    if distilled:
        assert "GRPO on a step-distilled model: this model is step-distilled" in warnings[0]


def test_a_meanflow_distilled_hunyuanimage_is_refused_at_the_start(comfy, loras):
    """Its velocity depends on the next sampler step too (the distilled HunyuanImage 2.1, told by its
    time_r_in weights): refused before any work, naming the reason, with the stock loader's MODEL."""
    g = train("hunyuanimage", "fam_meanflow", iterations=1)
    g["unet"]["inputs"]["unet_name"] = "tiny_hunyuanimage_meanflow.safetensors"
    with pytest.raises(GraphError, match="meanflow-distilled"):
        comfy.run(g)
    assert not (loras / "fam_meanflow.safetensors").exists()


@pytest.mark.parametrize("family", CROSS_CLIENT)
def test_one_lora_gives_the_same_velocity_in_comfyui_and_diffusers(base_dir, package_parent, family):
    """cross_client_check.py: the family's tiny ComfyUI model and a non-zero LoRA in ComfyUI's format, loaded
    by the stock loader (every key), against the same weights in the family's diffusers transformer with the
    same LoRA in the diffusers format through the pipeline's load_lora_weights, on ComfyUI's conditioning."""
    args = (COMFYUI_PATH, base_dir / "models", package_parent, family)
    c = run_check(COMFYUI_PYTHON, HERE / "cross_client_check.py", *args, timeout=1200)
    assert c["not_loaded"] == [] and c["weights_missing"] == [] and c["weights_unexpected"] == []
    made_by = "export_adapters" if family in DIFFUSERS_FORMAT else "diffusers_lora"
    assert c["diffusers_lora_from"] == made_by, "the product's own diffusers export where it has one"
    assert c["diffusers_layers_loaded"] == c["diffusers_layers_in_file"] > 0, "diffusers loads every layer"
    assert c["lora_effect"] > 1e-2, "the LoRA changes the velocity"
    assert c["stock_vs_trained"] < 1e-5, "the stock loader applies the file as the trainer's adapter"
    assert c["diffusers_vs_comfyui"] < 1e-4 * max(1.0, c["scale"]), "both clients give one velocity"
