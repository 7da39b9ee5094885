"""Training tiles cut from model-space images: crops biased toward defects, plus others.

A model that predicts tile by tile learns from tiles at the same pixel scale, so a
1-pixel hairline stays 1 pixel. Most of a large image is defect-free, so uniform crops
would rarely show a defect: on a defective image most crops are placed around a randomly
chosen defect pixel (anywhere inside the crop, so the model also sees defects cut by a tile
edge, as stitching will), the rest uniformly. The crops are drawn once per run from the
seed, like the fixed views of `model.augment`, so each is encoded once and every later
epoch reads the feature cache.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from model.dataset import LoadedSample
from model.tiled_prediction import tile_key
from model.tiling import TilePlan

DEFECT_SHARE = 0.75  # of a defective image's crops, the share placed around a defect


def _corner(rng: random.Random, centre: int, length: int, tile: int, margin: int) -> int:
    """A crop start along one side that keeps `centre` at least `margin` inside the crop
    (when the side allows), clamped to the image."""
    lo = max(0, centre - tile + 1 + margin)
    hi = min(length - tile, centre - margin)
    if hi < lo:
        lo, hi = max(0, centre - tile + 1), min(length - tile, centre)
    return rng.randint(lo, hi) if hi >= lo else max(0, min(length - tile, centre - tile // 2))


def crop_corners(
    mask: np.ndarray, tile: int, count: int, rng: random.Random
) -> list[tuple[int, int]]:
    """`count` crop corners (y, x) in an image whose (padded) mask is `mask`."""
    h, w = mask.shape
    defect = np.argwhere(mask)
    n_defect = round(count * DEFECT_SHARE) if len(defect) else 0
    corners = []
    for k in range(count):
        if k < n_defect:
            cy, cx = (int(v) for v in defect[rng.randrange(len(defect))])
            margin = tile // 8
            corners.append((_corner(rng, cy, h, tile, margin), _corner(rng, cx, w, tile, margin)))
        else:
            corners.append((rng.randint(0, h - tile), rng.randint(0, w - tile)))
    return corners


def training_tiles(
    items: Sequence[LoadedSample], *, tile: int, per_image: int, seed: int
) -> list[LoadedSample]:
    """Tile-sized training items from model-space items of any size.

    An item no larger than a tile gives one item, padded to a tile (its own hash is kept
    when it already is one); a larger one gives `per_image` crops. Crops are views into
    the padded images, not copies.
    """
    if per_image < 1:
        raise ValueError(f"tiles per image must be at least 1, got {per_image}")
    rng = random.Random(seed)
    out: list[LoadedSample] = []
    for item in items:
        plan = TilePlan(item.image.shape[:2], tile, 0)
        if item.image.shape[:2] == (tile, tile):
            out.append(item)
            continue
        image, mask = plan.pad(item.image), plan.pad(item.mask)
        if image.shape[:2] == (tile, tile):  # smaller than a tile: padded, one crop
            out.append(LoadedSample(item.sample, tile_key(image), image, mask))
            continue
        for y, x in crop_corners(mask, tile, per_image, rng):
            crop = image[y : y + tile, x : x + tile]
            out.append(
                LoadedSample(item.sample, tile_key(crop), crop, mask[y : y + tile, x : x + tile])
            )
    return out
