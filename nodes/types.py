"""The pack's custom socket types (links connect only equal type names)."""

from comfy_api.latest import io

RewardType = io.Custom("NORMGUARD_REWARD")  # list[RewardSpec]: what to load, loaded when used
OptionsType = io.Custom("NORMGUARD_OPTIONS")  # dict of TrainConfig overrides
ProbeLogType = io.Custom("NORMGUARD_PROBE_LOG")  # nodes.probe_log.ProbeLog
