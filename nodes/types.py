"""The pack's custom socket types (links connect only equal type names)."""

from comfy_api.latest import io

RewardType = io.Custom("NORMGUARD_REWARD")  # list[RewardSpec]: what to load, loaded when used
OptionsType = io.Custom("NORMGUARD_OPTIONS")  # dict of TrainConfig overrides
ProbeLogType = io.Custom("NORMGUARD_PROBE_LOG")  # nodes.probe_log.ProbeLog


class TrainOptions(dict):
    """What NormGuardTrainOptions outputs. ComfyUI does not type-check custom-type inputs, so an
    API-format workflow can put a literal JSON object where options go; a literal cannot be an
    instance of this class, so the trainer node tells them apart."""


def reward_specs(value: object, who: str) -> list:
    """A reward input's value, if it came from the pack's reward nodes (a list of RewardSpec)."""
    from ..trainer.rewards import RewardSpec

    if not isinstance(value, list) or not all(isinstance(s, RewardSpec) for s in value):
        raise ValueError(f"{who}: connect a NormGuard reward node (got a {type(value).__name__})")
    return value
