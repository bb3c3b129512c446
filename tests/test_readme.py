"""The README names everything a user can pick: every reward, every config key, every node.

These lists drifted before (8 of 13 rewards in the table, a node missing from the node list); each
test reads the source of truth and fails with the names the README lacks.
"""

import dataclasses
import re
from pathlib import Path

from normguard.trainer.config import TrainConfig
from normguard.trainer.rewards import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The README text under one `## title` heading, up to the next one."""
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_every_reward_is_in_the_rewards_table():
    table = section("Library and CLI")
    missing = [rid for rid in REGISTRY if not re.search(rf"^\|[^\n]*`{rid}`", table, re.M)]
    assert not missing, f"README rewards table lacks {missing}"


def test_every_config_key_is_documented():
    keys = section("Config keys")
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f"`{f.name}`" not in keys]
    assert not missing, f"README 'Config keys' lacks {missing}"


def test_every_node_is_in_the_node_list():
    sources = "".join(p.read_text() for p in (ROOT / "nodes").glob("*.py"))
    node_ids = set(re.findall(r'node_id="(NormGuard\w+)"', sources))
    assert len(node_ids) >= 8, 'the node ids are no longer declared as node_id="..." literals'
    missing = sorted(i for i in node_ids if f"(`{i}`" not in section("Nodes"))
    assert not missing, f"README 'Nodes' lacks {missing}"
