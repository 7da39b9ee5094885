"""The Gradio UI driven through `gradio_client` against the launched server (with login)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.hashing import sha256_file
from tests.webapp_fixtures import PASSWORD, RunningApp


@pytest.fixture
def client(running_app: RunningApp) -> Client:
    return Client(f"{running_app.url}/", auth=("admin", PASSWORD), verbose=False)


def _write_png(path: Path, seed: int) -> Path:
    img = np.random.default_rng(seed).integers(40, 220, (72, 96, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)
    return path


def test_ingest_reports_stored_duplicates_and_refusals(
    client: Client, running_app: RunningApp, tmp_path: Path
) -> None:
    a = _write_png(tmp_path / "a.png", 1)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(_write_png(tmp_path / "b.png", 2), "inner/b.png")
        zf.write(a, "inner/a-again.png")  # same bytes as a.png
    table, summary = client.predict(
        [handle_file(str(p)) for p in (a, broken, archive)], api_name="/ingest"
    )
    rows = {r[0]: r[1] for r in table["data"]}
    assert rows["a.png"] == "stored" and rows["inner/b.png"] == "stored"
    assert rows["inner/a-again.png"].startswith("duplicate")
    assert rows["broken.png"].startswith("refused") and "broken.png" in rows["broken.png"]
    assert summary == "2 stored, 1 duplicates, 1 refused."
    running_app.app.services.wait_for_predictions()


def test_review_save_and_export_through_the_ui_api(
    client: Client, running_app: RunningApp, tmp_path: Path
) -> None:
    services = running_app.app.services
    services.ingest(Image_bytes(7), "review.png", source="test")
    services.wait_for_predictions()
    out = client.predict("arrival", 0.45, api_name="/next_image")
    info = next(o for o in out if isinstance(o, str) and o.startswith("**Image "))
    image_id = int(info.split()[1].strip("*"))
    assert "defect score" in info and "uncertainty" in info
    defect_free = client.predict(None, "looks clean", "arrival", 0.45, api_name="/defect_free")
    assert f"image {image_id}" in defect_free[-1]
    (last,) = services.repo.reviews.corrections_for(image_id)
    assert last.action.value == "defect_free" and last.author == "admin"
    assert last.note == "looks clean"
    path, message = client.predict("COCO JSON (RLE)", api_name="/export")
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("annotations.json"))
    assert image_id in {im["id"] for im in doc["images"]}
    assert "Exported" in message


def Image_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def test_retrain_now_queues_a_run_and_shows_it(client: Client, running_app: RunningApp) -> None:
    table, _plot, live, message = client.predict(api_name="/retrain")
    run = running_app.app.services.repo.runs.active_training_run()
    assert run is not None and run.status.value == "queued"  # no scheduler here: the worker's
    assert f"Training run {run.id}" in message
    assert table["data"][0][0] == run.id and f"run {run.id}" in live
    viewer = Client(f"{running_app.url}/", auth=("viewer", PASSWORD), verbose=False)
    *_, refused = viewer.predict(api_name="/retrain")
    assert "cannot start or cancel training" in refused


def test_models_tab_promotes_and_rolls_back(
    client: Client, running_app: RunningApp, tmp_path: Path
) -> None:
    services = running_app.app.services
    torch.manual_seed(1)
    path = save_checkpoint(
        tmp_path / "v2.pt",
        new_bundle(build_encoder("effnet_lite0", input_size=128), label_sigma=2.0),
    )
    v2 = services.repo.registry.register_model_version(
        checkpoint_path=str(path), checkpoint_sha256=sha256_file(path), encoder_id="effnet_lite0"
    )
    viewer = Client(f"{running_app.url}/", auth=("viewer", PASSWORD), verbose=False)
    for c in (viewer, client):  # the page's load event fills the version choices
        c.predict(api_name="/models")
    *_, refused = viewer.predict(v2, api_name="/activate")
    assert "cannot promote or roll back" in refused
    assert services.repo.registry.active_version().id == 1  # type: ignore[union-attr]

    table, _plot, _pick, _line, message = client.predict(v2, api_name="/activate")
    assert f"Version {v2} is now active" in message
    assert {row[0]: row[1] for row in table["data"]}[v2] == "active"
    deadline = time.monotonic() + 120
    while services.model_status()["served_version"] != v2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert services.model_status()["served_version"] == v2

    *_, back = client.predict(1, api_name="/activate")
    assert "Version 1 is now active" in back
    *_, again = client.predict(1, api_name="/activate")
    assert "already active" in again
