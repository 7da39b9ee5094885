"""The Ingest tab: several image files or zip archives, with a progress bar and a
per-file result (stored, duplicate, or refused with the reason)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from storage.errors import StorageError
from storage.schema import User
from webapp.cold_start import GOOD, GOOD_NOTE
from webapp.ingest import IngestError, iter_zip_images
from webapp.permissions import PermissionDenied
from webapp.services import Services
from webapp.ui.common import signed_in

FILE_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".zip"]
ARCHIVE_LIMIT_IMAGES = 20  # an archive may unpack to at most this many maximum-size images


def _files(path: Path, per_image: int) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of an uploaded file, or of each image in an uploaded zip archive."""
    if path.suffix.lower() != ".zip":
        yield path.name, path.read_bytes()
        return
    yield from iter_zip_images(
        path.read_bytes(),
        path.name,
        max_total_bytes=per_image * ARCHIVE_LIMIT_IMAGES,
        max_member_bytes=per_image,
    )


def _ingest_one(
    services: Services, user: User, name: str, data: bytes, label: str | None
) -> list[Any]:
    """One table row: the file, what happened to it, and its image id."""
    try:
        result = services.ingest(data, name, user=user, source="ui", label=label)
    except (IngestError, StorageError) as exc:
        return [name, f"refused: {exc}", None]
    what = "duplicate (already stored)" if result.duplicate else "stored"
    if result.labelled:
        what += f" · {GOOD_NOTE}"
    return [name, what, result.id]


def build_ingest(services: Services) -> None:
    """Lay out the Ingest tab inside the current `gr.Tab` and wire its events."""

    def ingest(paths: list[str] | None, good: bool, request: gr.Request, progress=gr.Progress()):  # type: ignore[no-untyped-def]
        rows: list[list[Any]] = []
        if not paths:
            return rows, "Choose image files or zip archives first."
        user = signed_in(services, request)
        if user is None:
            return rows, "⚠ sign in to add images"
        per_image = services.settings.max_image_bytes
        for done, path in enumerate(paths):
            p = Path(path)
            progress(done / len(paths), desc=f"ingesting {p.name}")
            # One image in memory at a time: archive members are unpacked as they are stored.
            try:
                for name, data in _files(p, per_image):
                    rows.append(_ingest_one(services, user, name, data, GOOD if good else None))
            except PermissionDenied as exc:
                return rows, f"⚠ {exc}"
            except IngestError as exc:  # the archive itself (its members stored so far stay)
                rows.append([p.name, f"refused: {exc}", None])
        stored = sum(1 for r in rows if r[1].startswith("stored"))
        dup = sum(1 for r in rows if r[1].startswith("duplicate"))
        summary = f"{stored} stored, {dup} duplicates, {len(rows) - stored - dup} refused."
        labelled = sum(1 for r in rows if r[1].endswith(GOOD_NOTE))
        return rows, summary + (f" {labelled} labelled defect-free." if good else "")

    files = gr.File(
        file_count="multiple", label="Images (PNG, JPEG, BMP, TIFF) or zip", file_types=FILE_TYPES
    )
    good = gr.Checkbox(
        label="These images are known good (defect-free)",
        info="Stored as labels (needs the review permission) and kept out of the queue.",
        elem_id="ingest-good",
    )
    ingest_btn = gr.Button("Ingest", variant="primary")
    ingest_md = gr.Markdown()
    ingest_table = gr.Dataframe(headers=["file", "result", "image id"], interactive=False)
    ingest_btn.click(ingest, [files, good], [ingest_table, ingest_md], api_name="ingest")
