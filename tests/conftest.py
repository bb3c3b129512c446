"""Shared fixtures: tiny real models built from configs (nothing is downloaded)."""

from __future__ import annotations

import os

import pytest
import torch
from diffusers_kit import (  # noqa: F401  (session fixtures: tiny diffusers pipelines)
    tiny_flux_dir,
    tiny_flux_schnell_dir,
    tiny_nonflow_dir,
    tiny_sd3_dir,
)

from normguard.trainer.backends.tinyflow import TinyFlowBackend
from normguard.trainer.config import TrainConfig
from normguard.trainer.models import TinyFlowConfig, TinyFlowModel

# Tiny models: one thread is fastest, and oversubscribed OpenMP threads (pytest + subprocesses on a
# 2-core machine) spin for milliseconds per matmul. Subprocesses inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

VOCAB = ["red", "blue", "green", "circle", "square", "triangle", "left", "right"]
PROMPTS = ["red circle left", "blue square right", "green triangle", "red square"]


def tiny_tinyflow(seed: int = 0) -> TinyFlowModel:
    """A 16x16 TinyFlow with every weight random (the real init zeroes the output layers)."""
    torch.manual_seed(seed)
    model = TinyFlowModel(
        TinyFlowConfig(
            image_size=16, conv_widths=[8, 8], hidden=32, depth=2, heads=2, max_words=6, vocab=VOCAB
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tinyflow")
    tiny_tinyflow().save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tiny_backend(tiny_model_dir) -> TinyFlowBackend:
    return TinyFlowBackend.from_pretrained(tiny_model_dir)


@pytest.fixture
def tiny_config(tiny_model_dir, tmp_path):
    """A config for a few fast iterations on the tiny model; override fields with .replace()."""
    return TrainConfig(
        model=tiny_model_dir,
        prompts=list(PROMPTS),
        rewards=["jpeg_incompressibility"],
        iterations=2,
        groups_per_iteration=2,
        group_size=4,
        sample_steps=4,
        train_timesteps=2,
        micro_batch_size=4,
        lr=1e-3,
        out=str(tmp_path / "run"),
        eval_every=2,
        eval_samples=2,
        eval_quality="",
        tensorboard=False,
        checkpoint_every=1,
    )
