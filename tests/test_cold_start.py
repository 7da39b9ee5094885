"""Cold start: a new line's images, no labels and no model. Known-good images arrive as
labels (API, command line, inbox), the queue shows the most anomalous images first with a
share of random picks, and the first model trains itself from the first labels."""

from __future__ import annotations

import io
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import update

from model.checkpoint import read_checkpoint
from storage.review_queue import QueueKey
from storage.schema import CorrectionAction, ReviewStatus, Role, RunStatus, User
from storage.schema import Image as ImageRow
from tests.waiting import wait_for
from tests.webapp_fixtures import RunningApp
from webapp.app import create_app
from webapp.cli import main
from webapp.cold_start import GOOD_NOTE
from webapp.inbox import InboxScanner
from webapp.permissions import PermissionDenied
from webapp.retraining import FRESH_HEADS_EPOCHS
from webapp.review_order import STRATEGIES, MostAnomalous, OrderContext
from webapp.services import Services
from webapp.settings import Settings
from webapp.ui.common import model_line

ANOMALY_FIRST = STRATEGIES["anomaly"].keys(OrderContext(model_served=False, random_share=0))
UNCERTAINTY_FIRST = STRATEGIES["uncertainty"].keys(OrderContext(model_served=True))
AT_RANDOM = (QueueKey.random,)


def _png(seed: int, size: int = 48) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(60, 200, (size, size, 3), np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _reviewer(services: Services, name: str = "inspector", role: Role = Role.inspector) -> User:
    services.accounts.add_user(name, "a-long-password", role=role.value)
    user = services.user(name)
    assert user is not None
    return user


def _label(services: Services, image_id: int) -> tuple[CorrectionAction, str, str | None]:
    (only,) = services.repo.reviews.corrections_for(image_id)
    return only.action, only.author, only.note


@pytest.fixture
def cold(tmp_path: Path) -> Iterator[Services]:
    """Services with no model, no scheduler and no random picks (orders are exact)."""
    app = create_app(
        Settings(data_dir=tmp_path / "data", cold_start_random_share=0.0),
        ui=False,
        watch=False,
    )
    yield app.services
    app.stop()


# ---------------------------------------------------------------- known good on the way in
def test_an_upload_declared_good_is_the_uploaders_label_and_never_queued(
    running_app: RunningApp,
) -> None:
    with running_app.client("inspector") as c:
        answer = c.post("/api/images", files={"file": ("g.png", _png(1))}, data={"label": "good"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["labelled"] is True and body["duplicate"] is False
    services = running_app.app.services
    assert _label(services, body["id"]) == (CorrectionAction.defect_free, "inspector", GOOD_NOTE)
    assert services.repo.images.get_image(body["id"]).status is ReviewStatus.reviewed
    assert body["id"] not in services.repo.images.pending_image_ids()
    services.wait_for_predictions()


def test_a_duplicate_declared_good_gets_the_label_only_when_it_has_none(
    running_app: RunningApp,
) -> None:
    with running_app.client("inspector") as c:
        plain = c.post("/api/images", files={"file": ("d.png", _png(2))}).json()
        good = c.post("/api/images", files={"file": ("d.png", _png(2))}, data={"label": "good"})
        again = c.post("/api/images", files={"file": ("d.png", _png(2))}, data={"label": "good"})
    assert plain["labelled"] is False
    assert good.json()["id"] == plain["id"] and good.json()["duplicate"] is True
    assert good.json()["labelled"] is True and again.json()["labelled"] is False
    assert len(running_app.app.services.repo.reviews.corrections_for(plain["id"])) == 1
    running_app.app.services.wait_for_predictions()


def test_declaring_good_needs_the_review_permission_and_the_one_label(
    running_app: RunningApp,
) -> None:
    services = running_app.app.services
    before = services.counts()["images"]
    with running_app.client("viewer") as c:
        refused = c.post("/api/images", files={"file": ("v.png", _png(3))}, data={"label": "good"})
    with running_app.client("inspector") as c:
        wrong = c.post("/api/images", files={"file": ("w.png", _png(4))}, data={"label": "bad"})
    assert refused.status_code == 403
    assert wrong.status_code == 422 and "good" in wrong.json()["error"]
    assert services.counts()["images"] == before  # nothing stored by either
    with pytest.raises(PermissionDenied, match="viewer"):
        services.ingest(_png(5), "x.png", user=services.user("viewer"), label="good")


# ---------------------------------------------------------------- command line and inbox
def test_the_ingest_command_stores_a_folder_as_good_and_reports_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "line"
    (folder / "shift-2").mkdir(parents=True)
    (folder / "a.png").write_bytes(_png(10))
    (folder / "shift-2" / "b.png").write_bytes(_png(11))
    (folder / "shift-2" / "broken.png").write_bytes(b"\x89PNG but not really")
    (folder / "notes.txt").write_text("not an image")
    data_dir = tmp_path / "data"
    assert main(["ingest", str(folder), "--good", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("a.png: image ") and out[0].endswith("labelled defect-free")
    assert any(line.startswith("shift-2/broken.png: refused: ") for line in out)
    assert out[-1] == "2 stored, 0 duplicates, 1 refused; 2 labelled defect-free"
    assert main(["ingest", str(folder), "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 stored, 2 duplicates, 1 refused"

    app = create_app(Settings(data_dir=data_dir), ui=False, watch=False)
    try:
        good = app.services.repo.anomalies.known_good_images()
        assert len(good) == 2 and app.services.counts()["pending"] == 0
        assert {_label(app.services, g.id) for g in good} == {
            (CorrectionAction.defect_free, "cli", GOOD_NOTE)
        }
    finally:
        app.stop()
    assert main(["ingest", str(tmp_path / "missing"), "--data-dir", str(data_dir)]) == 2
    assert "missing: no such folder" in capsys.readouterr().err


def _drop(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    past = time.time() - 5
    os.utime(path, (past, past))


def test_files_dropped_in_inbox_good_are_ingested_as_good_and_moved(
    cold: Services, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    _drop(inbox, "line.png", _png(20))
    _drop(inbox / "good", "ok.png", _png(21))
    _drop(inbox / "good", "bad.png", b"not an image")
    scanner = InboxScanner(cold, inbox, settle_seconds=0.0)
    first = scanner.scan()  # a file must hold still between two passes
    assert sorted(first.waiting) == ["good/bad.png", "good/ok.png", "line.png"]
    report = scanner.scan()
    assert sorted(report.ingested) == ["good/ok.png", "line.png"]
    assert [name for name, _ in report.refused] == ["good/bad.png"]
    assert (inbox / "done" / "line.png").is_file() and (
        inbox / "good" / "done" / "ok.png"
    ).is_file()
    assert (inbox / "good" / "refused" / "bad.png.reason.txt").is_file()
    (good,) = cold.repo.anomalies.known_good_images()
    assert _label(cold, good.id) == (CorrectionAction.defect_free, "inbox", GOOD_NOTE)
    assert len(cold.repo.images.pending_image_ids()) == 1  # line.png waits for review
    assert scanner.scan().ingested == []  # nothing is read twice


# ---------------------------------------------------------------- review order
def _scored(services: Services, scores: list[float | None]) -> list[int]:
    """Images with the given anomaly scores (None: not scored), in arrival order."""
    model = services.repo.anomalies.register_normality_model(
        encoder_id="effnet_lite0", good_images=2, path="unused", sha256="0" * 64
    )
    ids = []
    for seed, score in enumerate(scores, start=100):
        image_id = services.ingest(_png(seed), f"{seed}.png", source="line").id
        if score is not None:
            services.repo.anomalies.add_anomaly(
                image_id, normality_model_id=model, heatmap=np.zeros((48, 48)), score=score
            )
        ids.append(image_id)
    return ids


def test_the_anomaly_order_serves_the_most_anomalous_first(cold: Services) -> None:
    ids = _scored(cold, [0.2, None, 0.9, 0.5])
    served = [cold.next_for_review(_reviewer(cold, f"r{i}"), "anomaly") for i in range(len(ids))]
    assert served == [ids[2], ids[3], ids[0], ids[1]]  # unscored last
    (image,) = [cold.repo.images.get_image(ids[2])]
    assert STRATEGIES["anomaly"].score(image, None) == pytest.approx(0.9)


def test_auto_is_anomaly_first_without_a_model_and_uncertainty_first_with_one(
    cold: Services,
) -> None:
    auto = STRATEGIES["auto"]
    assert next(iter(STRATEGIES)) == "auto"  # listed first
    assert auto.keys(OrderContext(model_served=True, random_share=1.0)) == UNCERTAINTY_FIRST
    assert auto.keys(OrderContext(model_served=False, random_share=0.0)) == ANOMALY_FIRST
    # Uncertainty (stored by a served model's predictions) says the opposite of anomaly.
    ids = _scored(cold, [0.1, 0.8])
    with cold.repo.session() as s, s.begin():
        s.execute(update(ImageRow).where(ImageRow.id == ids[0]).values(uncertainty=0.9))
        s.execute(update(ImageRow).where(ImageRow.id == ids[1]).values(uncertainty=0.1))
    viewer = _reviewer(cold, "watcher", Role.viewer)
    assert cold.models.current is None
    assert cold.next_for_review(viewer, "auto") == ids[1]
    assert cold.next_for_review(viewer, "uncertainty") == ids[0]


def test_a_share_of_cold_start_picks_is_random_and_seeded() -> None:
    context = OrderContext(model_served=False, random_share=0.2)
    picks = MostAnomalous(random.Random(7))
    keys = [picks.keys(context) for _ in range(500)]
    again = MostAnomalous(random.Random(7))
    assert [again.keys(context) for _ in range(500)] == keys  # seeded: the same sequence
    assert set(keys) == {ANOMALY_FIRST, AT_RANDOM}
    assert 60 <= keys.count(AT_RANDOM) <= 140  # about a fifth
    never = MostAnomalous(random.Random(7))
    assert {never.keys(OrderContext(False, 0.0)) for _ in range(200)} == {ANOMALY_FIRST}


def test_random_picks_reach_beyond_the_most_anomalous(tmp_path: Path) -> None:
    app = create_app(
        Settings(data_dir=tmp_path / "data", cold_start_random_share=1.0), ui=False, watch=False
    )
    try:
        services = app.services
        ids = _scored(services, [0.9, 0.1, 0.2, 0.3, 0.4])
        viewer = _reviewer(services, "watcher", Role.viewer)  # peeks, takes no lease
        seen = {services.next_for_review(viewer, "anomaly") for _ in range(40)}
        assert len(seen) >= 3 and seen <= set(ids)
    finally:
        app.stop()


# ---------------------------------------------------------------- the first model
def _defect_mask(size: int = 48) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[20:26, 8:40] = True
    return mask


def test_the_kth_label_trains_the_first_model_at_once(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        first_model_labels=2,
        first_model_min_defective=1,
        holdout_percent=0,
        retrain_check_minutes=600,  # the periodic check never fires during the test
        hot_swap_seconds=0.3,
        training={"epochs": 1, "max_minutes": 0.05},
    )
    app = create_app(settings, ui=False, scheduler=True)
    try:
        services = app.services
        inspector = _reviewer(services)
        assert "0 of 2 labels collected (0 defective, at least 1 needed)" in model_line(services)
        for seed in range(3):
            assert services.ingest(_png(seed), f"g{seed}.png", source="line", label="good").labelled
        waiting = [services.ingest(_png(s), f"p{s}.png", source="line").id for s in (7, 8, 9, 10)]
        # Declared-good images are labels (and training data), not the review K counts.
        assert services.repo.runs.active_training_run() is None
        line = model_line(services)
        assert (
            "**No model yet:** 0 of 2 labels collected (0 defective, at least 1 needed, "
            "plus 3 declared good)"
        ) in line
        assert "trains automatically" in line and "restart" not in line

        state = services.repo.reviews.image_state(waiting[0]).token
        services.save_correction(
            waiting[0], inspector, action="corrected", mask=_defect_mask(), based_on=state
        )
        assert services.repo.runs.active_training_run() is None  # 1 of 2 labels
        state = services.repo.reviews.image_state(waiting[1]).token
        services.save_correction(
            waiting[1], inspector, action="defect_free", mask=None, based_on=state
        )
        run = services.repo.runs.active_training_run()  # requested by the K-th save itself
        assert run is not None and run.trigger == "first-model"
        assert f"training run {run.id} is" in model_line(services)
        state = services.repo.reviews.image_state(waiting[3]).token
        services.save_correction(
            waiting[3], inspector, action="defect_free", mask=None, based_on=state
        )
        assert [r.id for r in services.training_runs()] == [run.id]  # never a second run

        busy = (RunStatus.queued, RunStatus.running)
        wait_for(
            lambda: services.training_run(run.id).status not in busy,
            "the first model's run to finish",
            timeout=600,
        )
        done = services.training_run(run.id)
        assert done.status is RunStatus.succeeded, done.error
        (version,) = services.model_versions()
        assert version.status.value == "active" and version.id == done.model_version_id
        assert version.note == "first model: promoted without a holdout comparison"
        # Fresh heads are bounded by the time budget, not by the fine-tuning epoch cap (1).
        meta, _ = read_checkpoint(version.checkpoint_path)
        assert meta.train_config["epochs"] == FRESH_HEADS_EPOCHS
        wait_for(lambda: services.models.current is not None, "the first model to be served")
        # The promotion re-predicts what still waits for review.
        wait_for(
            lambda: services.repo.images.latest_prediction(waiting[2]) is not None,
            "the queue to be re-predicted by the first model",
        )
        assert "Model version" in model_line(services)
    finally:
        app.stop()


def test_without_a_scheduler_here_the_first_run_is_queued_for_the_worker(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", first_model_labels=2, first_model_min_defective=0
    )
    app = create_app(settings, ui=False, watch=False)  # a web process: the worker trains
    try:
        services = app.services
        inspector = _reviewer(services)
        ids = [services.ingest(_png(n), f"{n}.png", source="line").id for n in (1, 2, 3)]

        def mark_good(image_id: int) -> None:
            state = services.repo.reviews.image_state(image_id).token
            services.save_correction(
                image_id, inspector, action="defect_free", mask=None, based_on=state
            )

        mark_good(ids[0])
        assert services.first_model_run() is None
        mark_good(ids[1])
        run = services.first_model_run()
        assert run is not None and run.status is RunStatus.queued
        assert run.trigger == "first-model"
        assert f"training run {run.id} is **queued**" in model_line(services)
        mark_good(ids[2])
        assert len(services.training_runs()) == 1
    finally:
        app.stop()
