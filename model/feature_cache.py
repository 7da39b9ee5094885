"""Cache of frozen-encoder outputs, keyed by image hash, encoder, input size and transform.

The encoder is frozen, so its outputs for an image never change: training, evaluation and
prediction encode each image once and then only run the small heads and the decoder.
Two levels, both bounded in bytes: an in-memory LRU and an optional on-disk store (oldest
access evicted first), written atomically and stored in half precision by default.

The web app calls one cache from several request threads, so every shared structure is
guarded by a lock; serialising and reading files run outside the locks. The disk is only
an accelerator: when writing fails (full disk, read-only or missing folder) the cache logs
once and keeps working from memory, so predictions never fail because of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from model.encoders.base import EncoderOutput

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 1 << 30
DEFAULT_DISK_BYTES = 2 << 30
DISK_EVICT_TO = 0.9  # evict down to this share of the bound, so scans stay rare


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


def output_bytes(value: EncoderOutput) -> int:
    """Bytes the tensors of `value` occupy in memory."""
    return sum(t.numel() * t.element_size() for t in value.as_dict().values())


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """`t`, copied when it is a view into a larger tensor (one image of a batch), so a
    cached entry never keeps its whole batch alive behind the byte count."""
    if t.untyped_storage().nbytes() > t.numel() * t.element_size():
        return t.clone()
    return t


class FeatureCache:
    """Two-level cache of `EncoderOutput`s (single images, batch dimension 1).

    `max_memory_bytes` and `max_disk_bytes` bound the two levels; `max_memory_items`
    optionally bounds the number of entries in memory as well.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        max_disk_bytes: int = DEFAULT_DISK_BYTES,
        max_memory_bytes: int = DEFAULT_MEMORY_BYTES,
        max_memory_items: int | None = None,
        half: bool = True,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.max_disk_bytes = max_disk_bytes
        self.max_memory_bytes = max_memory_bytes
        self.max_memory_items = max_memory_items
        self.dtype = torch.float16 if half else torch.float32
        self._lock = threading.Lock()  # guards the in-memory LRU, its bytes and the counters
        self._disk_lock = threading.Lock()  # guards renames, the disk byte count, eviction
        self._memory: OrderedDict[CacheKey, tuple[EncoderOutput, int]] = OrderedDict()
        self._memory_bytes = 0
        self._writable = self.root is not None
        self.hits = 0
        self.misses = 0
        self._disk_bytes = sum(size for _, size, _ in self._scan_disk())

    # ----------------------------------------------------------------- disk
    def _path(self, key: CacheKey) -> Path | None:
        return None if self.root is None else self.root / key.folder() / key.filename()

    def _scan_disk(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every entry on disk; files that vanish are skipped."""
        if self.root is None or not self.root.is_dir():
            return []
        found = []
        try:
            for p in self.root.rglob("*.pt"):
                try:
                    st = p.stat()
                except OSError:  # removed by another thread or process meanwhile
                    continue
                found.append((st.st_mtime, st.st_size, p))
        except OSError:
            return found
        return found

    @property
    def disk_bytes(self) -> int:
        """Bytes the on-disk store holds now (as far as this cache knows)."""
        with self._disk_lock:
            return self._disk_bytes

    @property
    def memory_bytes(self) -> int:
        """Bytes of tensors the in-memory level holds now."""
        with self._lock:
            return self._memory_bytes

    @property
    def writes_to_disk(self) -> bool:
        """False for a memory-only cache, or once a disk write has failed."""
        return self._writable

    def _write(self, path: Path, value: EncoderOutput) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save({k: v.contiguous() for k, v in value.as_dict().items()}, fh)
            size = os.path.getsize(tmp)
            # Renames, byte counts and evictions happen one at a time, so an eviction's
            # scan sees every file this cache has written and the count stays exact.
            with self._disk_lock:
                try:
                    replaced = path.stat().st_size
                except FileNotFoundError:
                    replaced = 0
                os.replace(tmp, path)
                self._disk_bytes += size - replaced
                if self._disk_bytes > self.max_disk_bytes:
                    self._evict_disk()
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _store(self, path: Path, value: EncoderOutput) -> None:
        """Write one entry; on failure stop writing to disk for good and say so once."""
        if not self._writable:
            return
        try:
            self._write(path, value)
        except Exception as exc:  # OSError, or torch's RuntimeError on a full disk
            with self._lock:
                first, self._writable = self._writable, False
            if first:
                log.warning(
                    "feature cache: cannot write to %s (%s); keeping features in memory only",
                    self.root,
                    exc,
                )

    def _evict_disk(self) -> None:
        """Delete the least recently used files until the store is under its bound
        (called with the disk lock held)."""
        files = sorted(self._scan_disk(), key=lambda f: f[0])
        total = sum(size for _, size, _ in files)
        for _, size, p in files:
            if total <= self.max_disk_bytes * DISK_EVICT_TO:
                break
            try:
                p.unlink(missing_ok=True)
            except OSError:
                continue
            total -= size
        self._disk_bytes = total

    def _read(self, path: Path) -> EncoderOutput | None:
        try:
            named = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None  # evicted meanwhile
        except Exception:  # torch raises several unrelated types for damaged files
            with contextlib.suppress(OSError):  # a damaged entry is recomputed, never trusted
                path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):  # read-only or evicted: the entry is still good
            os.utime(path)  # mark as recently used for eviction
        return EncoderOutput.from_dict(named)

    # ----------------------------------------------------------------- API
    def get(self, key: CacheKey) -> EncoderOutput | None:
        """The cached output for `key`, or None."""
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return entry[0]
        path = self._path(key)
        value = self._read(path) if path is not None and path.is_file() else None
        with self._lock:
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            self._remember(key, value)
        return value

    def put(self, key: CacheKey, value: EncoderOutput) -> EncoderOutput:
        """Store one single-image output (converted to the cache's dtype, on CPU); returns
        the stored value."""
        value = value.to("cpu", self.dtype)
        value = EncoderOutput(
            features=[_own_storage(f) for f in value.features],
            embedding=None if value.embedding is None else _own_storage(value.embedding),
        )
        with self._lock:
            self._remember(key, value)
        path = self._path(key)
        if path is not None:
            self._store(path, value)
        return value

    def _remember(self, key: CacheKey, value: EncoderOutput) -> None:
        """Insert under the lock and evict least recently used entries past the bounds;
        an entry larger than the whole memory bound is not kept."""
        size = output_bytes(value)
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_bytes -= old[1]
        if size > self.max_memory_bytes:
            return
        self._memory[key] = (value, size)
        self._memory_bytes += size
        items = self.max_memory_items
        while self._memory_bytes > self.max_memory_bytes or (
            items is not None and len(self._memory) > items
        ):
            _, (_, dropped) = self._memory.popitem(last=False)
            self._memory_bytes -= dropped

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
                found[i] = self.put(keys[i], batch.select(j))
        return EncoderOutput.stack([found[i] for i in range(len(keys))])
