"""Probability and heatmap maps for model-space images of any size, tile by tile.

Every image is covered by overlapping tiles (`model.tiling`); the tiles of all images
are run together in batches through the cached encoder and the heads (averaged over the
test-time views per tile), then blended back into one map per image. An image that is
exactly one tile is the plain single pass, with its own hash as cache key, so fit models
and small images behave as before. Other tiles are cached under the hash of their own
pixels: the same crop of the same image is never encoded twice, whoever asks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.checkpoint import ModelBundle
from model.cpu_threads import ComputePool
from model.feature_cache import FeatureCache
from model.hashing import sha256_bytes
from model.inference import MapBatch, predict_views
from model.stage_times import StageTimes, measured
from model.tiling import Stitcher, Tile, TilePlan


@dataclass
class ImageMaps:
    """Model-space (H, W) float32 maps of one image: mask probabilities and heatmap."""

    prob: np.ndarray
    heatmap: np.ndarray


def tile_key(crop: np.ndarray) -> str:
    """Cache key of a tile: the hash of its pixels and shape."""
    return sha256_bytes(np.ascontiguousarray(crop).tobytes() + repr(crop.shape).encode())


def crop_key(crop: np.ndarray, image_sha: str | None, whole: bool) -> str:
    """The cache key of a tile crop: the image's own hash when the image is exactly this
    one tile (and its hash is known), else the hash of the crop's pixels (`tile_key`)."""
    return image_sha if whole and image_sha is not None else tile_key(crop)


@dataclass(frozen=True)
class _Job:
    image: int
    tile: Tile
    crop: np.ndarray
    key: str


def _jobs(
    images: Sequence[np.ndarray], plans: Sequence[TilePlan], shas: Sequence[str | None]
) -> list[_Job]:
    jobs: list[_Job] = []
    for i, (image, plan, sha) in enumerate(zip(images, plans, shas, strict=True)):
        whole = image.shape[:2] == (plan.tile, plan.tile)
        for tile, crop in zip(plan.tiles, plan.crops(image), strict=True):
            jobs.append(_Job(i, tile, crop, crop_key(crop, sha, whole)))
    return jobs


def predict_maps(
    bundle: ModelBundle,
    images: Sequence[np.ndarray],
    *,
    shas: Sequence[str | None] | None = None,
    cache: FeatureCache | None = None,
    views: Sequence[str] | None = None,
    use_prompt: bool = True,
    batch_size: int = 8,
    times: StageTimes | None = None,
    pool: ComputePool | None = None,
) -> list[ImageMaps]:
    """Maps for uint8 model-space images of any size (views default to the model's own).

    `shas` (the images' hashes) key single-tile images in the cache; tiles of larger
    images are keyed by their pixels. Tiles of all images share batches; with a `pool`,
    the batches are smaller where that gives each of its threads one, and run side by side.
    """
    views = tuple(bundle.meta.test_time_views if views is None else views)
    tile = bundle.encoder.input_size
    overlap = bundle.geometry.overlap
    shas = list(shas) if shas is not None else [None] * len(images)
    plans = [TilePlan(im.shape[:2], tile, overlap) for im in images]
    jobs = _jobs(images, plans, shas)
    if times is not None:
        times.tiles += len(jobs)
    single = [len(p) == 1 and p.shape == (tile, tile) for p in plans]
    stitchers = {i: Stitcher(p, 2) for i, p in enumerate(plans) if not single[i]}
    direct: dict[int, ImageMaps] = {}
    threads = pool.threads if pool is not None else 1
    size = max(1, min(batch_size, math.ceil(len(jobs) / threads)))
    chunks = [jobs[start : start + size] for start in range(0, len(jobs), size)]

    def run(chunk: list[_Job]) -> MapBatch:
        return predict_views(
            bundle,
            [j.crop for j in chunk],
            shas=[j.key for j in chunk],
            cache=cache,
            views=views,
            use_prompt=use_prompt,
            batch_size=size,
            times=times,
        )

    results = pool.map(run, chunks) if pool is not None and len(chunks) > 1 else map(run, chunks)
    for chunk, maps in zip(chunks, results, strict=True):
        with measured(times, "stitch"):
            for j, job in enumerate(chunk):
                if single[job.image]:
                    direct[job.image] = ImageMaps(maps.prob[j], maps.heatmap[j])
                else:
                    stitchers[job.image].add(job.tile, (maps.prob[j], maps.heatmap[j]))
    out: list[ImageMaps] = []
    for i in range(len(images)):
        if single[i]:
            out.append(direct[i])
            continue
        with measured(times, "stitch"):
            prob, heat = stitchers.pop(i).result()
        out.append(ImageMaps(prob, heat))
    return out


def tile_at(plan: TilePlan, x: float, y: float) -> Tile:
    """The tile whose centre is nearest to model-space point (x, y): the one that sees the
    most context around it."""
    half = plan.tile / 2
    return min(plan.tiles, key=lambda t: (t.x + half - x) ** 2 + (t.y + half - y) ** 2)
