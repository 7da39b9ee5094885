"""What every tab shares: the signed-in user and the one-line summaries."""

from __future__ import annotations

import gradio as gr

from storage.schema import User
from webapp.services import Services

BACKBONE_NOTES = {
    "effnet_lite0": "frozen ImageNet EfficientNet-Lite0 with trained neck, heads and "
    "SAM-architecture decoder (offline default; full SAM needs your checkpoint)",
}


def signed_in(services: Services, request: gr.Request | None) -> User | None:
    """The user Gradio's login let in (None when the page has no login)."""
    name = getattr(request, "username", None) if request is not None else None
    return services.user(name)


def first_model_line(services: Services) -> str:
    """Cold start: how far the labels are from the first model, or its run's status."""
    run = services.first_model_run()
    if run is not None:
        return (
            f"**No model yet:** the first model's training run {run.id} is "
            f"**{run.status.value}**; it is served here as soon as it finishes."
        )
    if services.model_versions():
        return "**No model served yet:** the active model is being loaded."
    p = services.label_progress()
    good = f", plus {p.declared_good} declared good" if p.declared_good else ""
    return (
        f"**No model yet:** {p.labels} of {p.needed} labels collected ({p.defective} "
        f"defective, at least {p.min_defective} needed{good}) — the first model trains "
        "automatically."
    )


def starter_words(starter: dict) -> str:  # type: ignore[type-arg]
    """The starter heads the first model will start from, in words."""
    if starter["state"] == "ready":
        return "The first model will start from the **starter heads** (ready)."
    return (
        f"Preparing the **starter heads** the first model starts from: epoch "
        f"{starter['epoch']} of {starter['epochs']}, {starter['elapsed_s'] / 60:.1f} min so far "
        f"(at most {starter['minutes']:g}) on {starter['images']} built-in synthetic surfaces."
    )


def normality_fit_words(fit: dict) -> str:  # type: ignore[type-arg]
    """The normality refit under way, in words."""
    return (
        f"Fitting the **anomaly maps** to {fit['good_images']} images marked Defect-free: "
        f"{fit['done']} of {fit['total']} input sizes done, {fit['elapsed_s']:.0f} s so far."
    )


def scale_words(status: dict) -> str:  # type: ignore[type-arg]
    """How the served model sees an image, in words."""
    views = f"{status['test_time_views']} view" + ("s" if status["test_time_views"] != 1 else "")
    if status["pixel_scale"] == "fit":
        return f"whole image squashed to {status['tile']} px, {views}"
    return f"{status['tile']} px tiles at scale {status['pixel_scale']}, {views}"


def model_line(services: Services) -> str:
    status = services.model_status()
    if status["state"] == "no_model":
        line = first_model_line(services)
    elif status["state"] == "anomaly_only":
        line = (
            f"{first_model_line(services)}\n\nMeanwhile: **anomaly maps** from normality "
            f"model **{status['normality_model']}** (built from "
            f"{status['normality_good_images']} images marked Defect-free, no training)."
        )
    else:
        encoder = status["encoder"]
        note = BACKBONE_NOTES.get(encoder, "Meta's SAM image encoder and decoder, frozen")
        line = (
            f"Model version **{status['served_version']}** · backbone **{encoder}** "
            f"({note}) · {scale_words(status)} · mask threshold "
            f"{status['mask_threshold']:.2f}, smallest defect {status['min_defect_area']} px"
        )
    if status["starter"] and status["state"] != "model":
        line += f"\n\n{starter_words(status['starter'])}"
    if status.get("normality_fit"):
        line += f"\n\n{normality_fit_words(status['normality_fit'])}"
    if status["problem"]:
        line += f"\n\n⚠ {status['problem']}"
    if status.get("anomaly_problem"):
        line += f"\n\n⚠ {status['anomaly_problem']}"
    return line


def counts_line(services: Services) -> str:
    c = services.counts()
    return (
        f"Queue: **{c['pending']}** pending · {c['reviewed']} reviewed · "
        f"{c['skipped']} skipped · {c['images']} images"
    )
