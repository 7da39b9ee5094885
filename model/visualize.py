"""Pictures for people: colour-mapped heatmaps, mask PNGs and overlays."""

from __future__ import annotations

import cv2
import numpy as np


def colorize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W) → uint8 RGB with the inferno colour map."""
    scaled = np.clip(heatmap * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def mask_png(mask: np.ndarray) -> np.ndarray:
    """bool (H, W) → uint8 0/255 (the on-disk mask format)."""
    return mask.astype(np.uint8) * 255


def overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    opacity: float = 0.45,
    contour_rgb: tuple[int, int, int] = (0, 255, 128),
) -> np.ndarray:
    """Blend the colour heatmap over the image (weighted by heat) and outline the mask."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    color = colorize_heatmap(heatmap).astype(np.float32)
    alpha = (opacity * np.clip(heatmap, 0, 1))[..., None]
    out = (image.astype(np.float32) * (1 - alpha) + color * alpha).astype(np.uint8)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        thickness = max(1, round(max(image.shape[:2]) / 300))
        cv2.drawContours(out, contours, -1, contour_rgb, thickness)
    return out
