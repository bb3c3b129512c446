"""The NormGuard training core: no module here imports ComfyUI."""

from .advantages import combined_advantages, group_advantages
from .config import TrainConfig
from .loop import Trainer, TrainResult, train
from .penalty import norm_stats, normguard_penalty, velocity_norms

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "combined_advantages",
    "group_advantages",
    "norm_stats",
    "normguard_penalty",
    "train",
    "velocity_norms",
]
