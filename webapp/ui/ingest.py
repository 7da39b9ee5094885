"""The Ingest tab: several image files or zip archives, with a progress bar and a
per-file result (stored, duplicate, or refused with the reason)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from storage.errors import StorageError
from webapp.ingest import IngestError, iter_zip_images
from webapp.permissions import PermissionDenied
from webapp.services import Services
from webapp.ui.common import signed_in

FILE_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".zip"]


def build_ingest(services: Services) -> None:
    """Lay out the Ingest tab inside the current `gr.Tab` and wire its events."""

    def ingest(paths: list[str] | None, request: gr.Request, progress=gr.Progress()):  # type: ignore[no-untyped-def]
        rows: list[list[Any]] = []
        if not paths:
            return rows, "Choose image files or zip archives first."
        user = signed_in(services, request)
        if user is None:
            return rows, "⚠ sign in to add images"
        items: list[tuple[str, bytes]] = []
        for path in paths:
            p = Path(path)
            if p.suffix.lower() == ".zip":
                try:
                    per_image = services.settings.max_image_bytes
                    items += list(
                        iter_zip_images(
                            p.read_bytes(),
                            p.name,
                            max_total_bytes=per_image * 20,
                            max_member_bytes=per_image,
                        )
                    )
                except IngestError as exc:
                    rows.append([p.name, f"refused: {exc}", None])
            else:
                items.append((p.name, p.read_bytes()))
        for name, data in progress.tqdm(items, desc="ingesting"):
            try:
                result = services.ingest(data, name, user=user, source="ui")
                status = "duplicate (already stored)" if result.duplicate else "stored"
                rows.append([name, status, result.id])
            except PermissionDenied as exc:
                return rows, f"⚠ {exc}"
            except (IngestError, StorageError) as exc:
                rows.append([name, f"refused: {exc}", None])
        stored = sum(1 for r in rows if r[1] == "stored")
        dup = sum(1 for r in rows if r[1].startswith("duplicate"))
        return rows, f"{stored} stored, {dup} duplicates, {len(rows) - stored - dup} refused."

    files = gr.File(
        file_count="multiple", label="Images (PNG, JPEG, BMP, TIFF) or zip", file_types=FILE_TYPES
    )
    ingest_btn = gr.Button("Ingest", variant="primary")
    ingest_md = gr.Markdown()
    ingest_table = gr.Dataframe(headers=["file", "result", "image id"], interactive=False)
    ingest_btn.click(ingest, files, [ingest_table, ingest_md], api_name="ingest")
