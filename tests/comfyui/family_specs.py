"""The tiny family models of the ComfyUI tests, as data: which comfy.supported_models class, its unet_config
(the keys model_detection would write, at tiny widths) and the family's own text encoder shrunk through
model_options["<name>_model_config"] (real classes and tokenizers; fewer layers, a narrow hidden size).
Read by kit_families.py (writes the files), the test-only loaders in testkit_nodes/ (read them) and
graphs.py (names them); `comfy` is imported inside functions only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spec:
    comfy_class: str  # comfy.supported_models.<name>
    unet: dict[str, Any]
    clip_options: dict[str, Any]  # model_options: "<name>_model_config" overrides of the text encoders
    clip_target: Callable[[], Any] | None = None  # ClipTarget; None: the model class's clip_target({})
    vae: str = "tiny_vae16.safetensors"
    stock_unet: bool = False  # model_detection accepts the tiny shape: it loads through UNETLoader
    latent: str = "EmptySD3LatentImage"  # the empty-latent node of the family's workflows
    spiece: bool = False  # the tokenizer ships in the text-encoder file (a SentencePiece model; Gemma)
    std: float = 0.06  # at 0.02 some families' modulation gates leave a LoRA's effect near float noise
    norm_scale: bool = False  # the released files name RMSNorm weights `.scale` (kit.rms_norm_scales)


def target(model_config: Any, spec: Spec) -> Any:
    return spec.clip_target() if spec.clip_target is not None else model_config.clip_target({})


@contextmanager
def small_vision_tower() -> Iterator[None]:
    """Qwen2.5-VL's vision tower has a fixed 1280-wide, 32-layer shape (~670 M parameters) that text-only
    prompts never run; a one-layer one stands in for it so the text encoder fits a test."""
    import comfy.text_encoders.qwen_vl as qwen_vl

    full = qwen_vl.Qwen2VLVisionTransformer

    def tiny(**kwargs: Any) -> Any:
        return full(**{**kwargs, "hidden_size": 32, "intermediate_size": 32, "num_heads": 2, "num_layers": 1})

    qwen_vl.Qwen2VLVisionTransformer = tiny
    try:
        yield
    finally:
        qwen_vl.Qwen2VLVisionTransformer = full


# VAEs beyond kit.py's tiny_vae16 (file -> kit.write_vae's latent channels, batch_norm)
VAES = {"tiny_vae4.safetensors": (4, False), "tiny_vae_flux2.safetensors": (32, True)}
TE_WIDTH = 128  # hidden size of the shrunk text encoders (their vocabularies stay full size)

SPECS: dict[str, Spec] = {
    # as model_detection writes Z-Image's unet_config (dim 3840 there), at dim 256 (its code needs >= 256):
    # 2 heads of 128, the real head and RoPE axes; 2 layers + the 2+2 refiners; caption pad token
    "zimage": Spec(
        "ZImage",
        {
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
        },
        # Qwen3-4B's class; Z-Image reads the second-to-last layer
        {
            "qwen3_4b_model_config": {
                "hidden_size": 256,
                "intermediate_size": 512,
                "num_hidden_layers": 3,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
            }
        },
    ),
    # Lumina-Image 2.0 (model_detection: dim 2304, 24 heads, 8 kv heads), at dim 128; Gemma-2-2B's class
    "lumina2": Spec(
        "Lumina2",
        {
            "image_model": "lumina2",
            "patch_size": 2,
            "in_channels": 16,
            "dim": 128,
            "cap_feat_dim": TE_WIDTH,
            "n_layers": 2,
            "qk_norm": True,
            "n_heads": 2,
            "n_kv_heads": 1,
            "axes_dims": [16, 24, 24],
            "axes_lens": [300, 512, 512],
            "rope_theta": 10000.0,
            "ffn_dim_multiplier": 4.0,
        },
        {
            "gemma2_2b_model_config": {
                "hidden_size": TE_WIDTH,
                "intermediate_size": 2 * TE_WIDTH,
                "num_hidden_layers": 3,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
            }
        },
        spiece=True,
    ),
    # Qwen-Image (model_detection reads only in_channels and the depth: 24 heads of 128, text 3584), at
    # 4 heads of 32; Qwen2.5-VL-7B's class with a small vision tower (small_vision_tower)
    "qwenimage": Spec(
        "QwenImage",
        {
            "image_model": "qwen_image",
            "in_channels": 64,
            "out_channels": 16,
            "num_layers": 2,
            "attention_head_dim": 32,
            "num_attention_heads": 4,
            "joint_attention_dim": TE_WIDTH,
            "axes_dims_rope": [8, 12, 12],
        },
        {
            "qwen25_7b_model_config": {
                "hidden_size": TE_WIDTH,
                "intermediate_size": 2 * TE_WIDTH,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
            }
        },
    ),
}


# T5-style encoders (comfy.text_encoders.t5.T5 configs) at the shrunk width
T5_TINY = {"d_model": TE_WIDTH, "d_ff": 2 * TE_WIDTH, "d_kv": 32, "num_heads": 4, "num_layers": 2}
# model_detection fixes hidden 3072 (out_dim) and the approximator: at hidden 128. The real depths (19 double,
# 38 single blocks) stay: ComfyUI's Chroma reads the final layer's modulation at the fixed index 342-343 of
# its 344 (3 x 38 + 12 x 19 + 2) approximator outputs, diffusers' at the last two of as many as the depths give
SPECS["chroma"] = Spec(
    "Chroma",
    {
        "image_model": "chroma",
        "in_channels": 64,
        "out_channels": 64,
        "context_in_dim": TE_WIDTH,
        "hidden_size": 128,
        "mlp_ratio": 4.0,
        "num_heads": 1,
        "depth": 19,
        "depth_single_blocks": 38,
        "axes_dim": [16, 56, 56],
        "theta": 10000,
        "patch_size": 2,
        "qkv_bias": True,
        "in_dim": 64,
        "out_dim": 128,
        "hidden_dim": 64,
        "n_layers": 1,
        "txt_ids_dims": [],
        "vec_in_dim": None,
    },
    {"t5xxl_model_config": T5_TINY},  # T5-XXL's class (PixArt's wrapper, as ComfyUI's Chroma uses)
    norm_scale=True,
)
SPECS["auraflow"] = Spec(  # model_detection fixes dim 3072 and the text width 2048 (Pile-T5-XL): at dim 128
    "AuraFlow",
    {
        "in_channels": 4,
        "out_channels": 4,
        "patch_size": 2,
        "dim": 128,
        "n_layers": 2,
        "n_double_layers": 1,
        "n_heads": 2,
        "global_conddim": 128,
        "cond_seq_dim": TE_WIDTH,
        "max_seq": 256,
    },
    {"pile_t5xl_model_config": T5_TINY},
    vae="tiny_vae4.safetensors",
)
# FLUX.2 [klein]: model_detection accepts the tiny shape (hidden 128 = 1 head of 128, 1 + 1 blocks)
SPECS["flux2"] = Spec(
    "Flux2",
    {
        "image_model": "flux2",
        "axes_dim": [32, 32, 32, 32],
        "num_heads": 1,
        "mlp_ratio": 3.0,
        "theta": 2000,
        "out_channels": 128,
        "global_modulation": True,
        "mlp_silu_act": True,
        "qkv_bias": False,
        "ops_bias": False,
        "default_ref_method": "index",
        "ref_index_scale": 10.0,
        "txt_ids_dims": [3],
        "patch_size": 1,
        "in_channels": 128,
        "hidden_size": 128,
        "context_in_dim": 3 * 64,  # klein stacks three of Qwen3's hidden layers (9, 18, 27)
        "vec_in_dim": None,
        "depth": 1,
        "depth_single_blocks": 1,
        "guidance_embed": False,
        "yak_mlp": False,
        "txt_norm": False,
    },
    {
        "qwen3_4b_model_config": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 28,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
        }
    },
    clip_target=lambda: _klein_target(),
    vae="tiny_vae_flux2.safetensors",
    stock_unet=True,
    norm_scale=True,
    latent="EmptyFlux2LatentImage",
)


# HiDream-I1 (model_detection: 20 heads of 128, 16 double + 32 single MoE blocks, text 4096, pooled 2048):
# 2 heads of 64 (RoPE axes in the real 2:1:1 ratio), 1 + 1 blocks with the real 4 routed / 2 active experts.
# Its four text encoders (CLIP-L, CLIP-G, T5-XXL, Llama-3.1-8B, ComfyUI's hidream_clip) shrunk to TE_WIDTH:
# the pooled vector is CLIP-L's + CLIP-G's projections, the blocks read Llama's layers (one per block)
# and T5's tokens.
CLIP_TINY = {
    "hidden_size": TE_WIDTH,
    "intermediate_size": 2 * TE_WIDTH,
    "num_attention_heads": 2,
    "num_hidden_layers": 3,  # CLIP-G gives its penultimate layer (ComfyUI asserts |-2| < layers)
    "projection_dim": TE_WIDTH,
}
SPECS["hidream"] = Spec(
    "HiDream",
    {
        "image_model": "hidream",
        "attention_head_dim": 64,
        "axes_dims_rope": [32, 16, 16],
        "caption_channels": [TE_WIDTH, TE_WIDTH],  # T5's, Llama's
        "max_resolution": [128, 128],
        "in_channels": 16,
        "llama_layers": [0, 1],  # the Llama layer each block reads (real: 0..31, then 31 repeated)
        "num_attention_heads": 2,
        "num_routed_experts": 4,
        "num_activated_experts": 2,
        "num_layers": 1,
        "num_single_layers": 1,
        "out_channels": 16,
        "patch_size": 2,
        "text_emb_dim": 2 * TE_WIDTH,
    },
    {
        "clip_l_model_config": CLIP_TINY,
        "clip_g_model_config": CLIP_TINY,
        "t5xxl_model_config": T5_TINY,
        # Llama's head_dim is fixed at 128 in ComfyUI's config: one head at this width
        "llama_model_config": {
            "hidden_size": TE_WIDTH,
            "intermediate_size": 2 * TE_WIDTH,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "num_key_value_heads": 1,
        },
    },
    clip_target=lambda: _hidream_target(),
)


# HunyuanImage 2.1 as model_detection reads it (hidden 3584 = 28 heads of 128, 2-D patches, byT5 glyph input):
# hidden 128 (one head of 128, the real RoPE axes [64, 64]), 1 + 1 blocks; model_detection accepts this shape.
# Its text encoder (Qwen2.5-VL-7B, the fourth-to-last hidden layer, with a small vision tower) and byT5-small
# at width 1472, which the glyph mapper's input fixes, with one layer: ByT5SmallModel reads the unnamed
# "_model_config" entry (ComfyUI gives it no model name).
SPECS["hunyuanimage"] = Spec(
    "HunyuanImage21",
    {
        "image_model": "hunyuan_video",
        "in_channels": 64,
        "patch_size": [1, 1],
        "out_channels": 64,
        "vec_in_dim": None,
        "axes_dim": [64, 64],
        "meanflow": False,
        "context_in_dim": TE_WIDTH,
        "hidden_size": 128,
        "mlp_ratio": 4.0,
        "num_heads": 1,
        "depth": 1,
        "depth_single_blocks": 1,
        "theta": 256,
        "qkv_bias": True,
        "byt5": True,
        "guidance_embed": False,
        "use_cond_type_embedding": False,
        "vision_in_dim": None,
        "meanflow_sum": False,
    },
    {
        "qwen25_7b_model_config": {
            "hidden_size": TE_WIDTH,
            "intermediate_size": 2 * TE_WIDTH,
            "num_hidden_layers": 4,  # it reads layer -3
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
        },
        "_model_config": {"num_layers": 1, "d_ff": 256, "num_heads": 2, "d_kv": 32},
    },
    vae="tiny_vae_hunyuan21.safetensors",
    stock_unet=True,
    latent="EmptyHunyuanImageLatent",
)


# Diffusion-model files of a family's variants that the trainer must refuse (file -> family, unet_config
# changes): the meanflow-distilled HunyuanImage 2.1, whose extra time_r_in input model_detection reads
VARIANTS = {"tiny_hunyuanimage_meanflow.safetensors": ("hunyuanimage", {"meanflow": True})}


def _hidream_target() -> Any:
    """ComfyUI's QuadrupleCLIPLoader target (supported_models.HiDream has no clip_target of its own)."""
    import comfy.supported_models_base
    import comfy.text_encoders.hidream as hidream

    return comfy.supported_models_base.ClipTarget(hidream.HiDreamTokenizer, hidream.hidream_clip())


# Llama-3's pre-tokenizer split (its tokenizer.json) and the special tokens HiDream's encoder uses
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
LLAMA3_SPECIAL = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|eot_id|>": 128009}


def tiny_llama3_tokenizer_json() -> dict:
    """Llama-3's tokenizer.json with only the 256 byte-level symbols and no merges (every byte one token):
    the real split pattern, special ids and begin_of_text template. The real file is not in ComfyUI's
    checkout; ComfyUI's own BPE reader (bpe_tokenizer.from_tokenizer_json) reads this one."""
    import comfy.text_encoders.bpe_tokenizer as bpe

    vocab = {symbol: i for i, symbol in enumerate(bpe._bytes_to_unicode().values())}  # the 256 bytes' symbols
    return {
        "added_tokens": [{"id": i, "content": t, "special": True} for t, i in LLAMA3_SPECIAL.items()],
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [{"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated"}],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A"}},
            ],
        },
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    }


@contextmanager
def tiny_llama3_vocabulary() -> Iterator[None]:
    """ComfyUI's LLAMA3Tokenizer (the real class, settings and BPE reader) on the stand-in tokenizer.json."""
    import json
    import tempfile

    import comfy.text_encoders.bpe_tokenizer as bpe
    import comfy.text_encoders.hunyuan_video as hunyuan_video

    with tempfile.TemporaryDirectory() as folder:
        with open(f"{folder}/tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(tiny_llama3_tokenizer_json(), f)

        class TinyLlama3:
            @staticmethod
            def from_pretrained(path: str, **kwargs: Any) -> Any:
                return bpe.from_tokenizer_json(folder)

        full = hunyuan_video.LlamaTokenizerFast
        hunyuan_video.LlamaTokenizerFast = TinyLlama3
        try:
            yield
        finally:
            hunyuan_video.LlamaTokenizerFast = full


def _klein_target() -> Any:
    import comfy.supported_models_base
    import comfy.text_encoders.flux as flux

    return comfy.supported_models_base.ClipTarget(flux.KleinTokenizer, flux.klein_te(model_type="qwen3_4b"))


@contextmanager
def building(name: str) -> Iterator[None]:
    """What a family's classes need patched while they are built (kit and loader alike)."""
    if name in ("qwenimage", "hunyuanimage"):
        with small_vision_tower():
            yield
    elif name == "hidream":
        with tiny_llama3_vocabulary():
            yield
    else:
        yield
