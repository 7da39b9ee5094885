"""The retraining scheduler: APScheduler 3 with its job store in the application database.

A check runs every N minutes (and on demand); it starts a training run when at least K new
corrections arrived since the last successful run's watermark. Training runs in a separate
process (spawned), so the web process keeps answering; only one runs at a time; runs left
`running` by a worker that died are marked failed on the next check or start. A scheduler
that starts with no model version yet first trains the starter heads the first model will
start from (`model.starter`), in the same one-at-a-time process slot, while the first labels
are given; a run requested meanwhile is queued behind it. The starter's process runs at a
lower CPU priority: nobody waits for it yet, while the anomaly maps of the same minutes are
what the inspectors are shown first.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from dataclasses import replace
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from storage.schema import RunStatus
from webapp.retraining import RetrainConfig
from webapp.services import Services
from webapp.settings import Settings

log = logging.getLogger(__name__)
JOB_ID = "retrain-check"
# Niceness the starter's process adds to its own. On the cold-start benchmark (2 cores) the
# anomaly scores of 100 images came after 154 s with the starter training beside them at
# the same priority, and after 93 s with no starter training.
STARTER_NICENESS = 10
_current: RetrainScheduler | None = None  # the job store pickles a function, not objects


def scheduled_check() -> None:
    """APScheduler's job target: run the check of this process's scheduler."""
    if _current is not None:
        _current.check(trigger="schedule")


def training_process_main(
    settings_data: dict[str, Any], run_id: int, config: RetrainConfig
) -> None:
    """Entry point of the spawned training process (`config` travels pickled, as it is)."""
    from storage.blobs import BlobStore
    from storage.engine import make_engine
    from storage.repository import Repository
    from webapp.retraining import run_retraining

    settings = Settings(**settings_data)
    repo = Repository(
        make_engine(settings.resolved_database_url),
        BlobStore(settings.blob_dir),
        holdout_percent=settings.holdout_percent,
    )
    run_retraining(
        repo,
        run_id,
        models_dir=settings.models_dir,
        cache_dir=settings.feature_cache_dir,
        config=config,
        sam_checkpoint=settings.sam_checkpoint,
    )


def process_config(config: RetrainConfig, *, yields: bool) -> RetrainConfig:
    """`config` for a training process: unless its threads are set, a run leaves the web
    process a core; a process that `yields` (runs at a lower priority, as the starter's)
    takes every core, since the app's own work comes first on them anyway."""
    if config.threads is not None:
        return config
    cores = os.cpu_count() or 2
    return replace(config, threads=cores if yields else max(1, cores - 1))


def starter_process_main(settings_data: dict[str, Any], config: RetrainConfig) -> None:
    """Entry point of the spawned process that prepares the starter heads."""
    from webapp.retraining import prepare_starter

    logging.basicConfig(level=logging.INFO)
    if hasattr(os, "nice"):  # POSIX
        os.nice(STARTER_NICENESS)
    settings = Settings(**settings_data)
    prepare_starter(
        models_dir=settings.models_dir,
        cache_dir=settings.feature_cache_dir,
        config=config,
        sam_checkpoint=settings.sam_checkpoint,
    )


class RetrainScheduler:
    """Owns the APScheduler instance and the training process it may start."""

    def __init__(self, services: Services, config: RetrainConfig, *, check_minutes: float) -> None:
        self.services = services
        self.config = config
        self.check_minutes = check_minutes
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._stopped = False

    def start(self) -> RetrainScheduler:
        global _current
        _current = self
        interrupted = self.services.repo.runs.fail_interrupted_runs(
            "interrupted: the worker stopped"
        )
        for run_id in interrupted:
            log.warning("training run %s was interrupted; marked failed", run_id)
        store = SQLAlchemyJobStore(engine=self.services.repo.engine)
        self._scheduler = BackgroundScheduler(
            jobstores={"default": store},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._scheduler.start()
        # One stored job for the whole deployment. An existing job is kept as it is, so a
        # check that fell due while no scheduler ran fires once (coalesced) right now; it
        # is only re-timed when the configured interval changed.
        job = self._scheduler.get_job(JOB_ID)
        if job is None:
            self._scheduler.add_job(
                scheduled_check, "interval", minutes=self.check_minutes, id=JOB_ID
            )
        elif job.trigger.interval.total_seconds() != self.check_minutes * 60:
            self._scheduler.reschedule_job(JOB_ID, trigger="interval", minutes=self.check_minutes)
        self._prepare_starter()
        return self

    def _prepare_starter(self) -> None:
        """With no model version yet and the first model set to start from the starter
        heads, train them now, unless a run is already waiting (the process returns at once
        when they exist)."""
        repo = self.services.repo
        if self.config.first_model_start != "starter" or repo.registry.model_versions():
            return
        with self._lock:
            if self.busy or repo.runs.active_training_run() is not None:
                return
            self._process = self._spawn(
                starter_process_main,
                "starter",
                (self.services.settings.model_dump(), process_config(self.config, yields=True)),
            )
            threading.Thread(target=self._watch, args=(self._process, None), daemon=True).start()
            log.info("preparing the starter heads, pid %s", self._process.pid)

    def stop(self) -> None:
        global _current
        with self._lock:
            self._stopped = True  # no new training process from this scheduler
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        _current = None

    def check(self, *, trigger: str) -> int | None:
        """Start a queued run (e.g. from the API of another process), or a new one when
        enough new corrections exist; returns the id of the run started, or None."""
        with self._lock:
            self._reap()
            if self.busy:
                return None
            repo = self.services.repo
            waiting = repo.runs.active_training_run()
            if waiting is not None:
                # Queued (by this or another process): start it. Running: another worker has it.
                return self._launch(waiting.id) if waiting.status is RunStatus.queued else None
            new = repo.reviews.count_corrections_since(repo.runs.last_successful_watermark())
            if new < self.config.min_new_corrections:
                return None
            run_id, created = repo.runs.enqueue_training_run(trigger=trigger)
            return self._launch(run_id) if created else None

    def request(self, trigger: str) -> int:
        """Train now (on demand): the id of the started run, or of the one already busy."""
        with self._lock:
            self._reap()
            run_id, _ = self.services.repo.runs.enqueue_training_run(trigger=trigger)
            run = self.services.repo.runs.get_training_run(run_id)
            if run.status is RunStatus.queued and not self.busy:
                self._launch(run_id)
            return run_id

    @staticmethod
    def _spawn(
        target: Any, name: str, args: tuple[Any, ...]
    ) -> multiprocessing.process.BaseProcess:
        process = multiprocessing.get_context("spawn").Process(
            target=target, name=name, args=args, daemon=True
        )
        process.start()
        return process

    def _launch(self, run_id: int) -> int:
        """Spawn the training process for a queued run (caller holds the lock)."""
        self._process = self._spawn(
            training_process_main,
            f"train-{run_id}",
            (
                self.services.settings.model_dump(),
                run_id,
                process_config(self.config, yields=False),
            ),
        )
        threading.Thread(target=self._watch, args=(self._process, run_id), daemon=True).start()
        log.info("training run %s started, pid %s", run_id, self._process.pid)
        return run_id

    def _watch(self, process: multiprocessing.process.BaseProcess, run_id: int | None) -> None:
        """After a training process ends: fail its run (None: the starter's, no run) if it
        died without finishing it, then start a run that was queued meanwhile."""
        process.join()
        repo = self.services.repo
        if process.exitcode != 0 and run_id is None:
            log.error("preparing the starter heads failed (exit code %s)", process.exitcode)
        run = repo.runs.get_training_run(run_id) if run_id is not None else None
        if run is not None and run.status in (RunStatus.queued, RunStatus.running):
            repo.runs.update_training_run(
                run.id,
                status=RunStatus.failed,
                error=f"training process exited with code {process.exitcode}",
            )
        with self._lock:
            if self._process is process:
                self._process = None
            waiting = repo.runs.active_training_run()
            queued = waiting is not None and waiting.status is RunStatus.queued
            if queued and not self.busy and not self._stopped:
                self._launch(waiting.id)

    def _reap(self) -> None:
        if self._process is not None and not self._process.is_alive():
            self._process = None

    @property
    def busy(self) -> bool:
        return self._process is not None and self._process.is_alive()
