"""CLIP-based rewards loaded with transformers from folders on disk: CLIP score, PickScore and the
LAION aesthetic predictor (CLIP ViT-L/14 image embedding -> MLP head)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import RewardFactory, RewardSpec, register
from .files import FileNeed, find_file, find_folder, load_state_dict
from .images import check_images, in_chunks, normalize, resize_shortest_center_crop
from .options import batch_size_option, check_options, dtype_option

MODEL_FILES: list[FileNeed] = [
    "config.json",
    (
        "model.safetensors",
        "pytorch_model.bin",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ),
]
PROCESSOR_FILES: list[FileNeed] = [
    ("preprocessor_config.json", "processor_config.json"),
    ("tokenizer.json", "vocab.json"),
]
_COMMON_OPTIONS = {"processor", "dtype", "batch_size"}


def _pooled(out: Any) -> torch.Tensor:
    """get_*_features returns a tensor in transformers 4 and an output with pooler_output in 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _load_checked(folder: Path, what: str, vision_only: bool) -> nn.Module:
    """CLIPModel (or its image tower with projection) from a folder, refusing weights that do not fit:
    transformers would otherwise re-initialise missing or mis-shaped weights at random."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    config = CLIPConfig.from_pretrained(str(folder), local_files_only=True)
    if vision_only:  # the tower's own config may not carry the projection size of the whole model
        config.vision_config.projection_dim = config.projection_dim
        config = config.vision_config
    cls = CLIPVisionModelWithProjection if vision_only else CLIPModel
    level = hf_logging.get_verbosity()
    if vision_only:  # the text weights go unused on purpose: no report listing them as unexpected
        hf_logging.set_verbosity_error()
    try:
        model, info = cls.from_pretrained(
            str(folder), config=config, local_files_only=True, output_loading_info=True
        )
    except RuntimeError as err:  # transformers 5 raises on mis-shaped weights
        raise ValueError(f"{what}: the weights in {str(folder)!r} do not fit its config.json: {err}") from err
    finally:
        hf_logging.set_verbosity(level)
    bad = list(info.get("missing_keys", [])) + [str(m[0]) for m in info.get("mismatched_keys", [])]
    if bad:
        raise ValueError(
            f"{what}: the weights in {str(folder)!r} do not fit its config.json: {sorted(bad)[:8]}"
        )
    return model


class ClipEncoder:
    """A CLIP model plus its tokenizer and image geometry, embedding images and prompts (L2-normalised)
    on one device. The image preprocessing runs in torch on that device, with the numbers from the
    folder's preprocessor_config.json. vision_only loads the image tower alone (no tokenizer needed)."""

    def __init__(
        self,
        model_dir: str | Path,
        processor_dir: str | Path | None,
        device: torch.device,
        dtype: torch.dtype,
        what: str,
        vision_only: bool = False,
    ):
        from transformers import AutoTokenizer, CLIPImageProcessor

        proc_needs = PROCESSOR_FILES[:1] if vision_only else PROCESSOR_FILES
        folder = find_folder(model_dir, MODEL_FILES + ([] if processor_dir else proc_needs), what)
        proc_folder = find_folder(processor_dir, proc_needs, f"{what} processor") if processor_dir else folder
        self.model = _load_checked(folder, what, vision_only)
        self.model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        ip = CLIPImageProcessor.from_pretrained(str(proc_folder), local_files_only=True)
        size = ip.size.get("shortest_edge") or min(ip.size["height"], ip.size["width"])
        self.shortest, self.crop = int(size), (int(ip.crop_size["height"]), int(ip.crop_size["width"]))
        self.mean, self.std = list(ip.image_mean), list(ip.image_std)
        self.tokenizer = (
            None if vision_only else AutoTokenizer.from_pretrained(str(proc_folder), local_files_only=True)
        )
        self.device, self.dtype, self.vision_only = device, dtype, vision_only

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_shortest_center_crop(images.to(self.device, torch.float32), self.shortest, self.crop)
        x = normalize(x, self.mean, self.std).to(self.dtype)
        if self.vision_only:
            emb = self.model(pixel_values=x).image_embeds.float()
        else:
            emb = _pooled(self.model.get_image_features(pixel_values=x)).float()
        return emb / emb.norm(dim=-1, keepdim=True)

    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        max_length = int(self.model.config.text_config.max_position_embeddings)
        tok = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        emb = _pooled(
            self.model.get_text_features(
                input_ids=tok["input_ids"].to(self.device),
                attention_mask=tok["attention_mask"].to(self.device),
            )
        ).float()
        return emb / emb.norm(dim=-1, keepdim=True)


class ClipSimilarity:
    """scale * cos(image, prompt). CLIP score uses scale 1; PickScore uses the model's own
    logit scale exp(logit_scale), as its authors score."""

    def __init__(self, encoder: ClipEncoder, use_logit_scale: bool, batch_size: int):
        self.encoder, self.batch_size = encoder, batch_size
        self.scale = float(encoder.model.logit_scale.exp()) if use_logit_scale else 1.0

    def _score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        cos = (self.encoder.embed_images(images) * self.encoder.embed_prompts(prompts)).sum(-1)
        return self.scale * cos

    @torch.no_grad()
    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        return in_chunks(self._score, images, list(prompts), self.batch_size)


# The LAION improved-aesthetic-predictor head (sac+logos+ava1-l14-linearMSE.pth): an nn.Sequential
# stored under "layers.", Linear at indices 0, 2, 4, 6, 7 (Dropout at 1, 3, 5), no activations.
_HEAD_LINEARS = (0, 2, 4, 6, 7)
HEAD_KEYS = sorted(f"layers.{i}.{p}" for i in _HEAD_LINEARS for p in ("weight", "bias"))


def aesthetic_head(state: dict[str, torch.Tensor], what: str) -> nn.Sequential:
    """The MLP head built from the shapes in its state dict (768 -> 1024 -> 128 -> 64 -> 16 -> 1 for
    the real file), with the real file's key names."""
    if sorted(state) != HEAD_KEYS:
        raise ValueError(
            f"{what}: not a LAION aesthetic MLP head; expected keys {HEAD_KEYS}, got {sorted(state)}"
        )
    mods: list[nn.Module] = []
    for i in range(_HEAD_LINEARS[-1] + 1):
        if i in _HEAD_LINEARS:
            out_f, in_f = state[f"layers.{i}.weight"].shape
            mods.append(nn.Linear(in_f, out_f))
        else:
            mods.append(nn.Dropout(0.0))
    head = nn.Sequential(*mods)
    head.load_state_dict({k.removeprefix("layers."): v for k, v in state.items()})
    if head[-1].out_features != 1:
        raise ValueError(f"{what}: the head's last layer gives {head[-1].out_features} values, expected 1")
    return head


class Aesthetic:
    """LAION aesthetic score (about 1-10): the MLP head on the L2-normalised CLIP image embedding."""

    def __init__(self, encoder: ClipEncoder, head: nn.Sequential, batch_size: int):
        dim = encoder.embed_dim
        if head[0].in_features != dim:
            raise ValueError(
                f"aesthetic head takes {head[0].in_features}-d embeddings but the CLIP model gives {dim}-d "
                "(the real head needs CLIP ViT-L/14, e.g. openai/clip-vit-large-patch14)"
            )
        self.encoder, self.batch_size = encoder, batch_size
        self.head = head.to(encoder.device).eval().requires_grad_(False)

    def _score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.head(self.encoder.embed_images(images)).squeeze(-1)

    @torch.no_grad()
    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        return in_chunks(self._score, images, list(prompts), self.batch_size)


def _encoder(spec: RewardSpec, device: torch.device, what: str, vision_only: bool = False) -> ClipEncoder:
    return ClipEncoder(
        spec.path, spec.options.get("processor"), device, dtype_option(spec), what, vision_only
    )


def _similarity(what: str, scaled: bool) -> RewardFactory:
    def factory(spec: RewardSpec, device: torch.device) -> ClipSimilarity:
        check_options(spec, _COMMON_OPTIONS)
        return ClipSimilarity(_encoder(spec, device, what), scaled, batch_size_option(spec, 16))

    return factory


# the same reward over two CLIP models: id -> (description, cost, what the folder holds, scaled)
SIMILARITIES = {
    "clip_score": (
        "cosine similarity of CLIP image and prompt embeddings (prompt following)",
        "CLIP ViT-L/14 (0.43 B params): 2.5 CPU-s per 512 px image on a 2-core CPU",
        "clip_score (a CLIP model folder)",
        False,
    ),
    "pickscore": (
        "PickScore (human preference, Pick-a-Pic): exp(logit_scale) * cos(image, prompt)",
        "CLIP ViT-H/14 (0.99 B params): 4.9 CPU-s per 512 px image on a 2-core CPU",
        "pickscore (the PickScore_v1 folder; when it lacks the tokenizer and preprocessor files, set "
        "options['processor'] to the laion/CLIP-ViT-H-14-laion2B-s32B-b79K folder)",
        True,
    ),
}
for _id, (_description, _cost, _what, _scaled) in SIMILARITIES.items():
    register(_id, needs_path=True, description=_description, cost=_cost)(_similarity(_what, _scaled))


@register(
    "aesthetic",
    needs_path=True,
    description="LAION aesthetic predictor v2: MLP head on CLIP ViT-L/14 image embeddings (no prompt)",
    cost="CLIP ViT-L/14 image tower (0.30 B) + MLP head: 2.1 CPU-s per 512 px image on a 2-core CPU",
)
def _aesthetic(spec: RewardSpec, device: torch.device) -> Aesthetic:
    check_options(spec, _COMMON_OPTIONS | {"head"})
    if not spec.options.get("head"):
        raise ValueError(
            "reward 'aesthetic' needs options['head']: the MLP head file (sac+logos+ava1-l14-linearMSE.pth)"
        )
    what = "aesthetic head"
    head = aesthetic_head(
        load_state_dict(find_file(spec.options["head"], what, (".pth", ".pt", ".safetensors"))), what
    )
    encoder = _encoder(
        spec, device, "aesthetic (a CLIP ViT-L/14 folder, e.g. openai/clip-vit-large-patch14)", True
    )
    return Aesthetic(encoder, head, batch_size_option(spec, 16))
