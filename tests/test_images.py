"""Image and mask reading, conversion to 8-bit RGB, and resizing."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.errors import ImageError
from model.images import (
    decode_image,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
    resize_to,
    to_rgb_array,
)


def _rgb(h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth uint8 RGB gradient (JPEG-friendly)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 128)], -1).astype(
        np.uint8
    )


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_png_roundtrip_is_exact(tmp_path: Path) -> None:
    """An 8-bit RGB PNG reads back pixel for pixel."""
    arr = _rgb()
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF"])
def test_other_formats_read(fmt: str) -> None:
    """JPEG (lossy, close), BMP and TIFF decode to uint8 (H, W, 3)."""
    arr = _rgb()
    out = decode_image(_encode(Image.fromarray(arr), fmt))
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    tol = 12 if fmt == "JPEG" else 0
    assert np.abs(out.astype(int) - arr.astype(int)).max() <= tol


def test_grayscale_becomes_three_equal_channels() -> None:
    """Mode 'L' is repeated into three identical channels."""
    gray = _rgb()[:, :, 0]
    out = decode_image(_encode(Image.fromarray(gray), "PNG"))
    assert out.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_16bit_grayscale_is_scaled_to_8bit() -> None:
    """A 0..65535 ramp maps to uint8 with its top near 255 and order preserved."""
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    img = Image.fromarray(ramp)
    assert img.mode == "I;16"
    for out in (to_rgb_array(img), decode_image(_encode(img, "PNG"))):
        assert out.dtype == np.uint8 and out.shape == (8, 64, 3)
        row = out[0, :, 0].astype(int)
        assert row[-1] >= 254 and row[0] <= 1
        assert np.all(np.diff(row) >= 0)
        expected = np.round(ramp[0] / 65535 * 255)
        assert np.abs(row - expected).max() <= 1


def test_palette_image_is_converted() -> None:
    """A palette image decodes to its palette colours."""
    img = Image.new("P", (10, 6))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (5, 0, 10, 6))
    out = decode_image(_encode(img, "PNG"))
    assert out.shape == (6, 10, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 9]) == (0, 0, 255)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_is_converted_to_rgb(fmt: str) -> None:
    """CMYK cyan becomes RGB (0, 255, 255)."""
    img = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    out = decode_image(_encode(img, fmt))
    assert out.shape == (16, 16, 3)
    assert np.abs(out[8, 8].astype(int) - np.array([0, 255, 255])).max() <= 8


def test_rgba_is_composited_on_black() -> None:
    """Transparent pixels turn black, opaque ones keep their colour."""
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :3, 3] = 255
    rgba[:, 3:, 3] = 0
    out = decode_image(_encode(Image.fromarray(rgba), "PNG"))
    assert out.shape == (4, 6, 3)
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[0, 5]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"", r"f\.img: empty file \(0 bytes\)"),
        (bytes(range(256)) * 2, r"f\.img: not a readable image"),
    ],
)
def test_bad_bytes_error(data: bytes, pattern: str) -> None:
    """Empty bytes and garbage bytes raise ImageError naming the file."""
    with pytest.raises(ImageError, match=pattern):
        decode_image(data, name="f.img")


def test_truncated_png_error() -> None:
    """The first half of a PNG is refused."""
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "PNG")
    with pytest.raises(ImageError, match=r"cut\.png: not a readable image"):
        decode_image(data[: len(data) // 2], name="cut.png")


def test_missing_file_error(tmp_path: Path) -> None:
    """read_image on a missing path names that path."""
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match=re.escape(str(path))):
        read_image(path)


def test_read_mask_size_mismatch(tmp_path: Path) -> None:
    """A mask of the wrong size names the mask and both sizes."""
    path = tmp_path / "m_mask.png"
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(path)
    with pytest.raises(ImageError) as info:
        read_mask(path, shape=(12, 30))
    assert str(path) in str(info.value)
    assert "20x10" in str(info.value) and "30x12" in str(info.value)


def test_read_mask_nonzero_is_true(tmp_path: Path) -> None:
    """Any nonzero mask value counts as defect."""
    arr = np.zeros((5, 7), np.uint8)
    arr[1, 2], arr[3, 4] = 1, 255
    path = tmp_path / "m.png"
    Image.fromarray(arr).save(path)
    mask = read_mask(path, shape=(5, 7))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, arr > 0)


def test_resize_mask_keeps_thin_bar() -> None:
    """Images resize to a square; a 4 px mask bar survives halving as a 2 px bar."""
    mask = np.zeros((64, 64), bool)
    mask[:, 30:34] = True
    assert resize_image(_rgb(40, 60), 32).shape == (32, 32, 3)
    out = resize_mask(mask, 32)
    assert out.dtype == bool and out.shape == (32, 32)
    assert out[:, 15:17].all()
    assert out.sum() == 32 * 2


def test_resize_to_bool_stays_bool() -> None:
    """A bool map resized to (H, W) stays bool at exactly that shape."""
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    out = resize_to(mask, (30, 45))
    assert out.dtype == bool and out.shape == (30, 45)
    assert out[15, 22] and not out[0, 0]
