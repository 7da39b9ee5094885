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


def model_line(services: Services) -> str:
    status = services.model_status()
    if status["state"] == "no_model":
        line = (
            "**No model yet.** Review works without one: label images (Save correction, "
            "Defect-free); the first model trains from your labels and is served here "
            "automatically."
        )
    else:
        encoder = status["encoder"]
        note = BACKBONE_NOTES.get(encoder, "Meta's SAM image encoder and decoder, frozen")
        line = (
            f"Model version **{status['served_version']}** · backbone **{encoder}** "
            f"({note}) · mask threshold {status['mask_threshold']:.2f}, "
            f"smallest defect {status['min_defect_area']} px"
        )
    if status["problem"]:
        line += f"\n\n⚠ {status['problem']}"
    return line


def counts_line(services: Services) -> str:
    c = services.counts()
    return (
        f"Queue: **{c['pending']}** pending · {c['reviewed']} reviewed · "
        f"{c['skipped']} skipped · {c['images']} images"
    )
