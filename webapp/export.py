"""Export of the labelled set (the newest non-skipped correction of each image) as a zip:
PNG masks, COCO JSON with RLE (pycocotools), or the MVTec-AD layout.

Defect types travel with every format, so the archive is a whole label without the
database: COCO categories are the project's types and each region's annotation names its
type; beside binary masks (PNG and MVTec) lie `types/<stem>.png` index masks (pixel = type
id) and `types.json` ({id: {name, color}}); the MVTec layout has one folder per type,
where an image goes under its dominant type. Corrections saved without a type mask are
"unspecified" wherever a type is needed and otherwise export as they always did.

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

from model.dataset import GOOD
from model.durable import write_atomically
from storage.defect_types import UNSPECIFIED_ID
from storage.errors import StorageError
from storage.masks import decode_mask, decode_type_mask
from storage.repository import Repository
from storage.review_queue import LabelledImage
from webapp.export_types import TypedRegions, TypeTable, folder_names, typed_regions

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


def _codes_of(repo: Repository, item: LabelledImage) -> np.ndarray | None:
    """The correction's type mask; None when it was saved without one (all unspecified)."""
    sha = item.correction.types_sha256
    return None if sha is None else decode_type_mask(repo.blobs.get(sha))


def _png(mask: np.ndarray) -> bytes:
    """A binary mask as a 0/255 PNG."""
    return _index_png(mask.astype(np.uint8) * 255)


def _index_png(values: np.ndarray) -> bytes:
    """A uint8 array as a single-channel PNG, values unchanged."""
    ok, buf = cv2.imencode(".png", values.astype(np.uint8))
    if not ok:
        raise ValueError("could not encode a mask as PNG")
    return buf.tobytes()


def _coco_annotations(item: LabelledImage, regions: TypedRegions, first_id: int) -> list[dict]:
    """One RLE-encoded COCO annotation per connected defect region, its category the
    region's defect type."""
    annotations = []
    for index, type_id in enumerate(regions.type_ids):
        region = regions.region_mask(index).astype(np.uint8)
        rle = coco_mask.encode(np.asfortranarray(region))
        annotations.append(
            {
                "id": first_id + len(annotations),
                "image_id": item.image.id,
                "category_id": type_id,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": float(coco_mask.area(rle)),
                "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                "iscrowd": 0,
                "correction_id": item.correction.id,
                "author": item.correction.author,
            }
        )
    return annotations


@dataclass(frozen=True)
class _Item:
    """One labelled image ready to write: its bytes, binary mask and typed regions."""

    label: LabelledImage
    data: bytes
    mask: np.ndarray
    regions: TypedRegions

    @property
    def image_name(self) -> str:
        img = self.label.image
        return f"{img.id}.{_EXT.get(img.format, 'png')}"


def _write_item(
    zf: zipfile.ZipFile, fmt: str, item: _Item, table: TypeTable, folders: dict[int, str]
) -> None:
    image_id = item.label.image.id
    stored = zipfile.ZIP_STORED  # image files are compressed already
    if fmt in ("png", "coco"):
        zf.writestr(f"images/{item.image_name}", item.data, compress_type=stored)
        if fmt == "png":
            zf.writestr(f"masks/{image_id}.png", _png(item.mask))
            zf.writestr(f"types/{image_id}.png", _index_png(item.regions.index_mask()))
        return
    dominant = item.regions.dominant(table.unspecified_id)
    if dominant is None:
        zf.writestr(f"test/{GOOD}/{item.image_name}", item.data, compress_type=stored)
        return
    folder = folders[dominant]
    zf.writestr(f"test/{folder}/{item.image_name}", item.data, compress_type=stored)
    zf.writestr(f"ground_truth/{folder}/{image_id}_mask.png", _png(item.mask))
    zf.writestr(f"types/{image_id}.png", _index_png(item.regions.index_mask()))


def _coco_image(item: _Item) -> dict[str, Any]:
    img = item.label.image
    return {
        "id": img.id,
        "file_name": f"images/{item.image_name}",
        "width": img.width,
        "height": img.height,
        "sha256": img.sha256,
    }


def _write_archive(repo: Repository, fmt: str, zf: zipfile.ZipFile, report: ExportReport) -> None:
    table = TypeTable.of(repo.types.list(), UNSPECIFIED_ID)
    folders = folder_names(table.names)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for label in repo.reviews.labelled_since(0):
        try:
            data = repo.blobs.get(label.image.sha256)
            mask = _mask_of(repo, label)
            regions = typed_regions(mask, _codes_of(repo, label), table)
        except (StorageError, OSError, ValueError) as exc:  # missing, damaged, undecodable
            report.skipped.append(SkippedItem(label.image.id, str(exc)))
            continue
        item = _Item(label, data, mask, regions)
        _write_item(zf, fmt, item, table, folders)
        report.exported += 1
        if fmt == "coco":
            images.append(_coco_image(item))
            annotations += _coco_annotations(label, regions, len(annotations) + 1)
    if fmt == "coco":
        document = {
            "info": {
                "description": "HeatPrompt export",
                "date_created": datetime.now(timezone.utc).isoformat(),
            },
            "images": images,
            "annotations": annotations,
            "categories": [
                {"id": t.id, "name": t.name, "supercategory": "defect", "color": t.color}
                for t in table.types
            ],
        }
        zf.writestr("annotations.json", json.dumps(document))
    else:
        zf.writestr("types.json", json.dumps(table.as_json(), indent=2))


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
