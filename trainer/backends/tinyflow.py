"""Backend for the shipped TinyFlow pixel-space model (no VAE: latents are pixels in [-1, 1])."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..models.tinyflow import CONFIG_NAME, TinyFlowModel
from .base import Cond
from .peft_lora import PeftLoraBackend

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "models" / "assets" / "tinyflow"
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out")


def is_tinyflow_folder(path: str | Path) -> bool:
    cfg = Path(path) / CONFIG_NAME
    return cfg.is_file() and '"TinyFlowModel"' in cfg.read_text()[:200]


class TinyFlowBackend(PeftLoraBackend):
    name = "tinyflow"
    default_lora_targets = DEFAULT_TARGETS

    def __init__(self, model: TinyFlowModel, device: str | torch.device = "cpu", source: str = "tinyflow"):
        super().__init__()
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.tokenize = model.tokenizer()
        self.source = source

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, device: str | torch.device = "cpu"
    ) -> TinyFlowBackend:
        folder = Path(path) if path else BUILTIN_DIR
        if not (folder / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"no TinyFlow model at {folder} (expected {CONFIG_NAME} and model.safetensors)"
            )
        return cls(TinyFlowModel.from_pretrained(folder), device=device, source=str(folder))

    @property
    def module(self) -> nn.Module:
        return self.model

    def encode_prompts(self, prompts: list[str]) -> Cond:
        return {"tokens": self.tokenize(prompts).to(self.device)}

    def default_size(self) -> tuple[int, int]:
        return (self.model.config.image_size, self.model.config.image_size)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        size = self.model.config.image_size
        if (height, width) != (size, size):
            raise ValueError(
                f"the TinyFlow model makes {size}x{size} images; got height={height}, width={width}"
            )
        return (self.model.config.channels, size, size)

    def schedule(self, steps: int, height: int, width: int) -> torch.Tensor:
        t = torch.linspace(1.0, 0.0, steps + 1)
        s = self.model.config.shift
        return s * t / (1 + (s - 1) * t)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents.float() + 1) / 2).clamp(0, 1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> latents (the inverse of decode)."""
        return images.to(self.device, self.dtype) * 2 - 1

    def _forward(self, module: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        return module(x, sigma.to(x.device), cond["tokens"])

    def lora_metadata(self) -> dict[str, str]:
        c = self.model.config
        return {
            "modelspec.architecture": "normguard-tinyflow/lora",
            "modelspec.resolution": f"{c.image_size}x{c.image_size}",
        }
