"""A real HeatPrompt server on localhost for API, UI and browser tests.

The served model is an untrained `effnet_lite0` at 128 px: real weights for the frozen
encoder, freshly initialised heads (predictions are valid, not good).

The app runs on SQLite by default. A test (or module) runs it on both engines with
`@pytest.mark.parametrize("running_app", ENGINES, indirect=True)`; on PostgreSQL it gets a
fresh schema, passed to the app through DATABASE_URL (see `postgres_schema`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from tests.storage_fixtures import ENGINES, postgres_schema
from webapp.app import Application, create_app
from webapp.settings import Settings

PASSWORD = "test-password"
# HTTP timeouts of tests against the launched app: guards against a hung server, never
# measurements, so generous enough for a loaded two-core machine.
HTTP_TIMEOUT = 120.0
SERVER_START_TIMEOUT = 120.0


@dataclass
class RunningApp:
    """A launched app: its URL, its services and a token per role."""

    url: str
    app: Application
    tokens: dict[str, str]
    data_dir: Path
    engine: str = "sqlite"

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def client(self, role: str | None = None) -> httpx.Client:
        """An HTTP client for the app (with `role`'s token), with a generous timeout."""
        headers = self.auth(role) if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=HTTP_TIMEOUT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(
        path, new_bundle(build_encoder("effnet_lite0", input_size=128), label_sigma=2.0)
    )


@contextmanager
def serve_app(app: Application) -> Iterator[str]:
    """Serve `app` with uvicorn on a free localhost port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        # Open client connections (Gradio's event streams) get a few seconds, not forever.
        uvicorn.Config(
            app.api, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=3
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT)


@pytest.fixture(scope="module")
def running_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningApp]:
    """The launched app on SQLite, or on the engine named by an indirect parameter."""
    engine = getattr(request, "param", "sqlite")
    assert engine in ENGINES, engine
    with ExitStack() as stack:
        database_url = None
        if engine == "postgresql":
            database_url = stack.enter_context(postgres_schema("app"))
        root = tmp_path_factory.mktemp(f"app-{engine}")
        settings = Settings(
            data_dir=root / "data",
            checkpoint=make_checkpoint(root / "m.pt"),
            max_image_pixels=4_000_000,
            max_image_bytes=2_000_000,
            database_url=database_url,
        )
        app = create_app(settings)
        # Closes the app's connections before its schema is dropped.
        stack.callback(app.services.repo.engine.dispose)
        stack.callback(app.stop)
        tokens = {}
        for role in ("viewer", "inspector", "admin"):
            app.services.accounts.add_user(role, PASSWORD, role=role)
            tokens[role] = app.services.accounts.issue_token(role)
        url = stack.enter_context(serve_app(app))
        yield RunningApp(url, app, tokens, settings.data_dir, engine)
