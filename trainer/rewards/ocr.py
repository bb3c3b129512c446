"""OCR reward (Flow-GRPO's text-rendering task): does the image show the text the prompt asks for?

The text to find is metadata["ocr_text"] or else the first quoted span of the prompt. The reader is
the `rapidocr` package with the PP-OCR ONNX models its wheel bundles, loaded by explicit path so a
missing model fails instead of downloading."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import RewardSpec, register
from .images import check_images, to_uint8_hwc
from .options import check_options

_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”')


def quoted_text(prompt: str) -> str | None:
    """The first span in straight or curly double quotes, or None."""
    m = _QUOTED.search(prompt)
    return None if m is None else (m.group(1) or m.group(2))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ocr_score(target: str, read: str) -> float:
    """1 - normalised edit distance, as Flow-GRPO: spaces dropped and case folded; 1 when the target
    appears inside what was read; the distance is capped at the target's length, so 0 is the floor."""
    t, r = target.replace(" ", "").lower(), read.replace(" ", "").lower()
    if not t:
        raise ValueError("the OCR target text is empty")
    if t in r:
        return 1.0
    return 1.0 - min(edit_distance(r, t), len(t)) / len(t)


def _bundled_models() -> dict[str, Path]:
    import rapidocr

    folder = Path(rapidocr.__file__).parent / "models"
    found = {}
    for task in ("det", "rec", "cls"):
        files = sorted(folder.glob(f"*{task}*.onnx"))
        if len(files) != 1:
            raise RuntimeError(
                f"OCR reward: expected one bundled {task} model (*{task}*.onnx) in {folder}, found "
                f"{[f.name for f in files]}; this rapidocr version does not bundle its models "
                "-- install rapidocr>=3.10"
            )
        found[task] = files[0]
    return found


class OcrReward:
    """Scores each image by how well the text read from it matches the text asked for."""

    def __init__(self, min_confidence: float = 0.0):
        try:
            from rapidocr import RapidOCR
        except ImportError as err:
            raise ImportError(
                "the 'ocr' reward needs rapidocr and onnxruntime: pip install 'comfyui-normguard[ocr]'"
            ) from err
        models = _bundled_models()
        self.engine = RapidOCR(
            params={
                "Global.log_level": "error",
                "Det.model_path": str(models["det"]),
                "Rec.model_path": str(models["rec"]),
                "Cls.model_path": str(models["cls"]),
            }
        )
        self.min_confidence = min_confidence

    def read(self, image: np.ndarray) -> str:
        """All text found in one uint8 HWC RGB image, joined in reading order."""
        out = self.engine(np.ascontiguousarray(image[..., ::-1]))  # rapidocr takes arrays as BGR
        if not out.txts:
            return ""
        return "".join(t for t, s in zip(out.txts, out.scores, strict=True) if s >= self.min_confidence)

    @torch.no_grad()
    def __call__(self, images, prompts, metadata: list[dict[str, Any]] | None = None) -> torch.Tensor:
        check_images(images, prompts)
        if metadata is not None and len(metadata) != len(prompts):
            raise ValueError(f"OCR reward: got {len(prompts)} prompts but {len(metadata)} metadata entries")
        targets = []
        for i, prompt in enumerate(prompts):
            text = (metadata[i].get("ocr_text") if metadata else None) or quoted_text(prompt)
            if not text:
                raise ValueError(
                    f"OCR reward: prompt {i} ({prompt!r}) has no text in double quotes "
                    "and its metadata has no 'ocr_text'"
                )
            targets.append(text)
        arrays = to_uint8_hwc(images)
        return torch.tensor(
            [ocr_score(t, self.read(a)) for t, a in zip(targets, arrays, strict=True)], dtype=torch.float32
        )


@register(
    "ocr",
    description="text rendering: 1 - normalised edit distance of the quoted prompt text to what OCR reads",
    cost="PP-OCR det+rec ONNX, CPU only: 0.34 CPU-s per 512 px image",
    extra="ocr",
)
def _ocr(spec: RewardSpec, device: torch.device) -> OcrReward:
    opts = check_options(spec, {"min_confidence"})
    return OcrReward(float(opts.get("min_confidence", 0.0)))
