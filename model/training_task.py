"""One training task for the command line and the retraining run (MONAI Label's `TrainTask`).

Callers bring loaded items, a `TrainConfig` and where to start (an encoder for fresh heads,
or a bundle to fine-tune). The task owns what must never differ between them: the seeded
stratified validation split, how fresh heads are built (label blur scaled to the input
size), how large the feature cache is, and the call into `train`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from model.checkpoint import ModelBundle, new_bundle
from model.dataset import LoadedSample, split
from model.distributed import DistContext
from model.encoders import FrozenEncoder
from model.feature_cache import FeatureCache
from model.geometry import Geometry
from model.heatprompt_sam import HeadsConfig
from model.inference import resolve_device
from model.labels import DEFAULT_SIGMA
from model.tile_sampling import training_tiles
from model.train import TrainConfig, TrainResult, seed_everything, tiles_in, train

DEFAULT_VAL_FRACTION = 0.2
# Memory for the cached encoder features of a run: room for every view of every image
# (about 1.3 MB per effnet_lite0 view at 256 px, kept in half precision), within bounds.
BYTES_PER_VIEW = 2 << 20
MIN_MEMORY_BYTES = 1 << 30
MAX_MEMORY_BYTES = 8 << 30


def label_sigma(input_size: int) -> float:
    """Blur of the skeleton-heatmap labels: `DEFAULT_SIGMA` at 256 px, scaled with the side,
    so a label covers the same share of the image at every input size."""
    return DEFAULT_SIGMA * input_size / 256


def fresh_bundle(
    encoder: FrozenEncoder,
    *,
    seed: int,
    heads: HeadsConfig | None = None,
    scale: float | None = None,
    tile_overlap: int | None = None,
) -> ModelBundle:
    """Fresh heads for `encoder` at pixel `scale` (None: fit), drawn from `seed` (not from
    whatever ran before)."""
    seed_everything(seed)
    return new_bundle(
        encoder,
        label_sigma=label_sigma(encoder.input_size),
        heads=heads,
        scale=scale,
        tile_overlap=tile_overlap,
    )


def training_cache(root: Path | None, config: TrainConfig, n_items: int) -> FeatureCache:
    """A feature cache with room in memory for every training view and validation image of
    `n_items`, so later epochs never re-read the disk."""
    wanted = config.views_per_image * n_items * BYTES_PER_VIEW
    return FeatureCache(root, max_memory_bytes=min(MAX_MEMORY_BYTES, max(MIN_MEMORY_BYTES, wanted)))


def training_device(name: str | torch.device) -> torch.device:
    """The device to train on; under torchrun, this process's own GPU."""
    device = name if isinstance(name, torch.device) else resolve_device(name)
    if DistContext.current().active and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def run_training_task(
    items: Sequence[LoadedSample],
    config: TrainConfig,
    *,
    start: ModelBundle | FrozenEncoder,
    out: Path,
    val_fraction: float | None = None,
    heads: HeadsConfig | None = None,
    scale: float | None = None,
    tile_overlap: int | None = None,
    cache: FeatureCache | Path | None = None,
    device: str | torch.device = "auto",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Split `items` (seeded, stratified, whole images), start from `start` and train on
    tiles of the training images; the best checkpoint is written atomically to `out`.

    `start` is an encoder (fresh heads at pixel `scale`, None: fit, configured by `heads`)
    or a bundle, fine-tuned in place at its own scale. `items` must be in that model space
    (`model.geometry`): at the input size for fit, any size otherwise. Validation and the
    final calibration run on the whole validation images, stitched as in prediction.
    `cache` is a cache to share with the caller, or the folder of a cache sized for this
    run (None: memory only). `val_fraction` None: `DEFAULT_VAL_FRACTION`.
    """
    fresh_only = (heads, scale, tile_overlap)
    if isinstance(start, ModelBundle) and any(v is not None for v in fresh_only):
        raise ValueError("heads and scale configure fresh heads; a bundle has its own")
    encoder = start.encoder if isinstance(start, ModelBundle) else start
    geometry = (
        start.geometry
        if isinstance(start, ModelBundle)
        else Geometry(encoder.input_size, scale, tile_overlap)
    )
    size = encoder.input_size
    if geometry.fit:
        wrong = [it for it in items if it.image.shape[:2] != (size, size)]
        if wrong:
            raise ValueError(
                f"{len(wrong)} item(s) are not at the encoder's input size {size}, "
                f"e.g. {wrong[0].sample.image_path}"
            )
    if val_fraction is None:
        val_fraction = DEFAULT_VAL_FRACTION
    fit, val = split(items, val_fraction=val_fraction, seed=config.seed)
    tiles = training_tiles(fit, tile=size, per_image=config.tiles_per_image, seed=config.seed)
    if isinstance(start, ModelBundle):
        bundle = start
    else:
        bundle = fresh_bundle(
            start, seed=config.seed, heads=heads, scale=scale, tile_overlap=tile_overlap
        )
    bundle.to(training_device(device))
    if not isinstance(cache, FeatureCache):
        cache = training_cache(cache, config, len(tiles) + tiles_in(val, geometry))
    return train(
        bundle,
        tiles,
        val,
        config,
        out=out,
        cache=cache,
        progress=progress,
        on_epoch=on_epoch,
        type_items=fit,
    )
