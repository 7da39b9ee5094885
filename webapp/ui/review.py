"""The Review tab: the next image of the queue, its mask to edit, and the decision buttons.

Every save carries the image state it was shown with; when someone else changed the image
meanwhile the save is refused, the editor keeps the reviewer's mask, and a second save
(now based on the newer state) replaces it deliberately.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from model.predict import Click
from model.visualize import overlay as render_overlay
from storage.errors import StorageError
from storage.review_queue import SaveConflict
from storage.schema import CorrectionAction, User
from webapp.editor_masks import BRUSH_COLORS, edited_mask, editor_value
from webapp.permissions import Permission, PermissionDenied, allowed
from webapp.review_order import DEFAULT_STRATEGY, STRATEGIES
from webapp.services import Services
from webapp.ui.common import counts_line, signed_in
from webapp.views import history_rows

ACTIONS = (
    ("Accept (A)", "btn-accept", CorrectionAction.accepted),
    ("Save correction (S)", "btn-save", CorrectionAction.corrected),
    ("Defect-free (D)", "btn-defect-free", CorrectionAction.defect_free),
    ("Skip (K)", "btn-skip", CorrectionAction.skipped),
)
# editor, mask to show, overlay, info, history, earlier, earlier mask, state, accept button,
# anomaly map (second opinion)
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
)


def anomaly_note(anomaly: dict[str, Any]) -> str:
    """The info line's part for the zero-label anomaly score of an image."""
    good = anomaly.get("good_images")
    source = f"normality model {anomaly['version']}" + (
        f", from {good} good images" if good is not None else ""
    )
    return f"anomaly score **{anomaly['score']:.2f}** ({source})"


def build_review(services: Services, page: gr.Blocks) -> None:
    """Lay out the Review tab inside the current `gr.Tab` and wire its events."""

    def render(image_id: int, opacity: float, clicks: list, user: User | None) -> tuple:  # type: ignore[type-arg]
        rgb = services.image_rgb(image_id)
        view = services.image_view(image_id)
        pred = view["prediction"]
        anomaly = view["anomaly"]
        anomaly_heat = services.heatmap(image_id, "anomaly") if anomaly is not None else None
        served = services.models.current
        if clicks and served is not None:
            refined = services.predict_image(
                image_id, rgb, clicks=tuple(Click(x, y, p) for x, y, p in clicks), store=False
            )
            mask, heat = refined.mask, refined.heatmap
        elif clicks:  # no model served: the clicks propose a mask, which the brush edits
            mask = services.propose_mask(image_id, clicks, rgb=rgb)
            heat = anomaly_heat if anomaly_heat is not None else np.zeros(mask.shape, np.float32)
        elif pred is not None:
            mask, heat = services.mask(image_id), services.heatmap(image_id)
        elif served is not None:
            refined = services.predict_image(image_id, rgb)
            mask, heat = refined.mask, refined.heatmap
            view = services.image_view(image_id)
            pred = view["prediction"]
        else:  # no model yet: the reviewer paints the mask, over the anomaly map if any
            mask = np.zeros(rgb.shape[:2], bool)
            heat = anomaly_heat if anomaly_heat is not None else np.zeros(mask.shape, np.float32)
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
            second = render_overlay(rgb, anomaly_heat, None, opacity=opacity)
        info = (
            f"**Image {image_id}** ({view['width']}×{view['height']} {view['format']}, "
            f"{view['status']}) · {model} · link: `?image={image_id}`"
        )
        rows = history_rows(services.history(image_id))
        choices = [(f"#{row[0]} {row[2]} by {row[1]}", row[0]) for row in rows]
        can_accept = pred is not None and allowed(user, Permission.review)
        return (
            editor_value(rgb, mask),
            mask,
            render_overlay(rgb, heat, mask, opacity=opacity),
            info,
            rows,
            gr.update(choices=choices, value=None),
            None,
            view["state"],
            gr.update(interactive=can_accept),
            gr.update(value=second, visible=second is not None),
        )

    def show(image_id: int | None, opacity: float, user: User | None) -> tuple:  # type: ignore[type-arg]
        if image_id is None:
            return (*EMPTY, [])
        return (*render(image_id, opacity, [], user), [])

    def next_image(order: str, opacity: float, request: gr.Request) -> tuple:  # type: ignore[type-arg]
        user = signed_in(services, request)
        image_id = services.next_for_review(user, order) if user is not None else None
        return (image_id, *show(image_id, opacity, user), counts_line(services), "")

    def on_load(order: str, opacity: float, request: gr.Request) -> tuple:  # type: ignore[type-arg]
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
                head = next_image(order, opacity, request)
                return (*head[:-1], f"⚠ {exc}")
        return next_image(order, opacity, request)

    def act(action: CorrectionAction):  # type: ignore[no-untyped-def]
        def handler(image_id, state, shown_mask, value, note, order, opacity, request: gr.Request):  # type: ignore[no-untyped-def]
            if image_id is None:
                return (image_id, *EMPTY, [], counts_line(services), "Nothing to save.")
            user = signed_in(services, request)
            keep = (gr.update(),) * 7  # editor, shown mask, overlay, info, history, earlier (2)
            try:
                if user is None:
                    raise PermissionDenied("sign in to save corrections")
                mask = None
                if action is CorrectionAction.corrected:
                    mask = edited_mask(shown_mask, value)
                cid = services.save_correction(
                    image_id,
                    user,
                    action=action.value,
                    mask=mask,
                    based_on=state,
                    note=note or None,
                )
            except SaveConflict as exc:
                # Keep the reviewer's editor as it is; a second save is based on the new state.
                return (
                    image_id,
                    *keep,
                    exc.current.token,
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    counts_line(services),
                    f"⚠ {exc}. Your mask is still in the editor: save again to replace the "
                    "newer version, or take the next image.",
                )
            except (PermissionDenied, StorageError, ValueError) as exc:
                return (
                    image_id,
                    *keep,
                    state,
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    counts_line(services),
                    f"⚠ {exc}",
                )
            head = next_image(order, opacity, request)
            return (
                *head[:-1],
                f"Saved {action.value.replace('_', '-')} for image {image_id} (correction {cid}).",
            )

        return handler

    def add_click(image_id, clicks, polarity, opacity, evt: gr.SelectData, request: gr.Request):  # type: ignore[no-untyped-def]
        if image_id is None:
            return (gr.update(), gr.update(), gr.update(), clicks)
        x, y = evt.index
        clicks = [*clicks, (float(x), float(y), polarity.startswith("defect"))]
        editor_img, mask, overlay_img, *_ = render(
            image_id, opacity, clicks, signed_in(services, request)
        )
        return editor_img, mask, overlay_img, clicks

    def restyle(image_id, opacity, clicks, request: gr.Request):  # type: ignore[no-untyped-def]
        if image_id is None:
            return gr.update()
        return render(image_id, opacity, clicks, signed_in(services, request))[2]

    def clear(image_id, opacity, request: gr.Request):  # type: ignore[no-untyped-def]
        if image_id is None:
            return gr.update(), gr.update(), gr.update(), []
        editor_img, mask, overlay_img, *_ = render(
            image_id, opacity, [], signed_in(services, request)
        )
        return editor_img, mask, overlay_img, []

    def earlier_mask(correction_id: int | None, image_id: int | None) -> Any:
        if correction_id is None or image_id is None:
            return None
        mask = services.correction_mask(image_id, correction_id)
        return None if mask is None else mask.astype(np.uint8) * 255

    # ------------------------------------------------------------------ layout
    current = gr.State(None)
    shown = gr.State(None)  # the mask the editor was opened with: strokes edit it
    state = gr.State(None)  # the image state the shown masks belong to
    clicks = gr.State([])
    with gr.Row():
        order = gr.Radio(
            [(s.label, s.name) for s in STRATEGIES.values()],
            value=DEFAULT_STRATEGY,
            label="Queue order",
            scale=2,
        )
        next_btn = gr.Button("Next image (N)", elem_id="btn-next", scale=1)
        counts_md = gr.Markdown(elem_id="queue-counts")
    with gr.Row():
        with gr.Column(scale=3):
            editor = gr.ImageEditor(
                type="numpy",
                format="png",
                label="Mask — red adds defect, blue marks background, the eraser undoes strokes",
                brush=gr.Brush(
                    colors=list(BRUSH_COLORS),
                    default_color=BRUSH_COLORS[0],
                    color_mode="fixed",
                    default_size=6,
                ),
                eraser=gr.Eraser(default_size=10),
                layers=True,
                transforms=(),
                sources=(),
                elem_id="mask-editor",
                height=560,
            )
        with gr.Column(scale=2):
            overlay_img = gr.Image(
                label="Heatmap overlay — click to refine", interactive=False, elem_id="overlay"
            )
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
        clicks,
        counts_md,
        status_md,
    ]
    page.load(on_load, [order, opacity], review_out)
    next_btn.click(next_image, [order, opacity], review_out, api_name="next_image")
    for button, action in buttons:
        button.click(
            act(action),
            [current, state, shown, editor, note, order, opacity],
            review_out,
            api_name=action.value,
        )
    refine_out = [editor, shown, overlay_img, clicks]
    overlay_img.select(add_click, [current, clicks, polarity, opacity], refine_out)
    opacity.release(restyle, [current, opacity, clicks], overlay_img)
    clear_btn.click(clear, [current, opacity], refine_out)
    earlier.change(earlier_mask, [earlier, current], earlier_img)
