"""TinyFlow: a small text-conditioned pixel-space DiT trained with flow matching.

It exists so that everything (training, NormGuard, the demo, the paper's claims) runs on a laptop
CPU with no download. The layout mirrors the big models on purpose: patch tokens, joint attention
over text and image tokens with to_q/to_k/to_v/to_out projections (the LoRA targets), adaLN.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .scenes import VOCABULARY

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class TinyFlowConfig:
    """Defaults are the shipped model: about 1.7M parameters, fast enough on a laptop CPU for RL."""

    image_size: int = 32
    channels: int = 3
    patch_size: int = 4
    hidden: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 3.0
    max_words: int = 12
    vocab: list[str] = field(default_factory=lambda: list(VOCABULARY))  # ids: 0 pad, 1 unknown, words from 2
    shift: float = 1.0  # sampling-schedule time shift

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + 2


class WordTokenizer:
    """Lower-cased words -> ids of a fixed vocabulary (0 pads, 1 is any unknown word)."""

    def __init__(self, vocab: list[str], max_words: int):
        self.ids = {w: i + 2 for i, w in enumerate(vocab)}
        self.max_words = max_words

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), self.max_words, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = re.findall(r"[a-z0-9]+", prompt.lower())[: self.max_words]
            out[row, : len(words)] = torch.tensor([self.ids.get(w, 1) for w in words], dtype=torch.long)
        return out


def timestep_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half
    )
    args = sigma.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(hidden, hidden)
        self.to_k = nn.Linear(hidden, hidden)
        self.to_v = nn.Linear(hidden, hidden)
        self.to_out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (
            f(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
            for f in (self.to_q, self.to_k, self.to_v)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False)
        inner = int(hidden * mlp_ratio)
        self.ff = nn.Sequential(
            nn.Linear(hidden, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden)
        )
        self.modulation = nn.Linear(hidden, 6 * hidden)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        s1, b1, g1, s2, b2, g2 = self.modulation(F.silu(c))[:, None].chunk(6, dim=-1)
        x = x + g1 * self.attn(self.norm1(x) * (1 + s1) + b1, mask)
        return x + g2 * self.ff(self.norm2(x) * (1 + s2) + b2)


class TinyFlowModel(nn.Module):
    """v = model(x, sigma, tokens): x [B, C, H, W] in about [-1, 1], sigma [B], tokens [B, L]."""

    def __init__(self, config: TinyFlowConfig):
        super().__init__()
        self.config = c = config
        n_patches = (c.image_size // c.patch_size) ** 2
        patch_dim = c.channels * c.patch_size**2
        self.patch_in = nn.Linear(patch_dim, c.hidden)
        self.pos = nn.Parameter(torch.randn(1, n_patches, c.hidden) * 0.02)
        self.word_emb = nn.Embedding(c.vocab_size, c.hidden)
        self.word_pos = nn.Parameter(torch.randn(1, c.max_words, c.hidden) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        self.blocks = nn.ModuleList(Block(c.hidden, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(c.hidden, elementwise_affine=False)
        self.out_modulation = nn.Linear(c.hidden, 2 * c.hidden)
        self.patch_out = nn.Linear(c.hidden, patch_dim)
        for block in self.blocks:  # adaLN-zero: every block starts as the identity
            nn.init.zeros_(block.modulation.weight)
            nn.init.zeros_(block.modulation.bias)
        nn.init.zeros_(self.patch_out.weight)
        nn.init.zeros_(self.patch_out.bias)

    def tokenizer(self) -> WordTokenizer:
        return WordTokenizer(self.config.vocab, self.config.max_words)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        c, p = self.config, self.config.patch_size
        b, ch, h, w = x.shape
        patches = x.unfold(2, p, p).unfold(3, p, p)  # B C h w p p
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, ch * p * p)
        img = self.patch_in(patches) + self.pos
        words = self.word_emb(tokens) + self.word_pos[:, : tokens.shape[1]]
        keep = tokens > 0
        pooled = (words * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)
        cvec = self.time_mlp(timestep_embedding(sigma, c.hidden).to(x.dtype)) + pooled
        seq = torch.cat([words, img], dim=1)
        mask = torch.cat([keep, torch.ones(b, img.shape[1], dtype=torch.bool, device=x.device)], dim=1)
        mask = mask[:, None, None, :]
        for block in self.blocks:
            seq = block(seq, cvec, mask)
        shift, scale = self.out_modulation(F.silu(cvec))[:, None].chunk(2, dim=-1)
        out = self.patch_out(self.norm_out(seq[:, tokens.shape[1] :]) * (1 + scale) + shift)
        gh, gw = h // p, w // p
        out = out.view(b, gh, gw, ch, p, p).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, ch, h, w)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(
            json.dumps({"_class_name": "TinyFlowModel", **asdict(self.config)}, indent=1)
        )
        save_file(
            {k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_NAME)
        )

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TinyFlowModel:
        folder = Path(folder)
        raw = json.loads((folder / CONFIG_NAME).read_text())
        raw.pop("_class_name", None)
        model = cls(TinyFlowConfig(**raw))
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return model
