"""The watched inbox folder."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.webapp_fixtures import RunningApp
from webapp.inbox import InboxWatcher, scan_inbox


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 50, 3), np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def _drop(folder: Path, name: str, data: bytes, age: float = 5.0) -> Path:
    path = folder / name
    path.write_bytes(data)
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def test_scan_ingests_moves_and_explains_refusals(running_app: RunningApp, tmp_path: Path) -> None:
    services = running_app.app.services
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    before = services.repo.counts()["images"]
    _drop(inbox, "a.png", _png(1))
    _drop(inbox, "b.png", b"not an image at all")
    _drop(inbox, "notes.txt", b"ignored")
    fresh = _drop(inbox, "c.png", _png(2), age=0.0)  # still being written: left for later
    assert scan_inbox(services, inbox, settle_seconds=2.0) == 2
    assert (inbox / "done" / "a.png").is_file()
    assert (inbox / "refused" / "b.png").is_file()
    reason = (inbox / "refused" / "b.png.reason.txt").read_text()
    assert "b.png" in reason and "not an image" in reason
    assert fresh.is_file() and (inbox / "notes.txt").is_file()
    assert services.repo.counts()["images"] == before + 1


def test_watcher_picks_up_files_in_the_background(running_app: RunningApp, tmp_path: Path) -> None:
    services = running_app.app.services
    inbox = tmp_path / "watched"
    watcher = InboxWatcher(services, inbox, interval=0.2).start()
    try:
        _drop(inbox, "line7.png", _png(3))
        deadline = time.monotonic() + 20
        while not (inbox / "done" / "line7.png").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.stop()
    assert (inbox / "done" / "line7.png").exists()
    assert any(
        i.source == "inbox"
        for i in [
            services.repo.get_image(n) for n in range(1, services.repo.counts()["images"] + 1)
        ]
    )
