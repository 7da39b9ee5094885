"""The Gradio UI: one module per tab, each with its own `build_…(services)`.

Callbacks are thin: they read the signed-in user from `gr.Request`, call `Services`, and
render. Permissions, prediction and storage live behind the services.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from webapp.services import Services
from webapp.ui.common import model_line
from webapp.ui.export import build_export
from webapp.ui.ingest import build_ingest
from webapp.ui.models import build_models
from webapp.ui.review import build_review

STATIC = Path(__file__).resolve().parents[2] / "static"


def build_ui(services: Services) -> gr.Blocks:
    """The whole application page."""
    with gr.Blocks(title="HeatPrompt") as page:
        gr.Markdown("## HeatPrompt — surface-defect review")
        model_md = gr.Markdown(model_line(services), elem_id="model-line")
        with gr.Tab("Review"):
            build_review(services, page)
        with gr.Tab("Ingest"):
            build_ingest(services)
        with gr.Tab("Models"):
            build_models(services, page, model_md)
        with gr.Tab("Export"):
            build_export(services)
    return page


def page_head() -> str:
    """<head> additions: keyboard shortcuts."""
    return f"<script>{(STATIC / 'shortcuts.js').read_text()}</script>"


def page_css() -> str:
    return (STATIC / "heatprompt.css").read_text()
