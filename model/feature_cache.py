"""Cache of frozen-encoder outputs, keyed by image hash, encoder, input size and transform.

The encoder is frozen, so its outputs for an image never change: training, evaluation and
prediction encode each image once and then only run the small heads and the decoder.
Two levels: an in-memory LRU and an optional on-disk store bounded in bytes (oldest
access evicted first), written atomically and stored in half precision by default.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from model.encoders.base import EncoderOutput


@dataclass(frozen=True)
class CacheKey:
    """Identity of one cached encoding."""

    sha256: str
    encoder_id: str  # the encoder's `cache_id`: its id and the layout of its outputs
    input_size: int
    transform: str = "identity"

    def filename(self) -> str:
        return f"{self.sha256}_{self.transform}.pt"

    def folder(self) -> str:
        return f"{self.encoder_id}-{self.input_size}/{self.sha256[:2]}"


class FeatureCache:
    """Two-level cache of `EncoderOutput`s (single images, batch dimension 1)."""

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        max_disk_bytes: int = 2 << 30,
        max_memory_items: int = 4096,
        half: bool = True,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.max_disk_bytes = max_disk_bytes
        self.max_memory_items = max_memory_items
        self.dtype = torch.float16 if half else torch.float32
        self._memory: OrderedDict[CacheKey, EncoderOutput] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self._disk_bytes = self._scan_disk_bytes()

    # ----------------------------------------------------------------- disk
    def _path(self, key: CacheKey) -> Path | None:
        return None if self.root is None else self.root / key.folder() / key.filename()

    def _scan_disk_bytes(self) -> int:
        if self.root is None or not self.root.exists():
            return 0
        return sum(p.stat().st_size for p in self.root.rglob("*.pt"))

    @property
    def disk_bytes(self) -> int:
        """Bytes the on-disk store holds now."""
        return self._disk_bytes

    def _write(self, path: Path, value: EncoderOutput) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save({k: v.contiguous() for k, v in value.as_dict().items()}, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._disk_bytes += path.stat().st_size
        if self._disk_bytes > self.max_disk_bytes:
            self._evict_disk()

    def _evict_disk(self) -> None:
        assert self.root is not None
        files = sorted(self.root.rglob("*.pt"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.max_disk_bytes * 0.9:
                break
            size = p.stat().st_size
            p.unlink(missing_ok=True)
            total -= size
        self._disk_bytes = total

    def _read(self, path: Path) -> EncoderOutput | None:
        try:
            named = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # torch raises several unrelated types for damaged files
            path.unlink(missing_ok=True)  # a damaged entry is recomputed, never trusted
            return None
        os.utime(path)  # mark as recently used for eviction
        return EncoderOutput.from_dict(named)

    # ----------------------------------------------------------------- API
    def get(self, key: CacheKey) -> EncoderOutput | None:
        """The cached output for `key`, or None."""
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        path = self._path(key)
        if path is not None and path.is_file():
            value = self._read(path)
            if value is not None:
                self._remember(key, value)
                self.hits += 1
                return value
        self.misses += 1
        return None

    def put(self, key: CacheKey, value: EncoderOutput) -> None:
        """Store one single-image output (converted to the cache's dtype, on CPU)."""
        value = value.to("cpu", self.dtype)
        self._remember(key, value)
        path = self._path(key)
        if path is not None:
            self._write(path, value)

    def _remember(self, key: CacheKey, value: EncoderOutput) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_memory_items:
            self._memory.popitem(last=False)

    def get_or_compute(
        self,
        keys: Sequence[CacheKey],
        compute: Callable[[list[int]], EncoderOutput],
        *,
        batch_size: int = 8,
    ) -> EncoderOutput:
        """Outputs for `keys` as one batch; misses are computed by `compute(indices)`,
        at most `batch_size` at a time, and stored."""
        found: dict[int, EncoderOutput] = {}
        missing = []
        for i, key in enumerate(keys):
            value = self.get(key)
            if value is None:
                missing.append(i)
            else:
                found[i] = value
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            batch = compute(chunk)
            for j, i in enumerate(chunk):
                single = batch.select(j)
                self.put(keys[i], single)
                found[i] = self._memory[keys[i]]
        return EncoderOutput.stack([found[i] for i in range(len(keys))])
