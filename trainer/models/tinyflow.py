"""TinyFlow: a small text-conditioned pixel-space flow model that ships with the package.

It exists so that everything (training, NormGuard, the demo, the paper's claims) runs on a laptop
CPU with no download. Its core mirrors the big DiT models on purpose: joint attention over word and
image tokens with to_q/to_k/to_v/to_out projections (the LoRA targets) and adaLN-zero modulation.
Around that core a small conv encoder/decoder (a U-Net with one level per conv width) maps 32x32
pixels to an 8x8 token grid and back: convolutions learn smooth local structure in a few thousand
CPU steps, where a plain patch DiT of this size was still drawing disconnected patches.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
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
    """Defaults are the shipped model: about 1.6M parameters, fast enough on a laptop CPU for RL."""

    image_size: int = 32
    channels: int = 3
    conv_widths: list[int] = field(default_factory=lambda: [32, 64])  # one U-Net level each, halving
    hidden: int = 128  # token width; tokens on an (image_size / 2 ** len(conv_widths))^2 grid
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 3.0
    max_words: int = 12
    vocab: list[str] = field(default_factory=lambda: list(VOCABULARY))  # ids: 0 pad, 1 unknown, words from 2
    shift: float = 2.0  # sampling-schedule time shift (2: best Fréchet distance at 10 and 4 steps)

    def __post_init__(self) -> None:
        if not self.conv_widths or self.image_size % 2 ** len(self.conv_widths):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2 ** len(conv_widths) "
                f"(conv_widths={self.conv_widths})"
            )
        if any(w % 8 for w in self.conv_widths):
            raise ValueError(f"conv_widths {self.conv_widths} must be multiples of 8 (GroupNorm of 8 groups)")
        if self.hidden % self.heads or self.hidden % 4:
            raise ValueError(f"hidden {self.hidden} must be a multiple of 4 and of heads ({self.heads})")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + 2

    @property
    def grid(self) -> int:
        """Side of the token grid."""
        return self.image_size // 2 ** len(self.conv_widths)


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


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes [grid * grid, dim] (row-major patches): attention can
    tell where a patch is from the first step, instead of learning positions from noise."""
    quarter = dim // 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij"
    )
    ay, ax = ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs
    return torch.cat([torch.sin(ay), torch.cos(ay), torch.sin(ax), torch.cos(ax)], dim=1)


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


class ResBlock(nn.Module):
    """Pre-norm conv residual block with FiLM conditioning on time + pooled prompt; starts as the identity."""

    def __init__(self, channels: int, cond: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond, 2 * channels)
        self.norm2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(c))[:, :, None, None].chunk(2, dim=1)
        return x + self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))


class TinyFlowModel(nn.Module):
    """v = model(x, sigma, tokens): x [B, C, H, W] in about [-1, 1], sigma [B], tokens [B, L]."""

    def __init__(self, config: TinyFlowConfig):
        super().__init__()
        self.config = c = config
        widths, deeper = c.conv_widths, [*c.conv_widths[1:], c.hidden]
        self.conv_in = nn.Conv2d(c.channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(ResBlock(w, c.hidden) for w in widths)
        self.downs = nn.ModuleList(
            nn.Conv2d(w, d, 3, stride=2, padding=1) for w, d in zip(widths, deeper, strict=True)
        )
        self.pos = nn.Parameter(sincos_2d(c.grid, c.hidden)[None])  # learned from here
        self.word_emb = nn.Embedding(c.vocab_size, c.hidden)
        self.word_pos = nn.Parameter(torch.randn(1, c.max_words, c.hidden) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        self.blocks = nn.ModuleList(Block(c.hidden, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.token_norm = nn.LayerNorm(c.hidden, elementwise_affine=False)
        self.out_modulation = nn.Linear(c.hidden, 2 * c.hidden)
        self.ups = nn.ModuleList(nn.Conv2d(d, w, 3, padding=1) for w, d in zip(widths, deeper, strict=True))
        self.up_blocks = nn.ModuleList(ResBlock(w, c.hidden) for w in widths)
        self.norm_out = nn.GroupNorm(8, widths[0])
        self.conv_out = nn.Conv2d(widths[0], c.channels, 3, padding=1)
        for module in [*(b.modulation for b in self.blocks), self.out_modulation, self.conv_out]:
            nn.init.zeros_(module.weight)  # adaLN-zero and a zero output: training starts from v = 0
            nn.init.zeros_(module.bias)

    def tokenizer(self) -> WordTokenizer:
        return WordTokenizer(self.config.vocab, self.config.max_words)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        c = self.config
        words = self.word_emb(tokens) + self.word_pos[:, : tokens.shape[1]]
        keep = tokens > 0
        pooled = (words * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)
        cvec = self.time_mlp(timestep_embedding(sigma, c.hidden).to(x.dtype)) + pooled

        h, skips = self.conv_in(x), []
        for block, down in zip(self.down_blocks, self.downs, strict=True):
            h = block(h, cvec)
            skips.append(h)
            h = down(h)
        b, d, gh, gw = h.shape
        img = h.flatten(2).transpose(1, 2) + self.pos
        seq = torch.cat([words, img], dim=1)
        mask = torch.cat([keep, torch.ones(b, img.shape[1], dtype=torch.bool, device=x.device)], dim=1)
        for block in self.blocks:
            seq = block(seq, cvec, mask[:, None, None, :])
        shift, scale = self.out_modulation(F.silu(cvec))[:, None].chunk(2, dim=-1)
        img = self.token_norm(seq[:, tokens.shape[1] :]) * (1 + scale) + shift
        h = img.transpose(1, 2).reshape(b, d, gh, gw)
        for block, up, skip in zip(
            reversed(self.up_blocks), reversed(self.ups), reversed(skips), strict=True
        ):
            h = block(up(F.interpolate(h, scale_factor=2, mode="nearest")) + skip, cvec)
        return self.conv_out(F.silu(self.norm_out(h)))

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
        unknown = set(raw) - {f.name for f in fields(TinyFlowConfig)}
        if unknown:
            raise ValueError(
                f"{folder / CONFIG_NAME} has fields {sorted(unknown)} this TinyFlow version does not know"
            )
        model = cls(TinyFlowConfig(**raw))
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return model
