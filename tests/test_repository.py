"""The storage repository on SQLite and PostgreSQL: behaviour and reliability bars."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import update

from storage.engine import make_sessionmaker
from storage.errors import BlobIntegrityError, InvalidMaskError, NotFoundError, StorageError
from storage.image_store import ImageStore
from storage.masks import decode_heatmap, decode_mask
from storage.repository import Repository
from storage.review_queue import ImageState, QueueKey, SaveConflict
from storage.schema import Image, VersionStatus, utcnow

UNCERTAINTY = (QueueKey.uncertainty_desc, QueueKey.arrival)
ARRIVAL = (QueueKey.arrival,)


def _ingest(repo: Repository, n: int, *, w: int = 8, h: int = 6) -> list[int]:
    return [
        repo.images.ingest_image(f"image-{i}".encode(), width=w, height=h, format="PNG").id
        for i in range(n)
    ]


def _mask(w: int = 8, h: int = 6) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[1:3, 2:5] = True
    return m


def _expire_lease(repo: Repository, image_id: int) -> None:
    """Move the image's lease expiry into the past, as if its lease time had run out."""
    with repo.session() as s, s.begin():
        s.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_ingest_is_idempotent_by_hash(repo: Repository) -> None:
    first = repo.images.ingest_image(b"same bytes", width=4, height=4, format="PNG")
    again = repo.images.ingest_image(b"same bytes", width=4, height=4, format="PNG")
    assert not first.duplicate and again.duplicate and again.id == first.id
    assert repo.images.image_bytes(first.id) == b"same bytes"
    assert repo.images.counts()["images"] == 1


def test_predictions_roundtrip_and_feed_the_queue_order(repo: Repository) -> None:
    ids = _ingest(repo, 3)
    heat = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    for image_id, u in zip(ids, (0.1, 0.9, 0.5), strict=True):
        repo.images.add_prediction(
            image_id,
            mask=_mask(),
            heatmap=heat,
            defect_score=0.7,
            uncertainty=u,
            model_version_id=None,
        )
    pred = repo.images.latest_prediction(ids[1])
    assert pred is not None and pred.uncertainty == pytest.approx(0.9)
    assert (decode_mask(repo.blobs.get(pred.mask_sha256)) == _mask()).all()
    assert np.allclose(decode_heatmap(repo.blobs.get(pred.heatmap_sha256)), heat, atol=1e-4)
    order = [repo.reviews.next_for_review(f"r{i}", order=UNCERTAINTY).id for i in range(3)]  # type: ignore[union-attr]
    assert order == [ids[1], ids[2], ids[0]]
    assert repo.reviews.next_for_review("r9", order=UNCERTAINTY) is None


def test_arrival_order_leases_and_expiry(repo: Repository) -> None:
    ids = _ingest(repo, 2)
    a = repo.reviews.next_for_review("alice", order=ARRIVAL)
    b = repo.reviews.next_for_review("bob", order=ARRIVAL)
    assert a is not None and b is not None and (a.id, b.id) == (ids[0], ids[1])
    again = repo.reviews.next_for_review("alice", order=ARRIVAL)
    assert again is not None and again.id == ids[0]  # she gets her own image back
    assert repo.reviews.next_for_review("carol", order=ARRIVAL) is None
    _expire_lease(repo, ids[0])  # alice abandons her image; its lease runs out
    assert repo.reviews.next_for_review("carol", order=ARRIVAL).id == ids[0]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="sideways"):
        repo.reviews.next_for_review("x", order=("sideways",))  # type: ignore[arg-type]
    peeked = repo.reviews.peek_for_review(order=ARRIVAL)  # shown, leased or not, never leased
    assert peeked is not None and peeked.id == ids[0]
    assert repo.images.get_image(ids[0]).lease_owner == "carol"


def test_corrections_are_appended_and_the_newest_is_the_label(repo: Repository) -> None:
    (image_id,) = _ingest(repo, 1)
    c1 = repo.reviews.save_correction(image_id, author="alice", action="corrected", mask=_mask())
    c2 = repo.reviews.save_correction(image_id, author="bob", action="defect_free", note="dust")
    history = repo.reviews.corrections_for(image_id)
    assert [c.id for c in history] == [c1, c2] and history[1].author == "bob"
    (labelled,) = repo.reviews.labelled_since(0)
    assert labelled.correction.id == c2
    assert not decode_mask(repo.blobs.get(labelled.correction.mask_sha256)).any()  # type: ignore[arg-type]
    assert repo.reviews.labelled_since(c2) == []
    repo.reviews.save_correction(image_id, author="carol", action="skipped")
    assert repo.reviews.labelled_since(0)[0].correction.id == c2  # a skip is never a label
    assert repo.images.get_image(image_id).status.value == "skipped"


def test_bad_input_is_refused_and_changes_nothing(repo: Repository) -> None:
    (image_id,) = _ingest(repo, 1)
    before = repo.images.counts()
    with pytest.raises(NotFoundError, match="no image with id 999"):
        repo.reviews.save_correction(999, author="a", action="corrected", mask=_mask())
    with pytest.raises(InvalidMaskError, match="4x4 but the image is 8x6"):
        repo.reviews.save_correction(
            image_id, author="a", action="corrected", mask=np.zeros((4, 4))
        )
    with pytest.raises(InvalidMaskError, match="not binary"):
        repo.reviews.save_correction(
            image_id, author="a", action="corrected", mask=np.full((6, 8), 7, np.uint8)
        )
    with pytest.raises(StorageError, match="unknown action"):
        repo.reviews.save_correction(image_id, author="a", action="maybe", mask=_mask())
    with pytest.raises(StorageError, match="needs a mask"):
        repo.reviews.save_correction(image_id, author="a", action="accepted")
    with pytest.raises(SaveConflict, match="changed since you opened it"):
        repo.reviews.save_correction(
            image_id, author="a", action="corrected", mask=_mask(), based_on=ImageState(5, None)
        )
    assert repo.images.counts() == before
    assert repo.images.get_image(image_id).status.value == "pending"


def test_a_damaged_blob_is_detected(repo: Repository) -> None:
    (image_id,) = _ingest(repo, 1)
    repo.blobs.path(repo.images.get_image(image_id).sha256).write_bytes(b"tampered")
    with pytest.raises(BlobIntegrityError, match="damaged"):
        repo.images.image_bytes(image_id)


class CrashingImageStore(ImageStore):
    """Dies between writing the blob and inserting the row (fault injection)."""

    def _insert_image(self, row):  # type: ignore[no-untyped-def]
        raise RuntimeError("power cut")


def test_crash_between_blob_and_row_leaves_only_an_orphan(repo: Repository) -> None:
    _ingest(repo, 1)
    crashing = CrashingImageStore(make_sessionmaker(repo.engine), repo.blobs)
    with pytest.raises(RuntimeError):
        crashing.ingest_image(b"lost image", width=8, height=6, format="PNG")
    refs = repo.images.referenced_blobs()
    assert all(repo.blobs.exists(sha) for sha in refs)  # no row points at a missing blob
    assert len(set(repo.blobs)) == len(refs) + 1  # one orphan
    assert repo.images.collect_garbage(min_age_s=0) == 1
    assert set(repo.blobs) == refs


def test_400_concurrent_saves_from_8_reviewers(repo: Repository) -> None:
    ids = _ingest(repo, 400)
    leased: list[int] = []
    lock = threading.Lock()

    def reviewer(n: int) -> int:
        saved = 0
        for _ in range(50):
            image = repo.reviews.next_for_review(f"reviewer-{n}", order=ARRIVAL)
            assert image is not None
            with lock:
                leased.append(image.id)
            repo.reviews.save_correction(
                image.id, author=f"reviewer-{n}", action="corrected", mask=_mask()
            )
            saved += 1
        return saved

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(reviewer, range(8))) == 400
    assert sorted(leased) == ids  # every image leased exactly once
    assert repo.images.counts()["corrections"] == 400
    assert len(repo.reviews.labelled_since(0)) == 400


def test_concurrent_activation_leaves_exactly_one_active(repo: Repository) -> None:
    versions = [
        repo.registry.register_model_version(
            checkpoint_path=f"/m/{i}.pt", checkpoint_sha256=f"{i:064x}", encoder_id="effnet_lite0"
        )
        for i in range(2)
    ]
    for _ in range(10):
        barrier = threading.Barrier(2)

        def activate(v: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            repo.registry.activate(v)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(activate, versions))
        statuses = [v.status for v in repo.registry.model_versions()]
        assert statuses.count(VersionStatus.active) == 1


def test_rollback_reactivates_an_earlier_version(repo: Repository) -> None:
    v1 = repo.registry.register_model_version(
        checkpoint_path="a", checkpoint_sha256="a" * 64, encoder_id="e", metrics={"miou": 0.5}
    )
    v2 = repo.registry.register_model_version(
        checkpoint_path="b", checkpoint_sha256="b" * 64, encoder_id="e", parent_id=v1
    )
    repo.registry.activate(v1)
    repo.registry.activate(v2)
    assert repo.registry.active_version().id == v2  # type: ignore[union-attr]
    repo.registry.activate(v1)
    assert repo.registry.active_version().id == v1  # type: ignore[union-attr]
    assert {v.id: v.status for v in repo.registry.model_versions()}[v2] is VersionStatus.retired
    repo.registry.set_version_status(v2, VersionStatus.rejected)
    with pytest.raises(StorageError, match="activate"):
        repo.registry.set_version_status(v2, VersionStatus.active)
    with pytest.raises(NotFoundError):
        repo.registry.activate(12345)


def test_holdout_is_deterministic_and_training_runs_update(repo: Repository) -> None:
    ids = _ingest(repo, 60)
    holdout = {i for i in ids if repo.images.get_image(i).holdout}
    assert 0 < len(holdout) < 30
    for i in ids:
        repo.reviews.save_correction(i, author="a", action="corrected", mask=_mask())
    assert {li.image.id for li in repo.reviews.holdout_set()} == holdout
    run = repo.runs.create_training_run(
        trigger="manual", watermark=repo.reviews.max_correction_id()
    )
    row = repo.runs.update_training_run(run, status="running", log_tail="epoch 1")
    assert row.status.value == "running" and row.correction_watermark == 60
    with pytest.raises(StorageError, match="unknown training-run fields"):
        repo.runs.update_training_run(run, colour="red")
    with pytest.raises(ValueError):
        repo.runs.update_training_run(run, status="exploded")


def test_a_save_on_an_older_state_or_a_held_image_is_refused(repo: Repository) -> None:
    (image_id,) = _ingest(repo, 1)
    seen = repo.reviews.image_state(image_id)
    assert seen == ImageState(None, None) and seen.token == "p0-c0"
    assert ImageState.parse(seen.token) == seen
    with pytest.raises(ValueError, match="based_on"):
        ImageState.parse("latest")
    assert repo.reviews.next_for_review("alice", order=ARRIVAL) is not None
    with pytest.raises(SaveConflict, match="being reviewed by alice") as held:
        repo.reviews.save_correction(
            image_id, author="bob", action="corrected", mask=_mask(), based_on=seen
        )
    assert held.value.current == seen
    _expire_lease(repo, image_id)
    first = repo.reviews.save_correction(
        image_id, author="bob", action="corrected", mask=_mask(), based_on=seen
    )
    with pytest.raises(SaveConflict) as stale:  # alice comes back on the state she saw
        repo.reviews.save_correction(image_id, author="alice", action="defect_free", based_on=seen)
    assert stale.value.current == ImageState(None, first)
    assert [c.id for c in repo.reviews.corrections_for(image_id)] == [first]
    second = repo.reviews.save_correction(
        image_id, author="alice", action="defect_free", based_on=stale.value.current
    )
    assert repo.reviews.image_state(image_id) == ImageState(None, second)


def test_each_promotion_is_claimed_once_and_older_ones_are_superseded(repo: Repository) -> None:
    v1, v2 = (
        repo.registry.register_model_version(
            checkpoint_path=f"v{i}.pt", checkpoint_sha256=str(i) * 64, encoder_id="e"
        )
        for i in (1, 2)
    )
    assert repo.registry.activate(v1, actor="alice") is True
    assert repo.registry.activate(v1, actor="alice") is False  # no change, no new promotion
    assert repo.registry.activate(v2, actor="bob") is True
    assert repo.registry.claim_promotion(v1, "web-1") is None  # v1's promotion is superseded
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda n: repo.registry.claim_promotion(v2, f"web-{n}"), range(8)))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].version_id == v2 and winners[0].previous_id == v1
    repo.registry.finish_promotion(winners[0].id, repredicted=3, outcome="done")
    assert repo.registry.claim_promotion(v2, "web-9") is None  # finished
    newest, oldest = repo.registry.promotions()
    assert (newest.actor, newest.repredicted, newest.outcome) == ("bob", 3, "done")
    assert oldest.outcome == "superseded by a newer promotion"


def test_a_stale_promotion_claim_is_taken_over(repo: Repository) -> None:
    v1 = repo.registry.register_model_version(
        checkpoint_path="v1.pt", checkpoint_sha256="1" * 64, encoder_id="e"
    )
    repo.registry.activate(v1)
    assert repo.registry.claim_promotion(v1, "dead-process") is not None
    assert repo.registry.claim_promotion(v1, "web-2") is None  # the claim is fresh
    taken = repo.registry.claim_promotion(v1, "web-2", stale_after_s=0.0)
    assert taken is not None and taken.claimed_by == "web-2"
