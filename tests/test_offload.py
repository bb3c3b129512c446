"""The `offload` setting (trainer/backends/offload.py): the frozen transformer blocks stay in host
memory and stream in per block, through diffusers' group-offloading hooks, while the adapter stays
on the device and trains as without it. On this CPU the host and the device are the same, so a run
checks that the hooks (with checkpointing's recomputation through them, fp8 storage and the fused
rollout forward) leave training unchanged; fake tensors (the memory estimate's) check the moves."""

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_diffusers import tiny_run
from torch._subclasses.fake_tensor import FakeTensorMode

from normguard.trainer.backends.diffusers import DiffusersBackend
from normguard.trainer.backends.offload import offload_frozen_blocks
from normguard.trainer.config import TrainConfig
from normguard.trainer.loop import Trainer, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from memory_count import LiveBytes  # noqa: E402
from memory_estimate import fake_backend, train_step_gib  # noqa: E402


@pytest.mark.parametrize("extra", [{}, {"fp8_base": True, "precision": "bf16"}], ids=["fp32", "bf16-fp8"])
def test_offload_trains_the_same_lora(tiny_sd3_dir, tmp_path, extra):
    runs = {}
    for offload in (False, True):
        cfg = tiny_run(
            tiny_sd3_dir, tmp_path / str(offload), gradient_checkpointing=True, offload=offload, **extra
        )
        runs[offload] = load_file(train(cfg).lora_path)
    assert runs[True].keys() == runs[False].keys() and runs[True]
    for key, tensor in runs[False].items():
        assert torch.equal(runs[True][key], tensor), key


def counting(group, counts: dict):
    """group.onload_, counting its calls (the behaviour is diffusers' own)."""
    load = group.onload_

    def onload():
        counts[id(group)] += 1
        load()

    return onload


def test_hooks_stream_every_block_in_forward_and_in_recomputation(tiny_sd3_dir):
    """The real hooks: each group holds exactly its block's frozen weights (no adapter parameter in any
    group), and a checkpointed forward+backward brings each block in twice: for the forward and for
    its recomputation in backward."""
    backend = DiffusersBackend.from_pretrained(str(tiny_sd3_dir), gradient_checkpointing=True)
    backend.add_lora(rank=4)
    groups = offload_frozen_blocks(backend.module, torch.device("cpu"))
    lora = {id(p) for p in backend.module.parameters() if p.requires_grad}
    moved = [p for g in groups for p in g.parameters]
    assert lora and not lora & {id(p) for p in moved}
    frozen = [p for p in backend.module.parameters() if not p.requires_grad]
    assert {id(p) for p in moved} == {id(p) for p in frozen}
    onloads = {id(g): 0 for g in groups}
    for g in groups:
        g.onload_ = counting(g, onloads)
    x = torch.randn(1, *backend.latent_shape(64, 64))
    v = backend.velocity(x, torch.tensor([0.5]), backend.encode_prompts(["a"]))
    v.square().mean().backward()
    blocks = [g for g in groups if g.onload_leader is not backend.module]
    assert len(blocks) == len(backend.module.transformer_blocks)
    assert all(onloads[id(g)] == 2 for g in blocks)


def test_estimate_streams_frozen_blocks_and_keeps_the_adapter_on_the_device():
    """The memory estimate's model of the setting (fake tensors, host = the meta device): frozen block
    weights are off the device between calls and back for each call, also in backward's recomputation
    (a meta weight in a cpu computation would fail), and the adapter with its gradients stays."""
    peaks = {}
    for offload in (False, True):
        mode = FakeTensorMode()
        backend = fake_backend(
            "sd3", rank=4, checkpointing=True, fp8=False, mode=mode, tiny=True, offload=offload
        )
        with mode:
            peaks[offload] = train_step_gib(backend, 2, 128, LiveBytes("cpu"))
        lora = [p for p in backend.module.parameters() if p.requires_grad]
        assert lora and all(p.device.type == "cpu" and p.grad.device.type == "cpu" for p in lora)
        blocks = [p for n, p in backend.module.named_parameters() if n.startswith("transformer_blocks")]
        assert all(p.device.type == ("meta" if offload and not p.requires_grad else "cpu") for p in blocks)
    assert peaks[True] < peaks[False]


def test_offload_needs_checkpointing_and_a_backend_that_streams(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="offload needs gradient_checkpointing"):
        TrainConfig(offload=True, rewards=["jpeg_incompressibility"]).validate()
    cfg = TrainConfig(
        model=str(tiny_model_dir), offload=True, gradient_checkpointing=True, rewards=["jpeg_incompressibility"],
        prompts=["a"], out=str(tmp_path / "run"), tensorboard=False, eval_every=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="^offload: the .* backend cannot stream"):
        Trainer(cfg)
