"""BRISQUE, a no-reference image-quality score, for monitoring (not a reward to train on: it knows
nothing of the prompt and rewards natural-image statistics). Uses the `brisque` package, whose
wheel bundles its LIVE-trained SVM. The reward is -BRISQUE, so higher is better (BRISQUE itself
is about 0 for pristine images and grows with distortion)."""

from __future__ import annotations

import numpy as np
import torch

from .base import register
from .images import check_images, to_uint8_hwc
from .options import no_options


class BrisqueReward:
    def __init__(self):
        try:
            import cv2
            import skimage.color
            from brisque import BRISQUE
        except ImportError as err:
            raise ImportError(
                "the 'brisque' reward needs brisque and OpenCV: pip install 'comfyui-normguard[iqa]'"
            ) from err
        self._model, self._cv2, self._rgb2gray = BRISQUE(url=False), cv2, skimage.color.rgb2gray

    def brisque(self, image: np.ndarray) -> float:
        """BRISQUE of one uint8 HWC RGB image: features at full and half scale, then the bundled SVM.
        (brisque 0.2.0's own score() breaks on numpy 2, where its features are 1-element arrays.)"""
        gray = self._rgb2gray(image)
        half = self._cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=self._cv2.INTER_CUBIC)
        feats = np.concatenate(
            [self._model.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6) for g in (gray, half)]
        )
        flat = np.array([np.asarray(f, dtype=np.float64).item() for f in feats])
        return float(self._model.calculate_image_quality_score(flat))

    @torch.no_grad()
    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        return torch.tensor([-self.brisque(a) for a in to_uint8_hwc(images)], dtype=torch.float32)


register(
    "brisque",
    description="-BRISQUE no-reference image quality (monitoring; ignores the prompt)",
    cost="numpy/scipy features + SVM, CPU only: 0.09 CPU-s per 512 px image",
    extra="iqa",
)(no_options(BrisqueReward))
