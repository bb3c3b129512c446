"""JPEG (in)compressibility (DDPO's rewards): the encoded size of each image at quality 95."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from .base import RewardSpec, register
from .images import check_images, to_uint8_hwc
from .options import check_options


def jpeg_kilobytes(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    sizes = []
    for a in to_uint8_hwc(images):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(a)).save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1024.0)
    return torch.tensor(sizes, dtype=torch.float32)


class JpegCompressibility:
    """-(JPEG size in kB): pays for simple, flat images."""

    def __init__(self, sign: float = -1.0):
        self.sign = sign

    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        return self.sign * jpeg_kilobytes(images)


@register(
    "jpeg_compressibility",
    description="-(JPEG size in kB at quality 95): pays for flat, simple images",
    cost="PIL JPEG encode, CPU only: 11 CPU-ms per 512 px image",
)
def _compressibility(spec: RewardSpec, device: torch.device) -> JpegCompressibility:
    check_options(spec, set())
    return JpegCompressibility(-1.0)


@register(
    "jpeg_incompressibility",
    description="+(JPEG size in kB at quality 95): pays for busy, detailed images",
    cost="PIL JPEG encode, CPU only: 11 CPU-ms per 512 px image",
)
def _incompressibility(spec: RewardSpec, device: torch.device) -> JpegCompressibility:
    check_options(spec, set())
    return JpegCompressibility(+1.0)
