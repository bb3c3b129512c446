"""NormGuard: reward fine-tuning of flow-matching image models without velocity-norm inflation.

As a library: `from normguard.trainer import ...`. As a ComfyUI custom node pack this folder is
loaded by ComfyUI, which calls `comfy_entrypoint`; the nodes (and ComfyUI) are imported only then.
"""

__version__ = "0.1.0"


async def comfy_entrypoint():
    from .nodes import NormGuardExtension

    return NormGuardExtension()
