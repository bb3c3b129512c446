"""NormGuard: reward fine-tuning of flow-matching image models without velocity-norm inflation.

As a library:

    from normguard import TrainConfig, train, normguard_penalty
    result = train(TrainConfig(model="builtin", rewards=["jpeg_incompressibility"], prompts=["a red circle"]))

As a ComfyUI custom node pack this folder is loaded by ComfyUI, which calls `comfy_entrypoint`; the
nodes (and ComfyUI) are imported only then. Public names load lazily, so importing the package is cheap.
"""

import os
import sys
from importlib import import_module

__version__ = "0.1.0"
# ComfyUI serves this folder at /extensions/<pack folder>/ and the frontend imports every .js in it
WEB_DIRECTORY = "./web"

_PUBLIC = {
    "normguard_penalty": ".trainer.penalty",
    "velocity_norms": ".trainer.penalty",
    "TrainConfig": ".trainer.config",
    "Trainer": ".trainer.loop",
    "TrainResult": ".trainer.loop",
    "train": ".trainer.loop",
    "Callback": ".trainer.callbacks",
    "RewardSpec": ".trainer.rewards",
    "build_rewards": ".trainer.rewards",
    "available_rewards": ".trainer.rewards",
    "load_backend": ".trainer.backends",
}
__all__ = [*_PUBLIC, "comfy_entrypoint"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cli_main() -> None:
    """The `normguard` command. Idle OpenMP threads sleep instead of spinning: on a busy or small CPU
    spinning threads steal the time slices the working ones need."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .trainer.cli import main

    sys.exit(main())


async def comfy_entrypoint():
    from .nodes import NormGuardExtension

    return NormGuardExtension()
