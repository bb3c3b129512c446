"""The web extension in ComfyUI's real frontend (headless Chromium driven by playwright-core).

One browser session opens a workflow built from the frontend's own node definitions (tiny SD3 kit):
a NormGuard trainer whose MODEL and the base model each go through a VelocityNormProbe into a
6-step Heun KSampler, both probe logs into one VelocityNormGraph. It queues it, samples the chart
canvases while it runs, then saves and reopens the workflow -- in the classic LiteGraph canvas and
in the Vue nodes mode. Every example workflow of workflows/ is opened too (no missing node types).

Needs (else skipped, with the reason): COMFYUI_PATH (see conftest.py), node, a Chromium
(NORMGUARD_CHROMIUM, default /usr/bin/chromium) and playwright-core (PLAYWRIGHT_CORE_PATH: the
package folder, default /work/pwtools/node_modules/playwright-core). Screenshots go to a pytest
temp folder, or to docs/images/ with NORMGUARD_SCREENSHOTS=docs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DRIVER = HERE / "frontend_driver.cjs"
CHROMIUM = os.environ.get("NORMGUARD_CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT = os.environ.get("PLAYWRIGHT_CORE_PATH", "/work/pwtools/node_modules/playwright-core")
NODE = shutil.which("node")
STEPS = 6  # sampler steps of the probed runs
ITERATIONS = 2  # trainer iterations (an evaluation after each, and one of the base model)


def _missing_tools() -> str | None:
    if NODE is None:
        return "node is not on PATH"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (set NORMGUARD_CHROMIUM)"
    if not (Path(PLAYWRIGHT) / "package.json").is_file():
        return f"no playwright-core at {PLAYWRIGHT} (set PLAYWRIGHT_CORE_PATH to the package folder)"
    return None


pytestmark = pytest.mark.skipif(_missing_tools() is not None, reason=str(_missing_tools()))


def node(key: str, type_: str, pos: tuple[int, int], size=None, **widgets) -> dict:
    spec = {"key": key, "type": type_, "pos": list(pos), "widgets": widgets}
    if size:
        spec["size"] = list(size)
    return spec


def e2e_spec(lora_name: str, seed: int) -> dict:
    """Train (tiny) -> base and tuned model, each probed, 6-step Heun at cfg 3 -> one norm graph."""
    nodes = [
        node("unet", "UNETLoader", (0, 0), unet_name="tiny_sd3.safetensors"),
        node("clip", "CLIPLoader", (0, 130), clip_name="tiny_clip_l.safetensors", type="sd3"),
        node("vae", "VAELoader", (0, 290), vae_name="tiny_vae16.safetensors"),
        node("reward", "NormGuardRewardJpegIncompressibility", (0, 390), weight=1.0),
        node(
            "options",
            "NormGuardTrainOptions",
            (0, 520),
            groups_per_iteration=1,
            train_timesteps=1,
            micro_batch_size=2,
            gradient_checkpointing=False,
            eval_every=1,
            eval_samples=1,
            eval_few_steps=0,
        ),  # fmt: skip
        node(
            "train",
            "NormGuardTrainLoRA",
            (330, 0),
            (420, 900),
            prompts="a red cube\na blue ball",
            iterations=ITERATIONS,
            group_size=2,
            sample_steps=2,
            width=64,
            height=64,
            lora_rank=4,
            learning_rate=0.02,
            seed=seed,
            lora_name=lora_name,
        ),  # fmt: skip
        node("pos", "CLIPTextEncode", (780, 0), (300, 110), text="a red cube"),
        node("neg", "CLIPTextEncode", (780, 150), (300, 110), text=""),
        node("latent", "EmptySD3LatentImage", (780, 300), width=64, height=64, batch_size=1),
        node("p_base", "VelocityNormProbe", (780, 450), (380, 320), label="base"),
        node("p_tuned", "VelocityNormProbe", (780, 800), (380, 320), label="tuned"),
    ]
    sampler = dict(seed=seed, steps=STEPS, cfg=3.0, sampler_name="heun", scheduler="simple")
    nodes += [
        node("ks_base", "KSampler", (1200, 0), **sampler),
        node("ks_tuned", "KSampler", (1200, 330), **sampler),
        node("graph", "VelocityNormGraph", (1530, 0), (460, 560)),
    ]
    links = [
        ("clip", 0, "pos", "clip"), ("clip", 0, "neg", "clip"),
        ("unet", 0, "train", "model"), ("clip", 0, "train", "clip"), ("vae", 0, "train", "vae"),
        ("reward", 0, "train", "reward"), ("options", 0, "train", "options"),
        ("unet", 0, "p_base", "model"), ("unet", 0, "p_base", "reference"),
        ("train", 0, "p_tuned", "model"), ("unet", 0, "p_tuned", "reference"),
    ]  # fmt: skip
    for probe, ks in (("p_base", "ks_base"), ("p_tuned", "ks_tuned")):
        links += [
            (probe, 0, ks, "model"), ("pos", 0, ks, "positive"), ("neg", 0, ks, "negative"),
            ("latent", 0, ks, "latent_image"),
        ]  # fmt: skip
    links += [
        ("ks_base", 0, "graph", "samples"), ("p_base", 1, "graph", "probe_log"),
        ("ks_tuned", 0, "graph", "samples_2"), ("p_tuned", 1, "graph", "probe_log_2"),
    ]  # fmt: skip
    return {"nodes": nodes, "links": [list(link) for link in links]}


def run_driver(job: dict, tmp_path: Path, timeout: float) -> dict:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    proc = subprocess.run(
        [NODE, str(DRIVER), str(job_file)], capture_output=True, text=True, timeout=timeout, cwd=HERE
    )
    assert proc.returncode == 0, f"driver failed:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout)
    assert "driverError" not in result, result["driverError"]
    return result


def points(chart: dict) -> dict[tuple[str, str], int]:
    """{(panel, series label): points drawn} of one chart canvas."""
    return {(d["panel"], d["label"]): d["points"] for d in chart["drawn"] or []}


def our_errors(result: dict) -> list:
    """Console errors, uncaught exceptions and failed requests that come from this pack."""
    mine = [
        c
        for c in result["console"]
        if c["type"] == "error" and ("normguard" in c["url"].lower() or "normguard" in c["text"].lower())
    ]
    mine += [e for e in result["pageErrors"] if "normguard" in e.lower()]
    mine += [r for r in result["failedRequests"] if "normguard" in r["url"].lower()]
    return mine


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory) -> Path:
    if os.environ.get("NORMGUARD_SCREENSHOTS") == "docs":
        target = REPO / "docs" / "images"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path_factory.mktemp("screenshots")


def test_charts_draw_live_and_survive_reopening_in_both_node_modes(server, tmp_path, shots_dir):
    seed = random.randrange(10**6)  # a fresh run: nothing may come from ComfyUI's output cache
    workflows = []
    for mode in ("classic", "vue"):
        shots = [
            {"node": n, "what": "node", "zoom": 1, "file": str(shots_dir / f"{name}-{mode}.png")}
            for n, name in (("graph", "norm-graph"), ("train", "trainer"), ("p_tuned", "probe"))
        ]
        workflows.append(
            {
                "name": f"e2e-{mode}",
                "mode": mode,
                "spec": e2e_spec(f"e2e_{mode}_{seed}", seed + (mode == "vue")),
                "queue": True,
                "timeoutMs": 400_000,
                "shots": shots,
                "shot": str(shots_dir / f"workflow-{mode}.png"),
            }
        )
    job = {
        "url": server + "/",
        "chromium": CHROMIUM,
        "playwright": PLAYWRIGHT,
        "scale": 2,
        "workflows": workflows,
    }
    result = run_driver(job, tmp_path, timeout=900)

    assert result["extensionLoaded"], "the frontend did not load web/normguard.js"
    assert not our_errors(result), our_errors(result)
    for wf in result["workflows"]:
        mode, keys = wf["mode"], wf["keys"]
        assert wf["vueNodes"] == (mode == "vue")
        assert wf["missing"] == []
        assert wf["done"] == {"kind": "success", "detail": None}, wf["done"]
        charts = wf["chartsAfter"]
        graph, base, tuned, train = (charts[keys[k]] for k in ("graph", "p_base", "p_tuned", "train"))
        assert all(
            c["visible"] and c["width"] > 100 and c["height"] > 100 for c in (graph, base, tuned, train)
        )
        # one point per sampler step for each run, in both panels; the reference dashed beside it
        assert points(graph) == {
            ("‖v‖ per step", "base"): STEPS,
            ("‖v‖ per step", "base ref"): STEPS,
            ("‖v‖ per step", "tuned"): STEPS,
            ("‖v‖ per step", "tuned ref"): STEPS,
            ("‖v‖ / ‖v_ref‖", "base"): STEPS,
            ("‖v‖ / ‖v_ref‖", "tuned"): STEPS,
        }, (mode, graph["drawn"])
        assert points(base)[("‖v‖ per step", "base")] == STEPS
        assert points(tuned)[("‖v‖ / ‖v_ref‖", "tuned")] == STEPS
        # trainer: one point per iteration, rho_mean at every evaluation (and of the base model)
        train_points = points(train)
        for metric in ("reward_mean", "loss", "loss_base", "penalty", "train_rho"):
            assert train_points[next(k for k in train_points if k[1] == metric)] == ITERATIONS, train_points
        assert train_points[("rho", "rho_mean")] == ITERATIONS + 1
        # live: the trainer's curves grew while the prompt was still running
        seen_train = [
            points(s["charts"][keys["train"]]) for s in wf["timeline"] if keys["train"] in s["charts"]
        ]
        partial = {p.get(("reward", "reward_mean"), 0) for p in seen_train}
        assert 1 in partial, f"{mode}: no live trainer update seen: {sorted(partial)}"
        # live: the probe charts received per-step points before their runs finished
        seen_probe = [
            points(s["charts"][keys["p_tuned"]]) for s in wf["timeline"] if keys["p_tuned"] in s["charts"]
        ]
        assert any(0 < p.get(("‖v‖ per step", "tuned"), 0) <= STEPS for p in seen_probe)
        # saved and reopened: the same points again, drawn from the node properties
        reopened = wf["chartsReopened"]
        for k in ("graph", "p_base", "p_tuned", "train"):
            assert points(reopened[keys[k]]) == points(charts[keys[k]]), (mode, k)
    for shot in shots_dir.glob("*.png"):
        assert shot.stat().st_size > 2000, f"{shot} looks empty"
