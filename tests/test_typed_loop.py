"""Defect types through the active-learning loop: typed corrections → a scheduled
retraining run → a promoted model with a type head → predictions stored with types."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import load_bundle, new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.synth import make_surface
from storage.schema import RunStatus
from webapp.app import Application, create_app
from webapp.settings import Settings

SIZE = 128
KINDS = ["scratch", "stain", "pit", "crack", None]


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Application]:
    root = tmp_path_factory.mktemp("typed-loop")
    torch.manual_seed(0)
    start = save_checkpoint(
        root / "start.pt",
        new_bundle(build_encoder("effnet_lite0", input_size=SIZE), label_sigma=2.0),
    )
    settings = Settings(
        data_dir=root / "data",
        checkpoint=start,
        database_url=None,
        holdout_percent=20,
        retrain_min_corrections=10,
        retrain_max_minutes=0.5,
        retrain_epochs=8,
        retrain_check_minutes=60,
        hot_swap_seconds=0.3,
        promotion_margin=1.0,  # this test is about types, not about the gate
    )
    application = create_app(settings, ui=False, scheduler=True)
    yield application
    application.stop()


def test_typed_corrections_train_a_model_that_predicts_types(app: Application) -> None:
    services, repo = app.services, app.services.repo
    ids = {kind: repo.types.add(kind).id for kind in KINDS if kind}
    rng = np.random.default_rng(7)
    for i in range(50):
        kind = KINDS[i % len(KINDS)]
        image, mask = make_surface(rng, SIZE, kind)
        image_id = services.ingest(_png(image), f"{i}.png", source="line").id
        if mask.any():
            types = np.where(mask, ids[kind or ""], 0).astype(np.uint8)
            repo.reviews.save_correction(
                image_id, author="sim", action="corrected", mask=mask, types=types
            )
        else:
            repo.reviews.save_correction(image_id, author="sim", action="defect_free")
    services.wait_for_predictions()
    assert app.scheduler is not None
    run_id = app.scheduler.check(trigger="schedule")
    assert run_id is not None
    deadline = time.monotonic() + 600
    while repo.runs.get_training_run(run_id).status in (RunStatus.queued, RunStatus.running):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.5)
    run = repo.runs.get_training_run(run_id)
    assert run.status is RunStatus.succeeded, run.error
    version = repo.registry.active_version()
    assert version is not None and version.id == run.model_version_id
    bundle = load_bundle(version.checkpoint_path)
    assert set(bundle.meta.defect_types) <= set(ids) and bundle.meta.defect_types
    deadline = time.monotonic() + 60
    while services.models.current is None or services.models.current.version_id != version.id:
        assert time.monotonic() < deadline, "the new model was not swapped in"
        time.sleep(0.2)
    named = set()
    for i in range(10):
        kind = KINDS[i % 4]
        image, _ = make_surface(np.random.default_rng(100 + i), SIZE, kind)
        image_id = services.ingest(_png(image), f"new-{i}.png").id
        services.wait_for_predictions()
        pred = repo.images.latest_prediction(image_id)
        assert pred is not None and pred.model_version_id == version.id
        regions = repo.images.predicted_regions(pred.id)
        known = {t.id: t.name for t in repo.types.list()}
        named |= {known[r.type_id] for r in regions}
        view = services.image_view(image_id)["prediction"]["regions"]
        assert [r["type"] for r in view] == [known[r.type_id] for r in regions]
    assert named & set(bundle.meta.defect_types), named
