"""Review through the API: Accept stores the prediction, stale saves are refused with the
newer state and lose nothing, viewers only read, and the queue order is a named strategy."""

from __future__ import annotations

import io
from datetime import timedelta

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import update

from storage.schema import Image as ImageRow
from storage.schema import utcnow
from tests.webapp_fixtures import PASSWORD, RunningApp
from webapp.permissions import PermissionDenied
from webapp.review_order import STRATEGIES


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _surface(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 160, (72, 96, 3), dtype=np.uint8)
    img[30:34, 10:80] = 25
    return _png(img)


def _ingest(app: RunningApp, seed: int) -> int:
    with app.client("inspector") as c:
        image_id = c.post("/api/images", files={"file": (f"{seed}.png", _surface(seed))}).json()
    assert app.app.services.wait_for_predictions(120)
    return int(image_id["id"])


def _save(app: RunningApp, role: str, image_id: int, action: str, state: str, mask=None):  # type: ignore[no-untyped-def]
    files = {"mask": ("m.png", _png(mask))} if mask is not None else None
    with app.client(role) as c:
        return c.post(
            f"/api/images/{image_id}/corrections",
            data={"action": action, "based_on": state},
            files=files,
        )


def _view(app: RunningApp, image_id: int) -> dict:
    with app.client("viewer") as c:
        return c.get(f"/api/images/{image_id}").json()


def _expire_leases(app: RunningApp) -> None:
    with app.app.services.repo.session() as s, s.begin():
        s.execute(update(ImageRow).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def test_accept_stores_the_predicted_mask_as_the_label(running_app: RunningApp) -> None:
    image_id = _ingest(running_app, 1)
    view = _view(running_app, image_id)
    assert view["prediction"] is not None
    answer = _save(running_app, "inspector", image_id, "accepted", view["state"])
    assert answer.status_code == 201, answer.text
    with running_app.client("viewer") as c:
        predicted = c.get(f"/api/images/{image_id}/mask?source=prediction").content
        label = c.get(f"/api/images/{image_id}/mask?source=correction").content
    after = _view(running_app, image_id)
    assert after["correction"]["action"] == "accepted" and after["status"] == "reviewed"
    assert after["correction"]["prediction"] == view["prediction"]["id"]
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(predicted))), np.asarray(Image.open(io.BytesIO(label)))
    )


def test_a_stale_save_gets_409_with_the_newer_state_and_nothing_is_lost(
    running_app: RunningApp,
) -> None:
    app = running_app
    accounts = app.app.services.accounts
    accounts.add_user("second", PASSWORD, role="inspector")
    app.tokens["second"] = accounts.issue_token("second")
    image_id = _ingest(app, 2)
    with app.client("inspector") as c:
        assert c.get("/api/queue/next?order=arrival").json()["id"] == image_id
    seen = _view(app, image_id)["state"]
    # While the first reviewer holds the lease, nobody else can save the image.
    mask = np.zeros((72, 96), np.uint8)
    mask[30:34, 10:80] = 255
    held = _save(app, "second", image_id, "corrected", seen, mask)
    assert held.status_code == 409 and "being reviewed by inspector" in held.json()["error"]
    # The lease expires; the second reviewer takes the image and saves a correction.
    _expire_leases(app)
    with app.client("second") as c:
        assert c.get("/api/queue/next?order=arrival").json()["id"] == image_id
    newer = _save(app, "second", image_id, "corrected", seen, mask)
    assert newer.status_code == 201, newer.text
    # The first reviewer, still on the old state, presses Accept: refused, with the state now.
    stale = _save(app, "inspector", image_id, "accepted", seen)
    assert stale.status_code == 409, stale.text
    body = stale.json()
    assert "changed since you opened it" in body["error"]
    assert body["current"]["correction"]["id"] == newer.json()["id"]
    assert body["current"]["correction"]["author"] == "second"
    assert _view(app, image_id)["correction"]["id"] == newer.json()["id"]  # nothing overwritten
    # Deliberately saving again on the newer state works.
    again = _save(app, "inspector", image_id, "defect_free", body["current"]["state"])
    assert again.status_code == 201
    assert _view(app, image_id)["correction"]["action"] == "defect_free"
    assert _save(app, "inspector", image_id, "skipped", "nonsense").status_code == 422


def test_viewers_read_only_and_take_no_leases(running_app: RunningApp) -> None:
    app = running_app
    image_id = _ingest(app, 3)
    _expire_leases(app)
    with app.client("viewer") as c:
        refused = c.post("/api/images", files={"file": ("v.png", _surface(30))})
        assert refused.status_code == 403 and "viewer" in refused.json()["error"]
        peeked = c.get("/api/queue/next?order=arrival")
        assert peeked.status_code == 200
        assert c.post("/api/training-runs").status_code == 403
        assert c.post("/api/models/1/activate").status_code == 403
    first = peeked.json()["id"]
    # The viewer holds nothing: an inspector asking next gets that very image.
    with app.client("inspector") as c:
        assert c.get("/api/queue/next?order=arrival").json()["id"] == first
    state = _view(app, image_id)["state"]
    assert _save(app, "viewer", image_id, "skipped", state).status_code == 403
    with pytest.raises(PermissionDenied, match="cannot export"):
        app.app.services.export(app.app.services.user("viewer"), "png")


def test_queue_orders_are_the_registered_strategies(running_app: RunningApp) -> None:
    app = running_app
    for seed in (40, 41, 42):
        _ingest(app, seed)
    _expire_leases(app)
    repo = app.app.services.repo
    pending = [repo.images.get_image(i) for i in repo.images.pending_image_ids()]
    most_uncertain = max(pending, key=lambda i: (i.uncertainty, -i.arrived_at.timestamp()))
    oldest = min(pending, key=lambda i: (i.arrived_at, i.id))
    with app.client("admin") as c:
        by_uncertainty = c.get("/api/queue/next?order=uncertainty").json()
        bad = c.get("/api/queue/next?order=random")
    assert by_uncertainty["id"] == most_uncertain.id
    prediction = repo.images.latest_prediction(most_uncertain.id)
    assert STRATEGIES["uncertainty"].score(most_uncertain, prediction) == prediction.uncertainty
    assert STRATEGIES["arrival"].score(most_uncertain, prediction) is None
    with app.client("second") as c:  # another reviewer: the admin's lease is skipped
        expected = (
            oldest.id
            if oldest.id != most_uncertain.id
            else sorted(
                (i for i in pending if i.id != most_uncertain.id),
                key=lambda i: (i.arrived_at, i.id),
            )[0].id
        )
        assert c.get("/api/queue/next?order=arrival").json()["id"] == expected
    assert bad.status_code == 422
    assert "uncertainty" in bad.json()["error"] and "arrival" in bad.json()["error"]


def test_health_reports_state_and_prediction_backlog(running_app: RunningApp) -> None:
    health = httpx.get(f"{running_app.url}/api/health", timeout=60).json()
    assert health["state"] == "model" and health["served_model_version"] == 1
    assert health["prediction_backlog"] >= 0 and "prediction_unpredicted" in health
