"""Tiny models of the flow families whose ComfyUI detection refuses small shapes, with the files the
test-only loader (testkit_nodes/) reads. Run with ComfyUI's python:
  python kit_families.py COMFYUI_PATH MODELS_DIR
  diffusion_models/tiny_zimage.safetensors  comfy.supported_models.ZImage, dim 256 (2 heads of 128, the
                                            real head and RoPE axes), 2 layers + the 2+2 refiners,
                                            caption pad token; unet_config in the file's metadata
  text_encoders/tiny_qwen3.safetensors      Z-Image's Qwen3-4B class shrunk through model_options
                                            (3 layers, hidden 256); its model config in the metadata
Why not the stock loaders: model_detection recognises Z-Image only at dim 3840 (a tiny one is taken
for a broken Lumina 2), and CLIPLoader recognises Qwen3-4B only at hidden 2560 and builds all 36
layers, with no way to pass model_options. The test loader uses the same classes and code paths
(ZImage(unet_config).get_model, load_model_weights; comfy.sd.CLIP with `qwen3_4b_model_config`).
"""

from __future__ import annotations

import json
import os
import sys

ZIMAGE_UNET = {  # as model_detection writes Z-Image's unet_config (dim 3840 there), at dim 256
    "image_model": "lumina2",
    "patch_size": 2,
    "in_channels": 16,
    "dim": 256,
    "cap_feat_dim": 256,
    "n_layers": 2,
    "qk_norm": True,
    "n_heads": 2,
    "n_kv_heads": 2,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
    "rope_theta": 256.0,
    "ffn_dim_multiplier": 8.0 / 3.0,
    "z_image_modulation": True,
    "time_scale": 1000.0,
    "pad_tokens_multiple": 32,
}
QWEN3_TINY = {  # model_options["qwen3_4b_model_config"]: keys of comfy.text_encoders.llama.Qwen3_4BConfig
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 3,  # Z-Image reads the second-to-last layer (layer_idx -2)
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


def main(comfy_dir: str, models_dir: str) -> None:
    sys.path.insert(0, comfy_dir)
    import torch
    from comfy.cli_args import args
    from safetensors.torch import save_file

    if not torch.cuda.is_available():
        args.cpu = True
    import comfy.ops
    import comfy.supported_models
    import comfy.text_encoders.llama

    gen = torch.Generator().manual_seed(0)

    def randomize(module: torch.nn.Module, std: float) -> dict:
        # std 0.06: at 0.02 the modulation gates leave a LoRA's effect near float noise (COMFYUI.md)
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif p.ndim == 1 and "norm" in name:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        return {k: v.contiguous() for k, v in module.state_dict().items()}

    def save(sd: dict, file: str, meta: dict) -> None:
        path = os.path.join(models_dir, file)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_file(sd, path, metadata={k: json.dumps(v) for k, v in meta.items()})

    model = comfy.supported_models.ZImage(dict(ZIMAGE_UNET)).get_model({})
    sd = randomize(model.diffusion_model, 0.06)
    assert "cap_pad_token" in sd
    save(sd, "diffusion_models/tiny_zimage.safetensors", {"normguard.unet_config": ZIMAGE_UNET})

    te = comfy.text_encoders.llama.Qwen3_4B(dict(QWEN3_TINY), torch.float32, "cpu", comfy.ops.manual_cast)
    save(
        randomize(te, 0.06),  # the keys CLIP.load_sd takes for a one-model text encoder
        "text_encoders/tiny_qwen3.safetensors",
        {"normguard.model_config": QWEN3_TINY},
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
