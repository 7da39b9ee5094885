"""Masks uploaded by clients (REST API, editors): image bytes → a boolean defect mask.

One documented reading, so an opaque black-and-white RGBA PNG means what it shows:

* Values: an image holding 0 and at most one other value marks defect with that other
  value (0/1, 0/255 and 0/65535 all work). Any other set of values (anti-aliased edges,
  gradients) is split at half the full scale: defect from 128 up (8-bit), from 32768 up
  (16-bit).
* Modes 1, L, P, RGB and 16-bit grayscale (I;16, I) are read by their luminance.
* With alpha (RGBA, LA, PA, palette with transparency):
  - alpha fully opaque everywhere → the colour alone is read, as above;
  - alpha varies and every visible pixel (alpha > 0) has one colour → alpha marks the
    defect (a brush layer on a transparent canvas);
  - alpha and colour both vary: accepted where both mark the same pixels, otherwise
    refused as ambiguous (InvalidMaskError).
* Unreadable bytes and other modes (CMYK, float, ...) are refused with InvalidMaskError.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from storage.errors import InvalidMaskError

EIGHT_BIT_FULL = 255
SIXTEEN_BIT_FULL = 65535
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_HINT = "send a grayscale PNG: 0 = background, 255 = defect"


def binary_from_values(values: np.ndarray, full_scale: int) -> np.ndarray:
    """Defect pixels of one channel: any nonzero value when there are only 0 and one other
    value, otherwise values from half of `full_scale` up."""
    low, high = values.min(), values.max()
    if low == high:
        return np.full(values.shape, bool(high), dtype=bool)
    if low == 0 and np.all((values == 0) | (values == high)):
        return values != 0
    return values >= (full_scale + 1) // 2


def _with_alpha(colour: np.ndarray, alpha: np.ndarray, name: str) -> np.ndarray:
    if alpha.min() == EIGHT_BIT_FULL:
        return binary_from_values(colour, EIGHT_BIT_FULL)
    by_alpha = binary_from_values(alpha, EIGHT_BIT_FULL)
    visible = colour[alpha > 0]
    if visible.size == 0 or visible.min() == visible.max():
        return by_alpha
    if np.array_equal(binary_from_values(colour, EIGHT_BIT_FULL), by_alpha):
        return by_alpha
    raise InvalidMaskError(
        f"{name}: ambiguous mask: its transparency and its colours mark different pixels ({_HINT})"
    )


def mask_from_image(img: Image.Image, name: str = "mask") -> np.ndarray:
    """The defect mask of a loaded Pillow image, by the rules of this module."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "PA":
        img = img.convert("RGBA")
    mode = img.mode
    if mode == "1":
        return np.asarray(img, dtype=bool)
    if mode in ("L", "RGB"):
        return binary_from_values(np.asarray(img.convert("L")), EIGHT_BIT_FULL)
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)
        if values.min() < 0 or values.max() > SIXTEEN_BIT_FULL:
            raise InvalidMaskError(f"{name}: values outside 0..65535 are not a mask ({_HINT})")
        return binary_from_values(values, SIXTEEN_BIT_FULL)
    if mode in ("LA", "RGBA"):
        colour = np.asarray(img.getchannel("L") if mode == "LA" else img.convert("L"))
        return _with_alpha(colour, np.asarray(img.getchannel("A")), name)
    raise InvalidMaskError(f"{name}: image mode {mode} is not a mask ({_HINT})")


def decode_mask_upload(data: bytes, name: str = "mask") -> np.ndarray:
    """The boolean defect mask in uploaded image bytes; InvalidMaskError naming `name`."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return mask_from_image(img, name)
    except InvalidMaskError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        reason = exc.__class__.__name__
        raise InvalidMaskError(f"{name}: not a readable mask image ({reason})") from exc
