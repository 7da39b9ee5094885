"""Export of the labelled set (the newest non-skipped correction of each image) as a zip:
PNG masks, COCO JSON with RLE (pycocotools), or the MVTec-AD layout."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime, timezone

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from storage.masks import decode_mask
from storage.repository import LabelledImage, Repository

FORMATS = ("png", "coco", "mvtec")
_EXT = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "TIFF": "tif", "MPO": "jpg"}


def _mask_of(repo: Repository, item: LabelledImage) -> np.ndarray:
    sha = item.correction.mask_sha256
    if sha is None:
        return np.zeros((item.image.height, item.image.width), dtype=bool)
    return decode_mask(repo.blobs.get(sha))


def _png(mask: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    assert ok
    return buf.tobytes()


def coco_document(repo: Repository, items: list[LabelledImage]) -> dict:
    """COCO instances JSON: one annotation per connected defect region, RLE-encoded."""
    images, annotations = [], []
    for item in items:
        img = item.image
        name = f"images/{img.id}.{_EXT.get(img.format, 'png')}"
        images.append(
            {
                "id": img.id,
                "file_name": name,
                "width": img.width,
                "height": img.height,
                "sha256": img.sha256,
            }
        )
        mask = _mask_of(repo, item)
        count, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        for region in range(1, count):
            part = np.asfortranarray((regions == region).astype(np.uint8))
            rle = coco_mask.encode(part)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img.id,
                    "category_id": 1,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "area": float(coco_mask.area(rle)),
                    "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                    "iscrowd": 0,
                    "correction_id": item.correction.id,
                    "author": item.correction.author,
                }
            )
    return {
        "info": {
            "description": "HeatPrompt export",
            "date_created": datetime.now(timezone.utc).isoformat(),
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "defect", "supercategory": "defect"}],
    }


def export_zip(repo: Repository, fmt: str) -> tuple[bytes, int]:
    """The export archive and the number of images in it."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    items = repo.labelled_since(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if fmt == "coco":
            zf.writestr("annotations.json", json.dumps(coco_document(repo, items)))
        for item in items:
            img = item.image
            ext = _EXT.get(img.format, "png")
            data = repo.blobs.get(img.sha256)
            mask = _mask_of(repo, item)
            if fmt == "coco":
                zf.writestr(f"images/{img.id}.{ext}", data)
            elif fmt == "png":
                zf.writestr(f"images/{img.id}.{ext}", data)
                zf.writestr(f"masks/{img.id}.png", _png(mask))
            else:
                kind = "defect" if mask.any() else "good"
                zf.writestr(f"test/{kind}/{img.id}.{ext}", data)
                if mask.any():
                    zf.writestr(f"ground_truth/defect/{img.id}_mask.png", _png(mask))
    return buf.getvalue(), len(items)
