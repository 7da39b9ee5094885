"""Export of the labelled set (the newest non-skipped correction of each image) as a zip:
PNG masks, COCO JSON with RLE (pycocotools), or the MVTec-AD layout.

The archive is streamed to a temporary file beside its destination and renamed into place
once complete, so memory holds one image at a time and a failed export leaves nothing
behind. An item whose image or mask blob is missing or damaged is skipped and reported;
the rest of the set is still exported.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from model.durable import write_atomically
from storage.errors import StorageError
from storage.masks import decode_mask
from storage.repository import Repository
from storage.review_queue import LabelledImage

FORMATS = ("png", "coco", "mvtec")
_EXT = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "TIFF": "tif", "MPO": "jpg"}


@dataclass(frozen=True)
class SkippedItem:
    """A labelled image left out of an export, and why."""

    image_id: int
    reason: str


@dataclass
class ExportReport:
    """What an export wrote: where, how many images, and what it had to leave out."""

    path: Path
    exported: int = 0
    skipped: list[SkippedItem] = field(default_factory=list)


def _mask_of(repo: Repository, item: LabelledImage) -> np.ndarray:
    sha = item.correction.mask_sha256
    if sha is None:
        return np.zeros((item.image.height, item.image.width), dtype=bool)
    return decode_mask(repo.blobs.get(sha))


def _png(mask: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise ValueError("could not encode a mask as PNG")
    return buf.tobytes()


def _coco_annotations(item: LabelledImage, mask: np.ndarray, first_id: int) -> list[dict]:
    """One RLE-encoded COCO annotation per connected defect region of `mask`."""
    annotations = []
    count, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    for region in range(1, count):
        rle = coco_mask.encode(np.asfortranarray((regions == region).astype(np.uint8)))
        annotations.append(
            {
                "id": first_id + len(annotations),
                "image_id": item.image.id,
                "category_id": 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": float(coco_mask.area(rle)),
                "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                "iscrowd": 0,
                "correction_id": item.correction.id,
                "author": item.correction.author,
            }
        )
    return annotations


def _write_item(
    zf: zipfile.ZipFile, fmt: str, item: LabelledImage, data: bytes, mask: np.ndarray
) -> None:
    img = item.image
    image_name = f"{img.id}.{_EXT.get(img.format, 'png')}"
    stored = zipfile.ZIP_STORED  # image files are compressed already
    if fmt in ("png", "coco"):
        zf.writestr(f"images/{image_name}", data, compress_type=stored)
        if fmt == "png":
            zf.writestr(f"masks/{img.id}.png", _png(mask))
        return
    kind = "defect" if mask.any() else "good"
    zf.writestr(f"test/{kind}/{image_name}", data, compress_type=stored)
    if mask.any():
        zf.writestr(f"ground_truth/defect/{img.id}_mask.png", _png(mask))


def _write_archive(repo: Repository, fmt: str, zf: zipfile.ZipFile, report: ExportReport) -> None:
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for item in repo.reviews.labelled_since(0):
        img = item.image
        try:
            data = repo.blobs.get(img.sha256)
            mask = _mask_of(repo, item)
        except (StorageError, OSError, ValueError) as exc:  # missing, damaged, undecodable
            report.skipped.append(SkippedItem(img.id, str(exc)))
            continue
        _write_item(zf, fmt, item, data, mask)
        report.exported += 1
        if fmt == "coco":
            images.append(
                {
                    "id": img.id,
                    "file_name": f"images/{img.id}.{_EXT.get(img.format, 'png')}",
                    "width": img.width,
                    "height": img.height,
                    "sha256": img.sha256,
                }
            )
            annotations += _coco_annotations(item, mask, len(annotations) + 1)
    if fmt == "coco":
        document = {
            "info": {
                "description": "HeatPrompt export",
                "date_created": datetime.now(timezone.utc).isoformat(),
            },
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "defect", "supercategory": "defect"}],
        }
        zf.writestr("annotations.json", json.dumps(document))


def export_archive(repo: Repository, fmt: str, dest: Path) -> ExportReport:
    """Write the export archive to `dest` (complete or not at all) and report on it."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    report = ExportReport(path=Path(dest))

    def write(fh: BinaryIO) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            _write_archive(repo, fmt, zf, report)

    write_atomically(report.path, write)
    return report


def export_zip(repo: Repository, fmt: str) -> tuple[bytes, int]:
    """The export archive as bytes and its image count (for callers not yet on files)."""
    with tempfile.TemporaryDirectory(prefix="heatprompt-export-") as folder:
        report = export_archive(repo, fmt, Path(folder) / f"heatprompt-{fmt}.zip")
        return report.path.read_bytes(), report.exported
