"""Validation of incoming image files before anything is stored.

Refused with a clear message: zero bytes, files over the size limit, non-images,
truncated files, decompression bombs (over the pixel limit, checked before decoding).
Converted rather than refused: CMYK, palette, 16-bit, grayscale and alpha images.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.images import IMAGE_EXTENSIONS, to_rgb_array

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "MPO")


class IngestError(ValueError):
    """An upload that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    """A validated image: 8-bit RGB pixels plus what the file said about itself."""

    rgb: np.ndarray
    width: int
    height: int
    format: str


def decode_upload(data: bytes, name: str, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Validate and decode one uploaded file (IngestError naming `name` when refused)."""
    if not data:
        raise IngestError(f"{name}: empty file (0 bytes)")
    if len(data) > max_bytes:
        raise IngestError(f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise IngestError(
                    f"{name}: {width}x{height} = {width * height} pixels is over the "
                    f"{max_pixels}-pixel limit (decompression bomb guard)"
                )
            if img.format not in SUPPORTED_FORMATS:
                raise IngestError(
                    f"{name}: format {img.format} is not supported "
                    f"(use {', '.join(SUPPORTED_FORMATS[:4])})"
                )
            img.load()
            rgb = to_rgb_array(img)
            fmt = img.format
    except IngestError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise IngestError(f"{name}: not an image ({exc.__class__.__name__})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise IngestError(f"{name}: damaged or truncated image ({exc})") from exc
    return DecodedImage(rgb=rgb, width=width, height=height, format=fmt)


def iter_zip_images(data: bytes, name: str, *, max_total_bytes: int) -> Iterator[tuple[str, bytes]]:
    """Image members of a zip archive as (member name, bytes); guards against zip bombs."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise IngestError(f"{name}: not a valid zip archive") from exc
    with archive:
        members = [
            m
            for m in archive.infolist()
            if not m.is_dir()
            and m.filename.lower().endswith(IMAGE_EXTENSIONS)
            and not m.filename.startswith("__MACOSX/")
        ]
        total = sum(m.file_size for m in members)
        if total > max_total_bytes:
            raise IngestError(
                f"{name}: unpacks to {total} bytes, over the {max_total_bytes}-byte limit"
            )
        for member in members:
            yield member.filename, archive.read(member)
