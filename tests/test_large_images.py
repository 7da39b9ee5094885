"""Images of any size and aspect ratio through the whole loop, never stretched: ingest,
tiled prediction, review correction, retraining at the model's pixel scale, and export,
all at the image's native resolution (a 1000 × 250 strip and a 1500 × 1500 image)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import load_bundle, new_bundle, save_checkpoint
from model.encoders import build_encoder
from storage.schema import RunStatus
from tests.waiting import wait_for
from tests.webapp_fixtures import PASSWORD, serve_app
from webapp.app import Application, create_app
from webapp.settings import Settings

TILE = 128
SCALE = 0.25
SHAPES = {"strip": (250, 1000), "square": (1500, 1500)}  # (H, W)


def surface(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured surface with a dark scratch across it, and the scratch's mask."""
    rng = np.random.default_rng(seed)
    h, w = shape
    noise = cv2.GaussianBlur(rng.normal(128, 30, (h, w)).astype(np.float32), (0, 0), 2)
    image = np.repeat(np.clip(noise, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    mask = np.zeros((h, w), np.uint8)
    cv2.line(mask, (w // 10, h // 3), (w - w // 10, 2 * h // 3), 1, max(3, h // 60))
    image[mask > 0] = 20
    return image, mask.astype(bool)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class App:
    url: str
    app: Application
    token: str
    truth: dict[str, tuple[int, np.ndarray]]  # name → (image id, true mask)

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("large")
    torch.manual_seed(0)
    bundle = new_bundle(
        build_encoder("effnet_lite0", input_size=TILE), label_sigma=1.0, scale=SCALE
    )
    bundle.meta.test_time_views = ["identity"]
    settings = Settings(
        data_dir=root / "data",
        checkpoint=save_checkpoint(root / "start.pt", bundle),
        holdout_percent=0,
        retrain_min_corrections=1,
        retrain_check_minutes=60,
        hot_swap_seconds=0.3,
        training={"epochs": 2, "max_minutes": 1.0},
    )
    app = create_app(settings, ui=False, scheduler=True)
    app.services.accounts.add_user("admin", PASSWORD, role="admin")
    token = app.services.accounts.issue_token("admin")
    with serve_app(app) as url:
        yield App(url, app, token, {})
    app.stop()


def test_any_size_is_predicted_at_its_own_size(large: App) -> None:
    with large.client() as http:
        for i, (name, shape) in enumerate(SHAPES.items()):
            image, mask = surface(shape, seed=i)
            response = http.post(
                "/api/images", files={"file": (f"{name}.png", png(image), "image/png")}
            )
            assert response.status_code == 201, response.text
            large.truth[name] = (response.json()["id"], mask)
        large.app.services.wait_for_predictions()
        health = http.get("/api/health").json()
        assert (health["tile"], health["pixel_scale"], health["test_time_views"]) == (
            TILE,
            f"{SCALE:g}",
            1,
        )
        for name, (image_id, _) in large.truth.items():
            h, w = SHAPES[name]
            view = http.get(f"/api/images/{image_id}").json()
            assert (view["width"], view["height"]) == (w, h)
            assert view["prediction"] is not None, view
            for part in ("mask", "heatmap"):
                got = Image.open(io.BytesIO(http.get(f"/api/images/{image_id}/{part}").content))
                assert got.size == (w, h), (name, part)


def test_native_corrections_train_a_model_at_the_same_scale(large: App) -> None:
    with large.client() as http:
        for image_id, mask in large.truth.values():
            state = http.get(f"/api/images/{image_id}").json()["state"]
            response = http.post(
                f"/api/images/{image_id}/corrections",
                data={"action": "corrected", "based_on": state},
                files={"mask": ("m.png", png(mask.astype(np.uint8) * 255), "image/png")},
            )
            assert response.status_code == 201, response.text
        run = http.post("/api/training-runs")
        assert run.status_code == 202, run.text
        run_id = run.json()["id"]
        runs = large.app.services.repo.runs
        wait_for(
            lambda: (
                runs.get_training_run(run_id).status not in (RunStatus.queued, RunStatus.running)
            ),
            timeout=600,
            what=f"training run {run_id}",
        )
        finished = runs.get_training_run(run_id)
        assert finished.status is RunStatus.succeeded, finished.error
        assert f"scale {SCALE:g}, tiles of {TILE} px" in (finished.log_tail or "")
        version = large.app.services.repo.registry.get_version(finished.model_version_id)
        assert load_bundle(version.checkpoint_path).meta.pixel_scale == SCALE


def test_export_keeps_native_masks(large: App) -> None:
    user = large.app.services.user("admin")
    report = large.app.services.export(user, "coco")
    with zipfile.ZipFile(report.path) as zf:
        coco = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith(".json"))))
    sizes = {(im["height"], im["width"]) for im in coco["images"]}
    assert sizes == set(SHAPES.values())
