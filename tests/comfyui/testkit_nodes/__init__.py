"""Test-only ComfyUI nodes (tests/comfyui links this folder into custom_nodes; never shipped): load the
tiny family models of kit_families.py where the stock loaders refuse small shapes (see that module).
Same classes and loading steps as comfy.sd.load_diffusion_model_state_dict and load_clip, with the
config read from the file instead of detected."""

from __future__ import annotations

import json
import os
import sys

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # tests/comfyui
from family_specs import SPECS, building, target  # noqa: E402

sys.path.pop(0)


def load_unet(family: str, path: str, disable_dynamic: bool = False):
    """The tiny diffusion model in `path` as a MODEL; like the core loaders, the patcher remembers how to
    reload it (cached_patcher_init: the file name is all ComfyUI keeps of where a MODEL came from)."""
    sd, meta = comfy.utils.load_torch_file(path, return_metadata=True)
    spec = SPECS[family]
    model_config = getattr(comfy.supported_models, spec.comfy_class)(
        json.loads(meta["normguard.unet_config"])
    )
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(sd, "")
    patcher = comfy.model_patcher.ModelPatcher(
        model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )
    model.load_model_weights(sd, "")
    # the path first, as the core loaders keep it (load_diffusion_model(unet_path, model_options)): the
    # trainer reads the file name from there (Z-Image-Turbo is told from Z-Image by its file name only)
    patcher.cached_patcher_init = (reload_unet, (path, family))
    return patcher


def reload_unet(path: str, family: str, disable_dynamic: bool = False):
    """What ComfyUI calls to rebuild the MODEL (clone(force_deepcopy=True) passes disable_dynamic)."""
    return load_unet(family, path, disable_dynamic)


def load_clip(family: str, path: str):
    sd, meta = comfy.utils.load_torch_file(path, return_metadata=True)
    spec = SPECS[family]
    config = getattr(comfy.supported_models, spec.comfy_class)(dict(spec.unet))
    tokenizer = {k: sd.pop(k) for k in ("spiece_model",) if k in sd}  # as comfy.sd.load_clip passes it
    with building(family):
        return comfy.sd.CLIP(
            target=target(config, spec),
            state_dict=sd,  # a dict: the whole wrapper's keys (CLIP.load_sd full_model)
            model_options=json.loads(meta["normguard.model_options"]),
            parameters=comfy.utils.calculate_parameters(sd),
            tokenizer_data=tokenizer,
        )


class NormGuardTestTinyUNET:
    @classmethod
    def INPUT_TYPES(cls):
        files = folder_paths.get_filename_list("diffusion_models")
        return {"required": {"family": (list(SPECS),), "unet_name": (files,)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, family, unet_name):
        return (load_unet(family, folder_paths.get_full_path_or_raise("diffusion_models", unet_name)),)


class NormGuardTestTinyCLIP:
    @classmethod
    def INPUT_TYPES(cls):
        files = folder_paths.get_filename_list("text_encoders")
        return {"required": {"family": (list(SPECS),), "clip_name": (files,)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, family, clip_name):
        return (load_clip(family, folder_paths.get_full_path_or_raise("text_encoders", clip_name)),)


NODE_CLASS_MAPPINGS = {
    "NormGuardTestTinyUNET": NormGuardTestTinyUNET,
    "NormGuardTestTinyCLIP": NormGuardTestTinyCLIP,
}
