"""The example workflows of example_workflows/: served as templates, every node type and link known to a real
ComfyUI's /object_info, and each one run (converted to the API format, full-size models swapped for
the tiny kit, sizes shrunk) in the order a user would: train, compare, on vs off; then the Z-Image one on
the tiny Z-Image of family_specs.py (through the test-only loaders: ComfyUI's detection refuses it tiny)."""

from __future__ import annotations

import copy
import json
import urllib.parse
from pathlib import Path

import pytest

from .graphs import loaders
from .ui_workflow import FRONTEND_ONLY, problems, to_api

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
PACK = "normguard"  # the folder name conftest.py links into custom_nodes
STEPS = 3
# the real files a workflow's stock loaders name -> the tiny kit's loader node for that model
TINY_FAMILY_FILES = {
    "z_image_turbo_bf16.safetensors": loaders("zimage")["unet"],
    "qwen_3_4b.safetensors": loaders("zimage")["clip"],
    "ae.safetensors": loaders("zimage")["vae"],
}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    from .client import Comfy

    return Comfy(server).get("/object_info")


def example(number: int) -> Path:
    return next(w for w in WORKFLOWS if w.stem.startswith(f"{number} - "))


def test_there_are_four_examples_and_the_server_lists_them_as_templates(comfy):
    assert len(WORKFLOWS) == 4, [w.name for w in WORKFLOWS]
    listed = comfy.get("/api/workflow_templates")
    assert sorted(listed[PACK]) == sorted(w.stem for w in WORKFLOWS)
    for w in WORKFLOWS:  # served as the frontend fetches them
        assert comfy.get(f"/api/workflow_templates/{PACK}/{urllib.parse.quote(w.name)}") == load(w)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_node_and_link_is_known_to_comfyui(path, object_info):
    workflow = load(path)
    assert problems(workflow, object_info) == []
    types = {n["type"] for n in workflow["nodes"]} - FRONTEND_ONLY
    assert {"NormGuardVelocityNormProbe", "NormGuardTrainLoRA"} & types, "each example shows the pack's nodes"


def tiny(prompt: dict[str, dict], iterations: int = 2) -> dict[str, dict]:
    """The same graph on the tiny kit: checkpoint -> UNETLoader + VAELoader, triple CLIP -> one tiny
    CLIP-L, a family's real files -> its tiny model's loaders (TINY_FAMILY_FILES), weight-based rewards ->
    JPEG incompressibility, small images, few steps and iterations."""
    out: dict[str, dict] = {}
    rewire: dict[tuple[str, int], list] = {}
    for nid, node in prompt.items():
        cls, inputs = node["class_type"], dict(node["inputs"])
        real_file = next((v for v in inputs.values() if isinstance(v, str) and v in TINY_FAMILY_FILES), None)
        if real_file is not None:
            out[nid] = copy.deepcopy(TINY_FAMILY_FILES[real_file])
            continue
        if cls == "CheckpointLoaderSimple":
            out[nid] = {
                "class_type": "UNETLoader",
                "inputs": {"unet_name": "tiny_sd3.safetensors", "weight_dtype": "default"},
            }
            out[f"{nid}_vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_vae16.safetensors"}}
            rewire[(nid, 2)] = [f"{nid}_vae", 0]
            continue
        if cls == "TripleCLIPLoader":
            cls, inputs = "CLIPLoader", {"clip_name": "tiny_clip_l.safetensors", "type": "sd3"}
        elif cls.startswith("NormGuardReward") and "path" in inputs:
            cls, inputs = "NormGuardRewardJpegIncompressibility", {"weight": inputs["weight"]}
        elif cls == "NormGuardTrainLoRA":
            inputs |= {"iterations": iterations, "group_size": 2, "sample_steps": 2, "width": 64, "height": 64, "lora_rank": 4, "learning_rate": 0.02}  # fmt: skip
        elif cls == "NormGuardTrainOptions":
            inputs |= {"groups_per_iteration": 1, "train_timesteps": 1, "micro_batch_size": 2, "eval_every": 1, "eval_samples": 1, "gradient_checkpointing": False}  # fmt: skip
        elif cls == "EmptySD3LatentImage":
            inputs |= {"width": 64, "height": 64}
        elif cls == "KSampler":
            inputs["steps"] = STEPS
        out[nid] = {"class_type": cls, "inputs": inputs}
    for node in out.values():
        for k, v in node["inputs"].items():
            if isinstance(v, list) and (v[0], v[1]) in rewire:
                node["inputs"][k] = rewire[(v[0], v[1])]
    return out


def probe_labels(workflow: dict) -> list[str]:
    """The curve labels of the workflow's probes, in the graph node's input order."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    graph = next(n for n in workflow["nodes"] if n["type"] == "NormGuardVelocityNormGraph")
    labels = []
    for slot in graph["inputs"]:
        if slot["name"].startswith("probe_log") and slot.get("link") is not None:
            labels.append(nodes[links[slot["link"]][1]]["widgets_values"][1])
    return labels


def test_each_example_runs_on_the_tiny_kit(comfy, object_info, loras):
    train, compare, on_off = (example(n) for n in (1, 2, 3))
    # 1: trains the LoRA that workflow 2 loads, and samples with it
    out = comfy.run(tiny(to_api(load(train), object_info)), timeout=600)
    assert (loras / "sd35m_pickscore_normguard.safetensors").is_file()
    saved = [img for v in out.values() for img in v.get("images", []) if img["type"] == "output"]
    assert len(saved) == 1 and saved[0]["filename"].startswith("tuned")

    # 2 and 3: one graph with every probe's run, one record per sampler step
    for path, trained in ((compare, []), (on_off, ["sd35m_jpeg_normguard_on", "sd35m_jpeg_normguard_off"])):
        workflow = load(path)
        out = comfy.run(tiny(to_api(workflow, object_info)), timeout=900)
        logs = next(v["normguard_probe"] for v in out.values() if "normguard_probe" in v)
        assert [log["label"] for log in logs] == probe_labels(workflow)
        assert all(log["step"] == list(range(STEPS)) for log in logs)
        assert all(r is not None for log in logs for r in log["ratio"]), (
            "each probe has the base as reference"
        )
        for name in trained:
            assert (loras / f"{name}.safetensors").is_file()
    base, on, off = logs
    assert base["ratio"] == [1.0] * STEPS, "the base model against itself"


def test_the_z_image_example_trains_and_probes_on_the_tiny_z_image(comfy, object_info, loras):
    """Workflow 4 as a user runs it: its stock loaders' files swapped for the tiny Z-Image, AWM at the
    workflow's settings but tiny sizes; the LoRA is saved, the tuned model samples and the probe against
    the base model records every step."""
    workflow = load(example(4))
    prompt = tiny(to_api(workflow, object_info))
    train = next(n for n in prompt.values() if n["class_type"] == "NormGuardTrainLoRA")
    assert train["inputs"]["method"] == "awm", "Turbo is step-distilled: the example trains with AWM"
    assert {n["class_type"] for n in prompt.values()} >= {"NormGuardTestTinyUNET", "NormGuardTestTinyCLIP"}
    out = comfy.run(prompt, timeout=900)
    assert (loras / "zimage_turbo_pickscore_normguard.safetensors").is_file()
    saved = [img for v in out.values() for img in v.get("images", []) if img["type"] == "output"]
    assert len(saved) == 1 and saved[0]["filename"].startswith("zimage_tuned")
    (log,) = next(v["normguard_probe"] for v in out.values() if "normguard_probe" in v)
    assert log["label"] == "tuned" and log["step"] == list(range(STEPS))
    assert all(r is not None for r in log["ratio"]) and log["ratio"] != [1.0] * STEPS, "the LoRA moved v"
