"""Tiny diffusers pipelines for tests: SD3, FLUX.1 and a non-flow SD1-style one.

Built from configs with random weights (a few hundred K parameters, fast on CPU) and offline
tokenizers trained on a few sentences, then saved with save_pretrained, so tests load them through
the same from_pretrained code a user's model goes through. Nothing is downloaded.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5EncoderModel,
    T5TokenizerFast,
)

from normguard.trainer.models.diffusers_shapes import SENTENCES, flux_pipeline, sd3_pipeline

CLIP_LEN = 77  # CLIP's real context length: the pipelines pad every prompt to it
LATENT_CHANNELS = 4
VAE_BLOCKS = 4  # four blocks: the real 8x spatial compression


# --- tokenizers --------------------------------------------------------------------------------


def clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE CLIP tokenizer: full byte alphabet (every text encodes) plus learned merges."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=400, end_of_word_suffix="</w>", initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(SENTENCES, trainer)
    merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(c + "</w>" for c in alphabet), *(m.replace(" ", "") for m in merges)]:
        vocab.setdefault(token, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=CLIP_LEN)


def t5_tokenizer() -> T5TokenizerFast:
    """A Unigram T5 tokenizer (pad 0, eos 1, unk 2 as in T5) saved as tokenizer.json."""
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    unigram.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    unigram.train_from_iterator(SENTENCES, trainer)
    unigram.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    config = {
        "tokenizer_class": "T5Tokenizer",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
    }
    with tempfile.TemporaryDirectory() as tmp:
        unigram.save(str(Path(tmp) / "tokenizer.json"))
        (Path(tmp) / "tokenizer_config.json").write_text(
            json.dumps({**config, "extra_ids": 0, "model_max_length": 512})
        )
        return T5TokenizerFast.from_pretrained(tmp)


# --- models ------------------------------------------------------------------------------------


def clip_text_model(
    tokenizer: CLIPTokenizer, hidden: int, projection: int | None, positions: int = CLIP_LEN
) -> nn.Module:
    """CLIPTextModel, or CLIPTextModelWithProjection when `projection` is given (SD3's pooled output)."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        projection_dim=projection or hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=positions,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def t5_model(vocab: int, d_model: int = 32, layers: int = 2, cls: type[Any] = T5EncoderModel) -> nn.Module:
    """A tiny T5-style encoder (pad 0, eos 1) of class `cls`, with that class's config: T5 (also byT5, whose
    vocabulary is bytes) or UMT5."""
    config = cls.config_class(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=layers,
        num_heads=2,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
    )
    return cls(config)


# A 4-block VAE (8x compression) of 8-channel blocks without quant convs; AutoencoderKL and FLUX.2's VAE
TINY_VAE = dict(
    block_out_channels=(8,) * VAE_BLOCKS,
    layers_per_block=1,
    latent_channels=LATENT_CHANNELS,
    norm_num_groups=4,
    sample_size=64,
    use_quant_conv=False,
    use_post_quant_conv=False,
)


def tiny_vae(scaling_factor: float = 0.3611, shift_factor: float = 0.1159) -> AutoencoderKL:
    """A 4-block KL VAE (8x compression) without quant convs, as in SD3 and FLUX; by default with the FLUX.1
    VAE's latent scale and shift (Chroma, Z-Image, Lumina 2 and HiDream use that VAE too)."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * VAE_BLOCKS,
        up_block_types=("UpDecoderBlock2D",) * VAE_BLOCKS,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        **TINY_VAE,
    )


def saved(pipe: Any, folder: Path) -> Path:
    """`pipe` saved with save_pretrained, so a test loads it the way a user's model folder loads."""
    pipe.save_pretrained(folder)
    return folder


def randomise_zero_weights(module: nn.Module, seed: int, std: float = 0.2) -> None:
    """diffusers zero-initialises some output projections: give every all-zero tensor random values so
    velocities (and LoRA effects) are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- pipelines ---------------------------------------------------------------------------------


def build_tiny_sd3(folder: Path, seed: int = 0) -> Path:
    """A tiny SD3.5-medium-shaped pipeline (dual attention in block 0, RMS qk-norm, patch 2, shift 3)."""
    torch.manual_seed(seed)
    tok = clip_tokenizer()
    tok3 = t5_tokenizer()
    # CLIP hidden states (16 + 16) are padded to the T5 width (32) and joined along the sequence
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=32,
        pos_embed_max_size=16,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    randomise_zero_weights(transformer, seed)
    pipe = sd3_pipeline(
        transformer,
        tiny_vae(scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=clip_text_model(tok, hidden=16, projection=16),
        tokenizer=tok,
        text_encoder_2=clip_text_model(tok, hidden=16, projection=16),
        tokenizer_2=tok,
        text_encoder_3=t5_model(len(tok3)),
        tokenizer_3=tok3,
    )
    return saved(pipe, folder)


def build_tiny_flux(folder: Path, guidance_embeds: bool = True, seed: int = 0) -> Path:
    """A tiny FLUX.1 pipeline: dev-like (guidance-distilled) by default, schnell-like otherwise."""
    torch.manual_seed(seed)
    tok = clip_tokenizer()
    tok2 = t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,  # 2x2 packed latents
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )
    randomise_zero_weights(transformer, seed)
    pipe = flux_pipeline(
        transformer,
        tiny_vae(),
        text_encoder=clip_text_model(tok, hidden=16, projection=None),
        tokenizer=tok,
        text_encoder_2=t5_model(len(tok2)),
        tokenizer_2=tok2,
    )
    return saved(pipe, folder)


def build_tiny_nonflow(folder: Path, seed: int = 0) -> Path:
    """A tiny SD1-style pipeline (UNet, DDIM, epsilon prediction): a model the backend must refuse."""
    torch.manual_seed(seed)
    tok = clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(scaling_factor=0.18215, shift_factor=0.0),
        text_encoder=clip_text_model(tok, hidden=16, projection=None),
        tokenizer=tok,
        unet=unet,
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return saved(pipe, folder)


# --- fixtures (session-scoped: each pipeline is built once per test run) -----------------------


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3"))


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("tiny-flux-dev"))


@pytest.fixture(scope="session")
def tiny_flux_schnell_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("tiny-flux-schnell"), guidance_embeds=False)


@pytest.fixture(scope="session")
def tiny_nonflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_nonflow(tmp_path_factory.mktemp("tiny-sd1"))
