"""Where prediction time goes: tiles, encoder, heads and stitching, for `bench-image`.

Prediction code takes an optional `StageTimes` and adds to it; None costs nothing. Tile
batches on a compute pool add from several threads at once: their stage times are the sum
over the threads, not wall time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class StageTimes:
    """Seconds spent per stage and tiles processed (one tile per view counts once)."""

    tiles: int = 0
    encode_s: float = 0.0
    heads_s: float = 0.0
    stitch_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @contextlib.contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Add the block's wall time to `<stage>_s`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            name, elapsed = f"{stage}_s", time.perf_counter() - start
            with self._lock:
                setattr(self, name, getattr(self, name) + elapsed)


def measured(times: StageTimes | None, stage: str) -> contextlib.AbstractContextManager[None]:
    """`times.measure(stage)`, or a no-op when nobody is measuring."""
    return times.measure(stage) if times is not None else contextlib.nullcontext()
