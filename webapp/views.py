"""JSON and table views of stored rows: one shape for the API and the UI alike."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.schema import Correction, ModelVersion, Promotion, TrainingRun

VERSION_METRICS = ("miou", "dice", "empty_accuracy")


def iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def correction_view(c: Correction) -> dict[str, Any]:
    return {
        "id": c.id,
        "author": c.author,
        "action": c.action.value,
        "note": c.note,
        "created_at": iso(c.created_at),
        "prediction": c.prediction_id,
        "has_mask": c.mask_sha256 is not None,
    }


def version_view(v: ModelVersion) -> dict[str, Any]:
    return {
        "id": v.id,
        "status": v.status.value,
        "encoder": v.encoder_id,
        "parent": v.parent_id,
        "metrics": v.metrics,
        "note": v.note,
        "created_at": iso(v.created_at),
        "activated_at": iso(v.activated_at),
    }


def run_view(run: TrainingRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status.value,
        "trigger": run.trigger,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "corrections_used": run.corrections_used,
        "correction_watermark": run.correction_watermark,
        "metrics": run.metrics,
        "model_version": run.model_version_id,
        "log_tail": run.log_tail,
        "error": run.error,
    }


def promotion_view(p: Promotion) -> dict[str, Any]:
    return {
        "id": p.id,
        "version": p.version_id,
        "previous": p.previous_id,
        "actor": p.actor,
        "created_at": iso(p.created_at),
        "claimed_by": p.claimed_by,
        "finished_at": iso(p.finished_at),
        "repredicted": p.repredicted,
        "outcome": p.outcome,
    }


def metric(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    return round(float(value), 4) if isinstance(value, (int, float)) else None


def history_rows(history: list[Correction]) -> list[list[Any]]:
    """The image's corrections as table rows, oldest first."""
    return [
        [c.id, c.author, c.action.value, c.created_at.strftime("%Y-%m-%d %H:%M:%S"), c.note or ""]
        for c in history
    ]


def version_rows(versions: list[ModelVersion]) -> list[list[Any]]:
    return [
        [
            v.id,
            v.status.value,
            v.encoder_id,
            v.parent_id,
            *(metric(v.metrics, m) for m in VERSION_METRICS),
            v.note or "",
        ]
        for v in versions
    ]


def version_metric_points(versions: list[ModelVersion]) -> list[dict[str, Any]]:
    """(version, metric, value) points for the per-version metrics plot."""
    return [
        {"version": v.id, "metric": name, "value": float(v.metrics[name])}
        for v in versions
        for name in VERSION_METRICS
        if isinstance(v.metrics.get(name), (int, float))
    ]


def run_rows(runs: list[TrainingRun]) -> list[list[Any]]:
    return [
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


def run_history_points(run: TrainingRun | None) -> list[dict[str, Any]]:
    """(epoch, series, value) points of a run's loss and validation score."""
    points: list[dict[str, Any]] = []
    if run is None:
        return points
    for rec in (run.metrics or {}).get("history", []):
        points.append({"epoch": rec["epoch"], "series": "train loss", "value": rec["loss"]})
        if "val_score" in rec:
            points.append({"epoch": rec["epoch"], "series": "val score", "value": rec["val_score"]})
    return points
