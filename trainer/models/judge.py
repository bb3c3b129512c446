"""A small CNN judge for TinyFlow images, trained on the same procedural scenes.

It answers the two questions the paper's claims need on the shipped model, with no download:
(a) does an image still show what its prompt asked for (attribute accuracy), and (b) how far has a
set of images drifted from the data (Fréchet distance of the judge's penultimate features to the
reference statistics of real scenes, the FID recipe on a network that knows this data).

Besides the attributes, the judge regresses the continuous parameters each scene was rendered with
(saturation, background light, gradient, light direction, ...) and the amount of a random blur or
sharpening applied in training. Without that its features would only need to tell classes apart
and would be blind to over-saturation, odd lighting or over-sharpening.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .scenes import ATTRIBUTES, IMAGE_SIZE, STYLE_PARAMS, Attributes, parse_prompt

BUILTIN_DIR = Path(__file__).resolve().parent / "assets" / "judge"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATS_NAME = "reference_stats.safetensors"
STYLE_TARGETS = (*STYLE_PARAMS, "sharpening")  # what the style head predicts


def sharpen(images: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """images + amount * (images - 3x3 box blur), clamped to [0, 1]; amount [B] per image:
    -1 is the blur itself, 0 the image, > 0 an unsharp mask (halos, crisper edges)."""
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (images + amount.view(-1, 1, 1, 1) * (images - blurred)).clamp(0, 1)


@dataclass
class JudgeConfig:
    widths: tuple[int, ...] = (32, 64, 96)
    features: int = 64
    image_size: int = IMAGE_SIZE


class JudgeNet(nn.Module):
    """Conv stages that each halve the resolution. The feature layer sees the last stage flattened
    (where things are) and every stage's full-resolution activations averaged over the image
    (texture statistics: edge crispness, noise, colour energy), then one linear head per scene
    attribute and one for the standardised style targets."""

    def __init__(self, config: JudgeConfig):
        super().__init__()
        self.config = config
        self.stages = nn.ModuleList()
        channels = 3
        for width in config.widths:
            self.stages.append(
                nn.ModuleDict(
                    {
                        "conv": nn.Conv2d(channels, width, 3, padding=1),
                        "down": nn.Conv2d(width, width, 3, stride=2, padding=1),
                    }
                )
            )
            channels = width
        side = config.image_size // 2 ** len(config.widths)
        inputs = channels * side * side + sum(config.widths)
        self.feature = nn.Sequential(nn.Linear(inputs, config.features), nn.SiLU())
        self.heads = nn.ModuleDict(
            {name: nn.Linear(config.features, len(v)) for name, v in ATTRIBUTES.items()}
        )
        self.style = nn.Linear(config.features, len(STYLE_TARGETS))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        h, pooled = images * 2 - 1, []
        for stage in self.stages:
            h = F.silu(stage["conv"](h))
            pooled.append(h.mean(dim=(2, 3)))
            h = F.silu(stage["down"](h))
        return self.feature(torch.cat([h.flatten(1), *pooled], dim=1))

    def forward(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Images [B, 3, H, W] in [0, 1] -> (logits per attribute, style predictions [B, S])."""
        feats = self.features(images)
        return {name: head(feats) for name, head in self.heads.items()}, self.style(feats)


def frechet_from_stats(
    mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor
) -> float:
    """||mu_a - mu_b||^2 + tr(A + B - 2 (A^1/2 B A^1/2)^1/2), the Fréchet distance of two Gaussians.

    Uses symmetric eigendecompositions in float64 (tr sqrt(A B) equals tr sqrt(A^1/2 B A^1/2), which
    is symmetric PSD), so no scipy and no complex round-off."""
    mu_a, mu_b, cov_a, cov_b = (t.double() for t in (mu_a, mu_b, cov_a, cov_b))
    evals, evecs = torch.linalg.eigh(cov_a)
    sqrt_a = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def feature_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and covariance [D, D] (float64) of feats [N, D]."""
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"feature statistics need a [N >= 2, D] tensor, got shape {tuple(feats.shape)}")
    feats = feats.double()
    return feats.mean(0), torch.cov(feats.T)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between two feature sets [N, D] (Gaussian fits of each)."""
    return frechet_from_stats(*feature_stats(feats_a), *feature_stats(feats_b))


class Judge:
    """The trained JudgeNet plus statistics of its features on real scenes.

    features() are standardised per dimension against real scenes (feature_mean, feature_std) so
    that every dimension counts alike in the Fréchet distance; ref_mu, ref_cov are the Gaussian fit
    of real scenes' standardised features."""

    def __init__(
        self,
        net: JudgeNet,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        ref_mu: torch.Tensor,
        ref_cov: torch.Tensor,
    ):
        self.net = net.eval()
        self.feature_mean, self.feature_std = feature_mean.float(), feature_std.float()
        self.ref_mu, self.ref_cov = ref_mu.double(), ref_cov.double()

    @classmethod
    def load(cls, folder: str | Path | None = None) -> Judge:
        """The shipped judge (or one saved by save() in folder)."""
        folder = Path(folder) if folder else BUILTIN_DIR
        if not (folder / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"no judge at {folder} (expected {CONFIG_NAME}, {WEIGHTS_NAME}, {STATS_NAME})"
            )
        raw = json.loads((folder / CONFIG_NAME).read_text())
        raw.pop("_class_name", None)
        net = JudgeNet(JudgeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}))
        net.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        stats = load_file(str(folder / STATS_NAME))
        return cls(net, stats["feature_mean"], stats["feature_std"], stats["mu"], stats["cov"])

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(
            json.dumps({"_class_name": "JudgeNet", **asdict(self.net.config)}, indent=1)
        )
        save_file(
            {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}, str(folder / WEIGHTS_NAME)
        )
        stats = {
            "feature_mean": self.feature_mean,
            "feature_std": self.feature_std,
            "mu": self.ref_mu,
            "cov": self.ref_cov,
        }
        save_file({k: v.contiguous() for k, v in stats.items()}, str(folder / STATS_NAME))

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        size = self.net.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(
                f"the judge takes images [B, 3, {size}, {size}] in [0, 1], got {tuple(images.shape)}"
            )
        return images.detach().float().cpu()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[Attributes]:
        """The attributes the judge sees in each image."""
        logits, _ = self.net(self._check(images))
        picks = {name: out.argmax(-1).tolist() for name, out in logits.items()}
        return [
            {name: ATTRIBUTES[name][picks[name][i]] for name in ATTRIBUTES} for i in range(images.shape[0])
        ]

    def attribute_hits(self, images: torch.Tensor, prompts: list[str]) -> list[dict[str, bool]]:
        """Per image: for each attribute its prompt names, whether the judge sees that value."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
        seen = self.predict(images)
        return [{k: seen[i][k] == v for k, v in parse_prompt(p).items()} for i, p in enumerate(prompts)]

    def attribute_accuracy(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Tensor[B]: the fraction of the attributes each prompt asks for that its image shows
        (NaN for a prompt that names no attribute)."""
        hits = self.attribute_hits(images, prompts)
        return torch.tensor([sum(h.values()) / len(h) if h else math.nan for h in hits], dtype=torch.float32)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised penultimate-layer features [B, D] (what the Fréchet distance compares)."""
        return (self.net.features(self._check(images)) - self.feature_mean) / self.feature_std

    def frechet_to_data(self, images: torch.Tensor) -> float:
        """Fréchet distance of these images' features to those of real scenes. Like FID it is
        biased upwards for small sets: compare sets of equal size (hundreds of images)."""
        return frechet_from_stats(*feature_stats(self.features(images)), self.ref_mu, self.ref_cov)
