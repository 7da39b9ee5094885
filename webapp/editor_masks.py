"""Masks to and from the review editor (Gradio's ImageEditor).

The editor shows the image with the current mask drawn over it (the composite) and one
empty layer to paint on. Strokes in the defect colour add to the mask, strokes in the
background colour take away from it, the eraser removes strokes; the saved mask is

    (shown mask ∪ defect strokes) − background strokes.

The shown mask itself is kept on the server, not in an editor layer: Gradio 6's editor
sizes a layer loaded from the server by the image's bounds at the moment it arrives, and
drops it when the image has not finished loading, so a mask sent as a layer would be lost
(and with it every predicted pixel of a correction).

The editor may show only a region of the image, display-sized (see `webapp.display_view`):
the mask on the server stays at native resolution and the strokes edit only that region,
each display pixel on the native pixels it covers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from webapp.display_view import Region, resample_nearest, strokes_to_native

MASK_RGB = (255, 0, 64)  # the defect brush, and the shown mask's tint
CLEAR_RGB = (0, 170, 255)  # the background brush
MASK_ALPHA = 140
BRUSH_COLORS = ("#ff0040", "#00aaff")  # MASK_RGB, CLEAR_RGB as the editor's brush colours


def mask_to_layer(mask: np.ndarray, rgb: tuple[int, int, int] = MASK_RGB) -> np.ndarray:
    """bool (H, W) → RGBA layer: the mask painted in `rgb`, the rest transparent."""
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[mask] = (*rgb, MASK_ALPHA)
    return layer


def layer_strokes(
    layer: np.ndarray | None, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(defect strokes, background strokes) of one editor layer as bool masks of `shape`.

    A painted (non-transparent) pixel belongs to the brush whose colour it is nearer to;
    layers without colour (grayscale, or RGB without alpha) count as defect strokes."""
    empty = np.zeros(shape, dtype=bool)
    if layer is None:
        return empty, empty.copy()
    if layer.ndim == 2:
        return resample_nearest(layer > 0, shape), empty
    painted = layer[..., 3] > 0 if layer.shape[2] == 4 else layer.max(axis=2) > 0
    colour = layer[..., :3].astype(np.int32)
    to_mask = ((colour - MASK_RGB) ** 2).sum(axis=2)
    to_clear = ((colour - CLEAR_RGB) ** 2).sum(axis=2)
    clear = painted & (to_clear < to_mask)
    add = painted & ~clear
    return resample_nearest(add, shape), resample_nearest(clear, shape)


def edited_mask(
    shown: np.ndarray | None, value: dict[str, Any] | None, region: Region | None = None
) -> np.ndarray:
    """The mask after the reviewer's strokes: (shown ∪ defect strokes) − background strokes.

    `shown` is the mask the editor was opened with, at native resolution (None: an empty one
    of the editor's background size); `region` is the part of it the editor showed (None:
    all of it), whatever size the editor showed it at."""
    if shown is None:
        background = (value or {}).get("background")
        if background is None:
            raise ValueError("the editor holds no image")
        shown = np.zeros(background.shape[:2], dtype=bool)
    mask = shown.astype(bool).copy()
    region = region if region is not None else Region.whole(mask.shape)
    for layer in (value or {}).get("layers") or []:
        if layer is None:
            continue
        add, clear = layer_strokes(layer, layer.shape[:2])
        if add.any():
            mask |= strokes_to_native(add, region, mask.shape)
        if clear.any():
            mask &= ~strokes_to_native(clear, region, mask.shape)
    return mask


def composite(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the mask tinted over it, as the editor shows it."""
    alpha = MASK_ALPHA / 255.0
    out = image.astype(np.float32).copy()
    out[mask] = out[mask] * (1 - alpha) + np.array(MASK_RGB, np.float32) * alpha
    return out.astype(np.uint8)


def editor_value(image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """An ImageEditor value: the image as background, shown with the mask tinted over it
    (the composite), and one empty layer for the reviewer's strokes."""
    empty = np.zeros((*mask.shape, 4), dtype=np.uint8)
    return {"background": image, "layers": [empty], "composite": composite(image, mask)}
