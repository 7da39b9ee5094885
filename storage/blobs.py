"""Content-addressed blob store: files named by their sha256 under prefix folders.

Writes go to a temporary file in the destination folder and are renamed into place, so a
blob is either complete or absent. Reads verify the hash. `collect_garbage` removes blobs
no row refers to (for instance after a crash between blob write and row insert).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from storage.errors import BlobIntegrityError, NotFoundError


class BlobStore:
    """Blobs under `root/ab/cd/<sha256>`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` (idempotent) and return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path(sha)
        if dest.is_file():
            return sha
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def get(self, sha256: str) -> bytes:
        """The blob's bytes, verified; NotFoundError or BlobIntegrityError otherwise."""
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {sha256} is missing from {self.root}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise BlobIntegrityError(
                f"blob {sha256} is damaged: its bytes hash to {actual} ({path})"
            )
        return data

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def __iter__(self) -> Iterator[str]:
        for path in self.root.glob("*/*/*"):
            if path.is_file() and not path.name.startswith("."):
                yield path.name

    def collect_garbage(self, referenced: set[str], *, min_age_s: float = 3600.0) -> int:
        """Delete blobs not in `referenced` and older than `min_age_s` (so a blob being
        written right now for a row not yet committed is left alone); also delete stale
        temporary files. Returns how many files were removed."""
        now = time.time()
        removed = 0
        for path in self.root.glob("*/*/*"):
            if not path.is_file() or now - path.stat().st_mtime < min_age_s:
                continue
            if path.name.startswith(".") or path.name not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
