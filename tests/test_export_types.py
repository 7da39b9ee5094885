"""Defect types in exports: COCO categories per region, index masks with types.json, and
the MVTec layout's folder per type, read back by the dataset loader."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from model.dataset import GOOD, discover, load_sample
from model.geometry import Geometry
from model.region_types import UNSPECIFIED
from storage.defect_types import UNSPECIFIED_ID
from storage.repository import Repository
from webapp.export import export_archive, export_zip
from webapp.export_types import TypedRegions, folder_names

H, W = 24, 32


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _read(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(zf.read(name))))


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    out = np.zeros((H, W), bool)
    out[y0:y1, x0:x1] = True
    return out


@dataclass
class Labelled:
    """What the fixture stored: type ids by name, and per image its mask, the expected
    index mask (one type per region) and the expected MVTec folder."""

    repo: Repository
    type_ids: dict[str, int]
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    index: dict[int, np.ndarray] = field(default_factory=dict)
    folder: dict[int, str] = field(default_factory=dict)


def _ingest(repo: Repository, shade: int) -> int:
    image = np.full((H, W, 3), shade, np.uint8)
    return repo.images.ingest_image(_png(image), width=W, height=H, format="PNG").id


@pytest.fixture
def labelled(repo: Repository) -> Labelled:
    """Typed, mixed, untyped and defect-free labels, and types whose names need care."""
    names = ["scratch", "dent", "oil spot", "oil/spot", "Good"]
    type_ids = {UNSPECIFIED: UNSPECIFIED_ID}
    for name in names:
        repo.types.add(name)
        type_ids[name] = repo.types.by_name(name).id
    out = Labelled(repo, type_ids)

    def save(shade: int, regions: list[tuple[np.ndarray, np.ndarray | None, int]], folder: str):
        """regions: (region mask, its stored codes or None, the region's expected type)."""
        image_id = _ingest(repo, shade)
        mask = np.zeros((H, W), bool)
        codes = np.zeros((H, W), np.uint8)
        index = np.zeros((H, W), np.uint8)
        typed = False
        for region, region_codes, expected in regions:
            mask |= region
            if region_codes is not None:
                codes[region] = region_codes[region]
                typed = True
            index[region] = expected
        repo.reviews.save_correction(
            image_id,
            author="a",
            action="corrected",
            mask=mask,
            types=codes if typed else None,
        )
        out.masks[image_id], out.index[image_id], out.folder[image_id] = mask, index, folder
        return image_id

    scratch, dent = type_ids["scratch"], type_ids["dent"]
    small, big = _box(1, 4, 1, 7), _box(10, 20, 2, 10)  # 18 px and 80 px
    mixed = _box(2, 8, 20, 30)  # 60 px: 40 dent, 20 scratch -> dent
    mixed_codes = np.where(_box(2, 8, 20, 30) & ~_box(2, 4, 20, 30), dent, scratch)
    save(
        40,
        [
            (small, np.full((H, W), scratch, np.uint8), scratch),
            (big, np.full((H, W), dent, np.uint8), dent),
            (mixed, mixed_codes.astype(np.uint8), dent),
        ],
        "dent",
    )
    # a large unspecified region and a small scratch: the named type files the image
    save(
        60,
        [
            (big, np.full((H, W), UNSPECIFIED_ID, np.uint8), UNSPECIFIED_ID),
            (small, np.full((H, W), scratch, np.uint8), scratch),
        ],
        "scratch",
    )
    save(80, [(big, None, UNSPECIFIED_ID)], UNSPECIFIED)  # untyped: an old correction
    clean = _ingest(repo, 100)
    repo.reviews.save_correction(clean, author="a", action="defect_free")
    out.masks[clean] = np.zeros((H, W), bool)
    out.index[clean] = np.zeros((H, W), np.uint8)
    out.folder[clean] = GOOD
    oil = np.full((H, W), type_ids["oil spot"], np.uint8)
    save(120, [(small, oil, type_ids["oil spot"])], "oil_spot")
    oil_slash = np.full((H, W), type_ids["oil/spot"], np.uint8)
    save(140, [(small, oil_slash, type_ids["oil/spot"])], f"oil_spot-{type_ids['oil/spot']}")
    good = np.full((H, W), type_ids["Good"], np.uint8)
    save(160, [(big, good, type_ids["Good"])], f"Good-{type_ids['Good']}")
    skipped = _ingest(repo, 180)
    repo.reviews.save_correction(skipped, author="a", action="skipped")
    return out


def test_coco_categories_are_the_types_and_each_region_has_its_own(labelled: Labelled) -> None:
    repo = labelled.repo
    data, count = export_zip(repo, "coco")
    assert count == len(labelled.masks)
    doc = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("annotations.json"))
    expected = [
        {"id": t.id, "name": t.name, "supercategory": "defect", "color": t.color}
        for t in repo.types.list()
    ]
    assert doc["categories"] == expected
    assert {c["name"] for c in doc["categories"]} >= {UNSPECIFIED, "scratch", "dent", "Good"}
    seen = 0
    for image_id, mask in labelled.masks.items():
        anns = [a for a in doc["annotations"] if a["image_id"] == image_id]
        union = np.zeros((H, W), bool)
        for a in anns:
            seg = a["segmentation"]
            region = coco_mask.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            region = region.astype(bool)
            union |= region
            types_inside = np.unique(labelled.index[image_id][region])
            assert types_inside.tolist() == [a["category_id"]], (image_id, a["bbox"])
            seen += 1
        assert (union == mask).all()
    assert seen == 9  # 3 + 2 + 1 + 0 + 1 + 1 + 1 regions
    untyped = [i for i, f in labelled.folder.items() if f == UNSPECIFIED]
    assert {a["category_id"] for a in doc["annotations"] if a["image_id"] in untyped} == {
        UNSPECIFIED_ID
    }


def test_png_export_has_index_masks_and_the_type_table(labelled: Labelled) -> None:
    repo = labelled.repo
    with zipfile.ZipFile(io.BytesIO(export_zip(repo, "png")[0])) as zf:
        table = json.loads(zf.read("types.json"))
        for image_id, mask in labelled.masks.items():
            assert ((_read(zf, f"masks/{image_id}.png") > 0) == mask).all()
            index = _read(zf, f"types/{image_id}.png")
            assert index.dtype == np.uint8 and index.ndim == 2
            np.testing.assert_array_equal(index, labelled.index[image_id])
    assert table == {str(t.id): {"name": t.name, "color": t.color} for t in repo.types.list()}
    assert table[str(labelled.type_ids["dent"])]["name"] == "dent"


def test_mvtec_export_has_a_folder_per_type_that_the_loader_reads(
    labelled: Labelled, tmp_path: Path
) -> None:
    report = export_archive(labelled.repo, "mvtec", tmp_path / "set.zip")
    assert report.exported == len(labelled.masks) and not report.skipped
    with zipfile.ZipFile(report.path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "set")
    expected = {"types.json"}
    for image_id, folder in labelled.folder.items():
        expected.add(f"test/{folder}/{image_id}.png")
        if folder != GOOD:
            expected |= {f"ground_truth/{folder}/{image_id}_mask.png", f"types/{image_id}.png"}
    assert names == expected
    samples = discover(tmp_path / "set")
    assert {int(s.image_path.stem): s.defect_type for s in samples} == labelled.folder
    for sample in samples:
        loaded = load_sample(sample, max(H, W))
        image_id = int(sample.image_path.stem)
        assert (sample.mask_path is None) == (labelled.folder[image_id] == GOOD)
        if sample.mask_path is not None:
            got = np.asarray(Image.open(sample.mask_path)) > 0
            assert (got == labelled.masks[image_id]).all()
            index = np.asarray(Image.open(tmp_path / "set" / "types" / f"{image_id}.png"))
            np.testing.assert_array_equal(index, labelled.index[image_id])
        assert loaded.mask.any() == labelled.masks[image_id].any()


def test_the_loader_reads_the_png_exports_region_types(labelled: Labelled, tmp_path: Path) -> None:
    with zipfile.ZipFile(export_archive(labelled.repo, "png", tmp_path / "set.zip").path) as zf:
        zf.extractall(tmp_path / "set")
    samples = discover(tmp_path / "set")
    assert {int(s.image_path.stem) for s in samples} == set(labelled.masks)
    for sample in samples:
        image_id = int(sample.image_path.stem)
        loaded = load_sample(sample, Geometry(tile=32, scale=1.0))  # native pixels
        assert loaded.types is not None and loaded.types.shape == (H, W)
        assert loaded.type_names == {i: n for n, i in labelled.type_ids.items()}
        np.testing.assert_array_equal(loaded.types, labelled.index[image_id])
        assert (loaded.mask == labelled.masks[image_id]).all()


def test_a_damaged_type_mask_skips_its_image(labelled: Labelled, tmp_path: Path) -> None:
    repo = labelled.repo
    typed = next(i for i, f in labelled.folder.items() if f == "dent")
    sha = repo.reviews.corrections_for(typed)[-1].types_sha256
    assert sha is not None
    repo.blobs.path(sha).write_bytes(b"flipped bits")
    report = export_archive(repo, "png", tmp_path / "set.zip")
    assert [s.image_id for s in report.skipped] == [typed]
    assert report.exported == len(labelled.masks) - 1
    with zipfile.ZipFile(report.path) as zf:
        assert f"types/{typed}.png" not in zf.namelist()


def test_folder_names_are_safe_and_never_collide() -> None:
    folders = folder_names(
        {
            1: UNSPECIFIED,
            2: "oil spot",
            3: "oil/spot",
            4: "OIL SPOT",
            5: "good",
            6: "../..",
            7: "con",
            8: "oil_spot-3",  # the name the third type's collision suffix would take
            9: "Kratzer ä",
        }
    )
    assert folders[1] == UNSPECIFIED
    assert folders[2] == "oil_spot"
    assert folders[3] == "oil_spot-3"
    assert folders[4] == "OIL_SPOT-4"
    assert folders[5] == "good-5"
    assert folders[6] == "type"
    assert folders[7] == "con_"
    assert folders[8] == "oil_spot-3-8"
    assert folders[9] == "Kratzer"
    lowered = [f.casefold() for f in folders.values()]
    assert len(set(lowered)) == len(lowered) and GOOD not in lowered
    assert all(
        f.replace("_", "").replace("-", "").replace(".", "").isalnum() for f in folders.values()
    )


def test_the_dominant_type_prefers_named_types_then_area_then_the_lower_id() -> None:
    labels = np.array([[1, 1, 1, 0, 2, 2, 0, 3, 3]], np.int32)
    assert TypedRegions(labels, [1, 5, 4]).dominant(1) == 4  # tie 2 px each: lower id
    assert TypedRegions(labels, [1, 1, 1]).dominant(1) == 1
    assert TypedRegions(labels, [7, 5, 5]).dominant(1) == 5  # 4 px of 5 beat 3 of 7
    assert TypedRegions(np.zeros((2, 2), np.int32), []).dominant(1) is None
