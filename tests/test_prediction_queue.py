"""The background prediction queue holds image ids, is bounded, and never loses an image:
what does not fit waits in the database and is picked up when the queue drains. Ids queued
together are predicted in batches; a failing batch is retried image by image."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.webapp_fixtures import make_checkpoint
from webapp.app import create_app
from webapp.prediction_queue import PredictionQueue
from webapp.settings import Settings


def test_a_full_queue_refuses_and_refills_from_the_backlog() -> None:
    gate = threading.Event()
    done: list[int] = []
    backlog = list(range(100, 106))  # "the database": ids that are still unpredicted

    def predict_batch(ids: list[int]) -> None:
        gate.wait(60)
        for image_id in ids:
            done.append(image_id)
            if image_id in backlog:
                backlog.remove(image_id)

    def refill(n: int) -> list[int]:
        return [i for i in backlog if i not in done][:n]

    q = PredictionQueue(predict_batch, capacity=2, batch_size=2, refill=refill)
    try:
        assert q.submit(1)  # taken by the worker at once or queued
        assert q.submit(1)  # the same id twice is one job
        accepted = [q.submit(i) for i in (2, 3, 4, 5)]
        assert not all(accepted)  # bounded: some were left to the backlog
        assert q.backlog <= 4  # at most `capacity` queued plus one batch in flight
        gate.set()
        assert q.wait_idle(60)
        assert not backlog  # the refill found every image the queue had no room for
        assert done.count(1) == 1
        assert len(done) == len(set(done))
    finally:
        gate.set()
        q.shutdown()


def _held_queue(
    batches: list[list[int]], *, batch_size: int, fail: int | None = None
) -> tuple[PredictionQueue, threading.Event]:
    """A queue whose worker holds its first batch until the returned event is set, so that
    the test can queue ids behind it; `fail`: an id whose batches raise."""
    release = threading.Event()
    holding = threading.Event()

    def predict_batch(ids: list[int]) -> None:
        if not holding.is_set():
            holding.set()
            release.wait(60)
        batches.append(list(ids))
        if fail in ids:
            raise ValueError(f"image {fail} is unreadable")

    q = PredictionQueue(predict_batch, capacity=16, batch_size=batch_size)
    q.submit(1)
    assert holding.wait(60)  # the worker took id 1 alone: nothing else was queued
    return q, release


def test_ids_queued_together_are_predicted_in_batches() -> None:
    batches: list[list[int]] = []
    q, release = _held_queue(batches, batch_size=3)
    try:
        for image_id in range(2, 8):
            assert q.submit(image_id)
        assert q.backlog == 7
        release.set()
        assert q.wait_idle(60)
        assert batches == [[1], [2, 3, 4], [5, 6, 7]]  # queue order, at most batch_size
        assert q.backlog == 0
    finally:
        release.set()
        q.shutdown()


def test_a_failing_image_in_a_batch_does_not_stop_the_others() -> None:
    batches: list[list[int]] = []
    q, release = _held_queue(batches, batch_size=4, fail=3)
    try:
        for image_id in (2, 3, 4, 5):
            assert q.submit(image_id)
        release.set()
        assert q.wait_idle(60)
        # The batch with the bad image failed, and was retried image by image.
        assert batches == [[1], [2, 3, 4, 5], [2], [3], [4], [5]]
        assert q.submit(6) and q.wait_idle(60)  # the worker is still running
        assert batches[-1] == [6]
    finally:
        release.set()
        q.shutdown()


def test_a_failed_image_is_not_refilled_again() -> None:
    seen: list[int] = []
    gate = threading.Event()
    unpredicted = [2, 3, 4, 5]  # "the database": image 2 never gets a prediction

    def predict_batch(ids: list[int]) -> None:
        gate.wait(60)
        seen.extend(ids)
        if 2 in ids:
            raise ValueError("unreadable image")
        for image_id in ids:
            unpredicted.remove(image_id)

    q = PredictionQueue(predict_batch, capacity=1, batch_size=4, refill=lambda n: unpredicted[:n])
    try:
        assert q.submit(2)
        for image_id in (4, 5):
            q.submit(image_id)  # at most one fits beside the one in flight: an overflow
        gate.set()
        assert q.wait_idle(60)
        assert unpredicted == [2]  # the refill found 3 and whichever of 4, 5 did not fit
        assert seen.count(2) == 1  # and skipped the image that failed
    finally:
        gate.set()
        q.shutdown()


def test_a_failing_prediction_does_not_stop_the_worker() -> None:
    seen: list[int] = []

    def predict_batch(ids: list[int]) -> None:
        seen.extend(ids)
        if 1 in ids:
            raise ValueError("unreadable image")

    q = PredictionQueue(predict_batch, capacity=4)
    q.submit(1)
    q.submit(2)
    assert q.wait_idle(60) and seen == [1, 2]
    q.shutdown()
    assert not q.submit(3)  # closed


def test_shutdown_finishes_the_queued_batches() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def predict_batch(ids: list[int]) -> None:
        release.wait(60)
        batches.append(ids)

    q = PredictionQueue(predict_batch, capacity=8, batch_size=8)
    for image_id in range(1, 5):
        q.submit(image_id)
    release.set()
    q.shutdown(wait=True)
    assert sorted(i for b in batches for i in b) == [1, 2, 3, 4]


def test_workers_predict_batches_at_once_after_their_setup() -> None:
    both_busy = threading.Barrier(2, timeout=60)  # broken unless two batches run at once
    started: list[str] = []
    batches: list[list[int]] = []
    calls = iter(range(1_000))  # next() is atomic: the first two calls meet at the barrier

    def predict_batch(ids: list[int]) -> None:
        if next(calls) < 2:
            both_busy.wait()
        batches.append(list(ids))

    q = PredictionQueue(
        predict_batch,
        capacity=8,
        batch_size=1,
        workers=2,
        on_worker_start=lambda: started.append(threading.current_thread().name),
    )
    try:
        assert q.workers == 2
        for image_id in (1, 2, 3):
            assert q.submit(image_id)
        assert q.wait_idle(60)
        assert not both_busy.broken
        assert sorted(i for b in batches for i in b) == [1, 2, 3]
        assert sorted(started) == ["predict-0", "predict-1"]  # in each worker's own thread
    finally:
        q.shutdown()
    assert not q.submit(4)  # every worker stopped


@pytest.mark.parametrize("workers", [1, 2])
def test_every_ingested_image_is_predicted_through_a_tiny_queue(
    tmp_path: Path, workers: int
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        checkpoint=make_checkpoint(tmp_path / "m.pt"),
        prediction_queue_size=1,
        prediction_workers=workers,
    )
    app = create_app(settings, ui=False, watch=False)
    try:
        services = app.services
        ids = []
        for seed in range(5):
            buf = io.BytesIO()
            rng = np.random.default_rng(seed)
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(buf, "PNG")
            ids.append(services.ingest(buf.getvalue(), f"{seed}.png").id)
        assert services.wait_for_predictions(300)
        assert all(services.repo.images.latest_prediction(i) is not None for i in ids)
        health = services.health()
        assert health["prediction_backlog"] == 0 and health["prediction_unpredicted"] == 0
        assert health["prediction_workers"] == workers
    finally:
        app.stop()
