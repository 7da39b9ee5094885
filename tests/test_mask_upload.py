"""Uploaded masks: one documented reading of grayscale, colour and alpha."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from storage.errors import InvalidMaskError
from webapp.mask_upload import decode_mask_upload

H, W = 12, 16


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def defect() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[3:7, 4:11] = True
    return mask


def _rgba(colour: np.ndarray, alpha: np.ndarray) -> bytes:
    return _encode(Image.fromarray(np.dstack([colour, colour, colour, alpha]), mode="RGBA"))


def test_an_opaque_black_and_white_rgba_mask_is_read_by_colour(defect: np.ndarray) -> None:
    colour = defect.astype(np.uint8) * 255
    got = decode_mask_upload(_rgba(colour, np.full((H, W), 255, np.uint8)))
    assert got.dtype == bool and (got == defect).all()


@pytest.mark.parametrize("on", [1, 255, 7])
def test_grayscale_zero_and_one_other_value(defect: np.ndarray, on: int) -> None:
    data = _encode(Image.fromarray(defect.astype(np.uint8) * on, mode="L"))
    assert (decode_mask_upload(data) == defect).all()


def test_bilevel_palette_rgb_and_16_bit(defect: np.ndarray) -> None:
    bilevel = _encode(Image.fromarray(defect).convert("1"))
    palette = _encode(Image.fromarray(defect.astype(np.uint8) * 255, mode="L").convert("P"))
    red = np.zeros((H, W, 3), np.uint8)
    red[defect] = (255, 0, 0)
    deep = _encode(Image.fromarray(defect.astype(np.uint16) * 65535))
    for data in (bilevel, palette, _encode(Image.fromarray(red)), deep):
        assert (decode_mask_upload(data) == defect).all()


def test_anti_aliased_values_are_split_at_half_scale() -> None:
    ramp = np.tile(np.linspace(0, 255, W).round().astype(np.uint8), (H, 1))
    assert (decode_mask_upload(_encode(Image.fromarray(ramp, mode="L"))) == (ramp >= 128)).all()
    deep = ramp.astype(np.uint16) * 257
    assert (decode_mask_upload(_encode(Image.fromarray(deep))) == (deep >= 32768)).all()


@pytest.mark.parametrize("hidden", [0, 255])
def test_a_uniform_brush_on_a_transparent_canvas_is_read_by_alpha(
    defect: np.ndarray, hidden: int
) -> None:
    """Whatever colour the fully transparent pixels carry, a one-colour layer is its alpha."""
    colour = np.where(defect, 0, hidden).astype(np.uint8)
    alpha = defect.astype(np.uint8) * 255
    alpha[defect.nonzero()[0][0], 4] = 100  # a soft brush edge, under half opacity
    expected = defect.copy()
    expected[defect.nonzero()[0][0], 4] = False
    assert (decode_mask_upload(_rgba(colour, alpha)) == expected).all()
    la = Image.fromarray(np.dstack([colour, alpha]), mode="LA")
    assert (decode_mask_upload(_encode(la)) == expected).all()


def test_alpha_and_colour_that_agree_are_accepted(defect: np.ndarray) -> None:
    plane = defect.astype(np.uint8) * 255
    assert (decode_mask_upload(_rgba(plane, plane)) == defect).all()


def test_alpha_and_colour_that_disagree_are_refused_as_ambiguous(defect: np.ndarray) -> None:
    colour = defect.astype(np.uint8) * 255  # white defect on black...
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, :2] = 0  # ...with a transparent strip elsewhere
    with pytest.raises(InvalidMaskError, match=r"m\.png: ambiguous mask"):
        decode_mask_upload(_rgba(colour, alpha), "m.png")


def test_a_palette_with_transparency_follows_the_alpha_rules(defect: np.ndarray) -> None:
    img = Image.fromarray(defect.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0])
    img.info["transparency"] = 0
    assert (decode_mask_upload(_encode(img)) == defect).all()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not a png",
        _encode(Image.new("L", (W, H)))[:40],
        _encode(Image.new("CMYK", (W, H)), "JPEG"),
    ],
    ids=["empty", "garbage", "truncated", "cmyk"],
)
def test_unreadable_or_unsupported_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidMaskError, match=r"upload\.png: "):
        decode_mask_upload(data, "upload.png")
