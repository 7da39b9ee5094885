"""Background prediction of incoming images: a bounded queue of image ids, one worker that
predicts them in batches.

The queue holds ids, never pixels, so a burst of uploads costs a few bytes per image. When
it is full an image is not dropped: it simply has no prediction yet, and the database is
the backlog — whenever the queue runs dry the worker asks `refill` for pending images that
still have none. `backlog` is what `/api/health` reports.

A worker blocks for one id, then takes whatever else is already queued (up to
`batch_size`) without waiting: a lone upload is predicted at once, and a burst of uploads
becomes one model call per batch, which amortises the per-call overhead of the encoder.
Several workers predict several batches at once (on a CPU, one per core:
`model.cpu_threads`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
_STOP = -1
MAX_REMEMBERED_FAILURES = 10_000


class PredictionQueue:
    """`workers` threads predicting image ids handed to `submit`, at most `capacity` queued,
    `batch_size` at a time; each calls `on_worker_start` first (e.g. to set its threads)."""

    def __init__(
        self,
        predict_batch: Callable[[list[int]], object],
        *,
        capacity: int,
        batch_size: int = 1,
        refill: Callable[[int], list[int]] | None = None,
        workers: int = 1,
        on_worker_start: Callable[[], object] | None = None,
    ) -> None:
        self._predict_batch = predict_batch
        self._refill = refill
        self._capacity = max(1, capacity)
        self._batch_size = max(1, batch_size)
        self._queue: queue.Queue[int] = queue.Queue(maxsize=self._capacity)
        self._lock = threading.Condition()
        self._waiting: set[int] = set()  # queued or being predicted
        self._overflowed = False  # some submissions were left to the database backlog
        self._failed: set[int] = set()  # never refilled again by this process
        self._closed = False
        self._on_worker_start = on_worker_start
        self._threads = [
            threading.Thread(target=self._run, name=f"predict-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def backlog(self) -> int:
        """Images queued or being predicted right now."""
        with self._lock:
            return len(self._waiting)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def workers(self) -> int:
        return len(self._threads)

    def submit(self, image_id: int) -> bool:
        """Queue an image; False when the queue is full (it stays in the database backlog)."""
        with self._lock:
            if self._closed:
                return False
            if image_id in self._waiting:
                return True
            try:
                self._queue.put_nowait(image_id)
            except queue.Full:
                self._overflowed = True
                return False
            self._waiting.add(image_id)
            return True

    def wait_idle(self, timeout: float = 300.0) -> bool:
        """Block until nothing is queued or being predicted; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._waiting, timeout=timeout)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop taking work; with `wait`, finish what is queued first."""
        with self._lock:
            self._closed = True
        for _ in self._threads:  # one stop marker per worker, behind everything queued
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()

    def _next_batch(self) -> tuple[list[int], bool]:
        """Block for one id, then take what is already queued, up to `batch_size`; and
        whether the stop marker was met (everything queued before it is in the batch)."""
        first = self._queue.get()
        if first == _STOP:
            return [], True
        batch = [first]
        while len(batch) < self._batch_size:
            try:
                image_id = self._queue.get_nowait()
            except queue.Empty:
                break
            if image_id == _STOP:
                return batch, True
            batch.append(image_id)
        return batch, False

    def _run(self) -> None:
        if self._on_worker_start is not None:
            try:
                self._on_worker_start()
            except Exception as exc:  # a worker that could not set up still predicts
                log.error("prediction worker setup failed: %s", exc)
        while True:
            batch, stop = self._next_batch()
            if batch:
                self._predict(batch)
                self._finish(batch)
            if stop:
                return

    def _finish(self, batch: list[int]) -> None:
        """Refill from the database backlog when due, then let the batch leave `_waiting`
        (in that order, so the queue never looks idle while the backlog has images)."""
        with self._lock:
            refill = self._refill is not None and self._overflowed and self._queue.empty()
            if refill:
                self._overflowed = False
        if refill:
            self._refill_from_backlog()
        with self._lock:
            self._waiting.difference_update(batch)
            self._lock.notify_all()

    def _predict(self, batch: list[int]) -> None:
        """Predict a batch; when it fails, predict its images one by one, so one bad image
        costs only its own prediction and is remembered as failed."""
        try:
            self._predict_batch(batch)
            return
        except Exception as exc:  # one bad image must not stop the worker
            if len(batch) == 1:
                self._remember_failure(batch[0], exc)
                return
            log.warning("background prediction of images %s failed (%s): one by one", batch, exc)
        for image_id in batch:
            try:
                self._predict_batch([image_id])
            except Exception as exc:
                self._remember_failure(image_id, exc)

    def _remember_failure(self, image_id: int, exc: Exception) -> None:
        log.error("background prediction of image %s failed: %s", image_id, exc)
        with self._lock:
            if len(self._failed) < MAX_REMEMBERED_FAILURES:
                self._failed.add(image_id)

    def _refill_from_backlog(self) -> None:
        assert self._refill is not None
        try:
            ids = self._refill(self._capacity + len(self._failed))
        except Exception as exc:
            log.error("could not read the prediction backlog: %s", exc)
            return
        fresh = [i for i in ids if i not in self._failed][: self._capacity]
        for image_id in fresh:
            if not self.submit(image_id):
                return  # full again: `_overflowed` is set, the next drain refills
        if len(fresh) == self._capacity:
            with self._lock:
                self._overflowed = True  # a full batch: more may be waiting
