"""Model backends: one protocol (base.FlowBackend), one implementation per model family."""

from .base import Cond, FlowBackend, cond_cat, cond_select, cond_to

__all__ = ["Cond", "FlowBackend", "cond_cat", "cond_select", "cond_to"]
