"""Flips and rotations that keep cached features exact.

Every transform has a name, and the feature cache keys on it: the features of a flipped
image are the encoder's output for the flipped pixels, never a flip of the features.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

# Symmetries of the square that are their own inverse (the eight of D4 minus the two
# quarter turns); images are square once resized to the encoder's input size.
TRANSFORMS: tuple[str, ...] = ("identity", "hflip", "vflip", "rot180", "transpose", "transverse")


def apply_transform(array: np.ndarray, name: str) -> np.ndarray:
    """Apply transform `name` to an (H, W) or (H, W, C) array."""
    if name == "identity":
        return array
    if name == "hflip":
        return np.ascontiguousarray(array[:, ::-1])
    if name == "vflip":
        return np.ascontiguousarray(array[::-1])
    if name == "rot180":
        return np.ascontiguousarray(array[::-1, ::-1])
    if name == "transpose":
        return np.ascontiguousarray(array.swapaxes(0, 1))
    if name == "transverse":
        return np.ascontiguousarray(array[::-1, ::-1].swapaxes(0, 1))
    raise ValueError(f"unknown transform {name!r}; known: {TRANSFORMS}")


def fixed_views(
    count: int, transforms: Sequence[str], views: int, rng: random.Random
) -> list[tuple[str, ...]]:
    """The transforms each of `count` training images may be shown in.

    Every image keeps the identity plus `views - 1` others drawn once per run, so the
    encoder runs at most `views` times per image and, after the first epochs, training
    reads only cached features; across the set every transform still occurs.
    """
    others = [t for t in transforms if t != "identity"]
    extra = max(0, min(views - 1, len(others)))
    base = ("identity",) if "identity" in transforms else ()
    return [base + tuple(rng.sample(others, extra)) for _ in range(count)]
