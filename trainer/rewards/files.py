"""Finding reward weights on disk: a folder, a file, or a Hugging Face repo id already in the local
cache. Nothing is ever downloaded; what is missing is named in the error, with the files expected."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

# Each entry is one required file; a tuple lists names any one of which will do.
FileNeed = str | tuple[str, ...]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _describe(needs: list[FileNeed]) -> str:
    return ", ".join(n if isinstance(n, str) else " or ".join(n) for n in needs)


def _from_hf_cache(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError and friends): the caller explains
        return None


def find_folder(path: str | Path, needs: list[FileNeed], what: str) -> Path:
    """The folder `path` (or the cached snapshot of a Hugging Face repo id) holding every file in `needs`."""
    folder = Path(path).expanduser()
    if not folder.is_dir() and not folder.exists() and _REPO_ID.match(str(path)):
        cached = _from_hf_cache(str(path))
        if cached is None:
            raise FileNotFoundError(
                f"{what}: {path!r} is neither a folder nor a Hugging Face repo in the local cache "
                f"(nothing is downloaded at run time). Give a folder holding: {_describe(needs)}"
            )
        folder = cached
    if folder.is_file():
        raise NotADirectoryError(
            f"{what}: {str(folder)!r} is a file; give the folder that holds: {_describe(needs)}"
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what}: folder {str(folder)!r} does not exist; it must hold: {_describe(needs)}"
        )
    missing = [
        n for n in needs if not any((folder / f).is_file() for f in ((n,) if isinstance(n, str) else n))
    ]
    if missing:
        raise FileNotFoundError(
            f"{what}: folder {str(folder)!r} lacks {_describe(missing)}; expected: {_describe(needs)}"
        )
    return folder


def find_file(path: str | Path, what: str, suffixes: tuple[str, ...]) -> Path:
    """An existing file with one of `suffixes` (e.g. ".pth", ".safetensors")."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"{what}: file {str(file)!r} does not exist (expected a {' or '.join(suffixes)} file)"
        )
    if file.suffix.lower() not in suffixes:
        raise ValueError(f"{what}: {str(file)!r} is not a {' or '.join(suffixes)} file")
    return file


def load_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a torch pickle loaded with weights_only=True;
    a {"state_dict": ...} wrapper (as HPS ships) is unwrapped."""
    if file.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    try:
        data = torch.load(str(file), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{str(file)!r} holds more than tensors; pickled objects are never loaded (weights_only=True): "
            f"save its state dict as .safetensors instead ({err})"
        ) from err
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{str(file)!r} does not hold a state dict (a mapping of names to tensors)")
    return data
