"""The Models tab: versions with their metrics (table and plot), per-type IoU of each
version (plot and table: every number shown is also plotted), promote / roll back, and
training runs with live status and the loss plot of a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr
import pandas as pd

from model.errors import CheckpointError
from storage.errors import StorageError
from storage.schema import ModelVersion, TrainingRun
from webapp.permissions import PermissionDenied
from webapp.services import Services
from webapp.ui.common import model_line, signed_in
from webapp.views import run_history_points, run_rows, version_metric_points, version_rows

VERSION_HEADERS = ["version", "status", "encoder", "parent", "mIoU", "Dice", "empty acc.", "note"]
RUN_HEADERS = [
    "run",
    "status",
    "trigger",
    "started",
    "finished",
    "corrections",
    "version",
    "decision / error",
]

TYPE_HEADERS = ["version", "type", "IoU"]
RUNS_SEARCHED = 1000  # training runs looked through for versions' evaluation reports


def per_type_iou(report: Mapping[str, Any] | None) -> dict[str, float]:
    """{type: IoU} of one evaluation report: the typed decision's pixel IoU per type
    ("types" → "per_type", typed models) when it has one, else the IoU of the images grouped
    by their type ("per_type"). Types without an IoU (defect-free images only) are left
    out; a report with neither has no points."""
    if not report:
        return {}
    typed = report.get("types")
    table = typed.get("per_type") if isinstance(typed, Mapping) else None
    table = table if isinstance(table, Mapping) else report.get("per_type")
    return {
        str(name): round(float(stats["iou"]), 4)
        for name, stats in (table or {}).items()
        if isinstance(stats, Mapping) and isinstance(stats.get("iou"), (int, float))
    }


def version_type_rows(
    versions: Sequence[ModelVersion], runs: Sequence[TrainingRun]
) -> list[list[Any]]:
    """[version, type, IoU] for every version with a per-type breakdown (the plotted numbers,
    as a table): its own metrics' when they carry one, else its training run's holdout
    evaluation."""
    reports = {
        r.model_version_id: (r.metrics or {}).get("candidate_holdout")
        for r in runs
        if r.model_version_id is not None
    }
    rows = []
    for v in sorted(versions, key=lambda v: v.id):
        scores = per_type_iou(v.metrics) or per_type_iou(reports.get(v.id))
        rows.extend([v.id, name, iou] for name, iou in sorted(scores.items()))
    return rows


def build_models(services: Services, page: gr.Blocks, model_md: gr.Markdown) -> None:
    """Lay out the Models tab inside the current `gr.Tab` and wire its events; `model_md`
    is the page's model line, refreshed with the table."""

    def models_view():  # type: ignore[no-untyped-def]
        versions = services.model_versions()
        frame = pd.DataFrame(
            version_metric_points(versions), columns=["version", "metric", "value"]
        )
        choices = [(f"version {v.id} ({v.status.value})", v.id) for v in versions]
        return version_rows(versions), frame, gr.update(choices=choices), model_line(services)

    def types_view():  # type: ignore[no-untyped-def]
        rows = version_type_rows(services.model_versions(), services.training_runs(RUNS_SEARCHED))
        frame = pd.DataFrame(rows, columns=TYPE_HEADERS)
        return rows, frame

    def activate(version_id: int | None, request: gr.Request):  # type: ignore[no-untyped-def]
        if version_id is None:
            return (*models_view(), "Choose a version first.")
        try:
            changed = services.activate(version_id, signed_in(services, request))
        except (PermissionDenied, CheckpointError, StorageError) as exc:
            return (*models_view(), f"⚠ version {version_id} not activated: {exc}")
        if not changed:
            return (*models_view(), f"Version {version_id} is already active.")
        return (
            *models_view(),
            f"Version {version_id} is now active; every serving process swaps to it and "
            "the review queue is re-predicted.",
        )

    def runs_view():  # type: ignore[no-untyped-def]
        runs = services.training_runs(limit=20)
        run = runs[0] if runs else None
        frame = pd.DataFrame(run_history_points(run), columns=["epoch", "series", "value"])
        live = "no training run yet"
        if run is not None:
            live = f"run {run.id}: **{run.status.value}**"
            if run.log_tail:
                live += f" — {run.log_tail.strip().splitlines()[-1]}"
        return run_rows(runs), frame, live

    def retrain_now(request: gr.Request):  # type: ignore[no-untyped-def]
        user = signed_in(services, request)
        try:
            if user is None:
                raise PermissionDenied("sign in as an admin to start training")
            run_id = services.request_training(user, trigger=f"ui:{user.name}")
            message = f"Training run {run_id} started (or already in progress)."
        except PermissionDenied as exc:
            message = f"⚠ {exc}"
        return (*runs_view(), message)

    def cancel_run(request: gr.Request):  # type: ignore[no-untyped-def]
        user = signed_in(services, request)
        try:
            if user is None:
                raise PermissionDenied("sign in as an admin to cancel training")
            run, _ = services.cancel_training(user)
            message = f"Training run {run.id} cancelled; it stops after its current epoch."
        except (PermissionDenied, StorageError) as exc:
            message = f"⚠ {exc}"
        return (*runs_view(), message)

    models_table = gr.Dataframe(headers=VERSION_HEADERS, interactive=False)
    metrics_plot = gr.LinePlot(
        x="version", y="value", color="metric", title="Metrics per model version", height=260
    )
    with gr.Row():
        types_plot = gr.LinePlot(
            x="version",
            y="IoU",
            color="type",
            title="IoU per defect type and model version",
            height=260,
            elem_id="type-iou-plot",
        )
        types_table = gr.Dataframe(
            headers=TYPE_HEADERS, interactive=False, elem_id="type-iou-table"
        )
    with gr.Row():
        version_pick = gr.Dropdown(label="Version", choices=[], elem_id="version-pick")
        activate_btn = gr.Button(
            "Promote / roll back to this version (admin)", elem_id="btn-activate"
        )
        refresh_btn = gr.Button("Refresh")
    models_md = gr.Markdown(elem_id="models-status")
    gr.Markdown("### Training")
    with gr.Row():
        retrain_btn = gr.Button("Retrain now (admin)", elem_id="btn-retrain")
        cancel_btn = gr.Button("Cancel training (admin)", elem_id="btn-cancel")
        live_md = gr.Markdown(elem_id="training-live")
    runs_table = gr.Dataframe(headers=RUN_HEADERS, interactive=False)
    loss_plot = gr.LinePlot(
        x="epoch",
        y="value",
        color="series",
        title="Training loss and validation score of the run",
        height=240,
    )
    timer = gr.Timer(3.0)

    models_out = [models_table, metrics_plot, version_pick, model_md]
    page.load(models_view, None, models_out)
    refresh = refresh_btn.click(models_view, None, models_out, api_name="models")
    types_out = [types_table, types_plot]
    page.load(types_view, None, types_out)
    refresh.then(types_view, None, types_out, api_name="type_metrics")
    activate_btn.click(activate, version_pick, [*models_out, models_md], api_name="activate")
    runs_out = [runs_table, loss_plot, live_md]
    page.load(runs_view, None, runs_out)
    timer.tick(runs_view, None, runs_out)  # live status while a run trains
    retrain_btn.click(retrain_now, None, [*runs_out, models_md], api_name="retrain")
    cancel_btn.click(cancel_run, None, [*runs_out, models_md], api_name="cancel_training")
