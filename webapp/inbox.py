"""A watched inbox folder: line systems drop image files there; each is ingested and moved
to `done/` (or `refused/` with a `.reason.txt` beside it), so nothing is lost or re-read.
Files dropped in its sub-folder `good/` are known good: ingested declared defect-free (a
label) and moved to `good/done/` (or `good/refused/`) under the same rules.

* Only regular files with an image extension are read. Symlinks (and folders, pipes, ...)
  are left alone; files are opened with O_NOFOLLOW, so one swapped for a link is never
  read through.
* A file is read once its size and modification time are unchanged since the previous
  pass and it is at least `settle_seconds` old: a file still being written waits.
* A file the app refuses (not an image, too large, unreadable) goes to `refused/` with
  the reason, and the pass goes on with the next file.
* A failure that is not the file's fault (the database is down) leaves the file in
  place for the next pass; the watcher thread logs it and keeps running.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from model.images import IMAGE_EXTENSIONS
from storage.errors import StorageError
from webapp.cold_start import GOOD
from webapp.ingest import IngestError
from webapp.services import Services

log = logging.getLogger(__name__)
SETTLE_SECONDS = 1.0  # a file must also be this old before it is read
_LEFT_ALONE = (errno.ELOOP, errno.ENOENT, errno.ENXIO)  # became a link, vanished, a socket

Signature = tuple[int, int]  # size in bytes, mtime in ns


@dataclass
class ScanReport:
    """What one pass did, by file name."""

    ingested: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # not settled yet
    failed: list[tuple[str, str]] = field(default_factory=list)  # left for the next pass


class _Unsettled(Exception):
    """The file changed while it was being read, or is no longer a plain file."""


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / path.name
    n = 1
    while dest.exists():
        dest = folder / f"{path.stem}-{n}{path.suffix}"
        n += 1
    os.replace(path, dest)
    return dest


def _signature(st: os.stat_result) -> Signature:
    return st.st_size, st.st_mtime_ns


def _read_settled(path: Path, signature: Signature, *, max_bytes: int) -> bytes:
    """The bytes of a plain file still matching `signature` (never through a symlink);
    IngestError when over `max_bytes` (checked before reading), _Unsettled when it changed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        before = os.fstat(fh.fileno())
        if not stat.S_ISREG(before.st_mode) or _signature(before) != signature:
            raise _Unsettled
        if before.st_size > max_bytes:
            raise IngestError(
                f"{path.name}: {before.st_size} bytes is over the {max_bytes}-byte limit"
            )
        data = fh.read(max_bytes + 1)
        if _signature(os.fstat(fh.fileno())) != signature or len(data) != before.st_size:
            raise _Unsettled
    return data


class InboxScanner:
    """Passes over one inbox folder; remembers what it saw so a file must hold still."""

    def __init__(
        self, services: Services, inbox: Path, *, settle_seconds: float = SETTLE_SECONDS
    ) -> None:
        self.services = services
        self.inbox = inbox
        self.settle_seconds = settle_seconds
        self._seen: dict[str, Signature] = {}

    @property
    def good(self) -> Path:
        """The sub-folder for known-good images."""
        return self.inbox / GOOD

    def scan(self) -> ScanReport:
        """One pass over the folder and its `good/` sub-folder (OSError only when the inbox
        itself cannot be listed; a missing `good/` is simply empty). Files are reported by
        their path below the inbox (`a.png`, `good/b.png`)."""
        report = ScanReport()
        seen: dict[str, Signature] = {}
        now = time.time()
        for folder, label in ((self.inbox, None), (self.good, GOOD)):
            try:
                with os.scandir(folder) as entries:
                    candidates = sorted(
                        (e for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS)),
                        key=lambda e: e.name,
                    )
            except FileNotFoundError:
                if label is None:
                    raise
                continue
            for entry in candidates:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                name = entry.name if label is None else f"{label}/{entry.name}"
                seen[name] = signature = _signature(st)
                settled = now - st.st_mtime >= self.settle_seconds
                if self._seen.get(name) != signature or not settled:
                    report.waiting.append(name)
                    continue
                if not self._handle(Path(entry.path), name, signature, label, report):
                    report.waiting.append(name)
        self._seen = seen
        return report

    def _handle(
        self, path: Path, name: str, signature: Signature, label: str | None, report: ScanReport
    ) -> bool:
        """Ingest, refuse or leave one settled file; False when it turned out unsettled."""
        try:
            data = _read_settled(path, signature, max_bytes=self.services.settings.max_image_bytes)
        except _Unsettled:
            return False
        except IngestError as exc:
            self._refuse(path, name, str(exc), report)
            return True
        except OSError as exc:
            if exc.errno in _LEFT_ALONE:
                return True
            self._refuse(path, name, f"{path.name}: cannot be read ({exc.strerror or exc})", report)
            return True
        try:
            result = self.services.ingest(data, path.name, source="inbox", label=label)
        except (IngestError, StorageError) as exc:
            self._refuse(path, name, str(exc), report)
            return True
        except Exception as exc:  # not the file's fault (database, disk): try again later
            log.exception("inbox: %s left for the next pass", name)
            report.failed.append((name, f"{exc.__class__.__name__}: {exc}"))
            return True
        try:
            _move(path, path.parent / "done")
        except OSError as exc:  # stored; the next pass finds it a duplicate and moves it
            report.failed.append((name, f"stored but not moved to done/: {exc}"))
            return True
        log.info(
            "inbox: %s → image %s%s%s",
            name,
            result.id,
            " (a duplicate)" if result.duplicate else "",
            " labelled defect-free" if result.labelled else "",
        )
        report.ingested.append(name)
        return True

    def _refuse(self, path: Path, name: str, reason: str, report: ScanReport) -> None:
        try:
            dest = _move(path, path.parent / "refused")
            dest.with_name(dest.name + ".reason.txt").write_text(f"{reason}\n")
        except OSError as exc:
            log.error("inbox: could not move refused %s aside: %s", name, exc)
            report.failed.append((name, f"{reason}; not moved to refused/: {exc}"))
            return
        log.warning("inbox: refused %s: %s", name, reason)
        report.refused.append((name, reason))


class InboxWatcher:
    """Polls the inbox folder in a daemon thread until stopped; no error ends the thread."""

    def __init__(
        self,
        services: Services,
        inbox: Path,
        *,
        interval: float = 2.0,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self.inbox = inbox
        self.interval = interval
        self.scanner = InboxScanner(services, inbox, settle_seconds=settle_seconds)
        self.passes = 0
        self.last_report: ScanReport | None = None
        self.last_error: str | None = None
        self._pass_done = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inbox", daemon=True)

    def start(self) -> InboxWatcher:
        self.inbox.mkdir(parents=True, exist_ok=True)  # `good/` is the line's to create
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            report: ScanReport | None = None
            try:
                self.inbox.mkdir(parents=True, exist_ok=True)
                report = self.scanner.scan()
                error = "; ".join(f"{name}: {why}" for name, why in report.failed) or None
            except Exception as exc:
                log.exception("inbox: pass over %s failed; retrying", self.inbox)
                error = f"{exc.__class__.__name__}: {exc}"
            with self._pass_done:
                self.passes += 1
                self.last_report, self.last_error = report, error
                self._pass_done.notify_all()
            self._stop.wait(self.interval)

    def wait_for_pass(self, after: int, timeout: float) -> bool:
        """Block until pass number `after` + 1 has finished (False on timeout)."""
        with self._pass_done:
            return self._pass_done.wait_for(lambda: self.passes > after, timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
