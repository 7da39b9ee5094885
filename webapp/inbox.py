"""A watched inbox folder: line systems drop image files there; each is ingested and moved
to `done/` (or `refused/` with a `.reason.txt` beside it), so nothing is lost or re-read."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from model.images import IMAGE_EXTENSIONS
from storage.errors import StorageError
from webapp.ingest import IngestError
from webapp.services import Services

log = logging.getLogger(__name__)
SETTLE_SECONDS = 1.0  # a file must be unchanged this long before it is read


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / path.name
    n = 1
    while dest.exists():
        dest = folder / f"{path.stem}-{n}{path.suffix}"
        n += 1
    shutil.move(str(path), dest)
    return dest


def scan_inbox(services: Services, inbox: Path, *, settle_seconds: float = SETTLE_SECONDS) -> int:
    """Ingest every settled image file in `inbox` once; returns how many were handled."""
    handled = 0
    now = time.time()
    for path in sorted(p for p in inbox.iterdir() if p.is_file()):
        if (
            path.suffix.lower() not in IMAGE_EXTENSIONS
            or now - path.stat().st_mtime < settle_seconds
        ):
            continue
        try:
            result = services.ingest(path.read_bytes(), path.name, source="inbox")
            _move(path, inbox / "done")
            log.info(
                "inbox: %s → image %s%s",
                path.name,
                result.id,
                " (duplicate)" if result.duplicate else "",
            )
        except (IngestError, StorageError) as exc:
            dest = _move(path, inbox / "refused")
            dest.with_name(dest.name + ".reason.txt").write_text(f"{exc}\n")
            log.warning("inbox: refused %s: %s", path.name, exc)
        handled += 1
    return handled


class InboxWatcher:
    """Polls the inbox folder in a daemon thread until stopped."""

    def __init__(self, services: Services, inbox: Path, *, interval: float = 2.0) -> None:
        self.services = services
        self.inbox = inbox
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inbox", daemon=True)

    def start(self) -> InboxWatcher:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                scan_inbox(self.services, self.inbox)
            except OSError as exc:  # a vanished or unreadable file: try again next round
                log.warning("inbox scan failed: %s", exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
