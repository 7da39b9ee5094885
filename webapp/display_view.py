"""The region of an image in view on the review page, and its display-sized rendering.

A 4096 × 4096 image is a 48 MB PNG per interaction, and no screen shows it whole at native
resolution. So the server keeps every native-resolution array (image, heatmap, the mask being
edited) and sends the browser a *view*: the region in view (the whole image at Fit, a crop
when zoomed) rendered at most `DISPLAY_MAX_SIDE` pixels on its long side. A region that fits
is sent as it is, never resampled; so images whose long side is at most 1024 look exactly as
they did before views existed.

Strokes painted on a rendering come back at native resolution by integer nearest-neighbour
indexing: native column x0 + c takes display column ⌊c·dw/w⌋ (region of native width w shown
at width dw), so display column x covers native columns [x0 + ⌈x·w/dw⌉, x0 + ⌈(x+1)·w/dw⌉)
(rows likewise), in integers with no rounding drift; clicks map to the centre of that block.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DISPLAY_MAX_SIDE = 1024  # long side, in pixels, of anything the review page is sent
OVERVIEW_SIDE = 200  # long side of the pan overview
OVERVIEW_RGB = (255, 220, 0)  # the view's rectangle on the overview

FIT = "fit"
NATIVE = "1:1"
# Zoom choices as (label, value): a factor over Fit, or 1:1 (native pixels, a display-sized
# window). The values travel through the page, so they are plain strings.
ZOOM_CHOICES: tuple[tuple[str, str], ...] = (
    ("Fit", FIT),
    ("2×", "2"),
    ("4×", "4"),
    ("8×", "8"),
    ("1:1 pixels", NATIVE),
)


@dataclass(frozen=True)
class Region:
    """A rectangle of native image pixels: columns [x0, x0 + width), rows [y0, y0 + height)."""

    x0: int
    y0: int
    width: int
    height: int

    @classmethod
    def whole(cls, shape: tuple[int, ...]) -> Region:
        return cls(0, 0, int(shape[1]), int(shape[0]))

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.height), slice(self.x0, self.x0 + self.width)


@dataclass(frozen=True)
class View:
    """What the reviewer asked to see: a zoom choice and the native (x, y) point to centre
    (None: the image's centre). Kept per page; the region follows from the image's shape."""

    zoom: str = FIT
    centre: tuple[float, float] | None = None

    def region(self, shape: tuple[int, ...], max_side: int = DISPLAY_MAX_SIDE) -> Region:
        return view_region(shape, self.zoom, self.centre, max_side)


def _window(size: int, span: int, centre: float) -> int:
    """Start of a `span`-long window centred on `centre`, kept inside [0, size)."""
    return int(min(max(round(centre - span / 2), 0), size - span))


def view_region(
    shape: tuple[int, ...],
    zoom: str,
    centre: tuple[float, float] | None = None,
    max_side: int = DISPLAY_MAX_SIDE,
) -> Region:
    """The native region in view at `zoom` around `centre`, moved inside the image at edges.

    Fit is the whole image; a factor f shows 1/f of each side; 1:1 a window of at most
    `max_side` native pixels a side, shown unresampled."""
    height, width = int(shape[0]), int(shape[1])
    if zoom == FIT:
        return Region(0, 0, width, height)
    if zoom == NATIVE:
        span_w, span_h = min(width, max_side), min(height, max_side)
    else:
        factor = float(zoom)
        if factor < 1:
            raise ValueError(f"zoom must be at least 1, got {zoom!r}")
        span_w, span_h = max(1, round(width / factor)), max(1, round(height / factor))
    cx, cy = centre if centre is not None else (width / 2, height / 2)
    return Region(_window(width, span_w, cx), _window(height, span_h, cy), span_w, span_h)


def display_shape(shape: tuple[int, ...], max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """(height, width) at which a region of `shape` is sent: as it is when it fits, else
    scaled to `max_side` on its long side (aspect kept, at least one pixel)."""
    height, width = int(shape[0]), int(shape[1])
    long_side = max(height, width)
    if long_side <= max_side:
        return height, width
    scale = max_side / long_side
    return max(1, round(height * scale)), max(1, round(width * scale))


def render_region(
    image: np.ndarray, region: Region, max_side: int = DISPLAY_MAX_SIDE
) -> np.ndarray:
    """The region of `image` (RGB, a heatmap or a bool mask) at its display size.

    Pictures are averaged down (area resampling). A bool mask keeps every display pixel any
    of whose native pixels is set, so a one-pixel hairline stays visible at Fit; the strokes
    that edit it map back onto those same native pixels."""
    crop = image[region.slices]
    height, width = display_shape(crop.shape, max_side)
    if (height, width) == crop.shape[:2]:
        return crop
    size = (width, height)
    if crop.dtype == bool:
        covered = cv2.resize(crop.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        return covered > 0
    source = crop.astype(np.float32) if crop.dtype == np.float16 else crop
    out = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
    return out.astype(image.dtype, copy=False)


def resample_nearest(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`values` (H, W[, C]) at (height, width) `shape`: output row r takes input row
    ⌊r·H/height⌋ (columns likewise), exact integer nearest-neighbour."""
    height, width = shape
    if values.shape[:2] == (height, width):
        return values
    rows = np.arange(height) * values.shape[0] // height
    cols = np.arange(width) * values.shape[1] // width
    return values[rows][:, cols]


def strokes_to_native(
    layer: np.ndarray, region: Region, native_shape: tuple[int, int]
) -> np.ndarray:
    """A display-sized stroke layer (or stroke mask) drawn over `region`, at native size:
    each display pixel on the native pixels it covers, nothing outside the region."""
    out = np.zeros((*native_shape, *layer.shape[2:]), dtype=layer.dtype)
    out[region.slices] = resample_nearest(layer, region.shape)
    return out


def _block_centre(index: float, native: int, shown: int) -> float:
    """Centre of the native pixels [⌈i·native/shown⌉, ⌈(i+1)·native/shown⌉) that display
    pixel i covers (i clamped into the display)."""
    i = min(max(int(index), 0), shown - 1)
    first, end = -(-i * native // shown), -(-(i + 1) * native // shown)
    return (first + end - 1) / 2


def display_to_native(
    point: tuple[float, float], region: Region, shown: tuple[int, int]
) -> tuple[float, float]:
    """The native (x, y) under display pixel `point` of `region` shown at (height, width)
    `shown`: the centre of the native pixels it covers (that very pixel when the region is
    shown unresampled)."""
    height, width = shown
    return (
        region.x0 + _block_centre(point[0], region.width, width),
        region.y0 + _block_centre(point[1], region.height, height),
    )


def render_overview(image: np.ndarray, region: Region, max_side: int = OVERVIEW_SIDE) -> np.ndarray:
    """The whole image, small, with the region in view outlined: the map for panning."""
    whole = Region.whole(image.shape)
    small = np.array(render_region(image, whole, max_side), dtype=np.uint8)  # a copy to draw on
    height, width = small.shape[:2]
    sx, sy = width / whole.width, height / whole.height
    x0, y0 = int(region.x0 * sx), int(region.y0 * sy)
    x1 = max(x0, min(width - 1, int(np.ceil((region.x0 + region.width) * sx)) - 1))
    y1 = max(y0, min(height - 1, int(np.ceil((region.y0 + region.height) * sy)) - 1))
    cv2.rectangle(small, (x0, y0), (x1, y1), OVERVIEW_RGB, 1 if max(height, width) < 120 else 2)
    return small


def overview_to_native(
    point: tuple[float, float], shape: tuple[int, ...], max_side: int = OVERVIEW_SIDE
) -> tuple[float, float]:
    """The native (x, y) under a click at `point` on the overview of an image of `shape`."""
    whole = Region.whole(shape)
    return display_to_native(point, whole, display_shape(shape, max_side))
