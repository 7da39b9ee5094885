"""Covering an image with overlapping square tiles, and stitching per-tile maps back.

Tiles are placed so that they exactly span each side (the last tile ends at the border;
the spacing is at most `tile - overlap`), so no tile but those of an image smaller than a
tile needs padding. Stitching blends overlapping tiles with a weight that falls towards
each tile's edges, where a network sees the least context, so seams disappear and every
pixel's value is a weighted mean of the tiles that saw it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A tile's top-left corner in model space (its side is the plan's `tile`)."""

    y: int
    x: int


def positions(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering `length` pixels, evenly spread, first at 0 and the
    last ending at `length` (one tile at 0 when `length <= tile`)."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one model-space image of `shape` (H, W)."""

    shape: tuple[int, int]
    tile: int
    overlap: int

    @property
    def padded_shape(self) -> tuple[int, int]:
        """The image's shape after padding to at least one tile on each side."""
        return (max(self.shape[0], self.tile), max(self.shape[1], self.tile))

    @property
    def tiles(self) -> list[Tile]:
        h, w = self.padded_shape
        ys = positions(h, self.tile, self.overlap)
        xs = positions(w, self.tile, self.overlap)
        return [Tile(y, x) for y in ys for x in xs]

    def __len__(self) -> int:
        return len(self.tiles)

    def pad(self, image: np.ndarray) -> np.ndarray:
        """`image` padded with zeros (bottom and right) to `padded_shape`; never stretched."""
        h, w = image.shape[:2]
        ph, pw = self.padded_shape
        if (h, w) == (ph, pw):
            return image
        out = np.zeros((ph, pw, *image.shape[2:]), dtype=image.dtype)
        out[:h, :w] = image
        return out

    def crops(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """The tile crops of a model-space image, in `tiles` order."""
        padded = self.pad(image)
        for t in self.tiles:
            yield padded[t.y : t.y + self.tile, t.x : t.x + self.tile]


def blend_ramp(tile: int, overlap: int) -> np.ndarray:
    """(tile,) float32 weights along one side: 1 in the middle, falling linearly to a small
    positive value over `overlap` pixels at both ends (positive, so a border pixel seen by
    one tile keeps that tile's value)."""
    ramp = np.ones(tile, np.float32)
    if overlap > 0:
        rise = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        ramp[:overlap] = rise
        ramp[-overlap:] = np.minimum(ramp[-overlap:], rise[::-1])
    return ramp


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) float32 weights of one tile: the outer product of two ramps."""
    ramp = blend_ramp(tile, overlap)
    return np.outer(ramp, ramp)


class Stitcher:
    """Accumulates per-tile maps of one image into blended model-space maps.

    The tiles form a grid and each tile's weight is an outer product of two ramps, so the
    weight every pixel gathers is the outer product of the ramps' sums along each side:
    it is computed once from the plan instead of accumulated tile by tile.
    """

    def __init__(self, plan: TilePlan, channels: int) -> None:
        self.plan = plan
        ph, pw = plan.padded_shape
        self._sum = np.zeros((channels, ph, pw), np.float32)
        ramp = blend_ramp(plan.tile, plan.overlap)
        self._window = np.outer(ramp, ramp)
        self._side_weights = [
            self._side(ramp, length, plan.tile, plan.overlap) for length in (ph, pw)
        ]

    @staticmethod
    def _side(ramp: np.ndarray, length: int, tile: int, overlap: int) -> np.ndarray:
        total = np.zeros(length, np.float32)
        for start in positions(length, tile, overlap):
            total[start : start + tile] += ramp
        return total

    def add(self, tile: Tile, maps: Sequence[np.ndarray]) -> None:
        """Blend one tile's (tile, tile) maps, one per channel, in at `tile`."""
        s = self.plan.tile
        rows, cols = slice(tile.y, tile.y + s), slice(tile.x, tile.x + s)
        for c, m in enumerate(maps):
            self._sum[c, rows, cols] += m * self._window

    def result(self) -> np.ndarray:
        """(channels, H, W) blended maps cropped to the image's own model-space shape
        (normalised in place: the stitcher is spent afterwards)."""
        h, w = self.plan.shape
        wy, wx = self._side_weights
        out = self._sum[:, :h, :w]
        out *= (1.0 / wy[:h])[None, :, None]
        out *= (1.0 / wx[:w])[None, None, :]
        return out
