"""Promotion and rollback have one path: the service writes the database, the watcher of
every serving process loads and swaps, and the queue is re-predicted once per promotion."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.hashing import sha256_file
from tests.waiting import wait_for
from tests.webapp_fixtures import serve_app
from webapp.app import Application, create_app
from webapp.settings import Settings

PASSWORD = "test-password"


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(
        path, new_bundle(build_encoder("effnet_lite0", input_size=128), label_sigma=2.0)
    )


def _png(value: int) -> bytes:
    rng = np.random.default_rng(value)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {"v1": _checkpoint(root / "v1.pt", 0), "v2": _checkpoint(root / "v2.pt", 1)}


@pytest.fixture
def app(tmp_path: Path, versions: dict[str, Path]) -> Iterator[Application]:
    settings = Settings(data_dir=tmp_path / "data", checkpoint=versions["v1"], hot_swap_seconds=60)
    application = create_app(settings, ui=False)
    application.services.accounts.add_user("boss", PASSWORD, role="admin")
    yield application
    application.stop()


def _register(app: Application, path: Path) -> int:
    return app.services.repo.registry.register_model_version(
        checkpoint_path=str(path), checkpoint_sha256=sha256_file(path), encoder_id="effnet_lite0"
    )


def test_rollback_through_the_api_repredicts_every_pending_image(
    app: Application, versions: dict[str, Path]
) -> None:
    services = app.services
    ids = [services.ingest(_png(v), f"{v}.png").id for v in range(6)]
    assert services.wait_for_predictions(120)
    v2 = _register(app, versions["v2"])
    token = services.accounts.issue_token("boss")
    headers = {"Authorization": f"Bearer {token}"}

    def latest_versions(client: httpx.Client) -> set[int]:
        views = [client.get(f"/api/images/{i}").json() for i in ids]
        return {v["prediction"]["model_version"] for v in views}

    def finished(client: httpx.Client, version: int) -> dict | None:
        """The newest promotion to `version`, once its re-prediction has finished."""
        newest = next(p for p in client.get("/api/promotions").json() if p["version"] == version)
        return newest if newest["finished_at"] else None

    with (
        serve_app(app) as url,
        httpx.Client(base_url=url, headers=headers, timeout=120) as client,
    ):
        assert latest_versions(client) == {1}
        # The watcher ticks once a minute here: only the activation's wake-up can be fast.
        assert client.post(f"/api/models/{v2}/activate").json()["changed"] is True
        promoted = wait_for(lambda: finished(client, v2), "promotion to v2 re-predicted")
        assert promoted["repredicted"] == len(ids) and latest_versions(client) == {v2}

        # Roll back: the same path, and every pending image shows version 1's masks again.
        assert client.post("/api/models/1/activate").json()["changed"] is True
        rolled = wait_for(lambda: finished(client, 1), "rollback re-predicted")
        assert rolled["repredicted"] == len(ids) and rolled["outcome"] == "done"
        assert latest_versions(client) == {1}
        assert client.get("/api/health").json()["served_model_version"] == 1
        # Activating the active version again changes nothing and re-predicts nothing.
        assert client.post("/api/models/1/activate").json()["changed"] is False


def test_a_broken_checkpoint_is_refused_with_a_message_and_nothing_changes(
    app: Application, tmp_path: Path, versions: dict[str, Path]
) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(versions["v2"].read_bytes()[:5000])  # a checkpoint cut short
    bad = app.services.repo.registry.register_model_version(
        checkpoint_path=str(broken),
        checkpoint_sha256=sha256_file(versions["v2"]),
        encoder_id="effnet_lite0",
    )
    headers = {"Authorization": f"Bearer {app.services.accounts.issue_token('boss')}"}
    with serve_app(app) as url:
        answer = httpx.post(f"{url}/api/models/{bad}/activate", headers=headers, timeout=60)
        health = httpx.get(f"{url}/api/health", timeout=60).json()
    assert answer.status_code == 422
    assert "sha256" in answer.json()["error"] and str(broken) in answer.json()["error"]
    assert health["active_model_version"] == 1 and health["served_model_version"] == 1


def test_start_up_falls_back_to_the_newest_loadable_version(
    tmp_path: Path, versions: dict[str, Path]
) -> None:
    data = tmp_path / "data"
    first = create_app(Settings(data_dir=data, checkpoint=versions["v1"]), ui=False)
    own_v2 = tmp_path / "v2.pt"
    own_v2.write_bytes(versions["v2"].read_bytes())
    v2 = _register(first, own_v2)
    first.services.repo.registry.activate(v2)
    first.stop()
    # A power cut leaves the active checkpoint truncated: the app still starts, serving v1.
    own_v2.write_bytes(own_v2.read_bytes()[:4096])
    second = create_app(Settings(data_dir=data), ui=False)
    try:
        health = second.services.health()
        assert health["served_model_version"] == 1 and health["active_model_version"] == v2
        assert f"active version {v2} cannot be loaded" in health["problem"]
        assert "serving version 1" in health["problem"]
    finally:
        second.stop()
