"""Tiny diffusers pipelines of every flow family beyond SD3/FLUX.1 (those are in diffusers_kit.py).

Each is built from the family's own pipeline, transformer and VAE classes with tiny configs and
random weights, with small text encoders of the right class (T5, UMT5, Qwen3, Gemma-2, Qwen2.5-VL)
and offline tokenizers trained on a few sentences, then saved with save_pretrained so tests load
them the way a user's model folder loads. Nothing is downloaded; each builds in about a second.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    AuraFlowPipeline,
    AuraFlowTransformer2DModel,
    AutoencoderKLFlux2,
    AutoencoderKLHunyuanImage,
    AutoencoderKLQwenImage,
    ChromaPipeline,
    ChromaTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
    HiDreamImagePipeline,
    HiDreamImageTransformer2DModel,
    HunyuanImagePipeline,
    HunyuanImageTransformer2DModel,
    Lumina2Pipeline,
    Lumina2Transformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from diffusers_kit import (
    LATENT_CHANNELS,
    SENTENCES,
    TINY_VAE,
    clip_text_model,
    clip_tokenizer,
    randomise_zero_weights,
    saved,
    t5_model,
    t5_tokenizer,
    tiny_vae,
)
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from torch import nn
from transformers import (
    ByT5Tokenizer,
    Gemma2Config,
    Gemma2Model,
    GemmaTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3Model,
    UMT5EncoderModel,
)

TEXT_WIDTH = 16  # hidden size of the tiny decoder-only text encoders
# Qwen's chat format, as Z-Image's tokenizer renders a user turn (thinking enabled: no empty think block)
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# --- tokenizers --------------------------------------------------------------------------------


def qwen_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE tokenizer in Qwen2's format (full byte alphabet, learned merges, chat tokens)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        SENTENCES, trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False)
    )
    model = bpe.get_vocab()
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in _merges(bpe)]
    vocab = {"<|endoftext|>": 0, **{t: i + 1 for i, t in enumerate(sorted(model, key=model.get))}}
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=1024)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def _merges(bpe: Tokenizer) -> list:
    import json

    return json.loads(bpe.to_str())["model"]["merges"]


def llama_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-3's byte-level BPE format (begin/end of text tokens; the pipeline pads with the end token)."""
    qwen = qwen_tokenizer()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=qwen.backend_tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        model_max_length=128,
    )
    return tok


def gemma_tokenizer() -> GemmaTokenizer:
    """Gemma's SentencePiece-style BPE with a character vocabulary (no merges needed to encode text)."""
    chars = sorted(set(string.printable) - set(string.whitespace)) + ["\u2581"]
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate([*specials, *chars])}
    return GemmaTokenizer(vocab=vocab, merges=[], model_max_length=512)


# --- text encoders ------------------------------------------------------------------------------


def qwen3_model(vocab: int, layers: int = 2, causal_lm: bool = False) -> nn.Module:
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=1024,
    )
    return (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config)


def qwen25vl_model(tokens: int) -> Qwen2_5_VLForConditionalGeneration:
    """Qwen2.5-VL with a tiny language model and a tiny vision tower (never given an image)."""
    vocab = tokens + 3  # + the vision start/end/pad ids (no image is ever given)
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 2 * TEXT_WIDTH,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": vocab,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        hidden_size=TEXT_WIDTH,
        vocab_size=vocab,
        vision_start_token_id=vocab - 3,
        vision_end_token_id=vocab - 2,
        vision_token_id=vocab - 1,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def finite(module: nn.Module, seed: int) -> nn.Module:
    """Random values for zero-initialised and torch.empty-allocated tensors (pad tokens)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "pad_token" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    randomise_zero_weights(module, seed)
    return module


def flow_scheduler(**kwargs) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(**kwargs)


# --- pipelines ---------------------------------------------------------------------------------


def build_tiny_chroma(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = t5_tokenizer()
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 4, 8),
        approximator_num_channels=8,
        approximator_hidden_dim=32,
        approximator_layers=1,
    )
    pipe = ChromaPipeline(
        scheduler=flow_scheduler(shift=3.0, use_dynamic_shifting=True),
        vae=tiny_vae(),
        text_encoder=t5_model(len(tok)),
        tokenizer=tok,
        transformer=finite(transformer, seed),
    )
    return saved(pipe, folder)


def build_tiny_zimage(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = qwen_tokenizer()
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=LATENT_CHANNELS,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        qk_norm=True,
        cap_feat_dim=TEXT_WIDTH,
        rope_theta=256.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    pipe = ZImagePipeline(
        scheduler=flow_scheduler(shift=3.0, use_dynamic_shifting=False),
        vae=tiny_vae(),
        text_encoder=qwen3_model(len(tok)),
        tokenizer=tok,
        transformer=finite(transformer, seed),
    )
    return saved(pipe, folder)


def build_tiny_lumina2(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = gemma_tokenizer()
    transformer = Lumina2Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        hidden_size=32,
        num_layers=1,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        axes_dim_rope=(8, 4, 4),
        axes_lens=(300, 64, 64),
        cap_feat_dim=TEXT_WIDTH,
    )
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tok),
            hidden_size=TEXT_WIDTH,
            intermediate_size=2 * TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=512,
            pad_token_id=tok.pad_token_id,
        )
    )
    pipe = Lumina2Pipeline(
        transformer=finite(transformer, seed),
        scheduler=flow_scheduler(shift=6.0),
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tok,
    )
    return saved(pipe, folder)


def build_tiny_qwenimage(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = qwen_tokenizer()
    z_dim = LATENT_CHANNELS
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * z_dim,
        out_channels=z_dim,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_WIDTH,
        axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=z_dim * 6,
        z_dim=z_dim,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 2.0, 0.8, 1.2],
    )
    pipe = QwenImagePipeline(
        scheduler=flow_scheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9),
        vae=vae,
        text_encoder=qwen25vl_model(len(tok)),
        tokenizer=tok,
        transformer=finite(transformer, seed),
    )
    return saved(pipe, folder)


def build_tiny_auraflow(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = t5_tokenizer()
    transformer = AuraFlowTransformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        out_channels=LATENT_CHANNELS,
        pos_embed_max_size=256,
    )
    with torch.no_grad():  # at the default init the modulation gates are ~1e-3: a LoRA barely shows
        for name, p in transformer.named_parameters():
            if ".norm1" in name or "time_step_proj" in name:
                p.mul_(8)
    pipe = AuraFlowPipeline(
        tokenizer=tok,
        text_encoder=t5_model(len(tok), cls=UMT5EncoderModel),
        vae=tiny_vae(scaling_factor=0.13025, shift_factor=0.0),
        transformer=finite(transformer, seed),
        scheduler=flow_scheduler(shift=1.73),
    )
    return saved(pipe, folder)


def build_tiny_flux2_klein(folder: Path, distilled: bool = False, seed: int = 0) -> Path:
    """FLUX.2 [klein]: Qwen3 (28 layers: the pipeline stacks hidden states 9, 18 and 27), 4-axis RoPE."""
    torch.manual_seed(seed)
    tok = qwen_tokenizer()
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * TEXT_WIDTH,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    vae = AutoencoderKLFlux2(**TINY_VAE, mid_block_add_attention=False)
    with torch.no_grad():  # trained statistics, not the identity of a fresh batch norm
        vae.bn.running_mean.normal_(0, 0.3)
        vae.bn.running_var.uniform_(0.5, 2.0)
    pipe = Flux2KleinPipeline(
        scheduler=flow_scheduler(shift=3.0, use_dynamic_shifting=True),
        vae=vae,
        text_encoder=qwen3_model(len(tok), layers=28, causal_lm=True),
        tokenizer=tok,
        transformer=finite(transformer, seed),
        is_distilled=distilled,
    )
    return saved(pipe, folder)


def build_tiny_hidream(folder: Path, seed: int = 0) -> Path:
    """HiDream-I1: two CLIPs (pooled 16 + 16), T5 (32) and a 2-layer Llama (16) whose every layer is used."""
    torch.manual_seed(seed)
    clip_tok, t5_tok, llama_tok = clip_tokenizer(), t5_tokenizer(), llama_tokenizer()
    clip_tok.model_max_length = 128  # HiDream pads CLIP to 128 tokens (its CLIPs have 248 positions)
    transformer = HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=[32, TEXT_WIDTH],
        text_emb_dim=32,
        num_routed_experts=4,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(32, 32),
        llama_layers=(0, 1),
    )

    def clip() -> nn.Module:
        return clip_text_model(clip_tok, hidden=16, projection=16, positions=128)

    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(llama_tok),
            hidden_size=TEXT_WIDTH,
            intermediate_size=2 * TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    )
    pipe = HiDreamImagePipeline(
        scheduler=flow_scheduler(shift=3.0, use_dynamic_shifting=False),
        vae=tiny_vae(),
        text_encoder=clip(),
        tokenizer=clip_tok,
        text_encoder_2=clip(),
        tokenizer_2=clip_tok,
        text_encoder_3=t5_model(len(t5_tok)),
        tokenizer_3=t5_tok,
        text_encoder_4=llama,
        tokenizer_4=llama_tok,
        transformer=finite(transformer, seed),
    )
    return saved(pipe, folder)


def build_tiny_hunyuanimage(folder: Path, seed: int = 0) -> Path:
    """HunyuanImage 2.1: Qwen2.5-VL text (1000 tokens) plus byT5 glyph text for quoted words."""
    torch.manual_seed(seed)
    tok, byt5_tok = qwen_tokenizer(), ByT5Tokenizer()
    byt5 = t5_model(len(byt5_tok), layers=1)
    transformer = HunyuanImageTransformer2DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=(1, 1),
        text_embed_dim=TEXT_WIDTH,
        text_embed_2_dim=32,
        rope_axes_dim=(8, 8),
    )
    vae = AutoencoderKLHunyuanImage(
        in_channels=3,
        out_channels=3,
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(32,) * 4,
        layers_per_block=1,
        spatial_compression_ratio=8,
        sample_size=64,
        scaling_factor=0.75289,
    )
    pipe = HunyuanImagePipeline(
        scheduler=flow_scheduler(shift=4.0),
        vae=vae,
        text_encoder=qwen25vl_model(len(tok)),
        tokenizer=tok,
        text_encoder_2=byt5,
        tokenizer_2=byt5_tok,
        transformer=finite(transformer, seed),
    )
    return saved(pipe, folder)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "chroma": build_tiny_chroma,
    "zimage": build_tiny_zimage,
    "lumina2": build_tiny_lumina2,
    "qwenimage": build_tiny_qwenimage,
    "auraflow": build_tiny_auraflow,
    "flux2": build_tiny_flux2_klein,
    "hidream": build_tiny_hidream,
    "hunyuanimage": build_tiny_hunyuanimage,
}
