"""The normality model served by the app: fitted from known-good images, no labels of
defects, no training run; refitted as good images arrive; a damaged file never served."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.cpu_threads import cpu_cores, pin_intra_op_threads
from model.hashing import sha256_file
from storage.schema import CorrectionAction
from tests.storage_fixtures import ENGINES, postgres_schema
from tests.waiting import GUARD_S, wait_for
from webapp import anomaly_service
from webapp.anomaly_service import AnomalyService
from webapp.app import build_services, create_app
from webapp.services import Services
from webapp.settings import Settings
from webapp.ui.common import model_line

HEIGHT, WIDTH = 96, 128
DEFECT = (slice(36, 60), slice(52, 80))  # rows, columns of the synthetic defect

SLOW_FIT_S = 1.0


def surface(seed: int, *, defect: bool = False) -> np.ndarray:
    """A brushed-metal-like surface (the same pattern, fresh noise per seed); a dark blot
    where `defect`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = 140 + 30 * np.sin(x / 3.0) + 10 * np.sin(y / 11.0) + rng.normal(0, 6, (HEIGHT, WIDTH))
    if defect:
        base[DEFECT] = 25 + rng.normal(0, 4, base[DEFECT].shape)
    gray = np.clip(base, 0, 255).astype(np.uint8)
    return np.stack([gray, gray, (gray * 0.9).astype(np.uint8)], axis=-1)


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def add_good(services: Services, seed: int) -> int:
    """Store an image and mark it defect-free (a known-good image)."""
    image_id = services.ingest(png(surface(seed)), f"good-{seed}.png", source="test").id
    services.repo.reviews.save_correction(
        image_id, author="inspector", action=CorrectionAction.defect_free
    )
    return image_id


def settings_for(root: Path, **extra: object) -> Settings:
    """No supervised model; a small encoder input and no wait between refits."""
    values: dict[str, object] = {"anomaly_input_sizes": [128], "anomaly_refit_seconds": 0}
    return Settings(data_dir=root / "data", **{**values, **extra})


@pytest.fixture(params=ENGINES)
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    """Fresh services with no supervised model, on SQLite and on PostgreSQL."""
    with ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = stack.enter_context(postgres_schema("anomaly"))
        built = build_services(settings_for(tmp_path, database_url=url))
        stack.callback(built.repo.engine.dispose)
        stack.callback(built.shutdown)
        yield built


def test_fits_from_good_images_serves_and_scores_the_pending_ones(services: Services) -> None:
    anomaly = AnomalyService(services.repo, services.settings, refits=True)
    services.anomaly = anomaly
    pending_good = services.ingest(png(surface(50)), "pending-good.png", source="test").id
    pending_bad = services.ingest(png(surface(51, defect=True)), "bad.png", source="test").id
    add_good(services, 1)
    anomaly.check()
    assert anomaly.current is None  # one good image is not enough
    assert anomaly.score_image(pending_bad) is None  # nothing served: a no-op
    assert services.model_status()["state"] == "no_model"
    goods = [add_good(services, seed) for seed in (2, 3)]

    anomaly.check()

    row = services.repo.anomalies.newest_normality_model()
    assert row is not None and anomaly.current == row.id
    assert row.good_images == 3 and row.encoder_id == "effnet_lite0"
    path = Path(row.path)
    assert path.parent == (services.settings.data_dir / "normality").resolve()
    assert path.name.startswith("normality-") and sha256_file(path) == row.sha256
    good_score = services.repo.anomalies.latest_anomaly(pending_good)
    bad_score = services.repo.anomalies.latest_anomaly(pending_bad)
    assert good_score is not None and bad_score is not None
    assert good_score.normality_model_id == bad_score.normality_model_id == row.id
    assert bad_score.score > good_score.score
    assert services.repo.images.get_image(pending_bad).anomaly_score == bad_score.score
    assert all(services.repo.anomalies.latest_anomaly(i) is None for i in goods)  # reviewed
    heat = services.heatmap(pending_bad, "anomaly")
    assert heat.shape == (HEIGHT, WIDTH)
    outside = np.ones(heat.shape, bool)
    outside[DEFECT] = False
    assert heat[DEFECT].mean() > heat[outside].mean() + 0.1

    status = services.health()
    assert status["state"] == "anomaly_only" and status["normality_model"] == row.id
    view = services.image_view(pending_bad)["anomaly"]
    assert view["version"] == row.id and view["score"] == bad_score.score
    assert view["good_images"] == 3

    anomaly.check()  # nothing changed: no refit, nothing scored twice
    assert len(services.repo.anomalies.normality_models()) == 1
    assert services.repo.anomalies.latest_anomaly(pending_bad).id == bad_score.id


def test_a_damaged_file_is_skipped_and_the_refitting_process_replaces_it(
    tmp_path: Path,
) -> None:
    services = build_services(settings_for(tmp_path))
    try:
        for seed in (1, 2):
            add_good(services, seed)
        AnomalyService(services.repo, services.settings, refits=True).check()
        row = services.repo.anomalies.newest_normality_model()
        assert row is not None
        Path(row.path).write_bytes(b"not a normality model")

        serving = AnomalyService(services.repo, services.settings, refits=False)
        serving.check()
        assert serving.current is None
        problem = serving.problem()
        assert problem is not None
        assert f"normality model {row.id} cannot be loaded" in problem and "sha256" in problem
        serving.check()
        assert serving.current is None and row.id in serving.refused  # not retried

        owner = AnomalyService(services.repo, services.settings, refits=True)
        owner.check()
        newest = services.repo.anomalies.newest_normality_model()
        assert newest is not None and newest.id != row.id and owner.current == newest.id
        assert owner.problem() is None
        serving.check()
        assert serving.current == newest.id and serving.problem() is None
    finally:
        services.shutdown()


def fitted_then_one_more_good(services: Services) -> tuple[AnomalyService, int]:
    """A refitting service fitted on two good images, then a third marked good: the
    service and the id of its first model."""
    for seed in (1, 2):
        add_good(services, seed)
    anomaly = AnomalyService(services.repo, services.settings, refits=True)
    anomaly.check()
    first = anomaly.current
    assert first is not None
    add_good(services, 3)
    return anomaly, first


def test_refits_wait_for_the_refit_interval(tmp_path: Path) -> None:
    services = build_services(settings_for(tmp_path, anomaly_refit_seconds=600))
    try:
        anomaly, first = fitted_then_one_more_good(services)
        pending = services.ingest(png(surface(7)), "pending.png", source="test").id
        wait = anomaly.check()
        assert 0 < wait <= 600
        assert anomaly.current == first and len(services.repo.anomalies.normality_models()) == 1
        scored = services.repo.anomalies.latest_anomaly(pending)  # meanwhile, by the old model
        assert scored is not None and scored.normality_model_id == first
    finally:
        services.shutdown()


def test_a_refit_waits_at_least_as_long_as_the_last_fit_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no interval set, a slow fit still leaves the encoder half of its time."""
    real_fit = anomaly_service.fit_ensemble

    def slow_fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        fitted = real_fit(*args, **kwargs)
        time.sleep(SLOW_FIT_S)  # as a fit of many good images on a small CPU
        return fitted

    monkeypatch.setattr(anomaly_service, "fit_ensemble", slow_fit)
    services = build_services(settings_for(tmp_path))  # anomaly_refit_seconds=0
    try:
        anomaly, first = fitted_then_one_more_good(services)
        wait = anomaly.check()
        assert wait > 0.5 * SLOW_FIT_S  # the interval alone (0 s) would refit now
        assert anomaly.current == first and len(services.repo.anomalies.normality_models()) == 1
        wait_for(lambda: anomaly.check() >= 0 and anomaly.current != first, "the refit", 60)
        assert len(services.repo.anomalies.normality_models()) == 2
    finally:
        services.shutdown()


def test_a_fit_decodes_only_the_good_images_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond the fit's bound, the sample is drawn before decoding: thousands of good
    images are never all held in memory at once."""
    monkeypatch.setattr(anomaly_service, "MAX_FIT_IMAGES", 2)
    decoded: list[str] = []
    real_decode = anomaly_service.decode_image

    def counting_decode(data, *, name):  # type: ignore[no-untyped-def]
        decoded.append(name)
        return real_decode(data, name=name)

    monkeypatch.setattr(anomaly_service, "decode_image", counting_decode)
    services = build_services(settings_for(tmp_path))
    try:
        for seed in (1, 2, 3, 4):
            add_good(services, seed)
        anomaly = AnomalyService(services.repo, services.settings, refits=True)
        anomaly.check()
        assert anomaly.served is not None and anomaly.served.model.good_images == 2
        assert len(decoded) == 2
        row = services.repo.anomalies.newest_normality_model()
        assert row is not None and row.metrics["known_good_labels"] == 4
    finally:
        services.shutdown()


def test_a_change_of_input_sizes_refits_with_the_new_sizes(tmp_path: Path) -> None:
    """A deployment whose model was fitted at other input sizes (an older default, or a
    changed setting) refits at the configured ones on its next check."""
    services = build_services(settings_for(tmp_path))
    try:
        for seed in (1, 2):
            add_good(services, seed)
        before = AnomalyService(services.repo, services.settings, refits=True)
        before.check()
        assert before.served is not None and before.served.model.input_sizes == (128,)
        changed = settings_for(tmp_path, anomaly_input_sizes=[64, 128])
        after = AnomalyService(services.repo, changed, refits=True)
        after.check()
        assert after.served is not None and after.served.model.input_sizes == (64, 128)
        assert len(services.repo.anomalies.normality_models()) == 2
        after.check()  # fitted at the configured sizes: nothing more to do
        assert len(services.repo.anomalies.normality_models()) == 2
    finally:
        services.shutdown()


def test_a_refit_under_way_shows_its_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Health and the page's model line say that the anomaly maps are being fitted, with
    the members done; nothing once the fit ends."""
    real_fit = anomaly_service.fit_ensemble
    fitted, release = threading.Event(), threading.Event()

    def held_fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        model = real_fit(*args, **kwargs)
        fitted.set()
        release.wait(GUARD_S)
        return model

    monkeypatch.setattr(anomaly_service, "fit_ensemble", held_fit)
    services = build_services(settings_for(tmp_path))
    try:
        for seed in (1, 2, 3):
            add_good(services, seed)
        services.anomaly = AnomalyService(services.repo, services.settings, refits=True)
        assert services.health()["normality_fit"] is None
        worker = threading.Thread(target=services.anomaly.check)
        worker.start()
        assert fitted.wait(GUARD_S)
        fit = services.health()["normality_fit"]
        assert fit["good_images"] == 3 and (fit["done"], fit["total"]) == (1, 1)
        assert fit["elapsed_s"] >= 0
        assert "Fitting the **anomaly maps** to 3 images" in model_line(services)
        release.set()
        worker.join(GUARD_S)
        assert services.health()["normality_fit"] is None
        assert services.health()["state"] == "anomaly_only"
        assert "Fitting" not in model_line(services)
    finally:
        release.set()
        services.shutdown()


def test_the_app_refits_at_once_when_a_good_label_is_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A long tick: only the wake-up of a save can make the refit happen within the test.
    settings = settings_for(tmp_path, hot_swap_seconds=600)
    app = create_app(settings, ui=False, watch=False, refit_anomalies=True)
    try:
        services = app.services
        assert services.anomaly is not None and app.anomaly is services.anomaly
        services.accounts.add_user("inspector", "pw-inspector", role="inspector")
        inspector = services.user("inspector")
        assert inspector is not None

        def mark_good(seed: int) -> None:
            image_id = services.ingest(png(surface(seed)), f"{seed}.png", source="test").id
            state = services.image_view(image_id)["state"]
            services.save_correction(
                image_id, inspector, action="defect_free", mask=None, based_on=state
            )

        with caplog.at_level(logging.WARNING):
            mark_good(1)
            mark_good(2)
            first = wait_for(lambda: services.anomaly.current, "the first normality model")
            mark_good(3)
            second = wait_for(
                lambda: (services.anomaly.current or 0) > first and services.anomaly.current,
                "the refit with a third good image",
            )
            row = services.repo.anomalies.newest_normality_model()
            assert row is not None and row.id == second and row.good_images == 3

            # A new image is scored in the background, with no supervised model and no error.
            new = services.ingest(png(surface(9, defect=True)), "new.png", source="test").id
            assert services.wait_for_predictions(120)
            scored = wait_for(
                lambda: services.repo.anomalies.latest_anomaly(new), "the new image's score"
            )
            assert scored.normality_model_id == second
        ours = [r for r in caplog.records if r.name.startswith("webapp")]
        assert not [r for r in ours if r.levelno >= logging.WARNING], caplog.text
    finally:
        app.stop()


def test_the_anomaly_loop_computes_with_every_core(tmp_path: Path) -> None:
    """Prediction workers set PyTorch's threads to their share of the cores; the loop that
    fits and scores sets its own thread back to every core before its first check."""
    seen: list[int] = []

    class Probe(AnomalyService):
        def tick(self) -> float:
            seen.append(torch.get_num_threads())
            self._stop.set()
            return 0.0

    one = threading.Thread(target=pin_intra_op_threads, args=(1,))  # as a worker does
    one.start()
    one.join()
    services = build_services(settings_for(tmp_path))
    probe = Probe(services.repo, services.settings, refits=False)
    try:
        probe.start()
        wait_for(lambda: bool(seen), "the probe's first check", GUARD_S)
    finally:
        probe.stop()
        services.shutdown()
    assert seen == [cpu_cores()]
