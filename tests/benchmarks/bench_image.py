"""Whole-image prediction speed and memory for large images, against the speed targets.

Builds a fresh, untrained effnet_lite0 model at pixel scale 1.0 with 256 px tiles (speed
does not depend on training; the six test-time views a trained checkpoint gets are set as
training sets them), saves it to a temporary checkpoint and loads it back as
`heatprompt bench-image` does, then measures synthetic images of 1024², 2048², 4096×1024
and 4096² with one view, and 1024² with all six views, through the same functions
(`webapp.image_benchmark`), in the device's reduced precision as served (`model.precision`;
2048² and 4096² again in float32, where the device has one); then the one-view sizes
again on the app's compute pool
(`model.cpu_threads`: tile batches over one single-threaded thread per core). The targets
(2048² ≤ 3 s and 4096² ≤ 12 s with one view on a 2-core CPU) are printed beside the rows
with whether they are met; nothing is asserted, since a loaded or larger machine says
nothing about the code.

Run with `make bench` (part of it) or `python -m tests.benchmarks.bench_image [--json]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch

from model.augment import TRANSFORMS
from model.checkpoint import load_bundle, save_checkpoint
from model.cpu_threads import pool_for_device
from model.encoders import build_encoder
from model.inference import resolve_device
from model.precision import precision_name, reduced_dtype
from model.training_task import fresh_bundle
from webapp.image_benchmark import (
    DEFAULT_SIZES,
    ImageBenchRow,
    iter_benchmark,
    synthetic_images,
    table_header,
    table_line,
)

TILE = 256
# Seconds per image with one view on a 2-core CPU, by (width, height).
TARGETS_S: dict[tuple[int, int], float] = {(2048, 2048): 3.0, (4096, 4096): 12.0}
TARGET_CORES = 2


def target_note(row: ImageBenchRow) -> str:
    """'target ≤ N s: met' / 'not met' for a one-view CPU row that has a target; '' else."""
    target = TARGETS_S.get((row.width, row.height))
    if target is None or row.views != 1 or not row.device.startswith("cpu"):
        return ""
    return f"target ≤ {target:g} s: {'met' if row.total_s <= target else 'not met'}"


def bench_checkpoint(folder: Path) -> Path:
    """A fresh effnet_lite0 checkpoint (scale 1.0, 256 px tiles, all six views) in `folder`."""
    bundle = fresh_bundle(build_encoder("effnet_lite0", input_size=TILE), seed=0, scale=1.0)
    bundle.meta.test_time_views = list(TRANSFORMS)  # as `train` sets them by default
    return save_checkpoint(folder / "bench-image.pt", bundle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="measured predictions per image")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="heatprompt-bench-image-") as tmp:
        bundle = load_bundle(bench_checkpoint(Path(tmp)), device=device)
    all_views = tuple(bundle.meta.test_time_views)
    reduced = reduced_dtype(device)
    if not args.json:
        print(
            f"bench-image: untrained effnet_lite0, {TILE} px tiles at scale 1.0, {device} "
            f"in {precision_name(device)}, {torch.get_num_threads()} threads, {cores} cores "
            f"(targets are for {TARGET_CORES} cores, one view)"
        )
        print(table_header(note="target"), flush=True)
    rows: list[ImageBenchRow] = []
    one_view = iter_benchmark(
        bundle, synthetic_images(DEFAULT_SIZES), views=all_views[:1], repeat=args.repeat
    )
    # The six-view run needs no second warm-up: its tiles have the same shape.
    every_view = iter_benchmark(
        bundle,
        synthetic_images([DEFAULT_SIZES[0]]),
        views=all_views,
        repeat=args.repeat,
        warmup=False,
    )
    # Less tile overlap (an eighth of a tile instead of a quarter): fewer tiles per image.
    thin = dataclasses.replace(
        bundle, meta=dataclasses.replace(bundle.meta, tile_overlap=TILE // 8)
    )
    thin_overlap = iter_benchmark(
        thin,
        synthetic_images(DEFAULT_SIZES[1::2]),
        views=all_views[:1],
        repeat=args.repeat,
        warmup=False,
    )
    # Full float32 arithmetic, where the rows above use the device's reduced precision.
    full = (
        iter_benchmark(
            dataclasses.replace(bundle, mixed_precision=False),
            synthetic_images(DEFAULT_SIZES[1::2]),
            views=all_views[:1],
            repeat=args.repeat,
            warmup=False,
        )
        if reduced is not None
        else iter([])
    )
    # The app's way on a CPU: tile batches spread over a pool of single-threaded compute
    # threads (`model.cpu_threads`), stage times summed over them.
    with pool_for_device(device, None) as pool:
        pooled = (
            iter_benchmark(
                bundle,
                synthetic_images(DEFAULT_SIZES),
                views=all_views[:1],
                repeat=args.repeat,
                warmup=False,
                pool=pool,
            )
            if pool is not None
            else iter([])
        )
        pool_label = f"pool of {pool.threads} compute threads; " if pool is not None else ""
        streams = (
            (one_view, ""),
            (every_view, ""),
            (thin_overlap, f"overlap {TILE // 8} px; "),
            (full, "float32; "),
            (pooled, pool_label),
        )
        for stream, label in streams:
            for row in stream:
                rows.append(row)
                if not args.json:
                    print(table_line(row, note=label + target_note(row)), flush=True)
    if args.json:
        print(
            json.dumps(
                {
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "cores": cores,
                    "rows": [{**r.as_dict(), "target": target_note(r) or None} for r in rows],
                }
            )
        )


if __name__ == "__main__":
    main()
