"""Typed regions on the review page, in plain arrays: which region a click means, which type
a painted colour means, how types survive an edit, and the mask drawn in its types' colours.

A typed mask is a boolean mask and a `uint8` map of defect-type ids of the same shape (the
database's ids, as stored in type masks), nonzero exactly where the mask is set. A region
(8-connected, numbered as `model.region_types.label_regions` numbers them, so as storage
does) has one type; the page edits it region by region. No Gradio and no services here, so
every rule of the review page's typing is tested on small arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from model.region_types import label_regions, majority_codes

UNSPECIFIED_ID = 1  # storage seeds "unspecified" with this id; every untyped region is it
MAX_TYPE_ID = 255  # type masks are 8-bit

RGB = tuple[int, int, int]
BBox = tuple[int, int, int, int]  # x, y, width, height in native pixels


def hex_rgb(color: str) -> RGB:
    """ "#rrggbb" → (r, g, b)."""
    text = color.strip().lstrip("#")
    if len(text) != 6:
        raise ValueError(f"colour must look like #rrggbb, got {color!r}")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


@dataclass(frozen=True)
class TypeStyle:
    """A defect type as the page draws and picks it."""

    id: int
    name: str
    color: str
    key: str | None = None

    @property
    def rgb(self) -> RGB:
        return hex_rgb(self.color)

    @property
    def label(self) -> str:
        """The picker's text: the name and, when it has one, the shortcut key."""
        return f"{self.name} [{self.key}]" if self.key else self.name

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> TypeStyle:
        """From a `Services.defect_types()` row."""
        return cls(int(row["id"]), str(row["name"]), str(row["color"]), row.get("key") or None)


@dataclass(frozen=True)
class PredictedRegion:
    """What the model said of one region: where it is, its type and confidence. Shown beside
    a region of the edited mask that still is exactly this region."""

    bbox: BBox
    area: int
    type: str
    confidence: float | None


@dataclass(frozen=True)
class TypedMask:
    """The native mask the editor edits, with its type map and what the model predicted of
    its regions (empty without a prediction). One value, so everything that renders or edits
    the mask gets the types with it."""

    mask: np.ndarray
    types: np.ndarray
    predicted: tuple[PredictedRegion, ...] = field(default=())

    @classmethod
    def of(
        cls,
        mask: np.ndarray,
        types: np.ndarray | None = None,
        predicted: Sequence[PredictedRegion] = (),
        unspecified: int = UNSPECIFIED_ID,
    ) -> TypedMask:
        mask = mask.astype(bool)
        return cls(mask, normalise_types(mask, types, unspecified), tuple(predicted))

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])


def normalise_types(
    mask: np.ndarray, types: np.ndarray | None, unspecified: int = UNSPECIFIED_ID
) -> np.ndarray:
    """A type map nonzero exactly inside `mask`: 0 (or nothing) inside the mask becomes
    `unspecified`, anything outside it 0. Stored type masks may leave unspecified pixels 0."""
    if types is None:
        return np.where(mask, unspecified, 0).astype(np.uint8)
    if types.shape != mask.shape:
        raise ValueError(f"type map {types.shape} does not match the mask {mask.shape}")
    out = np.where(types > 0, types, unspecified).astype(np.uint8)
    out[~mask.astype(bool)] = 0
    return out


def nearest_colour(colours: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index into `palette` (K, 3) of the colour nearest to each of `colours` (..., 3):
    anti-aliased stroke edges and re-encoded layers drift a little from the brush colour."""
    diff = colours[..., None, :3].astype(np.int32) - palette.astype(np.int32)
    return np.argmin((diff * diff).sum(axis=-1), axis=-1)


def majority(
    labels: np.ndarray, count: int, ids: np.ndarray, ignore: Sequence[int] = ()
) -> np.ndarray:
    """The most common id in each region (index i is label i, index 0 unused), ids 0 and
    `ignore` not counting; 0 for a region with none. Ties go to the smaller id."""
    return np.array([0, *majority_codes(labels, count, ids, ignore=ignore)], dtype=np.uint8)


def resolve_types(
    mask: np.ndarray,
    previous: np.ndarray,
    fresh: np.ndarray,
    unspecified: int = UNSPECIFIED_ID,
) -> np.ndarray:
    """The type map of an edited mask: each region of `mask` gets the type most painted on it
    (`fresh`: the ids of this edit's strokes), else the type it mostly had (`previous`), else
    unspecified. Strokes in a named type's colour retype what they touch; strokes in the
    unspecified colour only add pixels, so extending a typed region keeps its type. One
    type per region, because the regions that two strokes join are one defect."""
    labels, count = label_regions(mask)
    painted = majority(labels, count, fresh, ignore=(unspecified,))
    kept = majority(labels, count, previous, ignore=(unspecified,))
    per_region = np.where(painted > 0, painted, np.where(kept > 0, kept, unspecified))
    per_region[0] = 0
    return per_region.astype(np.uint8)[labels]


def region_pixel(
    labels: np.ndarray, point: tuple[float, float], radius: float = 0
) -> tuple[int, int] | None:
    """A pixel (x, y) of the region a click at native `point` means: the one under it, else
    the nearest region pixel within `radius` (a hairline is hard to hit at Fit); None when
    no region is that near. The page keeps this pixel as the selection, so the selection
    follows its region through edits that keep the pixel."""
    height, width = labels.shape
    x, y = int(point[0]), int(point[1])  # the pixel the point is in (points are >= 0)
    if 0 <= x < width and 0 <= y < height and labels[y, x] > 0:
        return x, y
    r = int(np.ceil(radius))
    if r <= 0:
        return None
    x0, y0 = max(0, x - r), max(0, y - r)
    window = labels[y0 : min(height, y + r + 1), x0 : min(width, x + r + 1)]
    ys, xs = np.nonzero(window)
    if not len(ys):
        return None
    distance = (ys + y0 - point[1]) ** 2 + (xs + x0 - point[0]) ** 2
    nearest = int(np.argmin(distance))
    if distance[nearest] > radius * radius:
        return None
    return int(xs[nearest] + x0), int(ys[nearest] + y0)


def set_region_type(types: np.ndarray, labels: np.ndarray, label: int, type_id: int) -> np.ndarray:
    """A copy of `types` with every pixel of region `label` of type `type_id`."""
    if label <= 0:
        raise ValueError("no region selected")
    if not 0 < type_id <= MAX_TYPE_ID:
        raise ValueError(f"type id must be in 1..{MAX_TYPE_ID}, got {type_id}")
    out = types.copy()
    out[labels == label] = type_id
    return out


@dataclass(frozen=True)
class RegionRow:
    """One region of a typed mask, as the region list shows it."""

    label: int
    type_id: int
    area: int
    bbox: BBox


def region_rows(labels: np.ndarray, count: int, types: np.ndarray) -> list[RegionRow]:
    """The regions of a labelled typed mask, by label: type, area and bounding box."""
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    kinds = majority(labels, count, types)
    rows = []
    for label, box in enumerate(ndimage.find_objects(labels, max_label=count), start=1):
        if box is None:
            continue
        ys, xs = box
        bbox = (xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
        rows.append(RegionRow(label, int(kinds[label]), int(areas[label]), bbox))
    return rows


def predicted_for(row: RegionRow, predicted: Sequence[PredictedRegion]) -> PredictedRegion | None:
    """The prediction of a region the edit left as it was (same box, same area)."""
    for p in predicted:
        if tuple(p.bbox) == row.bbox and p.area == row.area:
            return p
    return None


def typed_composite(
    image: np.ndarray,
    ids: np.ndarray,
    colours: Mapping[int, RGB],
    alpha: float,
    fallback: RGB = (255, 204, 0),
) -> np.ndarray:
    """The image with every pixel of type id k tinted in `colours[k]` (`fallback` for an id
    without a colour), background (id 0) untouched: the typed mask as the reviewer sees it."""
    out = image[..., :3].astype(np.float32)
    inside = ids > 0
    if not inside.any():
        return out.astype(np.uint8)
    lut = np.tile(np.array(fallback, np.float32), (MAX_TYPE_ID + 1, 1))
    for type_id, rgb in colours.items():
        if 0 < type_id <= MAX_TYPE_ID:
            lut[type_id] = rgb
    out[inside] = out[inside] * (1 - alpha) + lut[ids[inside]] * alpha
    return out.astype(np.uint8)


def ring(region: np.ndarray, width: int = 2) -> np.ndarray:
    """The pixels within `width` pixels around a boolean region, outside it: the selected
    region's border, drawn outside so its type colour stays visible (a hairline too)."""
    grown = region.copy()
    for _ in range(width):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown & ~region


def retyped(mask: np.ndarray, types: np.ndarray, predicted: np.ndarray | None) -> np.ndarray | None:
    """The type map of `mask` with the reviewer's `types` where they name a pixel of it and
    the `predicted` ones elsewhere (None: every pixel unspecified); `predicted` itself (the
    very object) when that changes nothing. ValueError when the shapes differ."""
    if types.shape != mask.shape:
        shown = "x".join(str(n) for n in types.shape[::-1])
        raise ValueError(f"types are {shown} but the mask is {mask.shape[1]}x{mask.shape[0]}")
    mask = mask.astype(bool)
    theirs = np.zeros(mask.shape, np.uint8) if predicted is None else predicted.astype(np.uint8)
    theirs = np.where(mask, theirs, 0).astype(np.uint8)
    theirs[mask & (theirs == 0)] = UNSPECIFIED_ID
    mine = np.where(mask & (types > 0), types, theirs).astype(np.uint8)
    return predicted if np.array_equal(mine, theirs) else mine
