"""Application assembly: one FastAPI app with the REST API under /api and the Gradio UI
mounted at /. The database is upgraded on start."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI

from model.hashing import sha256_file
from storage.accounts import Accounts
from storage.blobs import BlobStore
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.repository import Repository
from webapp.api import build_router, install_error_handlers
from webapp.hot_swap import HotSwapWatcher
from webapp.model_server import ModelServer
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

    def stop(self) -> None:
        """Stop background workers and finish queued predictions."""
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.hot_swap is not None:
            self.hot_swap.stop()
        self.services.shutdown()


def retrain_config(settings: Settings) -> RetrainConfig:
    return RetrainConfig(
        min_new_corrections=settings.retrain_min_corrections,
        max_minutes=settings.retrain_max_minutes,
        epochs=settings.retrain_epochs,
        promotion_margin=settings.promotion_margin,
        from_scratch=settings.retrain_from_scratch,
    )


def build_services(settings: Settings) -> Services:
    """Open storage (upgrading the schema) and load the active or configured model."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    repo = Repository(
        engine, BlobStore(settings.blob_dir), holdout_percent=settings.holdout_percent
    )
    models = ModelServer(
        cache_dir=settings.feature_cache_dir, sam_checkpoint=settings.sam_checkpoint
    )
    services = Services(settings=settings, repo=repo, accounts=Accounts(engine), models=models)
    active = repo.active_version()
    if active is not None:
        models.load(active.checkpoint_path, active.id)
    elif settings.checkpoint is not None:
        served = models.load(settings.checkpoint, None)
        meta = served.predictor.bundle.meta
        version = repo.register_model_version(
            checkpoint_path=str(settings.checkpoint),
            checkpoint_sha256=sha256_file(settings.checkpoint),
            encoder_id=meta.encoder_id,
            metrics=meta.metrics.get("val") or {},
            note="first model: promoted without a holdout comparison",
        )
        repo.activate(version)
        models.load_version_id(version)
    return services


def create_app(
    settings: Settings, *, ui: bool = True, scheduler: bool = False, watch: bool = True
) -> Application:
    """The FastAPI application (API + optional Gradio UI) over fresh services.

    `watch` starts the hot-swap watcher (every serving process has one); `scheduler` also
    runs the retraining scheduler in this process (one process per deployment should).
    """
    services = build_services(settings)
    app = Application(api=FastAPI(), services=services)
    if scheduler:
        app.scheduler = RetrainScheduler(
            services, retrain_config(settings), check_minutes=settings.retrain_check_minutes
        ).start()
    services.trainer = app.scheduler
    if watch:
        app.hot_swap = HotSwapWatcher(services, interval=settings.hot_swap_seconds).start()
    api = FastAPI(
        title="HeatPrompt", openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None
    )
    install_error_handlers(api)
    api.include_router(build_router(services))
    if ui:
        import gradio as gr

        from webapp.ui import build_ui, page_css, page_head

        blocks = build_ui(services)
        api = gr.mount_gradio_app(
            api,
            blocks,
            path="",
            auth=services.check_login,
            auth_message="HeatPrompt — sign in to review defects",
            head=page_head(),
            css=page_css(),
        )
    app.api = api
    return app
