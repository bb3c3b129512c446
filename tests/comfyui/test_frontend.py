"""The web extension in ComfyUI's real frontend (headless Chromium driven by playwright-core).

One browser session opens a workflow built from the frontend's own node definitions (tiny SD3 kit):
a NormGuard trainer whose MODEL and the base model each go through a NormGuardVelocityNormProbe into a
6-step Heun KSampler, both probe logs into one NormGuardVelocityNormGraph. It queues it, samples the chart
canvases while it runs, then saves and reopens the workflow -- in the classic LiteGraph canvas, in
the Vue nodes mode, and once more with everything charted converted into a subgraph (the server then
names those nodes by execution ids such as "12:5"). Every example workflow of example_workflows/ is opened too
(no missing node types).

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
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DRIVER = HERE / "frontend_driver.cjs"
CHROMIUM = os.environ.get("NORMGUARD_CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT = os.environ.get("PLAYWRIGHT_CORE_PATH", "/work/pwtools/node_modules/playwright-core")
NODE = shutil.which("node")
STEPS = 6  # sampler steps of the probed runs
MODES = ("classic", "vue")  # LiteGraph canvas nodes, Vue nodes (setting Comfy.VueNodes.Enabled)
# the e2e runs: each mode, and the classic canvas with these nodes inside a subgraph (shown open)
SUBGRAPH = ("train", "p_base", "p_tuned", "ks_base", "ks_tuned", "graph")
RUNS = (*MODES, "subgraph")
# one more (Vue nodes, the root graph shown): the probes in a subgraph feed the graph node outside it
BOUNDARY = ("p_base", "p_tuned", "ks_base", "ks_tuned")
# and one (classic, the innermost shown) with a subgraph inside the subgraph: all but the trainer
NESTED = ("p_base", "p_tuned", "ks_base", "ks_tuned", "graph")
EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))
DOCS = os.environ.get("NORMGUARD_SCREENSHOTS") == "docs"
# screenshots (README, template thumbnails): (node, the whole node or its chart only) per mode
SHOTS = {"classic": [("graph", "node"), ("graph", "chart"), ("train", "chart")], "vue": [("p_tuned", "node")]}
NAMES = {"graph": "norm-graph", "train": "trainer", "p_tuned": "probe"}
ITERATIONS = 2  # trainer iterations (an evaluation after each, and one of the base model)
# the whole browser session's limit: minutes on an idle machine, far more when the tests run niced
# beside other jobs (NORMGUARD_FRONTEND_TIMEOUT_S raises it)
TIMEOUT_S = float(os.environ.get("NORMGUARD_FRONTEND_TIMEOUT_S", 3600))


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
        node("p_base", "NormGuardVelocityNormProbe", (780, 450), (380, 380), label="base"),
        node("p_tuned", "NormGuardVelocityNormProbe", (780, 860), (380, 380), label="tuned"),
    ]
    sampler = dict(seed=seed, steps=STEPS, cfg=3.0, sampler_name="heun", scheduler="simple")
    nodes += [
        node("ks_base", "KSampler", (1200, 0), **sampler),
        node("ks_tuned", "KSampler", (1200, 330), **sampler),
        node("graph", "NormGuardVelocityNormGraph", (1530, 0), (460, 560)),
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
    if DOCS:
        target = REPO / "docs" / "images"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser(server, shots_dir, tmp_path_factory) -> dict:
    """One browser session: the e2e workflow queued in each node mode, then every example opened."""
    seed = random.randrange(10**6)  # a fresh run: nothing may come from ComfyUI's output cache
    workflows = []
    for i, mode in enumerate(MODES):
        shots = [
            {"node": key, "what": what, "zoom": 1, "file": str(shots_dir / f"{NAMES[key]}-{what}-{mode}.png")}
            for key, what in SHOTS[mode]
        ]
        spec = e2e_spec(f"e2e_{mode}_{seed}", seed + i)
        workflows.append(
            {
                "name": mode,
                "mode": mode,
                "spec": spec,
                "queue": True,
                "timeoutMs": TIMEOUT_S * 1000,
                "shots": shots,
            }
        )
    spec = e2e_spec(f"e2e_subgraph_{seed}", seed + len(MODES))
    subgraph = {"name": "subgraph", "mode": "classic", "spec": spec, "subgraph": list(SUBGRAPH)}
    workflows.append({**subgraph, "queue": True, "timeoutMs": TIMEOUT_S * 1000})
    spec = e2e_spec(f"e2e_boundary_{seed}", seed + len(MODES) + 1)
    boundary = {
        "name": "boundary",
        "mode": "vue",
        "spec": spec,
        "subgraph": list(BOUNDARY),
        "stayOutside": True,
    }
    workflows.append({**boundary, "queue": True, "timeoutMs": TIMEOUT_S * 1000})
    spec = e2e_spec(f"e2e_nested_{seed}", seed + len(MODES) + 2)
    nested = {
        "name": "nested",
        "mode": "classic",
        "spec": spec,
        "subgraph": list(SUBGRAPH),
        "nested": list(NESTED),
    }
    workflows.append({**nested, "queue": True, "timeoutMs": TIMEOUT_S * 1000})
    for path in EXAMPLES:
        graph = json.loads(path.read_text(encoding="utf-8"))
        workflows.append({"name": path.stem, "mode": "vue", "graph": graph, "prompt": True})
    job = {
        "url": server + "/",
        "chromium": CHROMIUM,
        "playwright": PLAYWRIGHT,
        "scale": 2,
        "workflows": workflows,
        "templates_shot": str(shots_dir / "templates.jpg"),
        "loadTimeoutMs": min(TIMEOUT_S, 900) * 1000,
    }
    t0 = time.time()
    result = run_driver(job, tmp_path_factory.mktemp("driver"), timeout=TIMEOUT_S)
    result["seconds"] = time.time() - t0
    if DOCS:
        shrink_images(shots_dir, REPO / "example_workflows")
    return result


# the charts on each example's template thumbnail (EXAMPLES order): what the workflow shows
THUMBNAILS = (("trainer",), ("norm-graph",), ("trainer", "norm-graph"), ("trainer", "norm-graph"))


def shrink_images(shots: Path, workflows: Path) -> None:
    """Screenshots for the repository as 256-colour PNGs, and the template browser's thumbnails
    (<workflow name>.jpg) from the classic-mode charts."""
    from PIL import Image

    for png in shots.glob("*.png"):
        Image.open(png).convert("RGB").quantize(256).save(png, optimize=True)
    for path, charts in zip(EXAMPLES, THUMBNAILS, strict=True):
        thumbnail([shots / f"{n}-chart-classic.png" for n in charts], workflows / f"{path.stem}.jpg")


def thumbnail(charts: list[Path], out: Path) -> None:
    """The chart screenshots side by side, centred on a dark square card (the template browser's shape)."""
    from PIL import Image

    images = [Image.open(c).convert("RGB") for c in charts]
    width, height = sum(c.width for c in images), max(c.height for c in images)
    side = max(width, height)
    card = Image.new("RGB", (side, side), (30, 30, 34))
    x = (side - width) // 2
    for chart in images:
        card.paste(chart, (x, (side - chart.height) // 2))
        x += chart.width
    card.resize((512, 512), Image.LANCZOS).save(out, quality=85, optimize=True)


def run(browser: dict, mode: str) -> dict:
    return next(w for w in browser["workflows"] if w["name"] == mode)


def test_the_extension_loads_without_errors(browser):
    assert browser["extensionLoaded"], "the frontend did not load web/normguard.js"
    assert not our_errors(browser), our_errors(browser)


@pytest.mark.parametrize("mode", RUNS)
def test_charts_draw_one_point_per_step_and_iteration(browser, mode):
    wf = run(browser, mode)
    keys = wf["keys"]
    assert wf["vueNodes"] == (mode == "vue")
    assert wf["missing"] == []
    assert wf["done"] == {"kind": "success", "detail": None}, wf["done"]
    charts = wf["chartsAfter"]
    graph, base, tuned, train = (charts[keys[k]] for k in ("graph", "p_base", "p_tuned", "train"))
    for chart in (graph, base, tuned, train):
        assert chart["visible"] and chart["width"] > 100 and chart["height"] > 100, chart
    # one point per sampler step for each run, in both panels; the reference dashed beside it
    assert points(graph) == {
        ("‖v‖ per step", "base"): STEPS,
        ("‖v‖ per step", "base ref"): STEPS,
        ("‖v‖ per step", "tuned"): STEPS,
        ("‖v‖ per step", "tuned ref"): STEPS,
        ("‖v‖ / ‖v_ref‖", "base"): STEPS,
        ("‖v‖ / ‖v_ref‖", "tuned"): STEPS,
    }, graph["drawn"]
    assert points(base)[("‖v‖ / ‖v_ref‖", "base")] == STEPS
    assert points(tuned)[("‖v‖ / ‖v_ref‖", "tuned")] == STEPS
    # the trainer: one point per iteration; rho_mean per evaluation (the base model's at 0 too)
    expected = {("reward", "reward_mean"), ("loss", "loss"), ("loss", "loss_base"), ("penalty", "penalty")}
    expected.add(("rho", "train_rho"))
    assert {k: v for k, v in points(train).items() if k in expected} == dict.fromkeys(expected, ITERATIONS)
    assert points(train)[("rho", "rho_mean")] == points(train)[("reward", "eval_reward")] == ITERATIONS + 1


@pytest.mark.parametrize("mode", RUNS)
def test_charts_update_live_while_the_prompt_runs(browser, mode):
    wf = run(browser, mode)
    keys = wf["keys"]
    during = [s["charts"] for s in wf["timeline"][:-1]]  # samples taken before the prompt finished
    rewards = {points(c[keys["train"]]).get(("reward", "reward_mean"), 0) for c in during}
    assert 1 in rewards, f"no trainer update between iterations: {sorted(rewards)}"
    # every sampler step reached the probe nodes as an event of their own
    steps = [e for e in wf["events"] if e["type"] == "normguard.probe.step"]
    for probe in ("p_base", "p_tuned"):
        assert [e["step"] for e in steps if e["node"] == wf["executionIds"][probe]] == list(range(STEPS))
    # and the graph node's chart had them all before its own ui output arrived
    assert sorted(wf["graphRunsAtExecuting"]) == [["base", STEPS], ["tuned", STEPS]], wf[
        "graphRunsAtExecuting"
    ]


@pytest.mark.parametrize("mode", RUNS)
def test_charts_survive_saving_and_reopening(browser, mode):
    wf = run(browser, mode)
    for key in ("graph", "p_base", "p_tuned", "train"):
        node_id = wf["keys"][key]
        assert points(wf["chartsReopened"][node_id]) == points(wf["chartsAfter"][node_id]), key


def test_the_subgraph_run_charted_nodes_inside_a_subgraph(browser):
    """The server named the charted nodes by execution ids through the subgraph node, and the charts
    read in the other tests are those of the nodes inside the subgraph, shown open on the canvas."""
    wf = run(browser, "subgraph")
    host = wf["subgraphHost"]
    assert host not in wf["keys"].values()
    for key in SUBGRAPH:
        assert wf["executionIds"][key] == f"{host}:{wf['keys'][key]}"
        assert wf["keys"][key] in wf["insideKeys"]
    assert {e["node"] for e in wf["events"]} == {
        wf["executionIds"][k] for k in ("train", "p_base", "p_tuned")
    }
    types = {
        "graph": "NormGuardVelocityNormGraph",
        "p_base": "NormGuardVelocityNormProbe",
        "train": "NormGuardTrainLoRA",
    }
    for key, type_ in types.items():
        assert wf["chartsAfter"][wf["keys"][key]]["type"] == type_


def test_probes_in_a_subgraph_feed_a_graph_node_outside_it_live(browser):
    """Step events named "<subgraph node>:<probe>" reach the graph node in the root graph, through the
    subgraph's output, before the graph node runs; its chart then shows both runs."""
    wf = run(browser, "boundary")
    assert wf["done"] == {"kind": "success", "detail": None}, wf["done"]
    host = wf["subgraphHost"]
    assert wf["executionIds"]["p_base"] == f"{host}:{wf['keys']['p_base']}"
    assert wf["executionIds"]["graph"] == wf["keys"]["graph"]
    assert sorted(wf["graphRunsAtExecuting"]) == [["base", STEPS], ["tuned", STEPS]], wf[
        "graphRunsAtExecuting"
    ]
    graph = wf["chartsAfter"][wf["keys"]["graph"]]
    assert graph["visible"] and points(graph)[("‖v‖ / ‖v_ref‖", "tuned")] == STEPS, graph


def test_charts_work_in_a_subgraph_inside_a_subgraph(browser):
    """Execution ids three levels deep ("outer:inner:probe"): the probes' live steps reach the graph
    node beside them, every chart of the innermost subgraph draws all steps and survives reopening."""
    wf = run(browser, "nested")
    assert wf["done"] == {"kind": "success", "detail": None}, wf["done"]
    outer, inner, keys = wf["subgraphHost"], wf["nestedHost"], wf["keys"]
    assert wf["executionIds"]["train"] == f"{outer}:{keys['train']}"
    for key in NESTED:
        assert wf["executionIds"][key] == f"{outer}:{inner}:{keys[key]}"
        assert keys[key] in wf["insideKeys"]
    steps = [e for e in wf["events"] if e["type"] == "normguard.probe.step"]
    for probe in ("p_base", "p_tuned"):
        assert [e["step"] for e in steps if e["node"] == wf["executionIds"][probe]] == list(range(STEPS))
    assert sorted(wf["graphRunsAtExecuting"]) == [["base", STEPS], ["tuned", STEPS]], wf[
        "graphRunsAtExecuting"
    ]
    graph = wf["chartsAfter"][keys["graph"]]
    assert graph["visible"] and graph["type"] == "NormGuardVelocityNormGraph"
    assert points(graph)[("‖v‖ / ‖v_ref‖", "base")] == points(graph)[("‖v‖ / ‖v_ref‖", "tuned")] == STEPS
    for key in ("graph", "p_base", "p_tuned"):
        assert points(wf["chartsReopened"][keys[key]]) == points(wf["chartsAfter"][keys[key]]), key


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_open_without_missing_nodes_and_convert_like_the_frontend(browser, path, comfy):
    from .ui_workflow import to_api

    wf = run(browser, path.stem)
    assert wf["missing"] == []
    workflow = json.loads(path.read_text(encoding="utf-8"))
    charted = [
        n
        for n in workflow["nodes"]
        if n["type"] in ("NormGuardVelocityNormProbe", "NormGuardVelocityNormGraph", "NormGuardTrainLoRA")
    ]
    assert len(wf["chartsBefore"]) == len(charted) and all(c["visible"] for c in wf["chartsBefore"].values())
    frontend = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in wf["apiPrompt"].items()}
    assert to_api(workflow, comfy.get("/object_info")) == frontend  # the frontend's own graphToPrompt
