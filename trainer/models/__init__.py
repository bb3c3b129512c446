"""Small flow-matching models that ship with the package (no download needed)."""

from .tinyflow import TinyFlowConfig, TinyFlowModel, WordTokenizer

__all__ = ["TinyFlowConfig", "TinyFlowModel", "WordTokenizer"]
