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
import torch
from PIL import Image

from model.checkpoint import load_bundle, new_bundle
from model.dataset import discover, load_samples, split
from model.distributed import init_from_environment
from model.encoders import build_encoder
from model.feature_cache import FeatureCache
from model.heatprompt_sam import HeadsConfig
from model.images import read_image
from model.inference import resolve_device
from model.labels import DEFAULT_SIGMA
from model.losses import LossWeights
from model.predict import Predictor
from model.train import DEFAULT_LR, TrainConfig, TrainResult, seed_everything, train
from model.visualize import colorize_heatmap, mask_png, overlay


def train_from_folders(
    *,
    data: Sequence[Path],
    out: Path,
    encoder: str = "effnet_lite0",
    sam_checkpoint: Path | None = None,
    epochs: int = 40,
    max_minutes: float | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 4,
    lr: float = DEFAULT_LR,
    input_size: int | None = None,
    cache_dir: Path | None = None,
    patience: int = 15,
    heads: HeadsConfig | None = None,
    loss: LossWeights | None = None,
    progress: bool = True,
) -> TrainResult:
    """Discover and load every dataset, split, build a fresh model and train it."""
    ctx = init_from_environment()  # joins the torchrun job when launched by torchrun
    torch_device = resolve_device(device)
    if ctx.active and torch_device.type == "cuda":
        torch_device = torch.device("cuda", torch.cuda.current_device())
    samples = [s for folder in data for s in discover(folder)]
    train_s, val_s = split(samples, val_fraction=val_fraction, seed=seed)
    seed_everything(seed)
    enc = build_encoder(encoder, input_size=input_size, sam_checkpoint=sam_checkpoint)
    bundle = new_bundle(enc, label_sigma=DEFAULT_SIGMA * enc.input_size / 256, heads=heads).to(
        torch_device
    )
    size = enc.input_size
    train_items = load_samples(train_s, size, progress=progress)
    val_items = load_samples(val_s, size, progress=progress)
    config = TrainConfig(
        epochs=epochs,
        max_minutes=max_minutes,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        loss=loss or LossWeights(),
    )
    # Room in memory for every view of every image, so later epochs never re-read disk.
    views = config.views_per_image * len(train_items) + len(val_items)
    cache = FeatureCache(
        cache_dir or Path(out).parent / ".feature-cache", max_memory_items=max(4096, views)
    )
    return train(bundle, train_items, val_items, config, out=out, cache=cache, progress=progress)


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path)


def predict_to_folder(
    checkpoint: Path,
    images: Sequence[Path],
    out: Path,
    *,
    sam_checkpoint: Path | None = None,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """For each image write `<stem>_heatmap.png` (colour), `<stem>_heatmap.npy` (raw),
    `<stem>_mask.png`, `<stem>_overlay.png`, and `predictions.json` for all of them.

    Every image is read before anything is written, and files are first written to a
    temporary folder, so a bad input leaves `out` untouched.
    """
    bundle = load_bundle(checkpoint, sam_checkpoint=sam_checkpoint, device=resolve_device(device))
    arrays = [read_image(p) for p in images]
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise ValueError("two input images share a file name; outputs would overwrite each other")
    predictor = Predictor(bundle)
    out = Path(out)
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
