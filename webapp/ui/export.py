"""The Export tab: the labelled set as PNG masks, COCO JSON (RLE) or the MVTec-AD layout."""

from __future__ import annotations

import gradio as gr

from webapp.permissions import PermissionDenied
from webapp.services import Services
from webapp.ui.common import signed_in

FORMATS = {"PNG masks": "png", "COCO JSON (RLE)": "coco", "MVTec-AD layout": "mvtec"}


def build_export(services: Services) -> None:
    """Lay out the Export tab inside the current `gr.Tab` and wire its events."""

    def export(fmt: str, request: gr.Request):  # type: ignore[no-untyped-def]
        try:
            report = services.export(signed_in(services, request), FORMATS[fmt])
        except PermissionDenied as exc:
            return None, f"⚠ {exc}"
        message = f"Exported {report.exported} labelled images ({fmt})."
        if report.skipped:
            lines = "\n".join(f"- image {s.image_id}: {s.reason}" for s in report.skipped)
            message += f"\n\n⚠ {len(report.skipped)} left out:\n{lines}"
        return str(report.path), message

    fmt = gr.Radio(list(FORMATS), value="COCO JSON (RLE)", label="Format")
    export_btn = gr.Button("Export labelled images", elem_id="btn-export")
    export_file = gr.File(label="Download")
    export_md = gr.Markdown(elem_id="export-status")
    export_btn.click(export, fmt, [export_file, export_md], api_name="export")
