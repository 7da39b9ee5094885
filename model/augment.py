"""Flips and rotations that keep cached features exact.

Every transform has a name, and the feature cache keys on it: the features of a flipped
image are the encoder's output for the flipped pixels, never a flip of the features.
"""

from __future__ import annotations

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
