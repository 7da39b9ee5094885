"""Every serving process watches the active model version and swaps to it.

The new checkpoint is loaded and smoke-tested beside the old one (see `ModelServer.load`);
only then is the served reference replaced. A checkpoint that fails to load is logged and
skipped, and the old model keeps serving. After a swap, images still waiting for review are
re-predicted in the background, newest first.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from storage.schema import Image, ReviewStatus
from webapp.services import Services

log = logging.getLogger(__name__)


class HotSwapWatcher:
    """Polls the database for the active version; swaps the served model when it changes."""

    def __init__(self, services: Services, *, interval: float = 5.0) -> None:
        self.services = services
        self.interval = interval
        self.refused: dict[int, str] = {}  # version id → why it could not be loaded
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hot-swap", daemon=True)

    def start(self) -> HotSwapWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # the watcher must outlive any single failure
                log.exception("hot-swap check failed")
            self._stop.wait(self.interval)

    def check(self) -> bool:
        """Swap if the database's active version differs from the served one; True if swapped."""
        active = self.services.repo.active_version()
        current = self.services.models.current
        if active is None or (current is not None and current.version_id == active.id):
            return False
        if active.id in self.refused:
            return False
        try:
            self.services.models.load(active.checkpoint_path, active.id)
        except Exception as exc:
            self.refused[active.id] = str(exc)
            log.error("keeping the served model: version %s failed to load: %s", active.id, exc)
            return False
        log.info("now serving model version %s", active.id)
        self.repredict_pending()
        return True

    def repredict_pending(self) -> int:
        """Queue background predictions for every pending image, newest first."""
        with self.services.repo.session() as s:
            ids = list(
                s.scalars(
                    select(Image.id)
                    .where(Image.status == ReviewStatus.pending)
                    .order_by(Image.arrived_at.desc(), Image.id.desc())
                )
            )
        for image_id in ids:
            self.services.schedule_prediction(image_id)
        return len(ids)
