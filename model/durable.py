"""Files that survive a crash or a power cut: after either, a path holds the old file or the
complete new one, never a truncated mix (checkpoints, normality models)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_folder(folder: Path) -> None:
    """Sync a folder so that a rename inside it survives a power cut (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path | str, write: Callable[[BinaryIO], None]) -> Path:
    """`write` into a temporary file in the same folder, flush + fsync it, rename it onto
    `path` and fsync the folder; on any failure the temporary file is removed and `path`
    is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path
