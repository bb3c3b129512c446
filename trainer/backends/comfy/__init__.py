"""Training on a model ComfyUI already loaded. The only package under trainer/ that touches ComfyUI;
it imports `comfy` inside functions only, so importing it never needs ComfyUI.

- patching.py: patching a shared ComfyUI model without modifying it (autograd through inference
  weights, bypass forward patches with an off-switch, checkpointing); the probe node uses it too.
- lora.py: the LoRA adapter and its two file formats (why it is not comfy.weight_adapter's).
- families.py: what is specific to a model family (default targets, architecture names, key maps).
- identity.py: whether a MODEL is trainable, and its fingerprint.
- conditioning.py: prompts -> the model's own inputs, batched as ComfyUI's sampler batches conds.
- backend.py: ComfyBackend, the FlowBackend over a MODEL + CLIP + VAE.
"""

from .backend import ComfyBackend
from .families import architecture
from .identity import check_flow_model, flow_model_problem, model_fingerprint
from .lora import LORA_FORMATS
from .patching import ForwardPatch, Switch, patcher_injection, plain, trainable_view, training_mode

__all__ = [
    "LORA_FORMATS",
    "ComfyBackend",
    "ForwardPatch",
    "Switch",
    "architecture",
    "check_flow_model",
    "flow_model_problem",
    "model_fingerprint",
    "patcher_injection",
    "plain",
    "trainable_view",
    "training_mode",
]
