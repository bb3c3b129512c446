"""NormGuardLoadPrompts: a prompt list from a text file in ComfyUI's input folder."""

from __future__ import annotations

import os
from pathlib import Path

from comfy_api.latest import io

from ..trainer.prompt_files import read_prompt_lines

EXTENSIONS = (".txt",)


def prompt_files() -> list[str]:
    """Text files below the input folder, as relative paths (the only files this node may read)."""
    import folder_paths

    root = Path(folder_paths.get_input_directory())
    found = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS]
    return sorted(found)


def resolve(name: str) -> Path:
    import folder_paths

    root = Path(folder_paths.get_input_directory()).resolve()
    path = (root / name).resolve()
    if root not in path.parents or path.suffix.lower() not in EXTENSIONS or not path.is_file():
        raise ValueError(f"NormGuardLoadPrompts: {name!r} is not a .txt file in ComfyUI's input folder")
    return path


class NormGuardLoadPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormGuardLoadPrompts",
            display_name="NormGuard Load Prompts",
            search_aliases=["prompt list", "prompts file"],
            category="NormGuard",
            description="Training or evaluation prompts from a .txt file in ComfyUI's input folder: one "
            "prompt per line; blank lines and lines starting with # are skipped.",
            inputs=[io.Combo.Input("file", options=prompt_files() or ["(no .txt file in input/)"])],
            outputs=[io.String.Output(display_name="prompts"), io.Int.Output(display_name="count")],
        )

    @classmethod
    def fingerprint_inputs(cls, file: str) -> float:
        """Re-read when the file changes (ComfyUI would otherwise serve the cached prompts)."""
        try:
            return os.path.getmtime(resolve(file))
        except ValueError:
            return float("nan")

    @classmethod
    def execute(cls, file: str) -> io.NodeOutput:
        prompts = read_prompt_lines(resolve(file).read_text(encoding="utf-8"))
        if not prompts:
            raise ValueError(f"NormGuardLoadPrompts: {file} holds no prompt (one per line)")
        text = "\n".join(prompts)
        return io.NodeOutput(text, len(prompts), ui={"text": [f"{len(prompts)} prompts from {file}"]})
