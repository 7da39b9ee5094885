"""Request-body limits on the real app (API and Gradio UI) behind a real server.

A refusal "before the body is read" is shown by declaring a body and never sending it:
the answer can only come if nobody waits for those bytes.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from tests.webapp_fixtures import free_port
from webapp.app import Application, create_app
from webapp.settings import Settings

LIMIT = 300_000
ANSWER_WITHIN_S = 60  # a socket guard, so a server that waits for the body fails the test


class Served:
    def __init__(self, app: Application, port: int, token: str) -> None:
        self.app, self.port, self.token = app, port, token
        self.url = f"http://127.0.0.1:{port}"

    def declare_only(self, path: str, length: int, headers: dict[str, str]) -> tuple[int, dict]:
        """Send headers announcing `length` body bytes, send none, read the answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=ANSWER_WITHIN_S)
        try:
            conn.putrequest("POST", path)
            conn.putheader("Content-Type", "multipart/form-data; boundary=x")
            conn.putheader("Content-Length", str(length))
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("limits")
    settings = Settings(data_dir=root / "data", max_image_bytes=LIMIT // 2, max_request_bytes=LIMIT)
    app = create_app(settings, watch=False)
    app.services.accounts.add_user("line", "line-password", role="inspector")
    token = app.services.accounts.issue_token("line")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app.api, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while not started.wait(0.05):
        if server.started:
            started.set()
        elif not thread.is_alive():
            raise RuntimeError("server did not start")
    yield Served(app, port, token)
    server.should_exit = True
    thread.join(timeout=10)
    app.stop()


def _png() -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_a_declared_oversize_body_is_refused_before_it_is_read(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.token}"}
    status, body = served.declare_only("/api/images", 10 * 1024**3, auth)
    assert status == 413
    assert f"limit of {LIMIT} bytes" in body["error"]


def test_the_ui_upload_route_is_capped_too(served: Served) -> None:
    status, body = served.declare_only("/gradio_api/upload", LIMIT + 1, {})
    assert status == 413 and "limit" in body["error"]
    mounted = [r.app for r in served.app.api.routes if hasattr(getattr(r, "app", None), "blocks")]
    assert [m.get_blocks().max_file_size for m in mounted] == [LIMIT]


@pytest.mark.parametrize("path", ["/api/images", "/api/predict", "/api/images/1/corrections"])
def test_an_api_body_without_a_bearer_token_is_refused_before_it_is_read(
    served: Served, path: str
) -> None:
    status, body = served.declare_only(path, 1000, {})
    assert status == 401 and "bearer" in body["error"]
    status, _ = served.declare_only(path, 1000, {"Authorization": "Basic bGluZTp4"})
    assert status == 401


def test_a_streamed_body_past_the_limit_is_refused(served: Served) -> None:
    """A well-formed multipart upload, sent chunked, so only counting can stop it."""
    sent = []

    def chunks() -> Iterator[bytes]:
        yield (
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        for _ in range(LIMIT // 16_384 + 8):
            sent.append(16_384)
            yield bytes(16_384)
        yield b"\r\n--x--\r\n"

    response = httpx.post(
        f"{served.url}/api/images",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {served.token}",
            "Content-Type": "multipart/form-data; boundary=x",
        },
        timeout=ANSWER_WITHIN_S,
    )
    assert sum(sent) > LIMIT
    assert response.status_code == 413
    assert f"limit of {LIMIT} bytes" in response.json()["error"]


def test_ordinary_requests_pass(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.token}"}
    with httpx.Client(base_url=served.url, timeout=ANSWER_WITHIN_S) as client:
        assert client.get("/api/health").status_code == 200
        created = client.post("/api/images", files={"file": ("a.png", _png())}, headers=auth)
        assert created.status_code == 201, created.text
        unknown = client.post("/api/images", files={"file": ("a.png", _png())})
        assert unknown.status_code == 401
        wrong = client.post(
            "/api/images",
            files={"file": ("a.png", _png())},
            headers={"Authorization": "Bearer not-a-token"},
        )
        assert wrong.status_code == 401 and "unknown" in wrong.json()["error"]


def test_settings_default_bounds_requests(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.max_image_bytes < settings.max_request_bytes < 1024**3
