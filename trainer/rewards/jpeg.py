"""JPEG (in)compressibility (DDPO's rewards): the encoded size of each image at quality 95."""

from __future__ import annotations

import io
from functools import partial

import numpy as np
import torch
from PIL import Image

from .base import register
from .images import check_images, to_uint8_hwc
from .options import no_options


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


for _id, _sign, _description in (
    ("jpeg_compressibility", -1.0, "-(JPEG size in kB at quality 95): pays for flat, simple images"),
    ("jpeg_incompressibility", +1.0, "+(JPEG size in kB at quality 95): pays for busy, detailed images"),
):
    register(_id, description=_description, cost="PIL JPEG encode, CPU only: 11 CPU-ms per 512 px image")(
        no_options(partial(JpegCompressibility, _sign))
    )
