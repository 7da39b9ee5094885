"""Application assembly: one FastAPI app with the REST API under /api and the Gradio UI
mounted at /. The database is upgraded on start."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI

from model.checkpoint import read_checkpoint
from model.cpu_threads import cpu_compute_pool
from model.hashing import sha256_file
from storage.accounts import Accounts
from storage.blobs import BlobStore
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.repository import Repository
from webapp.anomaly_service import AnomalyService
from webapp.api import build_router, install_error_handlers
from webapp.hot_swap import HotSwapWatcher
from webapp.login_throttle import LoginThrottle, LoginThrottleMiddleware, in_worker_thread
from webapp.model_server import ModelServer
from webapp.request_limits import RequestLimits
from webapp.retraining import RetrainConfig
from webapp.scheduler import RetrainScheduler
from webapp.services import Services
from webapp.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Application:
    """The assembled app, the services behind it and its background workers."""

    api: FastAPI
    services: Services
    hot_swap: HotSwapWatcher | None = None
    scheduler: RetrainScheduler | None = None
    anomaly: AnomalyService | None = None  # started: this process serves anomaly maps

    def stop(self) -> None:
        """Stop background workers and finish queued predictions."""
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.hot_swap is not None:
            self.hot_swap.stop()
        if self.anomaly is not None:
            self.anomaly.stop()
        self.services.shutdown()


def retrain_config(settings: Settings) -> RetrainConfig:
    """The loop's knobs, and the [training] table as it is (each knob is declared once)."""
    return RetrainConfig(
        **asdict(settings.training),
        min_new_corrections=settings.retrain_min_corrections,
        promotion_margin=settings.promotion_margin,
        type_regression_margin=settings.type_regression_margin,
        from_scratch=settings.retrain_from_scratch,
    )


def build_services(settings: Settings) -> Services:
    """Open storage (upgrading the schema); register `settings.checkpoint` as the first
    model when the database has none. Loading a model is the hot-swap watcher's job."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    repo = Repository(
        engine, BlobStore(settings.blob_dir), holdout_percent=settings.holdout_percent
    )
    models = ModelServer(
        cache_dir=settings.feature_cache_dir,
        sam_checkpoint=settings.sam_checkpoint,
        views=settings.prediction_views,
        pool=cpu_compute_pool(settings.prediction_workers),
        mixed_precision=settings.prediction_mixed_precision,
    )
    services = Services(settings=settings, repo=repo, accounts=Accounts(engine), models=models)
    if repo.registry.active_version() is None and settings.checkpoint is not None:
        register_first_model(repo, settings.checkpoint)
    return services


def register_first_model(repo: Repository, checkpoint: Path) -> int:
    """Register and activate a user-given checkpoint as the deployment's first model."""
    meta, _ = read_checkpoint(checkpoint)  # CheckpointError for a bad file, before any row
    version = repo.registry.register_model_version(
        checkpoint_path=str(Path(checkpoint).resolve()),
        checkpoint_sha256=sha256_file(checkpoint),
        encoder_id=meta.encoder_id,
        metrics=meta.metrics.get("val") or {},
        note="first model: promoted without a holdout comparison",
    )
    repo.registry.activate(version, actor="serve --checkpoint")
    return version


def create_app(
    settings: Settings,
    *,
    ui: bool = True,
    scheduler: bool = False,
    watch: bool = True,
    refit_anomalies: bool | None = None,
) -> Application:
    """The FastAPI application (API + optional Gradio UI) over fresh services.

    `watch` starts the hot-swap watcher (every serving process has one); `scheduler` also
    runs the retraining scheduler in this process (one process per deployment should).
    The normality model is served wherever `watch` or the refits run; `refit_anomalies`
    (default: with the scheduler) makes this the process that refits it.
    """
    services = build_services(settings)
    refits = scheduler if refit_anomalies is None else refit_anomalies
    services.anomaly = AnomalyService(services.repo, settings, refits=refits)
    watcher = HotSwapWatcher(services, interval=settings.hot_swap_seconds)
    services.watcher = watcher
    watcher.check(repredict=False)  # serve the active model (or a fallback) from the start
    app = Application(api=FastAPI(), services=services)
    if scheduler:
        app.scheduler = RetrainScheduler(
            services, retrain_config(settings), check_minutes=settings.retrain_check_minutes
        ).start()
    services.trainer = app.scheduler
    if watch:
        watcher.start()
        app.hot_swap = watcher
    if watch or refits:  # loads and fits in its own thread: start-up never waits for it
        services.anomaly.start()
        app.anomaly = services.anomaly
    api = FastAPI(
        title="HeatPrompt", openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None
    )
    install_error_handlers(api)
    api.include_router(build_router(services))
    api.add_middleware(RequestLimits, max_body_bytes=settings.max_request_bytes)
    if ui:
        import gradio as gr

        from webapp.ui import build_ui, page_css, page_head

        blocks = build_ui(services)
        # Argon2 runs in a worker thread, and repeated failures lock a name or address out.
        api.add_middleware(LoginThrottleMiddleware, throttle=LoginThrottle())
        api = gr.mount_gradio_app(
            api,
            blocks,
            path="",
            auth=in_worker_thread(services.check_login),
            auth_message=(
                "HeatPrompt — sign in to review defects (after 5 failed attempts a name or "
                "address is locked out for a while)"
            ),
            head=page_head(),
            css=page_css(),
            max_file_size=settings.max_request_bytes,
        )
    app.api = api
    return app
