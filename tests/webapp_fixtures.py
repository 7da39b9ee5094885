"""A real HeatPrompt server on localhost for API, UI and browser tests.

The served model is an untrained `effnet_lite0` at 128 px: real weights for the frozen
encoder, freshly initialised heads (predictions are valid, not good).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import uvicorn

from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from webapp.app import Application, create_app
from webapp.settings import Settings

PASSWORD = "test-password"


@dataclass
class RunningApp:
    """A launched app: its URL, its services and a token per role."""

    url: str
    app: Application
    tokens: dict[str, str]
    data_dir: Path

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(
        path, new_bundle(build_encoder("effnet_lite0", input_size=128), label_sigma=2.0)
    )


@pytest.fixture(scope="module")
def running_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    root = tmp_path_factory.mktemp("app")
    settings = Settings(
        data_dir=root / "data",
        checkpoint=make_checkpoint(root / "m.pt"),
        max_image_pixels=4_000_000,
        max_image_bytes=2_000_000,
        database_url=None,
    )
    app = create_app(settings)
    tokens = {}
    for role in ("viewer", "inspector", "admin"):
        app.services.accounts.add_user(role, PASSWORD, role=role)
        tokens[role] = app.services.accounts.issue_token(role)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app.api, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    yield RunningApp(f"http://127.0.0.1:{port}", app, tokens, settings.data_dir)
    server.should_exit = True
    thread.join(timeout=10)
    app.stop()
