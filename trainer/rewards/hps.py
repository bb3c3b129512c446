"""HPSv2.1 (human preference score): an OpenCLIP ViT-H/14 fine-tuned on HPD v2, scored as the cosine
of its normalised image and prompt embeddings. Loaded with open-clip-torch from the checkpoint file
alone (HPS_v2.1_compressed.pt holds the whole model; the tokenizer ships inside open_clip), so
nothing is downloaded. The architecture is an option so that tests can use a tiny one."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .base import RewardSpec, register
from .files import find_file, load_state_dict
from .images import check_images, in_chunks, normalize, resize_longest_pad
from .options import batch_size_option, check_options, dtype_option

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _open_clip():
    try:
        import open_clip
    except Exception as err:  # torchvision built for another torch raises RuntimeError, not ImportError
        raise ImportError(
            "the 'hps' reward needs open-clip-torch, which needs torchvision matching your torch: "
            "pip install 'comfyui-normguard[hps]'"
        ) from err
    return open_clip


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def _arch_name(open_clip, arch: str) -> str:
    """A built-in OpenCLIP architecture name, or a .json model config file registered under its stem."""
    if arch.endswith(".json"):
        cfg = Path(arch).expanduser()
        if not cfg.is_file():
            raise FileNotFoundError(f"hps: architecture config {arch!r} does not exist")
        open_clip.add_model_config(cfg)
        arch = cfg.stem
    if arch not in open_clip.list_models():
        raise ValueError(f"hps: unknown OpenCLIP architecture {arch!r} (HPSv2.1 is 'ViT-H-14')")
    if fetched := downloaded_parts(open_clip.get_model_config(arch) or {}):
        raise ValueError(
            f"hps: the OpenCLIP architecture {arch!r} fetches {', '.join(fetched)} from the Hugging Face Hub "
            "when it loads; nothing is downloaded at run time, so only architectures built from the "
            "checkpoint alone are accepted (HPSv2.1 is 'ViT-H-14')"
        )
    return arch


def downloaded_parts(config: dict) -> list[str]:
    """What building an OpenCLIP architecture from `config` would fetch (with pretrained=None): Hugging
    Face text towers and tokenizers (hf_* keys), pretrained timm image towers."""
    text, vision = config.get("text_cfg") or {}, config.get("vision_cfg") or {}
    parts = [
        f"{k}={v}" for cfg in (text, vision) for k, v in cfg.items() if k.startswith("hf_") and "name" in k
    ]
    if vision.get("timm_model_pretrained"):
        parts.append(f"pretrained timm weights {vision.get('timm_model_name')}")
    return parts


class Hps:
    def __init__(self, path: str, arch: str, device: torch.device, dtype: torch.dtype, batch_size: int):
        open_clip = _open_clip()
        what = "hps (the HPS_v2.1_compressed.pt checkpoint)"
        file = find_file(path, what, (".pt", ".pth", ".bin", ".safetensors"))
        name = _arch_name(open_clip, arch)
        quiet = _DropRandomInitWarning()
        logging.getLogger().addFilter(quiet)  # the weights come next, from the checkpoint
        try:
            model = open_clip.create_model(name, pretrained=None, device="cpu")
        finally:
            logging.getLogger().removeFilter(quiet)
        state = {k.removeprefix("module."): v for k, v in load_state_dict(file).items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"{what}: {str(file)!r} does not fit the OpenCLIP architecture {name!r}: {err}"
            ) from err
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(name)
        size = model.visual.image_size
        self.size = int(size if isinstance(size, int) else size[0])
        self.device, self.dtype, self.batch_size = device, dtype, batch_size

    def _score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        x = resize_longest_pad(images.to(self.device, torch.float32), self.size)
        x = normalize(x, _OPENAI_MEAN, _OPENAI_STD).to(self.dtype)
        img = self.model.encode_image(x, normalize=True).float()
        txt = self.model.encode_text(self.tokenizer(list(prompts)).to(self.device), normalize=True).float()
        return (img * txt).sum(-1)

    @torch.no_grad()
    def __call__(self, images, prompts, metadata=None) -> torch.Tensor:
        check_images(images, prompts)
        return in_chunks(self._score, images, list(prompts), self.batch_size)


@register(
    "hps",
    needs_path=True,
    description="HPSv2.1 human preference score: cos(image, prompt) of a fine-tuned OpenCLIP ViT-H/14",
    cost="OpenCLIP ViT-H/14 (0.99 B params): 4.9 CPU-s per 512 px image on a 2-core CPU",
    extra="hps",
)
def _hps(spec: RewardSpec, device: torch.device) -> Hps:
    opts = check_options(spec, {"arch", "dtype", "batch_size"})
    return Hps(
        spec.path, str(opts.get("arch", "ViT-H-14")), device, dtype_option(spec), batch_size_option(spec, 16)
    )
