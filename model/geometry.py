"""How a model sees an image: its pixel scale and its tile, chosen at training time.

A model works on square tiles of its encoder's input size. `scale` says at which pixel
scale the tiles are cut: 1.0 is the camera's own pixels, 0.5 half resolution; an image of
any size and aspect ratio is rescaled by that factor (never stretched) and covered with
overlapping tiles. `scale=None` is "fit", the squash of the whole image into one tile,
kept as an explicit choice for datasets whose images are all small (and the meaning of
every checkpoint written before scales existed).

"Model space" below is the image after this rescaling: the space tiles, training crops,
probability maps and the mask rule's minimum area live in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from model.images import resize_image, resize_mask

FIT = "fit"
AUTO = "auto"
# "auto" keeps the squash only where it costs nothing: every image within this factor of
# the tile on both sides.
AUTO_FIT_TOLERANCE = 1.25

Scale = float | None  # None: fit


def parse_scale(text: str | float | None) -> float | str | None:
    """'fit' → None, 'auto' → 'auto', a number in (0, 4] → that float; ValueError else."""
    if text is None:
        return None
    if isinstance(text, str):
        word = text.strip().lower()
        if word == FIT:
            return None
        if word == AUTO:
            return AUTO
        try:
            value = float(word)
        except ValueError:
            raise ValueError(f"scale must be 'fit', 'auto' or a number, got {text!r}") from None
    else:
        value = float(text)
    if not 0.0 < value <= 4.0:
        raise ValueError(f"scale must be in (0, 4], got {value}")
    return value


def choose_scale(shapes: Iterable[tuple[int, int]], tile: int) -> Scale:
    """The scale "auto" means for images of these (H, W) shapes: fit when every image is
    close to one tile (the squash loses nothing), else the camera's own pixels."""
    limit = tile * AUTO_FIT_TOLERANCE
    small = all(
        h <= limit and w <= limit and max(h, w) <= min(h, w) * AUTO_FIT_TOLERANCE for h, w in shapes
    )
    return None if small else 1.0


def resolve_scale(
    setting: str | float | None, tile: int, shapes: Callable[[], Iterable[tuple[int, int]]]
) -> Scale:
    """The pixel scale a setting means: "auto" is decided by `choose_scale` from the (H, W)
    shapes `shapes()` gives, which is called only then."""
    chosen = parse_scale(setting)
    if chosen == AUTO:
        return choose_scale(shapes(), tile)
    assert not isinstance(chosen, str)
    return chosen


def scale_label(scale: Scale) -> str:
    """How a scale is written for people: 'fit' or the factor."""
    return FIT if scale is None else f"{scale:g}"


@dataclass(frozen=True)
class Geometry:
    """A model's tile size (the encoder's input side), pixel scale (None: fit) and tile
    overlap in pixels (None: a quarter tile)."""

    tile: int
    scale: Scale = None
    tile_overlap: int | None = None

    def __post_init__(self) -> None:
        if self.tile_overlap is not None and not 0 <= self.tile_overlap < self.tile:
            raise ValueError(f"tile overlap must be in [0, {self.tile}), got {self.tile_overlap}")

    @classmethod
    def of(cls, space: Geometry | int) -> Geometry:
        """`space` itself, or for a bare input size the fit geometry of that tile."""
        return space if isinstance(space, Geometry) else cls(space, None)

    @property
    def fit(self) -> bool:
        return self.scale is None

    @property
    def overlap(self) -> int:
        """Pixels neighbouring tiles share, so a defect cut by one tile edge is whole in
        the next tile and the seams blend away; less overlap is fewer tiles (faster)."""
        return self.tile // 4 if self.tile_overlap is None else self.tile_overlap

    def model_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of an image of `shape` in model space."""
        if self.scale is None:
            return (self.tile, self.tile)
        h, w = shape
        return (max(1, round(h * self.scale)), max(1, round(w * self.scale)))

    def image_to_model(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB at the image's size → model space (area interpolation when shrinking)."""
        if self.scale is None:
            return resize_image(image, self.tile)
        h, w = self.model_shape(image.shape[:2])
        if (h, w) == image.shape[:2]:
            return image
        interp = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(image, (w, h), interpolation=interp)

    def mask_to_model(self, mask: np.ndarray) -> np.ndarray:
        """Boolean mask → model space: a pixel is defect when at least half its area was."""
        if self.scale is None:
            return resize_mask(mask, self.tile)
        h, w = self.model_shape(mask.shape[:2])
        if (h, w) == mask.shape[:2]:
            return mask.astype(bool)
        resized = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        return resized >= 0.5

    def codes_to_model(self, codes: np.ndarray) -> np.ndarray:
        """A uint8 type-code map (`model.region_types`) → model space, nearest neighbour:
        codes are names, never averaged. Pair it with `mask_to_model` of the same mask."""
        h, w = self.model_shape(codes.shape[:2])
        if (h, w) == codes.shape[:2]:
            return codes.astype(np.uint8)
        return cv2.resize(codes.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
