"""Conversions between boolean masks and the Gradio ImageEditor's layers."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

MASK_RGB = (255, 0, 64)
MASK_ALPHA = 140


def mask_to_layer(mask: np.ndarray) -> np.ndarray:
    """bool (H, W) → RGBA layer: the mask painted in the brush colour, the rest transparent."""
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[mask] = (*MASK_RGB, MASK_ALPHA)
    return layer


def layer_to_mask(layer: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """An editor layer → bool mask of `shape`: painted (non-transparent) pixels are defect."""
    if layer is None:
        return np.zeros(shape, dtype=bool)
    if layer.ndim == 3 and layer.shape[2] == 4:
        painted = layer[..., 3] > 0
    elif layer.ndim == 3:
        painted = layer.max(axis=2) > 0
    else:
        painted = layer > 0
    if painted.shape != shape:
        painted = cv2.resize(
            painted.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST
        ).astype(bool)
    return painted


def editor_mask(value: dict[str, Any] | None, shape: tuple[int, int]) -> np.ndarray:
    """The union of all painted layers of an ImageEditor value, as a bool mask."""
    if not value or not value.get("layers"):
        return np.zeros(shape, dtype=bool)
    mask = np.zeros(shape, dtype=bool)
    for layer in value["layers"]:
        mask |= layer_to_mask(layer, shape)
    return mask


def composite(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the mask layer blended over it, as the editor draws it."""
    alpha = MASK_ALPHA / 255.0
    out = image.astype(np.float32).copy()
    out[mask] = out[mask] * (1 - alpha) + np.array(MASK_RGB, np.float32) * alpha
    return out.astype(np.uint8)


def editor_value(image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """An ImageEditor value: the image as background, the mask as the one editable layer.

    The composite must be given too: without it the editor shows the background only.
    """
    return {
        "background": image,
        "layers": [mask_to_layer(mask)],
        "composite": composite(image, mask),
    }
