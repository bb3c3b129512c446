"""Data-parallel training with accelerate: two CPU processes (gloo) vs one process, same global batch."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PROMPTS
from safetensors.torch import load_file

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RANK_SCRIPT = """
import sys
from safetensors.torch import save_file
from normguard.trainer.config import TrainConfig
from normguard.trainer.loop import Trainer

trainer = Trainer(TrainConfig.from_yaml(sys.argv[1]).replace(out=sys.argv[2]))
trainer.run()
save_file(trainer.backend.lora_state_dict(), f"{sys.argv[2]}/rank{trainer.acc.process_index}.safetensors")
"""


@pytest.mark.slow
def test_two_ranks_end_with_the_lora_of_one_process(tmp_path, tiny_model_dir):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": tiny_model_dir,
                "prompts": PROMPTS,
                "rewards": ["jpeg_incompressibility"],
                "method": "nft",
                "iterations": 3,
                "groups_per_iteration": 2,
                "group_size": 4,
                "sample_steps": 4,
                "train_timesteps": 2,
                "micro_batch_size": 2,
                "lr": 1e-3,
                "eval_every": 0,
                "tensorboard": False,
                "device": "cpu",
                "checkpoint_every": 3,
            }
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    exe = shutil.which("normguard") or str(BIN / "normguard")
    one = subprocess.run(
        [exe, "train", "--config", cfg, "--out", tmp_path / "one"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    two = subprocess.run(
        [
            str(BIN / "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(script),
            cfg,
            tmp_path / "two",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    r0, r1 = (load_file(tmp_path / "two" / f"rank{r}.safetensors") for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # DDP kept the ranks identical
    a = load_file(tmp_path / "one" / "normguard_lora.safetensors")
    b = load_file(tmp_path / "two" / "normguard_lora.safetensors")
    assert all(torch.equal(b[k], r0[k]) for k in b)
    assert a.keys() == b.keys()
    trained = max(v.abs().max().item() for k, v in a.items() if "lora_B" in k)
    assert trained > 1e-4
    for k in a:  # equal up to the order of floating-point sums in the all-reduce
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-4), k
