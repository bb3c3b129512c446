"""The ComfyUI extension: every NormGuard node (imported only inside ComfyUI)."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .aliases import old_id_nodes
from .lora import NormGuardLoraLoader
from .probe import VelocityNormGraph, VelocityNormProbe
from .prompts import NormGuardLoadPrompts
from .rewards import reward_nodes
from .train import NormGuardTrainLoRA, NormGuardTrainOptions


class NormGuardExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            NormGuardTrainLoRA,
            NormGuardTrainOptions,
            NormGuardLoadPrompts,
            *reward_nodes(),
            VelocityNormProbe,
            VelocityNormGraph,
            NormGuardLoraLoader,
            *old_id_nodes(),
        ]
