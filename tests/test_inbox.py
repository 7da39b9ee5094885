"""The watched inbox folder, on a real SQLite database."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from webapp.app import build_services
from webapp.inbox import InboxScanner, InboxWatcher
from webapp.services import Services
from webapp.settings import Settings

MAX_BYTES = 100_000


def _png(seed: int, width: int = 50) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (40, width, 3), np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _drop(folder: Path, name: str, data: bytes, age: float = 5.0, append: bool = False) -> Path:
    path = folder / name
    with path.open("ab" if append else "wb") as fh:
        fh.write(data)
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def _sql(services: Services, statement: str) -> None:
    with services.repo.engine.begin() as conn:
        conn.execute(text(statement))


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(data_dir=tmp_path / "data", max_image_bytes=MAX_BYTES))
    yield svc
    svc.shutdown()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def _images(services: Services) -> int:
    return services.repo.images.counts()["images"]


def test_settled_files_are_ingested_and_refusals_explained(services: Services, inbox: Path) -> None:
    scanner = InboxScanner(services, inbox, settle_seconds=2.0)
    _drop(inbox, "a.png", _png(1))
    _drop(inbox, "b.png", b"not an image at all")
    _drop(inbox, "notes.txt", b"ignored")
    fresh = _drop(inbox, "c.png", _png(2), age=0.0)  # younger than settle_seconds
    first = scanner.scan()
    assert first.ingested == [] and sorted(first.waiting) == ["a.png", "b.png", "c.png"]
    second = scanner.scan()
    assert second.ingested == ["a.png"] and second.waiting == ["c.png"]
    assert [name for name, _ in second.refused] == ["b.png"]
    assert (inbox / "done" / "a.png").is_file()
    reason = (inbox / "refused" / "b.png.reason.txt").read_text()
    assert "b.png" in reason and "not an image" in reason
    assert fresh.is_file() and (inbox / "notes.txt").is_file()
    assert _images(services) == 1


def test_a_growing_file_waits_and_is_never_refused(services: Services, inbox: Path) -> None:
    scanner = InboxScanner(services, inbox, settle_seconds=1.0)
    data = _png(3)
    third = len(data) // 3
    _drop(inbox, "slow.png", data[:third])
    scanner.scan()
    for part in (data[third : 2 * third], data[2 * third :]):  # long pauses between writes
        _drop(inbox, "slow.png", part, append=True)
        report = scanner.scan()
        assert report.waiting == ["slow.png"] and report.refused == []
    assert scanner.scan().ingested == ["slow.png"]
    assert (inbox / "done" / "slow.png").read_bytes() == data
    assert not (inbox / "refused").exists()


def test_symlinks_are_never_read_through(services: Services, inbox: Path, tmp_path: Path) -> None:
    secret = _drop(tmp_path, "elsewhere.png", _png(4))
    (inbox / "link.png").symlink_to(secret)
    (inbox / "dangling.png").symlink_to(tmp_path / "missing.png")
    scanner = InboxScanner(services, inbox, settle_seconds=0.0)
    for _ in range(2):
        report = scanner.scan()
        assert report.ingested == report.waiting == report.refused == []
    assert (inbox / "link.png").is_symlink() and secret.read_bytes() == _png(4)
    assert _images(services) == 0


def test_a_file_the_database_rejects_does_not_block_the_files_after_it(
    services: Services, inbox: Path
) -> None:
    _sql(
        services,
        "CREATE TRIGGER reject_13 BEFORE INSERT ON images WHEN NEW.width = 13 "
        "BEGIN SELECT RAISE(ABORT, 'rejected by the database'); END",
    )
    _drop(inbox, "a.png", _png(5, width=13))
    _drop(inbox, "b.png", _png(6))
    _drop(inbox, "c.png", _png(7))
    scanner = InboxScanner(services, inbox, settle_seconds=0.0)
    scanner.scan()
    report = scanner.scan()
    assert report.ingested == ["b.png", "c.png"]
    assert [name for name, _ in report.failed] == ["a.png"]
    assert (inbox / "a.png").is_file() and not (inbox / "refused").exists()
    _sql(services, "DROP TRIGGER reject_13")
    assert scanner.scan().ingested == ["a.png"]
    assert _images(services) == 3


def test_a_file_over_the_size_limit_is_refused_unread_and_the_rest_go_on(
    services: Services, inbox: Path
) -> None:
    _drop(inbox, "a-huge.png", bytes(MAX_BYTES + 1))
    _drop(inbox, "b.png", _png(8))
    scanner = InboxScanner(services, inbox, settle_seconds=0.0)
    scanner.scan()
    report = scanner.scan()
    assert report.ingested == ["b.png"]
    assert "over the 100000-byte limit" in (inbox / "refused" / "a-huge.png.reason.txt").read_text()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_refused_and_the_rest_go_on(services: Services, inbox: Path) -> None:
    locked = _drop(inbox, "a.png", _png(9))
    locked.chmod(0)
    _drop(inbox, "b.png", _png(10))
    scanner = InboxScanner(services, inbox, settle_seconds=0.0)
    scanner.scan()
    report = scanner.scan()
    assert report.ingested == ["b.png"] and [n for n, _ in report.refused] == ["a.png"]
    assert "cannot be read" in (inbox / "refused" / "a.png.reason.txt").read_text()


def _wait_until(watcher: InboxWatcher, condition: Callable[[], bool], passes: int = 200) -> bool:
    """Check `condition` after each finished pass of the watcher."""
    for _ in range(passes):
        if condition():
            return True
        assert watcher.wait_for_pass(watcher.passes, timeout=30), "the watcher stopped passing"
    return condition()


def test_the_watcher_survives_a_database_outage(services: Services, tmp_path: Path) -> None:
    inbox = tmp_path / "watched"
    _sql(
        services,
        "CREATE TRIGGER outage BEFORE INSERT ON images "
        "BEGIN SELECT RAISE(ABORT, 'database unavailable'); END",
    )
    watcher = InboxWatcher(services, inbox, interval=0.01, settle_seconds=0.0).start()
    try:
        _drop(inbox, "line7.png", _png(11))
        assert _wait_until(watcher, lambda: "database unavailable" in (watcher.last_error or ""))
        _sql(services, "DROP TRIGGER outage")
        assert _wait_until(watcher, lambda: (inbox / "done" / "line7.png").exists())
        assert watcher.alive
    finally:
        watcher.stop()
    assert not (inbox / "refused").exists()
    assert services.repo.images.get_image(1).source == "inbox"


def test_the_watcher_survives_its_folder_vanishing(services: Services, tmp_path: Path) -> None:
    inbox = tmp_path / "watched"
    watcher = InboxWatcher(services, inbox, interval=0.01, settle_seconds=0.0).start()
    try:
        assert watcher.wait_for_pass(0, timeout=30)
        inbox.rmdir()
        assert _wait_until(watcher, inbox.is_dir)
        _drop(inbox, "late.png", _png(12))
        assert _wait_until(watcher, lambda: (inbox / "done" / "late.png").exists())
        assert watcher.alive
    finally:
        watcher.stop()
