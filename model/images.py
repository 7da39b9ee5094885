"""Reading images and masks into arrays, with clear errors that name the file.

Any PIL-readable format is accepted; grayscale, palette, CMYK, alpha and 16-bit images
are converted to 8-bit RGB rather than refused.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from model.errors import ImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) RGB from any PIL image mode."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I") and arr.max() > 255 else max(arr.max(), 1.0)
        if img.mode == "F":
            lo = arr.min()
            arr, top = arr - lo, max(arr.max() - lo, 1e-12)
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def decode_image(data: bytes, *, name: str = "image") -> np.ndarray:
    """Decode image bytes to uint8 RGB; ImageError naming `name` when they are not an image."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return to_rgb_array(img)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from exc


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file as uint8 RGB at its own size."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return decode_image(data, name=str(path))


def _read_single_channel(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.asarray(img.convert("L") if img.mode not in ("L", "1", "P") else img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable {what} image ({exc})") from exc
    if arr.shape[:2] != tuple(shape):
        raise ImageError(
            f"{path}: {what} is {arr.shape[1]}x{arr.shape[0]} "
            f"but its image is {shape[1]}x{shape[0]}"
        )
    return arr


def read_mask(path: Path | str, *, shape: tuple[int, int]) -> np.ndarray:
    """Read a defect mask (nonzero = defect) that must have the image's `shape` (H, W)."""
    return _read_single_channel(Path(path), shape, "mask") > 0


def read_codes(path: Path | str, *, shape: tuple[int, int]) -> np.ndarray:
    """Read a uint8 type-code map (pixel values are codes, not intensities) of `shape`."""
    return _read_single_channel(Path(path), shape, "type map").astype(np.uint8)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square `size`×`size` uint8 RGB (area interpolation when shrinking)."""
    if image.shape[:2] == (size, size):
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Square boolean mask: a pixel is defect when at least half its area was."""
    if mask.shape[:2] == (size, size):
        return mask.astype(bool)
    resized = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return resized >= 0.5


def resize_to(array: np.ndarray, shape: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize a 2-D float or bool map back to an image's (H, W)."""
    h, w = shape
    if array.shape[:2] == (h, w):
        return array
    if array.dtype == bool:
        out = cv2.resize(array.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        return out.astype(bool)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(array.astype(np.float32), (w, h), interpolation=interp)
