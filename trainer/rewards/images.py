"""Image plumbing shared by rewards: checking the [B, 3, H, W] in [0, 1] input, CLIP-style resizing
on the reward's own device, uint8 arrays for the numpy-based scorers, and batching in chunks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def check_images(images: torch.Tensor, prompts: Sequence[str] | None = None) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"rewards take images as a [B, 3, H, W] tensor in [0, 1], got {shape}")
    if prompts is not None and len(prompts) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [0, 1] -> uint8 [B, H, W, 3] on the CPU."""
    return (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def resize_shortest_center_crop(images: torch.Tensor, shortest: int, crop: tuple[int, int]) -> torch.Tensor:
    """CLIP's preprocessing geometry: bicubic resize of the shortest side, then a centre crop."""
    h, w = images.shape[-2:]
    scale = shortest / min(h, w)
    size = (max(crop[0], round(h * scale)), max(crop[1], round(w * scale)))
    if size != (h, w):
        images = F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
    top, left = (size[0] - crop[0]) // 2, (size[1] - crop[1]) // 2
    return images[..., top : top + crop[0], left : left + crop[1]].clamp(0, 1)


def resize_longest_pad(images: torch.Tensor, side: int) -> torch.Tensor:
    """HPS's preprocessing geometry: bicubic resize of the longest side, then centred black padding."""
    h, w = images.shape[-2:]
    scale = side / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    if (nh, nw) != (h, w):
        images = F.interpolate(images, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    ph, pw = side - nh, side - nw
    return F.pad(images.clamp(0, 1), (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s


def in_chunks(
    fn: Callable[[torch.Tensor, list[str]], torch.Tensor],
    images: torch.Tensor,
    prompts: list[str],
    batch_size: int,
) -> torch.Tensor:
    """fn over slices of at most batch_size images, concatenated as float32 on the CPU."""
    if batch_size < 1:
        raise ValueError(f"reward batch_size must be >= 1, got {batch_size}")
    out = [
        fn(images[i : i + batch_size], prompts[i : i + batch_size]).float().cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(out)
