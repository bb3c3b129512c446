"""Checks on what a shared workflow may put into the pack's text inputs: sizes are capped and YAML is
read without anchors or aliases (whose expansion is exponential and cannot be cancelled). The values
themselves are checked by TrainConfig.validate on the trainer node's merged settings."""

from __future__ import annotations

from typing import Any

import yaml

MAX_EXTRA = 16 * 1024  # bytes of `extra` YAML: a few hundred keys
MAX_PROMPTS = 4 * 1024 * 1024  # bytes of a prompt list: tens of thousands of prompts
MAX_OPTIONS = 16 * 1024  # bytes of a reward's options JSON


def capped(text: str, limit: int, who: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{who} must be text, got {type(text).__name__}")
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > limit:
        raise ValueError(f"{who} is {size} bytes; at most {limit} are accepted")
    return text


def plain_yaml(text: str, who: str) -> Any:
    """YAML data with no anchors, aliases or tags beyond the standard ones (safe_load builds no objects)."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ValueError(
                    f"{who}: YAML anchors and aliases (& and *) are not accepted; write values out"
                )
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{who} is not valid YAML: {e}") from e
