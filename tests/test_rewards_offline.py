"""Every registered reward loads and scores with networking switched off: a socket guard fails the
test on any connection attempt or name lookup (nothing is downloaded at run time). Rewards whose
optional packages are not installed are skipped by name."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from test_rewards_clip import write_clip

from normguard.trainer.rewards import REGISTRY, RewardSpec, clear_reward_cache, load_reward


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] or args)
        raise AssertionError(f"a reward tried to reach the network: {args[1:] or args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # so that a download would really be tried
        monkeypatch.delenv(var, raising=False)
    clear_reward_cache()
    yield attempts
    clear_reward_cache()


def spec_for(name: str, folder) -> RewardSpec:
    """A spec that loads `name` from tiny local files (the real loading code, nothing mocked)."""
    if name in ("clip_score", "pickscore", "aesthetic"):
        clip = folder / "clip" if (folder / "clip").is_dir() else write_clip(folder / "clip")
        if name != "aesthetic":
            return RewardSpec(name, path=str(clip))
        from test_rewards_clip import RealAestheticMLP

        head = folder / "head.pth"
        torch.save(RealAestheticMLP(16).state_dict(), head)
        return RewardSpec(name, path=str(clip), options={"head": str(head)})
    if name == "hps":
        open_clip = pytest.importorskip(
            "open_clip", reason="open-clip-torch (the hps extra) is not installed"
        )
        from test_rewards_hps import TINY

        arch = folder / "tiny-hps-offline.json"
        arch.write_text(json.dumps(TINY))
        open_clip.add_model_config(arch)
        model = open_clip.create_model("tiny-hps-offline", pretrained=None)
        ckpt = folder / "hps.pt"
        torch.save({"state_dict": model.state_dict()}, ckpt)
        return RewardSpec(name, path=str(ckpt), options={"arch": str(arch)})
    return RewardSpec(name)


OPTIONAL = {"brisque": "brisque", "ocr": "rapidocr", "hps": "open_clip"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_reward_loads_and_scores_offline(name, tmp_path, no_network):
    if name in OPTIONAL:
        try:
            __import__(OPTIONAL[name])
        except Exception as e:  # hps: a torchvision built for another torch raises RuntimeError
            pytest.skip(f"{name}: optional package {OPTIONAL[name]} does not import ({type(e).__name__})")
    reward = load_reward(spec_for(name, tmp_path))
    prompts = ['a red circle left with the text "hi"', 'a blue square right with the text "ok"']
    scores = reward(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), prompts)
    assert scores.shape == (2,)
    assert no_network == []
