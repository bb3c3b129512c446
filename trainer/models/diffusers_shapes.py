"""Shapes and schedulers of the real flow families (SD3.5-Medium, FLUX.1-dev), and pipelines assembled
from them: one place for the benchmarks (full-size shapes with random weights) and for the tests'
tiny pipelines (tests/diffusers_kit.py), so a benchmark and a test build a family the same way.
Imported only by those: nothing at run time depends on it.
"""

from __future__ import annotations

from typing import Any

from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline

# Prompts the tests' offline tokenizers are trained on (every word is in their vocabulary) and the
# benchmarks prompt with.
SENTENCES = [
    "a photo of a cat sitting on a red sofa",
    "an astronaut riding a horse on the moon",
    "a bowl of fresh fruit on a wooden table",
    "a watercolor painting of a lighthouse at dawn",
    "a street at night with neon signs and rain",
    "a close up portrait of an old man smiling",
    "a sign that says hello world",
]
SD35M = dict(  # SD3.5-Medium's MMDiT-X
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
    qk_norm="rms_norm",
)
FLUX_DEV = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
VAE_16CH = dict(  # the 16-channel VAE both families use
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
SD3_TEXT = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")
FLUX_TEXT = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


def sd3_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1's resolution-dependent shift."""
    return FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def sd3_pipeline(transformer: Any, vae: Any, **text: Any) -> StableDiffusion3Pipeline:
    """An SD3 pipeline; text encoders and tokenizers not given are None (prompts come as embeddings)."""
    return StableDiffusion3Pipeline(
        transformer=transformer, vae=vae, scheduler=sd3_scheduler(), **(dict.fromkeys(SD3_TEXT) | text)
    )


def flux_pipeline(transformer: Any, vae: Any, **text: Any) -> FluxPipeline:
    """A FLUX.1 pipeline; text encoders and tokenizers not given are None."""
    return FluxPipeline(
        transformer=transformer, vae=vae, scheduler=flux_scheduler(), **(dict.fromkeys(FLUX_TEXT) | text)
    )
