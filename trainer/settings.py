"""Declared settings: a dataclass field that carries its help, choices and range, and the checks
that read them. TrainConfig (config.py) is declared this way; the CLI and the node widgets read the
same declarations, so an allowed value is written once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Spec:
    """What a key accepts beyond its type."""

    help: str
    choices: tuple[str, ...] | None = None
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound (e.g. a clip norm)
    below: float | None = None  # exclusive upper bound (e.g. an EMA decay)
    step: float | None = None  # a node widget's granularity; not checked


def setting(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field with its Spec (a list default becomes a fresh list per instance)."""
    meta = {"spec": Spec(help, **spec)}
    if isinstance(default, list):
        return field(default_factory=functools.partial(list, default), metadata=meta)
    return field(default=default, metadata=meta)


def listed(names: Iterable[str]) -> str:
    """'a, b or c': choices in a help text, read from the table that defines them."""
    *first, last = names
    return f"{', '.join(first)} or {last}"


@dataclass(frozen=True)
class KeyType:
    base: type  # bool, int, float, str, or a list's element type
    is_list: bool
    optional: bool  # None allowed


@functools.cache
def key_types(cls: type) -> dict[str, KeyType]:
    """Each field's type, from the dataclass's annotations."""
    hints = typing.get_type_hints(cls)
    return {f.name: _key_type(hints[f.name]) for f in dataclasses.fields(cls)}


def _key_type(tp: Any) -> KeyType:
    args = typing.get_args(tp)
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        tp = next(a for a in args if a is not type(None))
    if typing.get_origin(tp) is list:
        return KeyType(typing.get_args(tp)[0], True, optional)
    return KeyType(tp, False, optional)


def spec(cls: type, name: str) -> Spec:
    """The declaration of field `name`."""
    return _fields(cls)[name].metadata["spec"]


def default(cls: type, name: str) -> Any:
    """The default value of field `name`."""
    f = _fields(cls)[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


@functools.cache
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def coerce_numbers(obj: Any) -> None:
    """Float fields given an int, or a number as text, become floats (YAML reads `1` as an int and
    `1e-4`, having no dot, as a string). Anything else is left for check_value to refuse."""
    for name, kind in key_types(type(obj)).items():
        value = getattr(obj, name)
        if kind.base is float and not kind.is_list and not isinstance(value, bool):
            if isinstance(value, int) or (isinstance(value, str) and _is_number(value)):
                setattr(obj, name, float(value))


def check_value(cls: type, name: str, value: Any) -> None:
    """Raise ValueError naming `name` unless `value` fits its declaration."""
    kind, s = key_types(cls)[name], spec(cls, name)
    if value is None and kind.optional:
        return
    if kind.is_list:
        ok = isinstance(value, list) and all(isinstance(v, kind.base) for v in value)
    elif kind.base is bool:
        ok = isinstance(value, bool)
    elif kind.base is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and _in_range(value, s)
    elif kind.base is float:
        ok = is_finite_number(value) and _in_range(value, s)
    else:
        ok = isinstance(value, kind.base) and (s.choices is None or value in s.choices)
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ValueError(f"{name} must be {describe(cls, name)}, got {shown}")


def describe(cls: type, name: str) -> str:
    """What field `name` accepts, in words."""
    kind, s = key_types(cls)[name], spec(cls, name)
    null = " (or null for the default)" if kind.optional else ""
    if kind.is_list:
        return f"a list of {'strings' if kind.base is str else kind.base.__name__}" + null
    if kind.base is bool:
        return "true or false"
    if s.choices is not None:
        return "one of " + ", ".join(repr(c) for c in s.choices)
    if kind.base not in (int, float):
        return f"a {'string' if kind.base is str else kind.base.__name__}" + null
    what = "an integer" if kind.base is int else "a finite number"
    low = f">= {_num(s.min)}" if s.min is not None else (f"> {_num(s.above)}" if s.above is not None else "")
    high = f"<= {_num(s.max)}" if s.max is not None else (f"< {_num(s.below)}" if s.below is not None else "")
    if s.min is not None and s.max is not None:
        bounds = f"from {_num(s.min)} to {_num(s.max)}"
    else:
        bounds = " and ".join(b for b in (low, high) if b)
    return f"{what} {bounds}".strip() + null


def is_finite_number(x: Any) -> bool:
    try:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _in_range(x: float, s: Spec) -> bool:
    above, below = s.above is None or x > s.above, s.below is None or x < s.below
    return (s.min is None or x >= s.min) and (s.max is None or x <= s.max) and above and below


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
