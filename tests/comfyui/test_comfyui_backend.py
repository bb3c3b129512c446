"""The ComfyUI backend in-process (backend_check.py under ComfyUI's python): correct gradients through
inference-mode weights (plain and checkpointed; FLUX's in-place residuals), an exact reference pass,
an exported LoRA that reproduces the trained adapter, and a shared MODEL left untouched."""

from __future__ import annotations

import pytest

from .conftest import COMFYUI_PATH, COMFYUI_PYTHON
from .server import HERE, run_check


@pytest.fixture(scope="module")
def checks(base_dir, package_parent) -> dict:
    args = (COMFYUI_PATH, base_dir / "models", package_parent)
    return run_check(COMFYUI_PYTHON, HERE / "backend_check.py", *args, timeout=600)


@pytest.mark.parametrize("kind", ["sd3", "sd3_checkpointed", "flux"])
def test_gradients_match_finite_differences(checks, kind):
    c = checks[kind]
    assert c["fd"] == pytest.approx(c["analytic"], rel=1e-3), "autograd through aliased inference weights"


def test_checkpointing_gives_the_same_gradients(checks):
    for key, grad in checks["sd3"]["grads"].items():
        flat = [v for row in grad for v in row]
        other = [v for row in checks["sd3_checkpointed"]["grads"][key] for v in row]
        assert other == pytest.approx(flat, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_reference_export_and_shared_model(checks, kind):
    c = checks[kind]
    assert c["reference_equals_base"], "reference() must be the untouched MODEL's velocity, exactly"
    assert c["policy_differs"] > 1e-3
    assert c["export_matches_policy"] < 1e-5, "the exported file, applied by ComfyUI, reproduces the adapter"
    assert c["forward_patches_left"] == [], "release() takes the bypass patches out of the shared module"
    assert c["params_same_objects"] and c["weights_unchanged"], (
        "the shared MODEL's weights are never modified"
    )


@pytest.mark.parametrize("kind, layers", [("sd3", 15), ("flux", 13)])
def test_diffusers_format_export(checks, kind, layers):
    """transformer.<diffusers layer>.lora_A/B keys: ComfyUI applies them like the trained adapter, and
    diffusers' own SD3/FLUX transformer loads them onto Linear layers of the same shapes."""
    c = checks[kind]
    assert c["diffusers_export_matches_policy"] < 1e-5
    assert c["diffusers_layers"]["problems"] == []
    assert c["diffusers_layers"]["layers"] == layers  # fused qkv / linear1 split into their projections


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_continuing_from_an_exported_lora(checks, kind):
    """load_lora_state_dict (init_lora) inverts the export, in both key formats."""
    assert checks[kind]["reload_comfyui"] < 1e-5
    assert checks[kind]["reload_diffusers"] < 1e-5
