"""The node pack in a real ComfyUI: listing, training, both LoRA loaders, the probe and its graph,
cancel/resume, rewards, and refusals (see conftest.py for how the server is started)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from .client import EventStream, GraphError, train_start_warnings
from .graphs import loaders, sample, train

NODE_IDS = [
    "NormGuardTrainLoRA",
    "NormGuardTrainOptions",
    "NormGuardLoadPrompts",
    "NormGuardRewardCombine",
    "NormGuardScoreImages",
    "NormGuardRewardJpegCompressibility",
    "NormGuardRewardJpegIncompressibility",
    "NormGuardRewardClipScore",
    "NormGuardRewardPickscore",
    "NormGuardRewardAesthetic",
    "NormGuardRewardHps",
    "NormGuardRewardOcr",
    "NormGuardRewardBrisque",
    "NormGuardVelocityNormProbe",
    "NormGuardVelocityNormGraph",
    "NormGuardLoraLoader",
]


def latent(output_dir: Path, outputs: dict, save_node: str) -> torch.Tensor:
    entry = outputs[save_node]["latents"][0]
    return load_file(str(output_dir / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def lora_keys(path: Path) -> tuple[list[str], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys()), dict(f.metadata() or {})


def test_every_node_is_listed(comfy):
    info = comfy.get("/object_info")
    missing = [n for n in NODE_IDS if n not in info]
    assert not missing, f"not in /object_info: {missing}"
    for n in NODE_IDS:
        assert info[n]["category"].startswith("NormGuard"), n
    train_inputs = info["NormGuardTrainLoRA"]["input"]
    assert train_inputs["required"]["reward"][0] == "NORMGUARD_REWARD"
    assert train_inputs["optional"]["options"][0] == "NORMGUARD_OPTIONS"
    assert info["NormGuardVelocityNormProbe"]["output"] == ["MODEL", "NORMGUARD_PROBE_LOG"]
    assert info["NormGuardVelocityNormGraph"]["input"]["required"]["samples"][0] == "LATENT"
    assert set(train_inputs["required"]["method"][1]["options"]) == {"nft", "awm", "dpo", "grpo"}
    # the seed stays fixed after queueing (the frontend randomizes seeds by default): queueing again resumes
    assert train_inputs["required"]["seed"][1]["control_after_generate"] == "fixed"


@pytest.fixture(scope="module")
def trained_sd3(server, loras, output_dir):
    """A LoRA trained for 2 iterations on the tiny SD3, plus the graph's outputs."""
    from .client import Comfy

    comfy = Comfy(server)
    g = train("sd3", "t_sd3", options={"eval_every": 2})  # evaluates the base model and iteration 2
    sample(g, "sd3", ["train", 0], "t_sd3_trained")
    g["show_name"] = {"class_type": "PreviewAny", "inputs": {"source": ["train", 1]}}
    g["show_log"] = {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}}
    outputs = comfy.run(g)
    return "t_sd3.safetensors", outputs


def test_trained_lora_loads_in_both_loaders_like_the_trainer_output(comfy, trained_sd3, loras, output_dir):
    name, outputs = trained_sd3
    keys, meta = lora_keys(loras / name)
    assert keys and all(k.startswith("diffusion_model.") for k in keys)
    assert meta["normguard.method"] == "nft" and json.loads(meta["normguard.iterations"]) == 2
    assert meta["modelspec.architecture"] == "stable-diffusion-3/lora"
    run = output_dir / "normguard" / "t_sd3"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]  # 0: the base model's evaluation
    assert len(rows[-1]["rho_per_step"]) == 2 and rows[0]["rho_mean"] == pytest.approx(1.0)
    assert (run / "evals" / "iter-000002.png").is_file() and (run / "t_sd3_best.safetensors").is_file()
    assert (run / "checkpoints").is_dir() and (run / "t_sd3.safetensors").is_file()
    assert "finished: 2 iterations" in outputs["train"]["text"][0]
    assert outputs["train"]["images"], "the trainer node previews its latest evaluation grid"
    assert outputs["show_name"]["text"][0] == name  # the node's outputs: the file name and the log
    assert [json.loads(line)["iteration"] for line in outputs["show_log"]["text"][0].splitlines()] == [
        0,
        1,
        2,
    ]

    g = loaders("sd3")
    g["stock"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["unet", 0], "lora_name": name, "strength_model": 1.0},
    }
    g["ng"] = {
        "class_type": "NormGuardLoraLoader",
        "inputs": {"model": ["unet", 0], "lora_name": name, "strength": 1.0},
    }
    sample(g, "sd3", ["stock", 0], "t_sd3_stock", node="ks_stock")
    sample(g, "sd3", ["ng", 0], "t_sd3_ng", node="ks_ng")
    sample(g, "sd3", ["unet", 0], "t_sd3_base", node="ks_base")
    out = comfy.run(g)
    trained = latent(output_dir, outputs, "ks_save")
    stock, ours, base = (latent(output_dir, out, f"ks_{n}_save") for n in ("stock", "ng", "base"))
    assert torch.equal(stock, trained), "the trainer's MODEL output must equal the stock LoraLoader's"
    assert torch.equal(ours, stock)
    assert (stock - base).abs().max() > 1e-4, "the LoRA must change the samples"
    # every layer pair of the file is applied (7 attention projections in the depth-2 MMDiT)
    assert out["ng"]["normguard_lora"][0]["patched"] == len(keys) // 2 == 7
    assert "normguard.method" not in out["ng"]["text"][0] and "method: nft" in out["ng"]["text"][0]


def test_probe_records_one_value_per_step_heun_cfg3_batch2(comfy, server, trained_sd3, output_dir):
    name, _ = trained_sd3
    g = loaders("sd3")
    g["lora"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["unet", 0], "lora_name": name, "strength_model": 1.0},
    }
    g["p_same"] = {
        "class_type": "NormGuardVelocityNormProbe",
        "inputs": {"model": ["unet", 0], "reference": ["unet", 0], "rescale": False, "label": "base"},
    }
    g["p_lora"] = {
        "class_type": "NormGuardVelocityNormProbe",
        "inputs": {"model": ["lora", 0], "reference": ["unet", 0], "rescale": False, "label": "lora"},
    }
    g["p_plain"] = {
        "class_type": "NormGuardVelocityNormProbe",
        "inputs": {"model": ["unet", 0], "rescale": False, "label": "plain"},
    }
    sample(g, "sd3", ["p_same", 0], "p_same", node="ks_same", sampler="heun", cfg=3.0, batch=2, steps=4)
    sample(g, "sd3", ["p_lora", 0], "p_lora", node="ks_lora", sampler="heun", cfg=3.0, batch=2, steps=4)
    sample(g, "sd3", ["p_plain", 0], "p_plain", node="ks_plain", sampler="heun", cfg=1.0, batch=2, steps=4)
    sample(g, "sd3", ["unet", 0], "p_unprobed", node="ks_unprobed", sampler="heun", cfg=3.0, batch=2, steps=4)
    g["graph"] = {
        "class_type": "NormGuardVelocityNormGraph",
        "inputs": {
            "samples": ["ks_same", 0],
            "probe_log": ["p_same", 1],
            "probe_log_2": ["p_lora", 1],
            "samples_2": ["ks_lora", 0],
            "probe_log_3": ["p_plain", 1],
            "samples_3": ["ks_plain", 0],
        },
    }
    events = EventStream(server, comfy.client_id)
    seen: list[dict] = []
    reader = threading.Thread(target=events.collect, args=(seen,), daemon=True)
    reader.start()
    out = comfy.run(g)
    events.close()
    reader.join(timeout=5)
    same, lora, plain = out["graph"]["normguard_probe"]
    probe_events = [m["data"] for m in seen if m.get("type") == "normguard.probe"]
    assert sorted(e["label"] for e in probe_events) == ["base", "lora", "plain"]
    assert all(e["step"] == [0, 1, 2, 3] for e in probe_events), "one event per sampling run, with every step"
    for log in (same, lora, plain):
        assert log["step"] == [0, 1, 2, 3], "exactly one record per sampler step"
        assert log["evals"][1:] == [2, 2, 2], "heun evaluates twice per step"
        assert all(len(v) == 2 for v in log["norm_samples"]), "one norm per sample of the batch"
    assert same["ratio"] == [1.0, 1.0, 1.0, 1.0], "the reference identical to the model gives ratio 1"
    assert all(abs(r - 1) > 1e-7 for r in lora["ratio"]), f"the trained LoRA moves the ratio: {lora['ratio']}"
    assert all(u is not None for u in same["norm_uncond"]) and all(u is None for u in plain["norm_uncond"])
    assert plain["ratio"] == [None] * 4 and plain["norm_ref"] == [None] * 4
    # the probe observes without changing the samples
    assert torch.equal(latent(output_dir, out, "ks_same_save"), latent(output_dir, out, "ks_unprobed_save"))
    image = out["graph"]["images"][0]
    assert image["type"] == "temp" and image["filename"].endswith(".png")

    # queued again with another seed: the cached probe is reused and its log starts afresh
    g["ks_same"]["inputs"]["seed"] = 8
    again = comfy.run(g)["graph"]["normguard_probe"][0]
    assert again["step"] == [0, 1, 2, 3] and again["norm"] != same["norm"]


def test_probe_events_name_their_node_live_and_per_run(comfy, server):
    """A live point per step, then the run; both name the probe node, also when an identical probe
    under another node id could have been served from the output cache."""
    for probe_id in ("probe_a", "probe_b"):
        g = loaders("sd3")
        g[probe_id] = {
            "class_type": "NormGuardVelocityNormProbe",
            "inputs": {"model": ["unet", 0], "reference": ["unet", 0], "rescale": False, "label": "ids"},
        }
        sample(
            g,
            "sd3",
            [probe_id, 0],
            f"ids_{probe_id}",
            sampler="heun",
            steps=3,
            seed=len(probe_id) + ord(probe_id[-1]),
        )
        g["graph"] = {
            "class_type": "NormGuardVelocityNormGraph",
            "inputs": {"samples": ["ks", 0], "probe_log": [probe_id, 1]},
        }
        events = EventStream(server, comfy.client_id)
        seen: list[dict] = []
        reader = threading.Thread(target=events.collect, args=(seen,), daemon=True)
        reader.start()
        out = comfy.run(g)
        events.close()
        reader.join(timeout=5)
        steps = [m["data"] for m in seen if m.get("type") == "normguard.probe.step"]
        runs = [m["data"] for m in seen if m.get("type") == "normguard.probe"]
        assert [p["step"] for p in steps] == [0, 1, 2] and all(p["steps"] == 3 for p in steps)
        assert [p["node"] for p in steps + runs] == [probe_id] * 4
        assert [p["norm"] for p in steps] == runs[0]["norm"], "live points equal the finished run"
        assert out["graph"]["normguard_probe"][0]["node"] == probe_id


def test_probe_with_a_reference_of_its_own_weights(comfy, output_dir):
    """A reference loaded separately (here the same file stored in fp8) is loaded beside the model."""
    g = loaders("sd3")
    g["unet8"] = {
        "class_type": "UNETLoader",
        "inputs": {"unet_name": "tiny_sd3.safetensors", "weight_dtype": "fp8_e4m3fn"},
    }
    g["p"] = {
        "class_type": "NormGuardVelocityNormProbe",
        "inputs": {"model": ["unet", 0], "reference": ["unet8", 0], "rescale": False, "label": "fp32 vs fp8"},
    }
    sample(g, "sd3", ["p", 0], "p_sep", sampler="heun", cfg=3.0, batch=2, steps=3)
    sample(g, "sd3", ["unet", 0], "p_sep_plain", node="ks_plain", sampler="heun", cfg=3.0, batch=2, steps=3)
    g["graph"] = {
        "class_type": "NormGuardVelocityNormGraph",
        "inputs": {"samples": ["ks", 0], "probe_log": ["p", 1]},
    }
    out = comfy.run(g)
    log = out["graph"]["normguard_probe"][0]
    assert log["step"] == [0, 1, 2]
    assert all(r != 1.0 and abs(r - 1) < 0.2 for r in log["ratio"]), log["ratio"]  # fp8 rounding only
    assert torch.equal(latent(output_dir, out, "ks_save"), latent(output_dir, out, "ks_plain_save"))


def test_probe_rescale_is_the_identity_for_a_reference_equal_to_the_model(comfy, trained_sd3, output_dir):
    name, _ = trained_sd3
    g = loaders("sd3")
    g["lora"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["unet", 0], "lora_name": name, "strength_model": 1.0},
    }
    g["r_same"] = {
        "class_type": "NormGuardVelocityNormProbe",
        "inputs": {"model": ["unet", 0], "reference": ["unet", 0], "rescale": True, "label": ""},
    }
    g["r_lora"] = {
        "class_type": "NormGuardVelocityNormProbe",
        "inputs": {"model": ["lora", 0], "reference": ["unet", 0], "rescale": True, "label": ""},
    }
    sample(g, "sd3", ["r_same", 0], "r_same", node="ks_rsame", steps=3)
    sample(g, "sd3", ["unet", 0], "r_base", node="ks_base", steps=3)
    sample(g, "sd3", ["r_lora", 0], "r_lora", node="ks_rlora", steps=3)
    sample(g, "sd3", ["lora", 0], "r_plain_lora", node="ks_lora", steps=3)
    out = comfy.run(g)
    base, rsame = latent(output_dir, out, "ks_base_save"), latent(output_dir, out, "ks_rsame_save")
    plain, rescaled = latent(output_dir, out, "ks_lora_save"), latent(output_dir, out, "ks_rlora_save")
    assert torch.allclose(base, rsame, atol=1e-6)
    assert not torch.equal(plain, rescaled), "rescaling ||v|| to ||v_ref|| changes the LoRA's samples"


def test_train_flux_in_diffusers_format_and_stock_loader_agree(comfy, loras, output_dir):
    g = train("flux", "t_flux", iterations=1, method="grpo", cfg=2.0, options={"lora_format": "diffusers"})
    sample(g, "flux", ["train", 0], "t_flux_trained")
    outputs = comfy.run(g)
    keys, meta = lora_keys(loras / "t_flux.safetensors")
    assert meta["modelspec.architecture"] == "flux-1-dev/lora" and meta["normguard.method"] == "grpo"
    assert meta["normguard.lora_format"] == "diffusers" and all(k.startswith("transformer.") for k in keys)
    assert "transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight" in keys  # FLUX's linear1, split
    g = loaders("flux")
    g["stock"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["unet", 0], "lora_name": "t_flux.safetensors", "strength_model": 1.0},
    }
    sample(g, "flux", ["stock", 0], "t_flux_stock")
    out = comfy.run(g)
    assert torch.equal(latent(output_dir, out, "ks_save"), latent(output_dir, outputs, "ks_save"))


def test_cancel_keeps_the_lora_and_queueing_again_resumes(comfy, server, loras, output_dir):
    g = train("sd3", "t_cancel", iterations=12)
    events = EventStream(server, comfy.client_id)
    seen: list[dict] = []
    reader = threading.Thread(target=events.collect, args=(seen,), daemon=True)
    reader.start()
    prompt_id = comfy.queue(g)
    metrics = output_dir / "normguard" / "t_cancel" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert time.time() < deadline, "training did not finish an iteration"
        time.sleep(0.2)
    comfy.interrupt()
    status = comfy.wait(prompt_id)["status"]
    assert status["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in status["messages"])
    assert (loras / "t_cancel.safetensors").is_file(), "cancel keeps the last good LoRA in the loras folder"
    done = [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()]
    assert done and done[-1] < 12

    outputs = comfy.run(g)  # the same graph again: resumes the run
    assert [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()] == list(range(1, 13))
    assert (loras / "t_cancel_2.safetensors").is_file(), "the finished LoRA never overwrites the kept one"
    assert "finished: 12 iterations" in outputs["train"]["text"][0]
    events.close()
    reader.join(timeout=5)
    train_events = [m["data"] for m in seen if m.get("type") == "normguard.train"]
    phases = [e["phase"] for e in train_events]
    assert "start" in phases and "iteration" in phases and "end" in phases
    iteration = next(e for e in train_events if e["phase"] == "iteration")
    assert iteration["node"] == "train" and isinstance(iteration["metrics"]["reward_mean"], float)
    assert any(e["phase"] == "end" and e["status"] == "interrupted" for e in train_events)
    progress = [m["data"] for m in seen if m.get("type") == "progress" and m["data"].get("node") == "train"]
    assert progress and progress[-1]["value"] == progress[-1]["max"], "the progress bar reaches its end"
    assert any(m.get("type") == "binary" for m in seen), "rollout previews reach the client"


def test_nft_at_few_steps_warns_that_step_distilled_models_are_unsupported(comfy, server):
    g = train("sd3", "t_distilled_warning", iterations=1, method="nft", sample_steps=2)
    warnings = train_start_warnings(comfy, server, g)
    assert len(warnings) == 1 and "NFT on a step-distilled model" in warnings[0]
    g = train("sd3", "t_no_warning", iterations=1, method="awm", sample_steps=2)
    assert train_start_warnings(comfy, server, g) == []


def test_non_flow_models_and_foreign_loras_are_refused(comfy, trained_sd3):
    g = train("sd3", "t_refused", iterations=1)
    g["eps"] = {
        "class_type": "ModelSamplingDiscrete",
        "inputs": {"model": ["unet", 0], "sampling": "eps", "zsnr": False},
    }
    g["train"]["inputs"]["model"] = ["eps", 0]
    with pytest.raises(GraphError, match="not a flow-matching model"):
        comfy.run(g)
    g["eps"]["inputs"]["sampling"] = "img_to_img_flow"
    with pytest.raises(GraphError, match="IMG_TO_IMG_FLOW"):
        comfy.run(g)
    g = loaders("flux")
    g["ng"] = {
        "class_type": "NormGuardLoraLoader",
        "inputs": {"model": ["unet", 0], "lora_name": trained_sd3[0], "strength": 1.0},
    }
    sample(g, "flux", ["ng", 0], "t_foreign")
    with pytest.raises(GraphError, match="no key of t_sd3.safetensors matches this Flux model"):
        comfy.run(g)


def test_score_images_with_combined_rewards(comfy, output_dir):
    g = loaders("sd3")
    sample(g, "sd3", ["unet", 0], "t_score", batch=2)
    g["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}}
    g["r1"] = {"class_type": "NormGuardRewardJpegCompressibility", "inputs": {"weight": 2.0}}
    g["r2"] = {"class_type": "NormGuardRewardJpegIncompressibility", "inputs": {"weight": 1.0}}
    g["both"] = {
        "class_type": "NormGuardRewardCombine",
        "inputs": {"reward_1": ["r1", 0], "reward_2": ["r2", 0]},
    }
    g["s_both"] = {
        "class_type": "NormGuardScoreImages",
        "inputs": {"images": ["decode", 0], "reward": ["both", 0], "prompts": "a red cube"},
    }
    g["s_one"] = {
        "class_type": "NormGuardScoreImages",
        "inputs": {"images": ["decode", 0], "reward": ["r2", 0], "prompts": ""},
    }
    out = comfy.run(g)
    both = out["s_both"]["normguard_scores"][0]
    one = out["s_one"]["normguard_scores"][0]
    assert len(one["scores"]) == 2 and all(s > 0 for s in one["scores"])  # JPEG kilobytes
    assert both["scores"] == pytest.approx([-s for s in one["scores"]])  # 2 * (-kB) + 1 * kB
    assert "image 1:" in out["s_both"]["text"][0]


def test_training_on_fp8_weights(comfy, loras):
    g = train("sd3", "t_fp8", iterations=1)
    g["unet"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    outputs = comfy.run(g)
    assert "finished: 1 iterations" in outputs["train"]["text"][0]
    keys, _ = lora_keys(loras / "t_fp8.safetensors")
    with safe_open(str(loras / "t_fp8.safetensors"), framework="pt") as f:
        assert all(
            f.get_tensor(k).dtype == torch.float32 and torch.isfinite(f.get_tensor(k)).all() for k in keys
        )


def test_continue_from_a_lora_of_the_loras_folder(comfy, trained_sd3, loras, output_dir):
    g = train("sd3", "t_init", iterations=1, options={"init_lora": trained_sd3[0], "eval_every": 1})
    outputs = comfy.run(g)
    assert "finished: 1 iterations" in outputs["train"]["text"][0]
    assert lora_keys(loras / "t_init.safetensors")[1]["normguard.init_lora"] == trained_sd3[0]
    # it starts from the LoRA's weights: its first evaluation equals the LoRA's own (same seeds)
    first = Image.open(output_dir / "normguard" / "t_init" / "evals" / "iter-000000.png")
    own = Image.open(output_dir / "normguard" / "t_sd3" / "evals" / "iter-000002.png")
    assert np.array_equal(np.asarray(first), np.asarray(own))
    g = train("sd3", "t_init_rank", iterations=1, lora_rank=8, options={"init_lora": trained_sd3[0]})
    with pytest.raises(GraphError, match="set lora_rank to the file's rank"):
        comfy.run(g)
    g = train("sd3", "t_init_bad", iterations=1, options={"extra": "init_lora: /etc/passwd"})
    with pytest.raises(GraphError, match="files come only from ComfyUI's folders"):
        comfy.run(g)


def test_options_are_refused_as_their_widgets_would_refuse_them(comfy):
    info = comfy.get("/object_info")
    widget = info["NormGuardTrainOptions"]["input"]["required"]["groups_per_iteration"][1]
    assert (widget["min"], widget["max"]) == (1, 1024)
    cfg = info["NormGuardTrainLoRA"]["input"]["required"]["cfg"][1]  # the saved workflows' input name
    assert (cfg["default"], cfg["min"], cfg["max"]) == (1.0, 1.0, 30.0)
    for extra, message in [
        ("groups_per_iteration: 1000000", "groups_per_iteration must be an integer from 1 to 1024"),
        ("grad_clip: .nan", "grad_clip must be a finite number > 0"),
        ("eval_prompts: a cat", "eval_prompts must be a list of strings"),
    ]:
        with pytest.raises(GraphError, match=message):
            comfy.run(train("sd3", "t_refused", iterations=1, options={"extra": extra}))


def test_weight_rewards_pick_entries_of_the_rewards_folder(comfy, base_dir):
    (base_dir / "models" / "rewards" / "my_clip").mkdir(parents=True, exist_ok=True)
    info = comfy.get("/object_info/NormGuardRewardPickscore")["NormGuardRewardPickscore"]
    assert "my_clip" in info["input"]["required"]["path"][1]["options"]
    g = loaders("sd3")
    sample(g, "sd3", ["unet", 0], "t_rwd")
    g["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}}
    g["r"] = {"class_type": "NormGuardRewardPickscore", "inputs": {"weight": 1.0, "path": "../../etc"}}
    g["s"] = {
        "class_type": "NormGuardScoreImages",
        "inputs": {"images": ["decode", 0], "reward": ["r", 0], "prompts": ""},
    }
    with pytest.raises(GraphError, match="value_not_in_list"):
        comfy.run(g)
    g["r"]["inputs"] = {"weight": 1.0, "path": "my_clip", "options": '{"processor": "/etc/passwd"}'}
    with pytest.raises(GraphError, match="give files by their name in models/rewards"):
        comfy.run(g)


def test_prompts_load_from_a_text_file_of_the_input_folder(comfy, base_dir):
    (base_dir / "input").mkdir(exist_ok=True)
    (base_dir / "input" / "ng_prompts.txt").write_text("# training prompts\na red cube\n\na blue ball\n")
    g = {
        "p": {"class_type": "NormGuardLoadPrompts", "inputs": {"file": "ng_prompts.txt"}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["p", 0]}},
    }
    out = comfy.run(g)
    assert out["show"]["text"][0] == "a red cube\na blue ball"
    g["p"]["inputs"]["file"] = "../models/loras/x.txt"
    with pytest.raises(GraphError, match="value_not_in_list"):
        comfy.run(g)
