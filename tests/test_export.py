"""Exports of the labelled set: PNG masks, COCO RLE and MVTec-AD layout, from corrections
saved without defect types (typed ones: tests/test_export_types.py)."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from model.region_types import UNSPECIFIED
from storage.defect_types import UNSPECIFIED_ID
from storage.repository import Repository
from webapp.export import export_archive, export_zip


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _read(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(zf.read(name))))


@pytest.fixture
def labelled(repo: Repository) -> tuple[Repository, dict[int, np.ndarray]]:
    """Three images: two regions (corrected twice), defect-free, and skipped."""
    masks: dict[int, np.ndarray] = {}
    ids = [
        repo.images.ingest_image(
            _png(np.full((20, 30, 3), i * 40, np.uint8)), width=30, height=20, format="PNG"
        ).id
        for i in range(3)
    ]
    first = np.zeros((20, 30), bool)
    first[2:5, 2:8] = True
    repo.reviews.save_correction(ids[0], author="a", action="corrected", mask=first)
    final = first.copy()
    final[10:15, 20:28] = True  # the newest correction adds a second region
    repo.reviews.save_correction(ids[0], author="b", action="corrected", mask=final)
    masks[ids[0]] = final
    repo.reviews.save_correction(ids[1], author="a", action="defect_free")
    masks[ids[1]] = np.zeros((20, 30), bool)
    repo.reviews.save_correction(ids[2], author="a", action="skipped")
    return repo, masks


def test_coco_rle_decodes_to_the_newest_masks(labelled) -> None:  # type: ignore[no-untyped-def]
    repo, masks = labelled
    data, count = export_zip(repo, "coco")
    assert count == 2
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        doc = json.loads(zf.read("annotations.json"))
        assert {im["file_name"] for im in doc["images"]} <= set(zf.namelist())
    assert {im["id"] for im in doc["images"]} == set(masks)
    for image_id, expected in masks.items():
        anns = [a for a in doc["annotations"] if a["image_id"] == image_id]
        union = np.zeros_like(expected)
        for a in anns:
            rle = {
                "size": a["segmentation"]["size"],
                "counts": a["segmentation"]["counts"].encode(),
            }
            union |= coco_mask.decode(rle).astype(bool)
        assert (union == expected).all()
        assert len(anns) == (2 if expected.any() else 0)
    # corrections saved without a type mask: every region is the unspecified type
    assert {a["category_id"] for a in doc["annotations"]} == {UNSPECIFIED_ID}
    unspecified = {"id": UNSPECIFIED_ID, "name": UNSPECIFIED, "supercategory": "defect"}
    assert [{k: c[k] for k in unspecified} for c in doc["categories"]] == [unspecified]
    assert set(doc) == {"info", "images", "annotations", "categories"}


def test_png_and_mvtec_layouts(labelled) -> None:  # type: ignore[no-untyped-def]
    repo, masks = labelled
    defect_id, clean_id = list(masks)
    with zipfile.ZipFile(io.BytesIO(export_zip(repo, "png")[0])) as zf:
        got = np.asarray(Image.open(io.BytesIO(zf.read(f"masks/{defect_id}.png")))) > 0
        assert (got == masks[defect_id]).all()
        assert f"images/{clean_id}.png" in zf.namelist()
        untyped = _read(zf, f"types/{defect_id}.png")
        assert (untyped == np.where(masks[defect_id], UNSPECIFIED_ID, 0)).all()
        assert not _read(zf, f"types/{clean_id}.png").any()
        table = json.loads(zf.read("types.json"))
    assert {k: v["name"] for k, v in table.items()} == {str(UNSPECIFIED_ID): UNSPECIFIED}
    with zipfile.ZipFile(io.BytesIO(export_zip(repo, "mvtec")[0])) as zf:
        names = set(zf.namelist())
    assert {
        f"test/{UNSPECIFIED}/{defect_id}.png",
        f"ground_truth/{UNSPECIFIED}/{defect_id}_mask.png",
        f"types/{defect_id}.png",
        "types.json",
        f"test/good/{clean_id}.png",
    } == names
    with pytest.raises(ValueError, match="export format"):
        export_zip(repo, "xml")


def _third_labelled(repo: Repository) -> int:
    image_id = repo.images.ingest_image(
        _png(np.full((20, 30, 3), 200, np.uint8)), width=30, height=20, format="PNG"
    ).id
    mask = np.zeros((20, 30), bool)
    mask[1:3, 1:3] = True
    repo.reviews.save_correction(image_id, author="c", action="corrected", mask=mask)
    return image_id


@pytest.mark.parametrize("fmt", ["png", "coco", "mvtec"])
def test_damaged_and_missing_blobs_are_skipped_and_reported(  # type: ignore[no-untyped-def]
    labelled, tmp_path: Path, fmt: str
) -> None:
    repo, masks = labelled
    defect_id, clean_id = list(masks)
    kept = _third_labelled(repo)
    mask_sha = repo.reviews.corrections_for(defect_id)[-1].mask_sha256
    repo.blobs.path(mask_sha).write_bytes(b"flipped bits")  # hash no longer matches
    repo.blobs.path(repo.images.get_image(clean_id).sha256).unlink()  # image blob gone
    out = tmp_path / "out"
    out.mkdir()
    report = export_archive(repo, fmt, out / "set.zip")
    assert report.exported == 1 and report.path == out / "set.zip"
    reasons = {s.image_id: s.reason for s in report.skipped}
    assert set(reasons) == {defect_id, clean_id}
    assert "damaged" in reasons[defect_id] and "missing" in reasons[clean_id]
    with zipfile.ZipFile(report.path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        if fmt == "coco":
            doc = json.loads(zf.read("annotations.json"))
            assert [im["id"] for im in doc["images"]] == [kept]
            assert {a["image_id"] for a in doc["annotations"]} == {kept}
    assert any(f"/{kept}." in n for n in names)
    assert not any(f"/{defect_id}" in n or f"/{clean_id}." in n for n in names)
    assert os.listdir(out) == ["set.zip"]


def test_no_temporary_files_or_folders_are_left_behind(  # type: ignore[no-untyped-def]
    labelled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, masks = labelled
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    data, count = export_zip(repo, "png")
    assert count == len(masks) and zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    assert os.listdir(scratch) == []
    taken = tmp_path / "dest"
    (taken / "set.zip").mkdir(parents=True)  # the destination cannot be replaced
    with pytest.raises(OSError):
        export_archive(repo, "coco", taken / "set.zip")
    assert os.listdir(taken) == ["set.zip"]
