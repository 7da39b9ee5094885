"""The Review tab's typed-region controls: the Regions picture (a click selects the region
under it), the type picker (the brush's type, and the selected region's; each type's key
chooses it through static/shortcuts.js) and the region list.

They read and write the same `shown` typed mask and `screen` state as the rest of the tab,
and fold the editor's strokes in first, so a selection or a retype always acts on the mask
as the reviewer painted it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr
import numpy as np

from model.region_types import label_regions
from webapp.display_view import display_shape, display_to_native
from webapp.services import Services
from webapp.typed_regions import TypedMask, TypeStyle, region_pixel, set_region_type
from webapp.ui.defect_types import filter_choices, legend_html, picker_choices, type_styles
from webapp.ui.on_screen import OnScreen, fold
from webapp.ui.regions import (
    SELECT_RADIUS,
    brush,
    regions_view,
    selected_label,
    view_images,
)


@dataclass(frozen=True)
class Shared:
    """The Review tab's components these controls read and write."""

    current: gr.State
    shown: gr.State
    screen: gr.State
    heat: gr.State
    editor: gr.ImageEditor
    overlay: gr.Image
    overview: gr.Image
    opacity: gr.Slider
    status: gr.Markdown
    type_filter: gr.Dropdown


def type_name(types: list[TypeStyle], type_id: int) -> str:
    return next((t.name for t in types if t.id == type_id), f"type {type_id}")


class RegionPanel:
    """Lays out the controls (`picture`, then `controls`, where the tab wants them) and
    wires them (`wire`)."""

    def __init__(self, services: Services, image_rgb: Callable[[int], np.ndarray]) -> None:
        self.services = services
        self.image_rgb = image_rgb
        self._types_out: list[Any] = []  # picker, filter and legend, once wired

    # ------------------------------------------------------------------ layout
    def picture(self) -> None:
        self.regions_img = gr.Image(
            label="Regions — click one to select it",
            interactive=False,
            elem_id="regions",
            format="png",  # lossless: exact type colours and region edges
            buttons=[],  # the whole picture is the click target
            height=280,
        )

    def controls(self, types: list[TypeStyle]) -> None:
        self.picker = gr.Radio(
            picker_choices(types),
            value=types[0].id if types else None,
            label="Defect type — the brush paints in it; it retypes the selected region",
            elem_id="type-picker",
        )
        # Carries the picker's colours and the keys' table, shows nothing itself.
        self.keys_html = gr.HTML(legend_html(types), elem_id="type-keys", visible="hidden")
        self.regions_html = gr.HTML(elem_id="region-list")

    # ------------------------------------------------------------------ handlers
    def show_regions(self, image_id, typed, screen):  # type: ignore[no-untyped-def]
        """The Regions picture and the region list of what the editor shows now."""
        if image_id is None or typed is None:
            return None, ""
        types = type_styles(self.services)
        screen = screen or OnScreen()
        return regions_view(self.image_rgb(image_id), typed, screen.view, screen.selected, types)

    def retyped(  # type: ignore[no-untyped-def]
        self, image_id, typed: TypedMask, screen: OnScreen, heat, opacity, types, chosen
    ):
        """Editor, shown mask, overlay, overview, screen, selected label and a message, with
        the selected region of type `chosen` (None: as it is)."""
        labels, _ = label_regions(typed.mask)
        label = selected_label(labels, screen.selected)
        message = ""
        if not label:
            screen = replace(screen, selected=None)
        elif chosen is not None:
            typed = replace(typed, types=set_region_type(typed.types, labels, label, chosen))
            message = (
                f"Region {label} is now **{type_name(types, chosen)}** "
                "(saved with Save correction)."
            )
        heat = heat if heat is not None else np.zeros(typed.shape, np.float32)
        editor_img, overlay, overview = view_images(
            self.image_rgb(image_id), typed, heat, screen.view, opacity, types
        )
        return editor_img, typed, overlay, overview, screen, label, message

    def select_region(self, image_id, typed, screen, heat, value, opacity, evt: gr.SelectData):  # type: ignore[no-untyped-def]
        """Select the region under a click on the Regions picture (a click on the
        background clears the selection); the picker and the brush take its type."""
        if image_id is None or typed is None:
            return (gr.update(),) * 7
        screen = screen or OnScreen()
        types = type_styles(self.services)
        typed = fold(typed, value, screen, types)
        region = screen.view.region(typed.shape)
        shown = display_shape(region.shape)
        point = display_to_native(tuple(evt.index), region, shown)
        labels, _ = label_regions(typed.mask)
        radius = SELECT_RADIUS * max(region.width / shown[1], region.height / shown[0], 1.0)
        screen = replace(screen, selected=region_pixel(labels, point, radius))
        editor_img, typed, overlay, overview, screen, label, _ = self.retyped(
            image_id, typed, screen, heat, opacity, types, None
        )
        if not label:
            return editor_img, typed, overlay, overview, screen, gr.update(), "No region there."
        x, y = screen.selected
        kind = int(typed.types[y, x])
        editor = gr.update(value=editor_img, brush=brush(types, kind))
        message = (
            f"Region {label} selected ({type_name(types, kind)}): press a type's key or pick "
            "a type."
        )
        return editor, typed, overlay, overview, screen, kind, message

    def pick_type(self, image_id, typed, screen, heat, value, opacity, chosen):  # type: ignore[no-untyped-def]
        """A type chosen (picker or key): the brush paints in it, and the selected region,
        if any, becomes it."""
        types = type_styles(self.services)
        screen = screen or OnScreen()
        if image_id is None or typed is None or chosen is None or screen.selected is None:
            return gr.update(brush=brush(types, chosen)), *(gr.update(),) * 4, ""
        typed = fold(typed, value, screen, types)
        editor_img, typed, overlay, overview, screen, _, message = self.retyped(
            image_id, typed, screen, heat, opacity, types, int(chosen)
        )
        editor = gr.update(value=editor_img, brush=brush(types, chosen))
        return editor, typed, overlay, overview, screen, message

    def refresh_types(self):  # type: ignore[no-untyped-def]
        """Picker, filter and legend as the types are now (after an admin added one)."""
        types = type_styles(self.services)
        return (
            gr.update(choices=picker_choices(types)),
            gr.update(choices=filter_choices(types)),
            legend_html(types),
        )

    # ------------------------------------------------------------------ events
    def follow_types(self, events: Sequence[Any]) -> None:
        """Refresh picker, filter and legend after each of `events`: a type added in the
        panel, or an image shown whose prediction named a type the page did not know yet
        (a model's types join the list with its first prediction)."""
        for event in events:
            event.then(self.refresh_types, None, self._types_out, show_progress="hidden")

    def wire(
        self, page: gr.Blocks, shared: Shared, changed: Sequence[Any]
    ) -> Callable[[Any], None]:
        """Wire the controls; returns what the tab calls on each of its events that change
        the shown mask, its view or the selection, to redraw the regions after it."""
        s = shared
        regions_in = [s.current, s.shown, s.screen]
        regions_out = [self.regions_img, self.regions_html]

        def then_regions(event: Any) -> None:
            event.then(self.show_regions, regions_in, regions_out, show_progress="hidden")

        state_in = [s.current, s.shown, s.screen, s.heat, s.editor, s.opacity]
        typed_out = [s.editor, s.shown, s.overlay, s.overview, s.screen]
        # No progress overlay on the editor (see the zoom's events in `review`).
        then_regions(
            self.regions_img.select(
                self.select_region,
                state_in,
                [*typed_out, self.picker, s.status],
                show_progress="hidden",
            )
        )
        then_regions(
            self.picker.input(
                self.pick_type,
                [*state_in, self.picker],
                [*typed_out, s.status],
                api_name="set_type",
                show_progress="hidden",
            )
        )
        self._types_out = [self.picker, s.type_filter, self.keys_html]
        page.load(self.refresh_types, None, self._types_out, api_name="types")
        self.follow_types(changed)  # a type added or changed in the Defect types panel
        # The regions as an API call too (the chained redraws run from the page only).
        regions_api = gr.Button(visible=False)
        regions_api.click(self.show_regions, regions_in, regions_out, api_name="regions")
        return then_regions
