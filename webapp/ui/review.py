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

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import gradio as gr
import numpy as np

from model.predict import Click
from model.region_types import label_regions
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
    render_overview,
    render_region,
)
from webapp.editor_masks import brush_colors, edited_typed, editor_value, palette_of
from webapp.permissions import Permission, PermissionDenied, allowed
from webapp.review_order import DEFAULT_STRATEGY, STRATEGIES
from webapp.services import Services
from webapp.typed_regions import TypedMask, TypeStyle, region_pixel, set_region_type
from webapp.ui.common import counts_line, signed_in
from webapp.ui.defect_types import (
    ALL_TYPES,
    build_type_admin,
    filter_choices,
    legend_html,
    picker_choices,
    type_styles,
    wanted_type,
)
from webapp.ui.regions import (
    SELECT_RADIUS,
    editor_picture,
    predicted_regions,
    region_list,
    regions_picture,
    selected_label,
    typed_prediction,
    typed_rows,
    unspecified_id,
)
from webapp.views import history_rows

ACTIONS = (
    ("Accept (A)", "btn-accept", CorrectionAction.accepted),
    ("Save correction (S)", "btn-save", CorrectionAction.corrected),
    ("Defect-free (D)", "btn-defect-free", CorrectionAction.defect_free),
    ("Skip (K)", "btn-skip", CorrectionAction.skipped),
)

RefineClick = tuple[float, float, bool]  # (x, y) in native image pixels, positive?


@dataclass(frozen=True)
class OnScreen:
    """How the current image is shown besides its masks: the view (zoom and centre), the
    refine clicks so far (native pixels) and the selected region (a native pixel of it). One
    state, because placing a click needs the view; all start afresh with each image."""

    view: View = field(default_factory=View)
    clicks: tuple[RefineClick, ...] = ()
    selected: tuple[int, int] | None = None


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


def region_of(typed: TypedMask | None, screen: OnScreen | None) -> Region | None:
    """The native region the editor shows of the mask (None without a mask)."""
    return None if typed is None else (screen or OnScreen()).view.region(typed.shape)


def fold(
    typed: TypedMask | None,
    value: dict[str, Any] | None,
    screen: OnScreen | None,
    types: list[TypeStyle],
) -> TypedMask:
    """The typed mask with the editor's strokes in it (each in its brush's type)."""
    return edited_typed(
        typed, value, region_of(typed, screen), palette_of(types), unspecified_id(types)
    )


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


def view_overlay(
    rgb: np.ndarray, mask: np.ndarray, heat: np.ndarray, view: View, opacity: float
) -> np.ndarray:
    """The overlay of `view` alone (a new heatmap opacity changes nothing else)."""
    region = view.region(mask.shape)
    shown = render_region(mask, region)
    heat_shown = render_region(heat, region)
    return render_overlay(render_region(rgb, region), heat_shown, shown, opacity=opacity)


def regions_view(
    rgb: np.ndarray, typed: TypedMask, screen: OnScreen, types: list[TypeStyle]
) -> tuple[np.ndarray, str]:
    """The Regions picture of the view (selected region ringed) and the region list."""
    labels, rows = typed_rows(typed)
    label = selected_label(labels, screen.selected)
    region = screen.view.region(typed.shape)
    selected = labels == label if label else None
    picture = regions_picture(render_region(rgb, region), typed, region, types, selected)
    return picture, region_list(rows, types, typed.predicted, label)


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
            head = next_image(order, opacity, kind, request)
            return (
                *head[:-1],
                f"Saved {action.value.replace('_', '-')} for image {image_id} (correction {cid}).",
            )

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

    def show_regions(image_id, typed, screen):  # type: ignore[no-untyped-def]
        """The Regions picture and the region list of what the editor shows now."""
        if image_id is None or typed is None:
            return None, region_list([], [], [])
        types = type_styles(services)
        return regions_view(image_rgb(image_id), typed, screen or OnScreen(), types)

    def retyped(image_id, typed, screen, heat, value, opacity, types, chosen):  # type: ignore[no-untyped-def]
        """The editor, shown mask, overlay and overview after folding the strokes in (and
        giving the selected region type `chosen`, unless None)."""
        typed = fold(typed, value, screen, types)
        labels, _ = label_regions(typed.mask)
        label = selected_label(labels, screen.selected)
        message = ""
        if not label:
            screen = replace(screen, selected=None)
        elif chosen is not None:
            typed = replace(typed, types=set_region_type(typed.types, labels, label, chosen))
            name = next((t.name for t in types if t.id == chosen), f"type {chosen}")
            message = f"Region {label} is now **{name}** (saved with Save correction)."
        heat = heat if heat is not None else np.zeros(typed.shape, np.float32)
        editor_img, overlay, overview = view_images(
            image_rgb(image_id), typed, heat, screen.view, opacity, types
        )
        return editor_img, typed, overlay, overview, screen, label, message

    def select_region(image_id, typed, screen, heat, value, opacity, evt: gr.SelectData):  # type: ignore[no-untyped-def]
        """Select the region under a click on the Regions picture (a click on the
        background clears the selection); the picker shows its type."""
        if image_id is None or typed is None:
            return (gr.update(),) * 7
        screen = screen or OnScreen()
        types = type_styles(services)
        typed = fold(typed, value, screen, types)
        region = screen.view.region(typed.shape)
        shown = display_shape(region.shape)
        point = display_to_native(tuple(evt.index), region, shown)
        labels, _ = label_regions(typed.mask)
        radius = SELECT_RADIUS * max(region.width / shown[1], region.height / shown[0], 1.0)
        screen = replace(screen, selected=region_pixel(labels, point, radius))
        editor_img, typed, overlay, overview, screen, label, _ = retyped(
            image_id, typed, screen, heat, None, opacity, types, None
        )
        if not label:
            return editor_img, typed, overlay, overview, screen, gr.update(), "No region there."
        x, y = screen.selected
        kind = int(typed.types[y, x])
        name = next((t.name for t in types if t.id == kind), f"type {kind}")
        editor = gr.update(value=editor_img, brush=brush(types, kind))
        message = f"Region {label} selected ({name}): press a type's key or pick a type."
        return editor, typed, overlay, overview, screen, kind, message

    def pick_type(image_id, typed, screen, heat, value, opacity, chosen):  # type: ignore[no-untyped-def]
        """A type chosen (picker or key): the brush paints in it, and the selected region,
        if any, becomes it."""
        types = type_styles(services)
        paint = gr.update(brush=brush(types, chosen))
        screen = screen or OnScreen()
        if image_id is None or typed is None or chosen is None or screen.selected is None:
            return paint, *(gr.update(),) * 4, ""
        editor_img, typed, overlay, overview, screen, _, message = retyped(
            image_id, typed, screen, heat, value, opacity, types, int(chosen)
        )
        editor = gr.update(value=editor_img, brush=brush(types, chosen))
        return editor, typed, overlay, overview, screen, message

    def refresh_types():  # type: ignore[no-untyped-def]
        """Picker, filter and legend as the types are now (after an admin added one)."""
        types = type_styles(services)
        return (
            gr.update(choices=picker_choices(types)),
            gr.update(choices=filter_choices(types)),
            legend_html(types),
        )

    def earlier_mask(correction_id: int | None, image_id: int | None) -> Any:
        if correction_id is None or image_id is None:
            return None
        mask = services.correction_mask(image_id, correction_id)
        if mask is None:
            return None
        return render_region(mask, Region.whole(mask.shape)).astype(np.uint8) * 255

    # ------------------------------------------------------------------ layout
    types = type_styles(services)
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
                regions_img = gr.Image(
                    label="Regions — click one to select it",
                    interactive=False,
                    elem_id="regions",
                    format="png",  # lossless: exact type colours and region edges
                    buttons=[],  # the whole picture is the click target
                    height=280,
                )
            picker = gr.Radio(
                picker_choices(types),
                value=types[0].id if types else None,
                label="Defect type — the brush paints in it; it retypes the selected region",
                elem_id="type-picker",
            )
            # Carries the picker's colours and the keys' table, shows nothing itself.
            keys_html = gr.HTML(legend_html(types), elem_id="type-keys", visible="hidden")
            regions_html = gr.HTML(elem_id="region-list")
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
        added = build_type_admin(services, page)

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
    regions_in = [current, shown, screen]
    regions_out = [regions_img, regions_html]

    def then_regions(event: Any) -> None:
        """Every change of the shown mask, its view or the selection redraws the regions."""
        event.then(show_regions, regions_in, regions_out, show_progress="hidden")

    then_regions(page.load(on_load, [order, opacity, type_filter], review_out))
    then_regions(
        next_btn.click(next_image, [order, opacity, type_filter], review_out, api_name="next_image")
    )
    for button, action in buttons:
        then_regions(
            button.click(
                act(action),
                [current, state, shown, screen, editor, note, order, opacity, type_filter],
                review_out,
                api_name=action.value,
            )
        )
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
    typed_out = [editor, shown, overlay_img, overview, screen]
    then_regions(
        regions_img.select(
            select_region,
            [*view_in, opacity],
            [*typed_out, picker, status_md],
            show_progress="hidden",
        )
    )
    then_regions(
        picker.input(
            pick_type,
            [*view_in, opacity, picker],
            [*typed_out, status_md],
            api_name="set_type",
            show_progress="hidden",
        )
    )
    page.load(refresh_types, None, [picker, type_filter, keys_html], api_name="types")
    added.then(refresh_types, None, [picker, type_filter, keys_html])
    earlier.change(earlier_mask, [earlier, current], earlier_img)
    # The regions as an API call too (the chained redraws above run from the page only).
    regions_api = gr.Button(visible=False)
    regions_api.click(show_regions, regions_in, regions_out, api_name="regions")
