"""What a published pack needs in a real ComfyUI: workflows saved with the old node ids still run,
search aliases and the experimental mark reach the frontend, and the pack works under the folder
name a registry install gives it (custom_nodes/<registry id>) as well as under a clone's."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
import torch

from .client import Comfy, GraphError
from .conftest import COMFYUI_PATH, COMFYUI_PYTHON
from .graphs import loaders, sample
from .server import REPO, comfyui_server

# [project] name: the registry id, and the folder `comfy node install` creates
REGISTRY_ID = re.search(r'^name = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)[1]


def test_node_metadata_reaches_the_frontend(comfy):
    info = comfy.get("/object_info")
    assert info["NormGuardTrainLoRA"]["experimental"] is True
    assert {"reward", "rlhf", "lora train"} <= set(info["NormGuardTrainLoRA"]["search_aliases"])
    assert "velocity norm" in info["NormGuardVelocityNormProbe"]["search_aliases"]
    for old, new in (("VelocityNormProbe", "NormGuardVelocityNormProbe"), ("VelocityNormGraph", "NormGuardVelocityNormGraph")):  # fmt: skip
        assert info[old]["deprecated"] is True, "old ids are hidden from search"
        assert info[old]["input"] == info[new]["input"] and info[old]["output"] == info[new]["output"]


def test_a_workflow_saved_with_the_old_ids_still_runs(comfy):
    """The ids before the pack prefix, with the probe's optional reference left unconnected."""
    g = loaders("sd3")
    g["p"] = {
        "class_type": "VelocityNormProbe",
        "inputs": {"model": ["unet", 0], "rescale": False, "label": "old id"},
    }
    sample(g, "sd3", ["p", 0], "old_ids", steps=3)
    g["graph"] = {"class_type": "VelocityNormGraph", "inputs": {"samples": ["ks", 0], "probe_log": ["p", 1]}}
    log = comfy.run(g)["graph"]["normguard_probe"][0]
    assert log["label"] == "old id" and log["step"] == [0, 1, 2] and log["node"] == "p"
    assert all(n is not None and n > 0 for n in log["norm"])


@pytest.fixture(scope="module")
def registry_folder_server(base_dir, tmp_path_factory):
    """A second ComfyUI whose custom_nodes holds the pack as custom_nodes/<registry id>/ (the same
    models as the main test server)."""
    base = tmp_path_factory.mktemp("registry-base")
    (base / "models").symlink_to(base_dir / "models", target_is_directory=True)
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / REGISTRY_ID).symlink_to(REPO, target_is_directory=True)
    with comfyui_server(base, COMFYUI_PATH, COMFYUI_PYTHON) as running:
        yield running


@pytest.mark.parametrize("folder", ["normguard", REGISTRY_ID])
def test_the_pack_works_under_both_folder_names(folder, comfy, registry_folder_server):
    """Nodes, the web extension (served under the folder's name, imports relative) and the templates."""
    server = comfy if folder == "normguard" else Comfy(registry_folder_server.url)
    info = server.get("/object_info")
    assert "NormGuardTrainLoRA" in info and "NormGuardVelocityNormProbe" in info
    scripts = server.get("/extensions")
    assert f"/extensions/{folder}/normguard.js" in scripts, scripts
    with urllib.request.urlopen(f"{server.url}/extensions/{folder}/normguard.js") as r:
        js = r.read().decode()
    assert 'from "./charts.js"' in js and 'from "../../scripts/app.js"' in js
    templates = server.get("/api/workflow_templates")
    assert sorted(templates[folder]) == sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
    if folder == REGISTRY_ID:
        g = loaders("sd3")
        g["p"] = {
            "class_type": "NormGuardVelocityNormProbe",
            "inputs": {"model": ["unet", 0], "rescale": False, "label": "x"},
        }
        sample(g, "sd3", ["p", 0], "registry_folder", steps=2)
        g["graph"] = {
            "class_type": "NormGuardVelocityNormGraph",
            "inputs": {"samples": ["ks", 0], "probe_log": ["p", 1]},
        }
        assert server.run(g)["graph"]["normguard_probe"][0]["step"] == [0, 1]
        log = Path(registry_folder_server.log).read_text(encoding="utf-8", errors="replace")
        assert "IMPORT FAILED" not in log, log[-3000:]


def test_trackers_are_opt_in_and_eval_prompts_have_an_input(comfy, output_dir):
    """The options node's log_with (empty: no tracker, not even TensorBoard) and eval_prompts reach the
    run's config; a tracker that is not installed is refused, naming the key and what to install."""
    import yaml

    from .graphs import train

    g = train(
        "sd3", "opt_in", iterations=1, options={"eval_every": 1, "eval_prompts": "a green cone\n# no\n"}
    )
    comfy.run(g, timeout=600)
    run = output_dir / "normguard" / "opt_in"
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert config["eval_prompts"] == ["a green cone"] and config["log_with"] == []
    assert config["tensorboard"] is False and not (run / "tensorboard").exists()
    missing = next((t for t in ("wandb", "mlflow", "trackio") if t not in installed_in_comfyui(comfy)), None)
    if missing:
        g = train("sd3", "opt_in_missing", iterations=1, options={"log_with": missing})
        with pytest.raises(GraphError, match=f"log_with: {missing} is not installed"):
            comfy.run(g, timeout=600)


def installed_in_comfyui(comfy) -> str:
    """The trackers the options node's tooltip lists as installed in ComfyUI's Python."""
    inputs = comfy.get("/object_info/NormGuardTrainOptions")["NormGuardTrainOptions"]["input"]["optional"]
    return inputs["log_with"][1]["tooltip"].split("installed here:")[1]


def test_a_missing_quality_score_shows_on_the_trainer_node(comfy):
    """ComfyUI's Python here lacks the brisque package: the node says so (the default, niqe, needs none)."""
    from .graphs import train

    g = train("sd3", "no_quality", iterations=1, options={"eval_every": 1, "extra": "eval_quality: brisque"})
    text = "\n".join(comfy.run(g, timeout=600)["train"]["text"])
    assert "no independent quality score (eval_quality: brisque)" in text and "pip install" in text
    g = train("sd3", "niqe_quality", iterations=1, options={"eval_every": 1})
    out = comfy.run(g, timeout=600)
    assert "no independent quality score" not in "\n".join(out["train"]["text"])


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_kohya_format_loads_in_the_stock_loader_with_every_key(kind, comfy, base_dir, loras, output_dir):
    """lora_format kohya: lora_unet_* keys with .alpha; ComfyUI's LoraLoaderModelOnly maps every key (its
    log names each key it cannot) and samples what the trainer's own MODEL output samples."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .graphs import train

    name = f"t_kohya_{kind}"
    g = train(kind, name, iterations=1, options={"lora_format": "kohya"})
    sample(g, kind, ["train", 0], f"{name}_trained")
    trained = comfy.run(g, timeout=600)
    with safe_open(str(loras / f"{name}.safetensors"), framework="pt") as f:
        keys, meta = list(f.keys()), dict(f.metadata() or {})
    assert meta["normguard.lora_format"] == "kohya" and keys
    assert all(
        k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))
        for k in keys
    )
    layers = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k[: -len(".alpha")] for k in keys}
    assert all(f"{layer}.alpha" in keys for layer in layers)
    logs = sorted(Path(base_dir).glob("server-*.log"), key=lambda p: p.stat().st_mtime)
    before = logs[-1].stat().st_size
    g = loaders(kind)
    g["stock"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["unet", 0], "lora_name": f"{name}.safetensors", "strength_model": 1.0},
    }
    sample(g, kind, ["stock", 0], f"{name}_stock")
    out = comfy.run(g)
    with open(logs[-1], "rb") as f:
        f.seek(before)
        new_log = f.read().decode(errors="replace")
    assert "lora key not loaded" not in new_log, new_log[-2000:]

    def saved(outputs):
        entry = outputs["ks_save"]["latents"][0]
        return load_file(str(output_dir / entry["subfolder"] / entry["filename"]))["latent_tensor"]

    assert torch.equal(saved(out), saved(trained)), "the stock loader applies the LoRA the trainer trained"
