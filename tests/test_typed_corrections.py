"""Typed masks in storage on SQLite and PostgreSQL: type masks of corrections and
predictions, predicted regions, the queue filtered by predicted type, and the blob
collector and backup knowing the type-mask blobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.backup import create_backup
from storage.defect_types import UNSPECIFIED_ID
from storage.errors import InvalidMaskError, StorageError
from storage.masks import (
    decode_type_mask,
    encode_type_mask,
    validate_type_mask,
)
from storage.repository import Repository
from storage.review_queue import QueueKey
from storage.schema import blob_columns

ARRIVAL = (QueueKey.arrival,)
W, H = 8, 6


def _mask() -> np.ndarray:
    """Two regions: a bar at the top left and a dot at the bottom right."""
    m = np.zeros((H, W), bool)
    m[1:3, 1:4] = True
    m[5, 7] = True
    return m


def _codes(top: int, dot: int) -> np.ndarray:
    c = np.zeros((H, W), np.uint8)
    c[1:3, 1:4] = top
    c[5, 7] = dot
    return c


def _ingest(repo: Repository, n: int) -> list[int]:
    return [
        repo.images.ingest_image(f"img-{i}".encode(), width=W, height=H, format="PNG").id
        for i in range(n)
    ]


def _predict(repo: Repository, image_id: int, regions: list[tuple[int, int, float]]) -> int:
    return repo.images.add_prediction(
        image_id,
        mask=_mask(),
        heatmap=np.zeros((H, W), np.float32),
        defect_score=0.5,
        uncertainty=0.5,
        model_version_id=None,
        types=_codes(*(r[0] for r in regions)) if len(regions) == 2 else None,
        regions=regions,
    )


# ------------------------------------------------------------------------ type masks
def test_type_masks_round_trip_through_png() -> None:
    codes = _codes(2, 255)
    data = encode_type_mask(codes)
    assert np.array_equal(decode_type_mask(data), codes)


def test_validation_fills_unspecified_and_refuses_what_does_not_fit() -> None:
    mask = _mask()
    out = validate_type_mask(_codes(2, 0), mask, {1, 2})
    assert out.dtype == np.uint8 and out[5, 7] == UNSPECIFIED_ID and out[1, 1] == 2
    with pytest.raises(InvalidMaskError, match="type mask is 4x3 but the mask is 8x6"):
        validate_type_mask(np.zeros((3, 4), np.uint8), mask, {1})
    outside = _codes(2, 2)
    outside[0, 0] = 2
    with pytest.raises(InvalidMaskError, match="1 pixels outside the defect mask"):
        validate_type_mask(outside, mask, {1, 2})
    with pytest.raises(InvalidMaskError, match="unknown defect type ids: 7"):
        validate_type_mask(_codes(2, 7), mask, {1, 2})
    negative = _codes(2, 0).astype(np.int16)
    negative[5, 7] = -1
    with pytest.raises(InvalidMaskError, match="unknown defect type ids: -1"):
        validate_type_mask(negative, mask, {1, 2})
    with pytest.raises(InvalidMaskError, match="integer type ids"):
        validate_type_mask(_codes(2, 2).astype(np.float32), mask, {1, 2})


def test_a_type_mask_upload_must_be_single_channel() -> None:
    from io import BytesIO

    from PIL import Image

    rgb = BytesIO()
    Image.new("RGB", (W, H)).save(rgb, format="PNG")
    with pytest.raises(InvalidMaskError, match="mode RGB is not a type mask"):
        decode_type_mask(rgb.getvalue())
    with pytest.raises(InvalidMaskError, match="not a readable type mask"):
        decode_type_mask(b"not a png")
    palette = Image.fromarray(_codes(3, 1), mode="L").convert("P")
    buf = BytesIO()
    palette.save(buf, format="PNG")
    assert np.array_equal(decode_type_mask(buf.getvalue()), _codes(3, 1))


# ----------------------------------------------------------------------- corrections
def test_a_correction_keeps_its_type_mask(repo: Repository) -> None:
    [image_id] = _ingest(repo, 1)
    scratch = repo.types.add("scratch").id
    repo.reviews.save_correction(
        image_id, author="ines", action="corrected", mask=_mask(), types=_codes(scratch, 0)
    )
    [labelled] = repo.reviews.labelled_since(0)
    sha = labelled.correction.types_sha256
    assert sha is not None
    stored = decode_type_mask(repo.blobs.get(sha))
    assert np.array_equal(stored, _codes(scratch, UNSPECIFIED_ID))


def test_no_or_all_unspecified_types_store_no_blob(repo: Repository) -> None:
    a, b = _ingest(repo, 2)
    repo.reviews.save_correction(a, author="ines", action="corrected", mask=_mask())
    repo.reviews.save_correction(
        b, author="ines", action="accepted", mask=_mask(), types=_mask().astype(np.uint8)
    )
    assert [li.correction.types_sha256 for li in repo.reviews.labelled_since(0)] == [None, None]


@pytest.mark.parametrize(
    ("action", "types", "message"),
    [
        ("corrected", _codes(9, 1), "unknown defect type ids: 9"),
        ("corrected", np.ones((H, W), np.uint8), "outside the defect mask"),
        ("corrected", np.ones((2, 2), np.uint8), "type mask is 2x2"),
        ("defect_free", _codes(1, 1), "no regions to give types to"),
        ("skipped", _codes(1, 1), "no regions to give types to"),
    ],
)
def test_a_bad_type_mask_is_refused_and_stores_nothing(
    repo: Repository, action: str, types: np.ndarray, message: str
) -> None:
    [image_id] = _ingest(repo, 1)
    blobs_before = set(repo.blobs)
    with pytest.raises(StorageError, match=message):
        repo.reviews.save_correction(
            image_id, author="ines", action=action, mask=_mask(), types=types
        )
    assert repo.reviews.corrections_for(image_id) == []
    assert set(repo.blobs) == blobs_before


# ----------------------------------------------------------------------- predictions
def test_a_prediction_keeps_its_types_and_regions(repo: Repository) -> None:
    [image_id] = _ingest(repo, 1)
    scratch = repo.types.add("scratch").id
    pred_id = _predict(repo, image_id, [(scratch, 6, 0.9), (UNSPECIFIED_ID, 1, 0.2)])
    pred = repo.images.get_prediction(pred_id)
    assert pred.types_sha256 is not None
    assert np.array_equal(
        decode_type_mask(repo.blobs.get(pred.types_sha256)), _codes(scratch, UNSPECIFIED_ID)
    )
    regions = repo.images.predicted_regions(pred_id)
    assert [(r.type_id, r.area) for r in regions] == [(scratch, 6), (UNSPECIFIED_ID, 1)]
    assert regions[0].confidence == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("regions", "message"),
    [([(42, 6, 0.9)], "region 1: unknown defect type id 42"), ([(1, -1, 0.5)], "invalid")],
)
def test_bad_regions_store_nothing(
    repo: Repository, regions: list[tuple[int, int, float]], message: str
) -> None:
    [image_id] = _ingest(repo, 1)
    with pytest.raises(StorageError, match=message):
        _predict(repo, image_id, regions)
    assert repo.images.latest_prediction(image_id) is None
    assert set(repo.blobs) == set(repo.images.referenced_blobs())


# ------------------------------------------------------------------- queue by type
def test_the_queue_filters_by_the_newest_predictions_type(repo: Repository) -> None:
    scratch, stain = repo.types.add("scratch").id, repo.types.add("stain").id
    a, b, c, d = _ingest(repo, 4)
    _predict(repo, a, [(stain, 6, 0.9)])
    _predict(repo, b, [(scratch, 6, 0.9), (stain, 1, 0.4)])
    _predict(repo, c, [(scratch, 6, 0.9)])
    _predict(repo, c, [(stain, 6, 0.9)])  # newer: c is a stain now
    # d has no prediction: it is never of a type
    assert repo.reviews.peek_for_review(order=ARRIVAL, defect_type="scratch").id == b  # type: ignore[union-attr]
    first = repo.reviews.next_for_review("ines", order=ARRIVAL, defect_type="STAIN")
    assert first is not None and first.id == a
    # Asking for another type lets the held image go: one lease per reviewer.
    other = repo.reviews.next_for_review("ines", order=ARRIVAL, defect_type="scratch")
    assert other is not None and other.id == b
    assert repo.images.get_image(a).lease_owner is None
    assert repo.reviews.next_for_review("bo", order=ARRIVAL, defect_type="scratch") is None
    unfiltered = repo.reviews.next_for_review("bo", order=ARRIVAL)
    assert unfiltered is not None and unfiltered.id == a
    with pytest.raises(StorageError, match="no defect type called 'crack'; known: unspecified"):
        repo.reviews.next_for_review("ines", order=ARRIVAL, defect_type="crack")
    assert d


# ------------------------------------------------------------- collector and backup
def test_type_mask_blobs_are_kept_by_the_collector(repo: Repository) -> None:
    a, b = _ingest(repo, 2)
    scratch = repo.types.add("scratch").id
    pred = repo.images.get_prediction(_predict(repo, a, [(scratch, 6, 0.9), (1, 1, 0.1)]))
    repo.reviews.save_correction(
        b, author="ines", action="corrected", mask=_mask(), types=_codes(scratch, scratch)
    )
    corrected = repo.reviews.labelled_since(0)[0].correction
    refs = repo.images.referenced_blobs()
    assert {pred.types_sha256, corrected.types_sha256} <= refs
    assert repo.images.collect_garbage(min_age_s=0) == 0
    assert all(repo.blobs.exists(sha) for sha in refs)


def test_every_blob_column_is_marked() -> None:
    names = {f"{c.table.name}.{c.name}" for c in blob_columns()}
    assert names == {
        "images.sha256",
        "predictions.mask_sha256",
        "predictions.heatmap_sha256",
        "predictions.types_sha256",
        "corrections.mask_sha256",
        "corrections.types_sha256",
        "anomaly_predictions.heatmap_sha256",
    }


def test_backup_names_a_referenced_type_mask_the_store_lacks(
    repo: Repository, tmp_path: Path
) -> None:
    [image_id] = _ingest(repo, 1)
    scratch = repo.types.add("scratch").id
    repo.reviews.save_correction(
        image_id, author="ines", action="corrected", mask=_mask(), types=_codes(scratch, 1)
    )
    sha = repo.reviews.labelled_since(0)[0].correction.types_sha256
    assert sha is not None
    data_dir = tmp_path / "data"

    def backup(dest: str):  # type: ignore[no-untyped-def]
        return create_backup(
            repo.engine,
            data_dir=data_dir,
            blob_dir=repo.blobs.root,
            models_dir=data_dir / "models",
            dest=tmp_path / dest,
        )

    assert backup("whole").missing_blobs == []
    assert (
        tmp_path / "whole" / "blobs" / repo.blobs.path(sha).relative_to(repo.blobs.root)
    ).is_file()
    repo.blobs.path(sha).unlink()
    assert backup("damaged").missing_blobs == [sha]
