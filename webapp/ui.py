"""The Gradio UI: Review, Ingest, Models and Export tabs.

Callbacks are thin: they read the signed-in user from `gr.Request`, call `Services`, and
render. Heavy lifting (prediction, storage) lives in the services.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from model.predict import Click
from model.visualize import overlay as render_overlay
from storage.errors import StorageError
from storage.masks import decode_mask
from storage.schema import CorrectionAction, User
from webapp.editor_masks import editor_mask, editor_value
from webapp.export import export_zip
from webapp.ingest import IngestError, iter_zip_images
from webapp.services import PermissionDenied, Services

STATIC = Path(__file__).resolve().parents[1] / "static"
BACKBONE_NOTES = {
    "effnet_lite0": "frozen ImageNet EfficientNet-Lite0 with trained neck, heads and "
    "SAM-architecture decoder (offline default; full SAM needs your checkpoint)",
}
EMPTY_REVIEW = (None, None, "Queue is empty.", [], gr.update(choices=[]), None, [])


def _user(services: Services, request: gr.Request | None) -> User | None:
    name = getattr(request, "username", None) if request is not None else None
    if not name:
        return None
    try:
        return services.accounts.get_user(name)
    except StorageError:
        return None


def _model_line(services: Services) -> str:
    served = services.models.current
    if served is None:
        return "**No model loaded.** Train one with `heatprompt train` and restart."
    meta = served.predictor.bundle.meta
    note = BACKBONE_NOTES.get(meta.encoder_id, "Meta's SAM image encoder and decoder, frozen")
    return (
        f"Model version **{served.version_id}** · backbone **{meta.encoder_id}** "
        f"({note}) · mask threshold {meta.mask_threshold:.2f}, "
        f"smallest defect {meta.min_defect_area} px"
    )


def _counts_line(services: Services) -> str:
    c = services.repo.counts()
    return (
        f"Queue: **{c['pending']}** pending · {c['reviewed']} reviewed · "
        f"{c['skipped']} skipped · {c['images']} images"
    )


def build_ui(services: Services) -> gr.Blocks:
    """The whole application page."""
    repo = services.repo

    def render(image_id: int, opacity: float, clicks: list[tuple[float, float, bool]]):  # type: ignore[no-untyped-def]
        rgb = services.image_rgb(image_id)
        view = services.image_view(image_id)
        pred = view["prediction"]
        if clicks:
            refined = services.predict_image(
                image_id, rgb, clicks=tuple(Click(x, y, p) for x, y, p in clicks), store=False
            )
            mask, heat = refined.mask, refined.heatmap
        elif pred is not None:
            mask, heat = services.mask(image_id), services.heatmap(image_id)
        else:
            refined = services.predict_image(image_id, rgb)
            mask, heat = refined.mask, refined.heatmap
            view = services.image_view(image_id)
            pred = view["prediction"]
        info = (
            f"**Image {image_id}** ({view['width']}×{view['height']} {view['format']}, "
            f"{view['status']}) · model version {pred['model_version']} · defect score "
            f"**{pred['defect_score']:.3f}** · uncertainty **{pred['uncertainty']:.3f}**"
            f" · link: `?image={image_id}`"
        )
        history = [
            [
                c.id,
                c.author,
                c.action.value,
                c.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                c.note or "",
            ]
            for c in repo.corrections_for(image_id)
        ]
        choices = [(f"#{row[0]} {row[2]} by {row[1]}", row[0]) for row in history]
        return (
            editor_value(rgb, mask),
            render_overlay(rgb, heat, mask, opacity=opacity),
            info,
            history,
            gr.update(choices=choices, value=None),
            None,
        )

    def show(image_id: int | None, opacity: float, clicks: list):  # type: ignore[no-untyped-def]
        if image_id is None:
            return EMPTY_REVIEW
        return (*render(image_id, opacity, clicks), clicks)

    def next_image(order: str, opacity: float, request: gr.Request):  # type: ignore[no-untyped-def]
        user = _user(services, request)
        image = repo.next_for_review(
            user.name if user else "anonymous",
            order=order,
            lease_seconds=services.settings.lease_seconds,
        )
        image_id = image.id if image else None
        return (image_id, *show(image_id, opacity, []), _counts_line(services), "")

    def on_load(order: str, opacity: float, request: gr.Request):  # type: ignore[no-untyped-def]
        wanted = request.query_params.get("image") if request is not None else None
        if wanted and wanted.isdigit():
            try:
                image_id = repo.get_image(int(wanted)).id
                return (
                    image_id,
                    *show(image_id, opacity, []),
                    _counts_line(services),
                    f"Opened image {image_id} from its link.",
                )
            except StorageError as exc:
                head = next_image(order, opacity, request)
                return (*head[:-1], f"⚠ {exc}")
        return next_image(order, opacity, request)

    def act(action: str):  # type: ignore[no-untyped-def]
        def handler(image_id, value, note, order, opacity, request: gr.Request):  # type: ignore[no-untyped-def]
            if image_id is None:
                return (image_id, *EMPTY_REVIEW, _counts_line(services), "Nothing to save.")
            user = _user(services, request)
            try:
                if user is None:
                    raise PermissionDenied("sign in to save corrections")
                image = repo.get_image(image_id)
                mask = None
                if action in (CorrectionAction.corrected.value, CorrectionAction.accepted.value):
                    mask = editor_mask(value, (image.height, image.width))
                cid = services.save_correction(
                    image_id, user, action=action, mask=mask, note=note or None
                )
            except (PermissionDenied, StorageError) as exc:
                return (image_id, *show(image_id, opacity, []), _counts_line(services), f"⚠ {exc}")
            head = next_image(order, opacity, request)
            return (
                *head[:-1],
                f"Saved {action.replace('_', '-')} for image {image_id} (correction {cid}).",
            )

        return handler

    def add_click(image_id, clicks, polarity, opacity, evt: gr.SelectData):  # type: ignore[no-untyped-def]
        if image_id is None:
            return (gr.update(), gr.update(), clicks)
        x, y = evt.index
        clicks = [*clicks, (float(x), float(y), polarity.startswith("defect"))]
        editor, overlay_img, *_ = render(image_id, opacity, clicks)
        return editor, overlay_img, clicks

    def restyle(image_id, opacity, clicks):  # type: ignore[no-untyped-def]
        if image_id is None:
            return gr.update()
        return render(image_id, opacity, clicks)[1]

    def clear(image_id, opacity):  # type: ignore[no-untyped-def]
        if image_id is None:
            return gr.update(), gr.update(), []
        editor, overlay_img, *_ = render(image_id, opacity, [])
        return editor, overlay_img, []

    def earlier_mask(correction_id: int | None, image_id: int | None):  # type: ignore[no-untyped-def]
        if correction_id is None or image_id is None:
            return None
        for c in repo.corrections_for(image_id):
            if c.id == correction_id and c.mask_sha256:
                return decode_mask(repo.blobs.get(c.mask_sha256)).astype(np.uint8) * 255
        return None

    # ------------------------------------------------------------------ ingest
    def ingest(paths: list[str] | None, progress=gr.Progress()):  # type: ignore[no-untyped-def]
        rows: list[list[Any]] = []
        if not paths:
            return rows, "Choose image files or zip archives first."
        items: list[tuple[str, bytes]] = []
        for path in paths:
            p = Path(path)
            data = p.read_bytes()
            if p.suffix.lower() == ".zip":
                try:
                    limit = services.settings.max_image_bytes * 20
                    items += list(iter_zip_images(data, p.name, max_total_bytes=limit))
                except IngestError as exc:
                    rows.append([p.name, f"refused: {exc}", None])
            else:
                items.append((p.name, data))
        for name, data in progress.tqdm(items, desc="ingesting"):
            try:
                result = services.ingest(data, name, source="ui")
                rows.append(
                    [
                        name,
                        "duplicate (already stored)" if result.duplicate else "stored",
                        result.id,
                    ]
                )
            except (IngestError, StorageError) as exc:
                rows.append([name, f"refused: {exc}", None])
        stored = sum(1 for r in rows if r[1] == "stored")
        dup = sum(1 for r in rows if r[1].startswith("duplicate"))
        return rows, f"{stored} stored, {dup} duplicates, {len(rows) - stored - dup} refused."

    # ------------------------------------------------------------------ models
    def models_view():  # type: ignore[no-untyped-def]
        versions = repo.model_versions()
        table = [
            [
                v.id,
                v.status.value,
                v.encoder_id,
                v.parent_id,
                _metric(v.metrics, "miou"),
                _metric(v.metrics, "dice"),
                _metric(v.metrics, "empty_accuracy"),
                v.note or "",
            ]
            for v in versions
        ]
        points = [
            {"version": v.id, "metric": name, "value": float(v.metrics[name])}
            for v in versions
            for name in ("miou", "dice", "empty_accuracy")
            if isinstance(v.metrics.get(name), (int, float))
        ]
        frame = pd.DataFrame(points, columns=["version", "metric", "value"])
        choices = [(f"version {v.id} ({v.status.value})", v.id) for v in versions]
        return table, frame, gr.update(choices=choices), _model_line(services)

    def activate(version_id: int | None, request: gr.Request):  # type: ignore[no-untyped-def]
        user = _user(services, request)
        if user is None or user.role.value != "admin":
            return (*models_view(), "⚠ Only admins can promote or roll back models.")
        if version_id is None:
            return (*models_view(), "Choose a version first.")
        versions = {v.id: v for v in repo.model_versions()}
        try:
            services.models.load(versions[version_id].checkpoint_path, version_id)
            repo.activate(version_id)
        except Exception as exc:  # shown to the admin; the served model is unchanged
            return (*models_view(), f"⚠ version {version_id} not activated: {exc}")
        return (*models_view(), f"Version {version_id} is now active.")

    # ------------------------------------------------------------------ training runs
    def runs_view(selected: int | None = None):  # type: ignore[no-untyped-def]
        runs = repo.training_runs(limit=20)
        table = [
            [
                r.id,
                r.status.value,
                r.trigger,
                r.started_at.strftime("%H:%M:%S") if r.started_at else "",
                r.finished_at.strftime("%H:%M:%S") if r.finished_at else "",
                r.corrections_used,
                r.model_version_id,
                (r.metrics or {}).get("decision") or r.error or "",
            ]
            for r in runs
        ]
        run = next((r for r in runs if r.id == selected), runs[0] if runs else None)
        points = []
        if run is not None:
            for rec in (run.metrics or {}).get("history", []):
                points.append({"epoch": rec["epoch"], "series": "train loss", "value": rec["loss"]})
                if "val_score" in rec:
                    points.append(
                        {"epoch": rec["epoch"], "series": "val score", "value": rec["val_score"]}
                    )
        frame = pd.DataFrame(points, columns=["epoch", "series", "value"])
        live = "no training run yet"
        if run is not None:
            live = f"run {run.id}: **{run.status.value}**"
            if run.log_tail:
                live += f" — {run.log_tail.strip().splitlines()[-1]}"
        return table, frame, live

    def retrain_now(request: gr.Request):  # type: ignore[no-untyped-def]
        user = _user(services, request)
        try:
            if user is None:
                raise PermissionDenied("sign in as an admin to start training")
            run_id = services.request_training(user, trigger=f"ui:{user.name}")
            message = f"Training run {run_id} started (or already in progress)."
        except PermissionDenied as exc:
            message = f"⚠ {exc}"
        return (*runs_view(), message)

    def cancel_run(request: gr.Request):  # type: ignore[no-untyped-def]
        user = _user(services, request)
        running = repo.active_training_run()
        if user is None or user.role.value != "admin":
            message = "⚠ Only admins can cancel training."
        elif running is None:
            message = "No training run is queued or running."
        else:
            repo.cancel_training_run(running.id)
            message = f"Training run {running.id} cancelled; it stops after its current epoch."
        return (*runs_view(), message)

    # ------------------------------------------------------------------ export
    def export(fmt: str):  # type: ignore[no-untyped-def]
        code = {"PNG masks": "png", "COCO JSON (RLE)": "coco", "MVTec-AD layout": "mvtec"}[fmt]
        data, count = export_zip(repo, code)
        out = Path(tempfile.mkdtemp(prefix="heatprompt-export-")) / f"heatprompt-{code}.zip"
        out.write_bytes(data)
        return str(out), f"Exported {count} labelled images ({fmt})."

    # ------------------------------------------------------------------ layout
    with gr.Blocks(title="HeatPrompt") as ui:
        current = gr.State(None)
        clicks = gr.State([])
        gr.Markdown("## HeatPrompt — surface-defect review")
        model_md = gr.Markdown(_model_line(services), elem_id="model-line")
        with gr.Tab("Review"):
            with gr.Row():
                order = gr.Radio(
                    ["uncertainty", "arrival"], value="uncertainty", label="Queue order", scale=2
                )
                next_btn = gr.Button("Next image (N)", elem_id="btn-next", scale=1)
                counts_md = gr.Markdown(elem_id="queue-counts")
            with gr.Row():
                with gr.Column(scale=3):
                    editor = gr.ImageEditor(
                        type="numpy",
                        format="png",
                        label="Mask — paint defect, erase background",
                        brush=gr.Brush(colors=["#ff0040"], color_mode="fixed", default_size=6),
                        eraser=gr.Eraser(default_size=10),
                        layers=True,
                        transforms=(),
                        sources=(),
                        elem_id="mask-editor",
                        height=560,
                    )
                with gr.Column(scale=2):
                    overlay_img = gr.Image(
                        label="Heatmap overlay — click to refine",
                        interactive=False,
                        elem_id="overlay",
                    )
                    opacity = gr.Slider(0, 1, value=0.45, step=0.05, label="Heatmap opacity")
                    with gr.Row():
                        polarity = gr.Radio(
                            ["defect (+)", "background (−)"],
                            value="defect (+)",
                            label="Refine click",
                        )
                        clear_btn = gr.Button("Clear clicks")
                    info_md = gr.Markdown(elem_id="image-info")
            note = gr.Textbox(label="Note (optional)", max_lines=1)
            with gr.Row():
                accept_btn = gr.Button("Accept (A)", variant="primary", elem_id="btn-accept")
                save_btn = gr.Button("Save correction (S)", elem_id="btn-save")
                free_btn = gr.Button("Defect-free (D)", elem_id="btn-defect-free")
                skip_btn = gr.Button("Skip (K)", elem_id="btn-skip")
            status_md = gr.Markdown(elem_id="review-status")
            with gr.Accordion("History of this image", open=False):
                history = gr.Dataframe(
                    headers=["correction", "author", "action", "time", "note"],
                    interactive=False,
                    elem_id="history",
                )
                earlier = gr.Dropdown(label="View an earlier mask", choices=[])
                earlier_img = gr.Image(label="Earlier mask", interactive=False)
        with gr.Tab("Ingest"):
            files = gr.File(
                file_count="multiple",
                label="Images (PNG, JPEG, BMP, TIFF) or zip",
                file_types=[".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".zip"],
            )
            ingest_btn = gr.Button("Ingest", variant="primary")
            ingest_md = gr.Markdown()
            ingest_table = gr.Dataframe(headers=["file", "result", "image id"], interactive=False)
        with gr.Tab("Models"):
            models_table = gr.Dataframe(
                headers=[
                    "version",
                    "status",
                    "encoder",
                    "parent",
                    "mIoU",
                    "Dice",
                    "empty acc.",
                    "note",
                ],
                interactive=False,
            )
            metrics_plot = gr.LinePlot(
                x="version",
                y="value",
                color="metric",
                title="Metrics per model version",
                height=260,
            )
            with gr.Row():
                version_pick = gr.Dropdown(label="Version", choices=[])
                activate_btn = gr.Button("Promote / roll back to this version (admin)")
                refresh_btn = gr.Button("Refresh")
            models_md = gr.Markdown()
            gr.Markdown("### Training")
            with gr.Row():
                retrain_btn = gr.Button("Retrain now (admin)", elem_id="btn-retrain")
                cancel_btn = gr.Button("Cancel training (admin)", elem_id="btn-cancel")
                live_md = gr.Markdown(elem_id="training-live")
            runs_table = gr.Dataframe(
                headers=[
                    "run",
                    "status",
                    "trigger",
                    "started",
                    "finished",
                    "corrections",
                    "version",
                    "decision / error",
                ],
                interactive=False,
            )
            loss_plot = gr.LinePlot(
                x="epoch",
                y="value",
                color="series",
                title="Training loss and validation score of the run",
                height=240,
            )
            timer = gr.Timer(3.0)
        with gr.Tab("Export"):
            fmt = gr.Radio(
                ["PNG masks", "COCO JSON (RLE)", "MVTec-AD layout"],
                value="COCO JSON (RLE)",
                label="Format",
            )
            export_btn = gr.Button("Export labelled images")
            export_file = gr.File(label="Download")
            export_md = gr.Markdown()

        review_out = [
            current,
            editor,
            overlay_img,
            info_md,
            history,
            earlier,
            earlier_img,
            clicks,
            counts_md,
            status_md,
        ]
        ui.load(on_load, [order, opacity], review_out)
        next_btn.click(next_image, [order, opacity], review_out, api_name="next_image")
        for button, action in (
            (accept_btn, "accepted"),
            (save_btn, "corrected"),
            (free_btn, "defect_free"),
            (skip_btn, "skipped"),
        ):
            button.click(
                act(action), [current, editor, note, order, opacity], review_out, api_name=action
            )
        overlay_img.select(
            add_click, [current, clicks, polarity, opacity], [editor, overlay_img, clicks]
        )
        opacity.release(restyle, [current, opacity, clicks], overlay_img)
        clear_btn.click(clear, [current, opacity], [editor, overlay_img, clicks])
        earlier.change(earlier_mask, [earlier, current], earlier_img)
        ingest_btn.click(ingest, files, [ingest_table, ingest_md], api_name="ingest")
        models_out = [models_table, metrics_plot, version_pick, model_md]
        ui.load(models_view, None, models_out)
        refresh_btn.click(models_view, None, models_out, api_name="models")
        activate_btn.click(activate, version_pick, [*models_out, models_md])
        runs_out = [runs_table, loss_plot, live_md]
        ui.load(runs_view, None, runs_out)
        timer.tick(runs_view, None, runs_out)  # live status while a run trains
        retrain_btn.click(retrain_now, None, [*runs_out, models_md], api_name="retrain")
        cancel_btn.click(cancel_run, None, [*runs_out, models_md], api_name="cancel_training")
        export_btn.click(export, fmt, [export_file, export_md], api_name="export")
    return ui


def _metric(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    return round(float(value), 4) if isinstance(value, (int, float)) else None


def page_head() -> str:
    """<head> additions: keyboard shortcuts."""
    return f"<script>{(STATIC / 'shortcuts.js').read_text()}</script>"


def page_css() -> str:
    return (STATIC / "heatprompt.css").read_text()
