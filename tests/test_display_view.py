"""The region of an image in view and its display-sized rendering: which native pixels a view
shows, at what size it is sent, and where a stroke or click on it lands in the native image."""

from __future__ import annotations

import numpy as np
import pytest

from webapp.display_view import (
    DISPLAY_MAX_SIDE,
    FIT,
    NATIVE,
    OVERVIEW_RGB,
    ZOOM_CHOICES,
    Region,
    View,
    display_shape,
    display_to_native,
    overview_to_native,
    render_overview,
    render_region,
    resample_nearest,
    strokes_to_native,
    view_region,
)

# (height, width) of images: square, small, non-square both ways, and the large case.
SHAPES = [(1500, 1500), (250, 1000), (1024, 4096), (4096, 4096), (333, 77)]


def _rgb(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", SHAPES)
def test_fit_is_the_whole_image(shape: tuple[int, int]) -> None:
    assert view_region(shape, FIT) == Region(0, 0, shape[1], shape[0])
    assert View().region(shape) == Region.whole(shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("zoom", ["2", "4", "8"])
def test_a_zoom_factor_shows_that_share_of_each_side_around_the_centre(
    shape: tuple[int, int], zoom: str
) -> None:
    height, width = shape
    region = view_region(shape, zoom)  # no centre: the image's
    assert region.width == max(1, round(width / int(zoom)))
    assert region.height == max(1, round(height / int(zoom)))
    assert abs(region.x0 + region.width / 2 - width / 2) <= 1
    assert abs(region.y0 + region.height / 2 - height / 2) <= 1


def test_a_zoomed_region_is_centred_on_the_asked_point() -> None:
    assert view_region((4096, 4096), "4", (1000, 3000)) == Region(488, 2488, 1024, 1024)
    assert view_region((1024, 4096), "4", (1000, 300)) == Region(488, 172, 1024, 256)
    assert view_region((250, 1000), "2", (600, 100)) == Region(350, 38, 500, 125)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("zoom", ["2", "8", NATIVE])
@pytest.mark.parametrize("centre", [(0, 0), (-50, 10**6), (10**6, -3), (10**6, 10**6)])
def test_at_the_edges_the_region_moves_inside_the_image(
    shape: tuple[int, int], zoom: str, centre: tuple[float, float]
) -> None:
    height, width = shape
    region = view_region(shape, zoom, centre)
    assert region.x0 >= 0 and region.x0 + region.width <= width
    assert region.y0 >= 0 and region.y0 + region.height <= height
    assert region.width >= 1 and region.height >= 1
    # It touches the edge the centre is beyond.
    assert region.x0 == 0 if centre[0] <= 0 else region.x0 + region.width == width
    assert region.y0 == 0 if centre[1] <= 0 else region.y0 + region.height == height


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((4096, 4096), (1024, 1024)),
        ((1024, 4096), (1024, 1024)),
        ((1500, 1500), (1024, 1024)),  # at most the display size, never more than the image
        ((250, 1000), (250, 1000)),
        ((333, 77), (333, 77)),
    ],
)
def test_one_to_one_is_a_display_sized_window_of_native_pixels(
    shape: tuple[int, int], expected: tuple[int, int]
) -> None:
    region = view_region(shape, NATIVE)
    assert region.shape == expected
    assert display_shape(region.shape) == region.shape  # sent unresampled


def test_zoom_choices_are_fit_factors_and_one_to_one() -> None:
    values = [value for _, value in ZOOM_CHOICES]
    assert values[0] == FIT and NATIVE in values
    for value in values:
        view_region((100, 200), value)  # every choice is understood
    with pytest.raises(ValueError, match="at least 1"):
        view_region((100, 200), "0.5")


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((4096, 4096), (1024, 1024)),
        ((1024, 4096), (256, 1024)),
        ((4096, 1024), (1024, 256)),
        ((1500, 1500), (1024, 1024)),
        ((1025, 10), (1024, 10)),
        ((5000, 1), (1024, 1)),  # at least one pixel
        ((1024, 1024), (1024, 1024)),  # fits: as it is
        ((250, 1000), (250, 1000)),
    ],
)
def test_display_shape_keeps_the_long_side_within_the_limit(
    shape: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert display_shape(shape) == expected
    assert max(display_shape(shape)) <= DISPLAY_MAX_SIDE


@pytest.mark.parametrize("shape", [(250, 1000), (1024, 1024), (333, 77)])
def test_a_region_that_fits_is_sent_unresampled(shape: tuple[int, int]) -> None:
    rgb, heat = _rgb(shape), np.random.default_rng(1).random(shape, dtype=np.float32)
    mask = heat > 0.7
    whole = Region.whole(shape)
    for array in (rgb, heat, mask):
        out = render_region(array, whole)
        assert out.dtype == array.dtype
        np.testing.assert_array_equal(out, array)
    crop = Region(10, 20, 30, 40)
    np.testing.assert_array_equal(render_region(rgb, crop), rgb[20:60, 10:40])


@pytest.mark.parametrize("shape", [(4096, 4096), (1024, 4096), (1500, 1500)])
def test_a_large_region_is_averaged_down_to_the_display_size(shape: tuple[int, int]) -> None:
    rgb = np.zeros((*shape, 3), np.uint8)
    rgb[:, : shape[1] // 2] = 200  # left half bright
    out = render_region(rgb, Region.whole(shape))
    assert out.shape == (*display_shape(shape), 3) and out.dtype == np.uint8
    assert (out[:, : out.shape[1] // 2 - 1] == 200).all()
    assert (out[:, out.shape[1] // 2 + 1 :] == 0).all()


def test_a_downsized_mask_keeps_a_one_pixel_hairline_visible() -> None:
    mask = np.zeros((4096, 4096), bool)
    mask[2001, 100:4000] = True
    shown = render_region(mask, Region.whole(mask.shape))
    assert shown.dtype == bool and shown.shape == (1024, 1024)
    assert shown[2001 // 4, 25:1000].all()
    assert shown.sum() == shown[2001 // 4].sum()  # one display row, nothing else


def test_nearest_resampling_is_integer_exact() -> None:
    values = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(
        resample_nearest(values, (6, 8)), np.repeat(np.repeat(values, 2, 0), 2, 1)
    )
    assert resample_nearest(values, (3, 4)) is values
    # 3 → 7 rows: row r takes ⌊r·3/7⌋.
    np.testing.assert_array_equal(resample_nearest(values, (7, 4))[:, 0], [0, 0, 0, 4, 4, 8, 8])


@pytest.mark.parametrize(
    ("shape", "zoom", "centre"),
    [
        ((4096, 4096), FIT, None),
        ((4096, 4096), "4", (1000, 3000)),
        ((4096, 4096), "2", (4000, 10)),  # clamped into the corner
        ((1500, 1500), FIT, None),
        ((1500, 1500), "2", (900, 700)),
        ((1024, 4096), FIT, None),
        ((1024, 4096), "8", (4096, 1024)),
        ((250, 1000), FIT, None),
        ((250, 1000), "4", (10, 200)),
    ],
)
def test_a_stroke_at_a_display_pixel_lands_on_the_native_pixels_it_covers(
    shape: tuple[int, int], zoom: str, centre: tuple[float, float] | None
) -> None:
    region = view_region(shape, zoom, centre)
    dh, dw = display_shape(region.shape)
    for x, y in [(0, 0), (dw - 1, dh - 1), (dw // 3, dh // 2), (dw - 1, 0)]:
        stroke = np.zeros((dh, dw), bool)
        stroke[y, x] = True
        native = strokes_to_native(stroke, region, shape)
        assert native.shape == shape
        rows, cols = np.nonzero(native)
        x_lo = region.x0 - (-x * region.width // dw)  # ⌈x·w/dw⌉
        x_hi = region.x0 - (-(x + 1) * region.width // dw)
        y_lo = region.y0 - (-y * region.height // dh)
        y_hi = region.y0 - (-(y + 1) * region.height // dh)
        assert (cols.min(), cols.max() + 1, rows.min(), rows.max() + 1) == (x_lo, x_hi, y_lo, y_hi)
        assert native.sum() == (x_hi - x_lo) * (y_hi - y_lo)  # the whole block, nothing else
        # The click under that display pixel is inside the same native block.
        nx, ny = display_to_native((x, y), region, (dh, dw))
        assert x_lo <= nx < x_hi and y_lo <= ny < y_hi


@pytest.mark.parametrize(
    ("shape", "zoom", "centre"),
    [
        ((4096, 4096), FIT, None),
        ((4096, 4096), "4", (1000, 3000)),
        ((4096, 4096), NATIVE, (0, 0)),
        ((1500, 1500), "2", (750, 750)),
        ((1024, 4096), FIT, None),
        ((1024, 4096), "2", (4000, 900)),
        ((250, 1000), FIT, None),
        ((250, 1000), "8", (500, 125)),
    ],
)
def test_a_rectangle_round_trips_through_the_display(
    shape: tuple[int, int], zoom: str, centre: tuple[float, float] | None
) -> None:
    """A native rectangle inside the region, shown and painted back over exactly what is
    shown, comes back as itself: exactly when shown unresampled, else grown by less than
    one display pixel's footprint on each side."""
    region = view_region(shape, zoom, centre)
    rect = np.zeros(shape, bool)
    top, left = region.y0 + region.height // 4, region.x0 + region.width // 3
    rect[top : top + max(1, region.height // 3), left : left + max(1, region.width // 5)] = True
    shown = render_region(rect, region)
    back = strokes_to_native(shown, region, shape)
    assert (back >= rect).all(), "a shown pixel was lost"
    assert not back[~_within(region, shape)].any(), "a stroke landed outside the region"
    if display_shape(region.shape) == region.shape:
        np.testing.assert_array_equal(back, rect)
    else:
        step_y = -(-region.height // shown.shape[0])
        step_x = -(-region.width // shown.shape[1])
        rows, cols = np.nonzero(back)
        r0, c0 = np.nonzero(rect)
        assert r0.min() - rows.min() < step_y and rows.max() - r0.max() < step_y
        assert c0.min() - cols.min() < step_x and cols.max() - c0.max() < step_x


def _within(region: Region, shape: tuple[int, int]) -> np.ndarray:
    inside = np.zeros(shape, bool)
    inside[region.slices] = True
    return inside


def test_strokes_keep_their_channels_and_type() -> None:
    layer = np.zeros((4, 8, 4), np.uint8)
    layer[1, 2] = (255, 0, 64, 255)
    out = strokes_to_native(layer, Region(10, 20, 16, 8), (40, 40))
    assert out.shape == (40, 40, 4) and out.dtype == np.uint8
    assert (out[22:24, 14:16] == (255, 0, 64, 255)).all()
    assert out[..., 3].sum() == 4 * 255


def test_a_click_at_native_resolution_is_that_pixel() -> None:
    region = Region(300, 200, 512, 256)
    assert display_to_native((0, 0), region, (256, 512)) == (300.0, 200.0)
    assert display_to_native((511, 255), region, (256, 512)) == (811.0, 455.0)
    assert display_to_native((17, 9), region, (256, 512)) == (317.0, 209.0)


def test_a_click_on_a_downsized_view_is_the_centre_of_what_it_covers() -> None:
    whole = Region.whole((4096, 4096))
    assert display_to_native((0, 0), whole, (1024, 1024)) == (1.5, 1.5)
    assert display_to_native((1023, 512), whole, (1024, 1024)) == (4093.5, 2049.5)
    assert display_to_native((5000, -7), whole, (1024, 1024)) == (4093.5, 1.5)  # clamped
    # 1500 on 1024: display pixel 0 covers native 0 and 1, pixel 1 covers native 2.
    assert display_to_native((0, 1), Region.whole((1500, 1500)), (1024, 1024)) == (0.5, 2.0)


def test_the_overview_outlines_the_region_in_view() -> None:
    rgb = np.zeros((4096, 2048, 3), np.uint8)
    region = view_region(rgb.shape, "4", (1024, 1024))  # 512 × 1024 at (768, 512)
    small = render_overview(rgb, region)
    assert small.shape == (200, 100, 3)
    rows, cols = np.nonzero((small == OVERVIEW_RGB).all(axis=2))
    # (768, 512) to (1280, 1536) at 1/20.48, give or take the line's width
    assert np.allclose((cols.min(), rows.min()), (37, 25), atol=1)
    assert np.allclose((cols.max(), rows.max()), (62, 74), atol=1)
    assert not (small[30:70, 40:60] == OVERVIEW_RGB).all(axis=2).any()  # an outline only
    assert rgb.max() == 0, "the image itself was drawn on"


def test_the_overview_of_a_small_image_never_draws_on_the_image() -> None:
    rgb = _rgb((60, 80))
    before = rgb.copy()
    render_overview(rgb, Region.whole(rgb.shape))
    np.testing.assert_array_equal(rgb, before)


def test_an_overview_click_is_the_native_point_under_it() -> None:
    assert overview_to_native((50, 100), (4096, 2048)) == (1034.0, 2058.0)
    assert overview_to_native((10, 10), (60, 80)) == (10.0, 10.0)  # shown as it is
