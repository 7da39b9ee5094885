"""The active-learning loop end to end: corrections → scheduled retraining in a separate
process → gated promotion → hot-swap in the serving process; and its failure modes."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image
from sqlalchemy import Engine, text

from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.hashing import sha256_file
from model.synth import make_surface
from storage.schema import RunStatus, VersionStatus
from tests.webapp_fixtures import ENGINES, RunningApp
from webapp.app import Application, create_app
from webapp.retraining import RetrainConfig
from webapp.scheduler import JOB_ID, RetrainScheduler
from webapp.settings import Settings

SIZE = 128


@dataclass
class Loop:
    app: Application
    truth: dict[int, np.ndarray]  # image id → true mask
    first_version: int

    @property
    def services(self):  # type: ignore[no-untyped-def]
        return self.app.services

    @property
    def scheduler(self) -> RetrainScheduler:
        assert self.app.scheduler is not None
        return self.app.scheduler


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def wait_for_run(loop: Loop, run_id: int, timeout: float = 300.0) -> RunStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = loop.services.repo.runs.get_training_run(run_id).status
        if status not in (RunStatus.queued, RunStatus.running):
            return status
        time.sleep(0.5)
    raise TimeoutError(f"training run {run_id} did not finish in {timeout} s")


def wait_until(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    root = tmp_path_factory.mktemp("loop")
    torch.manual_seed(0)
    start = save_checkpoint(
        root / "start.pt",
        new_bundle(build_encoder("effnet_lite0", input_size=SIZE), label_sigma=2.0),
    )
    settings = Settings(
        data_dir=root / "data",
        checkpoint=start,
        database_url=None,
        holdout_percent=25,
        retrain_min_corrections=10,
        retrain_max_minutes=0.5,
        retrain_epochs=12,
        retrain_check_minutes=60,
        hot_swap_seconds=0.3,
        promotion_margin=0.01,
    )
    app = create_app(settings, ui=False, scheduler=True)
    rng = np.random.default_rng(5)
    truth = {}
    kinds = ["scratch", "stain", "pit", "crack", "particles", None]
    for i in range(48):
        image, mask = make_surface(rng, SIZE, kinds[i % len(kinds)])
        truth[app.services.ingest(_png(image), f"{i}.png", source="line").id] = mask
    app.services.wait_for_predictions()
    first = app.services.models.current
    assert first is not None and first.version_id is not None
    yield Loop(app, truth, first.version_id)
    app.stop()


def test_corrections_trigger_a_better_model_that_is_swapped_in(loop: Loop) -> None:
    repo = loop.services.repo
    assert loop.scheduler.check(trigger="schedule") is None  # no corrections yet
    for image_id, mask in loop.truth.items():  # simulated inspectors save the true masks
        action = "corrected" if mask.any() else "defect_free"
        repo.reviews.save_correction(
            image_id, author="sim", action=action, mask=mask if mask.any() else None
        )
    run_id = loop.scheduler.check(trigger="schedule")
    assert run_id is not None
    assert loop.scheduler.check(trigger="schedule") is None  # never two at once
    assert wait_for_run(loop, run_id) is RunStatus.succeeded
    run = repo.runs.get_training_run(run_id)
    assert run.metrics["promoted"], run.metrics["decision"]
    candidate = run.metrics["candidate_holdout"]["score"]
    starting = run.metrics["active_holdout"]["score"]
    assert candidate > starting, (candidate, starting)
    assert len(run.metrics["history"]) >= 1 and run.corrections_used > 0
    new_version = run.model_version_id
    assert repo.registry.active_version().id == new_version  # type: ignore[union-attr]
    assert wait_until(lambda: loop.services.models.current.version_id == new_version)
    image, _ = make_surface(np.random.default_rng(99), SIZE, "stain")
    image_id = loop.services.ingest(_png(image), "after.png").id
    loop.services.wait_for_predictions()
    assert repo.images.latest_prediction(image_id).model_version_id == new_version  # type: ignore[union-attr]
    assert not list((loop.services.settings.data_dir / "models").glob(".run-*"))


def test_a_worse_candidate_is_rejected_and_serving_is_unchanged(loop: Loop) -> None:
    repo = loop.services.repo
    served = loop.services.models.current.version_id  # type: ignore[union-attr]
    ids = [i for i in loop.truth if not repo.images.get_image(i).holdout]
    masks = [loop.truth[i] for i in ids]
    for image_id, mask in zip(ids, masks[1:] + masks[:1], strict=True):  # shuffled labels
        repo.reviews.save_correction(
            image_id,
            author="sim",
            action="corrected",
            mask=mask if mask.any() else np.ones_like(mask),
        )
    good = loop.scheduler.config
    loop.scheduler.config = dataclasses.replace(good, from_scratch=True, max_minutes=0.02)
    try:
        run_id = loop.scheduler.request("test")
        assert wait_for_run(loop, run_id) is RunStatus.succeeded
    finally:
        loop.scheduler.config = good
    run = repo.runs.get_training_run(run_id)
    assert not run.metrics["promoted"] and "rejected" in run.metrics["decision"]
    version = {v.id: v for v in repo.registry.model_versions()}[run.model_version_id]
    assert version.status is VersionStatus.rejected
    assert run.metrics["candidate_holdout"]["score"] < run.metrics["active_holdout"]["score"]
    assert repo.registry.active_version().id == served  # type: ignore[union-attr]
    assert loop.app.hot_swap is not None and not loop.app.hot_swap.check()  # nothing to swap
    assert loop.services.models.current.version_id == served  # type: ignore[union-attr]


def test_killed_training_leaves_serving_intact_and_the_next_run_succeeds(loop: Loop) -> None:
    repo = loop.services.repo
    served = loop.services.models.current.version_id  # type: ignore[union-attr]
    versions_before = len(repo.registry.model_versions())
    run_id = loop.scheduler.request("test")
    assert wait_until(lambda: repo.runs.get_training_run(run_id).status is RunStatus.running, 60)
    assert wait_until(lambda: repo.runs.get_training_run(run_id).metrics.get("history"), 120)
    process = loop.scheduler._process
    assert process is not None and process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    assert wait_for_run(loop, run_id, timeout=60) is RunStatus.failed
    assert "exited with code" in (repo.runs.get_training_run(run_id).error or "")
    assert len(repo.registry.model_versions()) == versions_before
    assert loop.services.models.current.version_id == served  # type: ignore[union-attr]
    assert not (loop.services.settings.data_dir / "models" / f"run-{run_id}.pt").exists()
    next_run = loop.scheduler.request("test")
    assert next_run != run_id and wait_for_run(loop, next_run) is RunStatus.succeeded


def test_restart_keeps_one_job_and_fails_orphaned_runs(loop: Loop) -> None:
    repo = loop.services.repo
    orphan = repo.runs.create_training_run(trigger="test", watermark=0)
    repo.runs.update_training_run(orphan, status="running")  # its worker died with the machine
    again = RetrainScheduler(loop.services, loop.scheduler.config, check_minutes=60).start()
    try:
        with repo.engine.connect() as conn:
            jobs = conn.execute(text("select id from apscheduler_jobs")).scalars().all()
        assert jobs == ["retrain-check"]
        assert repo.runs.get_training_run(orphan).status is RunStatus.failed
    finally:
        again._scheduler.shutdown(wait=False)  # type: ignore[union-attr]
        import webapp.scheduler as module

        module._current = loop.scheduler


def test_corrupt_or_foreign_checkpoints_are_refused(loop: Loop, tmp_path: Path) -> None:
    repo, watcher = loop.services.repo, loop.app.hot_swap
    assert watcher is not None
    served = loop.services.models.current.version_id  # type: ignore[union-attr]
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04 definitely not a checkpoint")
    foreign = save_checkpoint(
        tmp_path / "tiny.pt", new_bundle(build_encoder("sam_tiny", input_size=64), label_sigma=2.0)
    )
    versions = []
    for path, sha in (
        (corrupt, sha256_file(corrupt)),
        (foreign, sha256_file(foreign)),
        (foreign, "0" * 64),
    ):
        version = repo.registry.register_model_version(
            checkpoint_path=str(path), checkpoint_sha256=sha, encoder_id="?"
        )
        versions.append(version)
        repo.registry.activate(version)
        watcher.wake()
        assert wait_until(lambda v=version: v in watcher.refused, 60)
        assert loop.services.models.current.version_id == served  # type: ignore[union-attr]
        assert f"active version {version} cannot be loaded" in (watcher.problem() or "")
    repo.registry.activate(served)
    corrupt_v, foreign_v, replaced_v = versions
    assert "corrupt.pt" in watcher.refused[corrupt_v]
    assert "effnet_lite0" in watcher.refused[foreign_v] or "encoder" in watcher.refused[foreign_v]
    assert "does not match the expected" in watcher.refused[replaced_v]  # the registered sha


def test_no_request_fails_during_swaps(loop: Loop) -> None:
    repo = loop.services.repo
    promoted = [
        v.id
        for v in repo.registry.model_versions()
        if v.status is not VersionStatus.rejected and v.encoder_id == "effnet_lite0"
    ][:2]
    assert len(promoted) == 2
    loop.services.accounts.add_user("line", "line-password", role="inspector")
    token = loop.services.accounts.issue_token("line")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(loop.app.api, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    assert wait_until(lambda: server.started, 30)
    image, _ = make_surface(np.random.default_rng(7), SIZE, "crack")
    payload = _png(image)
    stop = threading.Event()
    outcomes: list[tuple[int, int | None]] = []

    def client() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            while not stop.is_set():
                r = c.post(
                    f"http://127.0.0.1:{port}/api/predict", files={"file": ("x.png", payload)}
                )
                outcomes.append((r.status_code, r.json().get("model_version")))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for target in promoted * 2:  # four swaps back and forth
            answered = len(outcomes)
            repo.registry.activate(target)
            assert wait_until(lambda t=target: loop.services.models.current.version_id == t, 60)
            # Requests keep flowing across the swap: one is answered by the new version.
            assert wait_until(lambda t=target, n=answered: (200, t) in outcomes[n:], 120)
    finally:
        stop.set()
        thread.join()
        server.should_exit = True
    assert outcomes and all(code == 200 for code, _ in outcomes)
    assert {v for _, v in outcomes} >= set(promoted)


def test_cancelling_stops_the_run_without_a_new_version(loop: Loop) -> None:
    repo = loop.services.repo
    served = loop.services.models.current.version_id  # type: ignore[union-attr]
    versions_before = len(repo.registry.model_versions())
    run_id = loop.scheduler.request("test")
    assert wait_until(lambda: repo.runs.get_training_run(run_id).status is RunStatus.running, 60)
    assert repo.runs.cancel_training_run(run_id)
    assert wait_until(lambda: not loop.scheduler.busy, 120)
    run = repo.runs.get_training_run(run_id)
    assert run.status is RunStatus.cancelled and "cancelled" in run.log_tail
    assert len(repo.registry.model_versions()) == versions_before
    assert loop.services.models.current.version_id == served  # type: ignore[union-attr]
    assert not repo.runs.cancel_training_run(run_id)  # already over


def _move_stored_check(engine: Engine, when: datetime) -> None:
    """Set the stored retraining check's next run time, without a running scheduler."""
    with engine.begin() as conn:
        state = conn.execute(
            text("select job_state from apscheduler_jobs where id = :id"), {"id": JOB_ID}
        ).scalar_one()
        job = pickle.loads(state)
        job["next_run_time"] = when
        state = pickle.dumps(job, pickle.HIGHEST_PROTOCOL)
        conn.execute(
            text(
                "update apscheduler_jobs set next_run_time = :at, job_state = :state where id = :id"
            ),
            {"at": when.timestamp(), "state": state, "id": JOB_ID},
        )


@pytest.mark.parametrize("running_app", ENGINES, indirect=True)
def test_a_check_missed_during_downtime_runs_at_start(running_app: RunningApp) -> None:
    services = running_app.app.services
    repo = services.repo
    hourly = 60.0  # the next regular check is an hour away: only a catch-up can run now
    config = RetrainConfig(min_new_corrections=1, max_minutes=0.5, epochs=1)
    RetrainScheduler(services, config, check_minutes=hourly).start().stop()
    # The worker is down while its stored check falls due: move the stored check into the
    # past, as the clock would (APScheduler 3's job store keeps it in the row and its state).
    _move_stored_check(repo.engine, datetime.now(timezone.utc) - timedelta(minutes=5))
    run_id, created = repo.runs.enqueue_training_run(trigger="api:ops")  # work queued meanwhile
    assert created
    restarted = RetrainScheduler(services, config, check_minutes=hourly).start()
    try:
        assert wait_until(
            lambda: repo.runs.get_training_run(run_id).status is not RunStatus.queued, 120
        )
        run = repo.runs.get_training_run(run_id)
        assert run.trigger == "api:ops" and run.started_at is not None
        with repo.engine.connect() as conn:
            next_check = conn.execute(
                text("select next_run_time from apscheduler_jobs where id = :id"), {"id": JOB_ID}
            ).scalar_one()
        # The catch-up fired once and the job went back to its hourly rhythm.
        assert next_check > time.time() + 0.9 * hourly * 60
        # No labelled images in this app: the started run ends as failed, with the reason.
        unfinished = (RunStatus.queued, RunStatus.running)
        assert wait_until(lambda: repo.runs.get_training_run(run_id).status not in unfinished, 120)
        error = repo.runs.get_training_run(run_id).error or ""
        assert "no labelled images" in error, error
        assert wait_until(lambda: not restarted.busy, 120)
    finally:
        restarted.stop()
