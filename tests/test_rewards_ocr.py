"""OCR reward on images rendered with PIL, read by rapidocr's bundled ONNX models with no network."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from normguard.trainer.rewards import RewardSpec, clear_reward_cache, load_reward
from normguard.trainer.rewards.ocr import edit_distance, ocr_score, quoted_text


def render(word: str | None, size: tuple[int, int] = (320, 128)) -> torch.Tensor:
    """Black text on white as a [3, H, W] tensor in [0, 1]; None gives a blank image."""
    img = Image.new("RGB", size, "white")
    if word:
        ImageDraw.Draw(img).text((16, 36), word, fill="black", font=ImageFont.load_default(size=44))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255


def test_quoted_text_and_edit_distance():
    assert quoted_text('a sign that says "Open Late" in neon') == "Open Late"
    assert quoted_text("a poster reading “SALE” on a wall") == "SALE"
    assert quoted_text("no quotes here") is None
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("same", "same") == 0


def test_ocr_score_follows_flow_grpo():
    assert ocr_score("Open Late", "OPENLATE") == 1.0  # spaces and case do not count
    assert ocr_score("cat", "the cat sat") == 1.0  # found inside a longer reading
    assert ocr_score("hello", "") == 0.0
    assert ocr_score("hello", "hallo") == pytest.approx(0.8)
    assert ocr_score("hi", "a much longer unrelated string") == 0.0  # capped at the target length
    with pytest.raises(ValueError, match="empty"):
        ocr_score(" ", "x")


@pytest.fixture(scope="module")
def ocr_reward():
    pytest.importorskip("rapidocr", reason="the ocr extra (rapidocr, onnxruntime) is not installed")
    pytest.importorskip("onnxruntime", reason="the ocr extra (rapidocr, onnxruntime) is not installed")
    clear_reward_cache()
    real_connect = socket.socket.connect

    def refuse(*args, **kwargs):
        raise AssertionError(f"the OCR reward tried to reach the network: {args[1:]}")

    socket.socket.connect = refuse  # loading must not download anything
    try:
        reward = load_reward(RewardSpec("ocr"))
    finally:
        socket.socket.connect = real_connect
    yield reward
    clear_reward_cache()


def test_a_drawn_word_beats_a_blank_image(ocr_reward, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("network used while scoring"))
    images = torch.stack([render("HELLO"), render(None), render("WORLD")])
    prompts = ['a sign saying "hello"'] * 3
    scores = ocr_reward(images, prompts)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert scores[0] == 1.0 and scores[1] == 0.0
    assert scores[1] < scores[2] < scores[0]  # WORLD shares an "O" and an "L" with HELLO


def test_metadata_text_wins_and_batches_equal_singles(ocr_reward):
    images = torch.stack([render("GRASS"), render("HELLO")])
    prompts = ['a sign saying "hello"', "a poster with no quotes"]
    meta = [{"ocr_text": "grass"}, {"ocr_text": "hello"}]
    batch = ocr_reward(images, prompts, meta)
    assert batch.tolist() == [1.0, 1.0]
    singles = torch.cat(
        [ocr_reward(images[i : i + 1], prompts[i : i + 1], meta[i : i + 1]) for i in range(2)]
    )
    assert torch.equal(batch, singles)


def test_a_prompt_without_target_text_is_refused(ocr_reward):
    with pytest.raises(ValueError, match=r"prompt 0 .* no text in double quotes .*'ocr_text'"):
        ocr_reward(render("HELLO")[None], ["a sign"])
