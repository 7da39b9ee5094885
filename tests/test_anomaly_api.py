"""Zero-label anomaly maps through the launched app: a fresh deployment with no checkpoint
serves anomaly scores and heatmaps once images are marked defect-free; the Review tab
shows them, and beside a supervised model's overlay as a second opinion."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from PIL import Image

from tests.test_anomaly_service import HEIGHT, WIDTH, png, surface
from tests.waiting import wait_for
from tests.webapp_fixtures import HTTP_TIMEOUT, PASSWORD, make_checkpoint, serve_app
from webapp.app import Application, create_app
from webapp.settings import Settings


@dataclass
class Deployment:
    url: str
    app: Application
    tokens: dict[str, str]
    good: list[int]  # marked defect-free through the API
    pending_good: int
    pending_bad: int

    def client(self, role: str = "inspector") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=HTTP_TIMEOUT)


def launch(root: Path, *, checkpoint: Path | None = None) -> Iterator[Deployment]:
    """A launched app (with its UI) that refits the normality model; three images marked
    defect-free and two pending through the API, all scored by the newest model."""
    settings = Settings(
        data_dir=root / "data",
        checkpoint=checkpoint,
        anomaly_input_sizes=[128],
        anomaly_refit_seconds=0,
    )
    app = create_app(settings, refit_anomalies=True)
    try:
        tokens = {}
        for role in ("inspector", "admin"):
            app.services.accounts.add_user(role, PASSWORD, role=role)
            tokens[role] = app.services.accounts.issue_token(role)
        with serve_app(app) as url:
            deployment = Deployment(url, app, tokens, [], 0, 0)
            with deployment.client() as http:
                for seed in (1, 2, 3):
                    deployment.good.append(upload(http, png(surface(seed))))
                    state = http.get(f"/api/images/{deployment.good[-1]}").json()["state"]
                    answer = http.post(
                        f"/api/images/{deployment.good[-1]}/corrections",
                        data={"action": "defect_free", "based_on": state},
                    )
                    assert answer.status_code == 201, answer.text
                deployment.pending_good = upload(http, png(surface(50)))
                deployment.pending_bad = upload(http, png(surface(51, defect=True)))
                wait_for(lambda: scored_by_newest(http, deployment), "the pending images scored")
            yield deployment
    finally:
        app.stop()
        app.services.repo.engine.dispose()


def upload(http: httpx.Client, data: bytes) -> int:
    answer = http.post("/api/images", files={"file": ("surface.png", data, "image/png")})
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def scored_by_newest(http: httpx.Client, deployment: Deployment) -> bool:
    """Both pending images carry a score of the normality model fitted on all three."""
    status = deployment.app.services.model_status()
    if status["normality_good_images"] != 3:
        return False
    views = [http.get(f"/api/images/{i}").json() for i in deployment_pending(deployment)]
    return all(v["anomaly"] and v["anomaly"]["version"] == status["normality_model"] for v in views)


def deployment_pending(deployment: Deployment) -> tuple[int, int]:
    return deployment.pending_good, deployment.pending_bad


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """No checkpoint: the deployment has never had a supervised model."""
    yield from launch(tmp_path_factory.mktemp("fresh"))


def review_outputs(deployment: Deployment) -> tuple[str, bool]:
    """The Review tab's next image (oldest first): its info line, and whether the anomaly
    map (second opinion) is shown with a picture."""
    ui = Client(f"{deployment.url}/", auth=("inspector", PASSWORD), verbose=False)
    out = ui.predict("arrival", 0.45, api_name="/next_image")
    info = next(o for o in out if isinstance(o, str) and o.startswith("**Image "))
    anomaly_map = out[out.index(info) + 4]  # after the history, earlier and earlier mask
    if isinstance(anomaly_map, dict):  # an update: visibility and picture
        return info, bool(anomaly_map.get("visible") and anomaly_map.get("value"))
    return info, bool(anomaly_map)


def test_health_says_anomaly_only(fresh: Deployment) -> None:
    health = httpx.get(f"{fresh.url}/api/health", timeout=HTTP_TIMEOUT).json()
    assert health["state"] == "anomaly_only"
    assert health["served_model_version"] is None
    assert health["normality_model"] == fresh.app.services.anomaly.current
    assert health["anomaly_problem"] is None


def test_images_carry_the_anomaly_score_and_heatmap(fresh: Deployment) -> None:
    with fresh.client() as http:
        good = http.get(f"/api/images/{fresh.pending_good}").json()
        bad = http.get(f"/api/images/{fresh.pending_bad}").json()
        assert bad["prediction"] is None
        assert set(bad["anomaly"]) >= {"score", "version", "created_at"}
        assert bad["anomaly"]["score"] > good["anomaly"]["score"]
        assert bad["anomaly"]["good_images"] == 3

        heat = http.get(f"/api/images/{fresh.pending_bad}/heatmap", params={"source": "anomaly"})
        assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(heat.content)).size == (WIDTH, HEIGHT)

        model = http.get(f"/api/images/{fresh.pending_bad}/heatmap")
        assert model.status_code == 404 and "no prediction yet" in model.json()["error"]
        # Marked good before any normality model existed: never scored.
        none = http.get(f"/api/images/{fresh.good[0]}/heatmap", params={"source": "anomaly"})
        assert none.status_code == 404 and "no anomaly map yet" in none.json()["error"]
        assert http.get(f"/api/images/{fresh.good[0]}").json()["anomaly"] is None
        unknown = http.get("/api/images/999999/heatmap", params={"source": "anomaly"})
        assert unknown.status_code == 404
        bogus = http.get(f"/api/images/{fresh.pending_bad}/heatmap", params={"source": "x"})
        assert bogus.status_code == 422


def test_review_shows_the_anomaly_map_when_there_is_no_model(fresh: Deployment) -> None:
    info, anomaly_map = review_outputs(fresh)
    version = fresh.app.services.anomaly.current
    assert f"(normality model {version}, from 3 good images)" in info
    assert "anomaly score" in info and "no prediction yet" not in info
    assert not anomaly_map  # the overlay itself is the anomaly map: no second image


def test_review_adds_the_anomaly_map_as_a_second_opinion(tmp_path: Path) -> None:
    for deployment in launch(tmp_path, checkpoint=make_checkpoint(tmp_path / "m.pt")):
        assert deployment.app.services.health()["state"] == "model"
        info, anomaly_map = review_outputs(deployment)
        assert "defect score" in info and "anomaly score" in info
        assert anomaly_map  # a picture, shown below the model's overlay
