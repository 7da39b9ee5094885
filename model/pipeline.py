"""End-to-end steps on folders: train from datasets, write predictions for images.

These are what the command line runs; they validate every input before writing anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model.augment import TRANSFORMS
from model.checkpoint import load_bundle
from model.cpu_threads import check_workers, pool_for_device
from model.dataset import check_val_fraction, discover, image_shapes, load_samples
from model.distributed import init_from_environment
from model.encoders import build_encoder
from model.geometry import AUTO, Geometry, parse_scale, resolve_scale
from model.heatprompt_sam import HeadsConfig
from model.images import read_image
from model.inference import resolve_device
from model.losses import LossWeights
from model.predict import Predictor
from model.train import DEFAULT_LR, TrainConfig, TrainResult
from model.training_task import DEFAULT_VAL_FRACTION, run_training_task, training_device
from model.visualize import colorize_heatmap, mask_png, overlay


def train_from_folders(
    *,
    data: Sequence[Path],
    out: Path,
    encoder: str = "effnet_lite0",
    sam_checkpoint: Path | None = None,
    epochs: int = 40,
    max_minutes: float | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 4,
    lr: float = DEFAULT_LR,
    input_size: int | None = None,
    scale: float | str | None = AUTO,
    tiles_per_image: int = 6,
    tile_overlap: int | None = None,
    test_time_views: int | None = None,
    cache_dir: Path | None = None,
    patience: int = 15,
    heads: HeadsConfig | None = None,
    loss: LossWeights | None = None,
    type_head: str = "pixel",
    progress: bool = True,
) -> TrainResult:
    """Discover and load every dataset and train fresh heads on them (`run_training_task`).

    `scale`: the pixel scale tiles are cut at (1.0 native), None or "fit" for the squash
    into one tile, "auto" for fit when every image is about one tile and 1.0 otherwise.
    `test_time_views`: the first N of the flips/rotations predictions average (None: all
    six; 1 is about six times faster per image). `type_head`: the kind of defect-type head
    a typed dataset teaches ("pixel" or "region", `model.type_training`).
    """
    init_from_environment()  # joins the torchrun job when launched by torchrun
    check_val_fraction(val_fraction)  # bad arguments fail before any image is read
    if test_time_views is not None and not 1 <= test_time_views <= len(TRANSFORMS):
        raise ValueError(f"test-time views must be 1 to {len(TRANSFORMS)}, got {test_time_views}")
    chosen = parse_scale(scale)
    torch_device = training_device(device)
    samples = [s for folder in data for s in discover(folder)]
    enc = build_encoder(encoder, input_size=input_size, sam_checkpoint=sam_checkpoint)
    chosen = resolve_scale(chosen, enc.input_size, lambda: image_shapes(samples))
    geometry = Geometry(enc.input_size, chosen, tile_overlap)  # bad overlaps fail here
    items = load_samples(samples, geometry, progress=progress)
    config = TrainConfig(
        epochs=epochs,
        max_minutes=max_minutes,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        tiles_per_image=tiles_per_image,
        loss=loss or LossWeights(),
        type_head=type_head,
        **({} if test_time_views is None else {"test_time_views": TRANSFORMS[:test_time_views]}),
    )
    return run_training_task(
        items,
        config,
        start=enc,
        heads=heads,
        scale=chosen,
        tile_overlap=tile_overlap,
        out=out,
        val_fraction=val_fraction,
        cache=cache_dir or Path(out).parent / ".feature-cache",
        device=torch_device,
        progress=progress,
    )


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path)


def predict_to_folder(
    checkpoint: Path,
    images: Sequence[Path],
    out: Path,
    *,
    sam_checkpoint: Path | None = None,
    device: str = "auto",
    workers: int | None = None,
    mixed_precision: bool = True,
) -> list[dict[str, Any]]:
    """For each image write `<stem>_heatmap.png` (colour), `<stem>_heatmap.npy` (raw),
    `<stem>_mask.png`, `<stem>_overlay.png`, and `predictions.json` for all of them.

    Every image is read before anything is written, and files are first written to a
    temporary folder, so a bad input leaves `out` untouched. On a CPU, tile batches run
    on `workers` compute threads (`pool_for_device`), as in the app, in the device's
    reduced precision unless `mixed_precision` is False (`model.precision`).
    """
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise ValueError("two input images share a file name; outputs would overwrite each other")
    check_workers(workers)  # before the model loads
    bundle = load_bundle(
        checkpoint,
        sam_checkpoint=sam_checkpoint,
        device=resolve_device(device),
        mixed_precision=mixed_precision,
    )
    arrays = [read_image(p) for p in images]
    with pool_for_device(bundle.device, workers) as pool:
        return _write_predictions(Predictor(bundle, pool=pool), images, arrays, Path(out))


def _write_predictions(
    predictor: Predictor, images: Sequence[Path], arrays: Sequence[np.ndarray], out: Path
) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=out, prefix=".partial-") as tmp_name:
        tmp = Path(tmp_name)
        for path, image in zip(images, arrays, strict=True):
            pred = predictor.predict(image)
            stem = path.stem
            _save_png(colorize_heatmap(pred.heatmap), tmp / f"{stem}_heatmap.png")
            np.save(tmp / f"{stem}_heatmap.npy", pred.heatmap.astype(np.float32))
            _save_png(mask_png(pred.mask), tmp / f"{stem}_mask.png")
            _save_png(overlay(image, pred.heatmap, pred.mask), tmp / f"{stem}_overlay.png")
            rows.append(
                {
                    "image": str(path),
                    "defect_score": pred.defect_score,
                    "uncertainty": pred.uncertainty,
                    "defective": pred.is_defective,
                    "threshold": pred.threshold,
                }
            )
        (tmp / "predictions.json").write_text(json.dumps(rows, indent=2))
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    shutil.rmtree(tmp, ignore_errors=True)
    return rows
