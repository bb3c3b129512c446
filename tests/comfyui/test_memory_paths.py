"""The ComfyUI backend's memory paths, in-process under ComfyUI's python (this file runs itself):
- ComfyUI's partial ("lowvram") loading is refused with a clear error, not trained through: a real
  ModelPatcher of a tiny SD3, loaded partially by ComfyUI's own ModelPatcher.load on the CPU (the code
  load_models_gpu runs when a model does not fit), fails the backend's check; fully loaded, it passes.
  Why it is refused: trainer/backends/comfy/backend.py, check_fully_loaded.
- gradient checkpointing reaches every family's blocks, Z-Image's `layers` and refiners included
  (they are not named *blocks), and gives the gradients of the plain pass."""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    import pytest
except ImportError:  # ComfyUI's python running this file as a script
    pytest = None


def partial_load(comfy: dict) -> dict:
    import torch

    from normguard.trainer.backends.comfy.backend import check_fully_loaded

    unet = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2, "input_size": None,
            "adm_in_channels": 2048, "pos_embed_scaling_factor": None, "pos_embed_max_size": 32,
            "num_patches": 1024, "x_block_self_attn_layers": [],
            "context_embedder_config": {"target": "torch.nn.Linear",
                                        "params": {"in_features": 4096, "out_features": 128}}}  # fmt: skip
    out = {}
    for budget in (1, 1e32):  # 1 byte of "VRAM": every layer offloaded; 1e32: everything fits
        model = comfy["supported_models"].SD3(dict(unet)).get_model({})
        cpu = torch.device("cpu")
        patcher = comfy["model_patcher"].ModelPatcher(model, load_device=cpu, offload_device=cpu)
        patcher.load(cpu, lowvram_model_memory=budget)
        key = "full" if budget > 1 else "partial"
        try:
            check_fully_loaded(patcher)
            out[key] = "ok"
        except ValueError as e:
            out[key] = str(e)
    return out


def zimage_checkpointing(comfy: dict) -> dict:
    import torch
    from family_specs import SPECS

    ZIMAGE_UNET = SPECS["zimage"].unet

    from normguard.trainer.backends.comfy.backend import ComfyBackend
    from normguard.trainer.backends.comfy.patching import checkpoint_patches

    class Clip:  # conditioning of Z-Image's tiny text width; the real one is tested elsewhere
        def tokenize(self, prompt):
            return prompt

        def encode_from_tokens(self, tokens, return_pooled, return_dict):
            g = torch.Generator().manual_seed(len(tokens))
            return {"cond": torch.randn(1, 8, ZIMAGE_UNET["cap_feat_dim"], generator=g)}

    class Vae:
        def spacial_compression_decode(self):
            return 8

    model = comfy["supported_models"].ZImage(dict(ZIMAGE_UNET)).get_model({})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.06)
    cpu = torch.device("cpu")
    patcher = comfy["model_patcher"].ModelPatcher(model, load_device=cpu, offload_device=cpu)
    grads = {}
    for ckpt in (False, True):
        backend = ComfyBackend(patcher, Clip(), Vae(), height=64, width=64, gradient_checkpointing=ckpt)
        torch.manual_seed(0)
        backend.add_lora(4, 4, init="gaussian_nonzero")
        x = torch.randn(2, *backend.latent_shape(64, 64), generator=torch.Generator().manual_seed(1))
        v = backend.velocity(x, torch.tensor([0.3, 0.7]), backend.encode_prompts(["a", "bb"]))
        v.square().mean().backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in backend.named_trainable().items()}
        backend.release()
    blocks = sum(
        len(getattr(model.diffusion_model, n)) for n in ("layers", "noise_refiner", "context_refiner")
    )
    diff = max((grads[True][k] - grads[False][k]).abs().max().item() for k in grads[False])
    scale = max(t.abs().max().item() for t in grads[False].values())
    return {
        "patched": len(checkpoint_patches(model.diffusion_model)),
        "blocks": blocks,
        "diff": diff,
        "scale": scale,
    }


def _checks(package_parent) -> dict:
    from .conftest import COMFYUI_PATH, COMFYUI_PYTHON  # relative: this file also runs as a script
    from .server import run_check

    return run_check(COMFYUI_PYTHON, Path(__file__), COMFYUI_PATH, package_parent, timeout=900)


if pytest is not None:
    checks = pytest.fixture(scope="module")(_checks)


def test_partial_loading_is_refused_with_a_clear_error(checks):
    out = checks["partial_load"]
    assert out["full"] == "ok"
    assert (
        "partial" in out["partial"]
        and "fp8_e4m3fn" in out["partial"]
        and "micro_batch_size" in out["partial"]
    )


def test_checkpointing_covers_zimage_layers_with_the_same_gradients(checks):
    out = checks["zimage"]
    assert out["patched"] == out["blocks"] > 0
    assert out["scale"] > 0 and out["diff"] <= 1e-5 * out["scale"]


def main(comfy_dir: str, package_parent: str) -> dict:
    sys.path[:0] = [comfy_dir, package_parent, str(Path(__file__).parent)]
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_patcher
    import comfy.supported_models

    modules = {"supported_models": comfy.supported_models, "model_patcher": comfy.model_patcher}
    return {"partial_load": partial_load(modules), "zimage": zimage_checkpointing(modules)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
