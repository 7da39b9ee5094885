"""Typed regions on the review page, on small arrays: which region a click selects, which
type a painted colour means, how an edit types the regions it makes, and the mask drawn in
its types' colours."""

from __future__ import annotations

import numpy as np
import pytest

from model.region_types import label_regions
from webapp.display_view import Region
from webapp.editor_masks import (
    CLEAR_RGB,
    brush_colors,
    edited_typed,
    layer_stroke_ids,
    palette_of,
    render_type_ids,
)
from webapp.typed_regions import (
    PredictedRegion,
    RegionRow,
    TypedMask,
    TypeStyle,
    hex_rgb,
    majority,
    nearest_colour,
    normalise_types,
    predicted_for,
    region_pixel,
    region_rows,
    resolve_types,
    ring,
    set_region_type,
    typed_composite,
)

UNSPEC, SCRATCH, DENT = 1, 2, 3
TYPES = [
    TypeStyle(UNSPEC, "unspecified", "#ffcc00", "0"),
    TypeStyle(SCRATCH, "scratch", "#e6194b", "2"),
    TypeStyle(DENT, "dent", "#3cb44b", None),
]


def _two_regions() -> np.ndarray:
    mask = np.zeros((20, 30), bool)
    mask[2:6, 2:10] = True  # region 1: 32 px
    mask[12:14, 15:28] = True  # region 2: 26 px
    return mask


def _layer(shape: tuple[int, int]) -> np.ndarray:
    return np.zeros((*shape, 4), np.uint8)


def test_a_type_style_reads_its_colour_and_shows_its_key() -> None:
    assert hex_rgb("#E6194b") == (230, 25, 75)
    assert TYPES[1].rgb == (230, 25, 75) and TYPES[1].label == "scratch [2]"
    assert TYPES[2].label == "dent"  # no key, no brackets
    with pytest.raises(ValueError):
        hex_rgb("#fff")
    row = {"id": 4, "name": "pit", "color": "#123456", "key": ""}
    assert TypeStyle.of(row) == TypeStyle(4, "pit", "#123456", None)


def test_untyped_pixels_inside_the_mask_are_unspecified_and_nothing_outside_is_typed() -> None:
    mask = _two_regions()
    stored = np.zeros(mask.shape, np.uint8)  # a type mask may leave "unspecified" at 0
    stored[2:6, 2:10] = SCRATCH
    stored[0, 0] = DENT  # outside the mask: dropped
    types = normalise_types(mask, stored)
    assert (types[2:6, 2:10] == SCRATCH).all() and (types[12:14, 15:28] == UNSPEC).all()
    assert not types[~mask].any()
    np.testing.assert_array_equal(normalise_types(mask, None), np.where(mask, UNSPEC, 0))
    with pytest.raises(ValueError, match="does not match"):
        normalise_types(mask, stored[:-1])


def test_a_click_selects_the_region_under_it_or_the_nearest_within_the_radius() -> None:
    labels, count = label_regions(_two_regions())
    assert count == 2
    assert region_pixel(labels, (4.5, 3.5)) == (4, 3)  # inside region 1
    assert region_pixel(labels, (14.0, 9.0)) is None  # background, no radius
    near = region_pixel(labels, (20.0, 10.0), radius=3)  # two rows above region 2
    assert near is not None and labels[near[1], near[0]] == 2
    assert near == (20, 12)
    assert region_pixel(labels, (20.0, 8.0), radius=3) is None  # four rows away: too far
    assert region_pixel(labels, (29.0, 19.0), radius=1) is None


def test_setting_a_regions_type_changes_that_region_only() -> None:
    mask = _two_regions()
    labels, _ = label_regions(mask)
    types = normalise_types(mask, None)
    out = set_region_type(types, labels, 2, DENT)
    assert (out[labels == 2] == DENT).all() and (out[labels == 1] == UNSPEC).all()
    assert (types[labels == 2] == UNSPEC).all()  # a copy
    with pytest.raises(ValueError):
        set_region_type(types, labels, 0, DENT)
    with pytest.raises(ValueError):
        set_region_type(types, labels, 1, 0)


def test_majority_counts_per_region_and_ignores_what_it_is_told() -> None:
    labels = np.array([[1, 1, 1, 0, 2, 2]], np.int32)
    ids = np.array([[2, 2, 1, 3, 1, 1]], np.uint8)
    assert majority(labels, 2, ids).tolist() == [0, 2, 1]
    assert majority(labels, 2, ids, ignore=(1,)).tolist() == [0, 2, 0]


def test_painted_types_win_then_the_previous_type_then_unspecified() -> None:
    mask = _two_regions()
    previous = normalise_types(mask, None)
    previous[2:6, 2:10] = DENT
    fresh = np.zeros(mask.shape, np.uint8)
    # A scratch stroke joins a new piece to region 2; an unspecified stroke extends region 1.
    mask[10:12, 20:22] = True
    fresh[10:12, 20:22] = SCRATCH
    mask[6, 2:10] = True
    fresh[6, 2:10] = UNSPEC
    mask[17:19, 2:4] = True  # a new region painted in the unspecified colour
    fresh[17:19, 2:4] = UNSPEC
    types = resolve_types(mask, previous, fresh)
    assert (types[2:7, 2:10] == DENT).all()  # extended, kept its type
    assert (types[10:14, 15:28][mask[10:14, 15:28]] == SCRATCH).all()  # retyped by the stroke
    assert (types[17:19, 2:4] == UNSPEC).all()
    assert not types[~mask].any()


def test_each_painted_pixel_belongs_to_the_nearest_brush() -> None:
    palette = np.array([CLEAR_RGB, (230, 25, 75), (60, 180, 75)])
    colours = np.array([[0, 168, 250], [225, 30, 80], [70, 170, 70], [250, 0, 60]])
    assert nearest_colour(colours, palette).tolist() == [0, 1, 2, 1]


def test_layer_strokes_become_type_ids_and_background_strokes() -> None:
    layer = _layer((10, 10))
    layer[1, 1:5] = (*TYPES[1].rgb, 255)
    layer[2, 1:5] = (*TYPES[2].rgb, 128)  # an anti-aliased edge: paler, same colour
    layer[3, 1:5] = (*CLEAR_RGB, 255)
    layer[4, 1:5] = (*TYPES[1].rgb, 0)  # erased: transparent
    ids, clear = layer_stroke_ids(layer, (10, 10), palette_of(TYPES))
    assert ids[1, 1:5].tolist() == [SCRATCH] * 4 and ids[2, 1:5].tolist() == [DENT] * 4
    assert clear[3, 1:5].all() and clear.sum() == 4
    assert ids.astype(bool).sum() == 8
    # A grey layer (no colour) paints the palette's first type.
    ids, _ = layer_stroke_ids(layer[..., 3], (5, 5), palette_of(TYPES))
    assert set(np.unique(ids)) <= {0, UNSPEC}


def test_the_editors_brushes_are_the_types_colours_and_the_background_brush() -> None:
    assert brush_colors(TYPES) == ["#ffcc00", "#e6194b", "#3cb44b", "#00aaff"]


def test_an_edit_adds_typed_strokes_and_clears_background_strokes_at_native_size() -> None:
    mask = _two_regions()
    shown = TypedMask.of(mask)
    region = Region(0, 0, 30, 20)
    layer = _layer((10, 15))  # the editor showed the image at half size
    layer[6, 8:12] = (*TYPES[1].rgb, 255)  # native rows 12:14, cols 16:24: on region 2
    layer[1:3, 1:3] = (*CLEAR_RGB, 255)  # native rows 2:6, cols 2:6: part of region 1 goes
    value = {"background": None, "layers": [layer], "composite": None}
    out = edited_typed(shown, value, region, palette_of(TYPES))
    assert not out.mask[2:6, 2:6].any() and out.mask[2:6, 6:10].all()
    assert (out.types[12:14, 15:28] == SCRATCH).all()  # the stroke retyped its region
    assert (out.types[2:6, 6:10] == UNSPEC).all()
    assert not out.types[~out.mask].any()
    assert edited_typed(shown, {"layers": [_layer((10, 15))]}, region) is shown  # no strokes


def test_type_ids_at_display_size_keep_a_hairline() -> None:
    types = np.zeros((100, 100), np.uint8)
    types[50, :] = DENT  # one native row
    types[10:30, 10:30] = SCRATCH
    shown = render_type_ids(types, Region.whole(types.shape))
    assert shown is types or np.array_equal(shown, types)  # fits: sent as it is
    big = np.zeros((2048, 2048), np.uint8)
    big[1001, 100:1900] = DENT
    big[200:400, 200:400] = SCRATCH
    small = render_type_ids(big, Region.whole(big.shape))
    assert small.shape == (1024, 1024)
    assert (small == DENT).sum(axis=1).max() >= 800  # the hairline survives, in its type
    assert (small[100:200, 100:200] == SCRATCH).all()


def test_the_typed_composite_tints_each_region_in_its_types_colour() -> None:
    image = np.full((4, 4, 3), 100, np.uint8)
    ids = np.zeros((4, 4), np.uint8)
    ids[0, 0], ids[1, 1], ids[2, 2] = SCRATCH, DENT, 9  # 9: a type without a colour
    out = typed_composite(image, ids, {t.id: t.rgb for t in TYPES}, 1.0, fallback=(1, 2, 3))
    assert tuple(out[0, 0]) == TYPES[1].rgb and tuple(out[1, 1]) == TYPES[2].rgb
    assert tuple(out[2, 2]) == (1, 2, 3) and tuple(out[3, 3]) == (100, 100, 100)
    half = typed_composite(image, ids, {SCRATCH: (200, 0, 0)}, 0.5)
    assert tuple(half[0, 0]) == (150, 50, 50)


def test_the_selection_ring_lies_around_the_region_outside_it() -> None:
    region = np.zeros((9, 9), bool)
    region[4, 2:7] = True  # a hairline
    border = ring(region, 1)
    assert not (border & region).any()
    assert border[3, 2:7].all() and border[5, 2:7].all() and border[4, 1] and border[4, 7]
    assert ring(region, 2)[2, 4] and not ring(region, 1)[2, 4]


def test_region_rows_give_type_area_and_box_and_find_their_prediction() -> None:
    mask = _two_regions()
    labels, count = label_regions(mask)
    types = normalise_types(mask, None)
    types[12:14, 15:28] = DENT
    rows = region_rows(labels, count, types)
    assert rows == [
        RegionRow(1, UNSPEC, 32, (2, 2, 8, 4)),
        RegionRow(2, DENT, 26, (15, 12, 13, 2)),
    ]
    guess = PredictedRegion((15, 12, 13, 2), 26, "dent", 0.8)
    assert predicted_for(rows[1], [guess]) == guess
    assert predicted_for(rows[0], [guess]) is None
    assert region_rows(np.zeros((3, 3), np.int32), 0, np.zeros((3, 3), np.uint8)) == []
