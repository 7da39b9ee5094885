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

With defect types, the defect brush has one colour per type (the types' own colours) and a
stroke belongs to the type whose colour it is nearest to; the edited regions then get their
types by `webapp.typed_regions.resolve_types`, and the composite tints each region in its
type's colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from webapp.display_view import Region, render_region, resample_nearest, strokes_to_native
from webapp.typed_regions import (
    RGB,
    UNSPECIFIED_ID,
    TypedMask,
    TypeStyle,
    nearest_colour,
    resolve_types,
)

MASK_RGB = (255, 0, 64)  # the defect brush, and the shown mask's tint
CLEAR_RGB = (0, 170, 255)  # the background brush
MASK_ALPHA = 140
CLEAR_COLOR = "#00aaff"  # CLEAR_RGB as a brush colour
BRUSH_COLORS = ("#ff0040", CLEAR_COLOR)  # MASK_RGB, CLEAR_RGB: the brushes without types

Palette = Sequence[tuple[int, RGB]]  # (type id, brush colour) of each defect brush


def brush_colors(types: Sequence[TypeStyle]) -> list[str]:
    """The editor's brush colours: one per type, then the background brush."""
    return [t.color for t in types if t.color.lower() != CLEAR_COLOR] + [CLEAR_COLOR]


def palette_of(types: Sequence[TypeStyle]) -> list[tuple[int, RGB]]:
    return [(t.id, t.rgb) for t in types]


def mask_to_layer(mask: np.ndarray, rgb: tuple[int, int, int] = MASK_RGB) -> np.ndarray:
    """bool (H, W) → RGBA layer: the mask painted in `rgb`, the rest transparent."""
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[mask] = (*rgb, MASK_ALPHA)
    return layer


def layer_stroke_ids(
    layer: np.ndarray | None, shape: tuple[int, int], palette: Palette
) -> tuple[np.ndarray, np.ndarray]:
    """(type id of each defect stroke pixel, 0 elsewhere; background strokes) of one editor
    layer at `shape`.

    A painted (non-transparent) pixel belongs to the brush whose colour it is nearest to,
    among the palette's and the background brush; layers without colour (grayscale, or RGB
    without alpha) are defect strokes of the palette's first type."""
    ids = np.zeros(shape, dtype=np.uint8)
    clear = np.zeros(shape, dtype=bool)
    if layer is None:
        return ids, clear
    first = palette[0][0] if palette else UNSPECIFIED_ID
    if layer.ndim == 2:
        return resample_nearest(np.where(layer > 0, first, 0).astype(np.uint8), shape), clear
    painted = layer[..., 3] > 0 if layer.shape[2] == 4 else layer.max(axis=2) > 0
    if not painted.any():
        return ids, clear
    colours = np.array([CLEAR_RGB, *(rgb for _, rgb in palette)], dtype=np.int32)
    brush_ids = np.array([0, *(type_id for type_id, _ in palette)], dtype=np.uint8)
    nearest = np.zeros(painted.shape, dtype=np.int64)
    nearest[painted] = nearest_colour(layer[painted][:, :3], colours)
    stroke_ids = np.where(painted & (nearest > 0), brush_ids[nearest], 0).astype(np.uint8)
    return resample_nearest(stroke_ids, shape), resample_nearest(painted & (nearest == 0), shape)


def layer_strokes(
    layer: np.ndarray | None, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(defect strokes, background strokes) of one editor layer as bool masks of `shape`,
    with the two brushes of an editor without types (defect colour and background)."""
    ids, clear = layer_stroke_ids(layer, shape, [(UNSPECIFIED_ID, MASK_RGB)])
    return ids > 0, clear


def edited_typed(
    shown: TypedMask | None,
    value: dict[str, Any] | None,
    region: Region | None = None,
    palette: Palette = ((UNSPECIFIED_ID, MASK_RGB),),
    unspecified: int = UNSPECIFIED_ID,
) -> TypedMask:
    """The typed mask after the reviewer's strokes: (shown ∪ defect strokes) − background
    strokes, each region typed by `resolve_types` (the type most painted on it, else the
    type it had).

    `shown` is what the editor was opened with, at native resolution (None: an empty mask of
    the editor's background size); `region` is the part of it the editor showed (None: all
    of it), whatever size the editor showed it at."""
    if shown is None:
        background = (value or {}).get("background")
        if background is None:
            raise ValueError("the editor holds no image")
        shown = TypedMask.of(np.zeros(background.shape[:2], dtype=bool), unspecified=unspecified)
    layers = [layer for layer in (value or {}).get("layers") or [] if layer is not None]
    if not layers:
        return shown
    mask = shown.mask.copy()
    fresh = np.zeros(mask.shape, dtype=np.uint8)
    region = region if region is not None else Region.whole(mask.shape)
    for layer in layers:
        ids, clear = layer_stroke_ids(layer, layer.shape[:2], palette)
        if ids.any():
            native = strokes_to_native(ids, region, mask.shape)
            mask |= native > 0
            fresh = np.where(native > 0, native, fresh)
        if clear.any():
            removed = strokes_to_native(clear, region, mask.shape)
            mask &= ~removed
            fresh[removed] = 0
    if not (fresh.any() or (mask != shown.mask).any()):
        return shown
    types = resolve_types(mask, shown.types, fresh, unspecified)
    return TypedMask(mask, types, shown.predicted)


def edited_mask(
    shown: np.ndarray | None, value: dict[str, Any] | None, region: Region | None = None
) -> np.ndarray:
    """The mask after the reviewer's strokes: (shown ∪ defect strokes) − background strokes.

    `shown` is the mask the editor was opened with, at native resolution (None: an empty one
    of the editor's background size); `region` is the part of it the editor showed (None:
    all of it), whatever size the editor showed it at."""
    typed = None if shown is None else TypedMask.of(shown)
    return edited_typed(typed, value, region).mask


def render_type_ids(types: np.ndarray, region: Region) -> np.ndarray:
    """The type map's `region` at its display size: a display pixel shows a type when any of
    its native pixels has it (as `render_region` shows a bool mask, so a hairline stays
    visible at Fit), the highest id where several meet."""
    crop = types[region.slices]
    shown = render_region(crop > 0, Region.whole(crop.shape))
    if shown.shape == crop.shape:
        return crop
    out = np.zeros(shown.shape, dtype=np.uint8)
    present = np.nonzero(np.bincount(crop.ravel(), minlength=2)[1:])[0] + 1
    for type_id in present:
        out[render_region(crop == type_id, Region.whole(crop.shape))] = type_id
    return out


def composite(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the mask tinted over it, as the editor shows it."""
    alpha = MASK_ALPHA / 255.0
    out = image.astype(np.float32).copy()
    out[mask] = out[mask] * (1 - alpha) + np.array(MASK_RGB, np.float32) * alpha
    return out.astype(np.uint8)


def editor_value(
    image: np.ndarray, mask: np.ndarray, shown: np.ndarray | None = None
) -> dict[str, Any]:
    """An ImageEditor value: the image as background, shown with the mask tinted over it
    (the composite; `shown` when given, e.g. the typed composite), and one empty layer for
    the reviewer's strokes."""
    empty = np.zeros((*mask.shape, 4), dtype=np.uint8)
    picture = composite(image, mask) if shown is None else shown
    return {"background": image, "layers": [empty], "composite": picture}
