"""Fits NIQE's pristine model (trainer/models/assets/niqe/pristine.json) on the photographs bundled
with scikit-image (public domain or CC0: astronaut, camera, chelsea, coffee, rocket, brick, grass,
gravel), as the paper does on its pristine set: 96 px patches at two scales, keeping each image's
sharpest patches (local deviation above 0.75 of the image's sharpest), then the features' mean and
covariance. Needs scikit-image (the [iqa] extra); prints NIQE of the same photos clean and degraded.

    python scripts/fit_niqe.py
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import torch
from PIL import Image, ImageFilter

from normguard.trainer.rewards.niqe import ASSET, PATCH, luminance, niqe, patch_features, pristine_model

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "brick", "grass", "gravel")
SHARP = 0.75


def photo(name: str) -> torch.Tensor:
    import skimage.data

    a = getattr(skimage.data, name)()
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return torch.from_numpy(a[..., :3].copy()).permute(2, 0, 1).float() / 255


def to_pil(t: torch.Tensor) -> Image.Image:
    return Image.fromarray((t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def from_pil(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def degraded(t: torch.Tensor) -> dict[str, torch.Tensor]:
    jpeg = io.BytesIO()
    to_pil(t).save(jpeg, "JPEG", quality=10)
    hsv = to_pil(t).convert("HSV")
    h, s, v = hsv.split()
    saturated = Image.merge("HSV", (h, s.point(lambda x: min(255, int(x * 2))), v)).convert("RGB")
    return {
        "blur 2px": from_pil(to_pil(t).filter(ImageFilter.GaussianBlur(2))),
        "noise 0.05": (t + 0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0))).clamp(
            0, 1
        ),
        "jpeg q10": from_pil(Image.open(jpeg)),
        "oversharpen": from_pil(
            to_pil(t).filter(ImageFilter.UnsharpMask(radius=2, percent=300, threshold=0))
        ),
        "saturation x2": from_pil(saturated),
    }


def main() -> None:
    rows = []
    for name in PHOTOS:
        feats, sharp = patch_features(luminance(photo(name)), PATCH)
        keep = (sharp > SHARP * sharp.max()) & torch.isfinite(feats).all(1)
        rows.append(feats[keep])
    feats = torch.cat(rows)
    model = {
        "source": "scripts/fit_niqe.py on scikit-image's " + ", ".join(PHOTOS),
        "patches": len(feats),
        "mean": feats.mean(0).tolist(),
        "cov": torch.cov(feats.T).tolist(),
    }
    ASSET.parent.mkdir(parents=True, exist_ok=True)
    ASSET.write_text(json.dumps(model) + "\n", encoding="utf-8")
    pristine_model.cache_clear()
    print(f"{len(feats)} patches -> {ASSET}")
    print(f"{'photo':12}{'clean':>7}" + "".join(f"{k:>15}" for k in degraded(photo(PHOTOS[0]))))
    for name in PHOTOS:
        t = photo(name)
        cells = "".join(f"{niqe(v):15.2f}" for v in degraded(t).values())
        print(f"{name:12}{niqe(t):7.2f}{cells}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
