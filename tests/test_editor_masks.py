"""Masks to and from the review editor: the editor shows the image with the current mask
tinted over it; the reviewer's strokes (defect colour adds, background colour removes,
the eraser takes strokes back) edit the mask kept on the server, at native resolution even
when the editor shows only a region of it, display-sized."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

from webapp.display_view import Region, display_shape, render_region, view_region
from webapp.editor_masks import (
    CLEAR_RGB,
    MASK_ALPHA,
    MASK_RGB,
    composite,
    edited_mask,
    editor_value,
    layer_strokes,
    mask_to_layer,
)

H, W = 48, 64
ADD = (*MASK_RGB, 255)  # the defect brush, painted opaque
CLEAR = (*CLEAR_RGB, 255)  # the background brush
ERASED = (*MASK_RGB, 0)  # the eraser leaves transparent pixels (the colour may remain)


def _image() -> np.ndarray:
    return np.random.default_rng(1).integers(30, 220, (H, W, 3), dtype=np.uint8)


def _predicted() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[10:20, 8:40] = True
    mask[30, 5:60] = True  # a one-pixel hairline
    return mask


def _canvas() -> np.ndarray:
    return np.zeros((H, W, 4), np.uint8)


def _value(*layers: np.ndarray) -> dict:
    return {"background": _image(), "layers": list(layers), "composite": None}


@pytest.mark.parametrize(
    "mask",
    [_predicted(), np.zeros((H, W), bool), np.ones((H, W), bool)],
    ids=["defect", "empty", "full"],
)
def test_without_strokes_the_shown_mask_comes_back_unchanged(mask: np.ndarray) -> None:
    for value in (editor_value(_image(), mask), _value(_canvas())):
        back = edited_mask(mask, value)
        assert back.dtype == bool and back.shape == (H, W)
        np.testing.assert_array_equal(back, mask)


def test_the_editor_value_survives_the_component_round_trip() -> None:
    """Through the component's own encoding (PNG files) and decoding, as on the page."""
    editor = gr.ImageEditor(type="numpy", format="png", layers=True, transforms=(), sources=())
    sent = editor.postprocess(editor_value(_image(), _predicted()))
    assert sent is not None and len(sent.layers) == 1
    received = editor.preprocess(sent)
    assert received is not None
    np.testing.assert_array_equal(received["background"][..., :3], _image())
    np.testing.assert_array_equal(edited_mask(_predicted(), received), _predicted())


def test_a_defect_stroke_adds_to_the_shown_mask() -> None:
    layer = _canvas()
    layer[40:43, 10:50] = ADD
    stroke = np.zeros((H, W), bool)
    stroke[40:43, 10:50] = True
    np.testing.assert_array_equal(edited_mask(_predicted(), _value(layer)), _predicted() | stroke)


def test_a_background_stroke_removes_from_the_shown_mask() -> None:
    layer = _canvas()
    layer[10:20, 8:24] = CLEAR  # the left half of the block is background
    expected = _predicted()
    expected[10:20, 8:24] = False
    back = edited_mask(_predicted(), _value(layer))
    np.testing.assert_array_equal(back, expected)
    assert back[10:20, 24:40].all() and back[30, 5:60].all()  # the rest is kept


def test_strokes_on_several_layers_apply_in_order() -> None:
    first, second = _canvas(), _canvas()
    first[2:5, 2:6] = ADD
    second[2:5, 4:6] = CLEAR  # a later layer takes part of the first one back
    expected = _predicted()
    expected[2:5, 2:4] = True
    np.testing.assert_array_equal(edited_mask(_predicted(), _value(first, second)), expected)


def test_erased_strokes_count_for_nothing() -> None:
    layer = _canvas()
    layer[...] = ERASED
    layer[0:3, 0:3] = (*CLEAR_RGB, 0)
    np.testing.assert_array_equal(edited_mask(_predicted(), _value(layer)), _predicted())


def test_anti_aliased_stroke_edges_go_to_the_nearer_brush() -> None:
    layer = _canvas()
    layer[0, 0] = (230, 20, 80, 90)  # a soft edge of the defect brush
    layer[0, 1] = (30, 150, 230, 90)  # a soft edge of the background brush
    add, clear = layer_strokes(layer, (H, W))
    assert add[0, 0] and not clear[0, 0] and clear[0, 1] and not add[0, 1]
    assert add.sum() == 1 and clear.sum() == 1


def test_the_background_and_composite_never_count_as_strokes() -> None:
    value = editor_value(np.full((H, W, 3), 255, np.uint8), np.ones((H, W), bool))
    value["composite"] = np.full((H, W, 4), 255, np.uint8)
    assert not edited_mask(np.zeros((H, W), bool), value).any()


@pytest.mark.parametrize("value", [None, {}, {"layers": []}, {"layers": [None]}])
def test_no_strokes_keep_the_shown_mask(value: dict | None) -> None:
    np.testing.assert_array_equal(edited_mask(_predicted(), value), _predicted())


def test_without_a_shown_mask_the_strokes_alone_are_the_mask() -> None:
    layer = _canvas()
    layer[5:9, 5:9] = ADD
    back = edited_mask(None, _value(layer))
    assert back.shape == (H, W) and back.sum() == 16
    with pytest.raises(ValueError, match="no image"):
        edited_mask(None, {"layers": [layer]})


@pytest.mark.parametrize("factor", [2, 3])
def test_a_layer_at_another_size_is_scaled_to_the_image(factor: int) -> None:
    """Strokes drawn at the editor's canvas size (a multiple of the image here) come back at
    the image size, pixel for pixel."""
    big = np.repeat(np.repeat(mask_to_layer(_predicted()), factor, axis=0), factor, axis=1)
    assert big.shape == (H * factor, W * factor, 4)
    empty = np.zeros((H, W), bool)
    np.testing.assert_array_equal(edited_mask(empty, _value(big)), _predicted())


def test_a_smaller_layer_is_scaled_up() -> None:
    small = np.zeros((H // 2, W // 2, 4), np.uint8)
    small[5:10, 4:20] = ADD
    expected = np.zeros((H, W), bool)
    expected[10:20, 8:40] = True
    np.testing.assert_array_equal(edited_mask(np.zeros((H, W), bool), _value(small)), expected)


def test_layers_without_alpha_count_their_coloured_pixels() -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[3:6, 7:9] = MASK_RGB
    gray = np.zeros((H, W), np.uint8)
    gray[40, 40] = 255
    expected = np.zeros((H, W), bool)
    expected[3:6, 7:9] = True
    expected[40, 40] = True
    np.testing.assert_array_equal(edited_mask(np.zeros((H, W), bool), _value(rgb, gray)), expected)


def test_a_mask_layer_is_the_brush_colour_over_transparency() -> None:
    layer = mask_to_layer(_predicted())
    assert layer.shape == (H, W, 4) and layer.dtype == np.uint8
    assert (layer[_predicted()] == (*MASK_RGB, MASK_ALPHA)).all()
    assert (layer[~_predicted()] == 0).all()
    assert (mask_to_layer(_predicted(), CLEAR_RGB)[_predicted()][:, :3] == CLEAR_RGB).all()


def test_the_composite_tints_only_the_masked_pixels() -> None:
    image, mask = _image(), _predicted()
    shown = composite(image, mask)
    assert shown.shape == image.shape and shown.dtype == np.uint8
    np.testing.assert_array_equal(shown[~mask], image[~mask])
    alpha = MASK_ALPHA / 255
    expected = image[mask] * (1 - alpha) + np.array(MASK_RGB) * alpha
    np.testing.assert_allclose(shown[mask], expected, atol=1)
    np.testing.assert_array_equal(editor_value(image, mask)["composite"], shown)


def test_strokes_on_a_zoomed_view_edit_only_that_region_of_the_native_mask() -> None:
    native = np.zeros((1500, 1500), bool)
    native[100:200, 100:1400] = True  # a predicted band, partly in view
    region = view_region(native.shape, "2", (900, 700))  # 750 × 750 at (525, 325), unresampled
    assert region == Region(525, 325, 750, 750)
    layer = np.zeros((750, 750, 4), np.uint8)
    layer[40:44, 10:300] = ADD  # native rows 365:369, columns 535:825
    layer[:, 700:] = CLEAR  # native columns 1225:1275, all rows in view
    back = edited_mask(native, _value(layer), region)
    expected = native.copy()
    expected[365:369, 535:825] = True
    expected[325:1075, 1225:1275] = False  # the band is above the view: untouched
    np.testing.assert_array_equal(back, expected)
    assert back[100:200, 1225:1275].all()


def test_strokes_on_a_downsized_view_cover_whole_native_blocks() -> None:
    native = np.zeros((1024, 4096), bool)
    native[500, :] = True  # a hairline, shown on display row 125
    region = Region.whole(native.shape)
    shown = render_region(native, region)
    assert shown.shape == display_shape(native.shape) == (256, 1024) and shown[125].all()
    layer = np.zeros((256, 1024, 4), np.uint8)
    layer[125, 0:512] = CLEAR  # wipes the left half of the hairline
    layer[10, 20] = ADD  # one display pixel: native 4 × 4 block at (80, 40)
    back = edited_mask(native, _value(layer), region)
    assert not back[500, :2048].any() and back[500, 2048:].all()
    assert back[40:44, 80:84].all()
    assert back.sum() == 2048 + 16


def test_a_display_sized_editor_value_round_trips_through_the_component() -> None:
    """The editor as the page gets it for a zoomed view of a large image: at most the display
    size, and its strokes come back on the native pixels under them."""
    native = np.zeros((2048, 2048), bool)
    rgb = np.random.default_rng(3).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    region = view_region(native.shape, "4", (300, 1800))
    shown = render_region(native, region)
    editor = gr.ImageEditor(type="numpy", format="png", layers=True, transforms=(), sources=())
    sent = editor.postprocess(editor_value(render_region(rgb, region), shown))
    received = editor.preprocess(sent)
    assert received is not None and received["background"].shape[:2] == (512, 512)
    received["layers"][0][5:7, 50:60] = ADD
    back = edited_mask(native, received, region)
    assert region == Region(44, 1536, 512, 512)
    assert back[1541:1543, 94:104].all() and back.sum() == 20
