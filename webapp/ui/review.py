"""The Review tab: the next image of the queue, its mask to edit, and the decision buttons.

Every save carries the image state it was shown with; when someone else changed the image
meanwhile the save is refused, the editor keeps the reviewer's mask, and a second save
(now based on the newer state) replaces it deliberately.

Large images are shown through a view (`webapp.display_view`): the editor and the overlay
get the region in view at most 1024 px a side, the server keeps the native mask and
heatmap, and a zoom or pan first folds the editor's strokes into the native mask.

Every region of the mask has a defect type (`webapp.typed_regions`): the brush paints in the
chosen type's colour, the editor and the Regions picture tint each region in its type's
colour, a click on the Regions picture selects the region under it, and choosing a type
(from the picker, or with the type's key) retypes the selected region. The native mask and
its type map travel together as the `shown` state (a `TypedMask`); Save correction stores
both.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any

import gradio as gr
import numpy as np

from model.predict import Click
from model.visualize import overlay as render_overlay
from storage.errors import StorageError
from storage.review_queue import SaveConflict
from storage.schema import CorrectionAction, User
from webapp.display_view import (
    FIT,
    ZOOM_CHOICES,
    Region,
    View,
    display_shape,
    display_to_native,
    overview_to_native,
    render_region,
)
from webapp.permissions import Permission, PermissionDenied, allowed
from webapp.review_order import DEFAULT_STRATEGY, STRATEGIES
from webapp.services import Services
from webapp.typed_regions import TypedMask, TypeStyle
from webapp.ui.common import counts_line, signed_in
from webapp.ui.defect_types import (
    ALL_TYPES,
    build_type_admin,
    filter_choices,
    type_styles,
    wanted_type,
)
from webapp.ui.on_screen import OnScreen, fold
from webapp.ui.regions import (
    brush,
    predicted_regions,
    typed_prediction,
    unspecified_id,
    view_images,
)
from webapp.ui.review_regions import RegionPanel, Shared
from webapp.views import history_rows

ACTIONS = (
    ("Accept (A)", "btn-accept", CorrectionAction.accepted),
    ("Save correction (S)", "btn-save", CorrectionAction.corrected),
    ("Defect-free (D)", "btn-defect-free", CorrectionAction.defect_free),
    ("Skip (K)", "btn-skip", CorrectionAction.skipped),
)

# editor, mask to show, overlay, info, history, earlier, earlier mask, state, accept button,
# anomaly map (second opinion), on-screen state, heatmap, zoom, overview
EMPTY = (
    None,
    None,
    None,
    "Queue is empty.",
    [],
    gr.update(choices=[]),
    None,
    None,
    gr.update(),
    gr.update(value=None, visible=False),
    OnScreen(),
    None,
    FIT,
    None,
)


def anomaly_note(anomaly: dict[str, Any]) -> str:
    """The info line's part for the zero-label anomaly score of an image."""
    good = anomaly.get("good_images")
    source = f"normality model {anomaly['version']}" + (
        f", from {good} good images" if good is not None else ""
    )
    return f"anomaly score **{anomaly['score']:.2f}** ({source})"


def view_overlay(
    rgb: np.ndarray, mask: np.ndarray, heat: np.ndarray, view: View, opacity: float
) -> np.ndarray:
    """The overlay of `view` alone (a new heatmap opacity changes nothing else)."""
    region = view.region(mask.shape)
    shown = render_region(mask, region)
    heat_shown = render_region(heat, region)
    return render_overlay(render_region(rgb, region), heat_shown, shown, opacity=opacity)


def build_review(services: Services, page: gr.Blocks) -> None:
    """Lay out the Review tab inside the current `gr.Tab` and wire its events."""

    @lru_cache(maxsize=4)
    def image_rgb(image_id: int) -> np.ndarray:
        """Decoded once for its zooms and pans (decoding a 4096² PNG costs more than the
        rest of one); an image's pixels never change, so the cache needs no invalidation."""
        rgb = services.image_rgb(image_id)
        rgb.setflags(write=False)  # shared between calls
        return rgb

    def stored_prediction(image_id: int, view: dict[str, Any], types: list[TypeStyle]) -> TypedMask:
        """The newest stored prediction as a typed mask, with its regions' confidences."""
        return TypedMask.of(
            services.mask(image_id),
            services.type_mask(image_id, "prediction"),
            predicted_regions(view["prediction"].get("regions")),
            unspecified_id(types),
        )

    def render(image_id: int, opacity: float, screen: OnScreen, user: User | None) -> tuple:  # type: ignore[type-arg]
        rgb = image_rgb(image_id)
        types = type_styles(services)
        unspecified = unspecified_id(types)
        clicks = screen.clicks
        view = services.image_view(image_id)
        pred = view["prediction"]
        anomaly = view["anomaly"]
        anomaly_heat = services.heatmap(image_id, "anomaly") if anomaly is not None else None
        served = services.models.current
        if clicks and served is not None:
            refined = services.predict_image(
                image_id, rgb, clicks=tuple(Click(x, y, p) for x, y, p in clicks), store=False
            )
            typed, heat = typed_prediction(refined, types), refined.heatmap
        elif clicks:  # no model served: the clicks propose a mask, which the brush edits
            typed = TypedMask.of(
                services.propose_mask(image_id, clicks, rgb=rgb), unspecified=unspecified
            )
            heat = anomaly_heat if anomaly_heat is not None else np.zeros(typed.shape, np.float32)
        elif pred is not None:
            typed, heat = stored_prediction(image_id, view, types), services.heatmap(image_id)
        elif served is not None:
            heat = services.predict_image(image_id, rgb).heatmap
            view = services.image_view(image_id)
            pred = view["prediction"]
            typed = stored_prediction(image_id, view, types)
        else:  # no model yet: the reviewer paints the mask, over the anomaly map if any
            typed = TypedMask.of(np.zeros(rgb.shape[:2], bool), unspecified=unspecified)
            heat = anomaly_heat if anomaly_heat is not None else np.zeros(typed.shape, np.float32)
        model = (
            "no prediction yet"
            if pred is None
            else f"model version {pred['model_version']} · defect score "
            f"**{pred['defect_score']:.3f}** · uncertainty **{pred['uncertainty']:.3f}**"
        )
        if anomaly is not None:
            note = anomaly_note(anomaly)
            model = note if pred is None else f"{model} · {note}"
        # Beside the model's overlay, the anomaly map is a second opinion.
        second = None
        if anomaly_heat is not None and heat is not anomaly_heat:
            whole = Region.whole(rgb.shape)
            second = render_overlay(
                render_region(rgb, whole), render_region(anomaly_heat, whole), opacity=opacity
            )
        info = (
            f"**Image {image_id}** ({view['width']}×{view['height']} {view['format']}, "
            f"{view['status']}) · {model} · link: `?image={image_id}`"
        )
        rows = history_rows(services.history(image_id))
        choices = [(f"#{row[0]} {row[2]} by {row[1]}", row[0]) for row in rows]
        can_accept = pred is not None and allowed(user, Permission.review)
        editor_img, overlay, overview = view_images(rgb, typed, heat, screen.view, opacity, types)
        return (
            editor_img,
            typed,
            overlay,
            info,
            rows,
            gr.update(choices=choices, value=None),
            None,
            view["state"],
            gr.update(interactive=can_accept),
            gr.update(value=second, visible=second is not None),
            screen,
            heat,
            screen.view.zoom,
            overview,
        )

    def refine_outputs(out: tuple) -> tuple:  # type: ignore[type-arg]
        """`render`'s outputs for `refine_out`."""
        editor_img, typed, overlay, *_, screen, heat, _zoom, overview = out
        return editor_img, typed, overlay, screen, heat, overview

    def show(image_id: int | None, opacity: float, user: User | None) -> tuple:  # type: ignore[type-arg]
        if image_id is None:
            return EMPTY
        return render(image_id, opacity, OnScreen(), user)

    def next_image(order: str, opacity: float, kind: str | None, request: gr.Request) -> tuple:  # type: ignore[type-arg]
        user = signed_in(services, request)
        image_id = None
        if user is not None:
            try:
                image_id = services.next_for_review(user, order, defect_type=wanted_type(kind))
            except StorageError as exc:  # a type renamed since the page loaded
                return (None, *EMPTY, counts_line(services), f"⚠ {exc}")
        empty = (
            ""
            if image_id is not None or kind in (None, ALL_TYPES)
            else (f"No image waits whose prediction has a region of type {kind}.")
        )
        return (image_id, *show(image_id, opacity, user), counts_line(services), empty)

    def on_load(order: str, opacity: float, kind: str | None, request: gr.Request) -> tuple:  # type: ignore[type-arg]
        """The first image, and the editor's brushes as the types are now (a type added
        since the page was built shows up on the next load)."""
        out = list(first_image(order, opacity, kind, request))
        out[1] = gr.update(value=out[1], brush=brush(type_styles(services)))
        return tuple(out)

    def first_image(order: str, opacity: float, kind: str | None, request: gr.Request) -> tuple:  # type: ignore[type-arg]
        wanted = request.query_params.get("image") if request is not None else None
        if wanted and wanted.isdigit():
            user = signed_in(services, request)
            try:
                image_id = services.image_view(int(wanted))["id"]
                return (
                    image_id,
                    *show(image_id, opacity, user),
                    counts_line(services),
                    f"Opened image {image_id} from its link.",
                )
            except StorageError as exc:
                head = next_image(order, opacity, kind, request)
                return (*head[:-1], f"⚠ {exc}")
        return next_image(order, opacity, kind, request)

    def act(action: CorrectionAction):  # type: ignore[no-untyped-def]
        def handler(  # type: ignore[no-untyped-def]
            image_id,
            state,
            typed,
            screen,
            value,
            note,
            order,
            opacity,
            kind,
            request: gr.Request,
        ):
            if image_id is None:
                return (image_id, *EMPTY, counts_line(services), "Nothing to save.")
            user = signed_in(services, request)
            keep = (gr.update(),) * 7  # editor, shown mask, overlay, info, history, earlier (2)
            after = (gr.update(),) * 6  # accept, anomaly map, on screen, heatmap, zoom, overview
            try:
                if user is None:
                    raise PermissionDenied("sign in to save corrections")
                mask = types = None
                if action is CorrectionAction.corrected:
                    edited = fold(typed, value, screen, type_styles(services))
                    mask, types = edited.mask, edited.types
                elif action is CorrectionAction.accepted and typed is not None:
                    types = typed.types  # regions retyped on screen keep their new type
                cid = services.save_correction(
                    image_id,
                    user,
                    action=action.value,
                    mask=mask,
                    based_on=state,
                    note=note or None,
                    types=types,
                )
            except SaveConflict as exc:
                # Keep the reviewer's editor as it is; a second save is based on the new state.
                return (
                    image_id,
                    *keep,
                    exc.current.token,
                    *after,
                    counts_line(services),
                    f"⚠ {exc}. Your mask is still in the editor: save again to replace the "
                    "newer version, or take the next image.",
                )
            except (PermissionDenied, StorageError, ValueError) as exc:
                return (
                    image_id,
                    *keep,
                    state,
                    *after,
                    counts_line(services),
                    f"⚠ {exc}",
                )
            # The stored action: an accept of retyped regions is stored as a correction.
            stored = next((c.action for c in services.history(image_id) if c.id == cid), None)
            saved = (stored or action).value.replace("_", "-")
            head = next_image(order, opacity, kind, request)
            return (*head[:-1], f"Saved {saved} for image {image_id} (correction {cid}).")

        return handler

    def add_click(image_id, screen, polarity, opacity, evt: gr.SelectData, request: gr.Request):  # type: ignore[no-untyped-def]
        if image_id is None:
            return (gr.update(),) * 6
        screen = screen or OnScreen()
        region = screen.view.region(image_rgb(image_id).shape)
        x, y = display_to_native(tuple(evt.index), region, display_shape(region.shape))
        screen = replace(screen, clicks=(*screen.clicks, (x, y, polarity.startswith("defect"))))
        return refine_outputs(render(image_id, opacity, screen, signed_in(services, request)))

    def restyle(image_id, typed, screen, heat, opacity):  # type: ignore[no-untyped-def]
        if image_id is None or typed is None or heat is None:
            return gr.update()
        view = (screen or OnScreen()).view
        return view_overlay(image_rgb(image_id), typed.mask, heat, view, opacity)

    def clear(image_id, screen, opacity, request: gr.Request):  # type: ignore[no-untyped-def]
        if image_id is None:
            return (gr.update(),) * 6
        screen = OnScreen(view=(screen or OnScreen()).view)
        return refine_outputs(render(image_id, opacity, screen, signed_in(services, request)))

    def refocus(image_id, typed, screen, heat, value, view: View, opacity):  # type: ignore[no-untyped-def]
        """Show `view`: the strokes drawn on the old view go into the native mask first."""
        if image_id is None or typed is None:
            return (gr.update(),) * 5 + (FIT,)
        screen = screen or OnScreen()
        types = type_styles(services)
        typed = fold(typed, value, screen, types)
        heat = heat if heat is not None else np.zeros(typed.shape, np.float32)
        editor_img, overlay, overview = view_images(
            image_rgb(image_id), typed, heat, view, opacity, types
        )
        screen = replace(screen, view=view)
        return editor_img, typed, overlay, overview, screen, view.zoom

    def zoom_to(image_id, typed, screen, heat, value, zoom, opacity):  # type: ignore[no-untyped-def]
        centre = (screen or OnScreen()).view.centre
        return refocus(image_id, typed, screen, heat, value, View(zoom, centre), opacity)

    def pan_to(image_id, typed, screen, heat, value, opacity, evt: gr.SelectData):  # type: ignore[no-untyped-def]
        """Centre the view on the overview's clicked point; from Fit, zoom in 2× there."""
        if typed is None:
            return refocus(image_id, typed, screen, heat, value, View(), opacity)
        zoom = (screen or OnScreen()).view.zoom
        centre = overview_to_native(tuple(evt.index), typed.shape)
        view = View("2" if zoom == FIT else zoom, centre)
        return refocus(image_id, typed, screen, heat, value, view, opacity)

    def earlier_mask(correction_id: int | None, image_id: int | None) -> Any:
        if correction_id is None or image_id is None:
            return None
        mask = services.correction_mask(image_id, correction_id)
        if mask is None:
            return None
        return render_region(mask, Region.whole(mask.shape)).astype(np.uint8) * 255

    # ------------------------------------------------------------------ layout
    types = type_styles(services)
    panel = RegionPanel(services, image_rgb)
    current = gr.State(None)
    shown = gr.State(None)  # the native typed mask the editor was opened with: strokes edit it
    state = gr.State(None)  # the image state the shown masks belong to
    screen = gr.State(OnScreen())  # the view (zoom, centre), refine clicks, selected region
    heat = gr.State(None)  # the native heatmap of the overlay, for re-rendering a view
    with gr.Row():
        order = gr.Radio(
            [(s.label, s.name) for s in STRATEGIES.values()],
            value=DEFAULT_STRATEGY,
            label="Queue order",
            scale=2,
        )
        type_filter = gr.Dropdown(
            filter_choices(types),
            value=ALL_TYPES,
            label="Predicted type",
            elem_id="type-filter",
            allow_custom_value=True,  # a type added since the page loaded; the queue checks
            scale=1,
        )
        next_btn = gr.Button("Next image (N)", elem_id="btn-next", scale=1)
        counts_md = gr.Markdown(elem_id="queue-counts")
    with gr.Row():
        with gr.Column(scale=3):
            editor = gr.ImageEditor(
                type="numpy",
                format="png",
                label="Mask — paint in a defect type's colour, blue marks background, the "
                "eraser undoes strokes",
                brush=brush(types),
                eraser=gr.Eraser(default_size=10),
                layers=True,
                transforms=(),
                sources=(),
                elem_id="mask-editor",
                height=560,
            )
            with gr.Row(elem_id="view-controls"):
                zoom = gr.Radio(
                    list(ZOOM_CHOICES),
                    value=FIT,
                    label="Zoom (strokes so far are kept)",
                    elem_id="zoom",
                    scale=3,
                )
                overview = gr.Image(
                    label="Overview — click to centre the view",
                    interactive=False,
                    elem_id="overview",
                    height=200,
                    buttons=[],  # the whole picture is the click target
                    scale=2,
                )
        with gr.Column(scale=2):
            with gr.Row():
                overlay_img = gr.Image(
                    label="Heatmap overlay — click to refine",
                    interactive=False,
                    elem_id="overlay",
                    height=280,
                )
                panel.picture()
            panel.controls(types)
            anomaly_img = gr.Image(
                label="Anomaly map (second opinion)",
                interactive=False,
                visible=False,
                elem_id="anomaly-map",
                height=200,
            )
            opacity = gr.Slider(0, 1, value=0.45, step=0.05, label="Heatmap opacity")
            with gr.Row():
                polarity = gr.Radio(
                    ["defect (+)", "background (−)"], value="defect (+)", label="Refine click"
                )
                clear_btn = gr.Button("Clear clicks")
            info_md = gr.Markdown(elem_id="image-info")
    note = gr.Textbox(label="Note (optional)", max_lines=1)
    with gr.Row():
        buttons = [
            (
                gr.Button(
                    label,
                    elem_id=elem_id,
                    variant="primary" if action is CorrectionAction.accepted else "secondary",
                ),
                action,
            )
            for label, elem_id, action in ACTIONS
        ]
    accept_btn = buttons[0][0]
    status_md = gr.Markdown(elem_id="review-status")
    with gr.Accordion("History of this image", open=False):
        history = gr.Dataframe(
            headers=["correction", "author", "action", "time", "note"],
            interactive=False,
            elem_id="history",
        )
        earlier = gr.Dropdown(label="View an earlier mask", choices=[], elem_id="earlier")
        earlier_img = gr.Image(label="Earlier mask", interactive=False, elem_id="earlier-mask")
    with gr.Accordion("Defect types", open=False, elem_id="types-panel"):
        types_changed = build_type_admin(services, page)

    # ------------------------------------------------------------------ events
    review_out = [
        current,
        editor,
        shown,
        overlay_img,
        info_md,
        history,
        earlier,
        earlier_img,
        state,
        accept_btn,
        anomaly_img,
        screen,
        heat,
        zoom,
        overview,
        counts_md,
        status_md,
    ]
    shared = Shared(
        current, shown, screen, heat, editor, overlay_img, overview, opacity, status_md, type_filter
    )
    then_regions = panel.wire(page, shared, types_changed)
    shown_image = [
        page.load(on_load, [order, opacity, type_filter], review_out),
        next_btn.click(
            next_image, [order, opacity, type_filter], review_out, api_name="next_image"
        ),
        *(
            button.click(
                act(action),
                [current, state, shown, screen, editor, note, order, opacity, type_filter],
                review_out,
                api_name=action.value,
            )
            for button, action in buttons
        ),
    ]
    for event in shown_image:
        then_regions(event)
    panel.follow_types(shown_image)
    refine_out = [editor, shown, overlay_img, screen, heat, overview]
    # The inputs of the overlay's select are part of its API (tests fire it by position).
    then_regions(overlay_img.select(add_click, [current, screen, polarity, opacity], refine_out))
    opacity.release(restyle, [current, shown, screen, heat, opacity], overlay_img)
    then_regions(clear_btn.click(clear, [current, screen, opacity], refine_out))
    view_out = [editor, shown, overlay_img, overview, screen, zoom]
    view_in = [current, shown, screen, heat, editor]
    # No progress overlay: Gradio 6.31's editor can leave its status "processing" for good
    # when a new value arrives while it still handles the last one, and the overlay would
    # then hide the canvas (seen with large images in Chromium).
    then_regions(
        zoom.input(
            zoom_to, [*view_in, zoom, opacity], view_out, api_name="zoom", show_progress="hidden"
        )
    )
    then_regions(overview.select(pan_to, [*view_in, opacity], view_out, show_progress="hidden"))
    earlier.change(earlier_mask, [earlier, current], earlier_img)
