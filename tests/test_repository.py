"""The storage repository on SQLite and PostgreSQL: behaviour and reliability bars."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from storage.errors import BlobIntegrityError, InvalidMaskError, NotFoundError, StorageError
from storage.masks import decode_heatmap, decode_mask
from storage.repository import Repository
from storage.schema import VersionStatus


def _ingest(repo: Repository, n: int, *, w: int = 8, h: int = 6) -> list[int]:
    return [
        repo.ingest_image(f"image-{i}".encode(), width=w, height=h, format="PNG").id
        for i in range(n)
    ]


def _mask(w: int = 8, h: int = 6) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[1:3, 2:5] = True
    return m


def test_ingest_is_idempotent_by_hash(repo: Repository) -> None:
    first = repo.ingest_image(b"same bytes", width=4, height=4, format="PNG")
    again = repo.ingest_image(b"same bytes", width=4, height=4, format="PNG")
    assert not first.duplicate and again.duplicate and again.id == first.id
    assert repo.image_bytes(first.id) == b"same bytes"
    assert repo.counts()["images"] == 1


def test_predictions_roundtrip_and_feed_the_queue_order(repo: Repository) -> None:
    ids = _ingest(repo, 3)
    heat = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    for image_id, u in zip(ids, (0.1, 0.9, 0.5), strict=True):
        repo.add_prediction(
            image_id,
            mask=_mask(),
            heatmap=heat,
            defect_score=0.7,
            uncertainty=u,
            model_version_id=None,
        )
    pred = repo.latest_prediction(ids[1])
    assert pred is not None and pred.uncertainty == pytest.approx(0.9)
    assert (decode_mask(repo.blobs.get(pred.mask_sha256)) == _mask()).all()
    assert np.allclose(decode_heatmap(repo.blobs.get(pred.heatmap_sha256)), heat, atol=1e-4)
    order = [repo.next_for_review(f"r{i}").id for i in range(3)]  # type: ignore[union-attr]
    assert order == [ids[1], ids[2], ids[0]]
    assert repo.next_for_review("r9") is None


def test_arrival_order_leases_and_expiry(repo: Repository) -> None:
    ids = _ingest(repo, 2)
    # Leases long enough to outlast a loaded machine between calls, short enough to wait out.
    a = repo.next_for_review("alice", order="arrival", lease_seconds=1.5)
    b = repo.next_for_review("bob", order="arrival")
    assert a is not None and b is not None and (a.id, b.id) == (ids[0], ids[1])
    again = repo.next_for_review("alice", order="arrival", lease_seconds=1.5)
    assert again is not None and again.id == ids[0]  # she gets her own image back
    assert repo.next_for_review("carol") is None
    time.sleep(1.7)  # alice abandons her image; the lease expires
    assert repo.next_for_review("carol", order="arrival").id == ids[0]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="order"):
        repo.next_for_review("x", order="random")


def test_corrections_are_appended_and_the_newest_is_the_label(repo: Repository) -> None:
    (image_id,) = _ingest(repo, 1)
    c1 = repo.save_correction(image_id, author="alice", action="corrected", mask=_mask())
    c2 = repo.save_correction(image_id, author="bob", action="defect_free", note="dust")
    history = repo.corrections_for(image_id)
    assert [c.id for c in history] == [c1, c2] and history[1].author == "bob"
    (labelled,) = repo.labelled_since(0)
    assert labelled.correction.id == c2
    assert not decode_mask(repo.blobs.get(labelled.correction.mask_sha256)).any()  # type: ignore[arg-type]
    assert repo.labelled_since(c2) == []
    repo.save_correction(image_id, author="carol", action="skipped")
    assert repo.labelled_since(0)[0].correction.id == c2  # a skip is never a label
    assert repo.get_image(image_id).status.value == "skipped"


def test_bad_input_is_refused_and_changes_nothing(repo: Repository) -> None:
    (image_id,) = _ingest(repo, 1)
    before = repo.counts()
    with pytest.raises(NotFoundError, match="no image with id 999"):
        repo.save_correction(999, author="a", action="corrected", mask=_mask())
    with pytest.raises(InvalidMaskError, match="4x4 but the image is 8x6"):
        repo.save_correction(image_id, author="a", action="corrected", mask=np.zeros((4, 4)))
    with pytest.raises(InvalidMaskError, match="not binary"):
        repo.save_correction(
            image_id, author="a", action="corrected", mask=np.full((6, 8), 7, np.uint8)
        )
    with pytest.raises(StorageError, match="unknown action"):
        repo.save_correction(image_id, author="a", action="maybe", mask=_mask())
    with pytest.raises(StorageError, match="needs a mask"):
        repo.save_correction(image_id, author="a", action="accepted")
    with pytest.raises(NotFoundError, match="no prediction 5"):
        repo.save_correction(
            image_id, author="a", action="corrected", mask=_mask(), prediction_id=5
        )
    assert repo.counts() == before
    assert repo.get_image(image_id).status.value == "pending"


def test_a_damaged_blob_is_detected(repo: Repository) -> None:
    (image_id,) = _ingest(repo, 1)
    repo.blobs.path(repo.get_image(image_id).sha256).write_bytes(b"tampered")
    with pytest.raises(BlobIntegrityError, match="damaged"):
        repo.image_bytes(image_id)


class CrashingRepository(Repository):
    """Dies between writing the blob and inserting the row (fault injection)."""

    def _insert_image(self, row):  # type: ignore[no-untyped-def]
        raise RuntimeError("power cut")


def test_crash_between_blob_and_row_leaves_only_an_orphan(repo: Repository) -> None:
    _ingest(repo, 1)
    crashing = CrashingRepository(repo.engine, repo.blobs)
    with pytest.raises(RuntimeError):
        crashing.ingest_image(b"lost image", width=8, height=6, format="PNG")
    refs = repo.referenced_blobs()
    assert all(repo.blobs.exists(sha) for sha in refs)  # no row points at a missing blob
    assert len(set(repo.blobs)) == len(refs) + 1  # one orphan
    assert repo.collect_garbage(min_age_s=0) == 1
    assert set(repo.blobs) == refs


def test_400_concurrent_saves_from_8_reviewers(repo: Repository) -> None:
    ids = _ingest(repo, 400)
    leased: list[int] = []
    lock = threading.Lock()

    def reviewer(n: int) -> int:
        saved = 0
        for _ in range(50):
            image = repo.next_for_review(f"reviewer-{n}", order="arrival")
            assert image is not None
            with lock:
                leased.append(image.id)
            repo.save_correction(image.id, author=f"reviewer-{n}", action="corrected", mask=_mask())
            saved += 1
        return saved

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(reviewer, range(8))) == 400
    assert sorted(leased) == ids  # every image leased exactly once
    assert repo.counts()["corrections"] == 400
    assert len(repo.labelled_since(0)) == 400


def test_concurrent_activation_leaves_exactly_one_active(repo: Repository) -> None:
    versions = [
        repo.register_model_version(
            checkpoint_path=f"/m/{i}.pt", checkpoint_sha256=f"{i:064x}", encoder_id="effnet_lite0"
        )
        for i in range(2)
    ]
    for _ in range(10):
        barrier = threading.Barrier(2)

        def activate(v: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            repo.activate(v)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(activate, versions))
        statuses = [v.status for v in repo.model_versions()]
        assert statuses.count(VersionStatus.active) == 1


def test_rollback_reactivates_an_earlier_version(repo: Repository) -> None:
    v1 = repo.register_model_version(
        checkpoint_path="a", checkpoint_sha256="a" * 64, encoder_id="e", metrics={"miou": 0.5}
    )
    v2 = repo.register_model_version(
        checkpoint_path="b", checkpoint_sha256="b" * 64, encoder_id="e", parent_id=v1
    )
    repo.activate(v1)
    repo.activate(v2)
    assert repo.active_version().id == v2  # type: ignore[union-attr]
    repo.activate(v1)
    assert repo.active_version().id == v1  # type: ignore[union-attr]
    assert {v.id: v.status for v in repo.model_versions()}[v2] is VersionStatus.retired
    repo.set_version_status(v2, VersionStatus.rejected)
    with pytest.raises(StorageError, match="activate"):
        repo.set_version_status(v2, VersionStatus.active)
    with pytest.raises(NotFoundError):
        repo.activate(12345)


def test_holdout_is_deterministic_and_training_runs_update(repo: Repository) -> None:
    ids = _ingest(repo, 60)
    holdout = {i for i in ids if repo.get_image(i).holdout}
    assert 0 < len(holdout) < 30
    for i in ids:
        repo.save_correction(i, author="a", action="corrected", mask=_mask())
    assert {li.image.id for li in repo.holdout_set()} == holdout
    run = repo.create_training_run(trigger="manual", watermark=repo.max_correction_id())
    row = repo.update_training_run(run, status="running", log_tail="epoch 1")
    assert row.status.value == "running" and row.correction_watermark == 60
    with pytest.raises(StorageError, match="unknown training-run fields"):
        repo.update_training_run(run, colour="red")
    with pytest.raises(ValueError):
        repo.update_training_run(run, status="exploded")
