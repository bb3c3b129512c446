"""Reading a RewardSpec's reward-specific options, refusing names the reward does not know."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..dtypes import dtype_named
from .base import Reward, RewardFactory, RewardSpec


def check_options(spec: RewardSpec, allowed: set[str]) -> dict[str, Any]:
    """spec.options, after making sure a typo cannot silently fall back to a default."""
    unknown = set(spec.options) - allowed
    if unknown:
        raise ValueError(
            f"reward {spec.name!r} has no option(s) {sorted(unknown)}; "
            f"it takes: {', '.join(sorted(allowed)) or 'none'}"
        )
    return spec.options


def no_options(make: Callable[[], Reward]) -> RewardFactory:
    """The factory of a reward that takes no options: `make()`, after refusing any option given."""

    def factory(spec: RewardSpec, device: torch.device) -> Reward:
        check_options(spec, set())
        return make()

    return factory


def dtype_option(spec: RewardSpec) -> torch.dtype:
    return dtype_named(spec.options.get("dtype", "float32"), f"reward {spec.name!r}: dtype")


def batch_size_option(spec: RewardSpec, default: int) -> int:
    size = spec.options.get("batch_size", default)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"reward {spec.name!r}: batch_size must be a positive integer, got {size!r}")
    return size
