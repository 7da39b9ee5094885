"""The Review tab's typed regions: a prediction as a typed mask, the typed mask as pictures
(the editor's value and composite, and the Regions picture with the selected region ringed),
the region list, and the editor's brushes.

Everything here renders the region of the image in view (`webapp.display_view`), so a 4096²
image costs no more than its 1024 px view; the type map itself stays native on the server.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr
import numpy as np

from model.predict import Prediction
from model.region_types import UNSPECIFIED, label_regions
from model.visualize import overlay as render_overlay
from webapp.display_view import Region, View, render_overview, render_region
from webapp.editor_masks import MASK_ALPHA, brush_colors, editor_value, render_type_ids
from webapp.typed_regions import (
    RGB,
    UNSPECIFIED_ID,
    PredictedRegion,
    RegionRow,
    TypedMask,
    TypeStyle,
    predicted_for,
    region_rows,
    ring,
    typed_composite,
)

RING_RGB = (255, 255, 255)  # the selected region's border
RING_EDGE_RGB = (0, 0, 0)  # its outer edge, so it shows on light and dark surfaces alike
REGION_ALPHA = 0.75  # the Regions picture's tint: more opaque than the editor's
FADED_ALPHA = 0.3  # the other regions' tint while one is selected
SMALL_PICTURE = 400  # display pixels: a smaller picture gets a thinner selection ring
SELECT_RADIUS = 3  # display pixels: how near a click must be to a region to select it
LISTED_REGIONS = 30  # the region list shows the largest regions (and the selected one)


def colours(types: Sequence[TypeStyle]) -> dict[int, RGB]:
    return {t.id: t.rgb for t in types}


def unspecified_id(types: Sequence[TypeStyle]) -> int:
    """The id of "unspecified" in this database (seeded as 1)."""
    return next((t.id for t in types if t.name == UNSPECIFIED), UNSPECIFIED_ID)


def predicted_regions(rows: Sequence[Mapping[str, Any]] | None) -> tuple[PredictedRegion, ...]:
    """`image_view`'s prediction regions as the region list matches them."""
    return tuple(
        PredictedRegion(
            bbox=tuple(int(v) for v in row["bbox"]),  # type: ignore[arg-type]
            area=int(row["area"]),
            type=str(row["type"]),
            confidence=None if row.get("confidence") is None else float(row["confidence"]),
        )
        for row in rows or ()
    )


def typed_prediction(pred: Prediction, types: Sequence[TypeStyle]) -> TypedMask:
    """A prediction made for the page only (refine clicks): its regions' type names as this
    database's ids (a name it lacks is unspecified until the prediction is stored)."""
    unspecified = unspecified_id(types)
    if pred.labels is None or not pred.regions:
        return TypedMask.of(pred.mask, unspecified=unspecified)
    by_name = {t.name.lower(): t.id for t in types}
    codes = [by_name.get(r.name.lower(), unspecified) for r in pred.regions]
    lut = np.array([0, *codes], dtype=np.uint8)
    labels = np.clip(pred.labels, 0, len(codes))
    typed = TypedMask.of(pred.mask, lut[labels], unspecified=unspecified)
    predicted = []
    for row in region_rows(labels, len(codes), typed.types):
        guess = pred.regions[row.label - 1]
        predicted.append(PredictedRegion(row.bbox, row.area, guess.name, guess.confidence))
    return TypedMask(typed.mask, typed.types, tuple(predicted))


def selected_label(labels: np.ndarray, point: tuple[int, int] | None) -> int:
    """The label of the region holding the selected pixel (0: none, or it was erased)."""
    if point is None:
        return 0
    x, y = point
    height, width = labels.shape
    return int(labels[y, x]) if 0 <= x < width and 0 <= y < height else 0


def editor_picture(
    image: np.ndarray, typed: TypedMask, region: Region, types: Sequence[TypeStyle]
) -> np.ndarray:
    """The editor's composite of `region`: each region tinted in its type's colour."""
    ids = render_type_ids(typed.types, region)
    return typed_composite(image, ids, colours(types), MASK_ALPHA / 255.0)


def regions_picture(
    image: np.ndarray,
    typed: TypedMask,
    region: Region,
    types: Sequence[TypeStyle],
    selected: np.ndarray | None = None,
) -> np.ndarray:
    """The Regions picture of `region`: the typed composite, more opaque than the editor's
    so small regions read at a glance. With a `selected` region (a native bool mask) the
    others fade and a ring goes around it, so it stands out of a busy mask."""
    ids = render_type_ids(typed.types, region)
    if selected is None or not selected.any():
        return typed_composite(image, ids, colours(types), REGION_ALPHA)
    shown = render_region(selected, region)
    out = typed_composite(image, ids, colours(types), FADED_ALPHA)
    out[shown] = typed_composite(image, ids, colours(types), REGION_ALPHA)[shown]
    inner = ring(shown, 1 if max(shown.shape) < SMALL_PICTURE else 2)
    out[ring(shown | inner, 1)] = RING_EDGE_RGB
    out[inner] = RING_RGB
    return out


def _swatch(color: str) -> str:
    return f'<span class="type-swatch" style="background:{html.escape(color)}"></span>'


def region_list(
    rows: Sequence[RegionRow],
    types: Sequence[TypeStyle],
    predicted: Sequence[PredictedRegion],
    selected: int = 0,
) -> str:
    """The region list as an HTML table: each region's type, area, and what the model
    predicted of it (type and confidence) while the region is as predicted. A noisy mask
    has hundreds of specks: the largest `LISTED_REGIONS` and the selected one are listed."""
    if not rows:
        return (
            '<p class="region-empty">No regions yet (strokes join the mask when you select a '
            "region, zoom or save).</p>"
        )
    by_id = {t.id: t for t in types}
    largest = sorted(rows, key=lambda r: -r.area)[:LISTED_REGIONS]
    listed = sorted({*largest, *(r for r in rows if r.label == selected)}, key=lambda r: r.label)
    lines = [
        '<table class="region-list"><thead><tr><th>region</th><th>type</th>'
        "<th>area (px)</th><th>predicted (confidence)</th></tr></thead><tbody>"
    ]
    for row in listed:
        style = by_id.get(row.type_id)
        name = style.name if style else f"type {row.type_id}"
        colour = style.color if style else "#888888"
        mark = ' class="selected"' if row.label == selected else ""
        lines.append(
            f"<tr{mark} data-region='{row.label}'><td>{'▶ ' if mark else ''}{row.label}</td>"
            f"<td>{_swatch(colour)}{html.escape(name)}</td><td>{row.area}</td>"
            f"<td>{_said(predicted_for(row, predicted))}</td></tr>"
        )
    lines.append("</tbody></table>")
    if len(listed) < len(rows):
        lines.append(
            f'<p class="region-more">{len(rows) - len(listed)} smaller regions not listed.</p>'
        )
    return "".join(lines)


def _said(guess: PredictedRegion | None) -> str:
    """What the model said of a region: its type and confidence (no confidence for
    "unspecified" at 0, which is what a model without a type head says of every region)."""
    if guess is None:
        return "—"
    if guess.confidence is None or (guess.type == UNSPECIFIED and guess.confidence == 0):
        return html.escape(guess.type)
    return f"{html.escape(guess.type)} ({guess.confidence:.2f})"


def typed_rows(typed: TypedMask) -> tuple[np.ndarray, list[RegionRow]]:
    """(labels, rows) of a typed mask."""
    labels, count = label_regions(typed.mask)
    return labels, region_rows(labels, count, typed.types)


def brush(types: list[TypeStyle], chosen: int | None = None) -> gr.Brush:
    """The editor's brush: the types' colours and the background brush, `chosen`'s first."""
    colours = brush_colors(types)
    default = next((t.color for t in types if t.id == chosen), colours[0])
    return gr.Brush(colors=colours, default_color=default, color_mode="fixed", default_size=6)


def view_images(
    rgb: np.ndarray,
    typed: TypedMask,
    heat: np.ndarray,
    view: View,
    opacity: float,
    types: list[TypeStyle],
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The editor value (its composite the typed mask), overlay and overview of `view`, all
    display-sized."""
    region = view.region(typed.shape)
    image, shown = render_region(rgb, region), render_region(typed.mask, region)
    overlay = render_overlay(image, render_region(heat, region), shown, opacity=opacity)
    picture = editor_picture(image, typed, region, types)
    return editor_value(image, shown, picture), overlay, render_overview(rgb, region)


def regions_view(
    rgb: np.ndarray,
    typed: TypedMask,
    view: View,
    selected: tuple[int, int] | None,
    types: list[TypeStyle],
) -> tuple[np.ndarray, str]:
    """The Regions picture of `view` (the region holding the `selected` pixel ringed) and
    the region list."""
    labels, rows = typed_rows(typed)
    label = selected_label(labels, selected)
    region = view.region(typed.shape)
    ringed = labels == label if label else None
    picture = regions_picture(render_region(rgb, region), typed, region, types, ringed)
    return picture, region_list(rows, types, typed.predicted, label)
