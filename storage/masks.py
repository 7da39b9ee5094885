"""Mask, heatmap and type-mask encoding for the blob store (PNG via Pillow), with
validation."""

from __future__ import annotations

import io
from collections.abc import Collection

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


# zlib level of heatmap PNGs. The low byte of a 16-bit heatmap is noise to zlib, so every
# level gives about the same size (430 kB for 512 x 512); level 1 encodes in 16 ms against
# 24 ms at Pillow's default 6, on every prediction stored.
HEATMAP_COMPRESS_LEVEL = 1


def encode_heatmap(heatmap: np.ndarray) -> bytes:
    """float heatmap in [0, 1] → 16-bit grayscale PNG (lossless to 1/65535)."""
    scaled = np.clip(heatmap, 0.0, 1.0) * 65535.0 + 0.5
    buf = io.BytesIO()
    PILImage.fromarray(scaled.astype(np.uint16)).save(
        buf, format="PNG", compress_level=HEATMAP_COMPRESS_LEVEL
    )
    return buf.getvalue()


def decode_heatmap(data: bytes) -> np.ndarray:
    """16-bit PNG → float32 heatmap in [0, 1]."""
    with PILImage.open(io.BytesIO(data)) as img:
        return np.asarray(img, dtype=np.float32) / 65535.0


# --------------------------------------------------------------------------- type masks
# A type mask beside a mask: one uint8 per pixel, the defect_types id of the region the
# pixel belongs to, 0 outside the mask. Stored as a single-channel 8-bit PNG.
TYPE_MASK_HINT = "send a single-channel 8-bit PNG: pixel value = defect type id, 0 = background"


def encode_type_mask(codes: np.ndarray) -> bytes:
    """uint8 type ids → 1-channel 8-bit PNG (lossless)."""
    if codes.ndim != 2:
        raise InvalidMaskError(f"a type mask has one channel, got shape {codes.shape}")
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(codes, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def decode_type_mask(data: bytes, name: str = "type mask") -> np.ndarray:
    """PNG → uint8 type ids. Grayscale (L) is read as it is; a palette image (P) by its
    palette indices, the usual way label maps are saved. Anything else is refused, since a
    colour cannot be read as an id without guessing."""
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode not in ("L", "P"):
                raise InvalidMaskError(
                    f"{name}: image mode {img.mode} is not a type mask ({TYPE_MASK_HINT})"
                )
            return np.array(img, dtype=np.uint8)
    except InvalidMaskError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, PILImage.DecompressionBombError) as exc:
        reason = exc.__class__.__name__
        raise InvalidMaskError(f"{name}: not a readable type mask ({reason})") from exc


def validate_type_mask(
    codes: np.ndarray, mask: np.ndarray, known_ids: Collection[int], *, unspecified: int = 1
) -> np.ndarray:
    """The uint8 type mask to store for `mask`: InvalidMaskError unless `codes` has the
    mask's shape, integer values that are known type ids, and is nonzero only inside the
    mask. Zero inside the mask means "unspecified" and becomes `unspecified`."""
    if codes.ndim != 2 or codes.shape != mask.shape:
        shown = "x".join(str(n) for n in codes.shape[::-1])
        raise InvalidMaskError(
            f"type mask is {shown} but the mask is {mask.shape[1]}x{mask.shape[0]}"
        )
    if codes.dtype == bool or not np.issubdtype(codes.dtype, np.integer):
        raise InvalidMaskError(f"type mask values must be integer type ids, not {codes.dtype}")
    mask = mask.astype(bool)
    outside = codes[~mask]
    if outside.any():
        raise InvalidMaskError(
            f"type mask marks {int(np.count_nonzero(outside))} pixels outside the defect mask "
            "(a type mask is 0 wherever the mask is background)"
        )
    values = {int(v) for v in np.unique(codes[mask])} - {0}
    unknown = sorted(values - set(known_ids))
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:5])
        raise InvalidMaskError(f"type mask uses unknown defect type ids: {shown}")
    out = codes.astype(np.uint8)
    out[mask & (out == 0)] = unspecified
    return out
