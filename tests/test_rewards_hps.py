"""HPSv2.1 through open-clip-torch, from a checkpoint file of a tiny OpenCLIP architecture written in
HPS's format ({"state_dict": ...}). open-clip-torch needs a torchvision built for the installed torch:
where it does not import (CPU-only CI with a CUDA torchvision wheel), these tests skip."""

from __future__ import annotations

import json

import pytest
import torch

from normguard.trainer.rewards import RewardSpec, clear_reward_cache, load_reward

try:
    import open_clip
except Exception as err:  # a torchvision built for another torch fails with RuntimeError
    pytest.skip(
        f"open-clip-torch does not import here ({type(err).__name__}: {err})", allow_module_level=True
    )

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
PROMPTS = ["a red cat", "a blue dog", "a city at night"]


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hps")
    arch = folder / "tiny-hps-test.json"
    arch.write_text(json.dumps(TINY))
    open_clip.add_model_config(arch)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-hps-test", pretrained=None).eval()
    ckpt = folder / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    clear_reward_cache()
    yield ckpt, arch, model
    clear_reward_cache()


def test_hps_is_the_cosine_of_the_checkpoint_model(tiny_hps):
    ckpt, arch, model = tiny_hps
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    reward = load_reward(RewardSpec("hps", path=str(ckpt), options={"arch": str(arch), "batch_size": 2}))
    scores = reward(images, PROMPTS)
    x = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    tok = open_clip.get_tokenizer("tiny-hps-test")
    with torch.no_grad():
        expected = (
            model.encode_image(x, normalize=True) * model.encode_text(tok(PROMPTS), normalize=True)
        ).sum(-1)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    singles = torch.cat([reward(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(scores, singles, atol=1e-5, rtol=1e-5)
    assert torch.equal(scores, reward(images, PROMPTS))


def test_hps_errors_name_the_problem(tmp_path, tiny_hps):
    ckpt, arch, _ = tiny_hps
    with pytest.raises(FileNotFoundError, match=r"does not exist \(expected a .pt"):
        load_reward(RewardSpec("hps", path=str(tmp_path / "HPS_v2.1_compressed.pt")))
    with pytest.raises(ValueError, match=r"does not fit the OpenCLIP architecture 'ViT-B-32'"):
        load_reward(RewardSpec("hps", path=str(ckpt), options={"arch": "ViT-B-32"}))
    with pytest.raises(ValueError, match=r"unknown OpenCLIP architecture"):
        load_reward(RewardSpec("hps", path=str(ckpt), options={"arch": "No-Such-Arch"}))


@pytest.mark.parametrize("arch", ["mt5-xl-ViT-H-14", "roberta-ViT-B-32", "nllb-clip-base"])
def test_architectures_that_would_download_are_refused_before_loading(tiny_hps, arch, monkeypatch):
    """Their text towers and tokenizers come from the Hugging Face Hub (open_clip fetches them even
    with pretrained=None): refused by name, and no connection is attempted."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    ckpt, _, _ = tiny_hps
    with pytest.raises(ValueError, match=r"fetches hf_model_name=.* from the Hugging Face Hub"):
        load_reward(RewardSpec("hps", path=str(ckpt), options={"arch": arch}))
