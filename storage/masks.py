"""Mask and heatmap encoding for the blob store (PNG via Pillow), with validation."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from storage.errors import InvalidMaskError


def validate_mask(mask: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """A boolean copy of `mask`; InvalidMaskError unless it is (height, width) and binary
    (values within {0, 1} or {0, 255}, or boolean)."""
    if mask.ndim != 2 or mask.shape != (height, width):
        raise InvalidMaskError(
            f"mask is {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]} "
            f"but the image is {width}x{height}"
        )
    if mask.dtype != bool:
        values = np.unique(mask)
        if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
            shown = ", ".join(str(v) for v in values[:5])
            raise InvalidMaskError(f"mask is not binary: values {shown}… (expected 0/1 or 0/255)")
    return mask.astype(bool)


def encode_mask(mask: np.ndarray) -> bytes:
    """bool mask → 1-channel PNG with 0/255."""
    buf = io.BytesIO()
    PILImage.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def decode_mask(data: bytes) -> np.ndarray:
    """PNG → bool mask."""
    with PILImage.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L")) > 127


def encode_heatmap(heatmap: np.ndarray) -> bytes:
    """float heatmap in [0, 1] → 16-bit grayscale PNG (lossless to 1/65535)."""
    scaled = np.clip(heatmap, 0.0, 1.0) * 65535.0 + 0.5
    buf = io.BytesIO()
    PILImage.fromarray(scaled.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def decode_heatmap(data: bytes) -> np.ndarray:
    """16-bit PNG → float32 heatmap in [0, 1]."""
    with PILImage.open(io.BytesIO(data)) as img:
        return np.asarray(img, dtype=np.float32) / 65535.0
