"""Test-only ComfyUI nodes (tests/comfyui links this folder into custom_nodes; never shipped): load the
tiny family models of kit_families.py where the stock loaders refuse small shapes (see that module).
Same classes and loading steps as comfy.sd.load_diffusion_model_state_dict and load_clip, with the
config read from the file instead of detected."""

from __future__ import annotations

import json

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.supported_models_base
import comfy.text_encoders.z_image
import comfy.utils
import folder_paths
import torch

FAMILIES = {  # name -> (supported_models class, tokenizer class, text encoder factory, model_options key)
    "zimage": (
        comfy.supported_models.ZImage,
        comfy.text_encoders.z_image.ZImageTokenizer,
        comfy.text_encoders.z_image.te,
        "qwen3_4b_model_config",
    ),
}


def _file(folder: str, name: str) -> tuple[dict, dict]:
    return comfy.utils.load_torch_file(
        folder_paths.get_full_path_or_raise(folder, name), return_metadata=True
    )


class NormGuardTestTinyUNET:
    @classmethod
    def INPUT_TYPES(cls):
        files = folder_paths.get_filename_list("diffusion_models")
        return {"required": {"family": (list(FAMILIES),), "unet_name": (files,)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, family, unet_name):
        sd, meta = _file("diffusion_models", unet_name)
        model_config = FAMILIES[family][0](json.loads(meta["normguard.unet_config"]))
        model_config.set_inference_dtype(torch.float32, None)
        model = model_config.get_model(sd, "")
        patcher = comfy.model_patcher.ModelPatcher(
            model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
        )
        model.load_model_weights(sd, "")
        return (patcher,)


class NormGuardTestTinyCLIP:
    @classmethod
    def INPUT_TYPES(cls):
        files = folder_paths.get_filename_list("text_encoders")
        return {"required": {"family": (list(FAMILIES),), "clip_name": (files,)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, family, clip_name):
        _, tokenizer, te, options_key = FAMILIES[family]
        sd, meta = _file("text_encoders", clip_name)
        clip = comfy.sd.CLIP(
            target=comfy.supported_models_base.ClipTarget(tokenizer, te()),
            state_dict=[sd],
            model_options={options_key: json.loads(meta["normguard.model_config"])},
            parameters=comfy.utils.calculate_parameters(sd),
        )
        return (clip,)


NODE_CLASS_MAPPINGS = {
    "NormGuardTestTinyUNET": NormGuardTestTinyUNET,
    "NormGuardTestTinyCLIP": NormGuardTestTinyCLIP,
}
