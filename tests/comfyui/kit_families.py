"""Tiny models of the flow families whose ComfyUI detection refuses small shapes, with the files the
test-only loaders (testkit_nodes/) read. Run with ComfyUI's python:
  python kit_families.py COMFYUI_PATH MODELS_DIR
For each family of family_specs.py:
  diffusion_models/tiny_<family>.safetensors  comfy.supported_models.<class>(unet_config).get_model(),
                                              random weights; the unet_config in the file's metadata
  text_encoders/tiny_<family>_te.safetensors  the family's own text-encoder model (its ClipTarget) built
                                              with the spec's model_options (fewer layers, narrow), the
                                              whole wrapper's state dict; model_options in the metadata
Why not the stock loaders: model_detection fixes the widths of these families to the real ones (e.g.
Z-Image only at dim 3840; a tiny one is taken for a broken Lumina 2; Qwen-Image's heads and text width
are constants), and CLIPLoader builds the text encoders at full size with no way to pass model_options.
The test loaders use the same classes and code paths (<class>(unet_config).get_model, load_model_weights;
comfy.sd.CLIP with the family's ClipTarget and model_options).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def random_weights(module: Any, std: float, gen: Any) -> dict:
    """Fill `module` with random weights (biases 0, norm scales 1); its floating-point state dict."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1 and "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return {k: v.contiguous() for k, v in module.state_dict().items() if v.is_floating_point()}


def save_with_metadata(path: str, sd: dict, meta: dict) -> None:
    """A safetensors file whose metadata values are JSON (the test loaders read them)."""
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(sd, path, metadata={k: json.dumps(v) for k, v in meta.items()})


def main(comfy_dir: str, models_dir: str) -> None:
    sys.path[:0] = [comfy_dir, str(Path(__file__).resolve().parent)]
    import torch
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True
    import comfy.model_detection
    import comfy.supported_models
    from family_specs import SPECS, VAES, VARIANTS, building, target
    from kit import rms_norm_scales, write_vae

    gen = torch.Generator().manual_seed(0)

    def randomize(module: torch.nn.Module, std: float) -> dict:
        return random_weights(module, std, gen)

    def save(sd: dict, file: str, meta: dict) -> None:
        save_with_metadata(os.path.join(models_dir, file), sd, meta)

    def spiece_model() -> torch.Tensor:
        """A small SentencePiece model with Gemma's special ids (pad 0, eos 1, bos 2, unk 3): Gemma's
        tokenizer ships inside its text-encoder file (key spiece_model), not in the checkout."""
        import io

        import sentencepiece

        words = "a red cube blue ball on grass photo of cat sign that says hello world the big small green"
        proto = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter([words, *words.split()] * 20),
            model_writer=proto,
            vocab_size=40,
            pad_id=0,
            eos_id=1,
            bos_id=2,
            unk_id=3,
            minloglevel=2,
        )
        return torch.frombuffer(bytearray(proto.getvalue()), dtype=torch.uint8)

    for name, spec in SPECS.items():
        config = getattr(comfy.supported_models, spec.comfy_class)(dict(spec.unet))
        with building(name):
            model = config.get_model({})
            sd = randomize(model.diffusion_model, spec.std)
            if spec.norm_scale:
                sd = rms_norm_scales(model.diffusion_model, sd)
            if spec.stock_unet:
                detected = comfy.model_detection.model_config_from_unet(sd, "")
                assert type(detected).__name__ == spec.comfy_class, f"{name} is detected as {detected}"
            save(sd, f"diffusion_models/tiny_{name}.safetensors", {"normguard.unet_config": spec.unet})
            te = target(config, spec).clip(dtype=torch.float32, device="cpu", model_options=spec.clip_options)
            te_sd = randomize(te, spec.std)
        if spec.spiece:
            te_sd["spiece_model"] = spiece_model()
        save(
            te_sd, f"text_encoders/tiny_{name}_te.safetensors", {"normguard.model_options": spec.clip_options}
        )
    for file, (name, changes) in VARIANTS.items():
        spec = SPECS[name]
        unet = {**spec.unet, **changes}
        model = getattr(comfy.supported_models, spec.comfy_class)(unet).get_model({})
        sd = randomize(model.diffusion_model, spec.std)
        detected = comfy.model_detection.detect_unet_config(sd, "") if spec.stock_unet else unet
        assert all(detected.get(k) == v for k, v in changes.items()), f"{file} is detected as {detected}"
        save(sd, f"diffusion_models/{file}", {"normguard.unet_config": unet})
    for file, (channels, batch_norm) in VAES.items():
        write_vae(os.path.join(models_dir, "vae", file), channels, batch_norm)
    write_hunyuan21_vae(os.path.join(models_dir, "vae", SPECS["hunyuanimage"].vae))


def write_hunyuan21_vae(path: str) -> None:
    """HunyuanImage 2.1's VAE (64 latent channels, 32x). ComfyUI builds it at one fixed size (~405 M
    parameters) for any file whose decoder takes 64 channels, so the kit's is that model, random (Kaiming
    uniform, as torch initialises convolutions), fp16: ~0.8 GB."""
    import logging
    import math

    import comfy.sd
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    logging.disable(logging.WARNING)  # the missing keys of this detection-only state dict
    try:
        vae = comfy.sd.VAE(sd={"decoder.conv_in.weight": torch.zeros(1024, 64, 3, 3)})
    finally:
        logging.disable(logging.NOTSET)
    model = vae.first_stage_model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                bound = 1 / math.sqrt(p[0].numel())  # kaiming_uniform_(a=sqrt(5))
                p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)  # norms' scales; biases
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
