"""The NormGuard training core: no module here imports ComfyUI."""

from .advantages import combined_advantages, group_advantages
from .penalty import norm_stats, normguard_penalty, velocity_norms

__all__ = ["combined_advantages", "group_advantages", "norm_stats", "normguard_penalty", "velocity_norms"]
