"""Node widgets built from TrainConfig's declarations (trainer/config.py), the way ComfyUI's own nodes
build their Combos from registries: a widget's default, bounds, step, options and tooltip are its
key's, so what a widget refuses, TrainConfig.validate() refuses too (an API-format workflow can skip
the widget, never the check).
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ..trainer.config import TrainConfig
from ..trainer.settings import default, key_types, spec

# Where the nodes deliberately start from other values than the library.
NODE_DEFAULTS = {
    "gradient_checkpointing": True,  # the graph's other models share the GPU: spend time, not memory
    "tensorboard": False,  # the node draws its own live curves
    "width": 512,  # a MODEL carries no native size
    "height": 512,
}


def config_input(key: str, name: str | None = None, *, tooltip: str | None = None, **extra: Any) -> io.Input:
    """The widget for TrainConfig key `key` (input `name`, by default the key itself). A number whose
    default is None (e.g. lora_alpha) gets the widget value 0 for "the default"; the node maps 0 back."""
    kind, s = key_types(TrainConfig)[key], spec(TrainConfig, key)
    value = NODE_DEFAULTS.get(key, default(TrainConfig, key))
    kw: dict[str, Any] = {"tooltip": tooltip or s.help, **extra}
    name = name or key
    if kind.is_list:
        raise ValueError(f"{key} is a list: give it its own input")
    if kind.base is bool:
        return io.Boolean.Input(name, default=value, **kw)
    if s.choices is not None:
        return io.Combo.Input(name, options=list(s.choices), default=value, **kw)
    if kind.base not in (int, float):
        return io.String.Input(name, default=value or "", **kw)
    low = s.min if s.min is not None else s.above
    if value is None:  # 0 stands for None: the widget starts at 0
        value, low = kind.base(0), kind.base(0)
    widget = io.Int if kind.base is int else io.Float
    high = s.max if s.max is not None else s.below
    return widget.Input(name, default=value, min=low, max=high, step=s.step, **kw)
