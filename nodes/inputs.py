"""Checks on what a shared workflow may put into the pack's text inputs: sizes are capped, YAML is
read without anchors or aliases (whose expansion is exponential and cannot be cancelled), and every
TrainConfig key a text sets is type-checked against the dataclass's annotation."""

from __future__ import annotations

import types
import typing
from typing import Any

import yaml

from ..trainer.config import TrainConfig

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


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return False  # reward specs and anything else: not settable from text


def _describe(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if typing.get_origin(tp) is list:
        return f"a list of {_describe(args[0])}"
    return {type(None): "null", int: "an integer", float: "a number", bool: "true/false", str: "text"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def check_types(values: dict[str, Any], who: str) -> None:
    """Every key a known TrainConfig key whose value has the annotated type (e.g. eval_prompts: a
    list of strings, not a number or a mapping)."""
    hints = typing.get_type_hints(TrainConfig)
    for key, value in values.items():
        if not isinstance(key, str) or key not in hints:
            continue  # unknown keys are reported by the caller, with the list of known ones
        if not _matches(value, hints[key]):
            raise ValueError(f"{who}: {key} must be {_describe(hints[key])}, got {value!r:.80}")
