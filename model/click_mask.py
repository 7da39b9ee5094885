"""A reviewer's click proposes a defect mask, with no trained decoder needed.

OpenCV's GrabCut (colour models of foreground and background, refined by graph cuts) is
seeded from the click: its neighbourhood is probable foreground, the click itself certain
foreground, and pixels farther than the disk whose area is `max_fraction` of the image are
certain background, which bounds the proposal's size. When the normality model's anomaly
heatmap is known it bounds the proposal too: where it is near zero (normal surface) pixels
are certain background, where it is low probable background and where it is high probable
foreground. The connected region under the click is the proposal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from model.images import resize_to

WORK_SIDE = 512  # GrabCut runs on at most this many pixels a side: the window of a click
ITERATIONS = 5
SURE_BACKGROUND = 0.1  # heatmap below this: certain background (0.5 is the threshold)
LIKELY_BACKGROUND = 0.25
LIKELY_DEFECT = 0.5
SEED = 0


def _check_click(shape: tuple[int, int], click: tuple[float, float]) -> tuple[int, int]:
    """(row, col) of an (x, y) click in image pixels; ValueError outside the image."""
    h, w = shape
    x, y = click
    if not (0 <= x < w and 0 <= y < h):
        raise ValueError(f"click ({x:g}, {y:g}) lies outside the {w}x{h} image")
    return int(y), int(x)


def _disk(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _component(mask: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    """The 8-connected region of `mask` containing pixel `at` (empty when `at` is off)."""
    if not mask[at]:
        return np.zeros_like(mask)
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return labels == labels[at]


def _window(shape: tuple[int, int], row: int, col: int) -> tuple[slice, slice]:
    """The `WORK_SIDE` window of an image larger than that, centred on (row, col) and kept
    inside the image: a click on a large image is proposed from the pixels around it at
    their own resolution, so a hairline stays as thin as the camera drew it."""

    def span(centre: int, length: int) -> slice:
        if length <= WORK_SIDE:
            return slice(0, length)
        start = min(max(0, centre - WORK_SIDE // 2), length - WORK_SIDE)
        return slice(start, start + WORK_SIDE)

    return span(row, shape[0]), span(col, shape[1])


def _proposal(
    image: np.ndarray,
    click: tuple[float, float],
    heatmap: np.ndarray | None,
    max_fraction: float,
    background: Sequence[tuple[float, float]] = (),
) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB (H, W, 3) image, got shape {image.shape}")
    shape = image.shape[:2]
    row, col = _check_click(shape, click)
    if max(shape) <= WORK_SIDE:
        return _window_proposal(image, click, heatmap, max_fraction, background)
    rows, cols = _window(shape, row, col)
    heat = None if heatmap is None else resize_to(np.asarray(heatmap, np.float32), shape)
    inside = [
        (x - cols.start, y - rows.start)
        for x, y in background
        if rows.start <= y < rows.stop and cols.start <= x < cols.stop
    ]
    region = _window_proposal(
        image[rows, cols],
        (click[0] - cols.start, click[1] - rows.start),
        None if heat is None else heat[rows, cols],
        max_fraction,
        inside,
    )
    mask = np.zeros(shape, bool)
    mask[rows, cols] = region
    return mask


def _window_proposal(
    image: np.ndarray,
    click: tuple[float, float],
    heatmap: np.ndarray | None,
    max_fraction: float,
    background: Sequence[tuple[float, float]] = (),
) -> np.ndarray:
    if not 0.0 < max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    shape = image.shape[:2]
    row, col = _check_click(shape, click)
    scale = min(1.0, WORK_SIDE / max(shape))
    small = (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
    work = cv2.resize(image, small[::-1], interpolation=cv2.INTER_AREA) if scale < 1 else image
    at = (min(int(row * scale), small[0] - 1), min(int(col * scale), small[1] - 1))

    reach = math.sqrt(max_fraction * small[0] * small[1] / math.pi)  # disk of that area
    near = max(2.0, 0.03 * min(small))
    init = np.full(small, cv2.GC_BGD, np.uint8)
    init[_disk(small, at, reach)] = cv2.GC_PR_BGD
    if heatmap is not None:
        heat = resize_to(np.asarray(heatmap, np.float32), small)
        inside = init == cv2.GC_PR_BGD
        init[inside & (heat >= LIKELY_DEFECT)] = cv2.GC_PR_FGD
        init[heat < SURE_BACKGROUND] = cv2.GC_BGD
    init[_disk(small, at, near)] = cv2.GC_PR_FGD
    for x, y in background:
        b = _check_click(shape, (x, y))
        init[_disk(small, (int(b[0] * scale), int(b[1] * scale)), near)] = cv2.GC_BGD
    init[_disk(small, at, max(1.0, near / 3))] = cv2.GC_FGD
    if not np.isin(init, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
        init[0, :] = init[-1, :] = init[:, 0] = init[:, -1] = cv2.GC_PR_BGD

    cv2.setRNGSeed(SEED)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(work), init, None, bgd, fgd, ITERATIONS, cv2.GC_INIT_WITH_MASK)
    fg = (init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)
    region = _component(fg, at)
    if scale < 1:
        region = resize_to(region, shape)
        region = _component(region, (row, col)) if region[row, col] else region
    return region


def propose_mask(
    image: np.ndarray,
    click: tuple[float, float],
    *,
    heatmap: np.ndarray | None = None,
    max_fraction: float = 0.25,
) -> np.ndarray:
    """Boolean (H, W) mask of the defect under an (x, y) click on an RGB uint8 image.

    `heatmap` (any size, resized to the image; values in [0, 1], 0.5 at the normality
    threshold) bounds the proposal; it never covers more than `max_fraction` of the image,
    or on an image larger than `WORK_SIDE` of the window of that side around the click
    (a larger defect takes more than one click). Deterministic: OpenCV's random generator
    is seeded.
    """
    return _proposal(image, click, heatmap, max_fraction)


def refine_with_clicks(
    image: np.ndarray,
    clicks: Sequence[tuple[float, float, bool]],
    heatmap: np.ndarray | None = None,
    *,
    max_fraction: float = 0.25,
) -> np.ndarray:
    """Mask from (x, y, positive) clicks: the union of the positive clicks' proposals, each
    kept off the negative clicks, minus the region under every negative click."""
    negatives = [(x, y) for x, y, positive in clicks if not positive]
    mask = np.zeros(image.shape[:2], bool)
    for x, y, positive in clicks:
        if positive:
            mask |= _proposal(image, (x, y), heatmap, max_fraction, negatives)
    for x, y in negatives:
        mask &= ~_component(mask, _check_click(image.shape[:2], (x, y)))
    return mask
