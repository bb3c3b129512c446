"""Prompt files: UTF-8, one prompt per line, blank lines and # comments ignored (the CLI's --prompts
FILE, the config's prompts_file and eval_prompts_file, and the nodes' multi-line prompt inputs)."""

from __future__ import annotations

from pathlib import Path


def read_prompt_lines(text: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are ignored."""
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def read_prompt_file(path: str | Path, key: str) -> list[str]:
    """The prompts in file `path`; a missing file is an error that names the config `key` it came from."""
    path = Path(path)
    if not path.exists() or path.is_dir():  # exists(): pipes such as <(...) are fine
        raise FileNotFoundError(f"{key} {path} does not exist")
    return read_prompt_lines(path.read_text(encoding="utf-8"))
