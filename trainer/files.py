"""Durable file writes: a crash, a kill, a full disk or a power cut never leaves a half-written file
under a name that is read back. Data is written to a temporary name, fsync'd, then renamed (and the
folder fsync'd); temporaries carry `.tmp` in their name so that the next start can sweep them."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

TMP_MARK = ".tmp"


def _umask() -> int:
    """The process umask, read without changing it where the platform allows (threads may be writing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's: its entries') data to the disk."""
    if Path(path).is_dir():
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    else:  # Windows commits only a writable handle
        flags = os.O_RDWR if os.name == "nt" else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # folders cannot be opened on Windows; their renames are durable there anyway
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(path: str | Path) -> None:
    """Give a freshly written file the process umask's mode (safetensors writes 0600, which a ComfyUI
    running as another user cannot read) and flush it to the disk."""
    os.chmod(path, 0o666 & ~_umask())
    fsync_path(path)


def write_sealed(path: Path, write: Callable[[Path], None]) -> Path:
    """write(path), then seal it. A serializer's failure (safetensors and torch.save raise their own
    types on a full disk) becomes an OSError that names the file."""
    try:
        write(path)
    except OSError:
        raise
    except Exception as e:
        if shutil.disk_usage(path.parent).free < 2**20:  # torch.save says only "unexpected pos"
            raise OSError(errno.ENOSPC, f"No space left on device: could not write {path} ({e})") from e
        raise OSError(f"could not write {path}: {e}") from e
    seal(path)
    return path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temporary file beside `path`, flush it, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}-{os.getpid()}")
    try:
        write_sealed(tmp, write)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float as None: bare NaN/Infinity are not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(json_safe(data), indent=1, allow_nan=False))


def read_json(path: str | Path, what: str) -> Any:
    """JSON from a file the project wrote; a torn or empty file raises ValueError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is damaged (empty or cut short): {e}") from e


def read_yaml(path: str | Path, what: str) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is damaged (empty or cut short): {e}") from e


_STALE = re.compile(r"^\..+\.tmp-\d+$|^iter-\d+(\.old)?\.tmp$")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete what a killed write of this module left in `folder` (never a finished file). Call it
    only where no other process is writing (a run folder as its run starts)."""
    folder = Path(folder)
    gone = []
    if folder.is_dir():
        for p in folder.iterdir():
            if _STALE.match(p.name):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                gone.append(p)
    return gone


def free_path(path: str | Path) -> Path:
    """`path` if nothing is there, else the first free `stem_2.ext`, `stem_3.ext`, ... (never overwrite)."""
    path = Path(path)
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
        n += 1
    return candidate
