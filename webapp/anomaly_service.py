"""Zero-label anomaly maps: this process's served normality model, and its upkeep.

A fresh deployment has no supervised model, but reviewers mark images Defect-free from the
start. A normality model built from those known-good images (no training run) scores every
image against them, so the app shows a heatmap and ranks the queue before the first label
of a defect. Afterwards it stays on as a second opinion.

Every serving process loads the newest `normality_models` row (its file checked against the
registered sha256). One process per deployment — the one running the retraining scheduler —
also refits: when the known-good set changed since the newest model it builds a new one in
a background thread, registers it, serves it and scores the pending images with it, so no
request ever waits for a fit. Fitting and scoring share one encoder, and one lock keeps
them from running at once (on a small CPU they would only slow each other down).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.cpu_threads import cpu_cores, pin_intra_op_threads
from model.encoders import FrozenEncoder, build_encoder
from model.errors import CheckpointError
from model.feature_cache import FeatureCache
from model.hashing import sha256_file
from model.images import decode_image
from model.normality import MAX_FIT_IMAGES, fit_sample
from model.normality_ensemble import EnsembleScorer, NormalityEnsemble, fit_ensemble
from storage.errors import StorageError
from storage.repository import Repository
from storage.schema import NormalityModel as NormalityRow
from webapp.background_loop import BackgroundLoop
from webapp.settings import Settings

log = logging.getLogger(__name__)

ENCODER_ID = "effnet_lite0"  # pretrained, small and offline: what a cold start can rely on
MIN_GOOD_IMAGES = 2
SCORE_BATCH = 16  # pending images scored per round, so a refit never waits for a long queue
CACHE_MEMORY_BYTES = 256 << 20
LABELS_KEY = "known_good_labels"  # in a row's metrics: the known-good labels it was fitted at
MAX_REMEMBERED_FAILURES = 10_000


@dataclass(frozen=True)
class ServedNormality:
    """The normality model this process serves and the row it was registered as."""

    model_id: int
    model: NormalityEnsemble
    scorer: EnsembleScorer


class AnomalyService(BackgroundLoop):
    """Serves the newest normality model; with `refits`, keeps it fitted to the known-good
    images and the pending images scored by it (`wake()` after a known-good label is stored
    starts the refit at once)."""

    name = "anomaly"

    def __init__(
        self,
        repo: Repository,
        settings: Settings,
        *,
        refits: bool,
        interval: float | None = None,
    ) -> None:
        super().__init__(interval=settings.hot_swap_seconds if interval is None else interval)
        self.repo = repo
        self.settings = settings
        self.refits = refits
        self.refused: dict[int, str] = {}  # normality model id → why it cannot be served
        self._served: ServedNormality | None = None
        self._fit_problem: str | None = None
        self._last_fit = float("-inf")  # monotonic time the last fit attempt started
        self._fit_ended = float("-inf")  # … and ended
        self._fitting: dict[str, Any] | None = None  # the fit under way, for `fitting`
        self._failed: set[tuple[int, int]] = set()  # (model id, image id) that failed to score
        self._encoders: dict[tuple[str, int], FrozenEncoder] = {}
        self._caches: dict[str, FeatureCache] = {}
        self._work = threading.Lock()  # encoder work: one fit or score at a time
        self._check = threading.Lock()  # one check at a time

    def on_start(self) -> None:
        """Fit and score with every core: the prediction workers compute with a share of
        them each (`model.cpu_threads`), which would leave a fit of 200 images at two input
        sizes on one thread (60 s against 44 s for 40 images on two cores)."""
        pin_intra_op_threads(cpu_cores())

    # ------------------------------------------------------------------ state
    @property
    def current(self) -> int | None:
        """The id of the served normality model (None: none yet)."""
        served = self._served
        return None if served is None else served.model_id

    @property
    def served(self) -> ServedNormality | None:
        return self._served

    @property
    def fitting(self) -> dict[str, Any] | None:
        """The refit under way in this process: `{"good_images", "done", "total",
        "elapsed_s"}` (members fitted of all), or None."""
        fitting = self._fitting
        if fitting is None:
            return None
        shown = {k: v for k, v in fitting.items() if k != "started"}
        return shown | {"elapsed_s": round(time.monotonic() - fitting["started"], 1)}

    def problem(self) -> str | None:
        """Why the newest normality model is not served, or why the last refit failed."""
        newest = self.repo.anomalies.newest_normality_model()
        if newest is not None and newest.id in self.refused and self.current != newest.id:
            served = self.current
            still = f"serving normality model {served}" if served else "no anomaly maps"
            return (
                f"normality model {newest.id} cannot be loaded ({self.refused[newest.id]}); {still}"
            )
        return self._fit_problem

    # ------------------------------------------------------------------ scoring
    def score_image(self, image_id: int) -> int | None:
        """Score one image with the served normality model and store the map; returns the
        anomaly prediction's id (None: no model served, or already scored by it)."""
        served = self._served
        if served is None:
            return None
        image = self.repo.images.get_image(image_id)
        with self._work:
            latest = self.repo.anomalies.latest_anomaly(image_id)
            if latest is not None and latest.normality_model_id == served.model_id:
                return None
            rgb = decode_image(self.repo.images.image_bytes(image_id), name=f"image {image_id}")
            with torch.no_grad():
                result = served.scorer.score(rgb, sha256=image.sha256)
        return self.repo.anomalies.add_anomaly(
            image_id,
            normality_model_id=served.model_id,
            heatmap=np.asarray(result.heatmap, np.float32),
            score=float(result.score),
        )

    # ------------------------------------------------------------------ the loop
    def tick(self) -> float:
        return self.check()

    def check(self) -> float:
        """Serve the newest normality model; with `refits`, refit when due and score a
        batch of pending images. Returns how soon the next check is wanted, in seconds."""
        with self._check:
            self._serve_newest()
            if not self.refits:
                return self.interval
            due = self._refit_due()
            if due == 0:
                self._refit()
            wait = due if due else self.interval  # due > 0: a refit held back by the interval
            return 0.0 if self._score_pending() else wait

    def _serve_newest(self) -> None:
        newest = self.repo.anomalies.newest_normality_model()
        if newest is None or newest.id == self.current or newest.id in self.refused:
            return
        try:
            self._swap(newest.id, self._load(newest))
        except (CheckpointError, OSError, ValueError, KeyError) as exc:
            self.refused[newest.id] = str(exc)
            log.error("normality model %s cannot be served: %s", newest.id, exc)

    def _load(self, row: NormalityRow) -> NormalityEnsemble:
        path = Path(row.path)
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
        actual = sha256_file(path)
        if actual != row.sha256:
            raise CheckpointError(
                f"{path}: sha256 {actual[:12]}… differs from the registered {row.sha256[:12]}…"
            )
        return NormalityEnsemble.load(path)

    def _swap(self, model_id: int, model: NormalityEnsemble) -> None:
        encoders = {s: self._encoder(model.encoder_id, s) for s in model.input_sizes}
        scorer = EnsembleScorer(model, encoders, cache=self._cache(model.encoder_id))
        self._served = ServedNormality(model_id, model, scorer)  # one reference assignment
        log.info("serving normality model %s (%d good images)", model_id, model.good_images)

    def _encoder(self, encoder_id: str, input_size: int) -> FrozenEncoder:
        key = (encoder_id, input_size)
        if key not in self._encoders:
            self._encoders[key] = build_encoder(encoder_id, input_size=input_size).eval()
        return self._encoders[key]

    def _cache(self, encoder_id: str) -> FeatureCache:
        """One cache per encoder, on the same folder as the supervised model's features."""
        if encoder_id not in self._caches:
            self._caches[encoder_id] = FeatureCache(
                self.settings.feature_cache_dir / encoder_id,
                max_memory_bytes=CACHE_MEMORY_BYTES,
            )
        return self._caches[encoder_id]

    # ------------------------------------------------------------------ refitting
    def _refit_due(self) -> float | None:
        """None: nothing to refit; 0: refit now; > 0: refit after that many seconds."""
        goods = len(self.repo.anomalies.known_good_images())
        if goods < MIN_GOOD_IMAGES:
            return None
        newest = self.repo.anomalies.newest_normality_model()
        served = self._served
        stale = (
            newest is None
            or int(newest.metrics.get(LABELS_KEY, newest.good_images)) != goods
            or (newest.id in self.refused and self.current != newest.id)
            or (  # the input sizes setting changed (e.g. a model fitted before at one size)
                served is not None
                and served.model_id == newest.id
                and served.model.input_sizes != self.settings.anomaly_input_sizes
            )
        )
        if not stale:
            return None
        # A refit also waits as long as the last one took, counted from its end: fitting
        # never holds more than half the encoder's time while known-good labels arrive.
        took = self._fit_ended - self._last_fit if self._fit_ended > self._last_fit else 0.0
        ready = max(self._last_fit + self.settings.anomaly_refit_seconds, self._fit_ended + took)
        wait = ready - time.monotonic()
        return max(0.0, wait)

    def _refit(self) -> None:
        self._last_fit = time.monotonic()
        try:
            model_id, model = self._fit_and_register()
        except (ValueError, OSError, StorageError, CheckpointError) as exc:
            self._fit_problem = f"the normality model could not be refitted: {exc}"
            log.error(self._fit_problem)
            return
        finally:
            self._fit_ended = time.monotonic()
        self._fit_problem = None
        self._swap(model_id, model)

    def _fit_and_register(self) -> tuple[int, NormalityEnsemble]:
        labels = len(self.repo.anomalies.known_good_images())
        images = self._known_good_pixels()
        sizes = self.settings.anomaly_input_sizes
        encoders = [self._encoder(ENCODER_ID, s) for s in sizes]
        self._fitting = {
            "good_images": len(images),
            "done": 0,
            "total": len(sizes),
            "started": time.monotonic(),
        }

        def progress(done: int, total: int) -> None:
            if self._fitting is not None:
                self._fitting = self._fitting | {"done": done}

        try:
            with self._work, torch.no_grad():
                model = fit_ensemble(
                    encoders, images, cache=self._cache(ENCODER_ID), progress=progress
                )
        finally:
            self._fitting = None
        path = self._save(model)
        model_id = self.repo.anomalies.register_normality_model(
            encoder_id=model.encoder_id,
            good_images=model.good_images,
            path=str(path),
            sha256=sha256_file(path),
            metrics={**model.metrics, LABELS_KEY: labels},
        )
        log.info("normality model %s fitted on %d good images", model_id, model.good_images)
        return model_id, model

    def _known_good_pixels(self) -> list[tuple[str, np.ndarray]]:
        """(sha256, RGB) of the known-good images the fit reads (all, or a seeded sample of
        `MAX_FIT_IMAGES`, chosen before decoding); one unreadable image is skipped."""
        goods = self.repo.anomalies.known_good_images()
        pixels = []
        for index in fit_sample(len(goods), max_images=MAX_FIT_IMAGES):
            image = goods[index]
            try:
                data = self.repo.images.image_bytes(image.id)
                pixels.append((image.sha256, decode_image(data, name=f"image {image.id}")))
            except (StorageError, ValueError) as exc:
                log.warning(
                    "known-good image %s left out of the normality model: %s", image.id, exc
                )
        return pixels

    def _save(self, model: NormalityEnsemble) -> Path:
        """Write the model under data_dir/normality (atomically: the name appears complete)."""
        folder = (self.settings.data_dir / "normality").resolve()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        return model.save(folder / f"normality-{stamp}.npz")

    def _score_pending(self) -> bool:
        """Score a batch of pending images the served model has not scored; True when a
        full batch was scored (more may wait)."""
        served = self._served
        if served is None:
            return False
        failed = {i for m, i in self._failed if m == served.model_id}
        ids = self.repo.anomalies.unscored_image_ids(
            served.model_id, limit=SCORE_BATCH + len(failed)
        )
        ids = [i for i in ids if i not in failed][:SCORE_BATCH]
        for image_id in ids:
            if self.stopping or self._served is not served:
                return False
            try:
                self.score_image(image_id)
            except Exception as exc:  # one bad image must not stop the rest
                log.error("anomaly scoring of image %s failed: %s", image_id, exc)
                if len(self._failed) < MAX_REMEMBERED_FAILURES:
                    self._failed.add((served.model_id, image_id))
        return len(ids) == SCORE_BATCH
