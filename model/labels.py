"""Skeleton-heatmap labels derived from binary defect masks.

Each connected defect region is skeletonised (scikit-image), its skeleton blurred with a
Gaussian (OpenCV) and scaled so the region's peak is 1, and regions are combined by
maximum. An empty mask gives an all-zero heatmap. Thin defects keep a line-shaped label;
blob-like ones (stains) a compact peak around their medial axis.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.measure import label as label_regions
from skimage.morphology import skeletonize

DEFAULT_SIGMA = 4.0


def skeleton_heatmap(mask: np.ndarray, *, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """float32 heatmap in [0, 1] with the shape of `mask` (any dtype; nonzero = defect)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    binary = mask > 0
    heat = np.zeros(binary.shape, dtype=np.float32)
    if not binary.any():
        return heat
    regions = label_regions(binary, connectivity=2)
    skeleton = skeletonize(binary)
    for region in range(1, int(regions.max()) + 1):
        inside = regions == region
        bone = skeleton & inside
        if not bone.any():  # degenerate region: fall back to its centre pixel
            ys, xs = np.nonzero(inside)
            bone = np.zeros_like(inside)
            bone[int(np.median(ys)), int(np.median(xs))] = True
        blurred = cv2.GaussianBlur(bone.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma)
        peak = float(blurred.max())
        if peak > 0:
            np.maximum(heat, blurred / peak, out=heat)
    return heat
