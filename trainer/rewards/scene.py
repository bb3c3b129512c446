"""Offline toy rewards for the shipped TinyFlow model, computed from image statistics alone.

They exist to show and measure what NormGuard does without any download (`normguard demo`,
benchmarks/paper_claims.py), and they come in two kinds on purpose (PAPER.md, "Measured on a toy"):

- `saturation` and `contrast` pay for magnitude: pushing pixels further from grey or from the
  mean raises them, so a policy can earn reward by inflating its velocity -- the drift NormGuard
  is there to stop, and the case where the penalty must cost some reward.
- `position` and `centring` pay for where the object is, not for how strong it is: the centroid
  of what stands out from the background is invariant to scaling that difference, so inflating the
  velocity earns nothing -- the regime the paper describes for good reward proxies. `position`
  follows the prompt (the base model already places objects well); `centring` pays for the image
  centre whatever the prompt says, so on prompts that name no position it leaves room to learn.

None of them uses the judge network (trainer/models/judge.py): it is the independent measure of
quality that these rewards must not see. The judge is registered here only as a monitor
(`scene_judge`): scored at evaluations to watch quality, never meant to be trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.scenes import POSITION_DIRECTION, parse_prompt
from .base import register
from .images import check_images
from .options import no_options

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
# Where the procedural scenes put an object of each size, as a fraction of the image side from the
# centre (trainer/models/scenes.py: 7 px for large, 9 px for small objects in a 32 px image).
POSITION_OFFSET = {"large": 7 / 32, "small": 9 / 32, None: 8 / 32}
OBJECT_FRACTION = 0.5  # pixels closer to the background than this share of the largest distance weigh 0


def chroma(images: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of max(R, G, B) - min(R, G, B): 0 for grey images, 1 for pure primaries."""
    x = images.detach().float().clamp(0, 1)
    return (x.amax(dim=1) - x.amin(dim=1)).flatten(1).mean(dim=1)


def luma_contrast(images: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the luma over each image's pixels (RMS contrast)."""
    x = images.detach().float().clamp(0, 1)
    w = torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1).flatten(1).std(dim=1)


def object_centroid(images: torch.Tensor) -> torch.Tensor:
    """Centroid [B, 2] (x, y as fractions of the width and height, 0.5 = centre) of the pixels that
    stand out from the background, weighted by how far they stand out.

    The background colour is the median of the one-pixel border; a pixel's weight is how far its
    colour distance from it exceeds OBJECT_FRACTION of the image's largest distance (so the
    background's gradient, texture and the object's shadow weigh nothing). Scaling every difference
    from the background by a constant scales every weight alike and leaves the centroid where it
    was: this measure carries no reward for magnitude. An image with nothing standing out has its
    centroid at the centre."""
    x = images.detach().float().clamp(0, 1)
    b, _, h, w = x.shape
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    background = border.median(dim=-1).values.view(b, 3, 1, 1)
    dist = (x - background).norm(dim=1)  # [B, H, W]
    weight = (dist - OBJECT_FRACTION * dist.flatten(1).amax(dim=1).view(b, 1, 1)).clamp_min(0)
    total = weight.flatten(1).sum(dim=1)
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w
    cx = (weight.sum(dim=1) * xs).sum(dim=1) / total.clamp_min(1e-8)
    cy = (weight.sum(dim=2) * ys).sum(dim=1) / total.clamp_min(1e-8)
    centroid = torch.stack([cx, cy], dim=1)
    return torch.where((total > 1e-8)[:, None], centroid, torch.full_like(centroid, 0.5))


def target_position(prompt: str) -> tuple[float, float]:
    """Where the scenes put the object a prompt asks for (fractions of width, height); the centre
    when the prompt names no position."""
    attrs = parse_prompt(prompt)
    dx, dy = POSITION_DIRECTION[attrs.get("position", "centre")]
    offset = POSITION_OFFSET[attrs.get("size")]
    return 0.5 + dx * offset, 0.5 + dy * offset


class Saturation:
    """Mean chroma: pays for vivid colour, the more the better, up to clipping."""

    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        return chroma(images).cpu()


class Contrast:
    """RMS luma contrast: pays for images whose brightness spreads further from its mean."""

    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        return luma_contrast(images).cpu()


class Position:
    """-(distance of the object's centroid from where the prompt asks for it), in image sides:
    0 is perfect. A prompt-following reward with no magnitude in it."""

    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        target = torch.tensor([target_position(p) for p in prompts], dtype=torch.float32)
        return -(object_centroid(images).cpu() - target).norm(dim=1)


class JudgeAccuracy:
    """The shipped judge's attribute accuracy: the fraction of what each prompt names (colour,
    shape, size, position, light, tone) that the judge sees in its image (1 when it names nothing).
    Images of another size are area-resized to the judge's 32 px."""

    def __init__(self):
        from ..models.judge import Judge

        self.judge = Judge.load()

    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        size = self.judge.net.config.image_size
        x = images.detach().float().cpu()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="area")
        return self.judge.attribute_accuracy(x, prompts).nan_to_num(1.0)


class Centring:
    """-(distance of the object's centroid from the image centre), in image sides: 0 is perfect."""

    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        return -(object_centroid(images).cpu() - 0.5).norm(dim=1)


_COST = "a few tensor ops: 0.02 CPU-ms per 32 px image, 0.7 at 512 px"
_COST_CENTROID = "a border median and a weighted centroid: 0.1 CPU-ms per 32 px image, 24 at 512 px"
_COST_JUDGE = "a 0.3M-parameter CNN: 0.5 CPU-ms per 32 px image (other sizes are resized to 32 px)"

# id: (reward, description, cost); none takes options
REWARDS = {
    "saturation": (
        Saturation,
        "mean chroma max(RGB)-min(RGB): pays for vivid colour (toy; invites norm inflation)",
        _COST,
    ),
    "contrast": (
        Contrast,
        "RMS luma contrast: pays for spread-out brightness (toy; invites norm inflation)",
        _COST,
    ),
    "position": (
        Position,
        "-(distance of the object from where the prompt puts it, in image sides): "
        "magnitude-free toy reward for the builtin model's scenes",
        _COST_CENTROID,
    ),
    "centring": (
        Centring,
        "-(distance of the object from the image centre, in image sides): magnitude-free "
        "toy reward (use prompts that name no position)",
        _COST_CENTROID,
    ),
    "scene_judge": (
        JudgeAccuracy,
        "the shipped judge's attribute accuracy on the builtin model's scene prompts "
        "(a quality monitor for --monitor-reward; do not train on it)",
        _COST_JUDGE,
    ),
}
for _id, (_reward, _description, _cost) in REWARDS.items():
    register(_id, description=_description, cost=_cost)(no_options(_reward))
