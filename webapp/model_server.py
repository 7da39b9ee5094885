"""The served model: one reference to a (version, predictor) pair, swapped atomically.

A request takes the current pair once and finishes on it, so a hot-swap never changes the
model under a request in flight; every prediction is tagged with the version that made it.
A new checkpoint is loaded and smoke-tested beside the old one before the swap.

`views` trades accuracy for speed: every test-time view (flip/rotation) is one more encoder
pass per image, so serving with the first N of the model's calibrated views costs about N/V
of the time; None serves all of them, as the mask rule was calibrated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import load_bundle
from model.cpu_threads import ComputePool
from model.errors import CheckpointError
from model.feature_cache import FeatureCache
from model.predict import Click, Prediction, Predictor

log = logging.getLogger(__name__)


SERVED_CACHE_MEMORY_BYTES = 512 << 20  # per serving process; the disk level holds the rest


class NoModelError(RuntimeError):
    """A prediction was asked for while no model is served (HTTP 503)."""


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and the database version it belongs to (None: unregistered)."""

    version_id: int | None
    predictor: Predictor
    checkpoint: Path

    @property
    def encoder_id(self) -> str:
        return self.predictor.bundle.meta.encoder_id


def smoke_test(predictor: Predictor) -> None:
    """Run one prediction on a fixed pattern; CheckpointError unless every output is finite."""
    size = predictor.bundle.encoder.input_size
    pattern = (np.indices((size, size)).sum(0) % 255).astype(np.uint8)
    image = np.repeat(pattern[..., None], 3, axis=2)
    with torch.no_grad():
        pred = predictor.predict(image, sha256="smoke-test")
    if not (np.isfinite(pred.heatmap).all() and np.isfinite(pred.defect_score)):
        raise CheckpointError("smoke test produced non-finite outputs")


class ModelServer:
    """Holds the served model and swaps it without downtime."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        sam_checkpoint: Path | None = None,
        views: int | None = None,
        pool: ComputePool | None = None,
        mixed_precision: bool = True,
    ) -> None:
        """`pool`: the compute threads every served predictor runs its tile batches on;
        `mixed_precision` False serves in float32 even where the device has a faster
        reduced precision (`model.precision`)."""
        if views is not None and views < 1:
            raise ValueError(f"views must be at least 1 (or None for all), got {views}")
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self._cache_dir = cache_dir
        self._sam_checkpoint = sam_checkpoint
        self._views = views
        self._pool = pool
        self._mixed_precision = mixed_precision

    def close(self) -> None:
        """Stop the compute threads (after the last prediction)."""
        if self._pool is not None:
            self._pool.shutdown()

    @property
    def views(self) -> int | None:
        """How many of each model's test-time views are served (None: all of them)."""
        return self._views

    @property
    def current(self) -> ServedModel | None:
        """The served model right now (take it once per request)."""
        return self._current

    def load(
        self, checkpoint: Path | str, version_id: int | None, *, expected_sha256: str | None = None
    ) -> ServedModel:
        """Load and smoke-test a checkpoint beside the served one, then swap to it.

        `expected_sha256` (the hash registered with the version) refuses a file whose bytes
        changed since. On any failure the served model stays as it was and the error is
        raised. Only the hot-swap watcher calls this in a serving process.
        """
        with self._lock:
            current = self._current
            if current is not None and current.checkpoint == Path(checkpoint):
                if current.version_id != version_id:
                    self._current = ServedModel(version_id, current.predictor, current.checkpoint)
                return self._current
            # The frozen encoder is shared between versions with the same encoder weights.
            encoder = current.predictor.bundle.encoder if current is not None else None
            try:
                bundle = load_bundle(
                    checkpoint,
                    sam_checkpoint=self._sam_checkpoint,
                    encoder=encoder,
                    expected_sha256=expected_sha256,
                    mixed_precision=self._mixed_precision,
                )
            except CheckpointError:
                if encoder is None:
                    raise
                bundle = load_bundle(
                    checkpoint,
                    sam_checkpoint=self._sam_checkpoint,
                    expected_sha256=expected_sha256,
                    mixed_precision=self._mixed_precision,
                )
            if current is not None and bundle.meta.encoder_id != current.encoder_id:
                raise CheckpointError(
                    f"{checkpoint}: encoder {bundle.meta.encoder_id} differs from the served "
                    f"{current.encoder_id}"
                )
            cache = FeatureCache(
                self._cache_dir / bundle.meta.encoder_id if self._cache_dir else None,
                max_memory_bytes=SERVED_CACHE_MEMORY_BYTES,
            )
            views = None if self._views is None else bundle.meta.test_time_views[: self._views]
            predictor = Predictor(bundle, cache=cache, views=views, pool=self._pool)
            smoke_test(predictor)
            served = ServedModel(version_id, predictor, Path(checkpoint))
            self._current = served  # the swap: one reference assignment
            log.info("serving model version %s from %s", version_id, checkpoint)
            return served

    def predict(
        self, image: np.ndarray, *, sha256: str, clicks: tuple[Click, ...] = ()
    ) -> tuple[Prediction, int | None]:
        """Predict with the model served at call time; returns the version that made it."""
        served = self._current
        if served is None:
            raise NoModelError("no model is served yet: label images, and the first model trains")
        return served.predictor.predict(image, sha256=sha256, clicks=clicks), served.version_id

    def predict_many(
        self, images: Sequence[np.ndarray], *, shas: Sequence[str]
    ) -> tuple[list[Prediction], int | None]:
        """Predict a batch with the model served at call time, taken once for the whole
        batch, so every prediction of it is tagged with the one version that made it."""
        served = self._current
        if served is None:
            raise NoModelError("no model is served yet: label images, and the first model trains")
        return served.predictor.predict_many(images, shas=shas), served.version_id
