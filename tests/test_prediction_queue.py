"""The background prediction queue holds image ids, is bounded, and never loses an image:
what does not fit waits in the database and is picked up when the queue drains."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from tests.webapp_fixtures import make_checkpoint
from webapp.app import create_app
from webapp.prediction_queue import PredictionQueue
from webapp.settings import Settings


def test_a_full_queue_refuses_and_refills_from_the_backlog() -> None:
    gate = threading.Event()
    done: list[int] = []
    backlog = list(range(100, 106))  # "the database": ids that are still unpredicted

    def predict(image_id: int) -> None:
        gate.wait(60)
        done.append(image_id)
        if image_id in backlog:
            backlog.remove(image_id)

    def refill(n: int) -> list[int]:
        return [i for i in backlog if i not in done][:n]

    q = PredictionQueue(predict, capacity=2, refill=refill)
    try:
        assert q.submit(1)  # taken by the worker at once or queued
        assert q.submit(1)  # the same id twice is one job
        accepted = [q.submit(i) for i in (2, 3, 4, 5)]
        assert not all(accepted)  # bounded: some were left to the backlog
        assert q.backlog <= 3  # at most `capacity` queued plus one in flight
        gate.set()
        assert q.wait_idle(60)
        assert not backlog  # the refill found every image the queue had no room for
        assert done.count(1) == 1
    finally:
        gate.set()
        q.shutdown()


def test_a_failing_prediction_does_not_stop_the_worker() -> None:
    seen: list[int] = []

    def predict(image_id: int) -> None:
        seen.append(image_id)
        if image_id == 1:
            raise ValueError("unreadable image")

    q = PredictionQueue(predict, capacity=4)
    q.submit(1)
    q.submit(2)
    assert q.wait_idle(60) and seen == [1, 2]
    q.shutdown()
    assert not q.submit(3)  # closed


def test_every_ingested_image_is_predicted_through_a_tiny_queue(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        checkpoint=make_checkpoint(tmp_path / "m.pt"),
        prediction_queue_size=1,
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
    finally:
        app.stop()
