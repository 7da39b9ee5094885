"""Background prediction of incoming images: a bounded queue of image ids, one worker.

The queue holds ids, never pixels, so a burst of uploads costs a few bytes per image. When
it is full an image is not dropped: it simply has no prediction yet, and the database is
the backlog — whenever the queue runs dry the worker asks `refill` for pending images that
still have none. `backlog` is what `/api/health` reports.
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
    """One worker thread predicting image ids handed to `submit`, at most `capacity` queued."""

    def __init__(
        self,
        predict: Callable[[int], object],
        *,
        capacity: int,
        refill: Callable[[int], list[int]] | None = None,
    ) -> None:
        self._predict = predict
        self._refill = refill
        self._queue: queue.Queue[int] = queue.Queue(maxsize=max(1, capacity))
        self._capacity = max(1, capacity)
        self._lock = threading.Condition()
        self._waiting: set[int] = set()  # queued or being predicted
        self._overflowed = False  # some submissions were left to the database backlog
        self._failed: set[int] = set()  # never refilled again by this process
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="predict", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        """Images queued or being predicted right now."""
        with self._lock:
            return len(self._waiting)

    @property
    def capacity(self) -> int:
        return self._capacity

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
        self._queue.put(_STOP)
        if wait:
            self._thread.join()

    def _run(self) -> None:
        while True:
            image_id = self._queue.get()
            if image_id == _STOP:
                return
            try:
                self._predict(image_id)
            except Exception as exc:  # one bad image must not stop the worker
                log.error("background prediction of image %s failed: %s", image_id, exc)
                with self._lock:
                    if len(self._failed) < MAX_REMEMBERED_FAILURES:
                        self._failed.add(image_id)
            with self._lock:
                refill = self._refill is not None and self._overflowed and self._queue.empty()
                if refill:
                    self._overflowed = False
            if refill:  # before this id leaves `_waiting`, so the queue never looks idle early
                self._refill_from_backlog()
            with self._lock:
                self._waiting.discard(image_id)
                self._lock.notify_all()

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
