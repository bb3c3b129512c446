"""LoRA files in ComfyUI: apply one exactly as the stock LoraLoader does (but refuse a file whose
keys match nothing), show its normguard.* metadata, and publish a trained LoRA into the loras folder
under a free name (never overwriting)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from comfy_api.latest import io
from safetensors.torch import load_file

from ..trainer.files import atomic_write, free_path, read_json, write_json
from ..trainer.lora import all_finite, normguard_facts
from .messages import show_text


def lora_patches(model: Any, lora: dict) -> dict:
    """The weight patches ComfyUI's LoRA loader would make of `lora` for this MODEL."""
    import comfy.lora
    import comfy.lora_convert

    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    return comfy.lora.load_lora(comfy.lora_convert.convert_lora(dict(lora)), key_map, log_missing=False)


def apply_lora_file(
    model: Any, path: str | Path, strength: float = 1.0, who: str = "NormGuard"
) -> tuple[Any, int]:
    """(model clone with the file applied as LoraLoader applies it, number of patched weights).
    Raises when no key of the file matches the model (ComfyUI itself would only log it)."""
    import comfy.sd
    import comfy.utils

    lora, metadata = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    patches = lora_patches(model, lora)
    if not patches:
        sample = ", ".join(sorted(lora)[:3])
        raise ValueError(
            f"{who}: no key of {Path(path).name} matches this {type(model.model).__name__} model (keys such as "
            f"{sample}); it was probably trained for another model family"
        )
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0.0, lora_metadata=metadata)
    return patched, len(patches)


def describe(metadata: dict[str, str], applied: int, total_keys: int, name: str) -> str:
    facts = normguard_facts(metadata)
    lines = [f"{name}: {applied} weights patched ({total_keys} tensors in the file)"]
    if "modelspec.architecture" in metadata:
        lines.append(f"architecture: {metadata['modelspec.architecture']}")
    lines += [f"{k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(facts.items())]
    if not facts:
        lines.append("(no normguard metadata: not trained by NormGuard)")
    return "\n".join(lines)


def publish_lora(src: Path, name: str, record: Path, iterations: int) -> str:
    """Copy a run's LoRA into the first loras folder as `name.safetensors`, or `name_2...` if taken,
    and return its name in the loras list. A run that already published this iteration count gets
    its earlier file back (a re-queued, finished run does not pile up copies)."""
    import folder_paths

    root = Path(folder_paths.get_folder_paths("loras")[0])
    try:
        saved = read_json(record, "export record") if record.is_file() else {}
    except ValueError:
        saved = {}  # a record cut short by a kill: publish again
    if isinstance(saved, dict) and saved.get("iterations") == iterations:
        file = saved.get("file")
        if isinstance(file, str) and Path(file).name == file and (root / file).is_file():
            return file
    tensors = load_file(str(src))
    if not all_finite(tensors.values()):
        raise ValueError(
            f"{Path(src).name} holds NaN or inf weights; it is not published into the loras folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    dest = free_path(root / f"{name}.safetensors")
    atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
    write_json(record, {"iterations": iterations, "file": dest.name})
    return dest.name


class NormGuardLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        import folder_paths

        return io.Schema(
            node_id="NormGuardLoraLoader",
            display_name="NormGuard LoRA Loader",
            search_aliases=["lora", "load lora"],
            category="NormGuard",
            description=(
                "Applies a LoRA to the MODEL exactly as the stock LoraLoader does, shows its NormGuard training "
                "facts, and fails when no key of the file matches the model."
            ),
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras")),
                io.Float.Input("strength", default=1.0, min=-100.0, max=100.0, step=0.01),
            ],
            outputs=[io.Model.Output(display_name="MODEL")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, lora_name, strength) -> io.NodeOutput:
        import folder_paths

        from ..trainer.lora import read_lora_metadata

        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        patched, applied = apply_lora_file(model, path, strength, "NormGuardLoraLoader")
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            total = len(list(f.keys()))
        text = describe(read_lora_metadata(path), applied, total, lora_name)
        show_text(cls.hidden.unique_id, text)
        return io.NodeOutput(
            patched, ui={"text": [text], "normguard_lora": [{"patched": applied, "tensors": total}]}
        )
