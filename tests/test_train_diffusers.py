"""`normguard train` on tiny SD3 and FLUX.1 pipeline folders: every method yields a LoRA that
diffusers' own load_lora_weights loads and that changes the images."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PROMPTS
from diffusers import DiffusionPipeline

from normguard.trainer.config import TrainConfig
from normguard.trainer.loop import Trainer, train
from normguard.trainer.lora import normguard_facts, read_lora_metadata

SIDE = 64  # the tiny pipelines' FLUX default would be 1024 px (default_sample_size 128 x VAE 8)


def images(folder, lora=None) -> torch.Tensor:
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    out = pipe(
        prompt=PROMPTS[0],
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        guidance_scale=1.0,
        height=SIDE,
        width=SIDE,
    )
    return out.images


def tiny_run(folder, tmp_path, **overrides) -> TrainConfig:
    """Two quick iterations on a tiny pipeline folder, written to tmp_path/run."""
    return TrainConfig(
        model=str(folder),
        prompts=PROMPTS[:2],
        rewards=["jpeg_incompressibility"],
        iterations=2,
        groups_per_iteration=1,
        group_size=2,
        sample_steps=3,
        train_timesteps=1,
        micro_batch_size=2,
        lr=3e-2,
        eval_every=0,
        tensorboard=False,
        out=str(tmp_path / "run"),
        lora_rank=4,
        height=SIDE,
        width=SIDE,
        **overrides,
    )


@pytest.mark.parametrize("method", ["nft", "awm", "dpo", "grpo"])
@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_every_method_trains_a_lora_diffusers_loads(family, method, tiny_sd3_dir, tiny_flux_dir, tmp_path):
    folder = tiny_sd3_dir if family == "sd3" else tiny_flux_dir
    cfg = tiny_run(
        folder, tmp_path, method=method, cfg_scale=2.0 if (method == "grpo" and family == "sd3") else 1.0
    )
    result = train(cfg)
    assert result.status == "finished"
    facts = normguard_facts(read_lora_metadata(result.lora_path))
    assert facts["method"] == method and facts["base_model"] == Path(folder).name  # no user path leaks
    base, tuned = images(folder), images(folder, result.lora_path)
    assert torch.isfinite(tuned).all()
    assert (base - tuned).abs().max() > 1e-4, "the trained LoRA does not change the images"


def test_cli_trains_on_a_diffusers_folder(tiny_sd3_dir, tmp_path):
    exe = Path(sys.executable).with_name("normguard")
    r = subprocess.run(
        [
            str(exe),
            "train",
            "--model",
            str(tiny_sd3_dir),
            "--method",
            "nft",
            "--reward",
            "jpeg_compressibility",
            "--steps",
            "1",
            "--group-size",
            "2",
            "--groups-per-iteration",
            "1",
            "--sample-steps",
            "2",
            "--train-timesteps",
            "1",
            "--no-tensorboard",
            "--eval-every",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--prompts",
            str(_prompt_file(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run" / "normguard_lora.safetensors").is_file()


def test_non_flow_pipeline_is_refused_naming_it(tiny_nonflow_dir, tmp_path):
    cfg = TrainConfig(
        model=str(tiny_nonflow_dir), prompts=["a"], rewards=["jpeg_compressibility"], out=str(tmp_path / "r")
    )
    with pytest.raises(ValueError, match="StableDiffusionPipeline"):
        train(cfg)


def _prompt_file(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("\n".join(PROMPTS[:2]))
    return p


def test_bf16_training_on_fp8_base_weights_finishes_and_resumes(tiny_sd3_dir, tmp_path):
    """The memory settings together (bf16 compute, fp8 base storage, checkpointing): a run finishes
    with a finite LoRA that changes the images, and a longer run resumes from its checkpoint."""
    cfg = tiny_run(
        tiny_sd3_dir,
        tmp_path,
        precision="bf16",
        fp8_base=True,
        gradient_checkpointing=True,
        checkpoint_every=1,
    )
    result = train(cfg)
    assert result.status == "finished" and result.iterations == 2
    longer = train(cfg.replace(iterations=3))
    assert longer.status == "finished" and longer.iterations == 3
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]  # resumed, not restarted
    base, tuned = images(tiny_sd3_dir), images(tiny_sd3_dir, longer.lora_path)
    assert torch.isfinite(tuned).all() and (base - tuned).abs().max() > 1e-4


class RecordingProcessor:
    """Wraps an attention processor; records, per call, whether it takes gradients and whether cuDNN
    attention is allowed then. (Module hooks and torch-function modes do not see the forward that
    checkpointing re-runs in backward; the processor is plain Python and does.)"""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, *args, **kwargs):
        self.calls.append((torch.is_grad_enabled(), torch.backends.cuda.cudnn_sdp_enabled()))
        return self.inner(*args, **kwargs)


def test_cudnn_attention_is_off_for_gradient_passes_only(tiny_sd3_dir, tmp_path):
    """The cuDNN SDPA guard (ANCHORS.md's H100 crash) covers every attention that takes gradients, the
    checkpointed forward re-run inside backward included; rollouts and no-grad passes keep cuDNN."""
    trainer = Trainer(tiny_run(tiny_sd3_dir, tmp_path, gradient_checkpointing=True).replace(iterations=1))
    attn = trainer.backend.module.transformer_blocks[0].attn
    attn.set_processor(recorder := RecordingProcessor(attn.processor))
    trainer.run()
    grad = [cudnn for g, cudnn in recorder.calls if g]
    no_grad = [cudnn for g, cudnn in recorder.calls if not g]
    # one trained micro-batch: its forward and the re-run in backward; 3 rollout steps, old and reference
    assert len(grad) == 2 and not any(grad), recorder.calls
    assert len(no_grad) == 3 + 2 and all(no_grad), recorder.calls
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored after training
