"""Scale-out on loopback: two web processes and one worker on one PostgreSQL database and
one blob directory. A model swap reaches both web processes; work queued through one web
process is picked up by the worker."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import text

from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.hashing import sha256_file
from storage.accounts import Accounts
from storage.blobs import BlobStore
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.repository import Repository
from tests.storage_fixtures import POSTGRES_URL, postgres_available
from tests.waiting import wait_for
from tests.webapp_fixtures import free_port

pytestmark = pytest.mark.skipif(
    not postgres_available(), reason=f"no PostgreSQL server answers at {POSTGRES_URL}"
)


def _wait_healthy(url: str, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"a process exited early with code {p.returncode}"
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not become healthy")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict]:
    schema = f"mp_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    upgrade(engine)
    accounts = Accounts(engine)
    accounts.add_user("ops", "ops-password", role="admin")
    token = accounts.issue_token("ops")
    torch.manual_seed(0)
    v1 = save_checkpoint(
        tmp_path / "v1.pt",
        new_bundle(build_encoder("effnet_lite0", input_size=128), label_sigma=2.0),
    )
    torch.manual_seed(1)
    v2 = save_checkpoint(
        tmp_path / "v2.pt",
        new_bundle(build_encoder("effnet_lite0", input_size=128), label_sigma=2.0),
    )
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "HEATPROMPT_DATA_DIR": str(tmp_path / "data"),
        "HEATPROMPT_CHECKPOINT": str(v1),
        "HEATPROMPT_HOT_SWAP_SECONDS": "0.5",
        "HEATPROMPT_RETRAIN_CHECK_MINUTES": "0.05",
    }
    ports = [free_port(), free_port()]
    cli = [sys.executable, "-m", "webapp.cli"]
    logs = tmp_path / "logs"
    logs.mkdir()
    handles = []

    def start(*args: str, log: str) -> subprocess.Popen:
        handle = (logs / log).open("w")  # closed in the finally below
        handles.append(handle)
        return subprocess.Popen([*cli, *args], env=env, stdout=handle, stderr=subprocess.STDOUT)

    # The first web process registers the configured checkpoint; start it alone first.
    procs = [start("serve", "--no-scheduler", "--port", str(ports[0]), log="web1.log")]
    webs = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        _wait_healthy(webs[0], procs)
        procs.append(start("serve", "--no-scheduler", "--port", str(ports[1]), log="web2.log"))
        procs.append(start("worker", log="worker.log"))
        _wait_healthy(webs[1], procs)
        repo = Repository(engine, BlobStore(tmp_path / "data" / "blobs"))
        yield {
            "webs": webs,
            "repo": repo,
            "token": token,
            "v2": v2,
            "procs": procs,
            "engine": engine,
            "logs": logs,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for handle in handles:
            handle.close()
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((96, 128, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_two_web_processes_and_a_worker_share_one_database(cluster: dict) -> None:
    webs, repo = cluster["webs"], cluster["repo"]
    headers = {"Authorization": f"Bearer {cluster['token']}"}
    assert [httpx.get(f"{w}/api/health").json()["served_model_version"] for w in webs] == [1, 1]

    # Images sent to web 1 are visible, with their predictions, through web 2.
    ids = [
        httpx.post(
            f"{webs[0]}/api/images", headers=headers, files={"file": (f"{v}.png", _png(v))}
        ).json()["id"]
        for v in (40, 80, 120, 160, 200)
    ]

    def predicted_by(version: int) -> bool:
        views = [httpx.get(f"{webs[1]}/api/images/{i}", headers=headers).json() for i in ids]
        return all(v["prediction"] and v["prediction"]["model_version"] == version for v in views)

    wait_for(lambda: predicted_by(1), "first predictions")

    # Promote a new version through web 1's API: both web processes swap to it, and the
    # pending queue is re-predicted exactly once, by whichever process claimed the job.
    v2 = repo.registry.register_model_version(
        checkpoint_path=str(cluster["v2"]),
        checkpoint_sha256=sha256_file(cluster["v2"]),
        encoder_id="effnet_lite0",
    )
    answer = httpx.post(f"{webs[0]}/api/models/{v2}/activate", headers=headers, timeout=60)
    assert answer.status_code == 200 and answer.json()["changed"] is True, answer.text

    def both_serve_v2() -> bool:
        health = [httpx.get(f"{w}/api/health").json() for w in webs]
        return [h["served_model_version"] for h in health] == [v2, v2]

    wait_for(both_serve_v2, "both processes serving v2")
    promotion = wait_for(
        lambda: next(
            (
                p
                for p in httpx.get(f"{webs[1]}/api/promotions", headers=headers).json()
                if p["version"] == v2 and p["finished_at"]
            ),
            None,
        ),
        "the promotion's re-prediction",
    )
    assert promotion["outcome"] == "done" and promotion["repredicted"] == len(ids)
    with cluster["engine"].connect() as conn:
        per_image = dict(
            conn.execute(
                text(
                    "select image_id, count(*) from predictions "
                    "where model_version_id = :v group by image_id"
                ),
                {"v": v2},
            ).all()
        )
    assert per_image == {i: 1 for i in ids}
    assert predicted_by(v2)

    # A training run asked for through web 2 is started by the worker (it fails fast here:
    # nothing is labelled yet), and the worker's job lives in the shared database.
    run_id = httpx.post(f"{webs[1]}/api/training-runs", headers=headers).json()["id"]
    deadline = time.monotonic() + 90
    status = "queued"
    while time.monotonic() < deadline and status in ("queued", "running"):
        status = httpx.get(f"{webs[0]}/api/training-runs/{run_id}", headers=headers).json()[
            "status"
        ]
        time.sleep(0.5)
    run = httpx.get(f"{webs[0]}/api/training-runs/{run_id}", headers=headers).json()
    assert status == "failed" and "no labelled images" in run["error"], run
    with cluster["engine"].connect() as conn:
        assert conn.execute(text("select id from apscheduler_jobs")).scalars().all() == [
            "retrain-check"
        ]
