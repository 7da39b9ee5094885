"""Starter heads: a deployment's first model starts from heads that already know defects.

A new line's first labels are few (tens of images, a third of them defective); heads trained
from scratch on them find little. The starter is a model trained on the built-in synthetic
surfaces (`model.synth`: other textures and defects than any line's), with no types, and the
first model fine-tunes it on the line's own labels. On the cold-start set of
`tests/benchmarks/bench_cold_start.py` (20 good + 100 images, 33 defective; 150 unseen
images to test) a 4-minute fine-tune of a 4-minute starter gave mIoU 0.494 at its calibrated
threshold where fresh heads trained for the same 4 minutes gave 0.251 (the starter alone:
0.334, and 60 % of the defect-free images called defective). Through the whole benchmark
(5-minute first run) the first model's mIoU went 0.336 -> 0.542 on its default line and
0.365 -> 0.419 on a second (`--seed 1`). An 8-minute starter on 800 images gave 0.514
against 0.494: not worth twice the preparation.

The starter is trained once per encoder and input size and kept beside the models; it is
fit-geometry at the encoder's input size (synthetic images are one tile), and `adopt`
gives it the geometry the line's images need before the fine-tune.

Its work is a number of epochs, not of minutes: in the app it trains beside the anomaly
model's fit and scoring on the same cores, and a 4-minute budget there got 3 to 6 epochs
where the same budget alone gets 15, and a first model of mIoU 0.33 where a 15-epoch
starter gave 0.51 on the same benchmark run. Its learning rate follows the steps alone
(`TrainConfig.lr_by_time`), so the minutes of shared cores at its start change nothing it
learns; the minutes are only a bound for a machine far slower than expected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from model.checkpoint import ModelBundle
from model.dataset import GOOD, LoadedSample, Sample
from model.durable import write_atomically
from model.encoders.base import FrozenEncoder
from model.geometry import Scale
from model.hashing import sha256_bytes
from model.synth import DEFECT_TYPES, GOOD_FRACTION, make_surface
from model.train import TrainConfig, TrainResult
from model.training_task import run_training_task

STARTER_IMAGES = 400
# Alone on two cores an epoch of 400 images takes about 14 s; validation stops gaining
# after about 12 (mIoU on the synthetic validation split 0.82 at 12, 0.82 at 15).
STARTER_EPOCHS = 12
STARTER_MINUTES = 15.0  # at most: a bound, not the budget
UNTYPED = "defect"  # the sample type of a region no one named (as the review app stores)
PROGRESS_STALE_S = 300.0  # a progress file not written for this long is a dead run's


def starter_path(models_dir: Path, encoder: FrozenEncoder) -> Path:
    """Where the starter for `encoder` (its weights and input size) is kept."""
    return Path(models_dir) / f"starter-{encoder.cache_id}-{encoder.input_size}.pt"


def progress_path(path: Path) -> Path:
    """The progress file of the starter being trained into `path` (gone once it is done)."""
    return path.with_name(path.name + ".progress.json")


def starter_progress(models_dir: Path) -> dict[str, Any] | None:
    """What another process is doing about the starter heads in `models_dir`: `{"state":
    "training", "epoch", "epochs", "loss", "elapsed_s", "minutes", "images"}` while one trains,
    `{"state": "ready"}` once one exists, None when neither."""
    models_dir = Path(models_dir)
    now = time.time()
    for progress in sorted(models_dir.glob("starter-*.progress.json")):
        try:
            if now - progress.stat().st_mtime > PROGRESS_STALE_S:
                continue
            return {"state": "training"} | json.loads(progress.read_text())
        except (OSError, ValueError):
            continue  # finished (removed) or half-read meanwhile
    return {"state": "ready"} if any(models_dir.glob("starter-*.pt")) else None


def synthetic_items(count: int, size: int, *, seed: int) -> list[LoadedSample]:
    """`count` built-in synthetic surfaces at `size` px, untyped (a fifth defect-free)."""
    rng = np.random.default_rng(seed)
    n_good = round(count * GOOD_FRACTION)
    items = []
    for i in range(count):
        kind = None if i < n_good else DEFECT_TYPES[i % len(DEFECT_TYPES)]
        image, mask = make_surface(rng, size, kind)
        sample = Sample(Path(f"starter-{i:04d}.png"), None, GOOD if kind is None else UNTYPED)
        items.append(LoadedSample(sample, sha256_bytes(image.tobytes()), image, mask > 0))
    return items


def train_starter(
    encoder: FrozenEncoder,
    out: Path,
    *,
    images: int = STARTER_IMAGES,
    epochs: int = STARTER_EPOCHS,
    minutes: float = STARTER_MINUTES,
    seed: int = 0,
    cache: Path | None = None,
    device: str = "auto",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train the starter heads for `encoder` into `out` (written atomically) for `epochs`
    (the learning rate follows the steps), or until `minutes` have passed if that comes
    first; while it trains, its progress file says how far it is (`starter_progress`)."""
    if images < 10:
        raise ValueError(f"a starter needs at least 10 synthetic images, got {images}")
    if epochs < 1:
        raise ValueError(f"a starter needs at least one epoch, got {epochs}")
    if minutes <= 0:
        raise ValueError(f"a starter needs a positive time budget, got {minutes} minutes")
    started = time.monotonic()
    progress_file = progress_path(Path(out))

    def report(record: dict[str, float]) -> None:
        figures = {
            "epoch": int(record.get("epoch", 0)),
            "epochs": epochs,
            "loss": record.get("loss"),
            "elapsed_s": round(time.monotonic() - started, 1),
            "minutes": minutes,
            "images": images,
        }
        write_atomically(progress_file, lambda fh: fh.write(json.dumps(figures).encode()))
        if on_epoch is not None and record:
            on_epoch(record)

    report({})
    try:
        items = synthetic_items(images, encoder.input_size, seed=seed)
        config = TrainConfig(
            epochs=epochs, max_minutes=minutes, seed=seed, patience=epochs, lr_by_time=False
        )
        return run_training_task(
            items,
            config,
            start=encoder,
            out=out,
            cache=cache,
            device=device,
            on_epoch=report,
            progress=progress,
        )
    finally:
        progress_file.unlink(missing_ok=True)


def adopt(starter: ModelBundle, scale: Scale) -> ModelBundle:
    """The starter as the start of a line's first model: at the line's pixel `scale` (the
    heads are the same at any scale: a tile is a tile), with none of the starter's own
    figures, calibration or types."""
    meta = replace(
        starter.meta,
        pixel_scale=scale,
        metrics={},
        type_head=None,
        type_rules={},
    )
    return ModelBundle(starter.encoder, starter.heads, meta, None)
