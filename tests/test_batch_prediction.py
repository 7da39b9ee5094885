"""Background predictions in batches, end to end over a launched server: images uploaded
while the workers are busy are predicted together (one model call per worker at most),
each gets exactly one stored prediction tagged with the served version, and one damaged
image in a batch costs only its own prediction. Also the serving setting for the test-time views."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from model.augment import TRANSFORMS
from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.predict import Prediction
from storage.schema import Prediction as PredictionRow
from tests.webapp_fixtures import HTTP_TIMEOUT, RunningApp
from webapp.model_server import ModelServer
from webapp.settings import Settings

HTTP = httpx.Client(timeout=HTTP_TIMEOUT)


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(60, 200, (72, 96, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def upload(app: RunningApp, seed: int) -> int:
    response = HTTP.post(
        f"{app.url}/api/images", headers=app.auth("inspector"), files={"file": ("s.png", png(seed))}
    )
    response.raise_for_status()
    return int(response.json()["id"])


def stored_predictions(app: RunningApp, image_id: int) -> list[int | None]:
    """The model version of every prediction stored for the image (from the database)."""
    with Session(app.app.services.repo.engine) as session:
        rows = session.scalars(select(PredictionRow).where(PredictionRow.image_id == image_id))
        return [row.model_version_id for row in rows]


@pytest.fixture
def held_worker(
    running_app: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[list[int], threading.Event, threading.Event]]:
    """The real `ModelServer.predict_many`, recording each call's batch size; calls wait for
    the returned `release` event (`busy` is set once every worker waits), so a test can
    queue uploads behind busy workers."""
    services = running_app.app.services
    assert services.wait_for_predictions(HTTP_TIMEOUT)
    real = services.models.predict_many
    workers = services.predictions.workers
    sizes: list[int] = []
    busy, release = threading.Event(), threading.Event()
    calls = iter(range(10**6))  # next() is atomic

    def recording(
        images: Sequence[np.ndarray], *, shas: Sequence[str]
    ) -> tuple[list[Prediction], int | None]:
        sizes.append(len(images))
        if not release.is_set():
            if next(calls) + 1 == workers:
                busy.set()
            release.wait(HTTP_TIMEOUT)
        return real(images, shas=shas)

    monkeypatch.setattr(services.models, "predict_many", recording)
    yield sizes, busy, release
    release.set()
    assert services.wait_for_predictions(HTTP_TIMEOUT)


def test_uploads_queued_behind_a_busy_worker_are_predicted_in_one_batch(
    running_app: RunningApp, held_worker: tuple[list[int], threading.Event, threading.Event]
) -> None:
    sizes, busy, release = held_worker
    services = running_app.app.services
    workers = services.predictions.workers
    ids = [upload(running_app, seed) for seed in range(workers)]
    assert busy.wait(HTTP_TIMEOUT)  # every worker is predicting one image alone
    ids += [upload(running_app, seed) for seed in range(workers, workers + 5)]
    release.set()
    assert services.wait_for_predictions(HTTP_TIMEOUT)
    assert sizes[:workers] == [1] * workers
    # The five queued uploads: one model call with one worker, at most one per worker.
    assert sum(sizes[workers:]) == 5 and len(sizes[workers:]) <= workers
    served = HTTP.get(f"{running_app.url}/api/health").json()["served_model_version"]
    assert served is not None
    for image_id in ids:
        assert stored_predictions(running_app, image_id) == [served]
        view = HTTP.get(
            f"{running_app.url}/api/images/{image_id}", headers=running_app.auth("viewer")
        )
        assert view.json()["prediction"]["model_version"] == served


def test_a_damaged_image_in_a_batch_costs_only_its_own_prediction(
    running_app: RunningApp, held_worker: tuple[list[int], threading.Event, threading.Event]
) -> None:
    sizes, busy, release = held_worker
    services = running_app.app.services
    workers = services.predictions.workers
    firsts = [upload(running_app, seed) for seed in range(20, 20 + workers)]
    assert busy.wait(HTTP_TIMEOUT)
    ids = [upload(running_app, seed) for seed in range(11, 15)]
    damaged = ids[1]
    blob = services.repo.images.blobs.path(services.repo.images.get_image(damaged).sha256)
    blob.write_bytes(b"not the image any more")  # its hash check fails when it is read
    release.set()
    assert services.wait_for_predictions(HTTP_TIMEOUT)
    # The batch with the damaged image failed as a whole reading it (before any model
    # call), then its images were predicted one by one: the good ones got there, and the
    # damaged one never reached the model.
    assert sum(sizes) == workers + 3
    if workers == 1:
        assert sizes == [1, 1, 1, 1]
    served = services.models.current.version_id if services.models.current else None
    assert stored_predictions(running_app, damaged) == []
    for image_id in [*firsts, *ids]:
        if image_id != damaged:
            assert stored_predictions(running_app, image_id) == [served]
    health = HTTP.get(f"{running_app.url}/api/health").json()
    assert health["prediction_backlog"] == 0


def _checkpoint_with_views(path: Path) -> Path:
    """A model whose checkpoint averages all the test-time views, as a trained one does."""
    torch.manual_seed(0)
    bundle = new_bundle(build_encoder("effnet_lite0", input_size=128), label_sigma=2.0)
    bundle.meta.test_time_views = list(TRANSFORMS)
    return save_checkpoint(path, bundle)


def test_served_views_are_the_first_n_of_the_models_own(tmp_path: Path) -> None:
    checkpoint = _checkpoint_with_views(tmp_path / "m.pt")
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    served: dict[int | None, list[Prediction]] = {}
    for views in (None, 1, 2):
        models = ModelServer(views=views)
        predictor = models.load(checkpoint, version_id=7).predictor
        expected = None if views is None else TRANSFORMS[:views]
        assert predictor.views == expected
        served[views], version = models.predict_many(
            [image, image[::-1]], shas=["a" * 64, "b" * 64]
        )
        assert version == 7 and len(served[views]) == 2
    # Fewer views average fewer maps: the predictions differ from the calibrated ones.
    assert not np.array_equal(served[1][0].heatmap, served[None][0].heatmap)


def test_serving_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().prediction_batch_size == 8 and Settings().prediction_views is None
    monkeypatch.setenv("HEATPROMPT_PREDICTION_VIEWS", "2")
    monkeypatch.setenv("HEATPROMPT_PREDICTION_BATCH_SIZE", "4")
    settings = Settings()
    assert settings.prediction_views == 2 and settings.prediction_batch_size == 4
    for bad in ({"prediction_views": 0}, {"prediction_batch_size": 0}):
        with pytest.raises(ValueError):
            Settings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ModelServer(views=0)


def test_the_views_setting_reaches_the_served_model(tmp_path: Path) -> None:
    from webapp.app import build_services

    checkpoint = _checkpoint_with_views(tmp_path / "m.pt")
    services = build_services(Settings(data_dir=tmp_path / "data", prediction_views=1))
    try:
        served = services.models.load(checkpoint, version_id=None)
        assert served.predictor.views == TRANSFORMS[:1]
    finally:
        services.shutdown()
