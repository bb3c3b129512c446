"""The reward registry, the cache of loaded rewards, weighted sets with per-reward normalisation,
and the JPEG rewards (which need nothing on disk)."""

from __future__ import annotations

import argparse

import pytest
import torch

from normguard.trainer.rewards import (
    REGISTRY,
    Reward,
    RewardSet,
    RewardSpec,
    available_rewards,
    build_rewards,
    clear_reward_cache,
    load_reward,
)

EXPECTED = {
    "aesthetic": True,
    "brisque": False,
    "niqe": False,
    "clip_score": True,
    "hps": True,
    "jpeg_compressibility": False,
    "jpeg_incompressibility": False,
    "ocr": False,
    "pickscore": True,
    # the scene rewards of the builtin model's demo (trainer/rewards/scene.py)
    "centring": False,
    "contrast": False,
    "position": False,
    "saturation": False,
    "scene_judge": False,
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_reward_cache()
    yield
    clear_reward_cache()


def flat_and_noisy(n: int = 2) -> torch.Tensor:
    flat = torch.full((n, 3, 64, 64), 0.5)
    noisy = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return torch.cat([flat, noisy])


def test_available_rewards_describe_every_registered_reward():
    listed = available_rewards()
    assert [r["id"] for r in listed] == sorted(REGISTRY)
    assert {r["id"]: r["needs_path"] for r in listed} == EXPECTED
    for r in listed:
        assert r["description"] and r["cost"], r["id"]
        assert set(r) == {"id", "needs_path", "description", "cost", "extra"}


def test_unknown_reward_and_missing_path_are_explained():
    with pytest.raises(ValueError, match=r"unknown reward 'pickscor'; available: aesthetic, brisque"):
        load_reward(RewardSpec("pickscor"))
    with pytest.raises(ValueError, match=r"'clip_score' needs weights on disk"):
        load_reward(RewardSpec("clip_score"))
    with pytest.raises(ValueError, match=r"has no option\(s\) \['quality'\]; it takes: none"):
        load_reward(RewardSpec("jpeg_compressibility", options={"quality": 80}))
    with pytest.raises(ValueError, match=r"options must be plain JSON values"):
        load_reward(RewardSpec("jpeg_compressibility", options={"x": object()}))
    with pytest.raises(ValueError, match=r"each reward may be named once"):
        build_rewards([RewardSpec("jpeg_compressibility"), RewardSpec("jpeg_compressibility", weight=2)])


def test_jpeg_rewards_pay_for_opposite_things():
    images = flat_and_noisy()
    small = load_reward(RewardSpec("jpeg_compressibility"))
    big = load_reward(RewardSpec("jpeg_incompressibility"))
    assert isinstance(small, Reward)
    s, b = small(images, ["p"] * 4), big(images, ["p"] * 4)
    assert s.shape == (4,) and s.dtype == torch.float32
    assert (s[:2] > s[2:]).all() and torch.equal(s, -b)
    assert torch.equal(s, torch.cat([small(images[i : i + 1], ["p"]) for i in range(4)]))


def test_rewards_are_cached_by_id_path_device_and_options():
    a = load_reward(RewardSpec("jpeg_compressibility"))
    assert load_reward(RewardSpec("jpeg_compressibility", weight=3.0)) is a  # the weight is not the model's
    assert load_reward(RewardSpec("jpeg_compressibility", device="meta")) is not a
    assert load_reward(RewardSpec("jpeg_incompressibility")) is not a
    clear_reward_cache()
    assert load_reward(RewardSpec("jpeg_compressibility")) is not a


def test_reward_set_sums_weighted_scores():
    images = flat_and_noisy()
    rs = build_rewards(
        [RewardSpec("jpeg_compressibility", weight=2.0), RewardSpec("jpeg_incompressibility", 0.5)]
    )
    parts = rs.score(images, ["p"] * 4)
    assert set(parts) == {"jpeg_compressibility", "jpeg_incompressibility"}
    torch.testing.assert_close(
        rs(images, ["p"] * 4), 2.0 * parts["jpeg_compressibility"] + 0.5 * parts["jpeg_incompressibility"]
    )


def _constant_scores(values: torch.Tensor):
    def reward(images, prompts, metadata=None):
        return values

    return reward


def test_normalising_each_reward_keeps_a_large_scale_from_drowning_another():
    """Two rewards rank a group of 4 in opposite orders; one is on a 1000x scale. Summed raw, the big one
    decides the advantages alone; normalised first, equal weights cancel."""
    big = torch.tensor([1000.0, 2000.0, 3000.0, 4000.0])
    small = torch.tensor([4.0, 3.0, 2.0, 1.0])
    rewards = {"big": _constant_scores(big), "small": _constant_scores(small)}
    weights = {"big": 1.0, "small": 1.0}
    images = torch.zeros(4, 3, 8, 8)
    raw = RewardSet(rewards, weights, normalize_each=False)
    each = RewardSet(rewards, weights, normalize_each=True)
    scores = raw.score(images, ["p"] * 4)
    a_raw, a_each = raw.advantages(scores, group_size=4), each.advantages(scores, group_size=4)
    assert (a_raw.diff() > 0).all()  # the big reward's order wins
    torch.testing.assert_close(a_each, torch.zeros(4), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match=r"no weight given for reward\(s\) \['small'\]"):
        RewardSet(rewards, {"big": 1.0})


def test_weight_files_load_tensors_only(tmp_path):
    from normguard.trainer.rewards.files import load_state_dict

    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, wrapped)
    assert list(load_state_dict(wrapped)) == ["w"]

    pickled = tmp_path / "pickled.pth"  # old checkpoints often pickle their training arguments
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=1e-4)}, pickled)
    with pytest.raises(ValueError, match=r"pickled objects are never loaded"):
        load_state_dict(pickled)
