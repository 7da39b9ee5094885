"""How long a whole large image takes to predict, and how much memory it needs.

Shared by `heatprompt bench-image`, `tests/benchmarks/bench_image.py` and the GPU check,
so the three report the same figures measured the same way: one warm-up prediction (first
calls pay for kernel selection and allocator growth, which no later image does), then
every measured prediction with a fresh memory-only feature cache, so the encoder really
runs on every tile instead of answering from the cache of an earlier repeat.

Peak memory on the CPU is sampled by a thread (`PeakRss`), because `ru_maxrss` is the
lifetime maximum of the process and cannot say what one prediction added; on CUDA the
allocator's own peak counter is read as well.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import torch

from model.checkpoint import ModelBundle
from model.cpu_threads import ComputePool
from model.predict import Predictor
from model.stage_times import StageTimes

DEFAULT_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (2048, 2048),
    (4096, 1024),
    (4096, 4096),
)
MIB = float(1 << 20)
SAMPLE_INTERVAL_S = 0.002


# ------------------------------------------------------------------- inputs
def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'1024x1024,4096x1024' → [(1024, 1024), (4096, 1024)] as (width, height); ValueError
    for anything else, so the command line can report it as a user error."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            w, h = (int(v) for v in part.split("x"))
        except ValueError:
            raise ValueError(f"size must be WIDTHxHEIGHT, e.g. 2048x2048, got {part!r}") from None
        if w < 1 or h < 1:
            raise ValueError(f"size must be positive, got {part!r}")
        sizes.append((w, h))
    if not sizes:
        raise ValueError("no sizes given")
    return sizes


def synthetic_image(width: int, height: int, *, seed: int = 0) -> np.ndarray:
    """A deterministic textured surface (brushed-metal-like grain on uneven shading),
    uint8 RGB (height, width, 3).

    Texture rather than a flat colour, so no two tiles are alike: identical tiles would
    share one cache entry and make the encoder look faster than it is. Built from blurred
    noise at a fraction of the size plus fine grain, so 4096² takes a fraction of a second.
    """
    rng = np.random.default_rng([seed, width, height])
    coarse = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32)), dtype=np.uint8)
    shading = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(0, 256, (height, width), dtype=np.uint8)
    brushed = cv2.blur(grain, (9, 1))  # streaks along x, as machined
    # uint8 arithmetic in OpenCV throughout: float temporaries of a 4096² image take seconds.
    gray = cv2.addWeighted(shading, 0.25, brushed, 0.35, 45.0)
    # A slightly warm steel: red as is, green and blue a little darker.
    return cv2.merge(
        [gray, cv2.convertScaleAbs(gray, alpha=0.97), cv2.convertScaleAbs(gray, alpha=0.92)]
    )


def select_views(bundle: ModelBundle, count: int | None) -> tuple[str, ...]:
    """The first `count` of the checkpoint's test-time views (None: all of them), as the
    app's `model_server` picks them; ValueError when the checkpoint has fewer."""
    views = tuple(bundle.meta.test_time_views)
    if count is None:
        return views
    if not 1 <= count <= len(views):
        raise ValueError(
            f"--views must be between 1 and the checkpoint's {len(views)} test-time views "
            f"({', '.join(views)}), got {count}"
        )
    return views[:count]


# ------------------------------------------------------------------- memory
def _rss_bytes() -> int | None:
    """This process's resident set size now, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakRss:
    """Context manager: the highest RSS reached inside the block, sampled by a thread.

    `growth_mib` is that peak minus the RSS when the block began: what the block needed
    beyond what the process already held. Memory the allocator kept from earlier work is
    reused without raising RSS, so after a warm-up this is the extra working set, not the
    whole of it. None on systems without /proc.
    """

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.start_bytes: int | None = None
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        rss = _rss_bytes()
        if rss is not None and (self.peak_bytes is None or rss > self.peak_bytes):
            self.peak_bytes = rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._stop = threading.Event()  # so one instance can measure several blocks
        self.start_bytes = _rss_bytes()
        self.peak_bytes = self.start_bytes
        if self.start_bytes is not None:
            self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sample()  # what the block still holds at its end counts too
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def growth_mib(self) -> float | None:
        if self.start_bytes is None or self.peak_bytes is None:
            return None
        return (self.peak_bytes - self.start_bytes) / MIB

    @property
    def peak_mib(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / MIB


# ------------------------------------------------------------------- measuring
@dataclass
class ImageBenchRow:
    """One image's figures (medians over the repeats; memory: the largest peak)."""

    image: str
    width: int
    height: int
    device: str
    views: int
    tiles: int
    encode_ms_per_tile: float  # all views of a tile together
    heads_ms_per_tile: float
    stitch_ms: float
    total_s: float  # the whole `Predictor.predict`: scaling, tiles, stitching, decision
    peak_rss_mib: float | None  # RSS growth during the prediction
    peak_gpu_mib: float | None  # torch.cuda.max_memory_allocated (CUDA only)
    repeats: int

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _Run:
    times: StageTimes
    total_s: float
    rss_mib: float | None
    gpu_mib: float | None


def _predict_once(
    bundle: ModelBundle,
    image: np.ndarray,
    views: Sequence[str],
    pool: ComputePool | None = None,
) -> _Run:
    """One uncached prediction, timed by stage, with its memory peaks.

    A new `Predictor` per run brings a new memory-only cache (the one the app's predictor
    starts with), so no tile is answered from an earlier run's encodings.
    """
    device = bundle.device
    predictor = Predictor(bundle, views=views, pool=pool)
    times = StageTimes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _synchronize(device)
    with PeakRss() as rss:
        start = time.perf_counter()
        predictor.predict(image, times=times)
        _synchronize(device)
        total = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None
    return _Run(times, total, rss.growth_mib, gpu)


def measure_image(
    bundle: ModelBundle,
    image: np.ndarray,
    *,
    name: str,
    views: Sequence[str],
    repeat: int = 1,
    pool: ComputePool | None = None,
) -> ImageBenchRow:
    """Figures for `image` over `repeat` uncached predictions (no warm-up here: see
    `benchmark_images`); with a `pool`, the stage times are summed over its threads."""
    if repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {repeat}")
    runs = [_predict_once(bundle, image, views, pool) for _ in range(repeat)]
    tiles = runs[0].times.tiles

    def median(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    def peak(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    height, width = image.shape[:2]
    return ImageBenchRow(
        image=name,
        width=width,
        height=height,
        device=str(bundle.device),
        views=len(views),
        tiles=tiles,
        encode_ms_per_tile=median([1000 * r.times.encode_s / max(tiles, 1) for r in runs]),
        heads_ms_per_tile=median([1000 * r.times.heads_s / max(tiles, 1) for r in runs]),
        stitch_ms=median([1000 * r.times.stitch_s for r in runs]),
        total_s=median([r.total_s for r in runs]),
        peak_rss_mib=peak([r.rss_mib for r in runs]),
        peak_gpu_mib=peak([r.gpu_mib for r in runs]),
        repeats=repeat,
    )


def iter_benchmark(
    bundle: ModelBundle,
    images: Iterable[tuple[str, np.ndarray]],
    *,
    views: Sequence[str],
    repeat: int = 1,
    warmup: bool = True,
    pool: ComputePool | None = None,
) -> Iterator[ImageBenchRow]:
    """One row per (name, image), each as soon as it is measured (a 4096² image can take
    a minute on a CPU), after one uncounted warm-up prediction of the first image (its
    tile and batch shapes are those the measured runs use). `images` is read lazily, so
    only one synthetic image at a time needs to exist."""
    views = tuple(views)
    for i, (name, image) in enumerate(images):
        if i == 0 and warmup:
            _predict_once(bundle, image, views, pool)
        yield measure_image(bundle, image, name=name, views=views, repeat=repeat, pool=pool)


def benchmark_images(
    bundle: ModelBundle,
    images: Iterable[tuple[str, np.ndarray]],
    *,
    views: Sequence[str],
    repeat: int = 1,
    warmup: bool = True,
) -> list[ImageBenchRow]:
    """All rows of `iter_benchmark`."""
    return list(iter_benchmark(bundle, images, views=views, repeat=repeat, warmup=warmup))


def synthetic_images(
    sizes: Sequence[tuple[int, int]], *, seed: int = 0
) -> Iterator[tuple[str, np.ndarray]]:
    """(name, image) pairs of `synthetic_image` for each (width, height), made one at a
    time as they are asked for."""
    for w, h in sizes:
        yield "synthetic", synthetic_image(w, h, seed=seed)


# ------------------------------------------------------------------- output
def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_header(*, note: str | None = None) -> str:
    """The column titles of `table_line`, with a last column titled `note` if given."""
    header = (
        f"{'image':<20} {'size':>10} {'device':>6} {'views':>5} {'tiles':>6} "
        f"{'enc ms/tile':>11} {'heads ms/tile':>13} {'stitch ms':>9} {'total s':>8} "
        f"{'RSS +MiB':>9} {'GPU MiB':>8}"
    )
    return f"{header}  {note}" if note else header


def table_line(row: ImageBenchRow, *, note: str | None = None) -> str:
    """One fixed-width line of the table; long image names keep their end."""
    r = row
    name = r.image if len(r.image) <= 20 else "…" + r.image[-19:]
    line = (
        f"{name:<20} {r.size:>10} {r.device.split(':')[0]:>6} {r.views:>5} {r.tiles:>6} "
        f"{r.encode_ms_per_tile:>11.1f} {r.heads_ms_per_tile:>13.1f} {r.stitch_ms:>9.1f} "
        f"{r.total_s:>8.2f} {_num(r.peak_rss_mib, 0):>9} {_num(r.peak_gpu_mib, 0):>8}"
    )
    return f"{line}  {note}" if note else line


def format_table(rows: Sequence[ImageBenchRow]) -> str:
    """The whole table: header and one line per row."""
    return "\n".join([table_header(), *(table_line(r) for r in rows)])
