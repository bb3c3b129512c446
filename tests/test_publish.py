"""Publishing: the Comfy Registry metadata (the fields its specification and comfy-cli's `comfy node
publish` read), one dependency story for the registry, the Manager and pip, and the registry zip."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

# comfy-cli (comfy_cli/registry/config_parser.py): the accepted version specifiers and classifiers
VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")
OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
ACCELERATORS = {
    "GPU :: NVIDIA CUDA",
    "GPU :: AMD ROCm",
    "GPU :: Intel Arc",
    "NPU :: Huawei Ascend",
    "GPU :: Apple Metal",
}
FRONTEND = "comfyui-frontend-package"
NEVER_INSTALL = {"torch", "torchvision", "torchaudio", FRONTEND}
# what the registry zip must leave out, and what the pack loads at run time
LEFT_OUT = ("tests/", "benchmarks/", "scripts/", "docs/images/")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower()


def valid_version_spec(spec: str) -> bool:
    return all(VERSION_PART.match(part.strip()) for part in spec.split(","))


def test_registry_project_fields(pyproject):
    project = pyproject["project"]
    name = project["name"]
    # the node id rules of the registry specification
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", name), name
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    init = (ROOT / "__init__.py").read_text(encoding="utf-8")
    assert f'__version__ = "{project["version"]}"' in init, (
        "pyproject and __init__.py disagree on the version"
    )
    assert project["description"].strip()
    assert project["license"] == "Apache-2.0"
    for file in project["license-files"]:
        text = (ROOT / file).read_text(encoding="utf-8")
        assert "Apache License" in text and "Version 2.0" in text
    repo = project["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo), repo
    assert project["requires-python"].startswith(">=")


def test_registry_tool_comfy_fields(pyproject):
    comfy = pyproject["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"].strip()
    # the Icon is a URL of an image in this repository (not a data: URI), on its default branch
    icon, repo = comfy["Icon"], pyproject["project"]["urls"]["Repository"]
    owner_repo = repo.removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    assert icon.startswith(prefix), f"Icon {icon} is not a file of {repo}"
    path = ROOT / icon.removeprefix(prefix)
    assert path.is_file() and path.suffix in (".svg", ".png", ".jpg", ".gif"), path
    # requires-comfyui: a version range comfy-cli accepts, with a lower bound
    assert valid_version_spec(comfy["requires-comfyui"]) and ">=" in comfy["requires-comfyui"]
    assert "web" not in comfy, "WEB_DIRECTORY serves web/; a `web` key would serve it a second time"


def test_registry_frontend_bound_and_classifiers(pyproject):
    deps = pyproject["project"]["dependencies"]
    frontend = [d for d in deps if d.startswith(FRONTEND)]
    assert len(frontend) == 1, f"one {FRONTEND} bound in [project].dependencies"
    spec = frontend[0].removeprefix(FRONTEND)
    assert valid_version_spec(spec) and spec.startswith(">="), spec
    classifiers = pyproject["project"]["classifiers"]
    os_values = [
        c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")
    ]
    assert os_values and all(v.startswith(OS_PREFIXES) for v in os_values), os_values
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")]
    assert accelerators and set(accelerators) <= ACCELERATORS, accelerators


def read_requirements(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def test_one_dependency_story(pyproject):
    """The Manager installs requirements.txt, the registry [project].dependencies (less the frontend
    bound, which comfy-cli moves into a compatibility field): the same packages, never torch, lower
    bounds only. torch, peft and diffusers are the library's extras."""
    deps = pyproject["project"]["dependencies"]
    reqs = read_requirements(ROOT / "requirements.txt")
    assert sorted(reqs) == sorted(d for d in deps if not d.startswith(FRONTEND))
    for req in reqs:
        assert requirement_name(req) not in NEVER_INSTALL, req
        assert re.fullmatch(r"[A-Za-z0-9_.-]+>=[\d.]+", req), f"{req}: lower bounds only"
    extras = pyproject["project"]["optional-dependencies"]
    assert "torch" in {requirement_name(r) for r in extras["train"]}
    assert {"diffusers", "transformers"} <= {requirement_name(r) for r in extras["diffusers"]}


def registry_files() -> list[str]:
    """The files `comfy node publish` zips: git-tracked, minus the .comfyignore patterns (the same
    pathspec "gitwildmatch" matching comfy-cli uses)."""
    pathspec = pytest.importorskip("pathspec", reason="pathspec (the [dev] extra) matches .comfyignore")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: the registry zip is built from git-tracked files")
    lines = (ROOT / ".comfyignore").read_text(encoding="utf-8").splitlines()
    spec = pathspec.PathSpec.from_lines(
        "gitwildmatch", [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    )
    files = [f for f in tracked.stdout.splitlines() if f.strip()]
    return [f for f in files if not spec.match_file(f) and (ROOT / f).is_file()]


def test_registry_zip_ships_only_the_pack():
    files = registry_files()
    assert not [f for f in files if f.startswith(LEFT_OUT)]
    shipped = set(files)
    for needed in ("__init__.py", "requirements.txt", "pyproject.toml", "LICENSE", "README.md"):
        assert needed in shipped, needed
    for folder, pattern in (("nodes", "*.py"), ("trainer", "**/*.py"), ("web", "*.js")):
        on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).glob(pattern)}
        assert on_disk and on_disk <= shipped, sorted(on_disk - shipped)
    assets = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "trainer/models/assets").rglob("*") if p.is_file()
    }
    assert assets <= shipped, sorted(assets - shipped)
    workflows = [f for f in files if f.startswith("example_workflows/") and f.endswith(".json")]
    assert workflows, "the example workflows ship with the pack"


def build_registry_zip(dest: Path) -> Path:
    archive = dest / "node.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in registry_files():
            z.write(ROOT / f, f)
    return archive


def test_registry_install_keeps_torch(tmp_path):
    """Install the pack the way ComfyUI-Manager does after a registry download (the zip unpacked into
    custom_nodes/<registry id>, then `pip install -r requirements.txt`) into a venv that already has
    torch: torch stays the same build from the same place, and pip installs nothing that ComfyUI owns."""
    torch = pytest.importorskip("torch")
    pack = tmp_path / "custom_nodes" / "comfyui-normguard"
    with zipfile.ZipFile(build_registry_zip(tmp_path)) as z:
        z.extractall(pack)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # the new venv sees this interpreter's packages (torch included), as ComfyUI's venv sees its own
    host = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "host.pth").write_text("\n".join(sorted(host)) + "\n", encoding="utf-8")
    probe = "import torch; print(torch.__version__, torch.__file__)"
    before = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert before.split()[0] == torch.__version__
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check",
         "-r", str(pack / "requirements.txt")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    after = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert after == before
    own = {p.name.split("-")[0].lower() for p in Path(site).glob("*.dist-info")}
    assert not own & {"torch", "torchvision", "numpy", "pillow", "safetensors"}, own


def test_example_workflows_carry_install_facts(pyproject):
    """Every node names the pack that provides it (`cnr_id`/`ver`, how the Manager installs a missing
    pack) and every model loader the files to download (`models`: name, URL, folder), as ComfyUI's own
    templates do; ComfyUI serves the folder example_workflows/ as templates."""
    import json

    project = pyproject["project"]
    paths = sorted((ROOT / "example_workflows").glob("*.json"))
    assert paths and not (ROOT / "workflows").exists()
    loaders = {
        "CheckpointLoaderSimple": "checkpoints",
        "TripleCLIPLoader": "text_encoders",
        "UNETLoader": "diffusion_models",
        "CLIPLoader": "text_encoders",
        "VAELoader": "vae",
    }
    for path in paths:
        for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
            if node["type"] in ("MarkdownNote", "Note"):
                continue
            props = node["properties"]
            ours = node["type"].startswith("NormGuard")
            assert props["cnr_id"] == (project["name"] if ours else "comfy-core"), (path.name, node["type"])
            assert re.fullmatch(r"\d+\.\d+\.\d+", props["ver"])
            if ours:
                assert props["ver"] == project["version"]
            if node["type"] in loaders:
                models = {m["name"]: m for m in props["models"]}
                files = [v for v in node["widgets_values"] if str(v).endswith(".safetensors")]
                assert files, (path.name, node["type"])
                for value in files:
                    m = models[value]  # every file the loader is set to has a download entry
                    assert m["directory"] == loaders[node["type"]]
                    assert m["url"].startswith("https://huggingface.co/") and m["url"].endswith("/" + value)


def test_example_workflows_train_with_the_default_penalty():
    """A guarded trainer in a shipped workflow uses the config's default penalty (form and weight), so a
    user who opens one trains what the README documents; the unguarded arm sets the weight to 0."""
    import json

    from normguard.trainer.config import TrainConfig

    d = TrainConfig()
    weights, forms = [], []
    for path in sorted((ROOT / "example_workflows").glob("*.json")):
        for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
            named = node.get("widgets_values_named", {})
            if node["type"] == "NormGuardTrainLoRA":
                weights.append(named["normguard_weight"])
            if node["type"] == "NormGuardTrainOptions":
                forms.append(named["normguard_form"])
    assert d.normguard_weight in weights and set(weights) <= {d.normguard_weight, 0}
    assert forms and set(forms) == {d.normguard_form}
