"""CLIP score, PickScore and the LAION aesthetic reward, loaded through their real loading code from
tiny random CLIP models saved with save_pretrained (plus a tokenizer and image processor written
offline) and an MLP head file in the real sac+logos+ava1-l14-linearMSE.pth format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from normguard.trainer.rewards import RewardSpec, clear_reward_cache, load_reward
from normguard.trainer.rewards.clip import HEAD_KEYS

SIZE = 32  # the tiny models' image side
PROMPTS = ["a red cat", "a blue dog on grass", "text", "an empty room"]


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for bytes (GPT-2's table)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(c) for c in keep] + [chr(256 + i) for i in range(len(extra))]


def write_processor(folder: Path) -> CLIPTokenizer:
    """A character-level CLIP tokenizer (no merges) and a CLIP image processor at SIZE pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer.from_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    CLIPImageProcessor(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    ).save_pretrained(str(folder))
    return tok


def write_clip(folder: Path, projection_dim: int = 16, seed: int = 0, with_processor: bool = True) -> Path:
    """A tiny random CLIPModel saved with save_pretrained, as a Hugging Face snapshot folder holds it."""
    tok = write_processor(folder if with_processor else folder.parent / f"_tok_{folder.name}")
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=24,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=SIZE,
        patch_size=8,
    )
    torch.manual_seed(seed)
    CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    ).save_pretrained(str(folder))
    return folder


class RealAestheticMLP(nn.Module):
    """The layout of LAION's improved-aesthetic-predictor MLP, whose state dict the .pth file holds."""

    def __init__(self, input_size: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip-tiny")


@pytest.fixture(scope="module")
def head_file(tmp_path_factory) -> tuple[Path, RealAestheticMLP]:
    torch.manual_seed(1)
    mlp = RealAestheticMLP(16).eval()
    path = tmp_path_factory.mktemp("aesthetic") / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(mlp.state_dict(), path)
    return path, mlp


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_reward_cache()
    yield
    clear_reward_cache()


def quantised_images(n: int, side: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Images whose pixels are exact uint8 levels, so the processor's uint8 path sees the same pixels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=g).float() / 255


def reference_cosines(folder: Path, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """cos(image, prompt) the way the model's authors compute it: CLIPProcessor on uint8 arrays."""
    model = CLIPModel.from_pretrained(str(folder)).eval()
    proc = CLIPProcessor.from_pretrained(str(folder))
    arrays = [a for a in (images * 255).round().byte().permute(0, 2, 3, 1).numpy()]
    inputs = proc(text=prompts, images=arrays, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    return out.logits_per_image.diagonal() / model.logit_scale.exp()


def test_clip_score_matches_transformers_pipeline(clip_dir):
    images = quantised_images(4)
    reward = load_reward(RewardSpec("clip_score", path=str(clip_dir)))
    scores = reward(images, PROMPTS)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    torch.testing.assert_close(scores, reference_cosines(clip_dir, images, PROMPTS), atol=1e-5, rtol=1e-5)


def test_clip_score_batches_are_per_image_scores_and_deterministic(clip_dir):
    images = torch.rand(5, 3, 48, 40, generator=torch.Generator().manual_seed(3))
    prompts = PROMPTS + ["one more prompt"]
    reward = load_reward(RewardSpec("clip_score", path=str(clip_dir), options={"batch_size": 2}))
    batch = reward(images, prompts)
    singles = torch.cat([reward(images[i : i + 1], prompts[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=1e-5)
    assert torch.equal(batch, reward(images, prompts))
    # the prompt matters: the same image scored against two prompts gives two scores
    two = reward(images[:1].expand(2, -1, -1, -1), ["a red cat", "zzzz qqqq"])
    assert not torch.isclose(two[0], two[1])


def test_pickscore_is_logit_scaled_clip_score_with_separate_processor(tmp_path, clip_dir):
    """PickScore_v1 ships no tokenizer: the processor comes from another folder (options['processor'])."""
    model_only = tmp_path / "PickScore_v1"
    model_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(clip_dir / name, model_only / name)
    images = quantised_images(3, seed=5)
    with pytest.raises(FileNotFoundError, match=r"preprocessor_config\.json.*tokenizer\.json"):
        load_reward(RewardSpec("pickscore", path=str(model_only)))
    pick = load_reward(RewardSpec("pickscore", path=str(model_only), options={"processor": str(clip_dir)}))
    clip = load_reward(RewardSpec("clip_score", path=str(clip_dir)))
    scale = CLIPModel.from_pretrained(str(clip_dir)).logit_scale.exp().item()
    torch.testing.assert_close(
        pick(images, PROMPTS[:3]), scale * clip(images, PROMPTS[:3]), atol=1e-4, rtol=1e-5
    )


def test_aesthetic_is_the_real_head_on_normalised_image_embeddings(clip_dir, head_file):
    path, mlp = head_file
    assert sorted(torch.load(path, weights_only=True)) == HEAD_KEYS
    images = quantised_images(3, seed=7)
    reward = load_reward(RewardSpec("aesthetic", path=str(clip_dir), options={"head": str(path)}))
    scores = reward(images, ["ignored"] * 3)
    model = CLIPModel.from_pretrained(str(clip_dir)).eval()
    pixel = CLIPProcessor.from_pretrained(str(clip_dir))(
        images=list((images * 255).round().byte().permute(0, 2, 3, 1).numpy()), return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        emb = model.get_image_features(pixel_values=pixel)
        emb = emb if isinstance(emb, torch.Tensor) else emb.pooler_output
        expected = mlp(emb / emb.norm(dim=-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(scores, reward(images, ["other"] * 3))  # no prompt, no dropout


def test_aesthetic_refuses_a_wrong_head(tmp_path, clip_dir, head_file):
    with pytest.raises(ValueError, match=r"needs options\['head'\]"):
        load_reward(RewardSpec("aesthetic", path=str(clip_dir)))
    bad = tmp_path / "not_a_head.pth"
    torch.save({"fc.weight": torch.zeros(1, 16)}, bad)
    with pytest.raises(ValueError, match=r"layers\.0\.weight"):
        load_reward(RewardSpec("aesthetic", path=str(clip_dir), options={"head": str(bad)}))
    wide = tmp_path / "wide.pth"
    torch.save(RealAestheticMLP(768).state_dict(), wide)
    with pytest.raises(ValueError, match=r"768-d embeddings but the CLIP model gives 16-d"):
        load_reward(RewardSpec("aesthetic", path=str(clip_dir), options={"head": str(wide)}))
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        load_reward(RewardSpec("aesthetic", path=str(clip_dir), options={"head": str(tmp_path / "nope.pth")}))


def test_missing_or_incomplete_folder_names_the_expected_files(tmp_path, clip_dir):
    with pytest.raises(
        FileNotFoundError, match=r"does not exist; it must hold: config\.json, model\.safetensors"
    ):
        load_reward(RewardSpec("clip_score", path=str(tmp_path / "no_such_folder")))
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(clip_dir / "config.json", partial / "config.json")
    with pytest.raises(FileNotFoundError, match=r"lacks model\.safetensors or pytorch_model\.bin"):
        load_reward(RewardSpec("clip_score", path=str(partial)))
    with pytest.raises(
        FileNotFoundError, match=r"neither a folder nor a Hugging Face repo in the local cache"
    ):
        load_reward(RewardSpec("clip_score", path="nobody/not-a-cached-repo"))
    with pytest.raises(NotADirectoryError, match=r"is a file; give the folder that holds: config\.json"):
        load_reward(RewardSpec("clip_score", path=str(clip_dir / "model.safetensors")))
    with pytest.raises(ValueError, match=r"needs weights on disk"):
        load_reward(RewardSpec("pickscore"))


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, clip_dir, head_file):
    """A config.json from another model size must not lead to randomly re-initialised weights."""
    other = write_clip(tmp_path / "other", projection_dim=8)
    mixed = tmp_path / "mixed"
    shutil.copytree(clip_dir, mixed)
    shutil.copy(other / "config.json", mixed / "config.json")
    with pytest.raises(ValueError, match=r"do not fit its config\.json"):
        load_reward(RewardSpec("clip_score", path=str(mixed)))
    with pytest.raises(ValueError, match=r"do not fit its config\.json"):
        load_reward(RewardSpec("aesthetic", path=str(mixed), options={"head": str(head_file[0])}))


def test_loads_from_the_hugging_face_cache_by_repo_id(tmp_path, clip_dir, monkeypatch):
    """A repo id resolves to its snapshot in the local HF cache (the hub's own cache layout)."""
    import huggingface_hub.constants as hf_constants

    repo = tmp_path / "hub" / "models--tiny--clip"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(clip_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    images = quantised_images(2, seed=9)
    by_id = load_reward(RewardSpec("clip_score", path="tiny/clip"))(images, PROMPTS[:2])
    by_dir = load_reward(RewardSpec("clip_score", path=str(clip_dir)))(images, PROMPTS[:2])
    torch.testing.assert_close(by_id, by_dir)


def test_reward_moves_images_to_its_own_device_and_keeps_no_graph(clip_dir):
    """spec.device wins over the training device; images may come in any dtype, with grad."""
    reward = load_reward(RewardSpec("clip_score", path=str(clip_dir), device="cpu"), device="cuda:7")
    assert reward.encoder.device == torch.device("cpu")
    assert next(reward.encoder.model.parameters()).device.type == "cpu"
    images = quantised_images(2, seed=11).double().requires_grad_(True)
    scores = reward(images, PROMPTS[:2])
    assert scores.grad_fn is None and not scores.requires_grad and scores.dtype == torch.float32
    torch.testing.assert_close(scores, reward(images.detach().half().float(), PROMPTS[:2]), atol=5e-3, rtol=0)


def test_bfloat16_option_gives_close_scores(clip_dir):
    images = quantised_images(2, seed=13)
    fp32 = load_reward(RewardSpec("clip_score", path=str(clip_dir)))(images, PROMPTS[:2])
    bf16 = load_reward(RewardSpec("clip_score", path=str(clip_dir), options={"dtype": "bfloat16"}))
    assert next(bf16.encoder.model.parameters()).dtype == torch.bfloat16
    torch.testing.assert_close(bf16(images, PROMPTS[:2]), fp32, atol=0.05, rtol=0)
    with pytest.raises(ValueError, match=r"dtype 'fp8'"):
        load_reward(RewardSpec("clip_score", path=str(clip_dir), options={"dtype": "fp8"}))


def test_the_same_reward_is_loaded_once(clip_dir):
    spec = RewardSpec("clip_score", path=str(clip_dir))
    first = load_reward(spec)
    assert load_reward(RewardSpec("clip_score", path=str(clip_dir))) is first
    assert load_reward(RewardSpec("clip_score", path=str(clip_dir), options={"batch_size": 3})) is not first
    clear_reward_cache()
    assert load_reward(spec) is not first


def test_bad_input_is_refused(clip_dir):
    reward = load_reward(RewardSpec("clip_score", path=str(clip_dir)))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        reward(torch.rand(2, SIZE, SIZE, 3), PROMPTS[:2])
    with pytest.raises(ValueError, match=r"2 images but 3 prompts"):
        reward(torch.rand(2, 3, SIZE, SIZE), PROMPTS[:3])
    with pytest.raises(ValueError, match=r"has no option\(s\) \['procesor'\]"):
        load_reward(RewardSpec("clip_score", path=str(clip_dir), options={"procesor": "x"}))


def test_non_square_images_are_centre_cropped_like_clip(clip_dir):
    """A wide image and its centre square get the same score (shortest side already SIZE)."""
    wide = quantised_images(1, side=SIZE, seed=15).repeat(1, 1, 1, 2)
    wide[..., : SIZE // 2] = 0.0
    wide[..., SIZE + SIZE // 2 :] = 1.0
    centre = wide[..., SIZE // 2 : SIZE // 2 + SIZE]
    reward = load_reward(RewardSpec("clip_score", path=str(clip_dir)))
    assert np.isclose(reward(wide, ["x"]).item(), reward(centre, ["x"]).item(), atol=1e-6)
