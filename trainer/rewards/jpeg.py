"""JPEG (in)compressibility (DDPO's rewards): the encoded size of each image at quality 95."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from .base import RewardSpec, register


def jpeg_kilobytes(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    arr = (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(a)).save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1024.0)
    return torch.tensor(sizes, dtype=torch.float32)


class JpegCompressibility:
    """-(JPEG size in kB): pays for simple, flat images."""

    def __init__(self, sign: float = -1.0):
        self.sign = sign

    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        return self.sign * jpeg_kilobytes(images)


@register("jpeg_compressibility")
def _compressibility(spec: RewardSpec, device: torch.device) -> JpegCompressibility:
    return JpegCompressibility(-1.0)


@register("jpeg_incompressibility")
def _incompressibility(spec: RewardSpec, device: torch.device) -> JpegCompressibility:
    return JpegCompressibility(+1.0)
