"""The REST API against a launched server, over real HTTP."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.webapp_fixtures import ENGINES, HTTP_TIMEOUT, RunningApp

# One client for the module: its timeout guards against a hung server, it measures nothing.
HTTP = httpx.Client(timeout=HTTP_TIMEOUT)


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def surface(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 160, (h, w, 3), dtype=np.uint8)
    img[40:46, 20:100] = 30  # a dark scratch
    return img


def upload(app: RunningApp, data: bytes, name: str = "x.png", role: str = "inspector"):  # type: ignore[no-untyped-def]
    return HTTP.post(f"{app.url}/api/images", headers=app.auth(role), files={"file": (name, data)})


def test_health_needs_no_token(running_app: RunningApp) -> None:
    body = HTTP.get(f"{running_app.url}/api/health").json()
    assert body["status"] == "ok" and body["active_model_version"] == 1
    assert isinstance(body["queue_length"], int)


def test_openapi_lists_the_paths(running_app: RunningApp) -> None:
    paths = HTTP.get(f"{running_app.url}/api/openapi.json").json()["paths"]
    for path in (
        "/api/images",
        "/api/images/{image_id}/mask",
        "/api/images/{image_id}/types",
        "/api/types",
        "/api/types/{type_id}",
        "/api/queue/next",
        "/api/models/{version_id}/activate",
        "/api/health",
    ):
        assert path in paths


def test_tokens_are_required(running_app: RunningApp) -> None:
    url = f"{running_app.url}/api/images/1"
    missing = HTTP.get(url)
    wrong = HTTP.get(url, headers={"Authorization": "Bearer nope"})
    assert missing.status_code == wrong.status_code == 401
    assert "token" in missing.json()["error"]


@pytest.mark.parametrize("running_app", ENGINES, indirect=True)
def test_upload_predict_and_read_back(running_app: RunningApp) -> None:
    data = png(surface(1))
    first = upload(running_app, data, "scratch.png")
    assert first.status_code == 201, first.text
    body = first.json()
    again = upload(running_app, data, "same.png").json()
    assert again == {**body, "duplicate": True} and body["duplicate"] is False
    running_app.app.services.wait_for_predictions()
    view = HTTP.get(
        f"{running_app.url}/api/images/{body['id']}", headers=running_app.auth("viewer")
    ).json()
    assert (view["width"], view["height"], view["format"]) == (128, 96, "PNG")
    pred = view["prediction"]
    assert pred["model_version"] == 1 and 0 <= pred["uncertainty"] <= 1
    mask = HTTP.get(
        f"{running_app.url}/api/images/{body['id']}/mask", headers=running_app.auth("viewer")
    )
    heat = HTTP.get(
        f"{running_app.url}/api/images/{body['id']}/heatmap", headers=running_app.auth("viewer")
    )
    assert mask.headers["content-type"] == heat.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(mask.content)).size == (128, 96)
    assert Image.open(io.BytesIO(heat.content)).mode == "RGB"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "0 bytes"),
        (b"hello, not an image", "not an image"),
        (png(surface(2))[:300], "truncated"),
        (b"\x00" * 2_100_000, "limit"),
    ],
)
def test_bad_uploads_are_refused_and_store_nothing(
    running_app: RunningApp, data: bytes, fragment: str
) -> None:
    before = running_app.app.services.repo.images.counts()["images"]
    response = upload(running_app, data, "bad.png")
    assert response.status_code == 422
    assert fragment in response.json()["error"] and "bad.png" in response.json()["error"]
    assert running_app.app.services.repo.images.counts()["images"] == before


def test_decompression_bomb_is_refused_before_decoding(running_app: RunningApp) -> None:
    bomb = png(np.zeros((2100, 2100), np.uint8))  # 4.4 MP of zeros compresses to a few KB
    response = upload(running_app, bomb, "bomb.png")
    assert response.status_code == 422 and "pixel limit" in response.json()["error"]


@pytest.mark.parametrize("kind", ["cmyk", "palette", "16bit", "alpha", "gray"])
def test_unusual_modes_are_converted_not_refused(running_app: RunningApp, kind: str) -> None:
    base = surface(10 + len(kind))
    buf = io.BytesIO()
    if kind == "cmyk":
        Image.fromarray(base).convert("CMYK").save(buf, format="JPEG")
    elif kind == "palette":
        Image.fromarray(base).convert("P").save(buf, format="PNG")
    elif kind == "16bit":
        Image.fromarray(base[..., 0].astype(np.uint16) * 257).save(buf, format="PNG")
    elif kind == "alpha":
        Image.fromarray(np.dstack([base, np.full(base.shape[:2], 200, np.uint8)])).save(buf, "PNG")
    else:
        Image.fromarray(base[..., 1]).save(buf, format="PNG")
    response = upload(running_app, buf.getvalue(), f"{kind}.img")
    assert response.status_code == 201, response.text


def test_corrections_validate_and_roles_apply(running_app: RunningApp) -> None:
    image_id = upload(running_app, png(surface(3))).json()["id"]
    url = f"{running_app.url}/api/images/{image_id}/corrections"
    mask = np.zeros((96, 128), np.uint8)
    mask[40:46, 20:100] = 255

    def post(role: str, m: bytes | None, action: str = "corrected"):  # type: ignore[no-untyped-def]
        files = {"mask": ("m.png", m)} if m is not None else None
        state = HTTP.get(
            f"{running_app.url}/api/images/{image_id}", headers=running_app.auth("viewer")
        ).json()["state"]
        data = {"action": action, "based_on": state}
        return HTTP.post(url, headers=running_app.auth(role), data=data, files=files)

    assert post("viewer", png(mask)).status_code == 403
    wrong_size = post("inspector", png(np.zeros((10, 10), np.uint8)))
    assert wrong_size.status_code == 422 and "10x10" in wrong_size.json()["error"]
    ambiguous = np.zeros((96, 128, 4), np.uint8)  # alpha and colour mark other pixels
    ambiguous[..., 3] = np.where(mask > 0, 255, 40)
    ambiguous[:10, :, :3] = 255
    assert "ambiguous" in post("inspector", png(ambiguous)).json()["error"]
    assert post("inspector", png(mask), action="maybe").status_code == 422
    missing = HTTP.post(
        f"{running_app.url}/api/images/99999/corrections",
        headers=running_app.auth("inspector"),
        data={"action": "skipped", "based_on": "p0-c0"},
    )
    assert missing.status_code == 404
    ok = post("inspector", png(mask))
    assert ok.status_code == 201
    back = HTTP.get(
        f"{running_app.url}/api/images/{image_id}/mask?source=correction",
        headers=running_app.auth("viewer"),
    )
    assert (np.asarray(Image.open(io.BytesIO(back.content))) == mask).all()
    view = HTTP.get(
        f"{running_app.url}/api/images/{image_id}", headers=running_app.auth("viewer")
    ).json()
    assert view["correction"]["id"] == ok.json()["id"]
    assert view["correction"]["author"] == "inspector"


def test_queue_leases_and_empties(running_app: RunningApp) -> None:
    services = running_app.app.services
    upload(running_app, png(surface(4)))
    seen = set()
    while True:
        r = HTTP.get(
            f"{running_app.url}/api/queue/next?order=arrival", headers=running_app.auth("admin")
        )
        if r.status_code == 204:
            break
        image_id = r.json()["id"]
        assert image_id not in seen
        seen.add(image_id)
        services.repo.reviews.save_correction(image_id, author="admin", action="skipped")
    assert seen and services.repo.images.counts()["pending"] == 0


def test_model_endpoints(running_app: RunningApp) -> None:
    models = HTTP.get(f"{running_app.url}/api/models", headers=running_app.auth("viewer"))
    assert models.json()[0]["status"] == "active"
    forbidden = HTTP.post(
        f"{running_app.url}/api/models/1/activate", headers=running_app.auth("inspector")
    )
    assert forbidden.status_code == 403
    ok = HTTP.post(f"{running_app.url}/api/models/1/activate", headers=running_app.auth("admin"))
    assert ok.status_code == 200 and ok.json() == {"id": 1, "status": "active", "changed": False}
    missing = HTTP.post(
        f"{running_app.url}/api/models/99/activate", headers=running_app.auth("admin")
    )
    assert missing.status_code == 404 and "99" in missing.json()["error"]
    assert (
        HTTP.get(
            f"{running_app.url}/api/training-runs/7", headers=running_app.auth("viewer")
        ).status_code
        == 404
    )


def test_training_runs_can_be_queued_and_cancelled(running_app: RunningApp) -> None:
    url = f"{running_app.url}/api/training-runs"
    assert HTTP.post(url, headers=running_app.auth("inspector")).status_code == 403
    started = HTTP.post(url, headers=running_app.auth("admin"))
    assert started.status_code == 202
    run_id = started.json()["id"]
    assert (
        HTTP.get(f"{url}/{run_id}", headers=running_app.auth("viewer")).json()["status"] == "queued"
    )  # no scheduler in this process: the worker would start it
    cancel = HTTP.post(f"{url}/{run_id}/cancel", headers=running_app.auth("admin")).json()
    assert cancel == {"id": run_id, "cancelled": True, "status": "cancelled"}
    again = HTTP.post(f"{url}/{run_id}/cancel", headers=running_app.auth("admin")).json()
    assert again["cancelled"] is False
    missing = HTTP.post(f"{url}/999/cancel", headers=running_app.auth("admin"))
    assert missing.status_code == 404
