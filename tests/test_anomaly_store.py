"""Zero-label anomaly rows on SQLite and PostgreSQL: known-good images, normality models,
anomaly predictions, the anomaly queue order, and blobs kept from garbage collection."""

from __future__ import annotations

import numpy as np
import pytest

from storage.errors import NotFoundError, StorageError
from storage.masks import decode_heatmap
from storage.repository import Repository
from storage.review_queue import QueueKey

ANOMALY = (QueueKey.anomaly_desc, QueueKey.arrival)


def _ingest(repo: Repository, n: int) -> list[int]:
    return [
        repo.images.ingest_image(f"image {i}".encode(), width=8, height=6, format="PNG").id
        for i in range(n)
    ]


def _model(repo: Repository, good: int = 2) -> int:
    return repo.anomalies.register_normality_model(
        encoder_id="effnet_lite0", good_images=good, path="n.npz", sha256="a" * 64
    )


def test_known_good_images_are_those_labelled_defect_free(repo: Repository) -> None:
    a, b, c, d = _ingest(repo, 4)
    repo.reviews.save_correction(a, author="line", action="defect_free", note="declared good")
    repo.reviews.save_correction(b, author="x", action="corrected", mask=np.ones((6, 8), bool))
    repo.reviews.save_correction(c, author="x", action="defect_free")
    repo.reviews.save_correction(c, author="y", action="corrected", mask=np.ones((6, 8), bool))
    repo.reviews.save_correction(d, author="x", action="defect_free")
    repo.reviews.save_correction(d, author="y", action="skipped")  # a skip is never a label
    assert [i.id for i in repo.anomalies.known_good_images()] == [a, d]
    assert [i.id for i in repo.anomalies.known_good_images(limit=1)] == [a]


def test_anomaly_predictions_are_stored_and_order_the_queue(repo: Repository) -> None:
    ids = _ingest(repo, 3)
    assert repo.anomalies.newest_normality_model() is None
    first = _model(repo)
    second = _model(repo, good=5)
    assert repo.anomalies.newest_normality_model().id == second  # type: ignore[union-attr]
    heat = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    for image_id, score in zip(ids, (0.4, 2.5, 1.1), strict=True):
        repo.anomalies.add_anomaly(image_id, normality_model_id=second, heatmap=heat, score=score)
    latest = repo.anomalies.latest_anomaly(ids[1])
    assert latest is not None and latest.score == pytest.approx(2.5)
    assert np.allclose(decode_heatmap(repo.blobs.get(latest.heatmap_sha256)), heat, atol=1e-4)
    order = [repo.reviews.next_for_review(f"r{i}", order=ANOMALY).id for i in range(3)]  # type: ignore[union-attr]
    assert order == [ids[1], ids[2], ids[0]]
    assert repo.anomalies.unscored_image_ids(second) == []
    assert set(repo.anomalies.unscored_image_ids(first)) == set(ids)
    assert latest.heatmap_sha256 in repo.images.referenced_blobs()  # kept by the collector


def test_a_random_order_is_an_order(repo: Repository) -> None:
    ids = _ingest(repo, 5)
    served = {repo.reviews.next_for_review(f"r{i}", order=(QueueKey.random,)).id for i in ids}  # type: ignore[union-attr]
    assert served == set(ids)


def test_bad_anomaly_input_is_refused(repo: Repository) -> None:
    (image_id,) = _ingest(repo, 1)
    model = _model(repo)
    with pytest.raises(StorageError, match="anomaly heatmap is"):
        repo.anomalies.add_anomaly(
            image_id, normality_model_id=model, heatmap=np.zeros((3, 3), np.float32), score=1.0
        )
    with pytest.raises(NotFoundError, match="no image with id 99"):
        repo.anomalies.add_anomaly(
            99, normality_model_id=model, heatmap=np.zeros((6, 8), np.float32), score=1.0
        )
    assert repo.anomalies.latest_anomaly(image_id) is None
