"""Builds the example workflows of example_workflows/ in ComfyUI's real frontend (UI format, as "Save" writes).

The nodes are created from the node definitions of a running ComfyUI that has this pack, so every
widget value lands where the frontend puts it. Rerun after changing a spec here:

    python tests/comfyui/build_workflows.py http://127.0.0.1:8188   (node, Chromium, playwright-core
    as for test_frontend.py)

test_workflows.py checks the files against /object_info and runs them on the tiny kit.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

from normguard.trainer.config import TrainConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = REPO / "example_workflows"

DEFAULT_WEIGHT = TrainConfig().normguard_weight  # the guarded trainers use the default
CHECKPOINT = "sd3.5_medium.safetensors"
TEXT_ENCODERS = ("clip_g.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors")
# What ComfyUI's missing-model dialog offers to download for a loader: its `models` node property
SD35 = "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/resolve/main/"
# Z-Image-Turbo as ComfyUI's own template (image_z_image_turbo) loads it: Comfy-Org's repackaged files
ZIMAGE = {
    "UNETLoader": ("z_image_turbo_bf16.safetensors", "diffusion_models"),
    "CLIPLoader": ("qwen_3_4b.safetensors", "text_encoders"),
    "VAELoader": ("ae.safetensors", "vae"),
}
ZIMAGE_REPO = "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/"
MODELS = {
    "CheckpointLoaderSimple": [(CHECKPOINT, SD35 + CHECKPOINT, "checkpoints")],
    "TripleCLIPLoader": [(name, f"{SD35}text_encoders/{name}", "text_encoders") for name in TEXT_ENCODERS],
    **{
        loader: [(name, f"{ZIMAGE_REPO}{folder}/{name}", folder)] for loader, (name, folder) in ZIMAGE.items()
    },
}
FRONTEND_ONLY = {"MarkdownNote", "Note", "Reroute", "PrimitiveNode"}
TRAIN_PROMPTS = "\n".join(
    [
        "a photo of a red fox in the snow",
        "a watercolor painting of a lighthouse at dawn",
        "a bowl of ramen on a wooden table, studio lighting",
        "an astronaut riding a horse on the moon",
        "a cozy reading nook with a cat, warm light",
        "a futuristic city street at night in the rain",
    ]
)
NOTE_COLOR = ("#432", "#653")


def node(key: str, type_: str, col: int, size=None, **widgets) -> dict:
    spec = {"key": key, "type": type_, "col": col, "widgets": widgets}
    if size:
        spec["size"] = list(size)
    return spec


def note(key: str, col: int, text: str, size=(420, 330)) -> dict:
    return {**node(key, "MarkdownNote", col, size, text=text.strip()), "color": list(NOTE_COLOR)}


def loaders(col: int = 0) -> list[dict]:
    return [
        node("ckpt", "CheckpointLoaderSimple", col, ckpt_name=CHECKPOINT),
        node(
            "clip",
            "TripleCLIPLoader",
            col,
            clip_name1=TEXT_ENCODERS[0],
            clip_name2=TEXT_ENCODERS[1],
            clip_name3=TEXT_ENCODERS[2],
        ),  # fmt: skip
    ]


def train_options(col: int) -> dict:
    return node("options", "NormGuardTrainOptions", col, eval_every=10, eval_samples=8, checkpoint_every=10)


def trainer(key: str, col: int, lora_name: str, weight: float, iterations: int, **settings) -> dict:
    widgets = dict(
        prompts=TRAIN_PROMPTS, method="nft", normguard_weight=weight, iterations=iterations, group_size=8,
        sample_steps=10, cfg=1.0, width=512, height=512, lora_rank=16, learning_rate=1e-4, seed=0,
        control_after_generate="fixed", lora_name=lora_name,
    )  # fmt: skip
    return node(key, "NormGuardTrainLoRA", col, (460, 0), **(widgets | settings))


def prompt_nodes(col: int) -> list[dict]:
    """The sampling prompt (positive, empty negative) and a 1024 px latent."""
    return [
        node(
            "pos", "CLIPTextEncode", col, (400, 140), text="a photo of a red fox in the snow, highly detailed"
        ),
        node("neg", "CLIPTextEncode", col, (400, 100), text=""),
        node("latent", "EmptySD3LatentImage", col, width=1024, height=1024, batch_size=1),
    ]


def pickscore_reward(col: int) -> dict:
    """The training workflows' reward: PickScore from models/rewards (its CLIP-H processor folder named)."""
    return node(
        "reward", "NormGuardRewardPickscore", col, (360, 0), weight=1.0, path="PickScore_v1",
        options='{"processor": "CLIP-ViT-H-14-laion2B-s32B-b79K"}',
    )  # fmt: skip


def sampling(col: int, prefix: str, models: list[tuple[str, str]], seed: int = 42) -> tuple[list, list]:
    """Prompt, latent and one probe -> KSampler -> VAEDecode -> SaveImage per model, into one graph.
    `models` = [(key of the MODEL source node, curve label)]."""
    nodes = prompt_nodes(col)
    links = [("clip", 0, "pos", "clip"), ("clip", 0, "neg", "clip")]
    for i, (source, label) in enumerate(models):
        p, ks, dec, save = f"probe_{i}", f"ks_{i}", f"decode_{i}", f"save_{i}"
        nodes += [node(p, "NormGuardVelocityNormProbe", col + 1, (380, 0), label=label)]
        nodes += [
            node(
                ks,
                "KSampler",
                col + 2,
                seed=seed,
                control_after_generate="fixed",
                steps=28,
                cfg=4.5,
                sampler_name="euler",
                scheduler="sgm_uniform",
            ),  # fmt: skip
            node(dec, "VAEDecode", col + 3),
            node(save, "SaveImage", col + 3, (300, 340), filename_prefix=f"normguard/{prefix}_{i}"),
        ]
        links += [
            (source, 0, p, "model"), ("ckpt", 0, p, "reference"),
            (p, 0, ks, "model"), ("pos", 0, ks, "positive"), ("neg", 0, ks, "negative"),
            ("latent", 0, ks, "latent_image"), (ks, 0, dec, "samples"), ("ckpt", 2, dec, "vae"),
            (dec, 0, save, "images"),
        ]  # fmt: skip
        suffix = "" if i == 0 else f"_{i + 1}"
        links += [(ks, 0, "graph", f"samples{suffix}"), (p, 1, "graph", f"probe_log{suffix}")]
    nodes.append(node("graph", "NormGuardVelocityNormGraph", col + 4, (520, 0)))
    return nodes, links


TRAIN_NOTE = """
## Train a NormGuard LoRA on SD3.5 Medium

**Models** (ComfyUI `models/` folder): `checkpoints/sd3.5_medium.safetensors`;
`text_encoders/clip_g.safetensors`, `clip_l.safetensors`, `t5xxl_fp16.safetensors`.

**Reward**: PickScore needs `models/rewards/PickScore_v1` (the `yuvalkirstain/PickScore_v1` files) and
the `CLIP-ViT-H-14-laion2B-s32B-b79K` processor folder. Any other *NormGuard Reward* node fits the
`reward` input; combine several with *NormGuard Reward Combine*. JPEG (in)compressibility needs no files.

**Run**: the chart on the trainer shows reward, loss, the NormGuard penalty and rho = ||v|| / ||v_ref||
per iteration (ETA on top). `normguard_weight` 0 turns the penalty off. The LoRA is saved into
`models/loras/<lora_name>.safetensors`; Cancel keeps the last checkpoint, queue again to resume.
Out of memory: lower `micro_batch_size` in the options node, then `group_size` or the image size.
"""

COMPARE_NOTE = """
## Base vs tuned: velocity norm per step

Samples one prompt with the base model and with the LoRA trained by workflow 1 (same seed). Each
*Velocity Norm Probe* records ||v|| per sampler step and, with the base model as `reference`, the ratio
||v|| / ||v_ref||. The probes draw live while sampling; the *Velocity Norm Graph* overlays both runs
(ratio 1 = the base model's norm).

Pick your LoRA in *NormGuard LoRA Loader* (models/loras).
"""

ON_OFF_NOTE = """
## NormGuard on vs off (same seeds)

Trains two LoRAs with identical settings and seed: `normguard_weight` 0.03 (the default: the paper's
linear absolute hinge) and 0. The JPEG
incompressibility reward needs no files and is quick to hack, which makes the norm inflation easy to see.
Then samples base, NormGuard on and NormGuard off with the same seed into one norm graph.

Both trainers run one after the other in one queue; each chart updates live.
"""


def train_workflow() -> dict:
    nodes = [note("note", 0, TRAIN_NOTE), *loaders(0)]
    nodes += [
        pickscore_reward(1),
        train_options(1),
        trainer("train", 2, "sd35m_pickscore_normguard", DEFAULT_WEIGHT, 300),
        *prompt_nodes(3),
        node(
            "ks",
            "KSampler",
            4,
            seed=42,
            control_after_generate="fixed",
            steps=28,
            cfg=4.5,
            sampler_name="euler",
            scheduler="sgm_uniform",
        ),  # fmt: skip
        node("decode", "VAEDecode", 4),
        node("save", "SaveImage", 5, (380, 420), filename_prefix="normguard/tuned"),
    ]
    links = [
        ("ckpt", 0, "train", "model"), ("clip", 0, "train", "clip"), ("ckpt", 2, "train", "vae"),
        ("reward", 0, "train", "reward"), ("options", 0, "train", "options"),
        ("clip", 0, "pos", "clip"), ("clip", 0, "neg", "clip"),
        ("train", 0, "ks", "model"), ("pos", 0, "ks", "positive"), ("neg", 0, "ks", "negative"),
        ("latent", 0, "ks", "latent_image"), ("ks", 0, "decode", "samples"), ("ckpt", 2, "decode", "vae"),
        ("decode", 0, "save", "images"),
    ]  # fmt: skip
    return {"nodes": nodes, "links": [list(link) for link in links]}


def compare_workflow() -> dict:
    nodes = [note("note", 0, COMPARE_NOTE, (420, 260)), *loaders(0)]
    nodes.append(
        node(
            "lora", "NormGuardLoraLoader", 0, lora_name="sd35m_pickscore_normguard.safetensors", strength=1.0
        )
    )
    sample_nodes, links = sampling(1, "compare", [("ckpt", "base"), ("lora", "tuned")])
    links = [("ckpt", 0, "lora", "model"), *links]
    return {"nodes": nodes + sample_nodes, "links": [list(link) for link in links]}


def on_off_workflow() -> dict:
    nodes = [note("note", 0, ON_OFF_NOTE, (420, 260)), *loaders(0)]
    nodes += [
        node("reward", "NormGuardRewardJpegIncompressibility", 0, weight=1.0),
        train_options(0),
        trainer("train_on", 1, "sd35m_jpeg_normguard_on", DEFAULT_WEIGHT, 100),
        trainer("train_off", 2, "sd35m_jpeg_normguard_off", 0.0, 100),
    ]
    links = []
    for t in ("train_on", "train_off"):
        links += [
            ("ckpt", 0, t, "model"), ("clip", 0, t, "clip"), ("ckpt", 2, t, "vae"),
            ("reward", 0, t, "reward"), ("options", 0, t, "options"),
        ]  # fmt: skip
    sample_nodes, sample_links = sampling(
        3, "on_off", [("ckpt", "base"), ("train_on", "NormGuard on"), ("train_off", "NormGuard off")]
    )
    return {"nodes": nodes + sample_nodes, "links": [list(link) for link in links + sample_links]}


ZIMAGE_NOTE = """
## Train a NormGuard LoRA on Z-Image-Turbo

**Models** (ComfyUI `models/` folder), as ComfyUI's own Z-Image-Turbo template loads them:
`diffusion_models/z_image_turbo_bf16.safetensors`, `text_encoders/qwen_3_4b.safetensors` (*Load CLIP*
type `lumina2`), `vae/ae.safetensors` (all from `Comfy-Org/z_image_turbo`).

**Why AWM**: Turbo is step-distilled (8 steps, cfg 1), which is how people sample it. NFT and GRPO assume a
many-step schedule (the trainer warns for them on a model file named *turbo*); AWM trains the
advantage-weighted flow-matching loss on the policy's own 8-step samples, so the LoRA is trained on, and
works with, the model you sample. For NFT or GRPO, train the undistilled Z-Image (`Comfy-Org/z_image`,
ComfyUI's *Z-Image* template) and sample it with 30-50 steps at cfg 4.

**Reward**: PickScore needs `models/rewards/PickScore_v1` and the `CLIP-ViT-H-14-laion2B-s32B-b79K`
processor folder; any other *NormGuard Reward* node fits. The LoRA goes to `models/loras/`.
"""


def zimage_workflow() -> dict:
    """Z-Image-Turbo: the stock UNET/CLIP/VAE loaders, AWM rollouts at the model's own 8 steps and cfg 1."""
    nodes = [note("note", 0, ZIMAGE_NOTE, (420, 400))]
    nodes += [
        node("unet", "UNETLoader", 0, unet_name=ZIMAGE["UNETLoader"][0], weight_dtype="default"),
        node("clip", "CLIPLoader", 0, clip_name=ZIMAGE["CLIPLoader"][0], type="lumina2", device="default"),
        node("vae", "VAELoader", 0, vae_name=ZIMAGE["VAELoader"][0]),
        pickscore_reward(1),
        train_options(1),
        trainer(
            "train", 2, "zimage_turbo_pickscore_normguard", DEFAULT_WEIGHT, 300, method="awm", sample_steps=8
        ),
        *prompt_nodes(3),
        node("probe", "NormGuardVelocityNormProbe", 4, (380, 0), label="tuned"),
        node(
            "ks",
            "KSampler",
            5,
            seed=42,
            control_after_generate="fixed",
            steps=8,
            cfg=1.0,
            sampler_name="res_multistep",
            scheduler="simple",
        ),  # fmt: skip
        node("decode", "VAEDecode", 5),
        node("save", "SaveImage", 6, (380, 420), filename_prefix="normguard/zimage_tuned"),
        node("graph", "NormGuardVelocityNormGraph", 6, (520, 0)),
    ]
    links = [
        ("unet", 0, "train", "model"), ("clip", 0, "train", "clip"), ("vae", 0, "train", "vae"),
        ("reward", 0, "train", "reward"), ("options", 0, "train", "options"),
        ("clip", 0, "pos", "clip"), ("clip", 0, "neg", "clip"),
        ("train", 0, "probe", "model"), ("unet", 0, "probe", "reference"),
        ("probe", 0, "ks", "model"), ("pos", 0, "ks", "positive"), ("neg", 0, "ks", "negative"),
        ("latent", 0, "ks", "latent_image"), ("ks", 0, "decode", "samples"), ("vae", 0, "decode", "vae"),
        ("decode", 0, "save", "images"), ("ks", 0, "graph", "samples"), ("probe", 1, "graph", "probe_log"),
    ]  # fmt: skip
    return {"nodes": nodes, "links": [list(link) for link in links]}


WORKFLOWS = {
    "1 - Train a NormGuard LoRA (SD3.5 Medium)": train_workflow,
    "2 - Base vs tuned velocity norms": compare_workflow,
    "3 - NormGuard on vs off": on_off_workflow,
    "4 - Train a NormGuard LoRA (Z-Image Turbo)": zimage_workflow,
}


def add_install_facts(graph: dict, comfy_version: str) -> dict:
    """The node properties the Manager and the frontend read: `cnr_id`/`ver` (which pack, at which
    version, provides the node: installs a missing pack) and, on loaders, `models` (name, URL, folder)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    nodes = [
        *graph["nodes"],
        *(n for sub in graph.get("definitions", {}).get("subgraphs", []) for n in sub["nodes"]),
    ]
    for n in nodes:
        if n["type"] in FRONTEND_ONLY:
            continue
        props = n.setdefault("properties", {})
        ours = n["type"].startswith("NormGuard")
        props["cnr_id"] = project["name"] if ours else "comfy-core"
        props["ver"] = project["version"] if ours else comfy_version
        if n["type"] in MODELS:
            props["models"] = [{"name": m, "url": u, "directory": d} for m, u, d in MODELS[n["type"]]]
    return graph


def main(url: str) -> None:
    from test_frontend import CHROMIUM, PLAYWRIGHT, run_driver

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = {name: tmp_path / f"{i}.json" for i, name in enumerate(WORKFLOWS)}
        job = {
            "url": url.rstrip("/") + "/",
            "chromium": CHROMIUM,
            "playwright": PLAYWRIGHT,
            "workflows": [
                {"name": name, "mode": "classic", "spec": build(), "save_graph": str(files[name])}
                for name, build in WORKFLOWS.items()
            ],
        }
        result = run_driver(job, tmp_path, timeout=600)
        with urllib.request.urlopen(url.rstrip("/") + "/system_stats") as r:
            comfy_version = json.load(r)["system"]["comfyui_version"]
        OUT.mkdir(exist_ok=True)
        for wf in result["workflows"]:
            graph = add_install_facts(json.loads(files[wf["name"]].read_text()), comfy_version)
            (OUT / f"{wf['name']}.json").write_text(json.dumps(graph, indent=1) + "\n")
            print(f"wrote {wf['name']}.json ({wf['nodeCount']} nodes, missing: {wf['missing']})")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
