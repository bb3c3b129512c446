"""Training over several processes (gloo on CPU) against one process with the same global batch: DDP,
FSDP2 through accelerate's plugin (with resume), and two "nodes" launched by two torchrun commands."""

import json
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
from test_rewards_clip import write_clip

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


# --- the tiny SD3 pipeline: DDP, FSDP2 and two nodes -------------------------------------------------

# accelerate sets its FSDP mode only for accelerator devices (state.py: DistributedType.FSDP is chosen
# inside the MULTI_GPU/MULTI_NPU/... branch; on CPU the state is MULTI_CPU and the FSDP plugin is
# dropped). Everything else in its FSDP2 path runs on CPU with gloo, so this script sets that one field
# and then uses accelerate's own FSDP2 preparation (fully_shard per transformer block), gradient
# clipping and no_sync, as `accelerate launch --use_fsdp --fsdp_version 2` does on GPUs.
FSDP_SCRIPT = """
import json, sys
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from normguard.trainer.config import TrainConfig
from normguard.trainer.loop import Trainer

plugin = FullyShardedDataParallelPlugin(
    fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
    transformer_cls_names_to_wrap=["JointTransformerBlock"],
)
acc = Accelerator(cpu=True, fsdp_plugin=plugin)
assert acc.distributed_type == DistributedType.MULTI_CPU  # what accelerate itself chooses on CPU
acc.state.distributed_type, acc.state.fsdp_plugin = DistributedType.FSDP, plugin
trainer = Trainer(TrainConfig.from_yaml(sys.argv[1]).replace(out=sys.argv[2]), accelerator=acc)
name, p = next((k, v) for k, v in trainer.named.items() if "lora_B" in k)
base = trainer.backend.module.transformer_blocks[0].attn.to_q.base_layer.weight
shards = {"lora": [type(p).__name__, p.to_local().numel(), p.numel()],
          "base": [type(base).__name__, base.to_local().numel(), base.numel()]}
trainer.run()
with open(f"{sys.argv[2]}/shards{acc.process_index}.json", "w") as f:
    json.dump(shards, f)
"""

# A continuous reward (a tiny random CLIP's score): JPEG sizes are whole bytes, and a pixel that float
# summation order moves across a rounding boundary can reorder a group of two (a whole advantage sign).
SD3_RUN = {
    "prompts": PROMPTS,
    "method": "nft",
    "iterations": 3,
    "groups_per_iteration": 2,
    "group_size": 2,
    "sample_steps": 3,
    "train_timesteps": 2,
    "micro_batch_size": 2,
    "lr": 1e-2,
    "lora_rank": 4,
    "eval_every": 0,
    "tensorboard": False,
    "device": "cpu",
    "checkpoint_every": 1,
}


def launch(args: list, what: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, f"{what}:\n{out.stderr[-4000:]}"


def lora(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "normguard_lora.safetensors")


def assert_same_lora(a: dict, b: dict, what: str) -> None:
    """Equal up to the order of floating-point sums (all-reduce vs reduce-scatter vs one process). AdamW
    normalizes each element's update, so a gradient element that rounding moves across zero becomes a
    whole learning-rate step the other way: allow a few such elements, each at most 2 steps (2 x lr)
    apart. Runs of the same kind repeat bit for bit; a rank that missed the others' gradients takes a
    different step in a large share of the elements."""
    assert a.keys() == b.keys(), what
    assert max(v.abs().max().item() for k, v in a.items() if "lora_B" in k) > 1e-3, "the LoRA did not train"
    off = total = 0
    for k in a:
        diff = (a[k] - b[k]).abs()
        assert diff.max().item() <= 2 * SD3_RUN["lr"] + 1e-6, (
            f"{what}: {k} differs by {diff.max().item():.2e}"
        )
        off += int((diff > 2e-3 * a[k].abs().max()).sum())
        total += diff.numel()
    assert off <= 0.01 * total, f"{what}: {off} of {total} elements differ by more than rounding"


@pytest.fixture(scope="module")
def sd3_runs(tiny_sd3_dir, tmp_path_factory) -> Path:
    """One process (in this one) and DDP over two ranks of `normguard train` under torchrun."""
    root = tmp_path_factory.mktemp("sd3_runs")
    reward = {"name": "clip_score", "path": str(write_clip(root / "clip"))}
    for iterations in (2, 3):
        (root / f"run{iterations}.yaml").write_text(
            yaml.safe_dump(
                {**SD3_RUN, "model": str(tiny_sd3_dir), "iterations": iterations, "rewards": [reward]}
            )
        )
    cli = ["-m", "normguard", "train", "--config", root / "run3.yaml", "--out"]
    launch([sys.executable, *cli, root / "one"], "one process")
    torchrun = [BIN / "torchrun", "--nproc_per_node", "2", "--master_port", free_port()]
    launch([*torchrun, *cli, root / "ddp"], "DDP, two ranks")
    return root


@pytest.mark.slow
def test_fsdp2_ends_with_the_lora_of_ddp_and_of_one_process_and_resumes(sd3_runs):
    root = sd3_runs
    script = root / "fsdp.py"
    script.write_text(FSDP_SCRIPT)
    for config, out in (("run3", "fsdp"), ("run2", "fsdp_resumed"), ("run3", "fsdp_resumed")):
        torchrun = [BIN / "torchrun", "--nproc_per_node", "2", "--master_port", free_port()]
        launch([*torchrun, script, root / f"{config}.yaml", root / out], f"FSDP {config} -> {out}")
    for rank in (0, 1):  # each rank held half of every weight, frozen base and adapter alike
        shards = json.loads((root / "fsdp" / f"shards{rank}.json").read_text())
        for kind, (cls, local, full) in shards.items():
            assert cls == "DTensor" and local * 2 == full, (rank, kind, shards)
    fsdp = lora(root / "fsdp")
    assert_same_lora(fsdp, lora(root / "ddp"), "FSDP vs DDP")
    assert_same_lora(fsdp, lora(root / "one"), "FSDP vs one process")
    # resumed from iteration 2: the sharded optimizer state (Adam moments), the adapter and the old
    # policy were gathered into the checkpoint and sharded again, so iteration 3 repeats exactly
    resumed = lora(root / "fsdp_resumed")
    lines = (root / "fsdp_resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2, 3]
    assert all(torch.equal(resumed[k], fsdp[k]) for k in fsdp)


@pytest.mark.slow
def test_two_nodes_end_with_the_lora_of_one_node_with_two_ranks(sd3_runs):
    """Two torchrun commands, one per "node", meeting at a rendezvous on the loopback address."""
    root, port = sd3_runs, free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rendezvous = f"--nnodes 2 --nproc_per_node 1 --master_addr 127.0.0.1 --master_port {port}".split()
    cli = ["-m", "normguard", "train", "--config", str(root / "run3.yaml"), "--out", str(root / "nodes")]
    logs = [root / f"node{rank}.log" for rank in (0, 1)]
    nodes = [  # output to files: a full pipe would block one node while the test waits for the other
        subprocess.Popen(
            [str(BIN / "torchrun"), *rendezvous, "--node_rank", str(rank), *cli],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        for rank, log in enumerate(logs)
    ]
    for rank, node in enumerate(nodes):
        assert node.wait(timeout=600) == 0, f"node {rank}:\n{logs[rank].read_text()[-4000:]}"
    assert_same_lora(lora(root / "nodes"), lora(root / "ddp"), "two nodes vs one node")
