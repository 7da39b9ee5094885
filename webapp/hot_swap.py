"""Every serving process watches the active model version and swaps to it.

This watcher is the only code that loads a model into a serving process: a promotion or
rollback (from the API, the UI, a retraining run or `serve --checkpoint`) only writes the
database. The new checkpoint is verified against its registered sha256, loaded and
smoke-tested beside the old one (see `ModelServer.load`); only then is the served
reference replaced. A version that fails to load is remembered and skipped, and the old
model keeps serving. A process that has no model yet (start-up after a power cut left the
active checkpoint truncated) falls back to the newest version that loads, and says so.

Re-predicting the review queue after a promotion is one job for the whole deployment: the
promotion's row is claimed through the database by the first process that serves the
promoted version, whichever it is.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from model.errors import CheckpointError
from storage.schema import ModelVersion, VersionStatus
from webapp.background_loop import BackgroundLoop
from webapp.services import Services

log = logging.getLogger(__name__)
ACTIVE_CHECK_EVERY = 16  # re-predicted images between checks that the promotion still holds


def process_name() -> str:
    """A name for this process in promotion claims: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class HotSwapWatcher(BackgroundLoop):
    """Polls the database for the active version; swaps the served model when it changes
    and re-predicts the queue when it claims the promotion (`wake()` after a promotion in
    this process checks at once)."""

    name = "hot-swap"

    def __init__(self, services: Services, *, interval: float = 5.0) -> None:
        super().__init__(interval=interval)
        self.services = services
        self.owner = process_name()  # this process, in promotion claims
        self.refused: dict[int, str] = {}  # version id → why it could not be loaded
        self.fallback: str | None = None  # why a version other than the active one is served
        self._lock = threading.Lock()  # one check at a time (thread tick vs. start-up call)

    def problem(self) -> str | None:
        """Why the served model is not the active one, if it is not (for health and the UI)."""
        return self.fallback

    def tick(self) -> None:
        self.check()

    def check(self, *, repredict: bool = True) -> bool:
        """Serve the active version (or the best fallback) and, with `repredict`, do this
        process's share of re-predicting; True if the served model changed."""
        with self._lock:
            swapped = self._swap_to_active()
            served = self.services.models.current
            if repredict and served is not None and served.version_id is not None:
                self._repredict_if_claimed(served.version_id)
            return swapped

    # ------------------------------------------------------------------ swapping
    def _load(self, version: ModelVersion) -> bool:
        try:
            self.services.models.load(
                version.checkpoint_path, version.id, expected_sha256=version.checkpoint_sha256
            )
        except (CheckpointError, OSError, RuntimeError, ValueError) as exc:
            self.refused[version.id] = str(exc)
            log.error("version %s cannot be served: %s", version.id, exc)
            return False
        return True

    def _swap_to_active(self) -> bool:
        registry = self.services.repo.registry
        active = registry.active_version()
        current = self.services.models.current
        if active is None:
            return False
        if current is not None and current.version_id == active.id:
            self.fallback = None
            return False
        if active.id not in self.refused and self._load(active):
            self.fallback = None
            log.info("now serving model version %s", active.id)
            return True
        why = self.refused.get(active.id, "")
        if current is not None:
            self.fallback = (
                f"active version {active.id} cannot be loaded ({why}); still serving "
                f"version {current.version_id}"
            )
            return False
        # Nothing served yet: the newest version that loads, never a rejected candidate.
        for version in sorted(registry.model_versions(), key=lambda v: v.id, reverse=True):
            if version.id == active.id or version.status is VersionStatus.rejected:
                continue
            if version.id not in self.refused and self._load(version):
                self.fallback = (
                    f"active version {active.id} cannot be loaded ({why}); serving "
                    f"version {version.id}, the newest that loads"
                )
                log.warning(self.fallback)
                return True
        self.fallback = f"active version {active.id} cannot be loaded ({why}); no model served"
        return False

    # ------------------------------------------------------------------ re-predicting
    def _repredict_if_claimed(self, version_id: int) -> int:
        """Claim this version's promotion, if it is the newest unfinished one, and re-predict
        every pending image with it; returns the number re-predicted."""
        repo = self.services.repo
        promotion = repo.registry.claim_promotion(version_id, self.owner)
        if promotion is None:
            return 0
        ids = repo.images.pending_image_ids()
        log.info("re-predicting %d pending images with version %s", len(ids), version_id)
        done, outcome = 0, "done"
        for n, image_id in enumerate(ids):
            if self.stopping:  # leave the claim: it goes stale and is taken over
                return done
            if n % ACTIVE_CHECK_EVERY == 0:
                active = repo.registry.active_version()
                if active is None or active.id != version_id:
                    outcome = "interrupted: another version became active"
                    break
            served = self.services.models.current
            if served is None or served.version_id != version_id:
                outcome = "interrupted: the served model changed"
                break
            try:
                self.services.predict_image(image_id)
                done += 1
            except Exception as exc:  # one bad image must not stop the rest
                log.error("re-predicting image %s failed: %s", image_id, exc)
        repo.registry.finish_promotion(promotion.id, repredicted=done, outcome=outcome)
        return done
